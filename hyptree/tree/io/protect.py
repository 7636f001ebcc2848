"""ProTeCt / Alignment-across-Trees sources: ``tree.npy`` trees and ``gt_{split}.txt`` image lists.

Both are read without ProTeCt's code: ``tree.npy`` through the stand-in unpickler
(`hyptree.tree.pickles`), the lists as text.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from hyptree.tree.io.paths import read_text_lines
from hyptree.tree.pickles import StandIn, load_pickle_file
from hyptree.tree.taxonomy import Taxonomy

__all__ = ["protect_text", "read_protect_tree", "read_protect_list"]


def protect_text(name: str) -> str:
    """ProTeCt's prompt text for a node name: digits removed, one trailing ``_``
    dropped, ``_`` -> space (their ``prepro_node_name``)."""
    x = "".join(ch for ch in name if ch not in "0123456789")
    if x.endswith("_"):
        x = x[:-1]
    return x.replace("_", " ")


# ====================================================================== tree.npy
_NAME_ATTRS = ("name", "wnid", "label", "node_name", "title", "synset")
_CHILD_ATTRS = ("children", "childs", "child", "child_nodes", "sub", "subs", "kids", "successors")
_REGISTRY_ATTRS = ("nodes", "node_dict", "name2node", "all_nodes")


def _attrs(obj) -> dict:
    if isinstance(obj, Mapping):
        return {str(k): v for k, v in obj.items()}
    return getattr(obj, "__dict__", {}) or {}


def _node_name(obj):
    a = _attrs(obj)
    for key in _NAME_ATTRS:
        v = a.get(key)
        if isinstance(v, bytes):
            v = v.decode()
        if isinstance(v, str) and v:
            return v
    return None


def _node_children(obj):
    a = _attrs(obj)
    for key in _CHILD_ATTRS:
        if key in a:
            v = a[key]
            if isinstance(v, StandIn):  # a pickled list/dict subclass
                v = v.__dict__.get("_items", v.__dict__.get("_map", []))
            if isinstance(v, Mapping):
                try:
                    keys = sorted(v)
                except TypeError:
                    keys = list(v)
                return [v[k] for k in keys]
            if isinstance(v, (set, frozenset)):
                return sorted(v, key=lambda c: c if isinstance(c, str) else (_node_name(c) or ""))
            if isinstance(v, np.ndarray):
                return list(v.tolist())
            if isinstance(v, (list, tuple)):
                return list(v)
            if v is None:
                return []
            raise ValueError(f"node {_node_name(obj)!r}: children attribute {key!r} is a {type(v).__name__}")
    return None


def _is_node(obj) -> bool:
    return _node_name(obj) is not None and _node_children(obj) is not None


def read_protect_tree(
    path: str,
    class_order: Sequence[str] | None = None,
    display: str = "protect",
) -> Taxonomy:
    """Read a ProTeCt / Alignment-across-Trees ``tree.npy`` without their code.

    The file is ``np.save`` of a pickled ``Tree`` (module ``treelibs``) whose
    ``root`` is a ``TreeNode``; each node has ``name``, ``node_id``, ``parent`` (a
    name) and ``children`` = ``{0: child name, 1: ...}``, and the tree keeps the
    nodes in ``nodes`` (name -> node) and the class order in ``leaf_nodes``
    (label -> name). The walker relies only on these generic shapes:

    * the root is the object's ``root`` attribute, or the object itself if it is a node;
    * a node is an object with a name-like attribute (``name``, ``wnid``, ``label``,
      ``node_name``, ``title``, ``synset``) and a children-like attribute
      (``children``, ``childs``, ``child``, ``child_nodes``, ``sub``, ``subs``, ``kids``,
      ``successors``) holding a dict (read in key order), list/tuple (in order) or set
      (sorted by name) of child nodes, or of child *names* looked up in the tree's
      ``nodes`` table (``nodes``, ``node_dict``, ``name2node``, ``all_nodes``);
    * class order: ``class_order`` if given, else the tree's ``leaf_nodes``
      (label -> name, or a list), else leaves sorted by an integer ``node_id``, else
      depth-first order.

    Node order is depth-first pre-order in child order (ProTeCt's ``node_id``).
    ``display="protect"`` sets display names to ProTeCt's prompt text (digits
    removed, trailing ``_`` dropped, ``_`` -> space: ``vessel_1`` -> ``vessel``);
    ``display="plain"`` keeps the default (``_`` -> space).
    """
    if display not in ("protect", "plain"):
        raise ValueError(f"display must be 'protect' or 'plain', got {display!r}")
    top = load_pickle_file(path, kind="protect_tree")
    attrs = _attrs(top)
    root = _find_root(top, attrs, path)
    edges, node_ids = _walk(root, _registry(attrs), path)
    if not edges:
        raise ValueError(f"{path}: the root {_node_name(root)!r} has no children")
    # edges were collected in DFS order; from_edges keeps child order of first appearance
    if class_order is None:
        class_order = _stored_class_order(attrs.get("leaf_nodes"), edges, node_ids)
    tax = Taxonomy.from_edges(edges, class_order=class_order, root=_node_name(root), source=str(path))
    if display == "protect":
        disp = {n: protect_text(n) for n in tax.names}
        disp = {n: t for n, t in disp.items() if t.strip()}
        tax = Taxonomy(tax.names, tax.parent, tax.leaves, [disp.get(n) for n in tax.names])
    return tax


def _find_root(top, attrs: dict, path: str):
    root = attrs.get("root") if "root" in attrs and _is_node(attrs.get("root")) else None
    if root is None and _is_node(top):
        root = top
    if root is None:
        kind = type(top).__name__
        raise ValueError(
            f"{path}: no tree root found: expected an object with a 'root' node or a node itself "
            f"(a name attribute among {_NAME_ATTRS} and a children attribute among {_CHILD_ATTRS}); "
            f"found {kind} with attributes {sorted(attrs)[:12]}"
        )
    return root


def _registry(attrs: dict) -> dict:
    """The tree's ``name -> node`` table (empty if it has none)."""
    for key in _REGISTRY_ATTRS:
        reg = attrs.get(key)
        if isinstance(reg, Mapping):
            return {(k.decode() if isinstance(k, bytes) else k): v for k, v in reg.items()}
    return {}


