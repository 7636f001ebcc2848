"""``python -m hyptree sweep``: a protocol grid run serially, over a machine's GPUs, or on SLURM.

::

    python -m hyptree sweep run [GRID.yaml] [--protocols ...] [--datasets ...] [--trainers ...]
        [--presets ...] [--configs ...] [--shots ...] [--seeds ...] [--launcher serial|local|slurm]
        [--gpus 0,1,2,3] [--partition P --time MIN ...] [--dry-run] [-- YACS_OPTS ...]
    python -m hyptree sweep status DIR     # done / running / failed run folders with their logs
    python -m hyptree sweep tables DIR     # the result tables (python -m hyptree results DIR)

The run list is :mod:`hyptree.run.runlist` (the protocol scripts are wrappers over
``sweep run --launcher serial``); each training run and the evaluations of its checkpoint
form one job (:func:`~hyptree.run.runlist.chains`), so an evaluation always runs after its
training, on the same GPU. Launchers:

* ``serial`` - one run after the other in this process, output to the terminal; the first
  failure stops the sweep (the scripts' behaviour);
* ``local --gpus 0,1`` - one job per GPU at a time (``CUDA_VISIBLE_DEVICES``), each run's
  output in ``RUN_DIR/launch.log``; a failed job does not stop the others;
* ``slurm`` - one submitit job array (:class:`ChainJob`); on preemption or timeout submitit
  calls :meth:`ChainJob.checkpoint`, which stops train.py and requeues the same job, and
  the requeued job resumes the run from its last Dassl checkpoint (``--resume``).

Finished runs are skipped, started ones resumed, changed options refused
(:mod:`hyptree.run.launches`). submitit is imported only by the ``local`` test hook and the
``slurm`` launcher (``pip install -e ".[sweep]"``).
"""

from __future__ import annotations

import argparse
import os
import queue
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import yaml

from hyptree.run import launches as L
from hyptree.run.runlist import PROTOCOLS, Run, Settings, SetupError, chains, grid_runs, split_opts

__all__ = [
    "ChainJob",
    "load_grid",
    "build_runs",
    "run_serial",
    "run_local",
    "slurm_parameters",
    "submit_jobs",
    "submit_slurm",
    "print_tables",
    "status",
    "parser",
    "main",
]

GRID_LISTS = ("protocols", "datasets", "trainers", "presets", "configs", "shots", "seeds")
SETTINGS_KEYS = {
    "data": str,
    "out": str,
    "extra_opts": None,
    "load_epoch": int,
    "run_name": str,
    "dataset_configs": str,
    "trainer_configs": str,
    "train_py": str,
    "test_base": bool,
    "source": str,
    "targets": tuple,
    "variants": tuple,
}
SLURM_KEYS = ("partition", "gpus", "cpus", "mem", "time", "account", "qos", "array_parallelism", "sbatch", "setup")
SLURM_DEFAULTS = {"gpus": 1, "cpus": 8, "time": 24 * 60, "array_parallelism": 64}


def _need_submitit():
    try:
        import submitit
    except ImportError:
        raise SystemExit(
            'error: the slurm launcher needs submitit: pip install -e ".[sweep]" (or pip install submitit)'
        ) from None
    return submitit


# --------------------------------------------------------------------------- grid


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def load_grid(path: str) -> dict:
    """A grid file: a mapping of the grid lists, settings and a ``slurm:`` section."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise SetupError(f"grid file not found: {path}") from None
    except yaml.YAMLError as e:
        raise SetupError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise SetupError(f"{path}: a grid is a mapping (protocols: ..., datasets: ..., ...)")
    allowed = {*GRID_LISTS, *SETTINGS_KEYS, "slurm", "launcher", "gpus"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise SetupError(f"{path}: unknown key(s) {', '.join(unknown)}; expected some of {', '.join(sorted(allowed))}")
    slurm = data.get("slurm") or {}
    bad = sorted(set(slurm) - set(SLURM_KEYS)) if isinstance(slurm, dict) else ["(not a mapping)"]
    if bad:
        raise SetupError(f"{path}: slurm: unknown key(s) {', '.join(bad)}; expected some of {', '.join(SLURM_KEYS)}")
    for key in GRID_LISTS:
        if key in data:
            data[key] = [str(v) for v in _as_list(data[key])]
    return data


def _settings(grid: dict, python_opts: Sequence[str]) -> Settings:
    kwargs = {}
    for key, kind in SETTINGS_KEYS.items():
        if grid.get(key) is None:
            continue
        value = grid[key]
        if key == "extra_opts":
            value = split_opts(value) if isinstance(value, str) else tuple(str(v) for v in value)
        elif kind is tuple:
            value = tuple(str(v) for v in (value.split() if isinstance(value, str) else value))
        else:
            value = kind(value)
        kwargs[key] = value
    return Settings(cli_opts=tuple(python_opts), **kwargs)


def build_runs(grid: dict, opts: Sequence[str]) -> list[Run]:
    return grid_runs(grid, _settings(grid, opts))


# --------------------------------------------------------------------------- launchers


def run_serial(runs: Sequence[Run], python: str) -> int:
    """Today's scripts: in order, output to the terminal, stop at the first failure."""
    for run in runs:
        try:
            L.execute(run, python, say=lambda m: print(m, flush=True))
        except L.RunFailed as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    return 0


