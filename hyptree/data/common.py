"""What every dataset reader shares: records, layout errors, CoOp splits, few-shot, base/novel.

Everything here returns plain :class:`Item` records. The Dassl dataset wrappers in
``datasets/`` turn them into ``Datum`` objects
(``Datum(impath=i.impath, label=i.label, domain=i.domain, classname=i.classname)``) and
attach a taxonomy; nothing in ``hyptree.data`` imports Dassl.

On-disk layouts follow CoOp / MaPLe (``$DATA/<dataset_dir>/...``) so an existing
``$DATA`` folder prepared for those toolboxes works unchanged. Each dataset module holds
its expected layout (``LAYOUTS``; all of them in ``hyptree.data.LAYOUTS``), quoted by every
"file not found" error (:func:`_layout_error`).

Semantics mirrored from Dassl / CoOp (and tested against them where Dassl is installed):

- CoOp split files (``split_zhou_*.json``): ``{"train"|"val"|"test": [[relpath, label, classname], ...]}``,
  paths relative to the dataset's image folder.
- Few-shot sampling (Dassl ``generate_fewshot_dataset``): classes in order of first
  appearance; a class with at least ``K`` items gets ``K`` drawn without replacement
  (``random.sample``); a smaller class keeps all its items, or with ``repeat=True`` gets
  ``K`` drawn with replacement (``random.choices``). Our RNG is ``random.Random(seed)``,
  so the result equals Dassl's right after ``random.seed(seed)``.
- Base/novel subsampling (CoOp ``subsample_classes``): keep the selected classes and
  relabel them ``0..n-1``; here the selected labels are given explicitly (in the order
  that defines the new labels), so the choice - taxonomy ``balanced`` split or CoOp's
  ``first_half`` - is made elsewhere.

:class:`RawDataset` is what a dataset module's ``load_<dataset>`` hands to
``hyptree.data.build``: the reader's :class:`SplitData`, the candidate leaf names of each
class, and the dataset's own taxonomy source.
"""

from __future__ import annotations

import json
import os
import random
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from hyptree.tree.taxonomy import Taxonomy
from hyptree.utils.files import atomic_write_json

__all__ = [
    "Item",
    "SplitData",
    "RawDataset",
    "IMAGE_EXTENSIONS",
    "COMPLETE_MARKER",
    "SPLIT_KEYS",
    "SUBSAMPLE_CHOICES",
    "list_images",
    "read_coop_split",
    "write_coop_split",
    "per_class_split",
    "group_by_label",
    "fewshot_sample",
    "subsample_classes",
    "plain_keys",
    "parse_label",
    "check_items",
]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
"""File extensions (lower case) counted as images when a folder is scanned."""

COMPLETE_MARKER = ".complete"
"""Written last into a folder of generated images (CIFAR-100 PNGs, the toy set); its absence means redo."""

SUBSAMPLE_CHOICES = ("all", "base", "new")
"""Values of ``subsample`` (``DATASET.SUBSAMPLE_CLASSES``): all classes, the base or the novel half."""

# ---------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Item:
    """One labelled image, the Dassl-free twin of ``dassl.data.datasets.Datum``.

    ``impath`` is an absolute (or root-joined) path, ``label`` the class index in the
    dataset's class order, ``classname`` the class's text name, ``domain`` Dassl's
    domain index (always 0 here).
    """

    impath: str
    label: int
    classname: str
    domain: int = 0


@dataclass
class SplitData:
    """What a dataset reader returns.

    ``classnames[k]`` is the name of label ``k``. ``class_ids[k]`` is the source's own
    identifier of that class where it has one (ImageNet wnid, SUN397 folder
    ``a/apartment_building/outdoor``, Rare Species folder name), for cutting a taxonomy
    down with ``Taxonomy.subtree``. ``hierarchy_lines`` holds canonical ``a/b/leaf``
    lines (leaf = ``classnames[k]``) when the source itself carries the hierarchy
    (CIFAR-100 coarse/fine, folder trees, the toy set); ``None`` otherwise.
    Test-only datasets (ImageNet-V2/-Sketch/-A/-R) have empty ``train`` and ``val``.
    """

    train: list[Item]
    val: list[Item]
    test: list[Item]
    classnames: list[str]
    class_ids: list[str] | None = None
    hierarchy_lines: list[str] | None = None
    extra: dict[str, object] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------
