"""Dataset logic without Dassl: image lists, splits, few-shot sampling, base/novel relabelling.

Everything here returns plain :class:`Item` records. The Dassl dataset wrappers in
``datasets/`` turn them into ``Datum`` objects
(``Datum(impath=i.impath, label=i.label, domain=i.domain, classname=i.classname)``) and
attach a taxonomy; nothing in this module imports Dassl.

On-disk layouts follow CoOp / MaPLe (``$DATA/<dataset_dir>/...``) so an existing
``$DATA`` folder prepared for those toolboxes works unchanged. The expected layout of
each dataset is in :data:`LAYOUTS` and is quoted by every "file not found" error.

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
"""
from __future__ import annotations

import io
import json
import os
import pickle
import random
import tarfile
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Collection, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from hyptree.utils.files import atomic_open, atomic_write_bytes, atomic_write_json

__all__ = [
    "Item",
    "SplitData",
    "LAYOUTS",
    "IMAGE_EXTENSIONS",
    "list_images",
    "read_coop_split",
    "write_coop_split",
    "per_class_split",
    "group_by_label",
    "fewshot_sample",
    "subsample_classes",
    "read_image_folder_tree",
    "read_protect_list",
    "read_protect_split_names",
    "extract_cifar100",
    "read_cifar100_hierarchical",
    "read_sun397",
    "sun397_hierarchy_file",
    "read_imagenet_classnames",
    "read_imagenet",
    "read_imagenet_v2",
    "read_imagenet_sketch",
    "read_imagenet_a",
    "read_imagenet_r",
    "read_rare_species",
]

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)
"""File extensions (lower case) counted as images when a folder is scanned."""

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

    train: List[Item]
    val: List[Item]
    test: List[Item]
    classnames: List[str]
    class_ids: Optional[List[str]] = None
    hierarchy_lines: Optional[List[str]] = None
    extra: Dict[str, object] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------
# Layouts (quoted by errors; docs_data_section.md shows the same trees)
# ---------------------------------------------------------------------------------------

LAYOUTS: Dict[str, str] = {
    "cifar100": """\
$DATA/cifar-100/
  cifar-100-python.tar.gz          the official python archive, or its extracted folder:
  cifar-100-python/{meta,train,test}
  cifar-100-images/                written once by extract_cifar100 (do not edit)
    train/<fine_name>/<index>.png  test/<fine_name>/<index>.png
    split_cifar100.json  .complete""",
    "cifar100_hier": """\
$DATA/cifar-100-hierarchical/      ProTeCt's hierarchical CIFAR-100, extracted
  <node>/<node>/.../<leaf>/train_*.png and test_*.png
  (a leaf is a folder with no sub-folders; folder names are unique tree-wide)""",
    "sun397": """\
$DATA/sun397/
  SUN397/<letter>/<class>[/<sub>]/*.jpg   e.g. SUN397/a/abbey/sun_*.jpg
  split_zhou_SUN397.json           CoOp split (or ClassName.txt + Training_01.txt +
                                   Testing_01.txt from Partitions.zip to create it)
  hierarchy_three_levels/three_levels.csv   SUN's three-level hierarchy table""",
    "imagenet": """\
$DATA/imagenet/
  images/train/<wnid>/*.JPEG       1,000 folders n01440764, n01443537, ...
  images/val/<wnid>/*.JPEG         validation images sorted into wnid folders
  classnames.txt                   one line per class: '<wnid> <class name>'""",
    "imagenetv2": """\
$DATA/imagenetv2/
  imagenetv2-matched-frequency-format-val/<k>/*.jpeg   k = 0..999, the k-th line of classnames.txt
  classnames.txt                   a copy of $DATA/imagenet/classnames.txt""",
    "imagenet_sketch": """\
$DATA/imagenet-sketch/
  images/<wnid>/*.JPEG             1,000 folders
  classnames.txt                   a copy of $DATA/imagenet/classnames.txt""",
    "imagenet_a": """\
$DATA/imagenet-adversarial/
  imagenet-a/<wnid>/*.jpg          200 folders (README.txt is ignored)
  classnames.txt                   a copy of $DATA/imagenet/classnames.txt""",
    "imagenet_r": """\
$DATA/imagenet-rendition/
  imagenet-r/<wnid>/*.jpg          200 folders (README.txt is ignored)
  classnames.txt                   a copy of $DATA/imagenet/classnames.txt""",
    "rare_species": """\
$DATA/rare_species/
  images/<phylum>_<class>_<order>_<family>_<genus>_<species>/*.jpg
  split_hyptree_RareSpecies.json   CoOp-format split, created on first use (seeded)""",
    "toy_hier": """\
$DATA/toy_hier/                    generated by hyptree.data.toy.make_toy_dataset
  images/{train,val,test}/<leaf>/*.png
  classnames.txt  hierarchy.txt  split_toy_hier.json  .complete""",
}


