"""Result tables: the runs of :mod:`hyptree.eval.runs` as mean +- std tables.

Written out (Markdown, CSV) and driven from the command line by :mod:`hyptree.eval.results`.

:func:`collect` loads and groups every run under ``OUTPUT_DIR``
(:func:`~hyptree.eval.runs.load_runs`, :func:`~hyptree.eval.runs.group_runs`) and tabulates
the groups by protocol (:attr:`~hyptree.eval.runs.Group.kind`).

Tables (Markdown and a long-format CSV, one row per cell):

* **Few-shot / ablations**: one row per group, ``mean +- std`` of LA, HCA, MTA and
  node accuracy over seeds.
* **Base-to-novel** (one table per metric): Base, Novel and their harmonic mean
  ``H = 2 B N / (B + N)`` computed from the mean Base and mean Novel values (as CoOp,
  CoCoOp and MaPLe report it). Base comes from an eval-only ``test_base`` run when
  there is one, else from the final test of the training run.
* **Cross-domain** (one table per metric): the source (the training run's test) and
  each target, plus the mean over targets.

Seeds: ``std`` is the population standard deviation (``numpy.std``, as CoOp's
``parse_test_res.py``); ``--ci95`` shows ``1.96 std / sqrt(n)`` instead. The seeds
column counts the seeds averaged. Nothing is averaged silently over uneven seeds: when
a seed lacks one part (e.g. the novel evaluation of seed 3), only the seeds with every
part are averaged and the note says which seed was dropped and why; a seed present in
other groups of the same table and dataset (or listed with ``--seeds``) but absent here
is noted as missing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from hyptree.eval.runs import DASH, Group, group_runs, load_runs, seed_order

__all__ = [
    "METRICS",
    "MISTAKE_METRICS",
    "ALL_METRICS",
    "CSV_FIELDS",
    "Cell",
    "Table",
    "build_tables",
    "collect",
    "harmonic_mean",
]

METRICS = ("LA", "HCA", "MTA", "node_acc")
# every scalar of results.json's "metrics" a table can show (--metrics; docs/metrics.md)
MISTAKE_METRICS = ("severity", "hdist@1", "hdist@5", "TIE", "hP", "hR", "hF1", "TD_LA", "TD_agree", "consistency")
ALL_METRICS = METRICS + MISTAKE_METRICS
METRIC_GROUPS = {"default": METRICS, "mistakes": MISTAKE_METRICS, "all": ALL_METRICS}
CSV_FIELDS = (
    "table",
    "group",
    "dataset",
    "trainer",
    "config",
    "shots",
    "part",
    "metric",
    "mean",
    "std",
    "n",
    "seeds",
    "note",
)
_TARGET_ORDER = ("imagenetv2", "imagenetsketch", "imageneta", "imagenetr")


# --------------------------------------------------------------------------- statistics


def harmonic_mean(base, novel):
    """``2 b n / (b + n)``; ``None`` when either is missing, 0 when both are 0."""
    if base is None or novel is None:
        return None
    if base + novel == 0:
        return 0.0
    return 2.0 * base * novel / (base + novel)


@dataclass
class Cell:
    mean: float | None
    std: float | None
    n: int
    seeds: tuple

    def text(self) -> str:
        if self.mean is None:
            return DASH
        if self.std is None:
            return f"{self.mean:.2f}"
        return f"{self.mean:.2f} ± {self.std:.2f}"


def _cell(runs_by_seed: dict, seeds: Sequence, metric: str, ci95: bool) -> Cell:
    values, used = [], []
    for s in seeds:
        run = runs_by_seed.get(s)
        if run is None:
            continue
        v = run.metrics.get(metric)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            values.append(float(v))
            used.append(s)
    if not values:
        return Cell(None, None, 0, ())
    arr = np.asarray(values)
    std = float(arr.std())
    if ci95:
        std = 1.96 * std / math.sqrt(len(arr))
    return Cell(float(arr.mean()), std, len(arr), tuple(used))


def _fmt_seeds(seeds) -> str:
    return ",".join(DASH if s is None else str(s) for s in sorted(seeds, key=seed_order))


def _complete_seeds(slots: dict[str, dict], notes: list) -> tuple[list, bool]:
    """Seeds present in every slot (noting the dropped ones); all seeds when none is complete."""
    present = [s for s in slots.values() if s]
    all_seeds = set().union(*[set(s) for s in present]) if present else set()
    complete = set.intersection(*[set(s) for s in present]) if present else set()
    for seed in sorted(all_seeds - complete, key=seed_order):
        missing = [name for name, s in slots.items() if s and seed not in s]
        notes.append(f"seed {_fmt_seeds([seed])} dropped: {', '.join(missing)} missing")
    if complete:
        return sorted(complete, key=seed_order), True
    if len(present) > 1:
        notes.append("no seed has every part: parts averaged separately")
    return sorted(all_seeds, key=seed_order), False


def _missing_expected(have: Iterable, expected: Iterable) -> str:
    missing = sorted(set(expected) - set(have), key=seed_order)
    return f"missing seed(s) {_fmt_seeds(missing)}" if missing else ""


# --------------------------------------------------------------------------- tables


@dataclass
class Table:
    """A rendered table: Markdown header and rows, and the long-format CSV rows."""

    name: str  # fewshot | ablation | base2novel | crossdomain
    title: str
    header: list
    rows: list = field(default_factory=list)
    csv_rows: list = field(default_factory=list)


def _csv_row(table, g: Group, part, metric, cell: Cell | None, value=None, note=""):
    mean = cell.mean if cell is not None else value
    return {
        "table": table,
        "group": g.name,
        "dataset": g.dataset,
        "trainer": g.trainer,
        "config": g.config,
        "shots": g.shots,
        "part": part,
        "metric": metric,
        "mean": "" if mean is None else f"{mean:.4f}",
        "std": "" if cell is None or cell.std is None else f"{cell.std:.4f}",
        "n": "" if cell is None else cell.n,
        "seeds": "" if cell is None else _fmt_seeds(cell.seeds),
        "note": note,
    }


def _expected_seeds(groups: list[Group], seeds_of, cli_seeds) -> dict[str, set]:
    """Per dataset: the seeds to expect (``--seeds``, else the union over the table's groups)."""
    out: dict[str, set] = {}
    for g in groups:
        out.setdefault(g.dataset, set()).update(seeds_of(g))
    if cli_seeds:
        return {d: set(cli_seeds) for d in out}
    return out


def _note(notes: list) -> str:
    seen = []
    for n in notes:
        if n and n not in seen:
            seen.append(n)
    return "; ".join(seen)


def _plain_table(kind: str, groups: list[Group], metrics, cli_seeds, ci95) -> Table:
    title = {"fewshot": "Few-shot", "ablation": "Ablations"}[kind]
    table = Table(kind, title, ["Dataset", "Shots", "Trainer", "Config", "Seeds", *metrics, "Note"])
    expected = _expected_seeds(groups, lambda g: g.train.keys(), cli_seeds)
    for g in groups:
        notes = list(g.notes)
        seeds = sorted(g.train, key=seed_order)
        notes.append(_missing_expected(seeds, expected[g.dataset]))
        cells = [_cell(g.train, seeds, m, ci95) for m in metrics]
        note = _note(notes)
        table.rows.append([g.dataset, g.shots, g.trainer, g.config, str(len(seeds)), *[c.text() for c in cells], note])
        table.csv_rows += [_csv_row(kind, g, "all", m, c, note=note) for m, c in zip(metrics, cells)]
    return table


def _base_slot(g: Group) -> dict:
    """Base results per seed: eval-only ``test_base`` runs, else the training runs' own test."""
    base = dict(g.parts.get("base", {}))
    for seed, run in g.train.items():
        if seed not in base and run.record.get("split", "test") == "test":
            base[seed] = run
    return base


def _base2novel_tables(groups: list[Group], metrics, cli_seeds, ci95) -> list[Table]:
    tables = [
        Table(
            "base2novel",
            f"Base-to-novel — {m}",
            ["Dataset", "Shots", "Trainer", "Config", "Seeds", "Base", "Novel", "H", "Note"],
        )
        for m in metrics
    ]
    expected = _expected_seeds(groups, lambda g: set(_base_slot(g)) | set(g.parts.get("novel", {})), cli_seeds)
    for g in groups:
        notes = list(g.notes)
        slots = {"base": _base_slot(g), "novel": g.parts.get("novel", {})}
        for name, slot in slots.items():
            if not slot:
                notes.append(f"no {name} runs")
        seeds, _ = _complete_seeds(slots, notes)
        notes.append(_missing_expected(set(slots["base"]) | set(slots["novel"]), expected[g.dataset]))
        note = _note(notes)
        for table, m in zip(tables, metrics):
            b = _cell(slots["base"], seeds, m, ci95)
            n = _cell(slots["novel"], seeds, m, ci95)
            h = harmonic_mean(b.mean, n.mean)
            count = min(b.n, n.n) if (b.n and n.n) else max(b.n, n.n)
            table.rows.append(
                [
                    g.dataset,
                    g.shots,
                    g.trainer,
                    g.config,
                    str(count),
                    b.text(),
                    n.text(),
                    DASH if h is None else f"{h:.2f}",
                    note,
                ]
            )
            table.csv_rows += [
                _csv_row("base2novel", g, "base", m, b, note=note),
                _csv_row("base2novel", g, "novel", m, n, note=note),
                _csv_row("base2novel", g, "H", m, None, value=h, note=note),
            ]
    return tables


def _target_key(name: str):
    norm = re.sub(r"[^a-z0-9]", "", name.lower())
    norm = norm[:-4] if norm.endswith("hier") else norm
    return (_TARGET_ORDER.index(norm), "") if norm in _TARGET_ORDER else (len(_TARGET_ORDER), name)


def _crossdomain_tables(groups: list[Group], metrics, cli_seeds, ci95) -> list[Table]:
    targets = sorted({p for g in groups for p in g.parts}, key=_target_key)
    tables = [
        Table(
            "crossdomain",
            f"Cross-domain — {m}",
            ["Source", "Shots", "Trainer", "Config", "Seeds", "On source", *targets, "Target mean", "Note"],
        )
        for m in metrics
    ]
    expected = _expected_seeds(groups, lambda g: set(g.train).union(*[set(p) for p in g.parts.values()]), cli_seeds)
    for g in groups:
        notes = list(g.notes)
        slots = {"source": g.train, **{t: g.parts.get(t, {}) for t in targets}}
        absent = [t for t in targets if not slots[t]]
        if not g.train:
            notes.append("no source training run")
        if absent:
            notes.append(f"no runs on {', '.join(absent)}")
        seeds, _ = _complete_seeds({k: v for k, v in slots.items() if v}, notes)
        notes.append(_missing_expected(set(g.train).union(*[set(p) for p in g.parts.values()]), expected[g.dataset]))
        note = _note(notes)
        for table, m in zip(tables, metrics):
            src = _cell(g.train, seeds, m, ci95)
            tcells = [_cell(slots[t], seeds, m, ci95) for t in targets]
            means = [c.mean for c in tcells]
            avg = None if (not means or any(v is None for v in means)) else float(np.mean(means))
            count = max([src.n] + [c.n for c in tcells])
            table.rows.append(
                [
                    g.dataset,
                    g.shots,
                    g.trainer,
                    g.config,
                    str(count),
                    src.text(),
                    *[c.text() for c in tcells],
                    DASH if avg is None else f"{avg:.2f}",
                    note,
                ]
            )
            table.csv_rows.append(_csv_row("crossdomain", g, "source", m, src, note=note))
            table.csv_rows += [_csv_row("crossdomain", g, t, m, c, note=note) for t, c in zip(targets, tcells)]
            table.csv_rows.append(_csv_row("crossdomain", g, "target_mean", m, None, value=avg, note=note))
    return tables


def build_tables(
    groups: Sequence[Group], metrics: Sequence[str] = METRICS, seeds: Sequence[int] | None = None, ci95: bool = False
) -> list[Table]:
    """The few-shot, ablation, base-to-novel and cross-domain tables of ``groups`` (non-empty ones)."""
    metrics = list(metrics)
    by_kind: dict[str, list[Group]] = {}
    for g in groups:
        by_kind.setdefault(g.kind, []).append(g)
    tables: list[Table] = []
    for kind in ("fewshot", "ablation"):
        if by_kind.get(kind):
            tables.append(_plain_table(kind, by_kind[kind], metrics, seeds, ci95))
    if by_kind.get("base2novel"):
        tables += _base2novel_tables(by_kind["base2novel"], metrics, seeds, ci95)
    if by_kind.get("crossdomain"):
        tables += _crossdomain_tables(by_kind["crossdomain"], metrics, seeds, ci95)
    return tables


def _matches(g: Group, match: Sequence[str]) -> bool:
    comps = set(g.key) | set(g.label_parts)
    rec = g.representative().record
    comps |= {str(rec.get(k)) for k in ("dataset", "trainer", "preset")}
    return all(m in comps for m in match)


def collect(
    root: str,
    metrics: Sequence[str] = METRICS,
    seeds: Sequence[int] | None = None,
    ci95: bool = False,
    match: Sequence[str] = (),
) -> list[Table]:
    """Load, group and tabulate every run under ``root``.

    ``match``: keep only groups having every given string as a folder name of their path
    (or as their dataset / trainer / preset), e.g. ``["cifar100", "MaPLeHypTree"]``.
    """
    groups = group_runs(load_runs(root))
    if match:
        groups = [g for g in groups if _matches(g, match)]
        if not groups:
            raise FileNotFoundError(f"no runs under {root} match {' '.join(match)}")
    return build_tables(groups, metrics, seeds, ci95)


# --------------------------------------------------------------------------- output
