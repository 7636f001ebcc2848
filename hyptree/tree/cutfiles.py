"""Tree-cut files: HypTree's JSON cut lists and ProTeCt's tree-cut archives.

* `save_cuts` / `load_cuts`: ``{"format": "hyptree-cuts", ...}`` JSON with cuts as
  node-name lists (written next to every run).
* `load_protect_cuts`: ProTeCt's ``treecuts_*.pkl`` (``torch.save`` or plain pickle)
  and the other per-cut layouts listed in its docstring, read without their code.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from hyptree.tree.cuts import cut_targets, frontier_cut, validate_cut
from hyptree.tree.io.protect import protect_text
from hyptree.tree.pickles import load_pickle_file, loads_permissive
from hyptree.tree.taxonomy import Taxonomy
from hyptree.utils.files import atomic_write_json

__all__ = ["save_cuts", "load_cuts", "load_protect_cuts"]


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
    with ``tgt_mapping``, which then has to be in the taxonomy's class order (when it
    leaves a single-child chain of equal texts, e.g. ``slot_machine`` -> ``slot_machine_1``
    in ProTeCt's ImageNet base tree, the topmost node is taken); a cut
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
        raise ValueError(f"{path}: expected a dict or list of cuts, found {type(obj).__name__}")
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
            return loads_permissive(z.read(inner[0]), source=path, kind="cuts")
    return load_pickle_file(path, kind="cuts")


def _looks_like_flag_dict(obj, taxonomy) -> bool:
    return (
        bool(obj)
        and all(isinstance(k, str) for k in obj)
        and all(isinstance(v, (bool, int, np.integer, float)) for v in obj.values())
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
            return frontier_cut(taxonomy, expanded)
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
        return frontier_cut(taxonomy, expanded)
    raise ValueError(
        f"0/1 flags of length {len(flags)}: expected {n - 1} (non-root nodes), {n} (all nodes) "
        f"or {ni} (expansion flags of internal nodes)"
    )


def _resolve_cut_names(taxonomy: Taxonomy, names, targets) -> tuple[int, ...]:
    cache = taxonomy._cache
    if "protect_text" not in cache:
        by_text: dict[str, list[int]] = {}
        for i, nm in enumerate(taxonomy.names):
            keys = {protect_text(nm), taxonomy.display_names[i]}
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
            if not cand:
                raise ValueError(f"node text {name!r}: no node covers exactly the classes the file maps to it")
            # Several left: nodes with equal class sets lie on one single-child chain
            # (ProTeCt's ImageNet base/novel trees: 'slot_machine' -> 'slot_machine_1'), with
            # the same prompt text, so the same scores; the topmost is the cut's node.
            cand = [min(cand, key=lambda c: int(taxonomy.depth[c]))]
        ids.append(cand[0])
    return validate_cut(taxonomy, ids)
