"""CIFAR-100 ($DATA/cifar-100 archive, or ProTeCt's $DATA/cifar-100-hierarchical) with its class tree."""

from dassl.data.datasets import DATASET_REGISTRY

from ._hier import HierDatasetBase


@DATASET_REGISTRY.register()
class CIFAR100Hier(HierDatasetBase):
    hier_name = "cifar100"
