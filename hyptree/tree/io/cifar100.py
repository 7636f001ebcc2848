"""CIFAR-100's own hierarchy (``meta`` + ``train`` pickles of the python archive)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import numpy as np

from hyptree.tree.pickles import load_pickle_file
from hyptree.tree.taxonomy import Taxonomy

__all__ = ["read_cifar100_meta"]

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

    ``meta_path`` is the archive's ``meta`` pickle or the ``cifar-100-python/``
    directory (then ``meta`` and ``train`` inside it are used, ``test`` if there is
    no ``train``). ``meta`` gives ``fine_label_names`` (100) and
    ``coarse_label_names`` (20); the coarse -> fine mapping comes from the
    ``fine_labels``/``coarse_labels`` lists of ``train_path``. Keys and names may be
    ``str`` or ``bytes`` (Python 2 pickles). Class order: fine label order. Node
    order: root, the coarse classes in coarse label order, then the fine classes
    grouped under them. Errors name the fine class mapped to two coarse classes or
    to none.
    """
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
    meta = _decode_keys(load_pickle_file(meta_path, kind="cifar100"), meta_path)
    for key in ("fine_label_names", "coarse_label_names"):
        if key not in meta:
            raise ValueError(f"{meta_path}: no {key!r} entry (keys: {sorted(meta)[:8]})")
    fine = _decode_names(meta["fine_label_names"], "fine_label_names", meta_path)
    coarse = _decode_names(meta["coarse_label_names"], "coarse_label_names", meta_path)
    train = _decode_keys(load_pickle_file(train_path, kind="cifar100"), train_path)
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