def _layout_error(what: str, path: str, dataset: str, hint: str = "") -> FileNotFoundError:
    msg = f"{what} not found: {path}\nExpected layout:\n{LAYOUTS[dataset]}"
    if hint:
        msg += "\n" + hint
    return FileNotFoundError(msg)


def _require_file(path: str, dataset: str, what: str = "file", hint: str = "") -> None:
    if not os.path.isfile(path):
        raise _layout_error(what, path, dataset, hint)


def _require_dir(path: str, dataset: str, what: str = "folder", hint: str = "") -> None:
    if not os.path.isdir(path):
        raise _layout_error(what, path, dataset, hint)


# ---------------------------------------------------------------------------------------
# Small file helpers
# ---------------------------------------------------------------------------------------


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def list_images(folder: str) -> List[str]:
    """Sorted non-hidden image file names (not paths) directly inside ``folder``.

    Uses ``os.scandir`` (no per-file ``stat`` on most file systems), which keeps a
    1.2M-image ImageNet scan to seconds.
    """
    with os.scandir(folder) as it:
        names = [e.name for e in it if _is_image_name(e.name) and e.is_file()]
    names.sort()
    return names


def _list_subdirs(folder: str) -> List[str]:
    with os.scandir(folder) as it:
        names = [e.name for e in it if not e.name.startswith(".") and e.is_dir()]
    names.sort()
    return names


# ---------------------------------------------------------------------------------------
# CoOp split files
# ---------------------------------------------------------------------------------------

SPLIT_KEYS = ("train", "val", "test")


def read_coop_split(split_json: str, image_dir: str) -> Dict[str, List[Item]]:
    """Read a CoOp split file into ``{"train", "val", "test"}`` lists of :class:`Item`.

    The file maps each split to a list of ``[relative_path, label, classname]``;
    ``relative_path`` is joined to ``image_dir``. A missing split key reads as empty.
    """
    if not os.path.isfile(split_json):
        raise FileNotFoundError(
            f"split file not found: {split_json}\n"
            "Expected a CoOp split json: {\"train\": [[relative_path, label, classname], ...], "
            "\"val\": [...], \"test\": [...]}, paths relative to " + image_dir
        )
    with open(split_json, "r", encoding="utf-8") as f:
        try:
            split = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{split_json}: not valid JSON ({e})") from e
    if not isinstance(split, dict):
        raise ValueError(f"{split_json}: expected a JSON object with keys train/val/test")
    out: Dict[str, List[Item]] = {}
    for key in SPLIT_KEYS:
        rows = split.get(key, [])
        items = []
        for i, row in enumerate(rows):
            if not (isinstance(row, (list, tuple)) and len(row) == 3):
                raise ValueError(
                    f"{split_json}: entry {i} of '{key}' is {row!r}, "
                    "expected [relative_path, label, classname]"
                )
            rel, label, classname = row
            items.append(Item(os.path.join(image_dir, rel), int(label), str(classname)))
        out[key] = items
    return out


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


