"""The run list of the protocols: which ``train.py`` calls, into which folders, in which order.

One implementation, used by the protocol scripts (``scripts/hyptree/*.sh`` are thin
wrappers over ``python -m hyptree sweep run``) and by the sweeps of
:mod:`hyptree.run.sweep`. :class:`Settings` holds what the scripts read from the
environment (``TRAINER``, ``PRESET``, ``CFG``, ``DATA``, ``SHOTS``, ``OUT``, ...);
:func:`protocol_runs` turns one protocol, its datasets and seeds into :class:`Run` s, and
:func:`grid_runs` a grid (protocols x datasets x trainers x presets x configs x shots x
seeds) into the concatenation of those. An evaluation-only run names its training run in
:attr:`Run.after`; :func:`chains` groups every training run with the evaluations of its
checkpoint (the unit a launcher schedules). The output layout is documented in
:mod:`hyptree.run.protocols`.
"""

from __future__ import annotations

import itertools
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from hyptree.run.protocols import ablation_variants, max_epoch

__all__ = ["PROTOCOLS", "Settings", "Run", "protocol_runs", "grid_runs", "chains", "SetupError"]

PROTOCOLS = ("fewshot", "base2novel", "crossdomain", "ablation")
DEFAULT_TARGETS = ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")


class SetupError(ValueError):
    """A run list that cannot be made (missing config file, bad seed, ...)."""


@dataclass(frozen=True)
class Settings:
    """One protocol block's settings; the defaults are the scripts'."""

    trainer: str = "MaPLeHypTree"
    preset: str = "hyptree"
    cfg: str | None = None  # configs/trainers/TRAINER/CFG.yaml (= preset)
    data: str = "./data"
    shots: int = 16
    out: str = "output"
    extra_opts: tuple[str, ...] = ()  # after the preset (EXTRA_OPTS)
    cli_opts: tuple[str, ...] = ()  # after extra_opts (the scripts' "--" options)
    load_epoch: int | None = None
    run_name: str | None = None  # cfg, or cfg_preset when they differ
    dataset_configs: str | None = None  # configs/datasets/hyptree if present, else configs/datasets
    trainer_configs: str = "configs/trainers"
    train_py: str = "train.py"
    test_base: bool = False
    source: str = "imagenet"
    targets: tuple[str, ...] = DEFAULT_TARGETS
    variants: tuple[str, ...] = ()  # ablation subset (all when empty)

    def resolved(self) -> Settings:
        cfg = self.cfg or self.preset
        run_name = self.run_name or (cfg if cfg == self.preset else f"{cfg}_{self.preset}")
        dcfgs = self.dataset_configs
        if not dcfgs:
            dcfgs = "configs/datasets/hyptree" if os.path.isdir("configs/datasets/hyptree") else "configs/datasets"
        return replace(self, cfg=cfg, run_name=run_name, dataset_configs=dcfgs)

    @property
    def trainer_cfg(self) -> str:
        return os.path.join(self.trainer_configs, self.trainer, f"{self.cfg}.yaml")

    @property
    def base_opts(self) -> list[str]:
        return ["TRAINER.HYPTREE.PRESET", self.preset, *self.extra_opts, *self.cli_opts]


@dataclass(frozen=True)
class Run:
    """One ``train.py`` call: ``[train_py, *flags, *opts]`` (``--resume`` added when resuming)."""

    kind: str  # "train" or "eval"
    protocol: str
    out_dir: str
    seed: int
    train_py: str
    flags: tuple[str, ...]  # --root ... --output-dir DIR [--model-dir M --load-epoch E --eval-only]
    opts: tuple[str, ...]  # yacs KEY VALUE ...
    after: str | None = None  # the training run (its out_dir) whose checkpoint an evaluation loads
    table_root: str = ""  # the folder the protocol's table is collected from
    config_files: tuple[str, ...] = field(default=(), compare=False)

    def argv(self, resume: bool = False) -> list[str]:
        extra = ["--resume", self.out_dir] if resume else []
        return [self.train_py, *self.flags, *extra, *self.opts]


# the presets (hyptree.loss.objective.PRESETS), written here so the scripts' helper starts without torch
_PRESETS = ("vanilla", "protect", "hyptree")


