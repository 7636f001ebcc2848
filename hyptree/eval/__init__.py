"""Evaluation: metrics, the streaming evaluation loop, the files a run leaves, result tables.

May import every hyptree layer except ``hyptree.run`` (it reads no yacs config)::

    from hyptree.eval import evaluate, hierarchical_metrics, HierarchicalMeter

Plots are :mod:`hyptree.eval.viz` (imported on its own: it loads matplotlib).
"""

from hyptree.eval.evaluate import evaluate
from hyptree.eval.metrics import HierarchicalMeter, hierarchical_metrics
from hyptree.eval.results import to_markdown, write_csv, write_markdown
from hyptree.eval.runfiles import RESULTS_FILE, format_metrics, jsonable, write_run
from hyptree.eval.runs import Group, Run, group_runs, load_runs
from hyptree.eval.tables import METRICS, Table, build_tables, collect, harmonic_mean
from hyptree.eval.trainlog import TRAIN_LOG_FILE, TrainLog

__all__ = [
    "evaluate",
    "hierarchical_metrics",
    "HierarchicalMeter",
    "write_run",
    "RESULTS_FILE",
    "jsonable",
    "format_metrics",
    "TrainLog",
    "TRAIN_LOG_FILE",
    "Run",
    "load_runs",
    "Group",
    "group_runs",
    "METRICS",
    "Table",
    "build_tables",
    "collect",
    "harmonic_mean",
    "to_markdown",
    "write_markdown",
    "write_csv",
]
