"""The `Taxonomy` tree, base/novel splits and tree cuts.

Conventions (the contract other modules rely on):

* Node 0 is the root. Every node has a unique ``name``; its prompt text is
  ``display_names[i]`` (the name with ``_`` replaced by a space unless an explicit
  display name was given). Display names need not be unique.
* ``leaves[k]`` is the node id of class ``k`` (leaves are in label order).
* ``children(i)`` lists a node's children in ascending node-id order.
* ``path(k)`` is the root-to-leaf path of class ``k`` *without* the root:
  ``n_1 .. n_L`` with ``n_L = leaves[k]`` and ``L = depth[leaves[k]]``.
  ``padded_paths()`` stacks them into ``(C, height)`` arrays padded with ``-1``
  plus a boolean mask; ``-1`` is never a node id.
* Node order: the general constructor keeps the ids it is given. ``from_paths``
  and ``from_edges`` number nodes in depth-first pre-order from the root,
  children visited in order of first appearance in the input (so every subtree
  is a contiguous id range, as in ProTeCt's ``tree.npy``).
* A tree cut is a tuple of node ids such that every leaf has exactly one
  ancestor-or-self in it (the root is never in a cut). ``random_cut`` returns
  cuts sorted by node id; cuts loaded from files keep the file's order. The
  class target of a cut is the position, within the cut tuple, of the cut node
  on the class's path (``cut_targets``).

Run ``python -m hyptree taxonomy show|stats|convert SOURCE`` for the command line.
"""
from __future__ import annotations

import json
import math
import sys
import warnings
from typing import Iterable, Mapping, Sequence

import numpy as np

from hyptree.utils.files import atomic_write_json

__all__ = [
    "Taxonomy",
    "default_display_name",
    "split_base_novel",
    "random_cut",
    "evaluation_cuts",
    "validate_cut",
    "cut_targets",
    "level_cut",
    "save_cuts",
    "load_cuts",
    "load_protect_cuts",
    "main",
]

ROOT_NAME = "root"


def default_display_name(name: str) -> str:
    """Prompt text of a node without an explicit display name: ``_`` -> space."""
    return name.replace("_", " ")


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


