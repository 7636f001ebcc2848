"""ImageNet in CoOp's layout with the WordNet hierarchy of the devkit's meta.mat (or ProTeCt's tree)."""

from dassl.data.datasets import DATASET_REGISTRY

from ._hier import HierDatasetBase


@DATASET_REGISTRY.register()
class ImageNetHier(HierDatasetBase):
    hier_name = "imagenet"
