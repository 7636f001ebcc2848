"""Experiment protocols: output layout, ablation variants and small helpers for the scripts.

The bash scripts in ``scripts/hyptree/`` stay thin; the decisions they need are made
here and tested:

* :data:`ABLATIONS` - the ablation variants (yacs options on top of the hyptree preset);
* :func:`max_epoch` - the epoch whose checkpoint an eval-only run loads (``--load-epoch``),
  read from the config files and trailing options the training run was given;
* :func:`is_done` - whether a run folder already holds its final ``results.json``.

Output layout written by the scripts (MaPLe's, with one folder per protocol)::

    OUT/base2new/train_base/DATASET/shots_K/TRAINER/RUN/seedS   training on base classes
    OUT/base2new/test_new/DATASET/shots_K/TRAINER/RUN/seedS     eval-only on novel classes
    OUT/base2new/test_base/...                                  eval-only on base (optional)
    OUT/fewshot/DATASET/shots_K/TRAINER/RUN/seedS
    OUT/crossdomain/train/SOURCE/shots_K/TRAINER/RUN/seedS
    OUT/crossdomain/test/TARGET/shots_K/TRAINER/RUN/seedS      eval-only on each target
    OUT/ablation/DATASET/shots_K/TRAINER/RUN/VARIANT/seedS

``RUN`` is the config name (``CFG``), with ``_PRESET`` appended when a preset other
than the config's own name is applied on top of it.

The run list itself (folders, options, order) is :mod:`hyptree.run.runlist`, run by
``python -m hyptree sweep`` (:mod:`hyptree.run.sweep`), which the scripts wrap.

Command line::

    python -m hyptree protocols max-epoch CONFIG.yaml [CONFIG2.yaml ...] [-- KEY VALUE ...]
    python -m hyptree protocols done RUN_DIR          # exit status 0 when finished
    python -m hyptree protocols ablations [NAME ...]  # 'name<TAB>opts' per line
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

import yaml

from hyptree.run.dotted import cfg_get

__all__ = [
    "ABLATIONS",
    "DASSL_DEFAULT_MAX_EPOCH",
    "ablation_variants",
    "max_epoch",
    "is_done",
    "main",
]

# Dassl's ``_C.OPTIM.MAX_EPOCH`` (dassl/config/defaults.py), used when no file sets it.
DASSL_DEFAULT_MAX_EPOCH = 10

_H = "TRAINER.HYPTREE."

# name -> yacs options applied on top of the hyptree preset's config (paper, section 7).
ABLATIONS: dict[str, list[str]] = {
    "full": [],
    "euclidean": [_H + "CURVATURE.MODE", "euclidean"],
    "shared": [_H + "CURVATURE.MODE", "shared"],
    "separate": [_H + "CURVATURE.MODE", "separate"],
    "frozen_curvature": [_H + "CURVATURE.LEARN", "False"],
    "no_image_tree": [_H + "IMAGE_TREE", "False"],
    "no_pass_through": [_H + "PASS_THROUGH", "False"],
    "cross_angle": [_H + "ALIGN.CROSS", "angle"],
    "cross_mmd": [_H + "ALIGN.CROSS", "mmd"],
}


def ablation_variants(names: Sequence[str] | None = None) -> list[tuple[str, list[str]]]:
    """``(name, opts)`` for the given variant names (all when empty), in table order."""
    if not names:
        return [(k, list(v)) for k, v in ABLATIONS.items()]
    unknown = [n for n in names if n not in ABLATIONS]
    if unknown:
        raise ValueError(f"unknown ablation variant(s) {', '.join(unknown)}; expected some of {', '.join(ABLATIONS)}")
    return [(n, list(ABLATIONS[n])) for n in names]


def max_epoch(config_files: Sequence[str], opts: Sequence[str] = ()) -> int:
    """``OPTIM.MAX_EPOCH`` as Dassl's train.py would resolve it.

    Later files override earlier ones (pass the dataset config first, then the trainer
    config, as ``setup_cfg`` merges them), then the trailing ``KEY VALUE`` options; the
    Dassl default (10) when none sets it.
    """
    value = None
    for path in config_files:
        if not path:
            continue
        try:
            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f) or {}
        except FileNotFoundError:
            raise FileNotFoundError(f"config file not found: {path}") from None
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: not valid YAML ({e})") from None
        found = cfg_get(data, "OPTIM.MAX_EPOCH", None)
        if found is not None:
            value = (found, path)
    if len(opts) % 2:
        raise ValueError(f"options must be KEY VALUE pairs, got an odd number: {list(opts)}")
    for key, val in zip(opts[::2], opts[1::2]):
        if key == "OPTIM.MAX_EPOCH":
            value = (val, "command-line options")
    if value is None:
        return DASSL_DEFAULT_MAX_EPOCH
    raw, source = value
    try:
        epochs = int(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{source}: OPTIM.MAX_EPOCH = {raw!r} is not an integer") from None
    if epochs < 1:
        raise ValueError(f"{source}: OPTIM.MAX_EPOCH = {epochs} must be >= 1")
    return epochs


def is_done(run_dir: str) -> bool:
    """True when ``run_dir/results.json`` exists, parses and is a test-split result.

    A ``val`` result (written during training) or a half-written file does not count.
    """
    path = os.path.join(run_dir, "results.json")
    if not os.path.isfile(path):
        return False
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and "metrics" in record and record.get("split", "test") != "val"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = (
        "usage: python -m hyptree protocols max-epoch CONFIG.yaml [...] [-- KEY VALUE ...]\n"
        "       python -m hyptree protocols done RUN_DIR\n"
        "       python -m hyptree protocols ablations [NAME ...]"
    )
    if not argv or argv[0] in ("-h", "--help"):
        print(usage)
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    try:
        if cmd == "max-epoch":
            if "--" in rest:
                i = rest.index("--")
                files, opts = rest[:i], rest[i + 1 :]
            else:
                files, opts = rest, []
            print(max_epoch(files, opts))
            return 0
        if cmd == "done":
            if len(rest) != 1:
                print(usage, file=sys.stderr)
                return 2
            return 0 if is_done(rest[0]) else 1
        if cmd == "ablations":
            for name, opts in ablation_variants(rest):
                print(f"{name}\t{' '.join(opts)}")
            return 0
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"unknown command {cmd!r}\n{usage}", file=sys.stderr)
    return 2
