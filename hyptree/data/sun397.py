"""SUN397 in CoOp's layout, with SUN's three-level hierarchy table."""

from __future__ import annotations

import os
import random

from hyptree.data.common import (
    Item,
    RawDataset,
    SplitData,
    _class_table,
    _require_dir,
    _require_file,
    _unique,
    group_by_label,
    read_coop_split,
    write_coop_split,
)
from hyptree.tree.io import read_sun397_hierarchy

__all__ = ["LAYOUTS", "read_sun397", "sun397_hierarchy_file", "load_sun397"]

LAYOUTS = {
    "sun397": """\
$DATA/sun397/
  SUN397/<letter>/<class>[/<sub>]/*.jpg   e.g. SUN397/a/abbey/sun_*.jpg
  split_zhou_SUN397.json           CoOp split (or ClassName.txt + Training_01.txt +
                                   Testing_01.txt from Partitions.zip to create it)
  hierarchy_three_levels/three_levels.csv   SUN's three-level hierarchy table""",
}
"""Expected layout, quoted by "not found" errors (``hyptree.data.LAYOUTS`` holds every dataset's)."""


SUN397_DIR = "sun397"
SUN397_SPLIT = "split_zhou_SUN397.json"
SUN397_HIERARCHY = os.path.join("hierarchy_three_levels", "three_levels.csv")


def _sun_classname(folder: str) -> str:
    """CoOp's text name of a SUN397 folder: drop the letter, reverse the rest
    (``a/apartment_building/outdoor`` -> ``outdoor apartment_building``)."""
    parts = folder.strip("/").split("/")[1:]
    return " ".join(parts[::-1])


def _read_sun_listing(dataset_dir: str, image_dir: str, name: str, cname2lab: dict[str, int]) -> list[Item]:
    path = os.path.join(dataset_dir, name)
    _require_file(path, LAYOUTS["sun397"])
    items = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            rel = line.strip().lstrip("/")
            if not rel:
                continue
            folder = os.path.dirname(rel)
            if folder not in cname2lab:
                raise ValueError(f"{path}:{lineno}: class folder {folder!r} is not in ClassName.txt")
            items.append(Item(os.path.join(image_dir, rel), cname2lab[folder], _sun_classname(folder)))
    return items


def _create_sun397_split(dataset_dir: str, image_dir: str, split_json: str, seed: int) -> None:
    """CoOp's recipe: ClassName.txt order, Training_01 -> 80% train / 20% val (per class,
    seeded shuffle), Testing_01 -> test."""
    names_file = os.path.join(dataset_dir, "ClassName.txt")
    _require_file(
        names_file,
        LAYOUTS["sun397"],
        "split_zhou_SUN397.json and ClassName.txt",
        "Download split_zhou_SUN397.json (CoOp) or extract Partitions.zip into sun397/.",
    )
    with open(names_file, encoding="utf-8") as f:
        folders = [ln.strip().lstrip("/") for ln in f if ln.strip()]
    cname2lab = {c: i for i, c in enumerate(folders)}
    trainval = _read_sun_listing(dataset_dir, image_dir, "Training_01.txt", cname2lab)
    test = _read_sun_listing(dataset_dir, image_dir, "Testing_01.txt", cname2lab)
    rng = random.Random(seed)
    train, val = [], []
    for members in group_by_label(trainval).values():
        members = list(members)
        n_val = round(len(members) * 0.2)
        if n_val < 1:
            raise ValueError(f"SUN397 class {members[0].classname!r}: too few images for a validation part")
        rng.shuffle(members)
        val += members[:n_val]
        train += members[n_val:]
    write_coop_split({"train": train, "val": val, "test": test}, split_json, image_dir)


def read_sun397(root: str, seed: int = 1) -> SplitData:
    """SUN397 in CoOp's layout: ``$DATA/sun397/SUN397`` + ``split_zhou_SUN397.json``.

    Without the split file it is created once from ``ClassName.txt`` / ``Training_01.txt`` /
    ``Testing_01.txt`` (CoOp's recipe, seeded). ``classnames`` are CoOp's names
    (``outdoor apartment_building``); ``class_ids`` the folders (``a/apartment_building/outdoor``),
    which is what SUN's hierarchy table lists (:func:`sun397_hierarchy_file`).
    """
    dataset_dir = os.path.join(root, SUN397_DIR)
    image_dir = os.path.join(dataset_dir, "SUN397")
    split_json = os.path.join(dataset_dir, SUN397_SPLIT)
    _require_dir(image_dir, LAYOUTS["sun397"], "SUN397 image folder")
    if not os.path.isfile(split_json):
        _create_sun397_split(dataset_dir, image_dir, split_json, seed)
    splits = read_coop_split(split_json, image_dir)
    classnames, class_ids = _class_table(splits, image_dir, split_json)
    return SplitData(splits["train"], splits["val"], splits["test"], classnames, class_ids)


def sun397_hierarchy_file(root: str) -> str:
    """Path of SUN's three-level hierarchy table, ``$DATA/sun397/hierarchy_three_levels/three_levels.csv``.

    Raises ``FileNotFoundError`` with the preparation steps when it is absent.
    """
    path = os.path.join(root, SUN397_DIR, SUN397_HIERARCHY)
    _require_file(
        path,
        LAYOUTS["sun397"],
        "SUN397 hierarchy table",
        "Get hierarchy_three_levels.zip from the SUN database site, unzip it into "
        "sun397/ and, if it holds only a spreadsheet, save its sheet as three_levels.csv.",
    )
    return path


def _sun_keys(folder: str, classname: str) -> list[str]:
    parts = [p for p in folder.strip("/").split("/") if p]
    if len(parts) > 1 and len(parts[0]) == 1:
        parts = parts[1:]
    # CoOp's name reversed ('indoor_apse'), ProTeCt's order ('apse_indoor'), CoOp's class name
    return _unique(["_".join(parts[::-1]), "_".join(parts), classname, folder])


def load_sun397(root: str) -> RawDataset:
    """SUN397 for ``build_hierarchical_dataset``; its own hierarchy is SUN's three-level table."""
    d = read_sun397(root)

    def native():
        path = sun397_hierarchy_file(root)
        return read_sun397_hierarchy(path, name_style="coop"), f"{path} (SUN397 three-level table)"

    keys = [_sun_keys(f, n) for f, n in zip(d.class_ids, d.classnames)]
    return RawDataset(d, list(d.class_ids), keys, native)