class Taxonomy:
    """Immutable rooted tree over class labels.

    Args:
        names: ``num_nodes`` unique non-empty strings; ``names[0]`` is the root.
        parent: ``(num_nodes,)`` ints, ``parent[0] == -1``, every other entry a node id.
        leaves: the classes in label order, as node ids or node names; every node
            without children must be listed exactly once, and only those. ``None``
            takes the childless nodes in ascending id order.
        display_names: prompt texts, either a sequence aligned with ``names``
            (``None`` entries take the default) or a mapping ``name -> text``.

    Raises ``ValueError`` naming the offending node for: duplicate names, bad parent
    ids, several roots, cycles, classes that are internal nodes, unknown or repeated
    classes, and childless nodes that are not classes (internal nodes without leaves).
    """

    def __init__(
        self,
        names: Sequence[str],
        parent: Sequence[int],
        leaves: Sequence[int | str] | None = None,
        display_names: Sequence[str | None] | Mapping[str, str] | None = None,
    ):
        names = tuple(names)
        n = len(names)
        if n == 0:
            raise ValueError("a taxonomy needs at least a root node")
        index: dict[str, int] = {}
        for i, name in enumerate(names):
            if not isinstance(name, str) or not name or name != name.strip() or "\n" in name:
                raise ValueError(
                    f"node {i}: name {name!r} must be a non-empty string without "
                    "surrounding whitespace or newlines"
                )
            if name in index:
                raise ValueError(f"duplicate node name {name!r} (nodes {index[name]} and {i})")
            index[name] = i

        parent_arr = np.asarray(parent, dtype=np.int64).reshape(-1)
        if parent_arr.shape[0] != n:
            raise ValueError(f"parent has {parent_arr.shape[0]} entries for {n} nodes")
        if parent_arr[0] != -1:
            raise ValueError(f"node 0 ({names[0]!r}) is the root and must have parent -1, got {parent_arr[0]}")
        for i in range(1, n):
            p = int(parent_arr[i])
            if p == -1:
                raise ValueError(
                    f"node {names[i]!r} has no parent; only node 0 (the root {names[0]!r}) may have parent -1"
                )
            if not 0 <= p < n:
                raise ValueError(f"node {names[i]!r} has parent {p}, outside 0..{n - 1}")
            if p == i:
                raise ValueError(f"node {names[i]!r} is its own parent (cycle)")

        depth = _depths_or_cycle(names, parent_arr)

        kids: list[list[int]] = [[] for _ in range(n)]
        for c in range(1, n):  # ascending ids
            kids[int(parent_arr[c])].append(c)
        children = tuple(tuple(k) for k in kids)
        childless = [i for i in range(n) if not children[i]]
        if n == 1 or not children[0]:
            raise ValueError(f"the root {names[0]!r} has no children: a taxonomy needs at least one class")

        if leaves is None:
            leaf_ids = childless
        else:
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
        disp_t = []
        for i, text in enumerate(disp):
            if text is None:
                text = default_display_name(names[i])
            if not isinstance(text, str) or not text.strip() or "\n" in text:
                raise ValueError(f"node {names[i]!r}: display name {text!r} must be a non-empty one-line string")
            disp_t.append(text)

        d = self.__dict__
        d["_names"] = names
        d["_index"] = index
        d["_parent"] = _readonly(parent_arr)
        d["_depth"] = _readonly(depth)
        d["_children"] = children
        d["_leaves"] = _readonly(np.asarray(leaf_ids, dtype=np.int64))
        d["_display"] = tuple(disp_t)
        class_of = np.full(n, -1, dtype=np.int64)
        class_of[d["_leaves"]] = np.arange(len(leaf_ids))
        d["_class_of"] = _readonly(class_of)
        d["_internal"] = _readonly(np.asarray([i for i in range(n) if children[i]], dtype=np.int64))
        d["_height"] = int(depth[d["_leaves"]].max())
        d["_cache"] = {}
        # padded root-excluded paths, (C, height), -1 padded
        C, H = len(leaf_ids), d["_height"]
        paths = np.full((C, H), -1, dtype=np.int64)
        for k, leaf in enumerate(leaf_ids):
            node, j = leaf, int(depth[leaf]) - 1
            while j >= 0:
                paths[k, j] = node
                node = int(parent_arr[node])
                j -= 1
        d["_paths"] = _readonly(paths)
        d["_path_mask"] = _readonly(paths >= 0)

    # ------------------------------------------------------------------ immutability
    def __setattr__(self, key, value):
        raise AttributeError("Taxonomy is immutable")

    def __delattr__(self, key):
        raise AttributeError("Taxonomy is immutable")

    def __reduce__(self):
        return (Taxonomy, (self._names, self._parent.tolist(), self._leaves.tolist(), self._display))

    # ------------------------------------------------------------------ basic views
    @property
    def names(self) -> tuple[str, ...]:
        """Node names, ``(num_nodes,)``."""
        return self._names

    @property
    def display_names(self) -> tuple[str, ...]:
        """Prompt text per node, ``(num_nodes,)``."""
        return self._display

    @property
    def parent(self) -> np.ndarray:
        """``(num_nodes,)`` int64 parent ids, ``-1`` for the root (read-only)."""
        return self._parent

    @property
    def depth(self) -> np.ndarray:
        """``(num_nodes,)`` int64 depths, root 0 (read-only)."""
        return self._depth

    @property
    def leaves(self) -> np.ndarray:
        """``(num_classes,)`` int64: ``leaves[k]`` is the node of class ``k``."""
        return self._leaves

    @property
    def internal(self) -> np.ndarray:
        """Ids of nodes with children (root included), ascending, ``(num_internal,)``."""
        return self._internal

    @property
    def class_names(self) -> tuple[str, ...]:
        """Names of the classes in label order."""
        return tuple(self._names[i] for i in self._leaves)

    @property
    def num_nodes(self) -> int:
        return len(self._names)

    @property
    def num_classes(self) -> int:
        return len(self._leaves)

    @property
    def height(self) -> int:
        """Largest leaf depth (the root has depth 0)."""
        return self._height

    root = 0

    def __len__(self) -> int:
        return len(self._names)

    def children(self, node: int | str) -> tuple[int, ...]:
        """Child ids of ``node`` in ascending id order (empty for a leaf)."""
        return self._children[self.node_id(node)]

    def node_id(self, node: int | str) -> int:
        """Id of a node given by id or name (``KeyError`` naming it if unknown)."""
        if isinstance(node, str):
            return self.index(node)
        i = int(node)
        if not 0 <= i < len(self._names):
            raise KeyError(f"node id {i} outside 0..{len(self._names) - 1}")
        return i

    def index(self, name: str) -> int:
        """Node id of ``name``."""
        try:
            return self._index[name]
        except KeyError:
            raise KeyError(f"unknown node {name!r}") from None

    def __contains__(self, name) -> bool:
        return name in self._index

    def class_index(self, name: str) -> int:
        """Label of the class (leaf) called ``name``."""
        k = int(self._class_of[self.index(name)])
        if k < 0:
            raise KeyError(f"node {name!r} is not a class (it has children)")
        return k

    def class_of(self, node: int | str) -> int:
        """Label of a leaf node, ``-1`` for internal nodes."""
        return int(self._class_of[self.node_id(node)])

    def is_leaf(self, node: int | str) -> bool:
        return not self._children[self.node_id(node)]

    # ------------------------------------------------------------------ paths
    def path(self, k: int) -> np.ndarray:
        """Root-excluded path of class ``k``: ``(depth of its leaf,)`` node ids, leaf last."""
        if not 0 <= k < self.num_classes:
            raise IndexError(f"class {k} outside 0..{self.num_classes - 1}")
        return self._paths[k][self._path_mask[k]].copy()

    def padded_paths(self, pad: int = -1) -> tuple[np.ndarray, np.ndarray]:
        """All class paths for batching.

        Returns ``paths (C, height)`` int64 (root excluded, leaf last in each row,
        positions past the leaf filled with ``pad``) and ``mask (C, height)`` bool
        (True on real nodes). With the default ``pad=-1`` a padded entry can never be
        mistaken for a node; gather with ``paths.clip(0)`` and the mask.
        """
        paths = self._paths.copy()
        if pad != -1:
            paths[~self._path_mask] = pad
        return paths, self._path_mask.copy()

    def ancestors(self, node: int | str) -> tuple[int, ...]:
        """Proper ancestors of ``node`` from the root down to its parent."""
        i = self.node_id(node)
        out = []
        p = int(self._parent[i])
        while p >= 0:
            out.append(p)
            p = int(self._parent[p])
        return tuple(reversed(out))

    def is_ancestor(self, a: int | str, b: int | str) -> bool:
        """True when ``a`` is a proper ancestor of ``b``."""
        a, b = self.node_id(a), self.node_id(b)
        if self._depth[a] >= self._depth[b]:
            return False
        p = b
        while self._depth[p] > self._depth[a]:
            p = int(self._parent[p])
        return p == a

    def classes_under(self, node: int | str) -> np.ndarray:
        """Labels of the classes whose leaf is ``node`` or below it, ascending."""
        i = self.node_id(node)
        if i == 0:
            return np.arange(self.num_classes)
        d = int(self._depth[i])
        leaf_depth = self._depth[self._leaves]
        hit = (leaf_depth >= d) & (self._paths[np.arange(self.num_classes), np.maximum(d - 1, 0)] == i)
        return np.nonzero(hit)[0]

    def nodes_at_depth(self, d: int) -> np.ndarray:
        """Ids of the nodes at depth ``d``, ascending."""
        return np.nonzero(self._depth == d)[0]

    # ------------------------------------------------------------------ derived trees
    def subtree(self, classes: Sequence[str | int]) -> "Taxonomy":
        """The tree restricted to ``classes`` (names, or integer class labels).

        The new class order is the given order; nodes left without classes are
        dropped; remaining nodes keep their relative id order; chains of single
        children are kept as they are.
        """
        classes = list(classes)
        if not classes:
            raise ValueError("subtree needs at least one class")
        leaf_nodes = []
        unknown = []
        for x in classes:
            if isinstance(x, str):
                if x not in self._index or self._class_of[self._index[x]] < 0:
                    unknown.append(x)
                    continue
                leaf_nodes.append(self._index[x])
            else:
                k = int(x)
                if not 0 <= k < self.num_classes:
                    unknown.append(k)
                    continue
                leaf_nodes.append(int(self._leaves[k]))
        if unknown:
            raise ValueError(
                f"{len(unknown)} unknown class(es) for subtree: "
                f"{', '.join(repr(u) for u in unknown[:10])}{', ...' if len(unknown) > 10 else ''}"
            )
        if len(set(leaf_nodes)) != len(leaf_nodes):
            seen, dup = set(), None
            for i in leaf_nodes:
                if i in seen:
                    dup = i
                    break
                seen.add(i)
            raise ValueError(f"class {self._names[dup]!r} is given twice to subtree")
        keep = np.zeros(self.num_nodes, dtype=bool)
        keep[0] = True
        for leaf in leaf_nodes:
            k = int(self._class_of[leaf])
            keep[self._paths[k][self._path_mask[k]]] = True
        old_ids = np.nonzero(keep)[0]
        new_of = np.full(self.num_nodes, -1, dtype=np.int64)
        new_of[old_ids] = np.arange(len(old_ids))
        parent = [-1] + [int(new_of[self._parent[i]]) for i in old_ids[1:]]
        return Taxonomy(
            [self._names[i] for i in old_ids],
            parent,
            [int(new_of[i]) for i in leaf_nodes],
            [self._display[i] for i in old_ids],
        )

    # ------------------------------------------------------------------ text format
    @classmethod
    def from_paths(
        cls,
        lines: Iterable[str] | str,
        class_order: Sequence[str] | None = None,
        display_names: Mapping[str, str] | None = None,
        root_name: str | None = None,
        source: str = "<paths>",
    ) -> "Taxonomy":
        """Build from the canonical text format.

        One root-to-leaf path per line, components separated by ``/``, the root
        implicit (not written). The root is called ``root_name`` if given, else as a
        line ``@root NAME`` says, else ``root``. Blank lines and lines starting with
        ``#`` are skipped. A line ``@ NAME = DISPLAY TEXT`` gives a node's display
        name. Every other line is a path: components are stripped of
        surrounding spaces and must be non-empty (``a//b``, a leading or trailing
        ``/`` are errors naming the line). The last component of each line is a
        class; a name identifies a node, so the same name under two different
        parents is an error ("node with two parents"), as is a class that is also
        an internal node or a class listed twice.

        Class order: first appearance unless ``class_order`` is given, which must
        name exactly the classes (the error lists missing and extra names).
        Node order: depth-first pre-order, children in order of first appearance.
        ``lines`` may be a single string (split on newlines) or an iterable of lines.
        """
        if isinstance(lines, str):
            lines = lines.splitlines()
        lines = list(lines)
        directives = [
            (n, l.strip()[len("@root"):].strip()) for n, l in enumerate(lines, start=1)
            if l.strip().startswith("@root ") and " = " not in l
        ]
        if len(directives) > 1:
            raise ValueError(f"{source}:{directives[1][0]}: a second '@root' line")
        if directives and not directives[0][1]:
            raise ValueError(f"{source}:{directives[0][0]}: '@root' needs a name")
        if root_name is None:
            root_name = directives[0][1] if directives else ROOT_NAME
        parent_of: dict[str, str] = {}
        where: dict[str, int] = {}
        first_children: dict[str, list[str]] = {root_name: []}
        leaf_order: list[str] = []
        leaf_line: dict[str, int] = {}
        internal_line: dict[str, int] = {}
        disp: dict[str, str] = {}
        disp_line: dict[str, int] = {}
        for lineno, raw in enumerate(lines, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("@root ") and " = " not in line:
                continue
            if line.startswith("@"):
                body = line[1:]
                if " = " not in body:
                    raise ValueError(f"{source}:{lineno}: display-name line must read '@ NAME = TEXT': {raw!r}")
                name, text = body.split(" = ", 1)
                name, text = name.strip(), text.strip()
                if not name or not text:
                    raise ValueError(f"{source}:{lineno}: empty name or display text in {raw!r}")
                disp[name] = text
                disp_line[name] = lineno
                continue
            parts = [p.strip() for p in line.split("/")]
            if any(not p for p in parts):
                raise ValueError(
                    f"{source}:{lineno}: empty path component in {raw!r} "
                    "(no leading/trailing '/' or '//'; the root is implicit)"
                )
            if len(set(parts)) != len(parts):
                raise ValueError(f"{source}:{lineno}: a name repeats within the path {raw!r} (cycle)")
            if root_name in parts:
                raise ValueError(
                    f"{source}:{lineno}: the root {root_name!r} is implicit and must not appear in a path: {raw!r}"
                )
            par = root_name
            for j, name in enumerate(parts):
                if name in parent_of:
                    if parent_of[name] != par:
                        raise ValueError(
                            f"{source}:{lineno}: node with two parents: {name!r} is under "
                            f"{parent_of[name]!r} (line {where[name]}) and under {par!r}"
                        )
                else:
                    parent_of[name] = par
                    where[name] = lineno
                    first_children[par].append(name)
                    first_children[name] = []
                if j < len(parts) - 1:
                    if name in leaf_line:
                        raise ValueError(
                            f"{source}:{lineno}: {name!r} is a class (line {leaf_line[name]}) "
                            "and also has children here"
                        )
                    internal_line.setdefault(name, lineno)
                par = name
            leaf = parts[-1]
            if leaf in internal_line:
                raise ValueError(
                    f"{source}:{lineno}: class {leaf!r} is an internal node (has children on line "
                    f"{internal_line[leaf]})"
                )
            if leaf in leaf_line:
                raise ValueError(f"{source}:{lineno}: class {leaf!r} is listed twice (first on line {leaf_line[leaf]})")
            leaf_line[leaf] = lineno
            leaf_order.append(leaf)
        if not leaf_order:
            raise ValueError(f"{source}: no paths found")
        for name, lineno in disp_line.items():
            if name != root_name and name not in parent_of:
                raise ValueError(f"{source}:{lineno}: display name for unknown node {name!r}")
        if display_names:
            disp.update(display_names)
        _check_class_order(leaf_order, class_order, source)
        return cls._from_children(
            root_name, first_children, list(class_order) if class_order is not None else leaf_order, disp, source
        )

    @classmethod
    def from_edges(
        cls,
        edges: Iterable[tuple[str, str]],
        class_order: Sequence[str] | None = None,
        display_names: Mapping[str, str] | None = None,
        root: str = ROOT_NAME,
        source: str = "<edges>",
    ) -> "Taxonomy":
        """Build from ``(parent_name, child_name)`` pairs; ``root`` names the root.

        Repeated identical edges are ignored. Errors name the node for: a node with
        two parents, an edge into the root, nodes not connected to the root
        (including cycles, reported as ``a -> b -> a``). Classes are the childless
        nodes, in order of first appearance unless ``class_order`` is given (which
        must then name exactly the childless nodes). Node order: depth-first
        pre-order from the root, children in order of first appearance.
        """
        parent_of: dict[str, str] = {}
        kids: dict[str, list[str]] = {root: []}
        order: list[str] = [root]
        for p, c in edges:
            if not isinstance(p, str) or not isinstance(c, str):
                raise ValueError(f"{source}: edge ({p!r}, {c!r}) must join two names")
            if c == root:
                raise ValueError(f"{source}: the root {root!r} cannot be a child (edge from {p!r})")
            if p == c:
                raise ValueError(f"{source}: node {c!r} is its own parent (cycle)")
            if c in parent_of:
                if parent_of[c] != p:
                    raise ValueError(f"{source}: node with two parents: {c!r} is under {parent_of[c]!r} and {p!r}")
                continue
            parent_of[c] = p
            for x in (p, c):
                if x not in kids:
                    kids[x] = []
                    order.append(x)
            kids[p].append(c)
        # everything must hang from the root
        reached = set()
        stack = [root]
        while stack:
            x = stack.pop()
            reached.add(x)
            stack.extend(kids[x])
        lost = [x for x in order if x not in reached]
        if lost:
            cyc = _find_cycle(lost[0], parent_of)
            if cyc:
                raise ValueError(f"{source}: cycle: {' -> '.join(repr(x) for x in cyc)}")
            top = lost[0]
            while top in parent_of:
                top = parent_of[top]
            raise ValueError(
                f"{source}: node {lost[0]!r} is not connected to the root {root!r} "
                f"(its topmost ancestor {top!r} has no parent)"
            )
        leaf_order = [x for x in order if not kids[x]]
        if class_order is not None:
            _check_class_order(leaf_order, class_order, source)
            leaf_order = list(class_order)
        return cls._from_children(root, kids, leaf_order, dict(display_names or {}), source)

    @classmethod
    def _from_children(cls, root, kids, leaf_order, disp, source) -> "Taxonomy":
        names: list[str] = []
        parent: list[int] = []
        stack = [(root, -1)]
        while stack:
            name, p = stack.pop()
            i = len(names)
            names.append(name)
            parent.append(p)
            for c in reversed(kids.get(name, [])):
                stack.append((c, i))
        unknown = [k for k in disp if k not in set(names)]
        if unknown:
            raise ValueError(f"{source}: display name given for unknown node {unknown[0]!r}")
        try:
            return cls(names, parent, leaf_order, disp or None)
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from None

    def to_paths(self) -> list[str]:
        """Canonical text lines: ``@root NAME`` if the root is not called ``root``, one
        ``/``-joined root-excluded path per class in label order, then ``@ NAME = TEXT``
        lines for nodes whose display name is not the default.
        ``Taxonomy.from_paths(t.to_paths()) == t``."""
        bad = [
            n for n in self._names[1:]
            if "/" in n or n.startswith("#") or n.startswith("@") or " = " in n
        ]
        if bad:
            raise ValueError(
                f"node name {bad[0]!r} cannot be written in the path format "
                "(no '/', no leading '#' or '@', no ' = ')"
            )
        lines = [] if self._names[0] == ROOT_NAME else [f"@root {self._names[0]}"]
        lines += ["/".join(self._names[i] for i in self.path(k)) for k in range(self.num_classes)]
        for i, name in enumerate(self._names):
            if self._display[i] != default_display_name(name):
                lines.append(f"@ {name} = {self._display[i]}")
        return lines

    # ------------------------------------------------------------------ summaries
    def stats(self) -> dict:
        """Counts: nodes, classes (leaves), internal, height, nodes per depth,
        leaves per depth, branching (min/max/mean children of internal nodes)."""
        branching = np.array([len(self._children[i]) for i in self._internal])
        leaf_depth = self._depth[self._leaves]
        return {
            "nodes": self.num_nodes,
            "leaves": self.num_classes,
            "internal": int(len(self._internal)),
            "height": self.height,
            "depth_histogram": {int(d): int(c) for d, c in zip(*np.unique(self._depth, return_counts=True))},
            "leaf_depth_histogram": {int(d): int(c) for d, c in zip(*np.unique(leaf_depth, return_counts=True))},
            "branching": {
                "min": int(branching.min()),
                "max": int(branching.max()),
                "mean": round(float(branching.mean()), 4),
            },
            "balanced": bool(leaf_depth.min() == leaf_depth.max()),
        }

    # ------------------------------------------------------------------ comparison
    def _key(self):
        pn = tuple(
            (self._names[i], self._names[self._parent[i]] if i else None, self._display[i])
            for i in range(self.num_nodes)
        )
        return frozenset(pn), self._names[0], self.class_names

    def __eq__(self, other) -> bool:
        """Structural equality: same names, parents, display names and class order
        (node ids may differ)."""
        if not isinstance(other, Taxonomy):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"Taxonomy(root={self._names[0]!r}, nodes={self.num_nodes}, classes={self.num_classes}, "
            f"height={self.height})"
        )

    def format_tree(self, max_lines: int | None = None) -> str:
        """Indented text rendering; classes show ``[label]``, display names in quotes
        when they differ from the name."""
        out: list[str] = []
        stack = [0]
        while stack:
            i = stack.pop()
            line = "  " * int(self._depth[i]) + self._names[i]
            if self._display[i] != default_display_name(self._names[i]):
                line += f" \"{self._display[i]}\""
            if self._class_of[i] >= 0:
                line += f"  [{int(self._class_of[i])}]"
            out.append(line)
            if max_lines is not None and len(out) >= max_lines:
                out.append("...")
                break
            stack.extend(reversed(self._children[i]))
        return "\n".join(out)


