"""One entry point per dataset: images, splits and the taxonomy they are labelled by.

:func:`build_hierarchical_dataset` returns a :class:`HierDataset`: train/val/test lists of
:class:`~hyptree.data.common.Item` whose label ``k`` is leaf ``k`` of ``taxonomy``. The Dassl
wrappers in ``datasets/`` only turn the items into ``Datum`` objects; everything else
(where the hierarchy comes from, matching its leaves to the dataset's classes, base/novel
subsets, few-shot sampling) happens here, without Dassl.

Steps, in this order (MaPLe's order where MaPLe has the step):

1. Read the images and splits: the dataset module's ``load_<dataset>`` (:data:`_REGISTRY`).
2. Read the hierarchy, first found of (see :data:`HIERARCHY_SOURCES`):
   ``taxonomy_file`` > ProTeCt's ``$DATA/protect/<dir>/tree.npy`` > the dataset's own source.
3. Match the dataset's classes to the tree's leaves (by the source's class id - WNID,
   SUN folder, Rare Species folder - or the class name, exactly, then ignoring case and
   ``_``/``-``/space differences) and cut the tree down to them with ``Taxonomy.subtree``
   in label order: ``full_taxonomy``. Leaves of the tree that the dataset lacks are
   dropped (ImageNet-A/-R keep 200 of ImageNet's 1,000). Dataset classes missing from
   a *user-given* tree (``taxonomy_file``, ProTeCt's trees, e.g. its 324-class SUN) are
   left out of the data with a warning; missing from the dataset's own source, an error.
4. Few-shot on train with ``random.Random(seed)`` (Dassl's sampler), then on val with
   ``min(num_shots, 4)`` shots continuing the same generator - exactly what MaPLe gets
   after ``random.seed(cfg.SEED)``. Sampling happens over all classes, before step 5, so a
   base run trains on the same images of its classes as an all-class run.
5. ``subsample="base"|"new"``: ``split_base_novel(full_taxonomy, split_mode, split_seed)``;
   ``taxonomy = full_taxonomy.subtree(half)`` and the items are relabelled to its leaf order.
6. A dataset without a validation split (CIFAR-100, ImageNet, the ImageNet variants)
   uses the test set as val, as MaPLe does for ImageNet.

Every item's ``classname`` is the display name (prompt text) of its leaf, so
``classnames[k] == taxonomy.display_names[taxonomy.leaves[k]]``. A leaf named by an opaque
class id without an explicit display name (an ImageNet WNID in a paths file) shows the
dataset's class name (``classnames.txt``) instead.
"""

from __future__ import annotations

import logging
import os
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from hyptree.data import cifar100, imagenet, rare_species, sun397, toy, toy_world
from hyptree.data.common import (
    SUBSAMPLE_CHOICES,
    Item,
    RawDataset,
    check_items,
    fewshot_sample,
    subsample_classes,
)
from hyptree.data.reference import REFERENCE_SPLIT, reference_split
from hyptree.tree.checks import default_display_name
from hyptree.tree.io.detect import read_taxonomy
from hyptree.tree.io.protect import read_protect_tree
from hyptree.tree.splits import split_base_novel
from hyptree.tree.taxonomy import Taxonomy

__all__ = [
    "HierDataset",
    "DATASET_NAMES",
    "TARGET_DATASETS",
    "PROTECT_DIRS",
    "HIERARCHY_SOURCES",
    "LAYOUTS",
    "build_hierarchical_dataset",
    "match_classes",
]

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------
# Registry: one entry per dataset (adding a dataset = its module + one line here)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    load: Callable[..., RawDataset]  # (root, **opts) -> RawDataset
    protect_dirs: tuple[str, ...]  # folders under $DATA/protect/ searched for tree.npy, in order
    hierarchy: str  # the dataset's own hierarchy source, for docs and errors


_IMAGENET_CUT = "the ImageNet hierarchy (meta.mat as for imagenet), cut down to the dataset's"

