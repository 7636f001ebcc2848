"""ToyHier: a generated three-level image taxonomy for CPU smoke runs (made on first use under DATASET.ROOT)."""

from dassl.data.datasets import DATASET_REGISTRY

from ._hier import HierDatasetBase


@DATASET_REGISTRY.register()
class ToyHier(HierDatasetBase):
    hier_name = "toy"