def _depths_or_cycle(names, parent) -> np.ndarray:
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
                cyc = chain[chain.index(j):] + [j]
                raise ValueError("cycle: " + " -> ".join(repr(names[c]) for c in cyc))
            chain.append(j)
            on_chain.add(j)
            j = int(parent[j])
        d = depth[j]
        for c in reversed(chain):
            d += 1
            depth[c] = d
    return depth


def _find_cycle(start, parent_of) -> list | None:
    seen: list = []
    x = start
    while x in parent_of:
        if x in seen:
            return seen[seen.index(x):] + [x]
        seen.append(x)
        x = parent_of[x]
    return None


def _check_class_order(leaf_names, class_order, source):
    if class_order is None:
        return
    class_order = list(class_order)
    have = set(leaf_names)
    want = set(class_order)
    dup = [x for i, x in enumerate(class_order) if x in class_order[:i]]
    missing = [x for x in class_order if x not in have]
    extra = [x for x in leaf_names if x not in want]
    if dup or missing or extra:
        msg = [f"{source}: class_order does not match the tree's classes"]
        if missing:
            msg.append(f"{len(missing)} missing from the tree: {', '.join(repr(x) for x in missing[:10])}"
                       f"{', ...' if len(missing) > 10 else ''}")
        if extra:
            msg.append(f"{len(extra)} in the tree but not in class_order: {', '.join(repr(x) for x in extra[:10])}"
                       f"{', ...' if len(extra) > 10 else ''}")
        if dup:
            msg.append(f"repeated in class_order: {', '.join(repr(x) for x in dup[:10])}")
        raise ValueError("; ".join(msg))


