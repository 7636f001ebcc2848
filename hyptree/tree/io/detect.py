"""Choosing the reader for a taxonomy source: `detect_format` and `read_taxonomy`."""

from __future__ import annotations

import os
import re

from hyptree.tree.io.cifar100 import is_cifar100_source, read_cifar100_meta
from hyptree.tree.io.folder import read_folder_tree
from hyptree.tree.io.imagenet import read_imagenet_meta
from hyptree.tree.io.paths import read_paths_file
from hyptree.tree.io.protect import read_protect_tree
from hyptree.tree.io.rare_species import read_rare_species
from hyptree.tree.io.sun397 import read_sun397_hierarchy
from hyptree.tree.taxonomy import Taxonomy

__all__ = ["FORMATS", "detect_format", "read_taxonomy"]

# the values of read_taxonomy's (and the command line's) format argument
FORMATS = ("auto", "paths", "folder", "protect", "cifar100", "imagenet", "rare_species", "sun397")


def detect_format(source: str) -> str:
    """Guess the format of ``source`` from its name and, for directories, contents.
    Raises ``ValueError`` saying what to pass as ``--format`` when unsure."""
    base = os.path.basename(os.path.normpath(source)).lower()
    if os.path.isdir(source):
        entries = set(os.listdir(source))
        if is_cifar100_source(source):
            return "cifar100"
        if "tree.npy" in entries:
            raise ValueError(f"{source}: a ProTeCt data folder; pass its tree.npy file")
        subs = [e for e in os.scandir(source) if e.is_dir() and not e.name.startswith(".")]
        if subs and all(len(e.name.split("_")) >= 6 and not any(s.is_dir() for s in os.scandir(e.path)) for e in subs):
            raise ValueError(
                f"{source}: flat class folders with long '_' names - pass --format rare_species "
                "(taxonomy from folder names) or --format folder (flat tree)"
            )
        return "folder"
    if not os.path.exists(source):
        raise ValueError(f"{source}: no such file or directory")
    if is_cifar100_source(source):
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
