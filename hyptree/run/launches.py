"""Running one :class:`~hyptree.run.runlist.Run`: skip, resume, record, refuse changed options.

Every run folder a sweep (or a protocol script) starts gets two small files, written
atomically:

* ``launch.json`` - the options of the run (``train.py``'s flags except ``--root`` and
  ``--resume``, the yacs options in order, and the SHA-256 of the dataset and trainer
  config files), written once, when the run first starts;
* ``launch_status.json`` - ``running`` (host, pid, start time), then ``done`` or
  ``failed`` (exit status), with the log file.

A folder whose ``launch.json`` differs from what the new command would run is never
skipped as finished nor resumed: :func:`check_changes` refuses the whole sweep before
anything starts and shows, per folder, each option that changed. The data root
(``--root``) is not compared: the same data may live at another path on another machine.
Folders made before these records existed (no ``launch.json``) are skipped or resumed as
before, with a note that their options could not be checked.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

from hyptree.run.protocols import is_done
from hyptree.run.runlist import Run, SetupError
from hyptree.utils.files import atomic_write_json

__all__ = ["RECORD", "STATUS", "LOG", "options_of", "differences", "check_changes", "execute", "scan", "RunFailed"]

RECORD, STATUS, LOG = "launch.json", "launch_status.json", "launch.log"


class RunFailed(RuntimeError):
    """``train.py`` exited with an error (or an evaluation found no trained model)."""


def _sha256(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def _flag_dict(flags: Sequence[str]) -> dict:
    out, i = {}, 0
    while i < len(flags):
        if i + 1 < len(flags) and not flags[i + 1].startswith("--"):
            out[flags[i]] = flags[i + 1]
            i += 2
        else:
            out[flags[i]] = True
            i += 1
    return out


def options_of(run: Run) -> dict:
    """What ``launch.json`` records of ``run`` and what is compared."""
    flags = {k: v for k, v in _flag_dict(run.flags).items() if k not in ("--root", "--resume")}
    files = {os.path.basename(p): _sha256(p) for p in run.config_files}
    return {"flags": flags, "opts": list(run.opts), "config_sha256": files}


def differences(old: dict, new: dict) -> list[str]:
    """One line per changed option between two :func:`options_of` records."""
    lines = []
    for section in ("flags", "config_sha256"):
        a, b = old.get(section) or {}, new.get(section) or {}
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                what = f"{key} (file content)" if section == "config_sha256" else key
                lines.append(f"{what}: {a.get(key, '(unset)')} -> {b.get(key, '(unset)')}")
    oa, ob = list(old.get("opts") or []), list(new.get("opts") or [])
    da, db = dict(zip(oa[::2], oa[1::2])), dict(zip(ob[::2], ob[1::2]))
    for key in [*dict.fromkeys([*da, *db])]:
        if da.get(key) != db.get(key):
            lines.append(f"{key}: {da.get(key, '(unset)')} -> {db.get(key, '(unset)')}")
    if not lines and oa != ob:
        lines.append(f"yacs options reordered (later ones win): {' '.join(oa)} -> {' '.join(ob)}")
    return lines


def _read_json(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _changes(run: Run) -> list[str] | None:
    """The changed options of an existing folder, None when there is nothing to compare."""
    if not os.path.isdir(run.out_dir):
        return None
    record = _read_json(os.path.join(run.out_dir, RECORD))
    if record is None:
        return None
    return differences(record.get("options") or {}, options_of(run)) or None


def check_changes(runs: Sequence[Run]) -> None:
    """Refuse (:class:`SetupError`) when a started or finished folder recorded other options."""
    bad = []
    for run in runs:
        diff = _changes(run)
        if diff:
            state = "finished" if is_done(run.out_dir) else "started"
            where = os.path.join(run.out_dir, RECORD)
            bad.append(f"  {run.out_dir} ({state}; recorded in {where}):\n" + "\n".join(f"    {d}" for d in diff))
    if bad:
        raise SetupError(
            f"options changed for {len(bad)} run folder(s) that already hold a run; runs are never mixed:\n"
            + "\n".join(bad)
            + "\nrun into another folder (RUN_NAME / --run-name, or OUT / --out), or delete these folders to rerun them"
        )


def state_of(run: Run) -> str:
    """``done``, ``resume`` (folder exists, training unfinished), ``rerun`` (evaluation) or ``new``."""
    if is_done(run.out_dir):
        return "done"
    if os.path.isdir(run.out_dir):
        return "resume" if run.kind == "train" else "rerun"
    return "new"


def _status(run: Run, **fields) -> None:
    atomic_write_json(os.path.join(run.out_dir, STATUS), {"time": time.strftime("%Y-%m-%d %H:%M:%S"), **fields})


def execute(
    run: Run,
    python: str,
    say: Callable[[str], None] = print,
    log: str | None = None,
    env: dict | None = None,
    on_start: Callable[[subprocess.Popen], None] | None = None,
) -> str:
    """Run ``run`` unless finished; returns what happened (``skip``, ``train``, ``resume``, ``eval``).

    ``log``: a file name inside the run folder for train.py's output (appended; the
    terminal when None). Raises :class:`RunFailed` when train.py fails.
    """
    state = state_of(run)
    unchecked = "" if os.path.isfile(os.path.join(run.out_dir, RECORD)) else " (no launch.json: options not checked)"
    diff = _changes(run)
    if diff:
        raise SetupError(f"{run.out_dir}: options changed since it started: " + "; ".join(diff))
    if state == "done":
        say(f"[skip] {run.out_dir} has results.json" + unchecked)
        return "skip"
    if run.kind == "eval":
        if not os.path.isdir(run.after):
            raise RunFailed(f"no trained model at {run.after} (train it first)")
        epoch = run.flags[run.flags.index("--load-epoch") + 1]
        say(f"[eval] {run.out_dir} (model {run.after}, epoch {epoch})")
        what = "eval"
    elif state == "resume":
        say(f"[resume] {run.out_dir}" + unchecked)
        what = "resume"
    else:
        say(f"[train] {run.out_dir}")
        what = "train"
    os.makedirs(run.out_dir, exist_ok=True)
    if not os.path.isfile(os.path.join(run.out_dir, RECORD)):
        record = {"kind": run.kind, "protocol": run.protocol, "options": options_of(run), "root": run.flags[1]}
        atomic_write_json(os.path.join(run.out_dir, RECORD), record)
    argv = [python, *run.argv(resume=what == "resume")]
    log_path = os.path.join(run.out_dir, log) if log else None
    sys.stdout.flush()
    out = open(log_path, "a", encoding="utf-8") if log_path else None  # noqa: SIM115 - closed below
    try:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT if out else None, env=env)
        _status(run, state="running", host=socket.gethostname(), pid=proc.pid, log=log_path, argv=argv)
        if on_start is not None:
            on_start(proc)
        code = proc.wait()
    finally:
        if out is not None:
            out.close()
    if code != 0:
        _status(run, state="failed", returncode=code, log=log_path, argv=argv)
        raise RunFailed(
            f"train.py exited with status {code} for {run.out_dir}" + (f" (log: {log_path})" if log else "")
        )
    _status(run, state="done", returncode=0, log=log_path)
    return what


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _logs(folder: str) -> list[str]:
    names = sorted(n for n in os.listdir(folder) if n == LOG or n.startswith("log.txt"))
    return [os.path.join(folder, n) for n in names]


def scan(root: str) -> list[tuple[str, str, list[str]]]:
    """``(state, folder, log files)`` of every run folder under ``root`` that has a ``launch.json``.

    States: ``done``, ``running`` (on another host, or alive here), ``interrupted`` (its
    process on this host is gone), ``failed (exit N)``, ``unfinished``.
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(f"sweep folder not found: {root}")
    rows = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        if RECORD not in filenames:
            continue
        status = _read_json(os.path.join(dirpath, STATUS)) or {}
        if is_done(dirpath):
            state = "done"
        elif status.get("state") == "failed":
            state = f"failed (exit {status.get('returncode')})"
        elif status.get("state") == "running":
            here = status.get("host") == socket.gethostname()
            state = "interrupted" if here and not _alive(int(status.get("pid", 0))) else "running"
        else:
            state = "unfinished"
        rows.append((state, dirpath, _logs(dirpath)))
    return rows
