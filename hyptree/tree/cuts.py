"""Tree cuts: random cuts, the evaluation cuts, per-class cut targets, level cuts.

A tree cut is a tuple of node ids such that every leaf has exactly one
ancestor-or-self in it (the root is never in a cut). ``random_cut`` returns cuts
sorted by node id; cuts loaded from files (`hyptree.tree.cutfiles`) keep the
file's order. The class target of a cut is the position, within the cut tuple, of
the cut node on the class's path (``cut_targets``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from hyptree.tree.taxonomy import Taxonomy

__all__ = [
    "random_cut",
    "evaluation_cuts",
    "cut_ids",
    "cut_targets",
    "validate_cut",
    "level_cut",
    "frontier_cut",
]


def _levels(taxonomy: Taxonomy) -> list[np.ndarray]:
    """Node ids per depth, cached on the taxonomy."""
    cache = taxonomy._cache
    if "levels" not in cache:
        cache["levels"] = [taxonomy.nodes_at_depth(d) for d in range(taxonomy.depth.max() + 1)]
    return cache["levels"]


def frontier_cut(taxonomy: Taxonomy, expanded: np.ndarray) -> tuple[int, ...]:
    """The cut defined by ``(num_nodes,)`` bool expansion flags: the nodes reached from
    the root through expanded nodes that are leaves or not expanded themselves (the
    root counts as expanded, leaves as not). Sorted ids."""
    expanded = np.array(expanded, dtype=bool)
    expanded[0] = True
    expanded[taxonomy.leaves] = False
    reached = np.zeros(taxonomy.num_nodes, dtype=bool)
    reached[0] = True
    parent = taxonomy.parent
    for nodes in _levels(taxonomy)[1:]:
        p = parent[nodes]
        reached[nodes] = reached[p] & expanded[p]
    return tuple(int(i) for i in np.nonzero(reached & ~expanded)[0])


def random_cut(taxonomy: Taxonomy, rng: np.random.Generator, rate: float) -> tuple[int, ...]:
    """Draw a random tree cut (ProTeCt's dynamic tree cut).

    Every internal node except the root is independently *expanded* with probability
    ``1 - rate`` (one uniform draw per internal node, in ``taxonomy.internal`` order);
    the root is always expanded. The cut is the frontier reached from the root through
    expanded nodes: a reached node that is a leaf or not expanded. ``rate=1`` gives the
    root's children, ``rate=0`` all leaves. Returns node ids sorted ascending.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    expanded = np.zeros(taxonomy.num_nodes, dtype=bool)
    expanded[taxonomy.internal] = rng.random(len(taxonomy.internal)) >= rate
    return frontier_cut(taxonomy, expanded)


def evaluation_cuts(
    taxonomy: Taxonomy,
    n: int = 25,
    seed: int = 0,
    rates: Sequence[float] = (0.9, 0.7, 0.5, 0.3, 0.1),
    max_draws: int = 1000,
) -> list[tuple[int, ...]]:
    """``n`` distinct random cuts, ``n / len(rates)`` per rate, rates in the given order.

    When ``n`` is not a multiple of ``len(rates)`` the first rates get one more. A cut
    already drawn (at any rate) is redrawn, up to ``max_draws`` draws per rate. A tree
    with fewer distinct cuts than asked gives all it found, with a warning giving the
    counts. Reproducible from ``seed``.
    """
    if n < 1 or not rates:
        raise ValueError("need n >= 1 and at least one rate")
    rng = np.random.default_rng(seed)
    per, extra = divmod(n, len(rates))
    seen: set = set()
    cuts: list[tuple[int, ...]] = []
    short = []
    for r_i, rate in enumerate(rates):
        want = per + (1 if r_i < extra else 0)
        got = draws = 0
        while got < want and draws < max_draws:
            cut = random_cut(taxonomy, rng, rate)
            draws += 1
            if cut not in seen:
                seen.add(cut)
                cuts.append(cut)
                got += 1
        if got < want:
            short.append(f"{got} of {want} at rate {rate}")
    if short:
        warnings.warn(
            f"evaluation_cuts: found {len(cuts)} distinct cuts of {n} asked "
            f"({'; '.join(short)}; {max_draws} draws per rate) - the tree has few distinct cuts",
            stacklevel=2,
        )
    return cuts


def cut_ids(taxonomy: Taxonomy, cut: Sequence[int | str]) -> tuple[int, ...]:
    """``cut`` (node ids or names) as a tuple of node ids, in its order; unknown names
    raise ``KeyError``, ids out of range ``ValueError``. Does not check it is a cut."""
    ids = []
    for x in cut:
        if isinstance(x, str):
            ids.append(taxonomy.index(x))
        else:
            i = int(x)
            if not 0 <= i < taxonomy.num_nodes:
                raise ValueError(f"cut node id {i} outside 0..{taxonomy.num_nodes - 1}")
            ids.append(i)
    return tuple(ids)


def cut_targets(taxonomy: Taxonomy, cut: Sequence[int | str]) -> np.ndarray:
    """``(num_classes,)`` int64: position within ``cut`` of the cut node on each class's path.

    Raises ``ValueError`` when ``cut`` is not a tree cut, naming the node or class:
    the root in the cut, a repeated node, a class covered by no cut node, or a class
    covered twice (one cut node is an ancestor of another).
    """
    ids = cut_ids(taxonomy, cut)
    if not ids:
        raise ValueError("empty cut")
    if 0 in ids:
        raise ValueError(f"the root {taxonomy.names[0]!r} cannot be in a tree cut")
    pos = np.full(taxonomy.num_nodes, -1, dtype=np.int64)
    for j, i in enumerate(ids):
        if pos[i] >= 0:
            raise ValueError(f"node {taxonomy.names[i]!r} appears twice in the cut")
        pos[i] = j
    paths, mask = taxonomy._paths, taxonomy._path_mask  # read-only tables, no copies on this hot path
    hit = (pos[paths.clip(0)] >= 0) & mask  # (C, H)
    count = hit.sum(1)
    if (count != 1).any():
        k = int(np.nonzero(count != 1)[0][0])
        cls = taxonomy.names[taxonomy.leaves[k]]
        if count[k] == 0:
            raise ValueError(f"invalid cut: class {cls!r} (label {k}) is not covered by any cut node")
        by = [taxonomy.names[i] for i in paths[k][hit[k]]]
        raise ValueError(
            f"invalid cut: class {cls!r} (label {k}) is covered {int(count[k])} times, "
            f"by {', '.join(repr(b) for b in by)}"
        )
    node = paths[np.arange(len(paths)), hit.argmax(1)]
    return pos[node]


def validate_cut(taxonomy: Taxonomy, cut: Sequence[int | str]) -> tuple[int, ...]:
    """Check that ``cut`` (node ids or names) is a tree cut; return it as a tuple of ids
    in the given order. Raises like ``cut_targets``."""
    cut_targets(taxonomy, cut)
    return cut_ids(taxonomy, cut)


def level_cut(taxonomy: Taxonomy, d: int) -> tuple[int, ...]:
    """The depth-``d`` cut: nodes at depth ``d`` plus leaves shallower than ``d``
    (``1 <= d <= height``); sorted ids. ``level_cut(t, t.height)`` is all leaves."""
    if not 1 <= d <= taxonomy.height:
        raise ValueError(f"depth {d} outside 1..{taxonomy.height}")
    dep = taxonomy.depth
    is_leaf = np.zeros(taxonomy.num_nodes, dtype=bool)
    is_leaf[taxonomy.leaves] = True
    return tuple(int(i) for i in np.nonzero((dep == d) | (is_leaf & (dep < d)))[0])
