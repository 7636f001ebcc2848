"""Rare Species: one folder per species named by its ranks (``phylum_class_order_family_genus_species``)."""

from __future__ import annotations

import os

from hyptree.data.common import (
    Item,
    RawDataset,
    SplitData,
    _class_table,
    _layout_error,
    _list_subdirs,
    _require_dir,
    list_images,
    per_class_split,
    plain_keys,
    read_coop_split,
    write_coop_split,
)
from hyptree.tree.io import read_rare_species as read_rare_species_taxonomy

__all__ = ["LAYOUTS", "read_rare_species", "load_rare_species"]

LAYOUTS = {
    "rare_species": """\
$DATA/rare_species/
  images/<phylum>_<class>_<order>_<family>_<genus>_<species>/*.jpg
  split_hyptree_RareSpecies.json   CoOp-format split, created on first use (seeded)""",
}
"""Expected layout, quoted by "not found" errors (``hyptree.data.LAYOUTS`` holds every dataset's)."""


RARE_SPECIES_DIR = "rare_species"
RARE_SPECIES_SPLIT = "split_hyptree_RareSpecies.json"


def read_rare_species(root: str, seed: int = 1, p_train: float = 0.6, p_val: float = 0.1) -> SplitData:
    """Rare Species: ``$DATA/rare_species/images/<phylum_class_order_family_genus_species>/``.

    Labels follow the sorted folder names; ``classnames`` and ``class_ids`` are the folder
    names (the taxonomy reader parses the ranks). The split file
    ``split_hyptree_RareSpecies.json`` is created on first use with :func:`per_class_split`
    (per class: 60% train, 10% val, rest test, shuffled with ``seed``) and reused afterwards
    (``seed``/``p_*`` then have no effect); delete it to re-split.
    """
    dataset_dir = os.path.join(root, RARE_SPECIES_DIR)
    image_dir = os.path.join(dataset_dir, "images")
    split_json = os.path.join(dataset_dir, RARE_SPECIES_SPLIT)
    _require_dir(image_dir, LAYOUTS["rare_species"], "image folder")
    if not os.path.isfile(split_json):
        folders = _list_subdirs(image_dir)
        if not folders:
            raise _layout_error("class folders", image_dir, LAYOUTS["rare_species"])
        items = []
        for label, name in enumerate(folders):
            folder = os.path.join(image_dir, name)
            items.extend(Item(os.path.join(folder, im), label, name) for im in list_images(folder))
        write_coop_split(per_class_split(items, p_train, p_val, seed), split_json, image_dir)
    splits = read_coop_split(split_json, image_dir)
    classnames, _ = _class_table(splits, image_dir, split_json)
    return SplitData(splits["train"], splits["val"], splits["test"], classnames, list(classnames))


def load_rare_species(root: str) -> RawDataset:
    """Rare Species for ``build_hierarchical_dataset``; its own hierarchy is the folder names' ranks."""
    d = read_rare_species(root)
    src = os.path.join(root, RARE_SPECIES_DIR, "images")

    def native():
        tax = read_rare_species_taxonomy(list(d.class_ids))
        return tax, f"{src} (Rare Species folder names)"

    ids, keys = plain_keys(d)
    return RawDataset(d, ids, keys, native)
