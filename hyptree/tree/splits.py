"""Base / novel class splits (CoOp's base-to-novel protocol).

`SPLIT_MODES` is the single list of split modes; the yacs config checks
``DATASET.SUBSAMPLE_SPLIT`` against it.
"""

from __future__ import annotations

import math

import numpy as np

from hyptree.tree.taxonomy import Taxonomy

__all__ = ["SPLIT_MODES", "split_base_novel"]

SPLIT_MODES = ("balanced", "first_half")


def split_base_novel(taxonomy: Taxonomy, mode: str = "balanced", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split the classes into base and novel halves; returns two ascending int64 label arrays.

    ``first_half`` (CoOp's ``subsample_classes``): ``m = ceil(C / 2)``, base = labels
    ``0..m-1``, novel = the rest; ``seed`` is unused.

    ``balanced`` (default): the classes are grouped by their leaf's parent; within
    each group the leaves are shuffled (seeded) and ``floor(n/2)`` go to base. Groups
    of odd size have one leaf left over: a seeded permutation of those groups gives
    the leftover to base for the first ``ceil(#odd/2)`` of them and to novel for the
    rest, so base always has exactly ``ceil(C/2)`` classes, like ``first_half``.
    Every class lands in exactly one half; each half's ``subtree`` is a valid tree.
    """
    C = taxonomy.num_classes
    if C < 2:
        raise ValueError("a base/novel split needs at least two classes")
    if mode == "first_half":
        m = math.ceil(C / 2)
        return np.arange(m, dtype=np.int64), np.arange(m, C, dtype=np.int64)
    if mode != "balanced":
        raise ValueError(f"unknown split mode {mode!r}; use 'balanced' or 'first_half'")
    rng = np.random.default_rng(seed)
    leaf_parent = taxonomy.parent[taxonomy.leaves]
    groups = [np.nonzero(leaf_parent == p)[0] for p in np.unique(leaf_parent)]  # parents in id order
    base, leftovers = [], []
    novel = []
    for g in groups:
        g = rng.permutation(g)
        h = len(g) // 2
        base.extend(g[:h])
        novel.extend(g[h : 2 * h])
        if len(g) % 2:
            leftovers.append(int(g[-1]))
    leftovers = [leftovers[i] for i in rng.permutation(len(leftovers))]
    nb = math.ceil(len(leftovers) / 2)
    base.extend(leftovers[:nb])
    novel.extend(leftovers[nb:])
    return np.sort(np.asarray(base, dtype=np.int64)), np.sort(np.asarray(novel, dtype=np.int64))
