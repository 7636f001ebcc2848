"""The reference implementation's base/novel classes (``DATASET.SUBSAMPLE_SPLIT reference``).

The official code ships, per dataset, in ``prepro/data/<dataset>/`` (copy the folder to
``$DATA/protect/<dataset>/``, the folder that also holds ProTeCt's ``tree.npy``; see
:data:`hyptree.data.build.PROTECT_DIRS`):

* ``tree.npy``, ``tree_base.npy``, ``tree_novel.npy``: 0-d object arrays holding a pickled
  tree (read with :func:`hyptree.tree.io.protect.read_protect_tree`, never their code);
* ``relabeler_base.npy``, ``relabeler_novel.npy``: 0-d object arrays holding a dict
  ``original leaf label -> subset leaf label`` (original label = index in ``tree.npy``'s
  ``leaf_nodes``; values ``0..n-1``, increasing with the key);
* ``treecuts_25_multi_base.pkl``, ``treecuts_25_multi_novel.pkl``: ``torch.save`` files of
  the 25 evaluation cuts of each subset tree (read by
  :func:`hyptree.tree.cutfiles.load_protect_cuts`).

Every pickle goes through :mod:`hyptree.tree.pickles` (stand-in classes, nothing executed).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np

from hyptree.tree.io.protect import read_protect_tree
from hyptree.tree.pickles import load_pickle_file
from hyptree.tree.taxonomy import Taxonomy

__all__ = ["REFERENCE_SPLIT", "REFERENCE_FILES", "reference_dir", "load_relabeler", "reference_split"]

log = logging.getLogger(__name__)

#: The ``DATASET.SUBSAMPLE_SPLIT`` value that reads the reference's files.
REFERENCE_SPLIT = "reference"
#: Our subsample name -> the reference's file suffix.
_SUFFIX = {"base": "base", "new": "novel"}
REFERENCE_FILES = ("tree.npy", "relabeler_base.npy", "relabeler_novel.npy")


def reference_dir(root: str, dirs: Sequence[str], dataset: str) -> str:
    """The first ``root/protect/<d>/`` holding the reference's files; ``FileNotFoundError`` naming them."""
    tried = [os.path.join(root, "protect", d) for d in dirs]
    for path in tried:
        if all(os.path.isfile(os.path.join(path, f)) for f in REFERENCE_FILES):
            return path
    raise FileNotFoundError(
        f"{dataset}: DATASET.SUBSAMPLE_SPLIT reference needs {', '.join(REFERENCE_FILES)} (and tree_base.npy, "
        f"tree_novel.npy, treecuts_25_multi_base.pkl, treecuts_25_multi_novel.pkl) from the official "
        f"repository's prepro/data/<dataset>/ in one of: {', '.join(tried) or '(no ProTeCt folder for this dataset)'}"
    )


def load_relabeler(path: str) -> dict[int, int]:
    """The ``original label -> subset label`` dict of a ``relabeler_*.npy``, checked."""
    obj = load_pickle_file(path)
    if not isinstance(obj, dict) or not obj:
        raise ValueError(
            f"{path}: expected a non-empty dict original leaf label -> subset label, got {type(obj).__name__}"
        )
    try:
        pairs = sorted((int(k), int(v)) for k, v in obj.items())
    except (TypeError, ValueError):
        raise ValueError(f"{path}: keys and values must be integer labels") from None
    values = [v for _, v in pairs]
    if values != list(range(len(pairs))):
        raise ValueError(f"{path}: subset labels must be 0..{len(pairs) - 1} in the order of the original labels")
    return dict(pairs)


def reference_split(root: str, dirs: Sequence[str], dataset: str, subsample: str, full: Taxonomy):
    """The reference's ``subsample`` (``base`` | ``new``) classes as labels of ``full``.

    Returns ``(labels, cuts_file)``: ``labels[j]`` is the class of ``full`` that is the
    reference's subset leaf ``j`` (matched by node name through the reference's ``tree.npy``),
    ``cuts_file`` the subset's ``treecuts_25_multi_<base|novel>.pkl`` or ``""`` if absent.
    Checks the subset tree ``tree_<base|novel>.npy`` (when present) lists the same classes.
    """
    if subsample not in _SUFFIX:
        raise ValueError(f"reference_split: subsample must be base or new, got {subsample!r}")
    folder = reference_dir(root, dirs, dataset)
    suffix = _SUFFIX[subsample]
    relabeler_path = os.path.join(folder, f"relabeler_{suffix}.npy")
    relabeler = load_relabeler(relabeler_path)
    ref_full = read_protect_tree(os.path.join(folder, "tree.npy"))
    names = ref_full.names
    ref_classes = [names[int(i)] for i in ref_full.leaves]
    bad = [k for k in relabeler if not 0 <= k < len(ref_classes)]
    if bad:
        raise ValueError(f"{relabeler_path}: labels {bad[:5]} are not leaves of {folder}/tree.npy ({len(ref_classes)})")
    subset = [ref_classes[k] for k in relabeler]  # keys ascending = subset order
    sub_tree_path = os.path.join(folder, f"tree_{suffix}.npy")
    if os.path.isfile(sub_tree_path):
        sub = read_protect_tree(sub_tree_path)
        sub_classes = [sub.names[int(i)] for i in sub.leaves]
        if sub_classes != subset:
            raise ValueError(
                f"{sub_tree_path}: its {len(sub_classes)} classes differ from {relabeler_path}'s "
                f"{len(subset)} (first: {sub_classes[:3]} vs {subset[:3]})"
            )
    full_names = full.names
    index = {full_names[int(node)]: k for k, node in enumerate(full.leaves)}
    missing = [n for n in subset if n not in index]
    if missing:
        raise ValueError(
            f"{relabeler_path}: {len(missing)} reference {suffix} classes are not classes of this run's tree, "
            f"e.g. {missing[:5]} (use the reference's tree.npy as the taxonomy)"
        )
    cuts = os.path.join(folder, f"treecuts_25_multi_{suffix}.pkl")
    if not os.path.isfile(cuts):
        log.warning("%s: not found; MTA uses seeded cuts of the %s tree", cuts, suffix)
        cuts = ""
    return np.asarray([index[n] for n in subset], dtype=np.int64), cuts