def _run_chain(chain: Sequence[Run], python: str, env: dict | None, say, on_start=None) -> bool:
    for run in chain:
        try:
            L.execute(run, python, say=say, log=L.LOG, env=env, on_start=on_start)
        except L.RunFailed as e:
            say(f"[failed] {e}")
            return False
    return True


def run_local(runs: Sequence[Run], python: str, gpus: Sequence[str]) -> int:
    """One job (a training run and its evaluations) per GPU at a time."""
    from tqdm import tqdm

    free: queue.Queue = queue.Queue()
    for gpu in gpus:
        free.put(gpu)
    jobs = chains(runs)
    bar = tqdm(total=len(jobs), desc="sweep jobs", unit="job")

    def work(chain):
        gpu = free.get()
        try:
            env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(gpu)}
            return _run_chain(chain, python, env, lambda m: tqdm.write(f"[gpu {gpu}] {m}"))
        finally:
            free.put(gpu)
            bar.update(1)

    with ThreadPoolExecutor(max_workers=len(gpus)) as pool:
        ok = list(pool.map(work, jobs))
    bar.close()
    failed = ok.count(False)
    if failed:
        print(f"{failed} of {len(jobs)} job(s) failed; see python -m hyptree sweep status", file=sys.stderr)
    return 1 if failed else 0


class ChainJob:
    """A submitit job: one training run and its evaluations, requeued on preemption / timeout."""

    def __init__(self, chain: Sequence[Run], python: str, cwd: str):
        self.chain, self.python, self.cwd = list(chain), python, cwd
        self._proc = None

    def __getstate__(self):
        return {"chain": self.chain, "python": self.python, "cwd": self.cwd, "_proc": None}

    def __call__(self) -> bool:
        os.chdir(self.cwd)

        def started(proc):
            self._proc = proc

        ok = _run_chain(self.chain, self.python, None, lambda m: print(m, flush=True), started)
        if not ok:
            raise RuntimeError(f"a run of {self.chain[0].out_dir} failed; see its {L.LOG}")
        return ok

    def checkpoint(self, *args, **kwargs):
        """Stop train.py and resubmit this job: it skips finished runs and resumes the started one."""
        from submitit.helpers import DelayedSubmission

        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except Exception:
                proc.kill()
        return DelayedSubmission(ChainJob(self.chain, self.python, self.cwd))


def slurm_parameters(cfg: dict, job_name: str = "hyptree") -> dict:
    """submitit SlurmExecutor parameters from the sweep's slurm settings."""
    cfg = {**SLURM_DEFAULTS, **{k: v for k, v in cfg.items() if v is not None}}
    params = {
        "job_name": job_name,
        "gpus_per_node": int(cfg["gpus"]),
        "cpus_per_task": int(cfg["cpus"]),
        "time": int(cfg["time"]),
        "array_parallelism": int(cfg["array_parallelism"]),
        "ntasks_per_node": 1,
    }
    for ours, theirs in (("partition", "partition"), ("account", "account"), ("qos", "qos")):
        if cfg.get(ours):
            params[theirs] = str(cfg[ours])
    if cfg.get("mem") is not None:
        params["mem"] = f"{cfg['mem']}GB" if str(cfg["mem"]).isdigit() else str(cfg["mem"])
    if cfg.get("sbatch"):
        params["additional_parameters"] = dict(cfg["sbatch"])
    if cfg.get("setup"):
        params["setup"] = list(cfg["setup"])
    return params


def submit_jobs(executor, runs: Sequence[Run], python: str) -> list:
    """The unfinished jobs of ``runs`` as one batch (a SLURM job array) of :class:`ChainJob`."""
    todo = [c for c in chains(runs) if any(L.state_of(r) != "done" for r in c)]
    if not todo:
        print("every run is finished; nothing submitted")
        return []
    with executor.batch():
        jobs = [executor.submit(ChainJob(c, python, os.getcwd())) for c in todo]
    for job, chain in zip(jobs, todo):
        print(f"[submitted] {job.job_id} {chain[0].out_dir} (+{len(chain) - 1} evaluation(s))")
    return jobs


