"""SUN397 in CoOp's layout with SUN's three-level hierarchy (or ProTeCt's tree)."""

from dassl.data.datasets import DATASET_REGISTRY

from ._hier import HierDatasetBase


@DATASET_REGISTRY.register()
class SUN397Hier(HierDatasetBase):
    hier_name = "sun397"
