"""ToyWorld: the generated four-level toy taxonomy (52 leaves; made on first use under DATASET.ROOT)."""

from dassl.data.datasets import DATASET_REGISTRY

from ._hier import HierDatasetBase


@DATASET_REGISTRY.register()
class ToyWorld(HierDatasetBase):
    hier_name = "toy_world"
