"""Index tables of a taxonomy for batched per-node scoring (`ProTeCtIndex`), shared by
the ProTeCt losses (`hyptree.loss.protect`) and the metrics (`hyptree.eval.metrics`).

`path_child_scores` gathers, for every sample, the scores of the children at each
internal node on its path - the common core of the node-centric loss and HCA.
"""

from __future__ import annotations

import numpy as np
import torch

from hyptree.tree.cuts import cut_targets, level_cut
from hyptree.tree.taxonomy import Taxonomy

__all__ = ["TreeTables", "ProTeCtIndex", "path_child_scores", "check_scores"]


class TreeTables:
    """Tables of a taxonomy built once (``of``: cached on the taxonomy) on the CPU, and
    copied to a device on demand (``on``: cached too). A subclass builds its tensors in
    ``__init__(taxonomy)``; ``on`` copies every tensor attribute, list of tensors and nested
    ``TreeTables``, and shares the rest."""

    @classmethod
    def of(cls, taxonomy: Taxonomy):
        """The tables of ``taxonomy``, built once and cached on it."""
        cache = taxonomy._cache
        if cls.__qualname__ not in cache:
            cache[cls.__qualname__] = cls(taxonomy)
        return cache[cls.__qualname__]

    def on(self, device):
        """A copy of the tables on ``device`` (cached; the CPU tables themselves on the CPU)."""
        device = torch.device(device)
        if device.type == "cpu":
            return self
        copies = self.__dict__.setdefault("_on", {})
        if str(device) not in copies:
            other = object.__new__(type(self))
            for name, value in self.__dict__.items():
                if name != "_on":
                    other.__dict__[name] = _to_device(value, device)
            copies[str(device)] = other
        return copies[str(device)]


def _to_device(value, device):
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, TreeTables):
        return value.on(device)
    if isinstance(value, list) and value and all(isinstance(v, torch.Tensor) for v in value):
        return [v.to(device) for v in value]
    return value


class ProTeCtIndex(TreeTables):
    """Index tables of a taxonomy for batched per-node classification.

    Attributes (CPU int64/bool tensors; `on(device)` gives a cached copy on a device):

    * ``leaves (C,)``: node id of each class.
    * ``child_ids (I, B)``: children of internal node row ``r`` (node
      ``taxonomy.internal[r]``), ascending ids, padded with 0; ``child_valid (I, B)``.
    * ``step_rows (C, H)``: for class ``k``, the internal-node rows along its path
      (root first: the parents of ``n_1 .. n_L``), padded with 0; ``step_mask (C, H)``.
    * ``step_targets (C, H)``: position of the path's child ``n_{j+1}`` among the
      children of step ``j``'s node (0 on padding).
    * ``internal (I,)``: node ids of the rows.
    """

    def __init__(self, taxonomy: Taxonomy):
        self.taxonomy = taxonomy
        internal = taxonomy.internal
        row_of = np.full(taxonomy.num_nodes, -1, dtype=np.int64)
        row_of[internal] = np.arange(len(internal))
        B = max(len(taxonomy.children(i)) for i in internal)
        child_ids = np.zeros((len(internal), B), dtype=np.int64)
        child_valid = np.zeros((len(internal), B), dtype=bool)
        child_pos = np.zeros(taxonomy.num_nodes, dtype=np.int64)
        for r, i in enumerate(internal):
            ch = taxonomy.children(i)
            child_ids[r, : len(ch)] = ch
            child_valid[r, : len(ch)] = True
            child_pos[list(ch)] = np.arange(len(ch))
        paths, mask = taxonomy.padded_paths()  # (C, H), -1 padded
        C, H = paths.shape
        parents = np.where(mask, taxonomy.parent[paths.clip(0)], 0)  # parent of n_j: root for j = 0
        step_rows = np.where(mask, row_of[parents], 0)
        step_targets = np.where(mask, child_pos[paths.clip(0)], 0)
        self.num_nodes = taxonomy.num_nodes
        self.leaves = torch.tensor(np.array(taxonomy.leaves))
        self.internal = torch.tensor(np.array(internal))
        self.child_ids = torch.as_tensor(child_ids)
        self.child_valid = torch.as_tensor(child_valid)
        self.step_rows = torch.as_tensor(step_rows)
        self.step_targets = torch.as_tensor(step_targets)
        self.step_mask = torch.as_tensor(mask)
        levels = [level_cut(taxonomy, d) for d in range(1, taxonomy.height + 1)]
        self.level_cuts = [torch.as_tensor(np.asarray(c, dtype=np.int64)) for c in levels]
        self.level_targets = [torch.as_tensor(cut_targets(taxonomy, c)) for c in levels]


def check_scores(idx: ProTeCtIndex, scores: torch.Tensor, labels: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``scores`` is ``(N, num_nodes)`` and ``labels`` ``(N,)`` class indices."""
    if scores.dim() != 2 or scores.shape[1] != idx.num_nodes:
        raise ValueError(f"scores must be (N, num_nodes={idx.num_nodes}), got {tuple(scores.shape)}")
    if labels.dim() != 1 or labels.shape[0] != scores.shape[0]:
        raise ValueError(f"labels must be (N,) with N={scores.shape[0]}, got {tuple(labels.shape)}")
    C = idx.leaves.shape[0]
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= C):
        raise ValueError(f"labels must be class indices in 0..{C - 1}, got {int(labels.min())}..{int(labels.max())}")


def path_child_scores(
    taxonomy: Taxonomy, scores: torch.Tensor, labels: torch.Tensor, index: ProTeCtIndex | None = None
):
    """Scores of the children at each step of each sample's path.

    Returns ``child_scores (N, H, B)`` (children of the j-th internal node on the
    path, ``-inf`` where a node has fewer than ``B`` children), ``targets (N, H)``
    (position of the path's child) and ``mask (N, H)`` (real steps), plus
    ``rows (N, H)`` (internal-node rows, see `ProTeCtIndex`).
    """
    idx = (index or ProTeCtIndex.of(taxonomy)).on(scores.device)
    labels = labels.to(scores.device).long()
    check_scores(idx, scores, labels)
    rows = idx.step_rows[labels]  # (N, H)
    ids = idx.child_ids[rows]  # (N, H, B)
    valid = idx.child_valid[rows]
    N, H, B = ids.shape
    s = scores.gather(1, ids.reshape(N, H * B)).reshape(N, H, B)
    s = s.masked_fill(~valid, float("-inf"))
    return s, idx.step_targets[labels], idx.step_mask[labels], rows
