"""``python -m hyptree results OUTPUT_DIR [--csv OUT.csv] [--markdown OUT.md] [--plots] [--paper]``.

The tables of :mod:`hyptree.eval.tables` as Markdown and long-format CSV, the column choice
(``--metrics``) and the command line.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from collections.abc import Sequence

from hyptree.eval.runs import load_runs
from hyptree.eval.tables import ALL_METRICS, CSV_FIELDS, METRIC_GROUPS, METRICS, Table, collect
from hyptree.utils.files import atomic_write_bytes, atomic_write_text

__all__ = ["select_metrics", "to_markdown", "csv_text", "write_markdown", "write_csv", "main"]


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def to_markdown(tables: Sequence[Table]) -> str:
    out = []
    for t in tables:
        out.append(f"### {t.title}\n")
        out.append("| " + " | ".join(_md_escape(h) for h in t.header) + " |")
        out.append("|" + "|".join("---" for _ in t.header) + "|")
        for row in t.rows:
            out.append("| " + " | ".join(_md_escape(c) for c in row) + " |")
        out.append("")
    return "\n".join(out)


def write_markdown(tables: Sequence[Table], path: str) -> None:
    atomic_write_text(path, to_markdown(tables))


def write_csv(tables: Sequence[Table], path_or_file) -> None:
    """Long format: one row per (table, group, part, metric) with mean, std, n, seeds, note.

    A path is written atomically; an open text file gets the rows as they are.
    """
    if isinstance(path_or_file, (str, os.PathLike)):
        # bytes: the csv module's \r\n line ends reach the file untranslated
        atomic_write_bytes(os.fspath(path_or_file), csv_text(tables).encode("utf-8"))
        return
    writer = csv.DictWriter(path_or_file, fieldnames=CSV_FIELDS)
    writer.writeheader()
    for t in tables:
        writer.writerows(t.csv_rows)


def csv_text(tables: Sequence[Table]) -> str:
    buf = io.StringIO()
    write_csv(tables, buf)
    return buf.getvalue()


def _plot_runs(root: str) -> int:
    from hyptree.eval import viz

    count = 0
    for run in load_runs(root):
        try:
            written = viz.plot_run(run.path)
        except Exception as e:  # one bad run must not stop the tables
            print(f"warning: plots for {run.path} failed: {e}", file=sys.stderr)
            continue
        count += len(written)
    return count


def select_metrics(names: Sequence[str]) -> list[str]:
    """``--metrics`` words to metric keys: names of :data:`ALL_METRICS` (any case) or the groups
    ``default``, ``mistakes``, ``all``; duplicates dropped, order kept. Unknown names raise."""
    by_lower = {m.lower(): m for m in ALL_METRICS}
    out: list[str] = []
    for name in names:
        group = METRIC_GROUPS.get(name.lower())
        if group is None and name.lower() not in by_lower:
            raise ValueError(
                f"unknown metric {name!r}; choose from {', '.join(ALL_METRICS)} or {', '.join(METRIC_GROUPS)}"
            )
        out += [m for m in (group or (by_lower[name.lower()],)) if m not in out]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hyptree results",
        description="Collect results.json files under OUTPUT_DIR into mean +- std tables "
        "(few-shot, ablation, base-to-novel, cross-domain).",
    )
    parser.add_argument("output_dir", help="folder searched recursively for results.json")
    parser.add_argument("--csv", help="write the tables here (long format, one row per cell)")
    parser.add_argument("--markdown", help="write the Markdown tables here")
    parser.add_argument(
        "--plots",
        action="store_true",
        help="also write curvatures/losses/depth_acc/poincare PNGs into every run folder",
    )
    parser.add_argument(
        "--metrics",
        nargs="+",
        default=["default"],
        help=f"columns: metric names ({', '.join(ALL_METRICS)}) or groups default (= {' '.join(METRICS)}), "
        "mistakes, all (default: default)",
    )
    parser.add_argument("--seeds", nargs="+", type=int, help="seeds every group should have (flag missing ones)")
    parser.add_argument(
        "--match", nargs="+", default=[], help="keep groups having all these folder names (or dataset/trainer/preset)"
    )
    parser.add_argument("--ci95", action="store_true", help="show the 95%% confidence interval instead of std")
    parser.add_argument("--paper", action="store_true", help="add the paper's LA/HCA/MTA and the difference")
    args = parser.parse_args(argv)
    try:
        metrics = select_metrics(args.metrics)
    except ValueError as e:
        parser.error(str(e))
    try:
        tables = collect(args.output_dir, metrics, args.seeds, args.ci95, args.match)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.paper:
        from hyptree.eval.paper import NO_MATCH, add_paper_columns

        if add_paper_columns(tables) == 0:
            print(NO_MATCH)
    text = to_markdown(tables)
    print(text)
    if args.markdown:
        write_markdown(tables, args.markdown)
        print(f"wrote {args.markdown}")
    if args.csv:
        write_csv(tables, args.csv)
        print(f"wrote {args.csv}")
    if args.plots:
        n = _plot_runs(args.output_dir)
        print(f"wrote {n} plot(s) into the run folders")
    return 0
