"""What a run records about itself, read from its yacs config.

* :func:`evaluation_cuts_for`: the MTA cuts of a run (a cuts file, or seeded random cuts);
* :func:`config_hash`: a fingerprint of the options that change what a run computes;
* :func:`run_record`: the ``results.json`` record (schema in :mod:`hyptree.eval.runfiles`),
  written by :func:`hyptree.eval.runfiles.write_run`;
* :func:`write_evaluation`: one evaluation's record and run files, as the trainers write them.
"""

from __future__ import annotations

import datetime
import hashlib
import math
import os
import warnings
from collections.abc import Sequence

from hyptree.eval.runfiles import RESULTS_FILE, jsonable, write_run
from hyptree.run.dotted import cfg_get
from hyptree.tree.cutfiles import load_cuts, load_protect_cuts
from hyptree.tree.cuts import evaluation_cuts, validate_cut
from hyptree.tree.taxonomy import Taxonomy

__all__ = [
    "evaluation_cuts_for",
    "config_hash",
    "run_record",
    "data_record",
    "results_name",
    "write_evaluation",
    "VOLATILE_KEYS",
]

# Keys that name where a run lives or which seed it drew, not what it computes: left out
# of ``config_hash`` by default so the seeds (and copies) of one setting share a hash.
VOLATILE_KEYS = ("OUTPUT_DIR", "RESUME", "SEED", "DATASET.ROOT", "VERBOSE")


def evaluation_cuts_for(cfg, taxonomy: Taxonomy, full_taxonomy: Taxonomy | None = None, reference_cuts: str = ""):
    """The MTA cuts of a run, from ``cfg.TRAINER.HYPTREE.EVAL``.

    ``reference_cuts``: the official cut file of a ``SUBSAMPLE_SPLIT reference`` sub-tree,
    used unless ``CUTS_FILE`` names another.

    ``CUTS_FILE`` set: ``.json`` is read with :func:`~hyptree.tree.cutfiles.load_cuts`, ``.pkl``,
    ``.pth``, ``.pt`` with :func:`~hyptree.tree.cutfiles.load_protect_cuts`. A file written for
    the full tree (ProTeCt's) does not fit a base, novel or target-domain sub-tree; when
    ``full_taxonomy`` is given such cuts are read against it and projected (each cut keeps
    its nodes present in ``taxonomy``, which is a cut of the sub-tree; duplicates dropped).
    Otherwise ``NUM_CUTS`` distinct seeded cuts at ``CUT_RATES`` from ``CUT_SEED``
    (:func:`~hyptree.tree.cuts.evaluation_cuts`). Returns node-id tuples of ``taxonomy``.
    """
    e = cfg.TRAINER.HYPTREE.EVAL
    if reference_cuts and not e.CUTS_FILE:
        return load_protect_cuts(reference_cuts, taxonomy)
    path = os.path.expanduser(str(e.CUTS_FILE or ""))
    if not path:
        return evaluation_cuts(taxonomy, int(e.NUM_CUTS), int(e.CUT_SEED), tuple(e.CUT_RATES))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"TRAINER.HYPTREE.EVAL.CUTS_FILE {path!r} does not exist")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".json":
        reader = load_cuts
    elif ext in (".pkl", ".pth", ".pt", ".pickle"):
        reader = load_protect_cuts
    else:
        raise ValueError(
            f"TRAINER.HYPTREE.EVAL.CUTS_FILE {path!r}: expected a .json cuts file "
            f"(save_cuts) or a ProTeCt .pkl/.pth treecut file"
        )
    try:
        return reader(path, taxonomy)
    except ValueError as error:
        if full_taxonomy is None or full_taxonomy == taxonomy:
            raise
        try:
            full = reader(path, full_taxonomy)
        except ValueError:
            raise error from None
    out, seen = [], set()
    for cut in full:
        names = [full_taxonomy.names[i] for i in cut if full_taxonomy.names[i] in taxonomy]
        ids = validate_cut(taxonomy, names)
        if ids not in seen:
            seen.add(ids)
            out.append(ids)
    warnings.warn(
        f"{path}: cuts of the full tree projected onto this sub-tree ({len(out)} distinct of {len(full)})", stacklevel=2
    )
    return out


def config_hash(cfg, ignore: Sequence[str] = VOLATILE_KEYS) -> str:
    """SHA-1 hex digest of ``cfg.dump()`` (yacs; keys sorted, so stable across runs).

    ``ignore``: dotted keys removed first (default :data:`VOLATILE_KEYS`: output folder,
    resume folder, seed, data root), so runs of one setting with different seeds or
    folders share the hash. Pass ``ignore=()`` to hash everything.
    """
    c = cfg.clone()
    was_frozen = c.is_frozen()
    c.defrost()
    for key in ignore:
        parent, _, leaf = key.rpartition(".")
        node = cfg_get(c, parent, None) if parent else c
        if hasattr(node, "keys") and leaf in node:
            del node[leaf]
    if was_frozen:
        c.freeze()
    return hashlib.sha1(c.dump().encode("utf-8")).hexdigest()


