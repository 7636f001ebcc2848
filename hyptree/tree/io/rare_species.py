"""Rare Species: the taxonomy encoded in class folder names ``phylum_class_order_family_genus_species``."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence

from hyptree.tree.taxonomy import Taxonomy

__all__ = ["read_rare_species"]

_KINGDOMS = {"animalia", "plantae", "fungi", "bacteria", "archaea", "protista", "protozoa", "chromista"}


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
    names, source = _class_folders(root_or_names)
    lineages = {name: _lineage(name, keep_kingdom, source) for name in names}
    # unique internal node per lineage prefix
    prefixes = sorted({lin[:i] for lin in lineages.values() for i in range(1, len(lin) + 1)}, key=lambda p: (len(p), p))
    node_name = _taxon_node_names(prefixes, set(names), source)
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


def _class_folders(root_or_names) -> tuple[list[str], str]:
    """The class folder names (sorted for a directory) and the source for errors."""
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
    return names, source


def _lineage(name: str, keep_kingdom: bool, source: str) -> tuple[str, ...]:
    """``(phylum, class, order, family, genus)``, with the kingdom first if kept."""
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
    return lineage


def _taxon_node_names(prefixes: list[tuple], leaf_set: set, source: str) -> dict[tuple, str]:
    """A unique node name per lineage prefix: the taxon, else ``taxon (parent)``,
    else the ``_``-joined lineage."""
    count = Counter(p[-1] for p in prefixes)
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
    return node_name
