"""Readers (and the writer) for every taxonomy source; each returns a `Taxonomy`.

| function | source |
|---|---|
| `read_paths_file` / `write_paths_file` | the canonical text format (see `Taxonomy.from_paths`) |
| `read_folder_tree` | a directory tree: directories are nodes, directories without subdirectories are classes |
| `read_protect_tree` | ProTeCt / Alignment-across-Trees ``tree.npy`` (pickled object tree), read without their code |
| `read_protect_list` | their ``gt_{split}.txt`` image lists |
| `read_cifar100_meta` | CIFAR-100 python archive: ``meta`` + ``train`` pickles, 20 coarse -> 100 fine |
| `read_imagenet_meta` | ILSVRC2012 devkit ``data/meta.mat`` (WordNet synsets) |
| `read_rare_species` | Rare Species class folders ``phylum_class_order_family_genus_species`` |
| `read_sun397_hierarchy` | SUN397's three-level hierarchy table (CSV/TSV) |
| `read_taxonomy` | any of the above, format chosen by name or detected |

Pickles are never loaded with plain ``pickle.load``: a restricted unpickler builds
only basic containers and numpy arrays, and turns every other class it meets into
an inert stand-in object that just records its attributes.
"""
from __future__ import annotations

import csv
import io
import logging
import os
import pickle
import re
from collections import Counter
from typing import Iterable, Mapping, Sequence

import numpy as np

from hyptree.utils.files import atomic_write_text
from hyptree.tree.taxonomy import Taxonomy, _protect_text

__all__ = [
    "read_paths_file",
    "write_paths_file",
    "read_folder_tree",
    "read_protect_tree",
    "read_protect_list",
    "read_cifar100_meta",
    "read_imagenet_meta",
    "read_classnames_file",
    "read_rare_species",
    "read_sun397_hierarchy",
    "read_taxonomy",
    "detect_format",
]

log = logging.getLogger(__name__)


# ====================================================================== safe pickles
class StandIn:
    """Inert replacement for a class a pickle refers to. Keeps constructor arguments
    in ``_args``, state in ``__dict__`` and list/dict contents in ``_items``/``_map``."""

    _pickle_module = "?"
    _pickle_name = "?"

    def __init__(self, *args, **kwargs):
        self.__dict__["_args"] = args
        self.__dict__.update(kwargs)

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2 and (state[0] is None or isinstance(state[0], dict)):
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update({k.decode() if isinstance(k, bytes) else k: v for k, v in state.items()})
        else:
            self.__dict__["_state"] = state

    def append(self, x):
        self.__dict__.setdefault("_items", []).append(x)

    def extend(self, xs):
        self.__dict__.setdefault("_items", []).extend(xs)

    def __setitem__(self, k, v):
        self.__dict__.setdefault("_map", {})[k] = v

    def __repr__(self):
        return f"<stand-in {self._pickle_module}.{self._pickle_name}>"


_standins: dict = {}

_SAFE_GLOBALS = {
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "list"), ("builtins", "dict"),
    ("builtins", "tuple"), ("builtins", "object"), ("builtins", "slice"), ("builtins", "complex"),
    ("builtins", "bytearray"), ("builtins", "bytes"), ("builtins", "str"), ("builtins", "int"),
    ("builtins", "float"), ("builtins", "bool"), ("builtins", "range"),
    ("collections", "OrderedDict"), ("collections", "defaultdict"),
    ("copyreg", "_reconstructor"), ("_codecs", "encode"),
}
_PY2_BUILTINS = {"__builtin__": "builtins", "copy_reg": "copyreg"}
_NUMPY_OK = {
    "_reconstruct", "ndarray", "dtype", "scalar", "_frombuffer",
}


class _PermissiveUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        module = _PY2_BUILTINS.get(module, module)
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        if module.split(".")[0] == "numpy" and name in _NUMPY_OK:
            if module.startswith("numpy.core") and int(np.__version__.split(".")[0]) >= 2:
                module = "numpy._core" + module[len("numpy.core"):]
            return super().find_class(module, name)
        key = (module, name)
        if key not in _standins:
            _standins[key] = type(name, (StandIn,), {"_pickle_module": module, "_pickle_name": name})
        return _standins[key]

    def persistent_load(self, pid):
        return StandIn(pid)


def _loads_permissive(data: bytes, source: str = "<pickle>"):
    try:
        return _PermissiveUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as e:
        raise ValueError(f"{source}: cannot unpickle ({type(e).__name__}: {e})") from None