# ====================================================================== base / novel
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
        novel.extend(g[h:2 * h])
        if len(g) % 2:
            leftovers.append(int(g[-1]))
    leftovers = [leftovers[i] for i in rng.permutation(len(leftovers))]
    nb = math.ceil(len(leftovers) / 2)
    base.extend(leftovers[:nb])
    novel.extend(leftovers[nb:])
    return np.sort(np.asarray(base, dtype=np.int64)), np.sort(np.asarray(novel, dtype=np.int64))


# ====================================================================== tree cuts
def _levels(taxonomy: Taxonomy) -> list[np.ndarray]:
    cache = taxonomy._cache
    if "levels" not in cache:
        cache["levels"] = [taxonomy.nodes_at_depth(d) for d in range(taxonomy.depth.max() + 1)]
    return cache["levels"]


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
    n = taxonomy.num_nodes
    expanded = np.zeros(n, dtype=bool)
    expanded[taxonomy.internal] = rng.random(len(taxonomy.internal)) >= rate
    expanded[0] = True
    reached = np.zeros(n, dtype=bool)
    reached[0] = True
    parent = taxonomy.parent
    for nodes in _levels(taxonomy)[1:]:
        p = parent[nodes]
        reached[nodes] = reached[p] & expanded[p]
    in_cut = reached & ~expanded
    return tuple(int(i) for i in np.nonzero(in_cut)[0])


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