def group_by_label(items: Iterable[Item]) -> "OrderedDict[int, List[Item]]":
    """Items grouped by label, groups in order of first appearance (as Dassl does)."""
    groups: "OrderedDict[int, List[Item]]" = OrderedDict()
    for item in items:
        groups.setdefault(item.label, []).append(item)
    return groups


def per_class_split(
    items: Sequence[Item], p_train: float = 0.5, p_val: float = 0.2, seed: int = 1
) -> Dict[str, List[Item]]:
    """Split each class's items into train/val/test, like CoOp's ``read_and_split_data``.

    Per class (in label order), the items are shuffled with ``random.Random(seed)`` and cut
    into ``round(n * p_train)`` train, ``round(n * p_val)`` val and the rest test. Every
    part must be non-empty (``ValueError`` naming the class otherwise), as in CoOp.
    """
    if not (0 < p_train < 1 and 0 < p_val < 1 and p_train + p_val < 1):
        raise ValueError(f"need 0 < p_train, p_val and p_train + p_val < 1; got {p_train}, {p_val}")
    rng = random.Random(seed)
    out: Dict[str, List[Item]] = {k: [] for k in SPLIT_KEYS}
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


# ---------------------------------------------------------------------------------------
# Few-shot sampling and base/novel subsets
# ---------------------------------------------------------------------------------------


def fewshot_sample(
    items: Sequence[Item], num_shots: int, seed: int, repeat: bool = False, rng: Optional[random.Random] = None
) -> List[Item]:
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
    out: List[Item] = []
    for members in group_by_label(items).values():
        if len(members) >= num_shots:
            out.extend(rng.sample(members, num_shots))
        elif repeat:
            out.extend(rng.choices(members, k=num_shots))
        else:
            out.extend(members)
    return out


ItemLists = Union[Sequence[Sequence[Item]], Mapping[str, Sequence[Item]]]


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
# Generic folder trees and ProTeCt lists
# ---------------------------------------------------------------------------------------

Keep = Union[None, Callable[[str], bool], Collection[str]]


def _keep_fn(keep: Keep) -> Callable[[str], bool]:
    if keep is None:
        return lambda name: True
    if callable(keep):
        return keep
    names = set(keep)
    return lambda name: name in names


def read_image_folder_tree(
    root: str, class_order: Optional[Sequence[str]] = None, keep: Keep = None
) -> Tuple[List[Item], List[str]]:
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
    leaves: Dict[str, Tuple[str, List[str]]] = {}  # name -> (relative path, image names)
    seen_dirs: Dict[str, str] = {}
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
                f"{full}: {len(images)} image(s) in a folder that has sub-folders; "
                "images must sit in leaf folders only"
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
    items: List[Item] = []
    lines: List[str] = []
    for label, name in enumerate(order):
        rel, images = leaves[name]
        lines.append(rel)
        folder = os.path.join(root, rel)
        items.extend(Item(os.path.join(folder, im), label, name) for im in images)
    return items, lines


