"""The checks behind ``Taxonomy(names, parent, leaves, display_names)``.

Each function validates one constructor argument against what is already known
and returns it in the form `Taxonomy` stores; errors name the offending node.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = [
    "default_display_name",
    "check_names",
    "check_parents",
    "depths_or_cycle",
    "check_children",
    "check_leaves",
    "check_display_names",
    "path_table",
]


def default_display_name(name: str) -> str:
    """Prompt text of a node without an explicit display name: ``_`` -> space."""
    return name.replace("_", " ")


def check_names(names: tuple) -> dict[str, int]:
    """``{name: id}``; raises on an empty, padded, multi-line or repeated name."""
    if not names:
        raise ValueError("a taxonomy needs at least a root node")
    index: dict[str, int] = {}
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name or name != name.strip() or "\n" in name:
            raise ValueError(
                f"node {i}: name {name!r} must be a non-empty string without surrounding whitespace or newlines"
            )
        if name in index:
            raise ValueError(f"duplicate node name {name!r} (nodes {index[name]} and {i})")
        index[name] = i
    return index


def check_parents(names: tuple, parent) -> np.ndarray:
    """``parent`` as int64; raises on a wrong length, a second root, an id out of
    range or a self-parent."""
    n = len(names)
    parent_arr = np.asarray(parent, dtype=np.int64).reshape(-1)
    if parent_arr.shape[0] != n:
        raise ValueError(f"parent has {parent_arr.shape[0]} entries for {n} nodes")
    if parent_arr[0] != -1:
        raise ValueError(f"node 0 ({names[0]!r}) is the root and must have parent -1, got {parent_arr[0]}")
    for i in range(1, n):
        p = int(parent_arr[i])
        if p == -1:
            raise ValueError(f"node {names[i]!r} has no parent; only node 0 (the root {names[0]!r}) may have parent -1")
        if not 0 <= p < n:
            raise ValueError(f"node {names[i]!r} has parent {p}, outside 0..{n - 1}")
        if p == i:
            raise ValueError(f"node {names[i]!r} is its own parent (cycle)")
    return parent_arr


def depths_or_cycle(names, parent) -> np.ndarray:
    """Depth of every node; raises naming a cycle when some node never reaches the root."""
    n = len(names)
    depth = np.full(n, -1, dtype=np.int64)
    depth[0] = 0
    for i in range(1, n):
        if depth[i] >= 0:
            continue
        chain = []
        on_chain = set()
        j = i
        while depth[j] < 0:
            if j in on_chain:
                cyc = chain[chain.index(j) :] + [j]
                raise ValueError("cycle: " + " -> ".join(repr(names[c]) for c in cyc))
            chain.append(j)
            on_chain.add(j)
            j = int(parent[j])
        d = depth[j]
        for c in reversed(chain):
            d += 1
            depth[c] = d
    return depth


def check_children(names: tuple, parent: np.ndarray) -> tuple[tuple[int, ...], ...]:
    """Children per node in ascending id order; the root must have some."""
    n = len(names)
    kids: list[list[int]] = [[] for _ in range(n)]
    for c in range(1, n):  # ascending ids
        kids[int(parent[c])].append(c)
    if n == 1 or not kids[0]:
        raise ValueError(f"the root {names[0]!r} has no children: a taxonomy needs at least one class")
    return tuple(tuple(k) for k in kids)


def check_leaves(names: tuple, index: dict, children: tuple, leaves) -> list[int]:
    """The class order as node ids: exactly the childless nodes, each once."""
    n = len(names)
    childless = [i for i in range(n) if not children[i]]
    if leaves is None:
        return childless
    leaf_ids = []
    seen: dict[int, int] = {}
    for k, x in enumerate(leaves):
        if isinstance(x, str):
            if x not in index:
                raise ValueError(f"class {k}: unknown class name {x!r} (not a node of the tree)")
            i = index[x]
        else:
            i = int(x)
            if not 0 <= i < n:
                raise ValueError(f"class {k}: node id {i} outside 0..{n - 1}")
        if i in seen:
            raise ValueError(f"class {names[i]!r} is listed twice in the class order (classes {seen[i]} and {k})")
        if children[i]:
            raise ValueError(
                f"class {names[i]!r} is an internal node (children: "
                f"{', '.join(repr(names[c]) for c in children[i][:5])}"
                f"{', ...' if len(children[i]) > 5 else ''}), not a leaf"
            )
        seen[i] = k
        leaf_ids.append(i)
    missing = [i for i in childless if i not in seen]
    if missing:
        listed = ", ".join(repr(names[i]) for i in missing[:10])
        raise ValueError(
            f"{len(missing)} node(s) have no children but are not classes (internal nodes "
            f"without leaves): {listed}{', ...' if len(missing) > 10 else ''}"
        )
    return leaf_ids


def check_display_names(names: tuple, index: dict, display_names) -> tuple[str, ...]:
    """One non-empty one-line prompt text per node (default: `default_display_name`)."""
    n = len(names)
    disp = [None] * n
    if display_names is not None:
        if isinstance(display_names, Mapping):
            for key, text in display_names.items():
                if key not in index:
                    raise ValueError(f"display name given for unknown node {key!r}")
                disp[index[key]] = text
        else:
            display_names = list(display_names)
            if len(display_names) != n:
                raise ValueError(f"display_names has {len(display_names)} entries for {n} nodes")
            disp = display_names
    out = []
    for i, text in enumerate(disp):
        if text is None:
            text = default_display_name(names[i])
        if not isinstance(text, str) or not text.strip() or "\n" in text:
            raise ValueError(f"node {names[i]!r}: display name {text!r} must be a non-empty one-line string")
        out.append(text)
    return tuple(out)


def path_table(leaf_ids: list[int], depth: np.ndarray, parent: np.ndarray, height: int) -> np.ndarray:
    """Root-excluded class paths, ``(C, height)`` int64, leaf last, padded with ``-1``."""
    paths = np.full((len(leaf_ids), height), -1, dtype=np.int64)
    for k, leaf in enumerate(leaf_ids):
        node, j = leaf, int(depth[leaf]) - 1
        while j >= 0:
            paths[k, j] = node
            node = int(parent[node])
            j -= 1
    return paths