def _cut_ids(taxonomy: Taxonomy, cut) -> tuple[int, ...]:
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
    ids = _cut_ids(taxonomy, cut)
    if not ids:
        raise ValueError("empty cut")
    if 0 in ids:
        raise ValueError(f"the root {taxonomy.names[0]!r} cannot be in a tree cut")
    pos = np.full(taxonomy.num_nodes, -1, dtype=np.int64)
    for j, i in enumerate(ids):
        if pos[i] >= 0:
            raise ValueError(f"node {taxonomy.names[i]!r} appears twice in the cut")
        pos[i] = j
    paths, mask = taxonomy._paths, taxonomy._path_mask
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
    return _cut_ids(taxonomy, cut)


def level_cut(taxonomy: Taxonomy, d: int) -> tuple[int, ...]:
    """The depth-``d`` cut: nodes at depth ``d`` plus leaves shallower than ``d``
    (``1 <= d <= height``); sorted ids. ``level_cut(t, t.height)`` is all leaves."""
    if not 1 <= d <= taxonomy.height:
        raise ValueError(f"depth {d} outside 1..{taxonomy.height}")
    dep = taxonomy.depth
    is_leaf = np.zeros(taxonomy.num_nodes, dtype=bool)
    is_leaf[taxonomy.leaves] = True
    return tuple(int(i) for i in np.nonzero((dep == d) | (is_leaf & (dep < d)))[0])