def read_protect_list(
    list_file: str, image_root: str, classnames: Optional[Sequence[str]] = None
) -> List[Item]:
    """Read a ProTeCt data list ``gt_{split}.txt`` (lines ``relative_path,label,index``).

    ``relative_path`` is joined to ``image_root`` (for SUN: ``$DATA/sun397/SUN397``; ImageNet:
    ``$DATA/imagenet/images``; CIFAR-100: the hierarchical folder). Labels index ProTeCt's
    leaf order; ``classnames[label]`` names them (default: the image's folder name).
    Paths may contain commas, so a line is split at its last two commas.
    """
    if not os.path.isfile(list_file):
        raise FileNotFoundError(
            f"ProTeCt data list not found: {list_file}\n"
            "Expected lines 'relative/path.jpg,label,index' (ProTeCt prepro/data/<dataset>/gt_<split>.txt)"
        )
    items = []
    with open(list_file, "r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.rsplit(",", 2)
            try:
                rel, label = parts[0], int(parts[1])
                int(parts[2])
            except (IndexError, ValueError):
                raise ValueError(f"{list_file}:{lineno}: expected 'path,label,index', got {line!r}")
            if classnames is not None:
                if not 0 <= label < len(classnames):
                    raise ValueError(
                        f"{list_file}:{lineno}: label {label} outside 0..{len(classnames) - 1}"
                    )
                name = classnames[label]
            else:
                name = os.path.basename(os.path.dirname(rel))
            items.append(Item(os.path.join(image_root, rel), label, name))
    return items


def read_protect_split_names(split_json: str) -> List[str]:
    """The image file names of a ProTeCt split file (``prepro/splits/<dataset>/<split>.json``, key ``fnames``)."""
    if not os.path.isfile(split_json):
        raise FileNotFoundError(f"ProTeCt split file not found: {split_json} (expected {{\"fnames\": [...]}})")
    with open(split_json, "r", encoding="utf-8") as f:
        obj = json.load(f)
    if not isinstance(obj, dict) or "fnames" not in obj:
        raise ValueError(f"{split_json}: expected a JSON object with key 'fnames'")
    return list(obj["fnames"])


# ---------------------------------------------------------------------------------------
# CIFAR-100
# ---------------------------------------------------------------------------------------

CIFAR100_DIR = "cifar-100"
CIFAR100_ARCHIVE = "cifar-100-python.tar.gz"
CIFAR100_EXTRACTED = "cifar-100-python"
CIFAR100_IMAGES = "cifar-100-images"
CIFAR100_SPLIT = "split_cifar100.json"
COMPLETE_MARKER = ".complete"


def _load_cifar100_pickles(dataset_dir: str) -> Dict[str, dict]:
    """The ``meta``, ``train`` and ``test`` dicts of the official python version.

    Read from ``cifar-100-python/`` if extracted, else straight from the tar.gz (without
    writing the pickles to disk). Keys stay bytes, as the archive was pickled by Python 2.
    """
    names = ("meta", "train", "test")
    extracted = os.path.join(dataset_dir, CIFAR100_EXTRACTED)
    archive = os.path.join(dataset_dir, CIFAR100_ARCHIVE)
    out = {}
    if all(os.path.isfile(os.path.join(extracted, n)) for n in names):
        for n in names:
            with open(os.path.join(extracted, n), "rb") as f:
                out[n] = pickle.load(f, encoding="bytes")
        return out
    if not os.path.isfile(archive):
        raise _layout_error("CIFAR-100 archive or extracted folder", archive, "cifar100")
    with tarfile.open(archive, "r:gz") as tar:
        for n in names:
            try:
                member = tar.getmember(f"{CIFAR100_EXTRACTED}/{n}")
            except KeyError:
                raise ValueError(f"{archive}: member {CIFAR100_EXTRACTED}/{n} missing") from None
            out[n] = pickle.load(io.BytesIO(tar.extractfile(member).read()), encoding="bytes")
    return out


def _decode(names) -> List[str]:
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]


