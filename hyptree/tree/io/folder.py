"""A directory tree as a taxonomy: directories are nodes, leaf directories are classes."""

from __future__ import annotations

import os
from collections.abc import Sequence

from hyptree.tree.taxonomy import Taxonomy

__all__ = ["read_folder_tree"]


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
        subs = sorted(e.name for e in os.scandir(dirpath) if e.is_dir() and not e.name.startswith("."))
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
