"""The canonical text format: one ``/``-separated root-to-leaf path per class (see `Taxonomy.from_paths`)."""

from __future__ import annotations

from collections.abc import Sequence

from hyptree.tree.taxonomy import Taxonomy
from hyptree.utils.files import atomic_write_text

__all__ = ["read_paths_file", "write_paths_file", "read_text_lines"]


def read_text_lines(path: str) -> list[str]:
    """The lines of a UTF-8 text file; a leading byte-order mark is dropped (it would become
    part of the first name), and a file that is not UTF-8 is a ``ValueError`` naming it."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text (byte {data[e.start]:#04x} at offset {e.start})") from None
    return text.splitlines()


def read_paths_file(path: str, class_order: Sequence[str] | None = None) -> Taxonomy:
    """Read the canonical path format (see `Taxonomy.from_paths`); errors name ``path:line``."""
    lines = read_text_lines(path)
    return Taxonomy.from_paths(lines, class_order=class_order, source=str(path))


def write_paths_file(path: str, taxonomy: Taxonomy) -> None:
    """Write ``taxonomy.to_paths()`` with a comment header; ``read_paths_file`` reads it back."""
    lines = taxonomy.to_paths()
    head = [
        "# hyptree taxonomy: one root-to-leaf path per class, in label order (root implicit).",
        f"# root: {taxonomy.names[0]}  classes: {taxonomy.num_classes}  nodes: {taxonomy.num_nodes}",
    ]
    atomic_write_text(path, "\n".join(head + lines) + "\n")
