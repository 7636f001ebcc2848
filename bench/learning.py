"""Does the method learn? Zero-shot vs trained presets on ToyWorld, LA / HCA / MTA mean +- std.

Every run is a real ``train.py`` run (in this process, one after the other): the toy
dataset (ToyWorld, ``configs/datasets/toy.yaml``), the tiny CPU config
(``configs/trainers/<TRAINER>/tiny_cpu.yaml``) and the toy default CLIP (the tiny CLIP
pretrained on ToyWorld captions, made on first use under ``--data``), as the protocol
scripts run them. Variants (:data:`VARIANTS`):

* ``zero-shot``: CoOpHier with its context initialised from "a photo of a", not trained
  (eval-only without a checkpoint): plain CLIP prompts "a photo of a {node}.";
* ``vanilla`` / ``protect`` / ``hyptree``: MaPLeHypTree with that preset;
* ``euclidean`` / ``shared`` / ``separate``: hyptree with that curvature mode
  (``hyptree.run.protocols.ABLATIONS``).

Protocols (:data:`PROTOCOLS`): ``b2n`` (train on the base classes, then evaluate on the
novel classes with the novel sub-tree; Base and Novel rows), ``fs4`` / ``fs16`` (few-shot
on all classes; ToyWorld has 16 training images per class, so 16 shots is all of them).

    PYTHONPATH=. python bench/learning.py --quick     # one seed
    PYTHONPATH=. python bench/learning.py             # seeds 1 2 3

One CPU thread by default (``--threads``), as the other bench scripts.

Ends with one ``result:`` line (LA / HCA / MTA means per protocol and variant).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_H = "TRAINER.HYPTREE."
#: name -> (trainer, preset, extra yacs options, trained?)
VARIANTS: dict[str, tuple[str, str, list[str], bool]] = {
    "zero-shot": ("CoOpHier", "vanilla", ["TRAINER.COOP.CTX_INIT", "a photo of a"], False),
    "vanilla": ("MaPLeHypTree", "vanilla", [], True),
    "protect": ("MaPLeHypTree", "protect", [], True),
    "hyptree": ("MaPLeHypTree", "hyptree", [], True),
    "euclidean": ("MaPLeHypTree", "hyptree", [_H + "CURVATURE.MODE", "euclidean"], True),
    "shared": ("MaPLeHypTree", "hyptree", [_H + "CURVATURE.MODE", "shared"], True),
    "separate": ("MaPLeHypTree", "hyptree", [_H + "CURVATURE.MODE", "separate"], True),
}
#: name -> (shots, base-to-novel?)
PROTOCOLS: dict[str, tuple[int, bool]] = {"b2n": (16, True), "fs4": (4, False), "fs16": (16, False)}
METRICS = ("LA", "HCA", "MTA")


def _train_py(argv: list[str]) -> dict:
    """One ``train.py`` run in this process (its console output muted: it goes to the run's
    ``log.txt``); returns the run's ``results.json`` metrics."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    import train

    args = train.build_parser().parse_args(argv)
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        saved = sys.stdout
        try:
            train.main(args)
        finally:
            sys.stdout = saved  # Dassl's setup_logger replaces sys.stdout
    with open(os.path.join(args.output_dir, "results.json"), encoding="utf-8") as f:
        return json.load(f)["metrics"]


def run_one(protocol: str, variant: str, seed: int, data: str, out: str, opts: list[str]) -> dict[str, dict]:
    """The metrics of one (protocol, variant, seed): ``{"all"|"base"|"novel": {LA, HCA, MTA}}``."""
    trainer, preset, extra, trained = VARIANTS[variant]
    shots, b2n = PROTOCOLS[protocol]
    folder = os.path.join(out, protocol, variant, f"seed{seed}")
    common = [
        "--root",
        data,
        "--seed",
        str(seed),
        "--trainer",
        trainer,
        "--dataset-config-file",
        os.path.join(ROOT, "configs/datasets/toy.yaml"),
        "--config-file",
        os.path.join(ROOT, f"configs/trainers/{trainer}/tiny_cpu.yaml"),
    ]
    yacs = ["DATASET.NUM_SHOTS", str(shots), _H + "PRESET", preset, *extra, *opts]

    def run(sub: str, subsample: str, *flags: str) -> dict:
        argv = [*common, "--output-dir", os.path.join(folder, sub), *flags, "DATASET.SUBSAMPLE_CLASSES", subsample]
        return {k: float(v) for k, v in _train_py(argv + yacs).items() if k in METRICS}

    if not b2n:
        return {"all": run("train", "all") if trained else run("eval", "all", "--eval-only")}
    if not trained:
        return {"base": run("base", "base", "--eval-only"), "novel": run("novel", "new", "--eval-only")}
    base = run("train", "base")
    epoch = _last_epoch(os.path.join(folder, "train"))
    novel = run("novel", "new", "--eval-only", "--model-dir", os.path.join(folder, "train"), "--load-epoch", epoch)
    return {"base": base, "novel": novel}


def _last_epoch(run_dir: str) -> str:
    with open(os.path.join(run_dir, "results.json"), encoding="utf-8") as f:
        return str(json.load(f)["epoch"])


def run_benchmark(protocols, variants, seeds, data: str, out: str, opts=(), progress=True) -> dict:
    """``{(protocol, part, variant): {metric: [value per seed]}}`` for every combination."""
    from tqdm import tqdm

    jobs = [(p, v, s) for p in protocols for v in variants for s in seeds]
    table: dict = {}
    for p, v, s in tqdm(jobs, desc="learning benchmark runs", disable=not progress):
        for part, metrics in run_one(p, v, s, data, out, list(opts)).items():
            cell = table.setdefault((p, part, v), {m: [] for m in METRICS})
            for m in METRICS:
                cell[m].append(metrics[m])
    return table


def _cell(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def format_table(table: dict) -> str:
    """Markdown: one row per (protocol, part, variant), LA / HCA / MTA as mean ± std over seeds."""
    lines = ["| protocol | classes | variant | seeds | LA | HCA | MTA |", "|---|---|---|---|---|---|---|"]
    for (p, part, v), cell in table.items():
        n = len(cell["LA"])
        lines.append(f"| {p} | {part} | {v} | {n} | " + " | ".join(_cell(cell[m]) for m in METRICS) + " |")
    return "\n".join(lines)


def result_line(table: dict) -> str:
    items = [
        f"{m}_{p}_{part}_{v.replace('-', '')}={statistics.mean(cell[m]):.2f}"
        for (p, part, v), cell in table.items()
        for m in METRICS
    ]
    return "result: " + " ".join(items)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one seed (1) instead of 1 2 3")
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=list(PROTOCOLS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--data", default=os.path.join(ROOT, "data"), help="dataset root (toy_world, toy_clip)")
    parser.add_argument("--out", default=os.path.join(ROOT, "output", "bench_learning"), help="run folders")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (bench/README.md: why 1)")
    parser.add_argument("opts", nargs="*", help="extra yacs KEY VALUE options for every run")
    args = parser.parse_args(argv)
    seeds = args.seeds or ([1] if args.quick else [1, 2, 3])
    import torch

    torch.set_num_threads(args.threads)
    start = time.time()
    table = run_benchmark(args.protocols, args.variants, seeds, args.data, args.out, args.opts)
    print(f"ToyWorld, tiny_cpu configs, seeds {' '.join(map(str, seeds))} ({time.time() - start:.0f} s)")
    print(format_table(table))
    print(result_line(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