def extract_cifar100(root: str) -> SplitData:
    """CIFAR-100 as image files: write PNGs once, then read the index.

    ``root`` is ``$DATA``; files live in ``$DATA/cifar-100`` (:data:`LAYOUTS` ``cifar100``).
    On first use the official pickles (rows of 3072 bytes, channel-major 3x32x32) are
    written to ``cifar-100-images/{train,test}/<fine_name>/<index>.png`` (``index`` = row
    in the official array, 5 digits), then a CoOp-format index ``split_cifar100.json``,
    then the ``.complete`` marker; later calls only read the index. An interrupted
    extraction (no marker) is redone from scratch.

    Labels are the official fine-label order; ``classnames`` the fine names;
    ``hierarchy_lines`` are ``coarse/fine`` in label order (the fine->coarse map is taken
    from the training labels, since ``meta`` holds names only); ``val`` is empty
    (CIFAR-100 has no validation split; wrappers evaluate on ``test``).
    """
    dataset_dir = os.path.join(root, CIFAR100_DIR)
    image_dir = os.path.join(dataset_dir, CIFAR100_IMAGES)
    split_json = os.path.join(image_dir, CIFAR100_SPLIT)
    marker = os.path.join(image_dir, COMPLETE_MARKER)
    if not os.path.isfile(marker):
        _write_cifar100_images(dataset_dir, image_dir, split_json, marker)
    with open(marker, "r", encoding="utf-8") as f:
        info = json.load(f)
    splits = read_coop_split(split_json, image_dir)
    return SplitData(
        train=splits["train"],
        val=[],
        test=splits["test"],
        classnames=list(info["fine_names"]),
        hierarchy_lines=list(info["hierarchy_lines"]),
        extra={"coarse_names": list(info["coarse_names"]), "fine_to_coarse": list(info["fine_to_coarse"])},
    )


def _write_cifar100_images(dataset_dir: str, image_dir: str, split_json: str, marker: str) -> None:
    from PIL import Image

    data = _load_cifar100_pickles(dataset_dir)
    meta = data["meta"]
    fine_names = _decode(meta[b"fine_label_names"])
    coarse_names = _decode(meta[b"coarse_label_names"])
    fine_to_coarse = [-1] * len(fine_names)
    for split in ("train", "test"):
        d = data[split]
        for f_lab, c_lab in zip(d[b"fine_labels"], d[b"coarse_labels"]):
            if fine_to_coarse[f_lab] == -1:
                fine_to_coarse[f_lab] = int(c_lab)
            elif fine_to_coarse[f_lab] != c_lab:
                raise ValueError(f"CIFAR-100: fine class {fine_names[f_lab]!r} has two coarse labels")
    if -1 in fine_to_coarse:
        raise ValueError("CIFAR-100: some fine classes have no images")
    splits: Dict[str, List[Item]] = {"train": [], "val": [], "test": []}
    for split in ("train", "test"):
        d = data[split]
        rows = np.asarray(d[b"data"], dtype=np.uint8)
        labels = list(d[b"fine_labels"])
        if rows.ndim != 2 or rows.shape[1] != 3072 or len(labels) != rows.shape[0]:
            raise ValueError(f"CIFAR-100 {split}: expected data (N, 3072) and N labels, got {rows.shape}")
        for name in fine_names:
            os.makedirs(os.path.join(image_dir, split, name), exist_ok=True)
        pixels = rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # channel-major -> HWC
        for idx, (img, lab) in enumerate(zip(pixels, labels)):
            path = os.path.join(image_dir, split, fine_names[lab], f"{idx:05d}.png")
            # temporary name + rename: a concurrent run never reads a half-written file
            with atomic_open(path, "wb") as f:
                Image.fromarray(np.ascontiguousarray(img)).save(f, format="PNG")
            splits[split].append(Item(path, int(lab), fine_names[lab]))
    write_coop_split(splits, split_json, image_dir)
    info = {
        "fine_names": fine_names,
        "coarse_names": coarse_names,
        "fine_to_coarse": fine_to_coarse,
        "hierarchy_lines": [f"{coarse_names[c]}/{f}" for f, c in zip(fine_names, fine_to_coarse)],
        "counts": {s: len(splits[s]) for s in ("train", "test")},
    }
    atomic_write_json(marker, info)


CIFAR100_HIER_DIR = "cifar-100-hierarchical"


