"""Dassl datasets with a taxonomy attached; ``import datasets`` registers them all.

| registry name | ``hyptree.hierdata`` name | config |
|---|---|---|
| CIFAR100Hier | cifar100 | configs/datasets/cifar100.yaml |
| SUN397Hier | sun397 | configs/datasets/sun397.yaml |
| ImageNetHier | imagenet | configs/datasets/imagenet.yaml |
| ImageNetV2Hier | imagenetv2 | configs/datasets/imagenetv2.yaml |
| ImageNetSketchHier | imagenet_sketch | configs/datasets/imagenet_sketch.yaml |
| ImageNetAHier | imagenet_a | configs/datasets/imagenet_a.yaml |
| ImageNetRHier | imagenet_r | configs/datasets/imagenet_r.yaml |
| RareSpecies | rare_species | configs/datasets/rare_species.yaml |
| ToyHier | toy | configs/datasets/toy.yaml |
"""
from . import cifar100, imagenet, imagenet_a, imagenet_r, imagenet_sketch, imagenetv2, rare_species, sun397, toy
from ._hier import HierDatasetBase, to_datums
from .cifar100 import CIFAR100Hier
from .imagenet import ImageNetHier
from .imagenet_a import ImageNetAHier
from .imagenet_r import ImageNetRHier
from .imagenet_sketch import ImageNetSketchHier
from .imagenetv2 import ImageNetV2Hier
from .rare_species import RareSpecies
from .sun397 import SUN397Hier
from .toy import ToyHier

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
}
"""``hyptree.hierdata`` name -> Dassl registry name (= ``DATASET.NAME``)."""
