"""ImageNet-R (test only, 200 classes) with the ImageNet tree cut down to its classes."""

from dassl.data.datasets import DATASET_REGISTRY

from ._hier import HierDatasetBase


@DATASET_REGISTRY.register()
class ImageNetRHier(HierDatasetBase):
    hier_name = "imagenet_r"