def run_record(
    cfg,
    metrics: dict,
    *,
    split: str,
    tree: str,
    taxonomy: Taxonomy,
    taxonomy_source: str = "",
    epoch: int | None = None,
    model_dir: str | None = None,
    curvatures: dict | None = None,
    num_cuts: int | None = None,
    data: dict | None = None,
) -> dict:
    """The ``results.json`` record of one evaluation (schema in the module docstring).

    ``data``: keys describing the data actually used (:func:`data_record`: classes dropped
    and why, the effective shots), merged into the record.

    ``cfg``: the run's yacs config (Dassl keys plus ``TRAINER.HYPTREE``); ``curvatures``:
    ``{"text", "image", "inter"}`` floats or None; ``epoch``: epochs of training behind the
    evaluated weights; ``model_dir``: the checkpoint folder of an evaluation-only run (None
    when the weights were trained in this run - ``hyptree.eval.runs`` tells the two apart by it).
    """
    h = cfg.TRAINER.HYPTREE
    curv = None
    if curvatures and all(v is not None and math.isfinite(v) for v in curvatures.values()):
        curv = {k: float(curvatures[k]) for k in ("text", "image", "inter")}
    return {
        "metrics": jsonable(metrics),
        "split": split,
        "tree": tree,
        "dataset": cfg_get(cfg, "DATASET.NAME", ""),
        "num_shots": int(cfg_get(cfg, "DATASET.NUM_SHOTS", -1)),
        "subsample": cfg_get(cfg, "DATASET.SUBSAMPLE_CLASSES", "all"),
        "trainer": cfg_get(cfg, "TRAINER.NAME", ""),
        "backbone": h.BACKBONE,
        "clip": h.CLIP_PATH or cfg_get(cfg, "MODEL.BACKBONE.NAME", ""),
        "preset": h.PRESET,
        "curvature_mode": h.CURVATURE.MODE,
        "cross": h.ALIGN.CROSS,
        "image_tree": bool(h.IMAGE_TREE) and h.PRESET == "hyptree",
        "pass_through": bool(h.PASS_THROUGH),
        "seed": int(cfg_get(cfg, "SEED", -1)),
        "config_hash": config_hash(cfg),
        "epoch": None if epoch is None else int(epoch),
        "model_dir": model_dir or None,
        "output_dir": cfg_get(cfg, "OUTPUT_DIR", ""),
        "taxonomy": taxonomy.stats(),
        "taxonomy_source": taxonomy_source or "",
        "curvatures": curv,
        "num_cuts": num_cuts,
        "time": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "dropped_classes": [],
        **(data or {}),
    }


def data_record(hier) -> dict:
    """What the data of a run was, for ``results.json``: ``dropped_classes`` (a list of
    ``{"class", "reason"}``: dataset classes the hierarchy lacks, left out) and, when it
    has training images, ``num_shots_used`` (the most training images of a class - what
    ``NUM_SHOTS`` amounted to; a class with fewer images than asked gets them all) with
    ``train_per_class`` ``[fewest, most]``. ``hier``: a :class:`~hyptree.data.build.HierDataset`
    (or anything with ``dropped_classes`` / ``dropped_reason``)."""
    reason = getattr(hier, "dropped_reason", "") or "not in the hierarchy"
    train_labels = [it.label for it in getattr(hier, "train_x", [])]
    out: dict = {"dropped_classes": [{"class": str(c), "reason": reason} for c in getattr(hier, "dropped_classes", [])]}
    if train_labels:
        counts: dict[int, int] = {}
        for y in train_labels:
            counts[int(y)] = counts.get(int(y), 0) + 1
        out["num_shots_used"] = max(counts.values())
        out["train_per_class"] = [min(counts.values()), max(counts.values())]
    return out


def results_name(split: str) -> str:
    """``results.json`` for the test split, ``results_{split}.json`` otherwise (e.g. ``val``)."""
    return RESULTS_FILE if split == "test" else f"results_{split}.json"


def write_evaluation(
    cfg,
    output_dir: str,
    metrics: dict,
    embeddings: dict,
    *,
    split: str,
    tree: str,
    taxonomy: Taxonomy,
    cuts,
    taxonomy_source: str = "",
    epoch: int | None = None,
    model_dir: str | None = None,
    data: dict | None = None,
) -> dict:
    """Write one evaluation of :func:`hyptree.eval.evaluate` into ``output_dir``; returns the paths.

    The record (:func:`run_record`) takes the curvatures from ``embeddings`` (none when they
    are NaN: no hyperbolic curvatures); it goes to :func:`results_name` of ``split``, and the
    embeddings are written for the test split only
    (:func:`~hyptree.eval.runfiles.write_run`).
    """
    curv = None
    if math.isfinite(embeddings["curv_text"]):
        curv = {k: float(embeddings[f"curv_{k}"]) for k in ("text", "image", "inter")}
    record = run_record(
        cfg,
        metrics,
        split=split,
        tree=tree,
        taxonomy=taxonomy,
        taxonomy_source=taxonomy_source,
        epoch=epoch,
        model_dir=model_dir,
        curvatures=curv,
        num_cuts=len(cuts),
        data=data,
    )
    return write_run(
        output_dir, record, taxonomy, cuts, embeddings if split == "test" else None, results_name=results_name(split)
    )