# Layout errors (``layout`` is the text of a dataset module's LAYOUTS entry)
# ---------------------------------------------------------------------------------------


def _layout_error(what: str, path: str, layout: str, hint: str = "") -> FileNotFoundError:
    msg = f"{what} not found: {path}\nExpected layout:\n{layout}"
    if hint:
        msg += "\n" + hint
    return FileNotFoundError(msg)


def _require_file(path: str, layout: str, what: str = "file", hint: str = "") -> None:
    if not os.path.isfile(path):
        raise _layout_error(what, path, layout, hint)


def _require_dir(path: str, layout: str, what: str = "folder", hint: str = "") -> None:
    if not os.path.isdir(path):
        raise _layout_error(what, path, layout, hint)


# ---------------------------------------------------------------------------------------
# Small file helpers
# ---------------------------------------------------------------------------------------


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def list_images(folder: str) -> list[str]:
    """Sorted non-hidden image file names (not paths) directly inside ``folder``.

    Uses ``os.scandir`` (no per-file ``stat`` on most file systems), which keeps a
    1.2M-image ImageNet scan to seconds.
    """
    with os.scandir(folder) as it:
        names = [e.name for e in it if _is_image_name(e.name) and e.is_file()]
    names.sort()
    return names


def _list_subdirs(folder: str) -> list[str]:
    with os.scandir(folder) as it:
        names = [e.name for e in it if not e.name.startswith(".") and e.is_dir()]
    names.sort()
    return names


# ---------------------------------------------------------------------------------------
# CoOp split files
# ---------------------------------------------------------------------------------------

SPLIT_KEYS = ("train", "val", "test")


def read_coop_split(split_json: str, image_dir: str) -> dict[str, list[Item]]:
    """Read a CoOp split file into ``{"train", "val", "test"}`` lists of :class:`Item`.

    The file maps each split to a list of ``[relative_path, label, classname]``;
    ``relative_path`` is joined to ``image_dir``. A missing split key reads as empty.
    """
    if not os.path.isfile(split_json):
        raise FileNotFoundError(
            f"split file not found: {split_json}\n"
            'Expected a CoOp split json: {"train": [[relative_path, label, classname], ...], '
            '"val": [...], "test": [...]}, paths relative to ' + image_dir
        )
    with open(split_json, encoding="utf-8-sig") as f:
        try:
            split = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{split_json}: not valid JSON ({e})") from e
    if not isinstance(split, dict):
        raise ValueError(f"{split_json}: expected a JSON object with keys train/val/test")
    out: dict[str, list[Item]] = {}
    for key in SPLIT_KEYS:
        rows = split.get(key, [])
        items = []
        for i, row in enumerate(rows):
            if not (isinstance(row, (list, tuple)) and len(row) == 3):
                raise ValueError(
                    f"{split_json}: entry {i} of '{key}' is {row!r}, expected [relative_path, label, classname]"
                )
            rel, label, classname = row
            label = parse_label(label, f"{split_json}: entry {i} of '{key}'")
            items.append(Item(os.path.join(image_dir, rel), label, str(classname)))
        out[key] = items
    return out


def parse_label(value, where: str) -> int:
    """A class label: an ``int`` or a string of digits, ``>= 0``; ``ValueError`` naming
    ``where`` otherwise (``2.7`` is not read as 2, ``-1`` is not a label)."""
    text = value.strip() if isinstance(value, str) else None
    if isinstance(value, bool) or not (isinstance(value, int) or (text and text.lstrip("-").isdigit())):
        raise ValueError(f"{where}: label {value!r} is not an integer")
    y = int(value)
    if y < 0:
        raise ValueError(f"{where}: label {y} is negative; labels are 0 .. number of classes - 1")
    return y


