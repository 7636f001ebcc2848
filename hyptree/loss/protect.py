"""ProTeCt losses on node score matrices (DESIGN section 5).

All losses take ``scores (N, num_nodes)`` - one column per taxonomy node, logits
already scaled (the root column is never used) - and ``labels (N,)`` class indices,
and are batched: no Python loop over samples. The index tables they need are built
once per taxonomy by `hyptree.tree.index.ProTeCtIndex` and moved to the scores'
device on first use.

* `leaf_loss`: cross-entropy over all leaves (the vanilla objective).
* `tree_cut_loss`: cross-entropy over the nodes of one tree cut, target = the cut
  node on the sample's path.
* `node_centric_loss`: for each sample, the mean over the internal nodes on its
  path (root included) of the cross-entropy over that node's children, target = the
  path's child; then the mean over the batch (``average="sample"``, DESIGN). With
  ``average="node"`` it is ProTeCt's reference reduction instead: per internal node
  the mean over the samples passing it, then the mean over the nodes seen in the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from hyptree.tree.cuts import cut_ids, cut_targets
from hyptree.tree.index import ProTeCtIndex, check_scores, path_child_scores
from hyptree.tree.taxonomy import Taxonomy

__all__ = ["leaf_loss", "tree_cut_loss", "node_centric_loss"]


def node_centric_loss(
    taxonomy: Taxonomy,
    scores: torch.Tensor,
    labels: torch.Tensor,
    average: str = "sample",
    index: ProTeCtIndex | None = None,
) -> torch.Tensor:
    """ProTeCt node-centric loss (scalar, float32).

    ``scores (N, num_nodes)``, ``labels (N,)``. ``average="sample"``: mean over the
    internal nodes on each sample's path of CE over the node's children, then mean
    over samples. ``average="node"``: per internal node, mean CE over the samples
    passing it; then mean over the nodes that occur in the batch (ProTeCt's code).
    """
    s, tgt, mask, rows = path_child_scores(taxonomy, scores.float(), labels, index)
    logp = torch.log_softmax(s, dim=-1)
    nll = -logp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)  # (N, H)
    nll = torch.where(mask, nll, torch.zeros_like(nll))
    if average == "sample":
        return (nll.sum(1) / mask.sum(1)).mean()
    if average == "node":
        n_internal = (index or ProTeCtIndex.of(taxonomy)).child_ids.shape[0]
        flat_rows = rows[mask]
        tot = torch.zeros(n_internal, dtype=nll.dtype, device=nll.device).index_add_(0, flat_rows, nll[mask])
        cnt = torch.zeros(n_internal, dtype=nll.dtype, device=nll.device).index_add_(
            0, flat_rows, torch.ones_like(nll[mask])
        )
        seen = cnt > 0
        return (tot[seen] / cnt[seen]).mean()
    raise ValueError(f"average must be 'sample' or 'node', got {average!r}")


def tree_cut_loss(
    taxonomy: Taxonomy,
    scores: torch.Tensor,
    labels: torch.Tensor,
    cut: Sequence[int],
) -> torch.Tensor:
    """Cross-entropy over the nodes of ``cut`` (a tree cut, e.g. from `random_cut`);
    the target of a sample is the position of the cut node on its path. Scalar, float32."""
    idx = ProTeCtIndex.of(taxonomy)
    labels = labels.to(scores.device).long()
    check_scores(idx, scores, labels)
    ids = cut_ids(taxonomy, cut)
    targets = torch.as_tensor(cut_targets(taxonomy, ids), device=scores.device)
    cols = torch.as_tensor(np.asarray(ids, dtype=np.int64), device=scores.device)
    return F.cross_entropy(scores.float().index_select(1, cols), targets[labels])


def leaf_loss(taxonomy: Taxonomy, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over all leaves (columns ``taxonomy.leaves``). Scalar, float32."""
    idx = ProTeCtIndex.of(taxonomy).on(scores.device)
    labels = labels.to(scores.device).long()
    check_scores(idx, scores, labels)
    return F.cross_entropy(scores.float().index_select(1, idx.leaves), labels)