def save_cuts(path: str, taxonomy: Taxonomy, cuts: Sequence[Sequence[int | str]]) -> None:
    """Write cuts as JSON ``{"format": "hyptree-cuts", "version": 1, "root": ...,
    "num_classes": C, "cuts": [[node name, ...], ...]}`` (each cut validated first)."""
    out = []
    for j, cut in enumerate(cuts):
        try:
            ids = validate_cut(taxonomy, cut)
        except ValueError as e:
            raise ValueError(f"cut {j}: {e}") from None
        out.append([taxonomy.names[i] for i in ids])
    doc = {
        "format": "hyptree-cuts",
        "version": 1,
        "root": taxonomy.names[0],
        "num_classes": taxonomy.num_classes,
        "cuts": out,
    }
    atomic_write_json(path, doc)


def load_cuts(path: str, taxonomy: Taxonomy) -> list[tuple[int, ...]]:
    """Read cuts written by ``save_cuts`` (or a bare JSON list of node-name lists);
    every cut is validated against ``taxonomy`` with errors naming the file, cut and node."""
    with open(path, encoding="utf-8") as f:
        try:
            doc = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not JSON ({e})") from None
    cuts = doc.get("cuts") if isinstance(doc, dict) else doc
    if not isinstance(cuts, list):
        raise ValueError(f"{path}: expected a list of cuts or an object with a 'cuts' list")
    out = []
    for j, cut in enumerate(cuts):
        if not isinstance(cut, list) or not all(isinstance(x, str) for x in cut):
            raise ValueError(f"{path}: cut {j} must be a list of node names")
        unknown = [x for x in cut if x not in taxonomy]
        if unknown:
            raise ValueError(f"{path}: cut {j}: unknown node {unknown[0]!r}")
        try:
            out.append(validate_cut(taxonomy, cut))
        except ValueError as e:
            raise ValueError(f"{path}: cut {j}: {e}") from None
    return out


def _protect_text(name: str) -> str:
    """ProTeCt's prompt text for a node name: digits removed, one trailing ``_``
    dropped, ``_`` -> space (their ``prepro_node_name``)."""
    x = "".join(ch for ch in name if ch not in "0123456789")
    if x.endswith("_"):
        x = x[:-1]
    return x.replace("_", " ")