def check_items(splits: Mapping[str, Sequence[Item]], num_classes: int, source: str, decode: bool = False) -> None:
    """Check split entries before any training: labels in ``0 .. num_classes - 1``, files
    present and, with ``decode``, readable as images (PIL ``verify``, which reads every PNG
    chunk: a truncated file fails). Errors name the file, split and ``source``; a progress
    bar is shown for more than 2,000 files."""
    for split, items in splits.items():
        for i, it in enumerate(items):
            if not 0 <= int(it.label) < num_classes:
                raise ValueError(
                    f"{source}: {split} entry {i} ({it.impath}) has label {it.label}, outside 0..{num_classes - 1}"
                )
    todo = [(split, it.impath) for split, items in splits.items() for it in items]
    missing = [(s, p) for s, p in todo if not os.path.isfile(p)]
    if missing:
        s, p = missing[0]
        raise FileNotFoundError(f"{source}: {len(missing)} image file(s) missing, e.g. {p} ({s} split)")
    if not decode:
        return
    from PIL import Image
    from tqdm import tqdm

    seen = set()
    for s, p in tqdm(todo, desc=f"checking {len(todo)} images", unit="img", disable=len(todo) <= 2000):
        if p in seen:
            continue
        seen.add(p)
        try:
            with Image.open(p) as im:
                im.verify()
        except Exception as e:
            raise ValueError(f"{source}: {p} ({s} split) is not a readable image ({type(e).__name__}: {e})") from None


def write_coop_split(splits: Mapping[str, Sequence[Item]], split_json: str, image_dir: str) -> None:
    """Write ``splits`` (keys train/val/test) as a CoOp split file, paths relative to ``image_dir``.

    Written atomically (temporary file + rename). Raises ``ValueError`` for an item
    outside ``image_dir``.
    """
    base = os.path.abspath(image_dir)
    obj = {}
    for key in SPLIT_KEYS:
        rows = []
        for item in splits.get(key, []):
            full = os.path.abspath(item.impath)
            rel = os.path.relpath(full, base)
            if rel.startswith(".."):
                raise ValueError(f"{item.impath} is not inside the image folder {image_dir}")
            rows.append([rel.replace(os.sep, "/"), int(item.label), item.classname])
        obj[key] = rows
    atomic_write_json(split_json, obj)


def group_by_label(items: Iterable[Item]) -> OrderedDict[int, list[Item]]:
    """Items grouped by label, groups in order of first appearance (as Dassl does)."""
    groups: OrderedDict[int, list[Item]] = OrderedDict()
    for item in items:
        groups.setdefault(item.label, []).append(item)
    return groups


def per_class_split(
    items: Sequence[Item], p_train: float = 0.5, p_val: float = 0.2, seed: int = 1
) -> dict[str, list[Item]]:
    """Split each class's items into train/val/test, like CoOp's ``read_and_split_data``.

    Per class (in label order), the items are shuffled with ``random.Random(seed)`` and cut
    into ``round(n * p_train)`` train, ``round(n * p_val)`` val and the rest test. Every
    part must be non-empty (``ValueError`` naming the class otherwise), as in CoOp.
    """
    if not (0 < p_train < 1 and 0 < p_val < 1 and p_train + p_val < 1):
        raise ValueError(f"need 0 < p_train, p_val and p_train + p_val < 1; got {p_train}, {p_val}")
    rng = random.Random(seed)
    out: dict[str, list[Item]] = {k: [] for k in SPLIT_KEYS}
    groups = group_by_label(items)
    for label in sorted(groups):
        members = list(groups[label])
        rng.shuffle(members)
        n = len(members)
        n_train, n_val = round(n * p_train), round(n * p_val)
        if n_train < 1 or n_val < 1 or n - n_train - n_val < 1:
            raise ValueError(
                f"class {label} ({members[0].classname!r}) has {n} images: too few for a "
                f"{p_train:.0%}/{p_val:.0%}/rest train/val/test split with every part non-empty"
            )
        out["train"] += members[:n_train]
        out["val"] += members[n_train : n_train + n_val]
        out["test"] += members[n_train + n_val :]
    return out


def _class_table(splits: Mapping[str, Sequence[Item]], image_dir: str, source: str) -> tuple[list[str], list[str]]:
    """Per label: class name and image folder (relative to ``image_dir``), checked consistent."""
    names: dict[int, str] = {}
    folders: dict[int, str] = {}
    for key in SPLIT_KEYS:
        for it in splits.get(key, []):
            folder = os.path.relpath(os.path.dirname(it.impath), image_dir).replace(os.sep, "/")
            if (
                names.setdefault(it.label, it.classname) != it.classname
                or folders.setdefault(it.label, folder) != folder
            ):
                raise ValueError(f"{source}: label {it.label} has two class names or folders")
    n = len(names)
    if sorted(names) != list(range(n)):
        raise ValueError(f"{source}: labels are not 0..{n - 1}")
    return [names[k] for k in range(n)], [folders[k] for k in range(n)]