def _load_pickle_file(path: str):
    """Load a pickle, or an ``.npy`` file holding a pickled object array, safely.
    A 0-d object array is unwrapped to its element."""
    with open(path, "rb") as f:
        head = f.read(6)
        f.seek(0)
        if head == b"\x93NUMPY":
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            if not dtype.hasobject:
                raise ValueError(f"{path}: a plain {dtype} array of shape {shape}, not a pickled object tree")
            data = f.read()
        else:
            data = f.read()
    obj = _loads_permissive(data, source=path)
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
        obj = obj.item()
    return obj


# ====================================================================== canonical text
def read_paths_file(path: str, class_order: Sequence[str] | None = None) -> Taxonomy:
    """Read the canonical path format (see `Taxonomy.from_paths`); errors name ``path:line``."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    return Taxonomy.from_paths(lines, class_order=class_order, source=str(path))


def write_paths_file(path: str, taxonomy: Taxonomy) -> None:
    """Write ``taxonomy.to_paths()`` with a comment header; ``read_paths_file`` reads it back."""
    lines = taxonomy.to_paths()
    head = [
        "# hyptree taxonomy: one root-to-leaf path per class, in label order (root implicit).",
        f"# root: {taxonomy.names[0]}  classes: {taxonomy.num_classes}  nodes: {taxonomy.num_nodes}",
    ]
    atomic_write_text(path, "\n".join(head + lines) + "\n")


# ====================================================================== folder tree
def read_folder_tree(root: str, class_order: Sequence[str] | None = None, root_name: str = "root") -> Taxonomy:
    """Directories under ``root`` are nodes; a directory without (non-hidden)
    subdirectories is a class. Hidden entries (``.*``) and files are ignored; entries
    are visited in sorted name order, which is also the default class order
    (depth-first). A directory name appearing twice anywhere is an error naming both
    places; so is a symlink loop."""
    if not os.path.isdir(root):
        raise ValueError(f"{root}: not a directory")
    edges: list[tuple[str, str]] = []
    where: dict[str, str] = {}
    seen_real: set = set()

    def visit(dirpath: str, name: str, rel: str):
        real = os.path.realpath(dirpath)
        if real in seen_real:
            raise ValueError(f"{root}: directory loop at {rel!r}")
        seen_real.add(real)
        subs = sorted(
            e.name for e in os.scandir(dirpath) if e.is_dir() and not e.name.startswith(".")
        )
        for s in subs:
            srel = f"{rel}/{s}" if rel else s
            if s in where:
                raise ValueError(f"{root}: directory name {s!r} appears twice: {where[s]!r} and {srel!r}")
            if s == root_name:
                raise ValueError(f"{root}: a directory is named like the root ({root_name!r}): {srel!r}")
            where[s] = srel
            edges.append((name, s))
            visit(os.path.join(dirpath, s), s, srel)

    visit(root, root_name, "")
    if not edges:
        raise ValueError(f"{root}: no subdirectories, so no classes")
    return Taxonomy.from_edges(edges, class_order=class_order, root=root_name, source=str(root))


# ====================================================================== ProTeCt tree.npy
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
    top = _load_pickle_file(path)
    attrs = _attrs(top)
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
    registry: dict = {}
    for key in _REGISTRY_ATTRS:
        reg = attrs.get(key)
        if isinstance(reg, Mapping):
            registry = {(k.decode() if isinstance(k, bytes) else k): v for k, v in reg.items()}
            break

    root_name = _node_name(root)
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
        kids = _node_children(node) or []
        resolved = []
        for c in kids:
            if isinstance(c, bytes):
                c = c.decode()
            if isinstance(c, str):
                if c not in registry:
                    raise ValueError(
                        f"{path}: child {c!r} of node {name!r} is a name but the tree has no node table entry for it"
                    )
                c = registry[c]
            if not _is_node(c):
                raise ValueError(f"{path}: a child of node {name!r} is not a node ({type(c).__name__})")
            resolved.append(c)
        for c in reversed(resolved):
            stack.append((c, name))
    if not edges:
        raise ValueError(f"{path}: the root {root_name!r} has no children")
    # edges were collected in DFS order; from_edges keeps child order of first appearance
    if class_order is None:
        ln = attrs.get("leaf_nodes")
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
    tax = Taxonomy.from_edges(edges, class_order=class_order, root=root_name, source=str(path))
    if display == "protect":
        disp = {n: _protect_text(n) for n in tax.names}
        disp = {n: t for n, t in disp.items() if t.strip()}
        tax = Taxonomy(tax.names, tax.parent, tax.leaves, [disp.get(n) for n in tax.names])
    return tax


def read_protect_list(path: str) -> list[tuple[str, int]]:
    """Read an image list ``gt_{split}.txt`` into ``[(image_path, label), ...]``.

    ProTeCt writes ``path,label,index`` lines (comma separated; paths may contain
    spaces). Also accepted: ``path,label`` and whitespace-separated ``path label``.
    Blank lines are skipped; a line without an integer label is an error naming
    ``path:line``."""
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, start=1):
            line = raw.strip()
            if not line:
                continue
            item = None
            if "," in line:
                parts = line.rsplit(",", 2)
                if len(parts) == 3 and _is_int(parts[1]) and _is_int(parts[2]):
                    item = (parts[0].strip(), int(parts[1]))
                else:
                    parts = line.rsplit(",", 1)
                    if _is_int(parts[1]):
                        item = (parts[0].strip(), int(parts[1]))
            if item is None:
                parts = line.rsplit(None, 1)
                if len(parts) == 2 and _is_int(parts[1]):
                    item = (parts[0], int(parts[1]))
            if item is None or not item[0]:
                raise ValueError(f"{path}:{lineno}: expected 'image_path,label[,index]' or 'image_path label': {raw.rstrip()!r}")
            if item[1] < 0:
                raise ValueError(f"{path}:{lineno}: negative label {item[1]}")
            out.append(item)
    return out


def _is_int(s: str) -> bool:
    s = s.strip()
    return bool(re.fullmatch(r"[+-]?\d+", s))


# ====================================================================== CIFAR-100
def _decode_keys(d, source):
    if not isinstance(d, Mapping):
        raise ValueError(f"{source}: expected a pickled dict, found {type(d).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in d.items()}


def _decode_names(xs, key, source):
    out = []
    for x in list(xs):
        if isinstance(x, bytes):
            x = x.decode("utf-8")
        if not isinstance(x, str):
            raise ValueError(f"{source}: {key} entries must be strings, found {type(x).__name__}")
        out.append(x)
    return out


def read_cifar100_meta(meta_path: str, train_path: str | None = None) -> Taxonomy:
    """CIFAR-100's own hierarchy: root -> 20 coarse classes -> 100 fine classes.

    ``meta_path`` is the archive's ``meta`` pickle or the ``cifar-100-python/``
    directory (then ``meta`` and ``train`` inside it are used, ``test`` if there is
    no ``train``). ``meta`` gives ``fine_label_names`` (100) and
    ``coarse_label_names`` (20); the coarse -> fine mapping comes from the
    ``fine_labels``/``coarse_labels`` lists of ``train_path``. Keys and names may be
    ``str`` or ``bytes`` (Python 2 pickles). Class order: fine label order. Node
    order: root, the coarse classes in coarse label order, then the fine classes
    grouped under them. Errors name the fine class mapped to two coarse classes or
    to none.
    """
    if os.path.isdir(meta_path):
        d = meta_path
        meta_path = os.path.join(d, "meta")
        if train_path is None:
            train_path = os.path.join(d, "train")
            if not os.path.exists(train_path):
                train_path = os.path.join(d, "test")
    if train_path is None:
        sib = os.path.join(os.path.dirname(os.path.abspath(meta_path)), "train")
        if os.path.exists(sib):
            train_path = sib
        else:
            raise ValueError(
                f"{meta_path}: the coarse->fine mapping is in the 'train' pickle; pass train_path"
            )
    meta = _decode_keys(_load_pickle_file(meta_path), meta_path)
    for key in ("fine_label_names", "coarse_label_names"):
        if key not in meta:
            raise ValueError(f"{meta_path}: no {key!r} entry (keys: {sorted(meta)[:8]})")
    fine = _decode_names(meta["fine_label_names"], "fine_label_names", meta_path)
    coarse = _decode_names(meta["coarse_label_names"], "coarse_label_names", meta_path)
    train = _decode_keys(_load_pickle_file(train_path), train_path)
    for key in ("fine_labels", "coarse_labels"):
        if key not in train:
            raise ValueError(f"{train_path}: no {key!r} entry (keys: {sorted(train)[:8]})")
    fl = np.asarray(train["fine_labels"], dtype=np.int64).reshape(-1)
    cl = np.asarray(train["coarse_labels"], dtype=np.int64).reshape(-1)
    if fl.shape != cl.shape:
        raise ValueError(f"{train_path}: {len(fl)} fine labels but {len(cl)} coarse labels")
    if fl.size and (fl.min() < 0 or fl.max() >= len(fine) or cl.min() < 0 or cl.max() >= len(coarse)):
        raise ValueError(f"{train_path}: labels outside the {len(fine)} fine / {len(coarse)} coarse names of {meta_path}")
    pairs = np.unique(np.stack([fl, cl], 1), axis=0) if fl.size else np.zeros((0, 2), np.int64)
    coarse_of = {}
    for f, c in pairs.tolist():
        if f in coarse_of:
            raise ValueError(
                f"{train_path}: fine class {fine[f]!r} maps to two coarse classes: "
                f"{coarse[coarse_of[f]]!r} and {coarse[c]!r}"
            )
        coarse_of[f] = c
    missing = [fine[f] for f in range(len(fine)) if f not in coarse_of]
    if missing:
        raise ValueError(f"{train_path}: fine class(es) without samples, so without a coarse class: {missing[:10]}")
    clash = set(fine) & set(coarse)
    if clash:
        raise ValueError(f"{meta_path}: name used as both a coarse and a fine class: {sorted(clash)[0]!r}")
    used = set(coarse_of.values())
    empty = [coarse[c] for c in range(len(coarse)) if c not in used]
    if empty:
        log.info("%s: coarse classes without fine classes dropped: %s", train_path, empty)
    edges = [("root", coarse[c]) for c in range(len(coarse)) if c in used]
    for ci, c in enumerate(coarse):
        edges += [(c, fine[f]) for f in range(len(fine)) if coarse_of[f] == ci]
    return Taxonomy.from_edges(edges, class_order=fine, root="root", source=str(meta_path))


# ====================================================================== ImageNet devkit
def _mat_field(s, name):
    if hasattr(s, name):
        return getattr(s, name)
    if isinstance(s, np.void) or (isinstance(s, np.ndarray) and s.dtype.names):
        return s[name]
    raise KeyError(name)


def _scalar(x):
    x = np.asarray(x)
    while x.dtype == object and x.size == 1:
        x = np.asarray(x.reshape(-1)[0])
    return x.reshape(-1)[0].item() if x.size else None


def _int_list(x) -> list[int]:
    x = np.asarray(x)
    if x.dtype == object:
        return [int(v) for y in x.reshape(-1) for v in _int_list(y)]
    return [int(v) for v in x.reshape(-1)]


def _text(x) -> str:
    v = _scalar(x)
    if isinstance(v, bytes):
        v = v.decode()
    return "" if v is None else str(v)


def read_classnames_file(path: str) -> dict[str, str]:
    """CoOp's ImageNet ``classnames.txt`` (``wnid class name`` per line) -> ``{wnid: name}``,
    in file order."""
    out: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, start=1):
            line = raw.strip()
            if not line:
                continue
            parts = line.split(None, 1)
            if len(parts) != 2:
                raise ValueError(f"{path}:{lineno}: expected 'wnid class name': {raw.rstrip()!r}")
            if parts[0] in out:
                raise ValueError(f"{path}:{lineno}: wnid {parts[0]!r} listed twice")
            out[parts[0]] = parts[1].strip()
    return out


def read_imagenet_meta(
    meta_mat: str,
    class_order: Sequence[str] | None = None,
    display_names: Mapping[str, str] | None = None,
) -> Taxonomy:
    """ImageNet's WordNet hierarchy from the ILSVRC2012 devkit ``data/meta.mat``.

    ``synsets`` is a struct array with fields ``ILSVRC2012_ID``, ``WNID``, ``words``,
    ``num_children`` and ``children`` (1-based ``ILSVRC2012_ID``s). Classes are the
    synsets without children, in ``ILSVRC2012_ID`` order, or the WNIDs of
    ``class_order`` (e.g. CoOp's ``classnames.txt`` order, or a subset such as
    ImageNet-A's 200 classes). Only the classes' ancestors are kept.

    WordNet is a DAG in places: a synset with several parents keeps the one with the
    lowest ``ILSVRC2012_ID`` among those that are themselves kept; internal synsets
    left without classes are then dropped. If the kept synsets have a single top
    synset it becomes the root, otherwise a node ``root`` is added above them.
    Node names are WNIDs; display names are the first synonym of ``words`` unless
    ``display_names`` (``{wnid: text}``, e.g. from `read_classnames_file`) gives one.
    Node order: depth-first, children in ``ILSVRC2012_ID`` order.
    """
    from scipy.io import loadmat

    try:
        mat = loadmat(meta_mat, squeeze_me=True, struct_as_record=False)
    except Exception as e:
        raise ValueError(f"{meta_mat}: cannot read as a MATLAB file ({e})") from None
    if "synsets" not in mat:
        raise ValueError(f"{meta_mat}: no 'synsets' variable (found {sorted(k for k in mat if not k.startswith('__'))})")
    syn = np.atleast_1d(mat["synsets"]).reshape(-1)
    by_id: dict[int, dict] = {}
    wnid_to_id: dict[str, int] = {}
    for j, s in enumerate(syn):
        try:
            sid = int(_scalar(_mat_field(s, "ILSVRC2012_ID")))
            wnid = _text(_mat_field(s, "WNID"))
            words = _text(_mat_field(s, "words"))
            kids = _int_list(_mat_field(s, "children"))
        except KeyError as e:
            raise ValueError(f"{meta_mat}: synset {j} has no field {e}") from None
        if not wnid:
            raise ValueError(f"{meta_mat}: synset {j} (ILSVRC2012_ID {sid}) has an empty WNID")
        if sid in by_id:
            raise ValueError(f"{meta_mat}: ILSVRC2012_ID {sid} used twice ({by_id[sid]['wnid']!r} and {wnid!r})")
        if wnid in wnid_to_id:
            raise ValueError(f"{meta_mat}: WNID {wnid!r} listed twice")
        by_id[sid] = {"wnid": wnid, "words": words, "children": kids}
        wnid_to_id[wnid] = sid
    parents: dict[int, list[int]] = {}
    for sid, s in by_id.items():
        for c in s["children"]:
            if c not in by_id:
                raise ValueError(f"{meta_mat}: synset {s['wnid']!r} lists unknown child ILSVRC2012_ID {c}")
            parents.setdefault(c, []).append(sid)
    if class_order is None:
        class_ids = sorted(sid for sid, s in by_id.items() if not s["children"])
    else:
        class_ids = []
        for w in class_order:
            if w not in wnid_to_id:
                raise ValueError(f"{meta_mat}: class {w!r} is not a WNID in synsets")
            sid = wnid_to_id[w]
            if by_id[sid]["children"]:
                raise ValueError(f"{meta_mat}: class {w!r} is an internal synset (it has children), not a leaf class")
            class_ids.append(sid)
    # every ancestor of a class, then one parent each (lowest ID), then what hangs from classes
    anc = set()
    stack = list(class_ids)
    while stack:
        x = stack.pop()
        if x in anc:
            continue
        anc.add(x)
        stack.extend(parents.get(x, []))
    chosen = {}
    for x in anc:
        ps = sorted(p for p in parents.get(x, []) if p in anc)
        if ps:
            chosen[x] = ps[0]
    kept = set()
    for c in class_ids:
        x = c
        seen = set()
        while x not in kept:
            if x in seen:
                raise ValueError(f"{meta_mat}: cycle through synset {by_id[x]['wnid']!r}")
            seen.add(x)
            kept.add(x)
            if x not in chosen:
                break
            x = chosen[x]
    multi = sum(1 for x in kept if len([p for p in parents.get(x, []) if p in anc]) > 1)
    if multi:
        log.info("%s: %d synsets had several parents; kept the lowest-ID parent", meta_mat, multi)
    tops = sorted(x for x in kept if x not in chosen)
    kids_of: dict[int, list[int]] = {}
    for x in kept:
        if x in chosen:
            kids_of.setdefault(chosen[x], []).append(x)
    edges = []
    if len(tops) == 1:
        root = by_id[tops[0]]["wnid"]
        stack = [tops[0]]
    else:
        root = "root"
        edges += [("root", by_id[t]["wnid"]) for t in tops]
        stack = list(tops)
    order_edges = []
    bfs = list(stack)
    while bfs:
        x = bfs.pop(0)
        for c in sorted(kids_of.get(x, [])):
            order_edges.append((by_id[x]["wnid"], by_id[c]["wnid"]))
            bfs.append(c)
    edges += order_edges
    disp = {}
    for x in kept:
        w = by_id[x]["words"].split(",")[0].strip()
        if w:
            disp[by_id[x]["wnid"]] = w
    if display_names:
        disp.update({k: v for k, v in display_names.items() if k in {by_id[x]['wnid'] for x in kept}})
    classes = [by_id[c]["wnid"] for c in class_ids]
    return Taxonomy.from_edges(edges, class_order=classes, display_names=disp, root=root, source=str(meta_mat))


# ====================================================================== Rare Species
_KINGDOMS = {"animalia", "plantae", "fungi", "bacteria", "archaea", "protista", "protozoa", "chromista"}
_RANKS = ("phylum", "class", "order", "family", "genus")


def read_rare_species(
    root_or_names: str | Iterable[str],
    class_order: Sequence[str] | None = None,
    keep_kingdom: bool = False,
) -> Taxonomy:
    """Rare Species taxonomy from class folder names ``phylum_class_order_family_genus_species``.

    ``root_or_names`` is the directory holding one folder per class (hidden entries
    ignored) or an iterable of folder names. The first five ``_`` fields are phylum,
    class, order, family, genus; the rest, joined with ``_``, is the species epithet
    (so subspecies survive). A leading kingdom field (``animalia``, ``plantae``...,
    any case) is dropped unless ``keep_kingdom`` (then it is a level under the root).

    Leaves are named by the full folder name (unique, and what the dataset's labels
    use), displayed as the binomial ``genus species``. Internal nodes are named by
    their taxon; when the same taxon name occurs at two places (another rank, or the
    same genus name under two families) each occurrence is qualified as
    ``name (parent)``, and if that still repeats, by its full ``_``-joined lineage.
    Display names are always the bare taxon. Class order: ``class_order`` (folder
    names) if given, else the order of a given list of names, else (a directory)
    sorted folder names, as Dassl's ImageFolder-style readers number them.
    """
    if isinstance(root_or_names, (str, os.PathLike)):
        root = str(root_or_names)
        if not os.path.isdir(root):
            raise ValueError(f"{root}: not a directory")
        names = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
        source = root
    else:
        names = list(root_or_names)
        source = "<rare species names>"
    if not names:
        raise ValueError(f"{source}: no class folders")
    dup = [n for n, c in Counter(names).items() if c > 1]
    if dup:
        raise ValueError(f"{source}: class folder {dup[0]!r} listed twice")
    lineages: dict[str, tuple[str, ...]] = {}
    for name in names:
        fields = name.split("_")
        kingdom = None
        if fields and fields[0].lower() in _KINGDOMS:
            kingdom = fields[0]
            fields = fields[1:]
        if len(fields) < 6 or any(not f for f in fields):
            raise ValueError(
                f"{source}: class folder {name!r} is not 'phylum_class_order_family_genus_species' "
                f"({len(fields)} non-kingdom fields, some may be empty)"
            )
        lineage = tuple(fields[:5])
        if keep_kingdom:
            if kingdom is None:
                raise ValueError(f"{source}: keep_kingdom=True but {name!r} has no kingdom field")
            lineage = (kingdom,) + lineage
        lineages[name] = lineage
    # unique internal node per lineage prefix
    prefixes = sorted({lin[:i] for lin in lineages.values() for i in range(1, len(lin) + 1)}, key=lambda p: (len(p), p))
    count = Counter(p[-1] for p in prefixes)
    leaf_set = set(names)
    node_name: dict[tuple, str] = {}
    for p in prefixes:
        nm = p[-1]
        if count[nm] > 1 or nm in leaf_set or nm == "root":
            nm = f"{p[-1]} ({p[-2]})" if len(p) > 1 else p[-1]
        node_name[p] = nm
    again = Counter(node_name.values())
    for p in prefixes:
        if again[node_name[p]] > 1 or node_name[p] in leaf_set or node_name[p] == "root":
            node_name[p] = "_".join(p)
    final = Counter(node_name.values())
    clash = [n for n, c in final.items() if c > 1 or n in leaf_set]
    if clash:
        raise ValueError(f"{source}: cannot give taxon {clash[0]!r} a unique node name")
    edges = []
    disp = {}
    for p in prefixes:
        par = "root" if len(p) == 1 else node_name[p[:-1]]
        edges.append((par, node_name[p]))
        disp[node_name[p]] = p[-1].replace("_", " ")
    order = list(class_order) if class_order is not None else names
    for name in names:
        lin = lineages[name]
        edges.append((node_name[lin], name))
        fields = name.split("_")
        if fields[0].lower() in _KINGDOMS:
            fields = fields[1:]
        disp[name] = f"{fields[4]} {' '.join(fields[5:])}"
    # child order = sorted (prefixes sorted, then leaves sorted)
    return Taxonomy.from_edges(edges, class_order=order, display_names=disp, root="root", source=source)


# ====================================================================== SUN397
def _sun_class_name(cell: str, style: str) -> str:
    c = cell.strip().strip("'\"").strip()
    parts = [p for p in c.split("/") if p]
    if len(parts) >= 2 and len(parts[0]) == 1 and parts[1].startswith(parts[0]):
        parts = parts[1:]
    if not parts:
        raise ValueError("empty category")
    if style == "coop":
        parts = parts[::-1]
    return "_".join("_".join(p.split()) for p in parts)


def read_sun397_hierarchy(
    path: str,
    class_order: Sequence[str] | None = None,
    n_level1: int = 3,
    name_style: str = "protect",
    level2_parents: Mapping[str, str] | None = None,
) -> Taxonomy:
    """SUN397's three-level hierarchy table (``three_levels.csv``/``.tsv``).

    Layout: a header row, then one row per category. The first column is the SUN
    category path (``/a/abbey``, ``/a/apse/indoor``; quotes allowed); then
    ``n_level1`` (3) level-1 columns (indoor; outdoor, natural; outdoor, man-made)
    and the level-2 columns (16), with 0/1 flags. Rows whose first cell does not
    start with ``/`` before the header are skipped (extra title rows). Delimiter:
    tab if the header has one, else comma (quoted headers such as
    ``"outdoor, natural"`` are fine).

    Names: groups are named by their header text with spaces -> ``_`` (display name
    = the header text); classes by the category path without its letter folder,
    parts joined with ``_`` (``name_style="protect"``: ``apse_indoor``) or reversed
    (``"coop"``: ``indoor_apse``, CoOp's class names).

    Parents: each level-2 group goes under the level-1 group most often flagged
    together with it (ties: first column), unless ``level2_parents`` maps it. A
    category flagged in several level-2 groups gets ONE parent: the first flagged
    level-2 column (table order) among those under its first flagged level-1 column,
    or the first flagged level-2 column overall if none is. The number of such
    reassigned categories is logged (logger ``hyptree.tree.io``). Groups left
    empty are dropped. Class order: table order unless ``class_order`` is given.
    """
    if name_style not in ("protect", "coop"):
        raise ValueError(f"name_style must be 'protect' or 'coop', got {name_style!r}")
    if path.lower().endswith((".xlsx", ".xls")):
        raise ValueError(f"{path}: spreadsheet files are not read; save the sheet as CSV")
    with open(path, encoding="utf-8-sig", newline="") as f:
        text = f.read()
    lines = text.splitlines()
    first_data = next((i for i, l in enumerate(lines) if l.strip().strip("'\"").startswith("/")), None)
    if first_data is None or first_data == 0:
        raise ValueError(f"{path}: no header row followed by category rows starting with '/'")
    header_line = first_data - 1
    delim = "\t" if "\t" in lines[header_line] else ","
    rows = list(csv.reader(lines[header_line:], delimiter=delim))
    header = [h.strip() for h in rows[0]]
    while header and not header[-1]:
        header.pop()
    n_groups = len(header) - 1
    if n_groups <= n_level1:
        raise ValueError(f"{path}:{header_line + 1}: header has {n_groups} group columns, need more than {n_level1}")
    groups = header[1:]
    if any(not g for g in groups):
        raise ValueError(f"{path}:{header_line + 1}: empty group name in header column {groups.index('') + 2}")
    gnames = ["_".join(g.split()) for g in groups]
    if len(set(gnames)) != len(gnames):
        dup = [g for g, c in Counter(gnames).items() if c > 1][0]
        raise ValueError(f"{path}:{header_line + 1}: group {dup!r} appears twice in the header")
    classes, flags = [], []
    for r, row in enumerate(rows[1:], start=header_line + 2):
        if not row or not "".join(row).strip():
            continue
        try:
            name = _sun_class_name(row[0], name_style)
        except ValueError:
            raise ValueError(f"{path}:{r}: bad category cell {row[0]!r}") from None
        vals = []
        for c in range(n_groups):
            cell = row[c + 1].strip() if c + 1 < len(row) else ""
            if cell in ("", "0", "0.0"):
                vals.append(0)
            elif cell in ("1", "1.0"):
                vals.append(1)
            else:
                raise ValueError(f"{path}:{r}: column {groups[c]!r} must be 0 or 1, got {cell!r}")
        classes.append((name, r))
        flags.append(vals)
    if not classes:
        raise ValueError(f"{path}: no category rows")
    F = np.asarray(flags, dtype=np.int64)
    L1, L2 = F[:, :n_level1], F[:, n_level1:]
    g1, g2 = gnames[:n_level1], gnames[n_level1:]
    names = [c for c, _ in classes]
    dup = [n for n, c in Counter(names).items() if c > 1]
    if dup:
        raise ValueError(f"{path}: category {dup[0]!r} appears twice")
    clash = set(names) & set(gnames)
    if clash:
        raise ValueError(f"{path}: category {sorted(clash)[0]!r} has the name of a group")
    # level-2 group -> level-1 group
    co = L2.T @ L1  # (n2, n1)
    parent2 = []
    for j, g in enumerate(g2):
        if level2_parents and (g in level2_parents or groups[n_level1 + j] in level2_parents):
            p = level2_parents.get(g, level2_parents.get(groups[n_level1 + j]))
            p = "_".join(str(p).split())
            if p not in g1:
                raise ValueError(f"level2_parents: {p!r} is not a level-1 group of {path} ({g1})")
            parent2.append(g1.index(p))
        else:
            parent2.append(int(np.argmax(co[j])))
    parent2 = np.asarray(parent2)
    edges_by_group: dict[int, list[str]] = {j: [] for j in range(len(g2))}
    reassigned = []
    for k, (name, r) in enumerate(classes):
        f2 = np.nonzero(L2[k])[0]
        if len(f2) == 0:
            raise ValueError(f"{path}:{r}: category {name!r} has no level-2 group flagged")
        f1 = np.nonzero(L1[k])[0]
        pick = None
        if len(f1):
            under = [j for j in f2 if parent2[j] == f1[0]]
            if under:
                pick = under[0]
        if pick is None:
            pick = f2[0]
        if len(f2) > 1:
            reassigned.append(name)
        edges_by_group[int(pick)].append(name)
    if reassigned:
        log.info(
            "%s: %d categories are flagged in several level-2 groups and were given one parent "
            "(first flagged group under their first level-1 group), e.g. %s",
            path, len(reassigned), ", ".join(reassigned[:5]),
        )
    edges = []
    used1 = sorted({int(parent2[j]) for j, cs in edges_by_group.items() if cs})
    for i in used1:
        edges.append(("root", g1[i]))
    for j in range(len(g2)):
        if edges_by_group[j]:
            edges.append((g1[parent2[j]], g2[j]))
    dropped = [g2[j] for j in range(len(g2)) if not edges_by_group[j]]
    if dropped:
        log.info("%s: level-2 groups without categories dropped: %s", path, dropped)
    for j in range(len(g2)):
        edges += [(g2[j], c) for c in edges_by_group[j]]
    disp = {gnames[i]: groups[i] for i in range(n_groups)}
    disp = {k: v for k, v in disp.items() if any(k == c for e in edges for c in e)}
    order = list(class_order) if class_order is not None else names
    return Taxonomy.from_edges(edges, class_order=order, display_names=disp, root="root", source=str(path))


# ====================================================================== dispatch
def detect_format(source: str) -> str:
    """Guess the format of ``source`` from its name and, for directories, contents.
    Raises ``ValueError`` saying what to pass as ``--format`` when unsure."""
    base = os.path.basename(os.path.normpath(source)).lower()
    if os.path.isdir(source):
        entries = set(os.listdir(source))
        if "meta" in entries and ("train" in entries or "test" in entries):
            return "cifar100"
        if "tree.npy" in entries:
            raise ValueError(f"{source}: a ProTeCt data folder; pass its tree.npy file")
        subs = [e for e in os.scandir(source) if e.is_dir() and not e.name.startswith(".")]
        if subs and all(
            len(e.name.split("_")) >= 6 and not any(s.is_dir() for s in os.scandir(e.path)) for e in subs
        ):
            raise ValueError(
                f"{source}: flat class folders with long '_' names - pass --format rare_species "
                "(taxonomy from folder names) or --format folder (flat tree)"
            )
        return "folder"
    if not os.path.exists(source):
        raise ValueError(f"{source}: no such file or directory")
    if base == "meta":
        return "cifar100"
    if base.endswith(".npy"):
        return "protect"
    if base.endswith(".mat"):
        return "imagenet"
    if base.endswith((".csv", ".tsv")):
        return "sun397"
    if re.fullmatch(r"gt_\w+\.txt", base):
        raise ValueError(f"{source}: an image list (gt_<split>.txt), not a taxonomy; read it with read_protect_list")
    if base.endswith((".txt", ".paths", ".tax")):
        return "paths"
    raise ValueError(
        f"{source}: cannot tell the taxonomy format from the name; pass --format "
        "paths|folder|protect|cifar100|imagenet|rare_species|sun397"
    )


def read_taxonomy(source: str, format: str = "auto") -> Taxonomy:
    """Read any supported source; ``format`` as in the command line (``auto`` detects)."""
    fmt = detect_format(source) if format == "auto" else format
    readers = {
        "paths": read_paths_file,
        "folder": read_folder_tree,
        "protect": read_protect_tree,
        "cifar100": read_cifar100_meta,
        "imagenet": read_imagenet_meta,
        "rare_species": read_rare_species,
        "sun397": read_sun397_hierarchy,
    }
    if fmt not in readers:
        raise ValueError(f"unknown taxonomy format {fmt!r}; use one of {sorted(readers)}")
    return readers[fmt](source)
