"""ImageNet and its test-only variants (ImageNetV2, -Sketch, -A, -R) in CoOp / MaPLe's layout.

Every variant is labelled by the ImageNet hierarchy (the devkit's ``meta.mat``), cut down
to the variant's classes.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import OrderedDict
from collections.abc import Callable, Mapping

from hyptree.data.common import (
    Item,
    RawDataset,
    SplitData,
    _layout_error,
    _list_subdirs,
    _require_dir,
    list_images,
    plain_keys,
)
from hyptree.tree.io import read_imagenet_meta
from hyptree.tree.io.paths import read_text_lines
from hyptree.tree.taxonomy import Taxonomy
from hyptree.utils.files import atomic_write_json, file_lock

__all__ = [
    "LAYOUTS",
    "read_imagenet_classnames",
    "read_imagenet",
    "read_imagenet_v2",
    "read_imagenet_sketch",
    "read_imagenet_a",
    "read_imagenet_r",
    "load_imagenet",
    "load_imagenet_v2",
    "load_imagenet_sketch",
    "load_imagenet_a",
    "load_imagenet_r",
]

LAYOUTS = {
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
}
"""Expected layouts, quoted by "not found" errors (``hyptree.data.LAYOUTS`` holds every dataset's)."""


IMAGENET_CACHE = "preprocessed_hyptree.json"  # JSON, never a pickle (the data root may be writable by others)
_CACHE_VERSION = 2


def read_imagenet_classnames(path: str) -> OrderedDict[str, str]:
    """``classnames.txt`` (lines ``<wnid> <class name>``) as an ordered ``wnid -> name`` dict."""
    if not os.path.isfile(path):
        raise _layout_error("classnames.txt", path, LAYOUTS["imagenet"])
    out: OrderedDict[str, str] = OrderedDict()
    for lineno, line in enumerate(read_text_lines(path), 1):
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


def _variant_classnames(root: str, dataset_dir: str, dataset: str) -> OrderedDict[str, str]:
    """The variant's own ``classnames.txt`` (MaPLe's layout) or, failing that, ImageNet's."""
    own = os.path.join(root, dataset_dir, "classnames.txt")
    shared = os.path.join(root, "imagenet", "classnames.txt")
    for path in (own, shared):
        if os.path.isfile(path):
            return read_imagenet_classnames(path)
    raise _layout_error("classnames.txt", f"{own} (or {shared})", LAYOUTS[dataset])


def _scan_wnid_folders(
    image_dir: str, wnid_to_name: Mapping[str, str], dataset: str, require_all: bool
) -> list[tuple[str, list[str]]]:
    """``[(wnid, sorted image names), ...]`` for the folders ``image_dir/<wnid>/``, in
    ``wnid_to_name`` order (which defines the labels). Unknown folders are an error; so
    are missing ones when ``require_all``."""
    _require_dir(image_dir, LAYOUTS[dataset], "image folder")
    present = set(_list_subdirs(image_dir))
    unknown = sorted(present - set(wnid_to_name))
    if unknown:
        raise ValueError(f"{image_dir}: folders not in classnames.txt: {unknown[:5]}")
    wnids = [w for w in wnid_to_name if w in present]
    if require_all and len(wnids) != len(wnid_to_name):
        missing = [w for w in wnid_to_name if w not in present]
        raise _layout_error(f"class folder(s) {missing[:3]} ({len(missing)} missing)", image_dir, LAYOUTS[dataset])
    if not wnids:
        raise _layout_error("class folders", image_dir, LAYOUTS[dataset])
    return [(w, list_images(os.path.join(image_dir, w))) for w in wnids]


def _read_cache(path: str, wnids: list) -> dict | None:
    """The cached scan, or None when absent, unreadable or for other classes (then rebuilt)."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(obj, dict) or obj.get("version") != _CACHE_VERSION or obj.get("wnids") != wnids:
        return None
    return {k: (list(v[0]), [int(y) for y in v[1]]) for k, v in obj["rows"].items()}


def read_imagenet(root: str, cache: bool = True) -> SplitData:
    """ImageNet in CoOp's layout; ``test`` (and ``val``, as in CoOp) is the official val set.

    Labels follow ``classnames.txt`` (all its classes must have train and val folders).
    The folder scan is cached in ``$DATA/imagenet/preprocessed_hyptree.json`` (JSON; paths
    relative to ``images/``, so the data root may move; rebuilt when the wnids of
    ``classnames.txt`` change, while new class names apply at once; MaPLe's own ``preprocessed.pkl`` is left alone).
    """
    dataset_dir = os.path.join(root, "imagenet")
    image_dir = os.path.join(dataset_dir, "images")
    classnames = read_imagenet_classnames(os.path.join(dataset_dir, "classnames.txt"))
    wnids = list(classnames)
    names = list(classnames.values())
    cache_file = os.path.join(dataset_dir, IMAGENET_CACHE)
    rows = _read_cache(cache_file, wnids) if cache else None
    if rows is None:
        with file_lock(cache_file) if cache else contextlib.nullcontext():
            rows = _read_cache(cache_file, wnids) if cache else None  # another run may have written it
            if rows is None:
                rows = {}
                for split in ("train", "val"):
                    scan = _scan_wnid_folders(os.path.join(image_dir, split), classnames, "imagenet", True)
                    rows[split] = (
                        [f"{split}/{w}/{im}" for w, ims in scan for im in ims],
                        [y for y, (_, ims) in enumerate(scan) for _ in ims],
                    )
                if cache:
                    atomic_write_json(
                        cache_file, {"version": _CACHE_VERSION, "wnids": wnids, "rows": rows}, indent=None
                    )
    train, test = (
        [Item(os.path.join(image_dir, rel), y, names[y]) for rel, y in zip(*rows[split])] for split in ("train", "val")
    )
    return SplitData(train=train, val=test, test=test, classnames=names, class_ids=wnids)


def read_imagenet_v2(root: str) -> SplitData:
    """ImageNetV2 matched-frequency: folder ``k`` holds class ``k`` of ``classnames.txt``."""
    dataset_dir = os.path.join(root, "imagenetv2")
    image_dir = os.path.join(dataset_dir, "imagenetv2-matched-frequency-format-val")
    classnames = _variant_classnames(root, "imagenetv2", "imagenetv2")
    _require_dir(image_dir, LAYOUTS["imagenetv2"], "image folder")
    wnids = list(classnames)
    items: list[Item] = []
    for label, wnid in enumerate(wnids):
        folder = os.path.join(image_dir, str(label))
        _require_dir(folder, LAYOUTS["imagenetv2"], f"class folder {label}")
        items.extend(Item(os.path.join(folder, im), label, classnames[wnid]) for im in list_images(folder))
    return SplitData([], [], items, list(classnames.values()), wnids)


def _read_variant(root: str, dataset_dir: str, sub: str, dataset: str, require_all: bool) -> SplitData:
    classnames = _variant_classnames(root, dataset_dir, dataset)
    image_dir = os.path.join(root, dataset_dir, sub)
    scan = _scan_wnid_folders(image_dir, classnames, dataset, require_all)
    items = [
        Item(os.path.join(image_dir, w, im), label, classnames[w]) for label, (w, ims) in enumerate(scan) for im in ims
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


def _imagenet_meta_file(root: str) -> str:
    cands = [
        os.path.join(root, "imagenet", "ILSVRC2012_devkit_t12", "data", "meta.mat"),
        os.path.join(root, "imagenet", "meta.mat"),
    ]
    for p in cands:
        if os.path.isfile(p):
            return p
    raise FileNotFoundError(
        f"ImageNet hierarchy not found: none of {cands}\n"
        "Extract the devkit ILSVRC2012_devkit_t12.tar.gz in $DATA/imagenet/ (for data/meta.mat), "
        "or copy ProTeCt's tree to $DATA/protect/imagenet/tree.npy, "
        "or set TRAINER.HYPTREE.TAXONOMY.FILE to a taxonomy paths file."
    )


def _imagenet_full_classnames(root: str, dataset_dir: str) -> dict[str, str]:
    for path in (os.path.join(root, dataset_dir, "classnames.txt"), os.path.join(root, "imagenet", "classnames.txt")):
        if os.path.isfile(path):
            return dict(read_imagenet_classnames(path))
    return {}


def _imagenet_native(root: str, dataset_dir: str, what: str) -> Callable[[], tuple[Taxonomy, str]]:
    """The ImageNet hierarchy over all classes of ``classnames.txt`` (the same tree an
    ImageNet run uses); matching then cuts it down to the dataset's classes."""

    def native():
        path = _imagenet_meta_file(root)
        full = _imagenet_full_classnames(root, dataset_dir)
        tax = read_imagenet_meta(path, class_order=list(full) or None, display_names=full or None)
        return tax, f"{path} (ImageNet WordNet hierarchy{what})"

    return native


def load_imagenet(root: str, cache: bool = True) -> RawDataset:
    """ImageNet for ``build_hierarchical_dataset``; its own hierarchy is the devkit's ``meta.mat``."""
    d = read_imagenet(root, cache=cache)
    ids, keys = plain_keys(d)
    return RawDataset(d, ids, keys, _imagenet_native(root, "imagenet", ""))


def _variant_loader(reader, dataset_dir: str) -> Callable[[str], RawDataset]:
    """A variant's loader: its images, labelled by the ImageNet hierarchy."""

    def load(root: str) -> RawDataset:
        d = reader(root)
        ids, keys = plain_keys(d)
        what = f", cut down to the {len(ids)} classes of {dataset_dir}"
        return RawDataset(d, ids, keys, _imagenet_native(root, dataset_dir, what))

    return load


load_imagenet_v2 = _variant_loader(read_imagenet_v2, "imagenetv2")
load_imagenet_sketch = _variant_loader(read_imagenet_sketch, "imagenet-sketch")
load_imagenet_a = _variant_loader(read_imagenet_a, "imagenet-adversarial")
load_imagenet_r = _variant_loader(read_imagenet_r, "imagenet-rendition")