def load_protect_cuts(path: str, taxonomy: Taxonomy) -> list[tuple[int, ...]]:
    """Read a ProTeCt tree-cut file (``treecuts_25_multi.pkl``) against ``taxonomy``.

    The files in ProTeCt's repository are ``torch.save`` archives of a dict
    ``{i: [names, tgt_mapping]}`` where ``names`` is a tuple of node *prompt texts*
    (ProTeCt's ``prepro_node_name``: digits removed, trailing ``_`` dropped, ``_`` ->
    space) in node order and ``tgt_mapping[k]`` is the position of class ``k``'s cut
    node. Also accepted (plain pickle or torch archive; a dict is read in key order,
    or a list): per cut

    * a sequence of node names - exact names, ProTeCt prompt texts or display
      names - kept in its order, or a set of them (then sorted by node id);
    * ``[names, tgt_mapping]`` as above, or a dict with a ``names``/``nodes``/``cut``/
      ``label_set`` entry and optionally ``tgt_mapping``/``targets``;
    * a 0/1 sequence of length ``num_nodes - 1`` (membership of non-root nodes in id
      order, ProTeCt's label-set mask) or ``num_nodes`` (membership incl. the root),
      or of length ``len(taxonomy.internal)`` (expansion flags of the internal nodes,
      the cut being the frontier they define);
    * a dict ``{internal node name: 0/1}`` of expansion flags (missing = not expanded).

    A prompt text shared by several nodes (ImageNet's ``cap_1``/``cap_2``) is resolved
    with ``tgt_mapping``, which then has to be in the taxonomy's class order; a cut
    whose ``tgt_mapping`` disagrees with the resolved cut triggers a warning (class
    orders differ). Returns validated cuts; errors name the file and cut.
    """
    obj = _load_cut_file(path)
    if isinstance(obj, Mapping):
        try:
            keys = sorted(obj.keys())
        except TypeError:
            keys = list(obj.keys())
        entries = [obj[k] for k in keys]
    elif isinstance(obj, (list, tuple)):
        entries = list(obj)
    else:
        raise ValueError(
            f"{path}: expected a dict or list of cuts, found {type(obj).__name__}"
        )
    out = []
    for j, e in enumerate(entries):
        try:
            out.append(_protect_cut(taxonomy, e, path, j))
        except ValueError as err:
            raise ValueError(f"{path}: cut {j}: {err}") from None
    return out


def _load_cut_file(path):
    import zipfile

    if zipfile.is_zipfile(path):
        try:
            import torch

            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # pragma: no cover - falls back to the stand-in reader below
            pass
        with zipfile.ZipFile(path) as z:
            inner = [n for n in z.namelist() if n.endswith("data.pkl")]
            if not inner:
                raise ValueError(f"{path}: zip archive without a data.pkl (not a torch.save file)")
            from hyptree.tree.io import _loads_permissive

            return _loads_permissive(z.read(inner[0]), source=path)
    from hyptree.tree.io import _load_pickle_file

    return _load_pickle_file(path)


def _looks_like_flag_dict(obj, taxonomy) -> bool:
    return bool(obj) and all(isinstance(k, str) for k in obj) and all(
        isinstance(v, (bool, int, np.integer, float)) for v in obj.values()
    )


def _as_list(x):
    if hasattr(x, "tolist"):
        x = x.tolist()
    return list(x) if isinstance(x, (list, tuple, set, frozenset)) else None


def _protect_cut(taxonomy: Taxonomy, e, path, j) -> tuple[int, ...]:
    names = targets = None
    if isinstance(e, Mapping):
        if _looks_like_flag_dict(e, taxonomy) and not any(k in e for k in ("names", "nodes", "cut", "label_set")):
            expanded = np.zeros(taxonomy.num_nodes, dtype=bool)
            for name, v in e.items():
                i = taxonomy.index(name) if name in taxonomy else None
                if i is None:
                    raise ValueError(f"unknown node {name!r} in expansion flags")
                expanded[i] = bool(v)
            return _frontier(taxonomy, expanded)
        for key in ("names", "nodes", "cut", "label_set"):
            if key in e:
                names = e[key]
                break
        else:
            raise ValueError(f"dict cut without a names/nodes/cut/label_set entry (keys: {list(e)[:6]})")
        for key in ("tgt_mapping", "targets", "target"):
            if key in e:
                targets = e[key]
                break
    elif isinstance(e, (set, frozenset)):
        if not all(isinstance(x, str) for x in e):
            raise ValueError("a set cut must hold node names")
        return tuple(sorted(_resolve_cut_names(taxonomy, sorted(e), None)))
    else:
        seq = _as_list(e)
        if seq is None:
            raise ValueError(f"cannot read a cut from {type(e).__name__}")
        if (
            len(seq) == 2
            and _as_list(seq[0]) is not None
            and _as_list(seq[1]) is not None
            and all(isinstance(x, str) for x in _as_list(seq[0]))
        ):
            names, targets = _as_list(seq[0]), _as_list(seq[1])
        elif seq and all(isinstance(x, str) for x in seq):
            names = seq
        else:
            return _flags_cut(taxonomy, seq)
    names = _as_list(names)
    if names is None or not all(isinstance(x, str) for x in names):
        if names is not None:
            return _flags_cut(taxonomy, names)
        raise ValueError("cut names must be a sequence of strings")
    if targets is not None:
        targets = [int(t) for t in _as_list(targets)]
    ids = _resolve_cut_names(taxonomy, names, targets)
    got = cut_targets(taxonomy, ids)
    if targets is not None and (len(targets) != len(got) or list(got) != targets):
        warnings.warn(
            f"{path}: cut {j}: the file's tgt_mapping differs from the cut's targets in this "
            "taxonomy's class order (the class orders differ); the cut is used by its node names",
            stacklevel=3,
        )
    return ids


