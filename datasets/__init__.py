"""Dassl datasets with a taxonomy attached; ``import datasets`` registers them all.

| registry name | ``hyptree.data.build`` name | config |
|---|---|---|
| CIFAR100Hier | cifar100 | configs/datasets/cifar100.yaml |
| SUN397Hier | sun397 | configs/datasets/sun397.yaml |
| ImageNetHier | imagenet | configs/datasets/imagenet.yaml |
| ImageNetV2Hier | imagenetv2 | configs/datasets/imagenetv2.yaml |
| ImageNetSketchHier | imagenet_sketch | configs/datasets/imagenet_sketch.yaml |
| ImageNetAHier | imagenet_a | configs/datasets/imagenet_a.yaml |
| ImageNetRHier | imagenet_r | configs/datasets/imagenet_r.yaml |
| RareSpecies | rare_species | configs/datasets/rare_species.yaml |
| ToyHier | toy | configs/datasets/toy_hier.yaml |
| ToyWorld | toy_world | configs/datasets/toy.yaml |
"""

from ._hier import HierDatasetBase, to_datums
from .cifar100_hier import CIFAR100Hier
from .imagenet_a_hier import ImageNetAHier
from .imagenet_hier import ImageNetHier
from .imagenet_r_hier import ImageNetRHier
from .imagenet_sketch_hier import ImageNetSketchHier
from .imagenetv2_hier import ImageNetV2Hier
from .rare_species_hier import RareSpecies
from .sun397_hier import SUN397Hier
from .toy_hier import ToyHier
from .toy_world_hier import ToyWorld

REGISTRY_NAMES = {
    "cifar100": "CIFAR100Hier",
    "sun397": "SUN397Hier",
    "imagenet": "ImageNetHier",
    "imagenetv2": "ImageNetV2Hier",
    "imagenet_sketch": "ImageNetSketchHier",
    "imagenet_a": "ImageNetAHier",
    "imagenet_r": "ImageNetRHier",
    "rare_species": "RareSpecies",
    "toy": "ToyHier",
    "toy_world": "ToyWorld",
}
"""``hyptree.data.build`` name -> Dassl registry name (= ``DATASET.NAME``).

Module files end in ``_hier`` so that they never shadow a MaPLe / PromptSRC checkout's own
``datasets/imagenet.py``, ``sun397.py``, ... when the plugin is installed there."""
