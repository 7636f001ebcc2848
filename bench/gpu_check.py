"""One prepared GPU check: the suite, the trainers under fp32 / fp16 / bf16 / amp, the benchmarks.

Run through ``bench/gpu_check.sh`` (which sets the paths); stages, in order, each within
what is left of ``--budget-seconds`` (a stage that does not fit is skipped with a note, a
command that runs past its share is stopped and its stage marked ``incomplete``):

1. ``env``: torch, CUDA, the GPU, the Python modules the other stages import;
2. ``tests``: ``pytest -x`` over ``tests/`` with CUDA visible (GPU-only tests included);
3. ``train``: ``scripts/hyptree/base2novel.sh toy`` (tiny random CLIP, ``tiny_cpu`` config)
   for MaPLeHypTree and PromptSRCHypTree under each ``PREC``; checks: the precision
   really used, finite losses in ``train_log.jsonl``, finite checkpoint tensors, finite
   metrics and curvatures, half-precision runs close to fp32 (:data:`TOL`);
4. ``bench``: ``bench/curvature.py`` (solve under ``set_sync_debug_mode("error")``),
   ``bench/step.py`` and ``bench/eval.py`` at the ViT-B/16 shape on the SUN-like (417
   nodes) and ImageNet-like (1,368 nodes) trees: hyptree / protect / vanilla step time and
   peak memory, full / leaf-only evaluation;
5. ``profile``: ATen calls, CUDA kernels and kernel launches of one protect and one hyptree
   step (``torch.profiler``).

Writes ``summary.json``, ``summary.md``, ``tests.log``, ``tests.xml``, ``train.log``,
``bench.log`` into the output folder. Exit status: 0 every check passed, 1 a check
failed, 3 nothing failed but a stage was skipped or incomplete. ``--cpu-dry-run``: the
same stages on the CPU with tiny shapes and few repeats (a couple of minutes), to catch
mistakes before spending GPU time.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.gpu_report import markdown, walk_floats
from hyptree.utils.files import atomic_write_json, atomic_write_text

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = ("env", "tests", "train", "bench", "profile")
TRAINERS = {"MaPLeHypTree": "MAPLE", "PromptSRCHypTree": "PROMPTSRC"}
PRECISIONS = ("fp32", "fp16", "bf16", "amp")
# half-precision run vs the fp32 run of the same trainer (same seed, data, initial weights):
# relative difference of the first step's total loss, and absolute difference (points) of
# LA / HCA / MTA on base and novel (a tiny random CLIP after 2 epochs: metrics near chance,
# so this catches collapse - NaN scores, constant predictions - rather than small drifts)
TOL = {"first_loss": {"fp16": 1e-2, "amp": 1e-2, "bf16": 5e-2}, "metric_points": 10.0}
MODULES = ("torch", "clip", "dassl", "yacs", "ftfy", "gdown", "wilds", "tabulate", "scipy", "pytest", "hypothesis")
SUMMARY_RESERVE_S = 15  # kept back for writing the summary


class Check:
    """Runs the stages, collects their results, writes the output files."""

    def __init__(self, args):
        self.args, self.dry = args, args.cpu_dry_run
        self.out = os.path.abspath(args.out)
        self.work = os.path.abspath(args.work or os.path.join(self.out + "_work"))
        self.start = time.monotonic()
        self.device = "cpu" if self.dry else "cuda"
        self.logs = {"tests.log": [], "train.log": [], "bench.log": []}
        self.summary = {
            "version": 1,
            "mode": "cpu-dry-run" if self.dry else "gpu",
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "budget_seconds": args.budget_seconds,
            "device": self.device,
            "tolerances": TOL,
            "stages": {},
        }
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", MPLBACKEND="Agg")
        self.env["PYTHONPATH"] = ROOT + os.pathsep + self.env.get("PYTHONPATH", "")
        if self.dry:
            self.env["CUDA_VISIBLE_DEVICES"] = ""  # a dry run stays on the CPU, also on a GPU machine

    # ------------------------------------------------------------------ plumbing
    def left(self):
        return self.args.budget_seconds - (time.monotonic() - self.start) - SUMMARY_RESERVE_S

    def log(self, name, title, text):
        self.logs[name].append(f"==== {title}\n{text.rstrip()}\n")
        atomic_write_text(os.path.join(self.out, name), "\n".join(self.logs[name]))

    def sh(self, cmd, log, cap, title=None, env=None):
        """Run ``cmd`` (killed after ``min(cap, budget left)`` s); returns ``(rc, stdout+stderr, timed_out)``."""
        timeout = max(1.0, min(cap, self.left()))
        t0 = time.monotonic()
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env or self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            text, timed_out = proc.communicate(timeout=timeout)[0], False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)  # the group of the process started here (pytest workers, train.py)
            text, timed_out = proc.communicate()[0] + f"\n[stopped after {timeout:.0f} s]", True
        head = f"{title or ' '.join(cmd)}  (rc {proc.returncode}, {time.monotonic() - t0:.1f} s)"
        self.log(log, head, text)
        return proc.returncode, text, timed_out

    def stage(self, name, fn, need_s):
        res = {"status": "pass", "checks": [], "notes": []}
        self.summary["stages"][name] = res
        if name not in self.args.stages:
            res.update(status="skipped", notes=["not asked for (--stages)"])
            return res
        if self.left() < need_s:
            res.update(
                status="skipped", notes=[f"not started: {self.left():.0f} s of the budget left, needs ~{need_s} s"]
            )
            return res
        t0 = time.monotonic()
        try:
            fn(res)
        except Exception as e:  # a bug in a stage is a failed check, the other stages still run
            res["checks"].append({"name": "stage ran", "ok": False, "detail": f"{type(e).__name__}: {e}"})
        res["seconds"] = round(time.monotonic() - t0, 1)
        if any(not c["ok"] for c in res["checks"]):
            res["status"] = "fail"
        elif res["status"] == "pass" and res.get("incomplete"):
            res["status"] = "incomplete"
        print(f"[{name}] {res['status']} ({res['seconds']} s)", flush=True)
        self.write()
        return res

    @staticmethod
    def check(res, name, ok, detail=""):
        res["checks"].append({"name": name, "ok": bool(ok), "detail": detail})
        return ok

    def write(self):
        self.summary["elapsed_seconds"] = round(time.monotonic() - self.start, 1)
        st = [s["status"] for s in self.summary["stages"].values()]
        self.summary["status"] = "fail" if "fail" in st else ("pass" if set(st) <= {"pass"} else "incomplete")
        atomic_write_json(os.path.join(self.out, "summary.json"), self.summary)
        atomic_write_text(os.path.join(self.out, "summary.md"), markdown(self.summary))

    # ------------------------------------------------------------------ stages
    def stage_env(self, res):
        import torch

        missing = [m for m in MODULES if importlib.util.find_spec(m) is None]
        cuda = torch.cuda.is_available()
        res["torch"], res["python"] = torch.__version__, sys.version.split()[0]
        res["cuda_available"], res["missing_modules"] = cuda, missing
        res["cpus"] = os.cpu_count()
        if cuda and not self.dry:
            p = torch.cuda.get_device_properties(0)
            res["gpu"] = f"{p.name}, {p.total_memory / 2**30:.0f} GiB, capability {p.major}.{p.minor}"
            res["cuda"] = torch.version.cuda
            self.summary["gpu"] = res["gpu"]
        self.check(
            res, "CUDA device", cuda or self.dry, res.get("gpu", "no CUDA device" if not self.dry else "dry run")
        )
        hint = "" if not missing else "; carry them: bash bench/gpu_check.sh --pack-site DIR (docs/performance.md)"
        self.check(res, "modules importable", not missing, ", ".join(missing) + hint)

    def stage_tests(self, res):
        xml = os.path.join(self.out, "tests.xml")
        cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-rs", "-p", "no:cacheprovider", f"--junitxml={xml}"]
        if not self.dry and importlib.util.find_spec("xdist") is not None:
            cmd += ["-n", str(max(1, min(8, (os.cpu_count() or 2) // 2)))]
        cmd += (
            self.args.pytest_args.split() if self.args.pytest_args else (["tests/test_layout.py"] if self.dry else [])
        )
        rc, text, timed_out = self.sh(cmd, "tests.log", self.args.tests_seconds, "pytest")
        res.update(junit_summary(xml))
        res["command"] = " ".join(cmd[1:])
        if timed_out:
            res["incomplete"] = True
            res["notes"].append(f"pytest stopped at its time share ({self.args.tests_seconds} s)")
        else:
            self.check(
                res, "pytest passed", rc == 0, f"rc {rc}; " + text.strip().splitlines()[-1] if text.strip() else ""
            )

    def stage_train(self, res):
        from bench.gpu_train import train_all

        train_all(self, res)

    def stage_bench(self, res):
        from bench.gpu_train import bench_all

        bench_all(self, res)

    def stage_profile(self, res):
        spec = {"device": self.device, "shape": "tiny" if self.dry else "b16", "taxonomy": "sun"}
        if not self.dry:
            spec["precision"] = "amp"
        cmd = [sys.executable, os.path.join(ROOT, "bench", "gpu_profile.py"), json.dumps(spec)]
        rc, text, timed_out = self.sh(cmd, "bench.log", 120, "profile: ATen calls and CUDA kernels per step")
        lines = [ln for ln in text.splitlines() if ln.startswith("profile: ")]
        if timed_out:
            res["incomplete"] = True
        if self.check(res, "profile ran", rc == 0 and lines, f"rc {rc}"):
            res.update(json.loads(lines[-1][len("profile: ") :]))

    def run(self):
        os.makedirs(self.out, exist_ok=True)
        if os.path.isdir(self.work) and not self.args.keep_work:
            shutil.rmtree(self.work)
        os.makedirs(self.work, exist_ok=True)
        self.write()
        env = self.stage("env", self.stage_env, 0)
        if env["status"] == "fail" and not self.dry:
            for name in STAGES[1:]:
                self.summary["stages"][name] = {"status": "skipped", "checks": [], "notes": ["env check failed"]}
        else:
            self.stage("tests", self.stage_tests, 20)
            self.stage("train", self.stage_train, 30)
            self.stage("bench", self.stage_bench, 30)
            self.stage("profile", self.stage_profile, 10)
        self.write()
        print(markdown(self.summary, short=True))
        return {"pass": 0, "fail": 1}.get(self.summary["status"], 3)


def junit_summary(path):
    """Counts from pytest's junit XML (``{}`` when pytest wrote none)."""
    import xml.etree.ElementTree as ET

    if not os.path.exists(path):
        return {}
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    out = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    skipped = [c for c in suite.iter("testcase") if c.find("skipped") is not None]
    out["skipped_for_gpu"] = sum("GPU" in (c.find("skipped").get("message") or "") for c in skipped)
    failed = [c for c in suite.iter("testcase") if c.find("failure") is not None or c.find("error") is not None]
    out["failed_tests"] = [f"{c.get('classname')}::{c.get('name')}" for c in failed][:20]
    return out


