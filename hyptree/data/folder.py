"""Generic image-folder trees and ProTeCt's image lists (``gt_{split}.txt``, split ``fnames``)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Collection, Sequence

from hyptree.data.common import Item, _is_image_name
from hyptree.tree.io import read_protect_list

__all__ = ["read_image_folder_tree", "read_protect_items", "read_protect_split_names"]


Keep = Callable[[str], bool] | Collection[str] | None


def _keep_fn(keep: Keep) -> Callable[[str], bool]:
    if keep is None:
        return lambda name: True
    if callable(keep):
        return keep
    names = set(keep)
    return lambda name: name in names


def read_image_folder_tree(
    root: str, class_order: Sequence[str] | None = None, keep: Keep = None
) -> tuple[list[Item], list[str]]:
    """Read a hierarchy stored as nested folders (ProTeCt's hierarchical datasets).

    A leaf class is a folder without sub-folders; its images are the image files in it.
    Returns ``(items, lines)``: items labelled by leaf, and one canonical line
    ``node/node/.../leaf`` per leaf (root implicit) in label order. Labels follow
    ``class_order`` (leaf folder names, e.g. from ProTeCt's ``leaf_nodes.npy``) or, by
    default, the sorted order of the leaves' paths. ``keep`` selects image files by name:
    a predicate or a collection of names (ProTeCt's split ``fnames``).

    Raises ``ValueError`` when two folders share a name (tree nodes need unique names),
    when an internal folder holds images (their class would be ambiguous), or when
    ``class_order`` and the leaves differ.
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"folder tree not found: {root}\nExpected: <root>/<node>/.../<leaf>/*.png, "
            "a leaf being a folder without sub-folders"
        )
    keep_fn = _keep_fn(keep)
    leaves: dict[str, tuple[str, list[str]]] = {}  # name -> (relative path, image names)
    seen_dirs: dict[str, str] = {}
    stack = [""]
    while stack:
        rel = stack.pop()
        full = os.path.join(root, rel) if rel else root
        subdirs, images = [], []
        with os.scandir(full) as it:
            for e in it:
                if e.name.startswith("."):
                    continue
                if e.is_dir():
                    subdirs.append(e.name)
                elif _is_image_name(e.name) and e.is_file():
                    images.append(e.name)
        for d in subdirs:
            child = f"{rel}/{d}" if rel else d
            if d in seen_dirs:
                raise ValueError(
                    f"{root}: folder name {d!r} occurs twice ({seen_dirs[d]} and {child}); "
                    "taxonomy node names must be unique"
                )
            seen_dirs[d] = child
            stack.append(child)
        if rel and not subdirs:
            leaves[os.path.basename(rel)] = (rel, sorted(n for n in images if keep_fn(n)))
        elif images:
            raise ValueError(
                f"{full}: {len(images)} image(s) in a folder that has sub-folders; images must sit in leaf folders only"
            )
    if not leaves:
        raise ValueError(f"{root}: no leaf folders found")
    if class_order is None:
        order = sorted(leaves, key=lambda name: leaves[name][0])
    else:
        order = list(class_order)
        unknown = [c for c in order if c not in leaves]
        extra = [c for c in leaves if c not in set(order)]
        if unknown or extra or len(set(order)) != len(order):
            raise ValueError(
                f"{root}: class_order does not match the leaf folders "
                f"(not found: {unknown[:5]}, not listed: {extra[:5]})"
            )
    items: list[Item] = []
    lines: list[str] = []
    for label, name in enumerate(order):
        rel, images = leaves[name]
        lines.append(rel)
        folder = os.path.join(root, rel)
        items.extend(Item(os.path.join(folder, im), label, name) for im in images)
    return items, lines


def read_protect_items(list_file: str, image_root: str, classnames: Sequence[str] | None = None) -> list[Item]:
    """A ProTeCt data list ``gt_{split}.txt`` as :class:`Item` records.

    The lines are read by :func:`hyptree.tree.io.read_protect_list` (``path,label,index``,
    ``path,label`` or ``path label``; paths may contain commas). Each path is joined to
    ``image_root`` (for SUN: ``$DATA/sun397/SUN397``; ImageNet: ``$DATA/imagenet/images``;
    CIFAR-100: the hierarchical folder). Labels index ProTeCt's leaf order;
    ``classnames[label]`` names them (default: the image's folder name).
    """
    if not os.path.isfile(list_file):
        raise FileNotFoundError(
            f"ProTeCt data list not found: {list_file}\n"
            "Expected lines 'relative/path.jpg,label,index' (ProTeCt prepro/data/<dataset>/gt_<split>.txt)"
        )
    items = []
    for k, (rel, label) in enumerate(read_protect_list(list_file)):
        if classnames is not None:
            if not 0 <= label < len(classnames):
                raise ValueError(
                    f"{list_file}:{_line_of_entry(list_file, k)}: label {label} outside 0..{len(classnames) - 1}"
                )
            name = classnames[label]
        else:
            name = os.path.basename(os.path.dirname(rel))
        items.append(Item(os.path.join(image_root, rel), label, name))
    return items


def _line_of_entry(path: str, k: int) -> int:
    """Line number of entry ``k`` of a list file (the reader skips blank lines only); for errors."""
    with open(path, encoding="utf-8") as f:
        return [n for n, line in enumerate(f, 1) if line.strip()][k]


def read_protect_split_names(split_json: str) -> list[str]:
    """The image file names of a ProTeCt split file (``prepro/splits/<dataset>/<split>.json``, key ``fnames``)."""
    if not os.path.isfile(split_json):
        raise FileNotFoundError(f'ProTeCt split file not found: {split_json} (expected {{"fnames": [...]}})')
    with open(split_json, encoding="utf-8") as f:
        obj = json.load(f)
    if not isinstance(obj, dict) or "fnames" not in obj:
        raise ValueError(f"{split_json}: expected a JSON object with key 'fnames'")
    return list(obj["fnames"])