def read_cifar100_hierarchical(root: str, class_order: Optional[Sequence[str]] = None) -> SplitData:
    """ProTeCt's hierarchical CIFAR-100 (``$DATA/cifar-100-hierarchical``, a folder tree).

    Train and test images share the leaf folders and are told apart by their file-name
    prefix (``train_`` / ``test_``), as in ProTeCt's split files. Labels follow
    ``class_order`` (ProTeCt's ``leaf_nodes.npy`` order) or the sorted leaf paths;
    ``hierarchy_lines`` are the folder paths.
    """
    tree = os.path.join(root, CIFAR100_HIER_DIR)
    _require_dir(tree, "cifar100_hier")
    train, lines = read_image_folder_tree(tree, class_order, keep=lambda n: n.startswith("train_"))
    test, _ = read_image_folder_tree(tree, class_order, keep=lambda n: n.startswith("test_"))
    classnames = [line.rsplit("/", 1)[-1] for line in lines]
    return SplitData(train=train, val=[], test=test, classnames=classnames, hierarchy_lines=lines)


# ---------------------------------------------------------------------------------------
# SUN397
# ---------------------------------------------------------------------------------------

SUN397_DIR = "sun397"
SUN397_SPLIT = "split_zhou_SUN397.json"
SUN397_HIERARCHY = os.path.join("hierarchy_three_levels", "three_levels.csv")


def _sun_classname(folder: str) -> str:
    """CoOp's text name of a SUN397 folder: drop the letter, reverse the rest
    (``a/apartment_building/outdoor`` -> ``outdoor apartment_building``)."""
    parts = folder.strip("/").split("/")[1:]
    return " ".join(parts[::-1])


def _read_sun_listing(dataset_dir: str, image_dir: str, name: str, cname2lab: Dict[str, int]) -> List[Item]:
    path = os.path.join(dataset_dir, name)
    _require_file(path, "sun397")
    items = []
    with open(path, "r", encoding="utf-8") as f:
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
    _require_file(names_file, "sun397", "split_zhou_SUN397.json and ClassName.txt",
                  "Download split_zhou_SUN397.json (CoOp) or extract Partitions.zip into sun397/.")
    with open(names_file, "r", encoding="utf-8") as f:
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
    _require_dir(image_dir, "sun397", "SUN397 image folder")
    if not os.path.isfile(split_json):
        _create_sun397_split(dataset_dir, image_dir, split_json, seed)
    splits = read_coop_split(split_json, image_dir)
    classnames, class_ids = _class_table(splits, image_dir, split_json)
    return SplitData(splits["train"], splits["val"], splits["test"], classnames, class_ids)


def _class_table(splits: Mapping[str, Sequence[Item]], image_dir: str, source: str) -> Tuple[List[str], List[str]]:
    """Per label: class name and image folder (relative to ``image_dir``), checked consistent."""
    names: Dict[int, str] = {}
    folders: Dict[int, str] = {}
    for key in SPLIT_KEYS:
        for it in splits.get(key, []):
            folder = os.path.relpath(os.path.dirname(it.impath), image_dir).replace(os.sep, "/")
            if names.setdefault(it.label, it.classname) != it.classname or \
                    folders.setdefault(it.label, folder) != folder:
                raise ValueError(f"{source}: label {it.label} has two class names or folders")
    n = len(names)
    if sorted(names) != list(range(n)):
        raise ValueError(f"{source}: labels are not 0..{n - 1}")
    return [names[k] for k in range(n)], [folders[k] for k in range(n)]


def sun397_hierarchy_file(root: str) -> str:
    """Path of SUN's three-level hierarchy table, ``$DATA/sun397/hierarchy_three_levels/three_levels.csv``.

    Raises ``FileNotFoundError`` with the preparation steps when it is absent.
    """
    path = os.path.join(root, SUN397_DIR, SUN397_HIERARCHY)
    _require_file(path, "sun397", "SUN397 hierarchy table",
                  "Get hierarchy_three_levels.zip from the SUN database site, unzip it into "
                  "sun397/ and, if it holds only a spreadsheet, save its sheet as three_levels.csv.")
    return path


# ---------------------------------------------------------------------------------------
# ImageNet family
# ---------------------------------------------------------------------------------------

IMAGENET_CACHE = "preprocessed_hyptree.pkl"
_CACHE_VERSION = 1


