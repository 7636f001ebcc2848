"""CIFAR-100's own hierarchy (``meta`` + ``train`` pickles of the python archive, read from
the extracted folder or straight from ``cifar-100-python.tar.gz``)."""

from __future__ import annotations

import logging
import os
import tarfile
from collections.abc import Mapping

import numpy as np

from hyptree.tree.pickles import load_pickle_file, loads_permissive
from hyptree.tree.taxonomy import Taxonomy

__all__ = ["read_cifar100_meta", "CIFAR100_ARCHIVE", "CIFAR100_EXTRACTED", "is_cifar100_source"]

CIFAR100_ARCHIVE = "cifar-100-python.tar.gz"
CIFAR100_EXTRACTED = "cifar-100-python"

log = logging.getLogger(__name__)


def _decode_keys(d, source):
    if not isinstance(d, Mapping):
        raise ValueError(f"{source}: expected a pickled dict, found {type(d).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in d.items()}


def _decode_names(xs, key, source):
    out = []
    for x in list(xs):
        if isinstance(x, bytes):
            x = x.decode("utf-8")
        if not isinstance(x, str):
            raise ValueError(f"{source}: {key} entries must be strings, found {type(x).__name__}")
        out.append(x)
    return out


def read_cifar100_meta(meta_path: str, train_path: str | None = None) -> Taxonomy:
    """CIFAR-100's own hierarchy: root -> 20 coarse classes -> 100 fine classes.

    ``meta_path`` is the archive's ``meta`` pickle, the ``cifar-100-python/``
    directory (then ``meta`` and ``train`` inside it are used, ``test`` if there is
    no ``train``), ``cifar-100-python.tar.gz`` itself, or the dataset folder holding
    either (``$DATA/cifar-100/``, the layout of docs/datasets.md). ``meta`` gives ``fine_label_names`` (100) and
    ``coarse_label_names`` (20); the coarse -> fine mapping comes from the
    ``fine_labels``/``coarse_labels`` lists of ``train_path``. Keys and names may be
    ``str`` or ``bytes`` (Python 2 pickles). Class order: fine label order. Node
    order: root, the coarse classes in coarse label order, then the fine classes
    grouped under them. Errors name the fine class mapped to two coarse classes or
    to none.
    """
    if os.path.isdir(meta_path) and not os.path.isfile(os.path.join(meta_path, "meta")) and train_path is None:
        inner = os.path.join(meta_path, CIFAR100_EXTRACTED)
        if os.path.isfile(os.path.join(inner, "meta")):
            meta_path = inner
        elif os.path.isfile(os.path.join(meta_path, CIFAR100_ARCHIVE)):
            meta_path = os.path.join(meta_path, CIFAR100_ARCHIVE)
    if os.path.isfile(meta_path) and tarfile.is_tarfile(meta_path):
        meta, train, meta_src, train_src = _read_archive(meta_path)
        return _build(meta, train, meta_src, train_src)
    if os.path.isdir(meta_path):
        d = meta_path
        meta_path = os.path.join(d, "meta")
        if train_path is None:
            train_path = os.path.join(d, "train")
            if not os.path.exists(train_path):
                train_path = os.path.join(d, "test")
    if train_path is None:
        sib = os.path.join(os.path.dirname(os.path.abspath(meta_path)), "train")
        if os.path.exists(sib):
            train_path = sib
        else:
            raise ValueError(f"{meta_path}: the coarse->fine mapping is in the 'train' pickle; pass train_path")
    return _build(
        load_pickle_file(meta_path, kind="cifar100"),
        load_pickle_file(train_path, kind="cifar100"),
        meta_path,
        train_path,
    )


def _read_archive(path):
    """``meta`` and ``train`` from the official tar.gz, without extracting it."""
    with tarfile.open(path) as tar:
        out = []
        for name in ("meta", "train"):
            member = f"{CIFAR100_EXTRACTED}/{name}"
            try:
                data = tar.extractfile(tar.getmember(member)).read()
            except KeyError:
                raise ValueError(f"{path}: no member {member} (not the CIFAR-100 python archive?)") from None
            out += [loads_permissive(data, source=f"{path}:{member}", kind="cifar100")]
    return out[0], out[1], f"{path}:{CIFAR100_EXTRACTED}/meta", f"{path}:{CIFAR100_EXTRACTED}/train"


def is_cifar100_source(path: str) -> bool:
    """A ``meta`` pickle, a folder holding one, the archive, or a folder holding either."""
    if os.path.isdir(path):
        entries = set(os.listdir(path))
        return (
            ("meta" in entries and ("train" in entries or "test" in entries))
            or CIFAR100_ARCHIVE in entries
            or os.path.isfile(os.path.join(path, CIFAR100_EXTRACTED, "meta"))
        )
    base = os.path.basename(path).lower()
    return base == "meta" or (base.startswith("cifar-100") and base.endswith((".tar.gz", ".tgz", ".tar")))


def _build(meta, train, meta_path, train_path) -> Taxonomy:
    meta = _decode_keys(meta, meta_path)
    for key in ("fine_label_names", "coarse_label_names"):
        if key not in meta:
            raise ValueError(f"{meta_path}: no {key!r} entry (keys: {sorted(meta)[:8]})")
    fine = _decode_names(meta["fine_label_names"], "fine_label_names", meta_path)
    coarse = _decode_names(meta["coarse_label_names"], "coarse_label_names", meta_path)
    train = _decode_keys(train, train_path)
    for key in ("fine_labels", "coarse_labels"):
        if key not in train:
            raise ValueError(f"{train_path}: no {key!r} entry (keys: {sorted(train)[:8]})")
    fl = np.asarray(train["fine_labels"], dtype=np.int64).reshape(-1)
    cl = np.asarray(train["coarse_labels"], dtype=np.int64).reshape(-1)
    if fl.shape != cl.shape:
        raise ValueError(f"{train_path}: {len(fl)} fine labels but {len(cl)} coarse labels")
    if fl.size and (fl.min() < 0 or fl.max() >= len(fine) or cl.min() < 0 or cl.max() >= len(coarse)):
        raise ValueError(
            f"{train_path}: labels outside the {len(fine)} fine / {len(coarse)} coarse names of {meta_path}"
        )
    pairs = np.unique(np.stack([fl, cl], 1), axis=0) if fl.size else np.zeros((0, 2), np.int64)
    coarse_of = {}
    for f, c in pairs.tolist():
        if f in coarse_of:
            raise ValueError(
                f"{train_path}: fine class {fine[f]!r} maps to two coarse classes: "
                f"{coarse[coarse_of[f]]!r} and {coarse[c]!r}"
            )
        coarse_of[f] = c
    missing = [fine[f] for f in range(len(fine)) if f not in coarse_of]
    if missing:
        raise ValueError(f"{train_path}: fine class(es) without samples, so without a coarse class: {missing[:10]}")
    clash = set(fine) & set(coarse)
    if clash:
        raise ValueError(f"{meta_path}: name used as both a coarse and a fine class: {sorted(clash)[0]!r}")
    used = set(coarse_of.values())
    empty = [coarse[c] for c in range(len(coarse)) if c not in used]
    if empty:
        log.info("%s: coarse classes without fine classes dropped: %s", train_path, empty)
    edges = [("root", coarse[c]) for c in range(len(coarse)) if c in used]
    for ci, c in enumerate(coarse):
        edges += [(c, fine[f]) for f in range(len(fine)) if coarse_of[f] == ci]
    return Taxonomy.from_edges(edges, class_order=fine, root="root", source=str(meta_path))