def _check(s: Settings) -> None:
    if not os.path.isfile(s.train_py):
        raise SetupError(
            f"{s.train_py} not found in {os.getcwd()}; run the script from the repository root (or set TRAIN_PY)"
        )
    if s.preset not in _PRESETS:
        raise SetupError(f"PRESET={s.preset} (TRAINER.HYPTREE.PRESET) is not a preset; choices: {' '.join(_PRESETS)}")
    if not os.path.isdir(os.path.join(s.trainer_configs, s.trainer)):
        have = sorted(os.listdir(s.trainer_configs)) if os.path.isdir(s.trainer_configs) else []
        raise SetupError(
            f"TRAINER={s.trainer} has no config folder {os.path.join(s.trainer_configs, s.trainer)}; "
            f"available trainers: {' '.join(d for d in have if os.path.isdir(os.path.join(s.trainer_configs, d)))}"
        )
    if not os.path.isfile(s.trainer_cfg):
        folder = os.path.join(s.trainer_configs, s.trainer)
        have = " ".join(sorted(os.listdir(folder))) if os.path.isdir(folder) else ""
        raise SetupError(
            f"trainer config {s.trainer_cfg} not found (TRAINER={s.trainer}, CFG={s.cfg}); available: {have}"
        )


def _dataset_cfg(s: Settings, name: str) -> str:
    path = os.path.join(s.dataset_configs, f"{name}.yaml")
    if not os.path.isfile(path):
        folder = s.dataset_configs
        have = sorted(f[:-5] for f in os.listdir(folder) if f.endswith(".yaml")) if os.path.isdir(folder) else []
        raise SetupError(f"dataset config {path} not found; available: {' '.join(have)}")
    return path


def _run(s: Settings, kind, protocol, out_dir, seed, dcfg, opts, table_root, eval_of=None, epoch=None) -> Run:
    flags = ["--root", s.data, "--seed", str(seed), "--trainer", s.trainer, "--dataset-config-file", dcfg]
    flags += ["--config-file", s.trainer_cfg, "--output-dir", out_dir]
    if kind == "eval":
        flags += ["--model-dir", eval_of, "--load-epoch", str(epoch), "--eval-only"]
    files = (dcfg, s.trainer_cfg)
    return Run(kind, protocol, out_dir, seed, s.train_py, tuple(flags), tuple(opts), eval_of, table_root, files)


def _epoch(s: Settings, dcfg: str, opts: Sequence[str]) -> int:
    if s.load_epoch is not None:
        return s.load_epoch
    return max_epoch([dcfg, s.trainer_cfg], list(opts))


def _tail(s: Settings, seed: int) -> str:
    return f"shots_{s.shots}/{s.trainer}/{s.run_name}/seed{seed}"


def fewshot_runs(s: Settings, dataset: str, seeds: Sequence[int]) -> list[Run]:
    dcfg, root = _dataset_cfg(s, dataset), f"{s.out}/fewshot"
    opts = ["DATASET.NUM_SHOTS", str(s.shots), *s.base_opts]
    return [_run(s, "train", "fewshot", f"{root}/{dataset}/{_tail(s, k)}", k, dcfg, opts, root) for k in seeds]


def base2novel_runs(s: Settings, dataset: str, seeds: Sequence[int]) -> list[Run]:
    dcfg, root = _dataset_cfg(s, dataset), f"{s.out}/base2new"
    runs = []
    for seed in seeds:
        common = f"{dataset}/{_tail(s, seed)}"
        train_dir = f"{root}/train_base/{common}"
        opts = ["DATASET.NUM_SHOTS", str(s.shots), "DATASET.SUBSAMPLE_CLASSES", "base", *s.base_opts]
        runs.append(_run(s, "train", "base2novel", train_dir, seed, dcfg, opts, root))
        epoch = _epoch(s, dcfg, opts)
        for sub in ("base", "new") if s.test_base else ("new",):
            eopts = ["DATASET.NUM_SHOTS", str(s.shots), "DATASET.SUBSAMPLE_CLASSES", sub, *s.base_opts]
            out = f"{root}/test_{sub}/{common}"
            runs.append(_run(s, "eval", "base2novel", out, seed, dcfg, eopts, root, train_dir, epoch))
    return runs


def crossdomain_runs(s: Settings, seeds: Sequence[int]) -> list[Run]:
    scfg, root = _dataset_cfg(s, s.source), f"{s.out}/crossdomain"
    tcfgs = [_dataset_cfg(s, t) for t in s.targets]
    runs = []
    for seed in seeds:
        train_dir = f"{root}/train/{s.source}/{_tail(s, seed)}"
        opts = ["DATASET.NUM_SHOTS", str(s.shots), *s.base_opts]
        runs.append(_run(s, "train", "crossdomain", train_dir, seed, scfg, opts, root))
        epoch = _epoch(s, scfg, opts)
        for target, tcfg in zip(s.targets, tcfgs):
            out = f"{root}/test/{target}/{_tail(s, seed)}"
            runs.append(_run(s, "eval", "crossdomain", out, seed, tcfg, s.base_opts, root, train_dir, epoch))
    return runs


