"""The immutable `Taxonomy` tree and its validation.

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
  and ``from_edges`` (parsing in `hyptree.tree.build`) number nodes in depth-first
  pre-order from the root, children visited in order of first appearance in the
  input (so every subtree is a contiguous id range, as in ProTeCt's ``tree.npy``).

The constructor's argument checks are in `hyptree.tree.checks`.

Splits live in `hyptree.tree.splits`, tree cuts in `hyptree.tree.cuts` and their
files in `hyptree.tree.cutfiles`; readers in `hyptree.tree.io`. Run
``python -m hyptree taxonomy show|stats|convert SOURCE`` for the command line.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from hyptree.tree.build import ROOT_NAME, edges_to_arrays, paths_to_arrays
from hyptree.tree.checks import (
    check_children,
    check_display_names,
    check_leaves,
    check_names,
    check_parents,
    default_display_name,
    depths_or_cycle,
    path_table,
)

__all__ = ["Taxonomy"]


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
        index = check_names(names)
        parent_arr = check_parents(names, parent)
        depth = depths_or_cycle(names, parent_arr)
        children = check_children(names, parent_arr)
        leaf_ids = check_leaves(names, index, children, leaves)
        disp = check_display_names(names, index, display_names)
        n = len(names)
        d = self.__dict__
        d["_names"] = names
        d["_index"] = index
        d["_parent"] = _readonly(parent_arr)
        d["_depth"] = _readonly(depth)
        d["_children"] = children
        d["_leaves"] = _readonly(np.asarray(leaf_ids, dtype=np.int64))
        d["_display"] = disp
        class_of = np.full(n, -1, dtype=np.int64)
        class_of[d["_leaves"]] = np.arange(len(leaf_ids))
        d["_class_of"] = _readonly(class_of)
        d["_internal"] = _readonly(np.asarray([i for i in range(n) if children[i]], dtype=np.int64))
        d["_height"] = int(depth[d["_leaves"]].max())
        d["_cache"] = {}  # per-tree tables built by other tree modules (cut levels, ProTeCt index)
        paths = path_table(leaf_ids, depth, parent_arr, d["_height"])
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
    def subtree(self, classes: Sequence[str | int]) -> Taxonomy:
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

    @classmethod
    def from_paths(
        cls,
        lines: Iterable[str] | str,
        class_order: Sequence[str] | None = None,
        display_names: Mapping[str, str] | None = None,
        root_name: str | None = None,
        source: str = "<paths>",
    ) -> Taxonomy:
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
        arrays = paths_to_arrays(lines, class_order, display_names, root_name, source)
        return cls._from_arrays(arrays, source)

    @classmethod
    def from_edges(
        cls,
        edges: Iterable[tuple[str, str]],
        class_order: Sequence[str] | None = None,
        display_names: Mapping[str, str] | None = None,
        root: str = ROOT_NAME,
        source: str = "<edges>",
    ) -> Taxonomy:
        """Build from ``(parent_name, child_name)`` pairs; ``root`` names the root.

        Repeated identical edges are ignored. Errors name the node for: a node with
        two parents, an edge into the root, nodes not connected to the root
        (including cycles, reported as ``a -> b -> a``). Classes are the childless
        nodes, in order of first appearance unless ``class_order`` is given (which
        must then name exactly the childless nodes). Node order: depth-first
        pre-order from the root, children in order of first appearance.
        """
        arrays = edges_to_arrays(edges, class_order, display_names, root, source)
        return cls._from_arrays(arrays, source)

    @classmethod
    def _from_arrays(cls, arrays, source: str) -> Taxonomy:
        names, parent, leaves, disp = arrays
        try:
            return cls(names, parent, leaves, disp or None)
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from None

    def to_paths(self) -> list[str]:
        """Canonical text lines: ``@root NAME`` if the root is not called ``root``, one
        ``/``-joined root-excluded path per class in label order, then ``@ NAME = TEXT``
        lines for nodes whose display name is not the default.
        ``Taxonomy.from_paths(t.to_paths()) == t``."""
        bad = [n for n in self._names[1:] if "/" in n or n.startswith("#") or n.startswith("@") or " = " in n]
        if bad:
            raise ValueError(
                f"node name {bad[0]!r} cannot be written in the path format (no '/', no leading '#' or '@', no ' = ')"
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
                line += f' "{self._display[i]}"'
            if self._class_of[i] >= 0:
                line += f"  [{int(self._class_of[i])}]"
            out.append(line)
            if max_lines is not None and len(out) >= max_lines:
                out.append("...")
                break
            stack.extend(reversed(self._children[i]))
        return "\n".join(out)
