"""Training losses (DESIGN.md section 5); imports geometry, tree and utils only.

* :mod:`~hyptree.loss.protect` - ProTeCt's leaf, tree-cut and node-centric losses;
* :mod:`~hyptree.loss.objective` - the total objective of a preset (:data:`PRESETS`) with
  the tree-alignment terms (:data:`CROSS_TERMS`).

Usage: ``from hyptree.loss import HierarchicalObjective, ObjectiveSettings, tree_cut_loss``.
"""

from hyptree.loss.objective import (
    CROSS_TERMS,
    PRESETS,
    HierarchicalObjective,
    ObjectiveSettings,
    angle_contrastive_loss,
    einstein_midpoint,
    gather_paths,
    mmd_loss,
)
from hyptree.loss.protect import leaf_loss, node_centric_loss, tree_cut_loss

__all__ = [
    "PRESETS",
    "CROSS_TERMS",
    "ObjectiveSettings",
    "HierarchicalObjective",
    "gather_paths",
    "mmd_loss",
    "einstein_midpoint",
    "angle_contrastive_loss",
    "leaf_loss",
    "tree_cut_loss",
    "node_centric_loss",
]