_REGISTRY: dict[str, _Entry] = {
    "cifar100": _Entry(
        cifar100.load_cifar100,
        ("cifar100",),
        "$DATA/cifar-100-hierarchical/ folder tree when the images come from it, "
        "else the archive's 20 coarse -> 100 fine classes",
    ),
    "sun397": _Entry(
        sun397.load_sun397, ("sun",), "$DATA/sun397/hierarchy_three_levels/three_levels.csv (SUN's three-level table)"
    ),
    "imagenet": _Entry(
        imagenet.load_imagenet,
        ("imagenet",),
        "$DATA/imagenet/ILSVRC2012_devkit_t12/data/meta.mat (or $DATA/imagenet/meta.mat)",
    ),
    "imagenetv2": _Entry(imagenet.load_imagenet_v2, ("imagenetV2", "imagenet"), f"{_IMAGENET_CUT} classes"),
    "imagenet_sketch": _Entry(
        imagenet.load_imagenet_sketch, ("imagenet-sketch", "imagenet"), f"{_IMAGENET_CUT} classes"
    ),
    "imagenet_a": _Entry(imagenet.load_imagenet_a, ("imagenet-a", "imagenet"), f"{_IMAGENET_CUT} 200 classes"),
    "imagenet_r": _Entry(imagenet.load_imagenet_r, ("imagenet-r", "imagenet"), f"{_IMAGENET_CUT} 200 classes"),
    "rare_species": _Entry(
        rare_species.load_rare_species,
        ("rarespecies",),
        "the class folder names phylum_class_order_family_genus_species",
    ),
    "toy": _Entry(toy.load_toy, (), "$DATA/toy_hier/hierarchy.txt (generated with the images)"),
    "toy_world": _Entry(toy_world.load_toy_world, (), "$DATA/toy_world/hierarchy.txt (generated with the images)"),
}

DATASET_NAMES = tuple(_REGISTRY)
"""Names :func:`build_hierarchical_dataset` accepts."""

TARGET_DATASETS = ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")
"""Test-only cross-domain targets: empty train split; ``tree`` is their name."""

PROTECT_DIRS: dict[str, tuple[str, ...]] = {k: e.protect_dirs for k, e in _REGISTRY.items()}
"""Folders under ``$DATA/protect/`` searched for ProTeCt's ``tree.npy``, in order. An
ImageNet variant uses its own ProTeCt tree, else ImageNet's (cut down to its classes)."""

HIERARCHY_SOURCES: dict[str, str] = {k: e.hierarchy for k, e in _REGISTRY.items()}
"""The dataset's own hierarchy source, used when neither ``taxonomy_file`` nor a ProTeCt
tree (:data:`PROTECT_DIRS`) is present."""

LAYOUTS: dict[str, str] = {
    **cifar100.LAYOUTS,
    **sun397.LAYOUTS,
    **imagenet.LAYOUTS,
    **rare_species.LAYOUTS,
    **toy.LAYOUTS,
    **toy_world.LAYOUTS,
}
"""Every dataset module's expected on-disk layout (the text its "not found" errors quote)."""


# ---------------------------------------------------------------------------------------
# Result
# ---------------------------------------------------------------------------------------


