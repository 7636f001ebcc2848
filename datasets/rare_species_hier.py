"""Rare Species (BioCLIP's benchmark) with the taxonomy of its folder names."""

from dassl.data.datasets import DATASET_REGISTRY

from ._hier import HierDatasetBase


@DATASET_REGISTRY.register()
class RareSpecies(HierDatasetBase):
    hier_name = "rare_species"
