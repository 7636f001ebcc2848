"""HypTree's Dassl trainers; importing this package registers them with Dassl's
TRAINER_REGISTRY: MaPLeHypTree, PromptSRCHypTree, CoOpHier."""

from .coop_hier import CoOpHier
from .hyptree_base import HierTrainer
from .maple_hyptree import MaPLeHypTree
from .promptsrc_hyptree import PromptSRCHypTree

__all__ = ["HierTrainer", "MaPLeHypTree", "PromptSRCHypTree", "CoOpHier"]