def submit_slurm(runs: Sequence[Run], python: str, params: dict, folder: str, max_requeue: int = 3) -> list:
    """One job array on SLURM (submitit's SlurmExecutor, ``params`` from :func:`slurm_parameters`)."""
    submitit = _need_submitit()
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=max_requeue)
    executor.update_parameters(**params)
    return submit_jobs(executor, runs, python)


# --------------------------------------------------------------------------- tables, status


def print_tables(runs: Sequence[Run], seeds: Sequence[int] | None) -> None:
    """The tables of exactly these runs, one collection per protocol root."""
    from hyptree.eval.results import to_markdown
    from hyptree.eval.runs import group_runs, load_runs
    from hyptree.eval.tables import build_tables

    wanted = {os.path.abspath(r.out_dir) for r in runs}
    for root in dict.fromkeys(r.table_root for r in runs):
        try:
            have = [r for r in load_runs(root) if os.path.abspath(r.path) in wanted]
        except FileNotFoundError as e:
            print(f"no tables: {e}")
            continue
        if have:
            print()
            print(to_markdown(build_tables(group_runs(have), seeds=seeds)))


def status(root: str) -> int:
    rows = L.scan(root)
    if not rows:
        print(f"no run folders with {L.RECORD} under {root}")
        return 1
    counts: dict[str, int] = {}
    for state, folder, logs in rows:
        counts[state.split()[0]] = counts.get(state.split()[0], 0) + 1
        print(f"{state:<16} {folder}" + (f"  logs: {', '.join(logs)}" if logs and state != "done" else ""))
    print(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return 0


# --------------------------------------------------------------------------- command line


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hyptree sweep run", description="Run a protocol grid.")
    p.add_argument("grid", nargs="?", help="grid YAML file (flags override its keys)")
    g = p.add_argument_group("grid (lists)")
    for key, help_ in (
        ("protocols", f"some of {', '.join(PROTOCOLS)}"),
        ("datasets", "dataset config names (configs/datasets/NAME.yaml)"),
        ("trainers", "trainer names (default MaPLeHypTree)"),
        ("presets", "vanilla protect hyptree (default hyptree)"),
        ("configs", "trainer config names (configs/trainers/TRAINER/CFG.yaml; default: the preset)"),
        ("shots", "shots per class (default 16)"),
        ("seeds", "seeds (default 1 2 3)"),
    ):
        g.add_argument(f"--{key}", nargs="*", help=help_)
    s = p.add_argument_group("settings (the scripts' environment variables)")
    for key in ("data", "out", "run_name", "dataset_configs", "trainer_configs", "train_py", "source"):
        s.add_argument("--" + key.replace("_", "-"), dest=key)
    s.add_argument("--extra-opts", dest="extra_opts", help="shell-quoted yacs options (EXTRA_OPTS)")
    s.add_argument("--load-epoch", dest="load_epoch", type=int)
    s.add_argument("--test-base", dest="test_base", action="store_true", default=None)
    s.add_argument("--targets", nargs="+")
    s.add_argument("--variants", nargs="*")
    s.add_argument("--python", default=os.environ.get("PYTHON") or sys.executable, help="interpreter of train.py")
    la = p.add_argument_group("launcher")
    la.add_argument("--launcher", choices=("serial", "local", "slurm"))
    la.add_argument("--gpus", help="local: GPU ids, comma-separated (one job per GPU at a time)")
    la.add_argument("--dry-run", action="store_true", help="print the run list and scheduler settings, run nothing")
    la.add_argument("--no-tables", action="store_true", help="do not print the result tables at the end")
    la.add_argument("--wait", action="store_true", help="slurm: wait for the jobs, then print the tables")
    sl = p.add_argument_group("slurm (also the grid file's slurm: section)")
    for key, kind in (("partition", str), ("account", str), ("qos", str), ("mem", str)):
        sl.add_argument(f"--{key}", type=kind, help="memory: GB, or a SLURM size (32G)" if key == "mem" else None)
    sl.add_argument("--gpus-per-job", dest="slurm_gpus", type=int, help="GPUs per job (1)")
    sl.add_argument("--cpus", type=int, help="CPUs per job (8)")
    sl.add_argument("--time", type=int, help="minutes per job (1440)")
    sl.add_argument("--array-parallelism", dest="array_parallelism", type=int, help="jobs running at once (64)")
    sl.add_argument("--sbatch", action="append", default=[], metavar="KEY=VALUE", help="extra #SBATCH --KEY=VALUE")
    sl.add_argument("--setup", action="append", default=[], metavar="LINE", help="shell line before the job runs")
    sl.add_argument("--max-requeue", type=int, default=3, help="timeouts a job may be requeued after (3)")
    sl.add_argument("--submitit-folder", help="submitit's folder (OUT/.sweep/slurm/%%j)")
    return p


def _merge(args, grid: dict) -> dict:
    grid = dict(grid)
    for key in GRID_LISTS:
        value = getattr(args, key)
        if value is not None:
            grid[key] = [str(v) for v in value]
    for key in SETTINGS_KEYS:
        value = getattr(args, key, None)
        if value is not None:
            grid[key] = value
    for key in ("launcher", "gpus"):
        if getattr(args, key) is not None:
            grid[key] = getattr(args, key)
    slurm = dict(grid.get("slurm") or {})
    for ours, dest in (("gpus", "slurm_gpus"), *((k, k) for k in ("partition", "account", "qos", "mem", "cpus"))):
        if getattr(args, dest) is not None:
            slurm[ours] = getattr(args, dest)
    for key in ("time", "array_parallelism"):
        if getattr(args, key) is not None:
            slurm[key] = getattr(args, key)
    if args.sbatch:
        pairs = [kv.split("=", 1) if "=" in kv else (kv, None) for kv in args.sbatch]
        slurm["sbatch"] = {**(slurm.get("sbatch") or {}), **{k.lstrip("-"): v for k, v in pairs}}
    if args.setup:
        slurm["setup"] = [*(slurm.get("setup") or []), *args.setup]
    grid["slurm"] = slurm
    return grid


def _dry_run(runs: Sequence[Run], grid: dict, launcher: str) -> None:
    for chain in chains(runs):
        for run in chain:
            print(f"{L.state_of(run):<7} {run.kind:<5} {run.out_dir}")
            print(f"        {' '.join(run.argv())}")
    n_jobs = len(chains(runs))
    print(f"{len(runs)} run(s) in {n_jobs} job(s) (a training run and its evaluations); launcher {launcher}")
    if launcher == "local":
        print(f"gpus: {grid.get('gpus')} (one job per GPU at a time)")
    if launcher == "slurm":
        for key, value in slurm_parameters(grid.get("slurm") or {}).items():
            print(f"slurm {key}: {value}")


def _run_main(argv: Sequence[str]) -> int:
    if "--" in argv:
        i = list(argv).index("--")
        argv, opts = list(argv[:i]), list(argv[i + 1 :])
    else:
        opts = []
    args = parser().parse_args(argv)
    grid = _merge(args, load_grid(args.grid) if args.grid else {})
    launcher = grid.get("launcher") or "serial"
    runs = build_runs(grid, opts)
    if args.dry_run:
        _dry_run(runs, grid, launcher)
        L.check_changes(runs)
        return 0
    L.check_changes(runs)
    seeds = sorted({r.seed for r in runs})
    if launcher == "serial":
        code = run_serial(runs, args.python)
    elif launcher == "local":
        gpus = [g.strip() for g in str(grid.get("gpus") or "").split(",") if g.strip()]
        if not gpus:
            raise SetupError("--launcher local needs --gpus (e.g. --gpus 0,1,2,3)")
        code = run_local(runs, args.python, gpus)
    else:
        out = grid.get("out") or "output"
        folder = args.submitit_folder or os.path.join(out, ".sweep", "slurm", "%j")
        jobs = submit_slurm(runs, args.python, slurm_parameters(grid.get("slurm") or {}), folder, args.max_requeue)
        print(f"follow with: python -m hyptree sweep status {out}; tables: python -m hyptree sweep tables {out}")
        if not args.wait:
            return 0
        code = 0
        for job in jobs:
            try:
                job.result()
            except Exception as e:  # one failed job must not hide the others' tables
                print(f"[failed] job {job.job_id}: {e}", file=sys.stderr)
                code = 1
    if code == 0 and not args.no_tables:
        print_tables(runs, seeds)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = (
        "usage: python -m hyptree sweep run [GRID.yaml] [options] [-- YACS_OPTS ...]   (run --help)\n"
        "       python -m hyptree sweep status DIR\n"
        "       python -m hyptree sweep tables DIR [python -m hyptree results options]"
    )
    if not argv or argv[0] in ("-h", "--help"):
        print(usage)
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    try:
        if cmd == "run":
            return _run_main(rest)
        if cmd == "status" and len(rest) == 1:
            return status(rest[0])
        if cmd == "tables":
            from hyptree.eval.results import main as results_main

            return results_main(rest)
    except (SetupError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(usage, file=sys.stderr)
    return 2
