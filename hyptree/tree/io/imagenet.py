"""ImageNet's WordNet hierarchy: the ILSVRC2012 devkit ``meta.mat`` and CoOp's ``classnames.txt``."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from hyptree.tree.io.paths import read_text_lines
from hyptree.tree.taxonomy import Taxonomy

__all__ = ["read_imagenet_meta", "read_classnames_file"]

log = logging.getLogger(__name__)


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
    for lineno, raw in enumerate(read_text_lines(path), start=1):
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
    by_id, wnid_to_id = _read_synsets(meta_mat)
    parents = _parents_of(by_id, meta_mat)
    class_ids = _class_ids(by_id, wnid_to_id, class_order, meta_mat)
    kept, chosen = _kept_synsets(by_id, parents, class_ids, meta_mat)
    root, edges = _synset_edges(by_id, kept, chosen)
    disp = {}
    for x in kept:
        w = by_id[x]["words"].split(",")[0].strip()
        if w:
            disp[by_id[x]["wnid"]] = w
    if display_names:
        disp.update({k: v for k, v in display_names.items() if k in {by_id[x]["wnid"] for x in kept}})
    classes = [by_id[c]["wnid"] for c in class_ids]
    return Taxonomy.from_edges(edges, class_order=classes, display_names=disp, root=root, source=str(meta_mat))


def _read_synsets(meta_mat: str) -> tuple[dict[int, dict], dict[str, int]]:
    """``{ILSVRC2012_ID: {"wnid", "words", "children"}}`` and ``{wnid: ILSVRC2012_ID}``."""
    from scipy.io import loadmat

    try:
        mat = loadmat(meta_mat, squeeze_me=True, struct_as_record=False)
    except Exception as e:
        raise ValueError(f"{meta_mat}: cannot read as a MATLAB file ({e})") from None
    if "synsets" not in mat:
        raise ValueError(
            f"{meta_mat}: no 'synsets' variable (found {sorted(k for k in mat if not k.startswith('__'))})"
        )
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
    return by_id, wnid_to_id


def _parents_of(by_id: dict, meta_mat: str) -> dict[int, list[int]]:
    parents: dict[int, list[int]] = {}
    for sid, s in by_id.items():
        for c in s["children"]:
            if c not in by_id:
                raise ValueError(f"{meta_mat}: synset {s['wnid']!r} lists unknown child ILSVRC2012_ID {c}")
            parents.setdefault(c, []).append(sid)
    return parents


def _class_ids(by_id: dict, wnid_to_id: dict, class_order, meta_mat: str) -> list[int]:
    if class_order is None:
        return sorted(sid for sid, s in by_id.items() if not s["children"])
    class_ids = []
    for w in class_order:
        if w not in wnid_to_id:
            raise ValueError(f"{meta_mat}: class {w!r} is not a WNID in synsets")
        sid = wnid_to_id[w]
        if by_id[sid]["children"]:
            raise ValueError(f"{meta_mat}: class {w!r} is an internal synset (it has children), not a leaf class")
        class_ids.append(sid)
    return class_ids


def _kept_synsets(by_id, parents, class_ids, meta_mat) -> tuple[set, dict]:
    """The synsets kept (classes and the ancestors reached through chosen parents)
    and ``{synset: chosen parent}`` (lowest ID among its parents that are ancestors)."""
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
    return kept, chosen


def _synset_edges(by_id, kept, chosen) -> tuple[str, list[tuple[str, str]]]:
    """The root's name and the WNID edges, breadth-first, children in ID order
    (a ``root`` node is added above several top synsets)."""
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
    bfs = list(stack)
    while bfs:
        x = bfs.pop(0)
        for c in sorted(kids_of.get(x, [])):
            edges.append((by_id[x]["wnid"], by_id[c]["wnid"]))
            bfs.append(c)
    return root, edges