@dataclass
class HierDataset:
    """A dataset with its taxonomy; label ``k`` of every item is leaf ``k`` of ``taxonomy``.

    ``taxonomy`` is the tree of this run's classes (for ``base``/``new`` the subtree of
    that half), ``full_taxonomy`` the tree of all the dataset's classes before
    subsampling. ``classnames[k]`` is the display name of leaf ``k`` (also every item's
    ``classname``). ``class_ids[k]`` is the source's identifier of class ``k`` (WNID, SUN
    folder, Rare Species folder, else the class name). ``full_labels[k]`` is class ``k``'s
    label in ``full_taxonomy``. ``tree`` is ``"all"``, ``"base"``, ``"new"`` or, for a
    test-only target with all its classes, the target's name. ``source`` says where the
    hierarchy came from. ``dropped_classes`` lists dataset classes (ids) the hierarchy
    lacks, left out of the data.
    """

    name: str
    train_x: list[Item]
    val: list[Item]
    test: list[Item]
    taxonomy: Taxonomy
    full_taxonomy: Taxonomy
    classnames: list[str]
    tree: str
    source: str
    class_ids: list[str] = field(default_factory=list)
    full_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    dropped_classes: list[str] = field(default_factory=list)
    cuts_file: str = ""  # the reference's evaluation cuts of this tree (SUBSAMPLE_SPLIT reference)
    dropped_reason: str = ""  # why ``dropped_classes`` were left out (recorded in results.json)

    @property
    def num_classes(self) -> int:
        return self.taxonomy.num_classes

    def summary(self) -> str:
        """One line for logs."""
        t = self.taxonomy
        line = (
            f"{self.name} [{self.tree}]: {self.num_classes} classes, {t.num_nodes} nodes, height {t.height}; "
            f"train {len(self.train_x)}, val {len(self.val)}, test {len(self.test)}; hierarchy: {self.source}"
        )
        if self.dropped_classes:
            line += f"; {len(self.dropped_classes)} dataset classes not in the hierarchy left out"
        return line


# ---------------------------------------------------------------------------------------
# Matching dataset classes to tree leaves
# ---------------------------------------------------------------------------------------


def _norm(s: str) -> str:
    return re.sub(r"[\s_\-]+", "_", s.strip().lower())


def match_classes(taxonomy: Taxonomy, keys: Sequence[Sequence[str]], source: str = "<taxonomy>") -> list[str | None]:
    """For each dataset class, the tree leaf it is (a name), or ``None``.

    ``keys[k]`` are class ``k``'s candidate names, best first (source id, then class
    name, then derived spellings). A leaf matches a candidate exactly, else after
    lower-casing and treating runs of ``_``, ``-`` and spaces as one ``_`` (a normalised
    spelling shared by two leaves matches neither). All exact candidates are tried before
    any normalised one. Two classes matching one leaf is a ``ValueError`` naming both.
    """
    names = list(taxonomy.class_names)
    exact = set(names)
    normed: dict[str, str] = {}
    ambiguous = set()
    for n in names:
        k = _norm(n)
        if k in normed and normed[k] != n:
            ambiguous.add(k)
        normed.setdefault(k, n)
    out: list[str | None] = []
    owner: dict[str, int] = {}
    for label, cands in enumerate(keys):
        hit = next((c for c in cands if c in exact), None)
        if hit is None:
            for c in cands:
                k = _norm(c)
                if k in normed and k not in ambiguous:
                    hit = normed[k]
                    break
        if hit is not None:
            if hit in owner:
                raise ValueError(
                    f"{source}: classes {list(keys[owner[hit]])[:2]} and {list(cands)[:2]} both match the leaf {hit!r}"
                )
            owner[hit] = label
        out.append(hit)
    return out


def _display_fallback(tax: Taxonomy, ids: Sequence[str], names: Sequence[str]) -> Taxonomy:
    """Leaves named by an opaque class id (``ids[k] != names[k]``) without an explicit
    display name show the dataset's class name."""
    disp = list(tax.display_names)
    changed = False
    for k, node in enumerate(tax.leaves):
        nm = tax.names[node]
        if nm == ids[k] and names[k] != ids[k] and disp[node] == default_display_name(nm):
            disp[node] = names[k]
            changed = True
    return Taxonomy(tax.names, tax.parent, tax.leaves, disp) if changed else tax


# ---------------------------------------------------------------------------------------
# Hierarchy resolution
# ---------------------------------------------------------------------------------------


