"""Datasets without Dassl: image lists, splits, few-shot sampling and the taxonomy they are labelled by.

``from hyptree.data import build_hierarchical_dataset`` is the entry point. Modules:

- :mod:`~hyptree.data.common` - :class:`Item`, :class:`SplitData`, CoOp split files,
  few-shot sampling, base/novel relabelling (shared by every reader);
- :mod:`~hyptree.data.folder` - image-folder trees and ProTeCt's image lists;
- one module per dataset, each with its reader(s), its expected layout (``LAYOUTS``) and
  the ``load_<dataset>`` that :mod:`~hyptree.data.build` registers:
  :mod:`~hyptree.data.cifar100`, :mod:`~hyptree.data.sun397`, :mod:`~hyptree.data.imagenet`
  (with ImageNetV2/-Sketch/-A/-R), :mod:`~hyptree.data.rare_species`, :mod:`~hyptree.data.toy`;
- :mod:`~hyptree.data.build` - the dataset registry, taxonomy resolution and class matching.
"""

from hyptree.data.build import (
    DATASET_NAMES,
    HIERARCHY_SOURCES,
    LAYOUTS,
    PROTECT_DIRS,
    TARGET_DATASETS,
    HierDataset,
    build_hierarchical_dataset,
    match_classes,
)
from hyptree.data.cifar100 import extract_cifar100, read_cifar100_hierarchical
from hyptree.data.common import (
    IMAGE_EXTENSIONS,
    SUBSAMPLE_CHOICES,
    Item,
    SplitData,
    fewshot_sample,
    group_by_label,
    list_images,
    per_class_split,
    read_coop_split,
    subsample_classes,
    write_coop_split,
)
from hyptree.data.folder import read_image_folder_tree, read_protect_items, read_protect_split_names
from hyptree.data.imagenet import (
    read_imagenet,
    read_imagenet_a,
    read_imagenet_classnames,
    read_imagenet_r,
    read_imagenet_sketch,
    read_imagenet_v2,
)
from hyptree.data.rare_species import read_rare_species
from hyptree.data.sun397 import read_sun397, sun397_hierarchy_file
from hyptree.data.toy import make_toy_dataset

__all__ = [
    "DATASET_NAMES",
    "TARGET_DATASETS",
    "PROTECT_DIRS",
    "HIERARCHY_SOURCES",
    "LAYOUTS",
    "SUBSAMPLE_CHOICES",
    "HierDataset",
    "build_hierarchical_dataset",
    "match_classes",
    "Item",
    "SplitData",
    "IMAGE_EXTENSIONS",
    "list_images",
    "read_coop_split",
    "write_coop_split",
    "group_by_label",
    "per_class_split",
    "fewshot_sample",
    "subsample_classes",
    "read_image_folder_tree",
    "read_protect_items",
    "read_protect_split_names",
    "extract_cifar100",
    "read_cifar100_hierarchical",
    "read_sun397",
    "sun397_hierarchy_file",
    "read_imagenet_classnames",
    "read_imagenet",
    "read_imagenet_v2",
    "read_imagenet_sketch",
    "read_imagenet_a",
    "read_imagenet_r",
    "read_rare_species",
    "make_toy_dataset",
]
