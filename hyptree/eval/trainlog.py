"""The training log: one JSON line per training iteration (``train_log.jsonl``)."""

from __future__ import annotations

import json
import os

from hyptree.eval.runfiles import jsonable
from hyptree.utils.files import atomic_write_text

__all__ = ["TrainLog", "TRAIN_LOG_FILE"]

TRAIN_LOG_FILE = "train_log.jsonl"  # in the run folder


class TrainLog:
    """Append-only JSON-lines log of training iterations (``train_log.jsonl``).

    One object per line, e.g. ``{"epoch": 1, "iteration": 0, "batch": 0, "lr": 0.002,
    "total": ..., "cut": ..., "curv_text": ..., ...}``: ``epoch`` is 1-based (Dassl's
    printout), ``iteration`` the 0-based global step. Lines are flushed as written so a
    crashed run keeps its log. :meth:`truncate` drops the lines of epochs after a resume
    point (an interrupted epoch is retrained, and logged, again).
    """

    def __init__(self, path: str):
        self.path = path
        if os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        self._file = None

    def append(self, **fields) -> None:
        if self._file is None:
            # appended line by line, not through hyptree.utils.files (whose writes replace whole
            # files): a crashed run keeps every line written so far
            self._file = open(self.path, "a", encoding="utf-8")
        self._file.write(json.dumps(jsonable(fields), allow_nan=False) + "\n")
        self._file.flush()

    def truncate(self, completed_epochs: int) -> int:
        """Keep only lines with ``epoch <= completed_epochs``; returns how many were dropped."""
        self.close()
        if not os.path.isfile(self.path):
            return 0
        rows = self.read(self.path)
        keep = [r for r in rows if r.get("epoch", 0) <= completed_epochs]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in keep))
        return len(rows) - len(keep)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    @staticmethod
    def read(path: str) -> list:
        """All records of a log (a torn last line from a crash is skipped)."""
        out = []
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return out