def _flags_cut(taxonomy, seq) -> tuple[int, ...]:
    try:
        flags = np.asarray(seq, dtype=np.int64)
    except (TypeError, ValueError):
        raise ValueError("cut entries must be node names or 0/1 flags") from None
    if flags.ndim != 1 or not np.isin(flags, (0, 1)).all():
        raise ValueError("a numeric cut must be a flat sequence of 0/1 flags")
    n, ni = taxonomy.num_nodes, len(taxonomy.internal)
    if len(flags) == n - 1:
        return validate_cut(taxonomy, tuple(int(i) + 1 for i in np.nonzero(flags)[0]))
    if len(flags) == n:
        return validate_cut(taxonomy, tuple(int(i) for i in np.nonzero(flags)[0]))
    if len(flags) == ni:
        expanded = np.zeros(n, dtype=bool)
        expanded[taxonomy.internal] = flags.astype(bool)
        return _frontier(taxonomy, expanded)
    raise ValueError(
        f"0/1 flags of length {len(flags)}: expected {n - 1} (non-root nodes), {n} (all nodes) "
        f"or {ni} (expansion flags of internal nodes)"
    )


def _frontier(taxonomy, expanded) -> tuple[int, ...]:
    expanded = expanded.copy()
    expanded[0] = True
    expanded[taxonomy.leaves] = False
    reached = np.zeros(taxonomy.num_nodes, dtype=bool)
    reached[0] = True
    for nodes in _levels(taxonomy)[1:]:
        p = taxonomy.parent[nodes]
        reached[nodes] = reached[p] & expanded[p]
    return tuple(int(i) for i in np.nonzero(reached & ~expanded)[0])


def _resolve_cut_names(taxonomy: Taxonomy, names, targets) -> tuple[int, ...]:
    cache = taxonomy._cache
    if "protect_text" not in cache:
        by_text: dict[str, list[int]] = {}
        for i, nm in enumerate(taxonomy.names):
            keys = {_protect_text(nm), taxonomy.display_names[i]}
            for key in keys:
                by_text.setdefault(key, []).append(i)
        cache["protect_text"] = by_text
    by_text = cache["protect_text"]
    ids = []
    for pos, name in enumerate(names):
        # ProTeCt writes prompt texts, so an exact name can be shadowed: 'vessel' is both
        # a node name and the text of 'vessel_1'; all matches are candidates.
        exact = {taxonomy.index(name)} if name in taxonomy else set()
        cand = sorted(exact | set(by_text.get(name, [])))
        cand = [c for c in cand if c != 0]
        if not cand:
            raise ValueError(f"node {name!r} not found in the taxonomy (by name, display name or ProTeCt text)")
        if len(cand) > 1:
            if targets is None or len(targets) != taxonomy.num_classes:
                raise ValueError(
                    f"node text {name!r} matches several nodes "
                    f"({', '.join(repr(taxonomy.names[c]) for c in cand)}) and the cut has no "
                    "per-class tgt_mapping to tell them apart"
                )
            want = set(np.nonzero(np.asarray(targets) == pos)[0].tolist())
            cand = [c for c in cand if set(taxonomy.classes_under(c).tolist()) == want]
            if len(cand) != 1:
                raise ValueError(
                    f"node text {name!r}: {len(cand)} nodes cover exactly the classes the file maps to it"
                )
        ids.append(cand[0])
    return validate_cut(taxonomy, ids)


# ====================================================================== command line
_FORMATS = ("auto", "paths", "folder", "protect", "cifar100", "imagenet", "rare_species", "sun397")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hyptree taxonomy show|stats|convert SOURCE [--format F] [-o OUT]``."""
    import argparse

    from hyptree.tree import io as taxonomy_io

    ap = argparse.ArgumentParser(
        prog="python -m hyptree taxonomy",
        description="Show, summarise or convert a taxonomy to the canonical path format.",
    )
    ap.add_argument("command", choices=("show", "stats", "convert"))
    ap.add_argument("source", help="taxonomy file or folder")
    ap.add_argument("--format", default="auto", choices=_FORMATS)
    ap.add_argument("-o", "--output", help="output file (convert/stats; default stdout)")
    ap.add_argument("--max-lines", type=int, default=None, help="show: stop after this many lines")
    args = ap.parse_args(argv)
    try:
        tax = taxonomy_io.read_taxonomy(args.source, args.format)
    except (ValueError, KeyError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.command == "show":
        text = tax.format_tree(args.max_lines)
    elif args.command == "stats":
        text = json.dumps(tax.stats(), indent=1)
    else:
        text = "\n".join(tax.to_paths())
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    else:
        print(text)
    return 0