def read_imagenet_classnames(path: str) -> "OrderedDict[str, str]":
    """``classnames.txt`` (lines ``<wnid> <class name>``) as an ordered ``wnid -> name`` dict."""
    if not os.path.isfile(path):
        raise _layout_error("classnames.txt", path, "imagenet")
    out: "OrderedDict[str, str]" = OrderedDict()
    with open(path, "r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            wnid, _, name = line.partition(" ")
            if not name.strip():
                raise ValueError(f"{path}:{lineno}: expected '<wnid> <class name>', got {line!r}")
            if wnid in out:
                raise ValueError(f"{path}:{lineno}: wnid {wnid} listed twice")
            out[wnid] = name.strip()
    if not out:
        raise ValueError(f"{path}: no classes")
    return out


def _variant_classnames(root: str, dataset_dir: str, dataset: str) -> "OrderedDict[str, str]":
    """The variant's own ``classnames.txt`` (MaPLe's layout) or, failing that, ImageNet's."""
    own = os.path.join(root, dataset_dir, "classnames.txt")
    shared = os.path.join(root, "imagenet", "classnames.txt")
    for path in (own, shared):
        if os.path.isfile(path):
            return read_imagenet_classnames(path)
    raise _layout_error("classnames.txt", f"{own} (or {shared})", dataset)


def _scan_wnid_folders(
    image_dir: str, wnid_to_name: Mapping[str, str], dataset: str, require_all: bool
) -> List[Tuple[str, List[str]]]:
    """``[(wnid, sorted image names), ...]`` for the folders ``image_dir/<wnid>/``, in
    ``wnid_to_name`` order (which defines the labels). Unknown folders are an error; so
    are missing ones when ``require_all``."""
    _require_dir(image_dir, dataset, "image folder")
    present = set(_list_subdirs(image_dir))
    unknown = sorted(present - set(wnid_to_name))
    if unknown:
        raise ValueError(f"{image_dir}: folders not in classnames.txt: {unknown[:5]}")
    wnids = [w for w in wnid_to_name if w in present]
    if require_all and len(wnids) != len(wnid_to_name):
        missing = [w for w in wnid_to_name if w not in present]
        raise _layout_error(f"class folder(s) {missing[:3]} ({len(missing)} missing)", image_dir, dataset)
    if not wnids:
        raise _layout_error("class folders", image_dir, dataset)
    return [(w, list_images(os.path.join(image_dir, w))) for w in wnids]


def read_imagenet(root: str, cache: bool = True) -> SplitData:
    """ImageNet in CoOp's layout; ``test`` (and ``val``, as in CoOp) is the official val set.

    Labels follow ``classnames.txt`` (all its classes must have train and val folders).
    The folder scan is cached in ``$DATA/imagenet/preprocessed_hyptree.pkl`` (paths
    relative to ``images/``, so the data root may move; rebuilt when the wnids of
    ``classnames.txt`` change, while new class names apply at once; MaPLe's own ``preprocessed.pkl`` is left alone).
    """
    dataset_dir = os.path.join(root, "imagenet")
    image_dir = os.path.join(dataset_dir, "images")
    classnames = read_imagenet_classnames(os.path.join(dataset_dir, "classnames.txt"))
    wnids = list(classnames)
    names = list(classnames.values())
    cache_file = os.path.join(dataset_dir, IMAGENET_CACHE)
    rows = None
    if cache and os.path.isfile(cache_file):
        with open(cache_file, "rb") as f:
            obj = pickle.load(f)
        if obj.get("version") == _CACHE_VERSION and obj.get("wnids") == wnids:
            rows = obj["rows"]
    if rows is None:
        rows = {}
        for split in ("train", "val"):
            scan = _scan_wnid_folders(os.path.join(image_dir, split), classnames, "imagenet", True)
            rows[split] = [f"{split}/{w}/{im}" for w, ims in scan for im in ims], \
                [y for y, (_, ims) in enumerate(scan) for _ in ims]
        if cache:
            atomic_write_bytes(
                cache_file,
                pickle.dumps({"version": _CACHE_VERSION, "wnids": wnids, "rows": rows},
                             protocol=pickle.HIGHEST_PROTOCOL),
            )
    train, test = (
        [Item(os.path.join(image_dir, rel), y, names[y]) for rel, y in zip(*rows[split])]
        for split in ("train", "val")
    )
    return SplitData(train=train, val=test, test=test, classnames=names, class_ids=wnids)


def read_imagenet_v2(root: str) -> SplitData:
    """ImageNetV2 matched-frequency: folder ``k`` holds class ``k`` of ``classnames.txt``."""
    dataset_dir = os.path.join(root, "imagenetv2")
    image_dir = os.path.join(dataset_dir, "imagenetv2-matched-frequency-format-val")
    classnames = _variant_classnames(root, "imagenetv2", "imagenetv2")
    _require_dir(image_dir, "imagenetv2", "image folder")
    wnids = list(classnames)
    items: List[Item] = []
    for label, wnid in enumerate(wnids):
        folder = os.path.join(image_dir, str(label))
        _require_dir(folder, "imagenetv2", f"class folder {label}")
        items.extend(Item(os.path.join(folder, im), label, classnames[wnid]) for im in list_images(folder))
    return SplitData([], [], items, list(classnames.values()), wnids)


def _read_variant(root: str, dataset_dir: str, sub: str, dataset: str, require_all: bool) -> SplitData:
    classnames = _variant_classnames(root, dataset_dir, dataset)
    image_dir = os.path.join(root, dataset_dir, sub)
    scan = _scan_wnid_folders(image_dir, classnames, dataset, require_all)
    items = [
        Item(os.path.join(image_dir, w, im), label, classnames[w])
        for label, (w, ims) in enumerate(scan)
        for im in ims
    ]
    wnids = [w for w, _ in scan]
    return SplitData([], [], items, [classnames[w] for w in wnids], wnids)


def read_imagenet_sketch(root: str) -> SplitData:
    """ImageNet-Sketch: ``$DATA/imagenet-sketch/images/<wnid>/``; all ImageNet classes, same labels."""
    return _read_variant(root, "imagenet-sketch", "images", "imagenet_sketch", True)


def read_imagenet_a(root: str) -> SplitData:
    """ImageNet-A: ``$DATA/imagenet-adversarial/imagenet-a/<wnid>/`` (200 classes).

    Labels are ``0..199`` in ImageNet class order restricted to the present wnids;
    ``class_ids`` lists them, for ``Taxonomy.subtree``.
    """
    return _read_variant(root, "imagenet-adversarial", "imagenet-a", "imagenet_a", False)


def read_imagenet_r(root: str) -> SplitData:
    """ImageNet-R: ``$DATA/imagenet-rendition/imagenet-r/<wnid>/`` (200 classes), labelled as ImageNet-A."""
    return _read_variant(root, "imagenet-rendition", "imagenet-r", "imagenet_r", False)


# ---------------------------------------------------------------------------------------
# Rare Species
# ---------------------------------------------------------------------------------------

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
    _require_dir(image_dir, "rare_species", "image folder")
    if not os.path.isfile(split_json):
        folders = _list_subdirs(image_dir)
        if not folders:
            raise _layout_error("class folders", image_dir, "rare_species")
        items = []
        for label, name in enumerate(folders):
            folder = os.path.join(image_dir, name)
            items.extend(Item(os.path.join(folder, im), label, name) for im in list_images(folder))
        write_coop_split(per_class_split(items, p_train, p_val, seed), split_json, image_dir)
    splits = read_coop_split(split_json, image_dir)
    classnames, _ = _class_table(splits, image_dir, split_json)
    return SplitData(splits["train"], splits["val"], splits["test"], classnames, list(classnames))