def ablation_runs(s: Settings, dataset: str, seeds: Sequence[int]) -> list[Run]:
    if s.preset != "hyptree":
        raise SetupError(f"ablations modify the hyptree preset; PRESET={s.preset}")
    dcfg, root = _dataset_cfg(s, dataset), f"{s.out}/ablation"
    runs = []
    for variant, vopts in ablation_variants(list(s.variants)):
        for seed in seeds:
            out = f"{root}/{dataset}/shots_{s.shots}/{s.trainer}/{s.run_name}/{variant}/seed{seed}"
            # variant options after the preset's, before EXTRA_OPTS / command-line ones
            opts = ["DATASET.NUM_SHOTS", str(s.shots), "TRAINER.HYPTREE.PRESET", s.preset, *vopts, *s.base_opts]
            runs.append(_run(s, "train", "ablation", out, seed, dcfg, opts, root))
    return runs


def check_seeds(seeds: Sequence) -> list[int]:
    out = []
    for seed in seeds:
        text = str(seed)
        if not text.isdigit():
            raise SetupError(f"seed must be a non-negative integer, got '{text}'")
        out.append(int(text))
    return out or [1, 2, 3]


def protocol_runs(protocol: str, s: Settings, datasets: Sequence[str], seeds: Sequence) -> list[Run]:
    """The runs one protocol script makes, in its order (per seed: training, then its evaluations)."""
    if not str(s.shots).isdigit():
        raise SetupError(f"SHOTS must be an integer, got '{s.shots}'")
    s = replace(s, shots=int(s.shots))
    seeds = check_seeds(seeds)
    if protocol == "crossdomain":
        s = s.resolved()
        _check(s)
        return crossdomain_runs(s, seeds)
    make = {"fewshot": fewshot_runs, "base2novel": base2novel_runs, "ablation": ablation_runs}.get(protocol)
    if make is None:
        raise SetupError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    if not datasets:
        raise SetupError(f"protocol {protocol} needs at least one dataset")
    runs = []
    for d in datasets:
        sd = _for_dataset(s, d).resolved()
        _check(sd)
        runs += make(sd, d, seeds)
    return runs


def _for_dataset(s: Settings, dataset: str) -> Settings:
    """The toy datasets default to the tiny CPU config (their default CLIP is a 32 px tiny one)."""
    return replace(s, cfg="tiny_cpu") if s.cfg is None and dataset.startswith("toy") else s


def split_opts(text: str) -> tuple[str, ...]:
    """``EXTRA_OPTS``: shell-quoted yacs options (``'KEY "a value"'``)."""
    try:
        return tuple(shlex.split(text or ""))
    except ValueError as e:
        raise SetupError(f"EXTRA_OPTS does not parse: {text} ({e})") from None


def grid_runs(grid: dict, base: Settings = Settings()) -> list[Run]:
    """Every combination of ``protocols x trainers x presets x configs x shots`` (then datasets
    and seeds) of ``grid`` (a mapping of lists), on top of ``base``; duplicates dropped."""
    keys = ("protocols", "trainers", "presets", "configs", "shots")
    lists = [grid.get(k) or [None] for k in keys]
    runs: dict[str, Run] = {}
    for protocol, trainer, preset, cfg, shots in itertools.product(*lists):
        if protocol is None:
            raise SetupError("the grid names no protocol (protocols: [fewshot, base2novel, crossdomain, ablation])")
        s = replace(
            base,
            trainer=trainer or base.trainer,
            preset=preset or base.preset,
            cfg=cfg or base.cfg,
            shots=base.shots if shots is None else shots,
        )
        for run in protocol_runs(protocol, s, grid.get("datasets") or [], grid.get("seeds") or []):
            old = runs.get(run.out_dir)
            if old is not None and old != run:
                raise SetupError(f"two runs of the grid write {run.out_dir} with different options")
            runs[run.out_dir] = run
    return list(runs.values())


def chains(runs: Sequence[Run]) -> list[list[Run]]:
    """Each training run followed by the evaluations of its checkpoint, in run-list order."""
    out: dict[str, list[Run]] = {}
    for run in runs:
        if run.kind == "train":
            out.setdefault(run.out_dir, []).insert(0, run)
        elif run.after is None:
            raise SetupError(f"evaluation {run.out_dir} names no training run")
        else:
            out.setdefault(run.after, []).append(run)
    missing = [k for k, v in out.items() if v[0].kind != "train"]
    if missing:
        raise SetupError(f"evaluations of {missing[0]} without that training run in the list")
    return list(out.values())