def _resolve_hierarchy(name: str, root: str, raw: RawDataset, taxonomy_file: str) -> tuple[Taxonomy, str, bool]:
    """``(tree, description, user_given)`` by priority: taxonomy_file > ProTeCt > native."""
    if taxonomy_file:
        path = os.path.abspath(os.path.expanduser(str(taxonomy_file)))
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"taxonomy file not found: {path} (TRAINER.HYPTREE.TAXONOMY.FILE / taxonomy_file; "
                "a '/'-separated root-to-leaf path per class, see `python -m hyptree taxonomy convert`)"
            )
        fmt = "auto"
        if (
            os.path.isfile(path)
            and not path.lower().endswith((".npy", ".mat", ".csv", ".tsv"))
            and os.path.basename(path) != "meta"
        ):
            fmt = "paths"  # any other file name is read as the canonical text format
        return read_taxonomy(path, fmt), f"taxonomy file {path}", True
    for sub in PROTECT_DIRS[name]:
        path = os.path.join(root, "protect", sub, "tree.npy")
        if os.path.isfile(path):
            return read_protect_tree(path), f"ProTeCt tree {path}", True
    tax, desc = raw.native()
    return tax, desc, False


def _matched_taxonomy(
    key: str, root: str, raw: RawDataset, taxonomy_file: str
) -> tuple[Taxonomy, list[str], list[int], list[str], str]:
    """The hierarchy (:func:`_resolve_hierarchy`) cut down to the dataset's classes:
    ``(full_taxonomy, ids of the kept classes, kept labels, dropped ids, source)``."""
    tree, source, user_given = _resolve_hierarchy(key, root, raw, taxonomy_file)
    leaf = match_classes(tree, raw.keys, source)
    kept = [k for k, x in enumerate(leaf) if x is not None]
    dropped = [raw.ids[k] for k, x in enumerate(leaf) if x is None]
    if not kept:
        raise ValueError(
            f"{key}: none of the dataset's {len(leaf)} classes is a leaf of {source} "
            f"(dataset classes e.g. {raw.ids[:3]}, tree leaves e.g. {list(tree.class_names[:3])})"
        )
    if dropped:
        if not user_given:
            raise ValueError(f"{key}: {len(dropped)} classes are not leaves of {source}: {dropped[:5]}")
        log.warning(
            "%s: %d of %d classes are not leaves of %s and are left out, e.g. %s",
            key,
            len(dropped),
            len(leaf),
            source,
            dropped[:5],
        )
    if len(kept) < tree.num_classes:
        source += f", cut down to the dataset's {len(kept)} classes"
    ids = [raw.ids[k] for k in kept]
    full = tree.subtree([leaf[k] for k in kept])
    full = _display_fallback(full, ids, [raw.data.classnames[k] for k in kept])
    return full, ids, kept, dropped, source


def _relabel(items: Sequence[Item], names: Sequence[str]) -> list[Item]:
    return [Item(it.impath, it.label, names[it.label], it.domain) for it in items]


# ---------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------


