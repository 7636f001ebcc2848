"""CIFAR-100: the official python archive (written once as PNGs) or ProTeCt's hierarchical folder tree."""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Sequence

import numpy as np

from hyptree.data.common import (
    COMPLETE_MARKER,
    Item,
    RawDataset,
    SplitData,
    _layout_error,
    _require_dir,
    plain_keys,
    read_coop_split,
    write_coop_split,
)
from hyptree.data.folder import read_image_folder_tree
from hyptree.tree.pickles import loads_permissive
from hyptree.tree.taxonomy import Taxonomy
from hyptree.utils.files import atomic_open, atomic_write_json, build_dir_once

__all__ = ["LAYOUTS", "extract_cifar100", "read_cifar100_hierarchical", "load_cifar100"]

LAYOUTS = {
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
}
"""Expected layouts, quoted by "not found" errors (``hyptree.data.LAYOUTS`` holds every dataset's)."""


CIFAR100_DIR = "cifar-100"
CIFAR100_ARCHIVE = "cifar-100-python.tar.gz"
CIFAR100_EXTRACTED = "cifar-100-python"
CIFAR100_IMAGES = "cifar-100-images"
CIFAR100_SPLIT = "split_cifar100.json"
CIFAR100_INFO = "cifar100_info.json"  # class names and the coarse map (older folders: in .complete)


def _load_cifar100_pickles(dataset_dir: str) -> dict[str, dict]:
    """The ``meta``, ``train`` and ``test`` dicts of the official python version.

    Read from ``cifar-100-python/`` if extracted, else straight from the tar.gz (without
    writing the pickles to disk). Keys stay bytes, as the archive was pickled by Python 2.
    Read under the ``cifar100`` allow-list of :mod:`hyptree.tree.pickles` (never plain pickle).
    """
    names = ("meta", "train", "test")
    extracted = os.path.join(dataset_dir, CIFAR100_EXTRACTED)
    archive = os.path.join(dataset_dir, CIFAR100_ARCHIVE)
    out = {}
    if all(os.path.isfile(os.path.join(extracted, n)) for n in names):
        for n in names:
            path = os.path.join(extracted, n)
            with open(path, "rb") as f:
                out[n] = loads_permissive(f.read(), source=path, kind="cifar100", encoding="bytes")
        return out
    if not os.path.isfile(archive):
        raise _layout_error("CIFAR-100 archive or extracted folder", archive, LAYOUTS["cifar100"])
    with tarfile.open(archive, "r:gz") as tar:
        for n in names:
            try:
                member = tar.getmember(f"{CIFAR100_EXTRACTED}/{n}")
            except KeyError:
                raise ValueError(f"{archive}: member {CIFAR100_EXTRACTED}/{n} missing") from None
            blob = tar.extractfile(member).read()
            out[n] = loads_permissive(blob, source=f"{archive}:{member.name}", kind="cifar100", encoding="bytes")
    return out


def _decode(names) -> list[str]:
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]