def finite_tree(obj):
    """``(number of floats, [paths of non-finite floats])`` in a JSON-like object."""
    bad, n = [], 0
    for path, v in walk_floats(obj):
        n += 1
        if not math.isfinite(v):
            bad.append(path)
    return n, bad


def pack_site(dest):
    """Copy the pure-Python packages the device image lacks (see :data:`MODULES`) from this
    interpreter into ``dest`` (for ``--site``); ``pkg_resources`` and what it imports go to
    ``dest/_fallback`` (used only where the device's setuptools has no ``pkg_resources``)."""
    import importlib.metadata as md

    groups = {
        "": ["clip", "dassl", "yacs", "ftfy", "wcwidth", "gdown", "bs4", "soupsieve", "wilds", "littleutils"]
        + ["outdated", "socks", "tabulate"],
        "_fallback": ["pkg_resources"],  # it puts ../setuptools/_vendor on sys.path: copied below
    }
    dists = list(md.distributions())
    for sub, mods in groups.items():
        os.makedirs(os.path.join(dest, sub), exist_ok=True)
        for m in mods:
            spec = importlib.util.find_spec(m)
            if spec is None:
                raise SystemExit(f"--pack-site: module {m} is not installed in {sys.executable}")
            src = os.path.dirname(spec.origin) if spec.submodule_search_locations else spec.origin
            target = os.path.join(dest, sub, os.path.basename(src))
            if os.path.isdir(src):
                shutil.copytree(src, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(src, target)
        for d in dists:  # metadata some of them read at import (importlib.metadata.version)
            top = (d.read_text("top_level.txt") or "").split()
            if set(top) & set(groups[sub]) and getattr(d, "_path", None):
                shutil.copytree(d._path, os.path.join(dest, sub, os.path.basename(d._path)), dirs_exist_ok=True)
    vendor = os.path.join(os.path.dirname(importlib.util.find_spec("setuptools").origin), "_vendor")
    target = os.path.join(dest, "_fallback", "setuptools", "_vendor")
    shutil.copytree(vendor, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    print(f"packed {sum(len(v) for v in groups.values())} modules into {dest}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_out = os.environ.get("OUT") or "gpu_check_out"
    p.add_argument("out", nargs="?", default=default_out, help="output folder (default $OUT, else ./gpu_check_out)")
    p.add_argument("--cpu-dry-run", action="store_true", help="every stage on the CPU, tiny shapes, few repeats")
    p.add_argument("--budget-seconds", type=float, default=480.0, help="the whole check's time limit (default 480)")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    p.add_argument("--tests-seconds", type=float, default=120.0, help="time share of the test suite (default 120)")
    p.add_argument("--pytest-args", default=None, help="instead of the whole suite (dry run: tests/test_layout.py)")
    p.add_argument(
        "--precisions", default=None, help="PREC values to train (default fp32,fp16,bf16,amp; dry: fp32,amp)"
    )
    p.add_argument("--work", default=None, help="scratch folder for runs (default OUT_work; emptied first)")
    p.add_argument("--keep-work", action="store_true", help="do not empty the scratch folder first")
    p.add_argument("--pack-site", default=None, metavar="DIR", help="only copy the modules the device lacks into DIR")
    args = p.parse_args(argv)
    args.stages = args.stages.split(",")
    bad = set(args.stages) - set(STAGES)
    if bad:
        p.error(f"--stages: unknown {sorted(bad)}; choose from {', '.join(STAGES)}")
    prec = args.precisions or ("fp32,amp" if args.cpu_dry_run else ",".join(PRECISIONS))
    args.precisions = prec.split(",")
    if "fp32" not in args.precisions or set(args.precisions) - set(PRECISIONS):
        p.error(f"--precisions: a subset of {','.join(PRECISIONS)} with fp32 (the reference), got {prec}")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.pack_site:
        return pack_site(args.pack_site) or 0
    return Check(args).run()


if __name__ == "__main__":
    sys.exit(main())