def _walk(root, registry: dict, path: str) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """Depth-first ``(parent, child)`` name edges from ``root`` and the integer
    ``node_id`` of every node that has one."""
    edges: list[tuple[str, str]] = []
    node_ids: dict[str, int] = {}
    stack = [(root, None)]
    visited: dict[int, str] = {}
    while stack:
        node, par = stack.pop()
        name = _node_name(node)
        if id(node) in visited and par is not None:
            raise ValueError(f"{path}: node {name!r} is reached twice (under {par!r}): not a tree")
        visited[id(node)] = name
        nid = _attrs(node).get("node_id")
        if isinstance(nid, (int, np.integer)):
            node_ids[name] = int(nid)
        if par is not None:
            edges.append((par, name))
        resolved = [_resolve_child(c, name, registry, path) for c in _node_children(node) or []]
        for c in reversed(resolved):
            stack.append((c, name))
    return edges, node_ids


def _resolve_child(c, parent_name: str, registry: dict, path: str):
    if isinstance(c, bytes):
        c = c.decode()
    if isinstance(c, str):
        if c not in registry:
            raise ValueError(
                f"{path}: child {c!r} of node {parent_name!r} is a name but the tree has no node table entry for it"
            )
        c = registry[c]
    if not _is_node(c):
        raise ValueError(f"{path}: a child of node {parent_name!r} is not a node ({type(c).__name__})")
    return c


def _stored_class_order(ln, edges, node_ids) -> list[str] | None:
    """Class order from the tree's ``leaf_nodes`` (label -> name, name -> label, or a
    list), else leaves sorted by ``node_id``; ``None`` when neither is there."""
    class_order = None
    if isinstance(ln, Mapping) and ln:
        items = list(ln.items())
        if all(isinstance(k, (int, np.integer)) for k, _ in items):
            class_order = [v for _, v in sorted(items)]
        elif all(isinstance(v, (int, np.integer)) for _, v in items):
            class_order = [k for k, _ in sorted(items, key=lambda kv: kv[1])]
    elif isinstance(ln, (list, tuple)) and ln and all(isinstance(x, str) for x in ln):
        class_order = list(ln)
    if class_order is None:
        children_of = Counter(p for p, _ in edges)
        leaves = [c for _, c in edges if c not in children_of]
        if leaves and all(x in node_ids for x in leaves):
            class_order = sorted(leaves, key=node_ids.get)
    return class_order


# ====================================================================== gt_{split}.txt
def read_protect_list(
    path: str, image_root: str | None = None, num_classes: int | None = None
) -> list[tuple[str, int]]:
    """Read an image list ``gt_{split}.txt`` into ``[(image_path, label), ...]`` in file order.

    ProTeCt writes ``path,label,index`` lines (comma separated; paths may contain
    spaces and commas: a line is split at its last commas). Also accepted:
    ``path,label`` and whitespace-separated ``path label``. Blank lines are skipped.
    ``image_root``, if given, is joined in front of every path (``os.path.join``).
    ``num_classes``, if given, bounds the labels to ``0..num_classes-1``.

    Errors: ``FileNotFoundError`` (saying the expected format) for a missing file;
    ``ValueError`` naming ``path:line`` for a line without an integer label, a
    negative label, or a label outside ``0..num_classes-1``.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"ProTeCt data list not found: {path}\n"
            "Expected lines 'relative/path.jpg,label,index' (ProTeCt prepro/data/<dataset>/gt_<split>.txt)"
        )
    out = []
    for lineno, raw in enumerate(read_text_lines(path), start=1):
        line = raw.strip()
        if not line:
            continue
        item = _list_item(line)
        if item is None or not item[0]:
            raise ValueError(
                f"{path}:{lineno}: expected 'image_path,label[,index]' or 'image_path label': {raw.rstrip()!r}"
            )
        rel, label = item
        if num_classes is not None and not 0 <= label < num_classes:
            raise ValueError(f"{path}:{lineno}: label {label} outside 0..{num_classes - 1}")
        if label < 0:
            raise ValueError(f"{path}:{lineno}: negative label {label}")
        out.append((os.path.join(image_root, rel) if image_root is not None else rel, label))
    return out


def _list_item(line: str) -> tuple[str, int] | None:
    """``(path, label)`` of one stripped list line, ``None`` if it has no integer label."""
    if "," in line:
        parts = line.rsplit(",", 2)
        if len(parts) == 3 and _is_int(parts[1]) and _is_int(parts[2]):
            return parts[0].strip(), int(parts[1])
        parts = line.rsplit(",", 1)
        if _is_int(parts[1]):
            return parts[0].strip(), int(parts[1])
    parts = line.rsplit(None, 1)
    if len(parts) == 2 and _is_int(parts[1]):
        return parts[0], int(parts[1])
    return None


def _is_int(s: str) -> bool:
    """What ``int()`` reads: optional sign, digits (``_`` separators allowed), spaces around."""
    try:
        int(s)
    except ValueError:
        return False
    return True
