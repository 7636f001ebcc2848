"""ProTeCt hierarchical metrics from node score matrices (DESIGN section 6).

Inputs: ``scores (N, num_nodes)`` (torch or numpy; one column per taxonomy node,
the root column is ignored) and ``labels (N,)`` class indices. Every metric is an
argmax over a subset of columns, computed batched (no loop over samples; loops
over tree depth and cuts only). All values are percentages.

* ``LA``: the argmax over all leaves is the label.
* ``HCA``: LA is correct *and* at every internal node on the sample's path (root
  included) the argmax over that node's children is the path's child.
* ``MTA``: mean over the given cuts of the cut accuracy; ``cut_acc`` lists them.
  Cut accuracy: the argmax over the cut's nodes is the cut node on the sample's
  path. ``NaN`` when no cuts are given.
* ``node_accs``: for each internal node (``taxonomy.internal`` order), the accuracy
  of the argmax over its children among the samples whose path passes through it
  (``NaN`` for nodes no sample passes); ``node_acc`` is their mean over the nodes
  that had samples (ProTeCt's per-node accuracies, averaged).
* ``depth_acc``: list over depths ``d = 1..height``: accuracy on the *level-d cut*
  (`hyptree.tree.cuts.level_cut`: the nodes at depth ``d`` plus the leaves shallower
  than ``d``), i.e. the argmax over that level is the sample's ancestor at depth
  ``d`` - or its own leaf when the leaf is shallower (unbalanced trees). The last
  entry equals LA. With ``depth="official"`` (config ``EVAL.DEPTH_ACCURACY``) it is the
  official code's definition instead: at depth ``d`` the candidates are *all* nodes at depth
  ``d`` (leaves at that depth included) and only the samples whose leaf is at depth ``>= d``
  count (shallower leaves drop out; ``NaN`` when none is that deep).
* ``num_samples``.

Plus the mistake measures of :mod:`hyptree.eval.mistakes` (``severity``, ``hdist@1``,
``hdist@5``, ``TIE``, ``hP``, ``hR``, ``hF1``, ``TD_LA``, ``TD_agree``, ``consistency``,
``num_mistakes``), streamed from the same scores.

Ties in an argmax go to the first column in the subset's order on CPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from hyptree.eval.mistakes import MistakeMeter
from hyptree.tree.cuts import cut_ids, cut_targets
from hyptree.tree.index import ProTeCtIndex, path_child_scores
from hyptree.tree.taxonomy import Taxonomy

__all__ = ["HierarchicalMeter", "hierarchical_metrics"]


def _as_tensor(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    return torch.tensor(np.asarray(x))


class HierarchicalMeter:
    """Streaming accumulator of the metrics: keeps integer counts only, so feeding
    the data in any batches gives the same result as `hierarchical_metrics` on all
    of it.

    Args:
        taxonomy: the tree.
        cuts: tree cuts (node ids or names) for MTA, e.g. `evaluation_cuts`; ``None``
            or empty leaves MTA undefined (``NaN``).
    """

    def __init__(self, taxonomy: Taxonomy, cuts: Sequence[Sequence[int | str]] | None = None, depth: str = "ours"):
        if depth not in ("ours", "official"):
            raise ValueError(f"depth accuracy {depth!r}; expected ours or official")
        self.taxonomy = taxonomy
        self.depth = depth
        self._official_depth = _official_depth_tables(taxonomy) if depth == "official" else None
        self.index = ProTeCtIndex.of(taxonomy)
        self._cuts = []
        for j, cut in enumerate(cuts or []):
            try:
                ids = cut_ids(taxonomy, cut)
                tgt = cut_targets(taxonomy, ids)
            except ValueError as e:
                raise ValueError(f"cut {j}: {e}") from None
            self._cuts.append((torch.as_tensor(np.asarray(ids, dtype=np.int64)), torch.as_tensor(tgt)))
        self._dev_cuts: dict = {}
        self.mistakes = MistakeMeter(taxonomy)
        self.reset()

    def reset(self) -> None:
        n_internal = len(self.taxonomy.internal)
        self.n = 0
        self.leaf_correct = 0
        self.hca_correct = 0
        self.node_correct = torch.zeros(n_internal, dtype=torch.int64)
        self.node_total = torch.zeros(n_internal, dtype=torch.int64)
        self.depth_correct = torch.zeros(self.taxonomy.height, dtype=torch.int64)
        self.depth_total = torch.zeros(self.taxonomy.height, dtype=torch.int64)
        self.cut_correct = torch.zeros(len(self._cuts), dtype=torch.int64)
        self.mistakes.reset()

    def _cuts_on(self, device):
        key = str(device)
        if key not in self._dev_cuts:
            self._dev_cuts[key] = [(c.to(device), t.to(device)) for c, t in self._cuts]
        return self._dev_cuts[key]

    @torch.no_grad()
    def update(self, scores, labels) -> None:
        """Add a batch: ``scores (N, num_nodes)``, ``labels (N,)``."""
        scores = _as_tensor(scores)
        if not scores.is_floating_point():
            scores = scores.float()
        labels = _as_tensor(labels).to(scores.device).long()
        if scores.shape[0] == 0:
            return
        idx = self.index.on(scores.device)
        s, tgt, mask, rows = path_child_scores(self.taxonomy, scores, labels, idx)  # validates shapes
        leaf_ok = scores.index_select(1, idx.leaves).argmax(1) == labels  # (N,)
        step_ok = s.argmax(-1) == tgt  # (N, H)
        hca_ok = (step_ok | ~mask).all(1) & leaf_ok
        n_internal = self.node_total.shape[0]
        r = rows[mask]
        self.node_total += torch.bincount(r, minlength=n_internal).cpu()
        self.node_correct += torch.bincount(r[step_ok[mask]], minlength=n_internal).cpu()
        depth_ok = [
            (scores.index_select(1, c).argmax(1) == t[labels]).sum() for c, t in zip(idx.level_cuts, idx.level_targets)
        ]
        if self._official_depth is None:
            self.depth_correct += torch.stack(depth_ok).cpu()
            self.depth_total += int(labels.shape[0])
        else:
            self._update_official_depth(scores, labels)
        if self._cuts:
            cut_ok = [(scores.index_select(1, c).argmax(1) == t[labels]).sum() for c, t in self._cuts_on(scores.device)]
            self.cut_correct += torch.stack(cut_ok).cpu()
        self.n += int(labels.shape[0])
        self.leaf_correct += int(leaf_ok.sum())
        self.hca_correct += int(hca_ok.sum())
        self.mistakes.update(scores, labels)

    def _update_official_depth(self, scores, labels) -> None:
        lab = labels.cpu()
        for d, (nodes, target) in enumerate(self._official_depth):
            t = target[lab]  # (N,) index among nodes, -1: leaf shallower than d
            keep = t >= 0
            pred = scores.index_select(1, nodes.to(scores.device)).argmax(1).cpu()
            self.depth_correct[d] += int((pred[keep] == t[keep]).sum())
            self.depth_total[d] += int(keep.sum())

    def compute(self) -> dict:
        """The metrics so far (percentages); see the module docstring for definitions."""
        if self.n == 0:
            raise ValueError("no samples seen")
        n = self.n
        tot = self.node_total.double()
        node_accs = torch.where(tot > 0, 100.0 * self.node_correct.double() / tot.clamp(min=1), torch.nan)
        seen = tot > 0
        cut_acc = (100.0 * self.cut_correct.double() / n).tolist()
        return {
            "LA": 100.0 * self.leaf_correct / n,
            "HCA": 100.0 * self.hca_correct / n,
            "MTA": float(np.mean(cut_acc)) if cut_acc else math.nan,
            "node_acc": float(node_accs[seen].mean()) if bool(seen.any()) else math.nan,
            "depth_acc": torch.where(
                self.depth_total > 0, 100.0 * self.depth_correct.double() / self.depth_total.clamp(min=1), torch.nan
            ).tolist(),
            "cut_acc": cut_acc,
            "node_accs": node_accs.tolist(),
            "num_samples": n,
            **self.mistakes.compute(),
        }


def _official_depth_tables(taxonomy: Taxonomy) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per depth ``d = 1..height``: (every node id at depth ``d``, (C,) index of each class's
    depth-``d`` ancestor among them, -1 when the class's leaf is shallower)."""
    out = []
    for d in range(1, taxonomy.height + 1):
        nodes = [int(i) for i in taxonomy.nodes_at_depth(d)]
        pos = {n: j for j, n in enumerate(nodes)}
        target = []
        for k in range(taxonomy.num_classes):
            path = [int(i) for i in taxonomy.path(k)]  # root excluded: path[d - 1] is at depth d
            target.append(pos[path[d - 1]] if d <= len(path) else -1)
        out.append((torch.as_tensor(nodes, dtype=torch.long), torch.as_tensor(target, dtype=torch.long)))
    return out


def hierarchical_metrics(
    taxonomy: Taxonomy,
    scores,
    labels,
    cuts: Sequence[Sequence[int | str]] | None = None,
    depth: str = "ours",
) -> dict:
    """LA, HCA, MTA, node_acc, depth_acc (and cut_acc, node_accs, num_samples) in percent.

    ``scores (N, num_nodes)`` torch or numpy, ``labels (N,)``; ``cuts`` as for
    `HierarchicalMeter`. See the module docstring for the definitions.
    """
    meter = HierarchicalMeter(taxonomy, cuts, depth=depth)
    meter.update(scores, labels)
    return meter.compute()
