"""The canonical text format: one ``/``-separated root-to-leaf path per class (see `Taxonomy.from_paths`)."""

from __future__ import annotations

from collections.abc import Sequence

from hyptree.tree.taxonomy import Taxonomy
from hyptree.utils.files import atomic_write_text

__all__ = ["read_paths_file", "write_paths_file"]


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
