"""ImageNet-Sketch (test only) with the ImageNet tree cut down to its classes."""

from dassl.data.datasets import DATASET_REGISTRY

from ._hier import HierDatasetBase


@DATASET_REGISTRY.register()
class ImageNetSketchHier(HierDatasetBase):
    hier_name = "imagenet_sketch"
