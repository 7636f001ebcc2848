"""Run folders: load every ``results.json`` under a folder and group the runs.

Every ``results.json`` (:data:`~hyptree.eval.runfiles.RESULTS_FILE`) under the collected
folder (recursively) is one :class:`Run`. :func:`group_runs` puts runs together in three steps:

1. **Seeds.** Runs that differ only by seed form a :class:`Group`. With the scripts' layout
   (MaPLe's: ``.../TRAINER/CFG/seedS``) the group is the run folder with its ``seedS``
   component removed; runs in folders without a ``seed*`` component are grouped by
   their record (dataset, trainer, backbone, preset, curvature mode, cross term, image
   tree, pass-through, shots, subsample, tree, split).
2. **Trained model.** An evaluation-only run (its record has a ``model_dir``) belongs
   to the training run whose folder ``model_dir`` names (compared as path suffixes, so
   moved or relative output folders still match). Evaluations of a model trained
   elsewhere (``model_dir`` outside the collected folder) are grouped by that folder.
3. **Protocol** (:attr:`Group.kind`). A group trained on base classes (or evaluated on
   ``base``/``new``) is ``base2novel``; a group with evaluations on other datasets
   ``crossdomain``; every other trained group ``fewshot`` (or ``ablation`` when its folder
   has an ``ablation`` component). :mod:`hyptree.eval.tables` makes the tables.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from hyptree.eval.runfiles import RESULTS_FILE

__all__ = ["Run", "Group", "load_runs", "group_runs", "seed_order", "DASH"]

DASH = "–"  # a missing value in labels and table cells
_SEED_DIR = re.compile(r"^seed(\d+)$")
# record fields that identify a run apart from its seed (for folders without seedS)
_RECORD_KEY = (
    "dataset",
    "trainer",
    "backbone",
    "preset",
    "curvature_mode",
    "cross",
    "image_tree",
    "pass_through",
    "num_shots",
    "subsample",
    "tree",
    "split",
)


def seed_order(seed):
    """Sort key of seeds: numbers ascending, ``None`` (no seed known) last."""
    return (seed is None, seed if seed is not None else 0)


# --------------------------------------------------------------------------- loading


@dataclass
class Run:
    """One ``results.json``: its folder, the folder relative to the collected root, the record."""

    path: str
    rel: tuple[str, ...]
    record: dict

    @property
    def seed(self):
        seed = self.record.get("seed")
        if isinstance(seed, int) and not isinstance(seed, bool):
            return seed
        for part in reversed(self.rel):
            m = _SEED_DIR.match(part)
            if m:
                return int(m.group(1))
        return None

    @property
    def metrics(self) -> dict:
        return self.record.get("metrics") or {}

    @property
    def model_dir(self) -> str:
        return self.record.get("model_dir") or ""

    @property
    def is_eval(self) -> bool:
        """Evaluation-only run of a model trained elsewhere (``--model-dir`` given)."""
        return bool(self.model_dir)

    @property
    def part(self) -> str:
        """What an evaluation measured: ``base``, ``novel`` or the target dataset."""
        sub = self.record.get("subsample", "all")
        if sub == "new":
            return "novel"
        if sub == "base":
            return "base"
        return str(self.record.get("dataset") or self.record.get("tree") or "?")


def _parts(path: str) -> tuple[str, ...]:
    norm = os.path.normpath(path).replace("\\", "/")
    return tuple(p for p in norm.split("/") if p not in ("", "."))


def _drop_seed(parts: Sequence[str]) -> tuple[tuple[str, ...], bool]:
    """``parts`` without its last ``seedS`` component, and whether there was one."""
    for i in range(len(parts) - 1, -1, -1):
        if _SEED_DIR.match(parts[i]):
            return tuple(parts[:i]) + tuple(parts[i + 1 :]), True
    return tuple(parts), False


def load_runs(root: str) -> list[Run]:
    """Every readable ``results.json`` under ``root`` (recursively), sorted by folder.

    Unreadable files (half-written, not JSON, no ``metrics``) are skipped with a warning
    naming the file. Raises ``FileNotFoundError`` when there is none at all.
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(f"results folder not found: {root}")
    runs, seen = [], 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        if RESULTS_FILE not in filenames:
            continue
        seen += 1
        path = os.path.join(dirpath, RESULTS_FILE)
        try:
            with open(path, encoding="utf-8") as f:
                record = json.load(f)
        except (OSError, ValueError) as e:
            warnings.warn(f"{path}: skipped, not readable JSON ({e})", stacklevel=2)
            continue
        if not isinstance(record, dict) or not isinstance(record.get("metrics"), dict):
            warnings.warn(f"{path}: skipped, no 'metrics' object", stacklevel=2)
            continue
        rel = _parts(os.path.relpath(dirpath, root))
        runs.append(Run(dirpath, rel, record))
    if not runs:
        what = "no readable results.json" if seen else "no results.json"
        raise FileNotFoundError(
            f"{what} under {root}: point at the output folder of train.py runs (e.g. output/ or output/base2new)"
        )
    runs.sort(key=lambda r: r.rel)
    return runs


# --------------------------------------------------------------------------- grouping


