"""Decisions from node score matrices: flat and top-down leaves, paths with per-level scores.

Pure tensor code shared by the mistake metrics (:mod:`hyptree.eval.mistakes`) and the
predictor (:mod:`hyptree.run.predict`); no model, no config. ``scores (N, num_nodes)``
are one row per image, one column per taxonomy node (the root column is ignored), as
:meth:`~hyptree.model.hierarchical.HierarchicalCLIP.scores` returns them.

* **flat** decision: the argmax over all leaf columns (what LA scores);
* **top-down** decision: from the root, repeatedly the argmax over the current node's
  children, until a leaf (greedy root-to-leaf decoding);
* a node's **level score**: the softmax over its siblings (the children of its parent)
  of the scores, i.e. the model's probability of that child given its parent.

Ties go to the first child (ascending node id) / first leaf (label order), as in
:mod:`hyptree.eval.metrics`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hyptree.tree.index import ProTeCtIndex, TreeTables
from hyptree.tree.taxonomy import Taxonomy

__all__ = ["DecodeTables", "top_down", "sibling_probs", "decode", "Decision", "path_of", "decision_records"]


class DecodeTables(TreeTables):
    """Per-taxonomy tables (CPU tensors, ``on(device)`` for a cached copy).

    * ``row_of (num_nodes,)``: internal-node row (``ProTeCtIndex`` order) of each node, -1 for leaves;
    * ``class_of (num_nodes,)``: class label of each leaf node, -1 for internal nodes;
    * ``paths (C, H)``, ``mask (C, H)``: padded root-excluded class paths (pad 0).
    """

    def __init__(self, taxonomy: Taxonomy):
        self.taxonomy = taxonomy
        self.index = ProTeCtIndex.of(taxonomy)
        row_of = np.full(taxonomy.num_nodes, -1, dtype=np.int64)
        row_of[taxonomy.internal] = np.arange(len(taxonomy.internal))
        class_of = np.full(taxonomy.num_nodes, -1, dtype=np.int64)
        class_of[taxonomy.leaves] = np.arange(taxonomy.num_classes)
        paths, mask = taxonomy.padded_paths()
        self.row_of = torch.as_tensor(row_of)
        self.class_of = torch.as_tensor(class_of)
        self.paths = torch.as_tensor(np.where(mask, paths, 0))
        self.mask = torch.as_tensor(mask)


def _check(taxonomy: Taxonomy, scores: torch.Tensor) -> None:
    if scores.dim() != 2 or scores.shape[1] != taxonomy.num_nodes:
        raise ValueError(f"scores must be (N, num_nodes={taxonomy.num_nodes}), got {tuple(scores.shape)}")


def top_down(taxonomy: Taxonomy, scores: torch.Tensor) -> torch.Tensor:
    """Greedy root-to-leaf decoding: ``(N,)`` class labels of the leaves reached."""
    _check(taxonomy, scores)
    t = DecodeTables.of(taxonomy).on(scores.device)
    idx = t.index
    cur = torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)  # the root
    for _ in range(taxonomy.height):
        rows = t.row_of[cur]
        inner = rows >= 0
        if not bool(inner.any()):
            break
        ids = idx.child_ids[rows.clamp(min=0)]  # (N, B)
        s = scores.gather(1, ids).masked_fill(~idx.child_valid[rows.clamp(min=0)], float("-inf"))
        nxt = ids.gather(1, s.argmax(1, keepdim=True)).squeeze(1)
        cur = torch.where(inner, nxt, cur)
    return t.class_of[cur]


def sibling_probs(taxonomy: Taxonomy, scores: torch.Tensor) -> torch.Tensor:
    """``(N, num_nodes)``: each node's softmax over its siblings (column 0, the root, is 1)."""
    _check(taxonomy, scores)
    idx = DecodeTables.of(taxonomy).on(scores.device).index
    n = scores.shape[0]
    ids, valid = idx.child_ids, idx.child_valid  # (I, B)
    s = scores.float()[:, ids.reshape(-1)].reshape(n, *ids.shape).masked_fill(~valid, float("-inf"))
    p = s.softmax(-1)  # (N, I, B)
    out = torch.ones(n, taxonomy.num_nodes, dtype=p.dtype, device=scores.device)
    out[:, ids[valid]] = p[:, valid]
    return out


@dataclass
class Decision:
    """Decisions for a batch (numpy arrays, ``N`` rows).

    * ``flat (N,)``, ``top_down (N,)``: class labels;
    * ``topk (N, k)``, ``topk_probs (N, k)``: the best leaves and their softmax over all leaves;
    * ``probs (N, num_nodes)``: :func:`sibling_probs` (a path's level scores are its nodes' entries).
    """

    flat: np.ndarray
    top_down: np.ndarray
    topk: np.ndarray
    topk_probs: np.ndarray
    probs: np.ndarray


@torch.no_grad()
def decode(taxonomy: Taxonomy, scores, k: int = 5) -> Decision:
    """Flat and top-down leaves, the top-``k`` leaves (``k`` capped at the number of classes)
    and the sibling-softmax level scores of ``scores (N, num_nodes)``."""
    scores = scores.detach() if isinstance(scores, torch.Tensor) else torch.as_tensor(np.asarray(scores))
    _check(taxonomy, scores)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    scores = scores.float()
    leaf = scores.index_select(1, DecodeTables.of(taxonomy).on(scores.device).index.leaves)
    probs, top = leaf.softmax(1).topk(min(k, taxonomy.num_classes), dim=1)
    return Decision(
        flat=leaf.argmax(1).cpu().numpy(),
        top_down=top_down(taxonomy, scores).cpu().numpy(),
        topk=top.cpu().numpy(),
        topk_probs=probs.cpu().numpy(),
        probs=sibling_probs(taxonomy, scores).cpu().numpy(),
    )


def path_of(taxonomy: Taxonomy, label: int, probs_row) -> list[dict]:
    """Root-excluded path of class ``label``: per node ``{"node", "display", "depth", "score"}``
    with ``score`` its sibling softmax from ``probs_row`` (a row of :attr:`Decision.probs`)."""
    return [
        {
            "node": taxonomy.names[v],
            "display": taxonomy.display_names[v],
            "depth": int(taxonomy.depth[v]),
            "score": float(probs_row[v]),
        }
        for v in taxonomy.path(int(label))
    ]


def decision_records(taxonomy: Taxonomy, dec: Decision) -> list[dict]:
    """One JSON-ready dict per row of ``dec``::

        {"flat": {"label", "leaf", "path": [...], "path_score"},
         "top_down": {... the same ...},
         "topk": [{"label", "leaf", "prob"}, ...],
         "agree": flat leaf == top-down leaf}

    ``path`` as :func:`path_of`; ``path_score`` is the product of the path's level scores
    (the probability of the path under the sibling softmaxes).
    """
    out = []
    for i in range(len(dec.flat)):
        row = {}
        for key in ("flat", "top_down"):
            k = int(getattr(dec, key)[i])
            path = path_of(taxonomy, k, dec.probs[i])
            score = float(np.prod([p["score"] for p in path]))
            row[key] = {"label": k, "leaf": taxonomy.class_names[k], "path": path, "path_score": score}
        row["topk"] = [
            {"label": int(k), "leaf": taxonomy.class_names[int(k)], "prob": float(p)}
            for k, p in zip(dec.topk[i], dec.topk_probs[i])
        ]
        row["agree"] = row["flat"]["label"] == row["top_down"]["label"]
        out.append(row)
    return out
