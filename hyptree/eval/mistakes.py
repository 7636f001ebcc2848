"""How bad the mistakes are: LCA-based error measures, set-based hierarchical P/R/F1,
top-down decoding and level consistency, streamed from the node score matrices.

Same inputs as :mod:`hyptree.eval.metrics` (``scores (N, num_nodes)``, ``labels (N,)``);
:class:`MistakeMeter` keeps integer sums only, so any batching gives the same numbers, and
:class:`~hyptree.eval.metrics.HierarchicalMeter` feeds it the scores it already has (no
extra encoder pass). Formulas: docs/metrics.md. Notation: ``y`` the true leaf, ``p`` the
flat prediction (argmax over all leaves), ``depth(root) = 0``, ``LCA(a, b)`` the deepest
common ancestor (a node is its own ancestor), and the **height** of a node
``h(v) = max over leaves l under v of depth(l) - depth(v)`` (0 for a leaf; on a balanced
tree ``height - depth(v)``).

* ``severity``: mean of ``h(LCA(p, y))`` over the mistakes (``p != y``); NaN without mistakes;
* ``hdist@1``, ``hdist@5``: mean over all samples of ``(1/k) sum_j h(LCA(p_j, y))`` over the
  ``k`` best leaves ``p_1..p_k`` ("Making Better Mistakes", Bertinetto et al., CVPR 2020);
  NaN when the tree has fewer than ``k`` classes;
* ``TIE``: tree-induced error, mean over all samples of the path length in edges between
  ``p`` and ``y``: ``depth(p) + depth(y) - 2 depth(LCA(p, y))``;
* ``hP``, ``hR``, ``hF1`` (percent): with ``A(v)`` the ancestors of ``v`` with ``v``, root
  excluded, ``hP = sum |A(p) & A(y)| / sum |A(p)|``, ``hR = sum |A(p) & A(y)| / sum |A(y)|``
  (micro-averaged over samples), ``hF1 = 2 hP hR / (hP + hR)``;
* ``TD_LA`` (percent): the top-down leaf (:func:`~hyptree.eval.decode.top_down`) is ``y``;
* ``TD_agree`` (percent): the top-down leaf is the flat leaf ``p`` (equivalently, the greedy
  path is ``A(p)``);
* ``consistency`` (percent): the per-level decisions agree: for every depth ``d`` the argmax
  over the level-``d`` cut (the one ``depth_acc`` scores) is ``p``'s node in that cut, so the
  levels read as one root-to-leaf path ending in ``p``;
* ``num_mistakes``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from hyptree.eval.decode import DecodeTables, top_down
from hyptree.tree.taxonomy import Taxonomy

__all__ = ["MistakeMeter", "node_heights", "HDIST_K"]

HDIST_K = (1, 5)


def node_heights(taxonomy: Taxonomy) -> np.ndarray:
    """``(num_nodes,)`` height of each node: the longest downward path to a leaf (0 at leaves)."""
    h = np.zeros(taxonomy.num_nodes, dtype=np.int64)
    depth, parent = taxonomy.depth, taxonomy.parent
    for v in np.argsort(-depth, kind="stable"):  # children before parents
        if parent[v] >= 0:
            h[parent[v]] = max(h[parent[v]], h[v] + 1)
    return h


class MistakeMeter:
    """Streaming sums of the measures in the module docstring (see there)."""

    def __init__(self, taxonomy: Taxonomy):
        self.taxonomy = taxonomy
        self.tables = DecodeTables.of(taxonomy)
        self._height = torch.as_tensor(node_heights(taxonomy))
        self._depth = torch.as_tensor(np.array(taxonomy.depth, dtype=np.int64))
        self._ks = [k for k in HDIST_K if k <= taxonomy.num_classes]
        self._dev: dict = {}
        self.reset()

    def reset(self) -> None:
        self.n = 0
        self.sums = dict.fromkeys(("mistakes", "severity", "tie", "inter", "pred", "true", "td", "agree", "cons"), 0)
        self.hdist = dict.fromkeys(self._ks, 0)

    def _on(self, device):
        key = str(device)
        if key not in self._dev:
            self._dev[key] = (self.tables.on(device), self._height.to(device), self._depth.to(device))
        return self._dev[key]

    def _lca(self, t, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Node id and depth of the LCA of class labels ``a``, ``b`` (same shape)."""
        pa, pb = t.paths[a], t.paths[b]  # (..., H)
        common = ((pa == pb) & t.mask[a] & t.mask[b]).sum(-1)  # paths share a prefix only
        lca = pb.gather(-1, (common - 1).clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return torch.where(common > 0, lca, torch.zeros_like(lca)), common

    @torch.no_grad()
    def update(self, scores: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch (already validated by the caller: ``(N, num_nodes)`` float, ``(N,)`` long)."""
        if scores.shape[0] == 0:
            return
        t, height, depth = self._on(scores.device)
        idx = t.index
        leaf = scores.index_select(1, idx.leaves)  # (N, C)
        pred = leaf.argmax(1)
        lca, common = self._lca(t, pred, labels)
        wrong = pred != labels
        d_pred, d_true = depth[idx.leaves[pred]], depth[idx.leaves[labels]]
        for k in self._ks:
            top = leaf.topk(k, dim=1).indices  # (N, k)
            top_lca, _ = self._lca(t, top, labels.unsqueeze(1).expand_as(top))
            self.hdist[k] += int(height[top_lca].sum())
        td = top_down(self.taxonomy, scores)
        cons = torch.ones_like(wrong)
        for c, tgt in zip(idx.level_cuts, idx.level_targets):
            cons &= scores.index_select(1, c).argmax(1) == tgt[pred]
        s = self.sums
        s["mistakes"] += int(wrong.sum())
        s["severity"] += int(height[lca][wrong].sum())
        s["tie"] += int((d_pred + d_true - 2 * common).sum())
        s["inter"] += int(common.sum())
        s["pred"] += int(d_pred.sum())
        s["true"] += int(d_true.sum())
        s["td"] += int((td == labels).sum())
        s["agree"] += int((td == pred).sum())
        s["cons"] += int(cons.sum())
        self.n += int(labels.shape[0])

    def compute(self) -> dict:
        """The measures so far (see the module docstring); needs at least one sample."""
        if self.n == 0:
            raise ValueError("no samples seen")
        n, s = self.n, self.sums
        hp = 100.0 * s["inter"] / s["pred"]
        hr = 100.0 * s["inter"] / s["true"]
        out = {
            "severity": s["severity"] / s["mistakes"] if s["mistakes"] else math.nan,
            **{f"hdist@{k}": (self.hdist[k] / (n * k) if k in self.hdist else math.nan) for k in HDIST_K},
            "TIE": s["tie"] / n,
            "hP": hp,
            "hR": hr,
            "hF1": 2 * hp * hr / (hp + hr) if hp + hr > 0 else 0.0,
            "TD_LA": 100.0 * s["td"] / n,
            "TD_agree": 100.0 * s["agree"] / n,
            "consistency": 100.0 * s["cons"] / n,
            "num_mistakes": s["mistakes"],
        }
        return out
