"""SUN397's three-level scene hierarchy table (``three_levels.csv`` / ``.tsv``)."""

from __future__ import annotations

import csv
import logging
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from hyptree.tree.taxonomy import Taxonomy

__all__ = ["read_sun397_hierarchy"]

log = logging.getLogger(__name__)


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
    reassigned categories is logged (logger ``hyptree.tree.io.sun397``). Groups left
    empty are dropped. Class order: table order unless ``class_order`` is given.
    """
    if name_style not in ("protect", "coop"):
        raise ValueError(f"name_style must be 'protect' or 'coop', got {name_style!r}")
    if path.lower().endswith((".xlsx", ".xls")):
        raise ValueError(f"{path}: spreadsheet files are not read; save the sheet as CSV")
    with open(path, encoding="utf-8-sig", newline="") as f:
        text = f.read()
    header_line, rows, groups, gnames = _table_header(text.splitlines(), path, n_level1)
    classes, flags = _category_rows(rows, header_line, groups, name_style, path)
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
    parent2 = _level2_parents(L1, L2, g1, g2, groups[n_level1:], level2_parents, path)
    members = _assign_categories(classes, L1, L2, parent2, path)
    edges = _group_edges(g1, g2, parent2, members, path)
    disp = {gnames[i]: groups[i] for i in range(len(groups))}
    disp = {k: v for k, v in disp.items() if any(k == c for e in edges for c in e)}
    order = list(class_order) if class_order is not None else names
    return Taxonomy.from_edges(edges, class_order=order, display_names=disp, root="root", source=str(path))


def _table_header(lines: list[str], path: str, n_level1: int):
    """``(header line index, csv rows from the header on, group header texts, group node names)``."""
    first_data = next((i for i, ln in enumerate(lines) if ln.strip().strip("'\"").startswith("/")), None)
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
    return header_line, rows, groups, gnames


def _category_rows(rows, header_line: int, groups: list[str], name_style: str, path: str):
    """``[(class name, line number)]`` and their 0/1 group flags, one row each."""
    n_groups = len(groups)
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
    return classes, flags


def _level2_parents(L1, L2, g1, g2, headers2, level2_parents, path) -> np.ndarray:
    """Index of the level-1 group above each level-2 group: ``level2_parents`` (by node
    name or header text) if it says, else the most co-flagged level-1 group."""
    co = L2.T @ L1  # (n2, n1)
    parent2 = []
    for j, g in enumerate(g2):
        if level2_parents and (g in level2_parents or headers2[j] in level2_parents):
            p = level2_parents.get(g, level2_parents.get(headers2[j]))
            p = "_".join(str(p).split())
            if p not in g1:
                raise ValueError(f"level2_parents: {p!r} is not a level-1 group of {path} ({g1})")
            parent2.append(g1.index(p))
        else:
            parent2.append(int(np.argmax(co[j])))
    return np.asarray(parent2)


def _assign_categories(classes, L1, L2, parent2, path) -> dict[int, list[str]]:
    """``{level-2 group index: its categories}``, one group per category."""
    members: dict[int, list[str]] = {j: [] for j in range(L2.shape[1])}
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
        members[int(pick)].append(name)
    if reassigned:
        log.info(
            "%s: %d categories are flagged in several level-2 groups and were given one parent "
            "(first flagged group under their first level-1 group), e.g. %s",
            path,
            len(reassigned),
            ", ".join(reassigned[:5]),
        )
    return members


def _group_edges(g1, g2, parent2, members, path) -> list[tuple[str, str]]:
    """root -> used level-1 groups -> non-empty level-2 groups -> categories."""
    edges = []
    used1 = sorted({int(parent2[j]) for j, cs in members.items() if cs})
    for i in used1:
        edges.append(("root", g1[i]))
    for j in range(len(g2)):
        if members[j]:
            edges.append((g1[parent2[j]], g2[j]))
    dropped = [g2[j] for j in range(len(g2)) if not members[j]]
    if dropped:
        log.info("%s: level-2 groups without categories dropped: %s", path, dropped)
    for j in range(len(g2)):
        edges += [(g2[j], c) for c in members[j]]
    return edges