# ---------------------------------------------------------------------------------------
# Few-shot sampling and base/novel subsets
# ---------------------------------------------------------------------------------------


def fewshot_sample(
    items: Sequence[Item], num_shots: int, seed: int, repeat: bool = False, rng: random.Random | None = None
) -> list[Item]:
    """Dassl's per-class few-shot sampler with its own seeded RNG.

    ``num_shots < 1`` returns all items (a new list, same order). Otherwise, for each
    class in order of first appearance: ``K`` items drawn without replacement when the
    class has at least ``K``; else all of them (``repeat=False``, Dassl's default) or ``K``
    drawn with replacement (``repeat=True``). Identical to
    ``random.seed(seed); DatasetBase.generate_fewshot_dataset(items, num_shots=K, repeat=...)``.

    ``rng``: draw from this generator instead of a new ``random.Random(seed)`` (``seed`` is
    then unused). Passing one generator to consecutive calls reproduces consecutive
    Dassl calls after one ``random.seed`` (MaPLe samples train, then val, that way).
    """
    if num_shots < 1:
        return list(items)
    if rng is None:
        rng = random.Random(seed)
    out: list[Item] = []
    for members in group_by_label(items).values():
        if len(members) >= num_shots:
            out.extend(rng.sample(members, num_shots))
        elif repeat:
            out.extend(rng.choices(members, k=num_shots))
        else:
            out.extend(members)
    return out


ItemLists = Sequence[Sequence[Item]] | Mapping[str, Sequence[Item]]


def subsample_classes(item_lists: ItemLists, labels: Sequence[int]):
    """Keep only the classes ``labels`` and relabel them ``0..len(labels)-1`` in that order.

    ``item_lists`` is a list/tuple of item lists (e.g. ``[train, val, test]``) or a dict of
    them; the same kind of container comes back. Class names are kept. Pass the base or
    novel label ids of a taxonomy split (``labels[k]`` becomes new label ``k``, so the
    order must match the sub-taxonomy's leaf order). Raises ``ValueError`` on repeated
    labels or a label that occurs in none of the lists.
    """
    labels = [int(y) for y in labels]
    if len(set(labels)) != len(labels):
        raise ValueError(f"subsample_classes: repeated labels in {labels}")
    relabel = {y: k for k, y in enumerate(labels)}
    if isinstance(item_lists, Mapping):
        keys, lists = list(item_lists.keys()), list(item_lists.values())
    else:
        keys, lists = None, list(item_lists)
    seen = set()
    new_lists = []
    for lst in lists:
        new = []
        for it in lst:
            k = relabel.get(it.label)
            if k is not None:
                seen.add(it.label)
                new.append(Item(it.impath, k, it.classname, it.domain))
        new_lists.append(new)
    missing = [y for y in labels if y not in seen]
    if missing:
        raise ValueError(f"subsample_classes: labels {missing[:10]} occur in none of the given lists")
    if keys is not None:
        return dict(zip(keys, new_lists))
    return type(item_lists)(new_lists) if isinstance(item_lists, tuple) else new_lists


# ---------------------------------------------------------------------------------------
# What a dataset module hands to the builder
# ---------------------------------------------------------------------------------------


@dataclass
class RawDataset:
    """A read dataset before its taxonomy is resolved (``hyptree.data.build``)."""

    data: SplitData
    ids: list[str]  # per label: the source's class id
    keys: list[list[str]]  # per label: candidate leaf names, best first
    native: Callable[[], tuple[Taxonomy, str]]  # the dataset's own hierarchy and a description


def _unique(xs) -> list[str]:
    out = []
    for x in xs:
        if x and x not in out:
            out.append(x)
    return out


def plain_keys(d: SplitData) -> tuple[list[str], list[list[str]]]:
    """Per class: its id (``class_ids`` or the class name) and candidate leaf names (id, name)."""
    ids = list(d.class_ids) if d.class_ids else list(d.classnames)
    return ids, [_unique([i, n]) for i, n in zip(ids, d.classnames)]