def build_hierarchical_dataset(
    name: str,
    root: str,
    num_shots: int = -1,
    subsample: str = "all",
    split_mode: str = "balanced",
    split_seed: int = 0,
    seed: int = 1,
    taxonomy_file: str = "",
    **opts,
) -> HierDataset:
    """Read dataset ``name`` under ``root`` (``$DATA``) with its taxonomy; see the module doc.

    Args:
        name: one of :data:`DATASET_NAMES`.
        root: the data root (``DATASET.ROOT``); ``~`` is expanded.
        num_shots: shots per class for train (val gets ``min(num_shots, 4)``); ``< 1``: all.
        subsample: ``all``, ``base`` or ``new`` (``DATASET.SUBSAMPLE_CLASSES``).
        split_mode: ``balanced``, ``first_half`` or ``reference`` (``DATASET.SUBSAMPLE_SPLIT``;
            ``reference``: the official code's base/novel files, :mod:`hyptree.data.reference`).
        split_seed: seed of the base/novel split (``DATASET.SUBSAMPLE_SEED``; fixed across runs).
        seed: the run seed (``SEED``), for few-shot sampling.
        taxonomy_file: a taxonomy overriding every other source
            (``TRAINER.HYPTREE.TAXONOMY.FILE``): the canonical paths text format, or any file
            ``hyptree.tree.io.read_taxonomy`` detects (``tree.npy``, ``meta.mat``, ``.csv``).
        **opts: per dataset - ``toy``: ``toy_seed``, ``n_train``, ``n_val``, ``n_test``,
            ``image_size`` (generation parameters); ``cifar100``: ``cifar_source``
            (``auto``/``hierarchical``/``archive``); ``imagenet``: ``cache``.

    Raises:
        ValueError: unknown name (the message lists the known ones), bad ``subsample`` or
            ``split_mode``, no class of the dataset in the tree, or inconsistent files.
        FileNotFoundError: missing images, split or hierarchy files; the message shows the
            expected layout.
    """
    key = str(name).strip().lower()
    if key not in _REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASET_NAMES)}")
    if subsample not in SUBSAMPLE_CHOICES:
        raise ValueError(f"subsample = {subsample!r}; expected one of {', '.join(SUBSAMPLE_CHOICES)}")
    if split_mode not in ("balanced", "first_half", REFERENCE_SPLIT):
        raise ValueError(f"split_mode = {split_mode!r}; expected balanced, first_half or {REFERENCE_SPLIT}")
    root = os.path.abspath(os.path.expanduser(str(root)))
    try:
        raw = _REGISTRY[key].load(root, **opts)
    except TypeError as e:
        if "unexpected keyword" in str(e):
            raise TypeError(f"{key}: {e}") from None
        raise
    d = raw.data
    check_items({"train": d.train, "val": d.val, "test": d.test}, len(raw.ids), key)  # labels, files present
    full, ids, kept, dropped, source = _matched_taxonomy(key, root, raw, taxonomy_file)

    # few-shot (all classes, MaPLe's order: train, then val on the same generator)
    # (a reader's val that *is* its test set counts as no val: filled in at the end, unsampled)
    rng = random.Random(seed)
    train = fewshot_sample(d.train, num_shots, seed, rng=rng)
    val = fewshot_sample(d.val, min(num_shots, 4), seed, rng=rng) if d.val is not d.test else []
    splits = {"train": train, "val": val, "test": d.test}
    if dropped:
        splits = _subsample_present(splits, kept)

    # base / novel
    full_labels = np.arange(full.num_classes, dtype=np.int64)
    taxonomy = full
    cuts_file = ""
    if subsample != "all":
        if split_mode == REFERENCE_SPLIT:  # the official base/novel files (hyptree.data.reference)
            full_labels, cuts_file = reference_split(root, PROTECT_DIRS[key], key, subsample, full)
        else:
            base, novel = split_base_novel(full, split_mode, split_seed)
            full_labels = base if subsample == "base" else novel
        taxonomy = full.subtree([int(y) for y in full_labels])
        splits = _subsample_present(splits, full_labels)
        ids = [ids[int(y)] for y in full_labels]

    classnames = [taxonomy.display_names[int(i)] for i in taxonomy.leaves]
    train, val, test = (_relabel(splits[s], classnames) for s in ("train", "val", "test"))
    check_items({"train": train, "val": val, "test": test}, taxonomy.num_classes, key, decode=True)
    if not val:
        val = test
    tree_name = subsample if subsample != "all" else (key if key in TARGET_DATASETS else "all")
    return HierDataset(
        name=key,
        train_x=train,
        val=val,
        test=test,
        taxonomy=taxonomy,
        full_taxonomy=full,
        classnames=classnames,
        tree=tree_name,
        source=source,
        class_ids=ids,
        full_labels=np.asarray(full_labels, dtype=np.int64),
        dropped_classes=dropped,
        cuts_file=cuts_file,
        dropped_reason=f"not a leaf of {source.split(', cut down')[0]}" if dropped else "",
    )


def _subsample_present(splits: dict[str, list[Item]], labels: Sequence[int]) -> dict[str, list[Item]]:
    """``subsample_classes`` on the non-empty lists (a test-only dataset has no train)."""
    present = {k: v for k, v in splits.items() if v}
    out = subsample_classes(present, [int(y) for y in labels])
    return {k: out.get(k, []) for k in splits}