def extract_cifar100(root: str) -> SplitData:
    """CIFAR-100 as image files: write PNGs once, then read the index.

    ``root`` is ``$DATA``; files live in ``$DATA/cifar-100`` (:data:`LAYOUTS` ``cifar100``).
    On first use the official pickles (rows of 3072 bytes, channel-major 3x32x32) are
    written to ``cifar-100-images/{train,test}/<fine_name>/<index>.png`` (``index`` = row
    in the official array, 5 digits), then a CoOp-format index ``split_cifar100.json``,
    then the ``.complete`` marker; later calls only read the index. The folder is built in a
    private temporary folder and renamed into place under a file lock
    (:func:`~hyptree.utils.files.build_dir_once`): two first uses at once write it once, and
    an interrupted extraction (no marker) is redone from scratch.

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
        build_dir_once(image_dir, lambda tmp: _write_cifar100_images(dataset_dir, tmp), marker=COMPLETE_MARKER)
    info_path = os.path.join(image_dir, CIFAR100_INFO)
    with open(info_path if os.path.isfile(info_path) else marker, encoding="utf-8") as f:
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


def _write_cifar100_images(dataset_dir: str, image_dir: str) -> None:
    """Fill ``image_dir`` (a private temporary folder): PNGs, the split file, the class info."""
    from PIL import Image
    from tqdm import tqdm

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
    splits: dict[str, list[Item]] = {"train": [], "val": [], "test": []}
    total = sum(len(data[s][b"fine_labels"]) for s in ("train", "test"))
    bar = tqdm(total=total, desc=f"CIFAR-100 -> PNG ({image_dir})", unit="img", mininterval=1.0)
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
            with atomic_open(path, "wb") as f:
                Image.fromarray(np.ascontiguousarray(img)).save(f, format="PNG")
            splits[split].append(Item(path, int(lab), fine_names[lab]))
            bar.update(1)
    bar.close()
    write_coop_split(splits, os.path.join(image_dir, CIFAR100_SPLIT), image_dir)
    info = {
        "fine_names": fine_names,
        "coarse_names": coarse_names,
        "fine_to_coarse": fine_to_coarse,
        "hierarchy_lines": [f"{coarse_names[c]}/{f}" for f, c in zip(fine_names, fine_to_coarse)],
        "counts": {s: len(splits[s]) for s in ("train", "test")},
    }
    atomic_write_json(os.path.join(image_dir, CIFAR100_INFO), info)


CIFAR100_HIER_DIR = "cifar-100-hierarchical"


def read_cifar100_hierarchical(root: str, class_order: Sequence[str] | None = None) -> SplitData:
    """ProTeCt's hierarchical CIFAR-100 (``$DATA/cifar-100-hierarchical``, a folder tree).

    Train and test images share the leaf folders and are told apart by their file-name
    prefix (``train_`` / ``test_``), as in ProTeCt's split files. Labels follow
    ``class_order`` (ProTeCt's ``leaf_nodes.npy`` order) or the sorted leaf paths;
    ``hierarchy_lines`` are the folder paths.
    """
    tree = os.path.join(root, CIFAR100_HIER_DIR)
    _require_dir(tree, LAYOUTS["cifar100_hier"])
    train, lines = read_image_folder_tree(tree, class_order, keep=lambda n: n.startswith("train_"))
    test, _ = read_image_folder_tree(tree, class_order, keep=lambda n: n.startswith("test_"))
    classnames = [line.rsplit("/", 1)[-1] for line in lines]
    return SplitData(train=train, val=[], test=test, classnames=classnames, hierarchy_lines=lines)


def load_cifar100(root: str, cifar_source: str = "auto") -> RawDataset:
    """CIFAR-100 for ``build_hierarchical_dataset``, its hierarchy from the same source.

    ``cifar_source``: ``auto`` (the hierarchical folder if present, else the archive),
    ``hierarchical`` or ``archive``."""
    if cifar_source not in ("auto", "hierarchical", "archive"):
        raise ValueError(f"cifar_source must be auto, hierarchical or archive; got {cifar_source!r}")
    hier_dir = os.path.join(root, CIFAR100_HIER_DIR)
    use_hier = cifar_source == "hierarchical" or (cifar_source == "auto" and os.path.isdir(hier_dir))
    if use_hier:
        d = read_cifar100_hierarchical(root)
        desc = f"{hier_dir} (ProTeCt's hierarchical CIFAR-100 folder tree)"
    else:
        try:
            d = extract_cifar100(root)
        except FileNotFoundError as e:
            if cifar_source == "archive":
                raise
            raise FileNotFoundError(f"{e}\nor ProTeCt's hierarchical version:\n{LAYOUTS['cifar100_hier']}") from None
        desc = f"{os.path.join(root, CIFAR100_DIR)} (CIFAR-100 archive: coarse -> fine)"

    def native():
        lines, order = list(d.hierarchy_lines), list(d.classnames)
        return Taxonomy.from_paths(lines, class_order=order, source=desc), desc

    ids, keys = plain_keys(d)
    return RawDataset(d, ids, keys, native)