@dataclass
class Group:
    """Runs of one trained-model configuration over seeds, with its evaluations."""

    key: tuple[str, ...]
    train: dict = field(default_factory=dict)  # seed -> Run
    parts: dict = field(default_factory=dict)  # part name -> {seed -> Run}
    label_parts: tuple[str, ...] = ()  # folder naming the model (for the config label)
    notes: list = field(default_factory=list)
    split_hash: str = ""  # set when its folder holds runs of several settings: this group's config_hash

    def representative(self) -> Run:
        if self.train:
            return self.train[sorted(self.train, key=seed_order)[0]]
        part = self.parts[sorted(self.parts)[0]]
        return part[sorted(part, key=seed_order)[0]]

    @property
    def name(self) -> str:
        return "/".join(self.key)

    @property
    def kind(self) -> str:
        train_sub = {r.record.get("subsample", "all") for r in self.train.values()}
        if "base" in train_sub or {"base", "novel"} & set(self.parts):
            return "base2novel"
        if self.parts:
            return "crossdomain"
        # the scripts' OUT/ablation/... layout (the collected root may be that folder itself)
        in_ablation = any("ablation" in _parts(os.path.abspath(r.path)) for r in self.train.values())
        return "ablation" if in_ablation else "fewshot"

    # labels ---------------------------------------------------------------
    @property
    def dataset(self) -> str:
        return str(self.representative().record.get("dataset", DASH))

    @property
    def trainer(self) -> str:
        return str(self.representative().record.get("trainer", DASH))

    @property
    def shots(self) -> str:
        shots = self.representative().record.get("num_shots")
        return DASH if shots is None else str(shots)

    @property
    def config(self) -> str:
        """The folders between the trainer's folder and ``seedS`` (MaPLe's ``CFG``)."""
        parts = self.label_parts
        seed_at = [i for i, p in enumerate(parts) if _SEED_DIR.match(p)]
        end = seed_at[-1] if seed_at else len(parts)
        rec = self.representative().record
        trainer = rec.get("trainer")
        head = parts[:end]
        if trainer in head:
            j = len(head) - 1 - head[::-1].index(trainer)
            if j < end - 1:
                label = "/".join(head[j + 1 :])
                return f"{label} [{self.split_hash}]" if self.split_hash else label
        if seed_at and end > 0:
            label = parts[end - 1]
        else:
            label = str(rec.get("preset", DASH))
        return f"{label} [{self.split_hash}]" if self.split_hash else label


def _record_key(rec: dict) -> tuple[str, ...]:
    return ("<record>",) + tuple(f"{k}={rec.get(k)}" for k in _RECORD_KEY)


def _seedless_key(run: Run) -> tuple[str, ...]:
    key, had_seed = _drop_seed(run.rel)
    return key if had_seed else _record_key(run.record)


def _put(slot: dict, seed, run: Run, notes: list, what: str) -> None:
    """Store ``run`` for ``seed``; on a duplicate keep the newest record and say so."""
    old = slot.get(seed)
    if old is None:
        slot[seed] = run
        return
    keep, other = (run, old) if str(run.record.get("time", "")) >= str(old.record.get("time", "")) else (old, run)
    slot[seed] = keep
    notes.append(f"seed {seed} {what}: 2 runs, kept {'/'.join(keep.rel) or '.'}")


def _link(run: Run, trains: list[Run]) -> Run | None:
    """The training run whose folder ``run.model_dir`` names (exact, else path suffix)."""
    md = os.path.normpath(run.model_dir)
    for t in trains:
        if t.record.get("output_dir") and os.path.normpath(t.record["output_dir"]) == md:
            return t
    md_parts = _parts(run.model_dir)
    best = None
    for t in trains:
        n = len(t.rel)
        if n and len(md_parts) >= n and md_parts[-n:] == t.rel:
            if best is None or n > len(best.rel):
                best = t
    return best


def _hash(run: Run) -> str:
    return str(run.record.get("config_hash") or DASH)[:10]


def group_runs(runs: Iterable[Run]) -> list[Group]:
    """Groups of runs that differ only by seed, evaluations attached to their model.

    Training runs are grouped by folder (or record) *and* ``config_hash``: a folder whose
    seeds were trained with different options gives one group per setting, each labelled
    with its hash and a note saying the folder mixes settings - never one average."""
    runs = list(runs)
    trains = [r for r in runs if not r.is_eval]
    groups: dict[tuple, Group] = {}
    train_key: dict[int, tuple] = {}

    def group_for(key, label_parts):
        if key not in groups:
            groups[key] = Group(key=key, label_parts=label_parts)
        return groups[key]

    hashes: dict[tuple, set] = {}
    for run in trains:
        hashes.setdefault(_seedless_key(run), set()).add(_hash(run))
    for run in trains:
        key = _seedless_key(run)
        mixed = sorted(hashes[key])
        if len(mixed) > 1:
            key = (*key, f"config_hash={_hash(run)}")
        g = group_for(key, run.rel)
        if len(mixed) > 1 and not g.split_hash:
            g.split_hash = _hash(run)
            g.notes.append(
                f"{'/'.join(key[:-1])} mixes {len(mixed)} settings (config_hash {', '.join(mixed)}): "
                f"only the seeds of {_hash(run)} averaged here"
            )
        _put(g.train, run.seed, run, g.notes, "training")
        train_key[id(run)] = key
    for run in runs:
        if not run.is_eval:
            continue
        owner = _link(run, trains)
        if owner is not None:
            g = groups[train_key[id(owner)]]
        else:
            md_key, had_seed = _drop_seed(_parts(run.model_dir))
            if had_seed:
                g = group_for(("<model>",) + md_key, _parts(run.model_dir))
            else:
                g = group_for(_seedless_key(run), run.rel)
        slot = g.parts.setdefault(run.part, {})
        _put(slot, run.seed, run, g.notes, run.part)
    for g in groups.values():
        for part, slot in g.parts.items():
            mixed = sorted({_hash(r) for r in slot.values()})
            if len(mixed) > 1:
                g.notes.append(f"{part} evaluations of different settings (config_hash {', '.join(mixed)})")
    return sorted(groups.values(), key=lambda g: (g.kind, g.dataset, g.trainer, g.config, g.shots, g.name))
