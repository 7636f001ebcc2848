"""The ``train`` and ``bench`` stages of ``bench/gpu_check.py`` (see its docstring)."""

from __future__ import annotations

import glob
import json
import math
import os
import shlex
import subprocess
import sys
import time

from bench.gpu_check import ROOT, TOL, TRAINERS, finite_tree

RUN = "base2new/{}/toy/shots_2/{}/tiny_cpu_hyptree/seed1"


# ----------------------------------------------------------------------------- train
def train_all(chk, res):
    """base2novel.sh toy for every (trainer, PREC), several at once; then the checks."""
    clip = os.path.join(chk.work, "tiny_clip.pt")
    rc, text, _ = chk.sh([sys.executable, "-m", "hyptree", "clip", "make-tiny", clip], "train.log", 60, "make-tiny")
    if not chk.check(res, "tiny CLIP written", rc == 0 and os.path.exists(clip), text.strip()[-300:]):
        return
    jobs = [(t, p) for t in TRAINERS for p in chk.args.precisions]
    parallel = 2 if chk.dry else min(8, len(jobs))
    cap = 150 if chk.dry else 200
    done = run_parallel(chk, [(job, train_command(chk, *job, clip)) for job in jobs], parallel, cap)
    runs = {}
    for (trainer, prec), (rc, text, timed_out, seconds) in done.items():
        out = os.path.join(chk.work, "train", f"{trainer}_{prec}")
        chk.log("train.log", f"{trainer} PREC {prec} (rc {rc}, {seconds:.1f} s)", text)
        runs[f"{trainer}/{prec}"] = inspect_run(chk, res, trainer, prec, out, rc, text, timed_out)
        runs[f"{trainer}/{prec}"]["seconds"] = round(seconds, 1)
    compare_precisions(chk, res, runs)
    res["runs"] = runs


def train_command(chk, trainer, prec, clip):
    env = dict(
        chk.env,
        PYTHON=sys.executable,
        TRAINER=trainer,
        CFG="tiny_cpu",
        # one data root per run: hyptree/data/toy.py generates ToyHier without a lock, and
        # concurrent first uses of one root race (seen: a rename of a file another run removed)
        DATA=os.path.join(chk.work, "data", f"{trainer}_{prec}"),
        OUT=os.path.join(chk.work, "train", f"{trainer}_{prec}"),
        SHOTS="2",
        OMP_NUM_THREADS="1",
        EXTRA_OPTS=f"TRAINER.HYPTREE.CLIP_PATH {shlex.quote(clip)} TRAINER.{TRAINERS[trainer]}.PREC {prec}",
    )
    return ["bash", "scripts/hyptree/base2novel.sh", "toy", "1"], env


def run_parallel(chk, jobs, parallel, cap):
    """Run ``[(key, (cmd, env))]``, ``parallel`` at a time, each stopped after ``cap`` s
    or when the budget ends; returns ``{key: (rc, output, timed_out, seconds)}``."""
    pending, running, done = list(jobs), {}, {}
    while pending or running:
        while pending and len(running) < parallel and chk.left() > 10:
            key, (cmd, env) = pending.pop(0)
            log = open(os.path.join(chk.work, f"job{len(done) + len(running)}.log"), "w+")  # noqa: SIM115
            proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            running[key] = (proc, log, time.monotonic())
        if not running:
            for key, _ in pending:  # no budget left to start them
                done[key] = (None, "[not started: budget spent]", True, 0.0)
            break
        time.sleep(0.5)
        for key, (proc, log, t0) in list(running.items()):
            over = time.monotonic() - t0 > cap or chk.left() < 0
            if proc.poll() is None and not over:
                continue
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
                proc.wait()
            log.seek(0)
            done[key] = (proc.returncode, log.read() + ("\n[stopped]" if over else ""), over, time.monotonic() - t0)
            log.close()
            del running[key]
    return done


def first_line(text, prefix):
    return next((ln for ln in text.splitlines() if ln.startswith(prefix)), "")


def inspect_run(chk, res, trainer, prec, out, rc, text, timed_out):  # long: one check after the other, in order
    """The checks of one (trainer, PREC) run; returns its row for the summary."""
    name = f"{trainer}/{prec}"
    row = {"rc": rc}
    if timed_out:
        res["incomplete"] = True
        res["notes"].append(f"{name}: stopped or not started (time)")
        return row
    if not chk.check(res, f"{name}: base2novel.sh ran", rc == 0, f"rc {rc}"):
        return row
    want = ("fp32", "cpu") if chk.dry else (prec, "cuda")
    line = first_line(text, "Loading CLIP")
    row["loaded"] = line.split("(")[-1].rstrip(")")
    chk.check(res, f"{name}: CLIP loaded in {want[0]} on {want[1]}", f"({want[0]}, {want[1]}" in line, line)
    train_dir, novel_dir = (os.path.join(out, RUN.format(s, trainer)) for s in ("train_base", "test_new"))
    rows = [json.loads(ln) for ln in open(os.path.join(train_dir, "train_log.jsonl")) if ln.strip()]
    n, bad = finite_tree(rows)
    row.update(log_rows=len(rows), log_values=n, log_nonfinite=bad[:10])
    chk.check(res, f"{name}: train_log.jsonl finite", rows and not bad, f"{len(bad)} non-finite of {n}: {bad[:5]}")
    if rows:
        row["first_loss"], row["last_loss"] = rows[0].get("total"), rows[-1].get("total")
        row["last_curvatures"] = {k: rows[-1][k] for k in ("curv_text", "curv_image", "curv_inter") if k in rows[-1]}
    ckpts = sorted(glob.glob(os.path.join(train_dir, "learnable", "model.pth.tar-*")))
    if chk.check(res, f"{name}: checkpoint written", ckpts, train_dir):
        import torch

        state = torch.load(ckpts[-1], map_location="cpu", weights_only=False)["state_dict"]
        bad_t = [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and not v.isfinite().all()]
        row["checkpoint_tensors"] = len(state)
        chk.check(res, f"{name}: checkpoint finite", not bad_t, f"{os.path.basename(ckpts[-1])}: {bad_t[:5]}")
    for split, folder in (("base", train_dir), ("novel", novel_dir)):
        path = os.path.join(folder, "results.json")
        if not chk.check(res, f"{name}: {split} results.json", os.path.exists(path), path):
            continue
        with open(path) as f:
            rec = json.load(f)
        _, bad = finite_tree(rec["metrics"])
        chk.check(res, f"{name}: {split} metrics finite", not bad, str(bad[:5]))
        curv = rec.get("curvatures")  # None when a curvature was non-finite (run/records.py)
        ok = curv is not None and all(math.isfinite(v) and v > 0 for v in curv.values())
        chk.check(res, f"{name}: {split} curvatures finite and > 0", ok, str(curv))
        row[split] = {k: rec["metrics"].get(k) for k in ("LA", "HCA", "MTA")}
    return row


def compare_precisions(chk, res, runs):
    """Half-precision runs against the fp32 run of the same trainer (:data:`TOL`)."""
    for trainer in TRAINERS:
        ref = runs.get(f"{trainer}/fp32", {})
        for prec in chk.args.precisions:
            row = runs.get(f"{trainer}/{prec}", {})
            if prec == "fp32" or "first_loss" not in row or "first_loss" not in ref:
                continue
            rel = abs(row["first_loss"] - ref["first_loss"]) / max(abs(ref["first_loss"]), 1e-12)
            tol = TOL["first_loss"][prec]
            row["first_loss_rel_vs_fp32"] = rel
            chk.check(res, f"{trainer}/{prec}: first loss vs fp32", rel <= tol, f"rel {rel:.2e} (tol {tol:g})")
            diffs = {
                f"{s}_{m}": abs(row[s][m] - ref[s][m])
                for s in ("base", "novel")
                for m in ("LA", "HCA", "MTA")
                if s in row and s in ref and row[s].get(m) is not None and ref[s].get(m) is not None
            }
            row["metric_points_vs_fp32"] = diffs
            worst = max(diffs.values(), default=0.0)
            tol = TOL["metric_points"]
            chk.check(res, f"{trainer}/{prec}: metrics vs fp32", diffs and worst <= tol, f"max {worst:.2f} (tol {tol})")


# ----------------------------------------------------------------------------- bench
def result_values(text):
    """The ``result: k=v ...`` line of a bench script as a dict (numbers and booleans parsed)."""
    line = [ln for ln in text.splitlines() if ln.startswith("result: ")]
    out = {}
    for item in line[-1][len("result: ") :].split() if line else []:
        k, _, v = item.partition("=")
        out[k] = {"true": True, "false": False}.get(v, v)
        if isinstance(out[k], str):
            try:
                out[k] = float(v)
            except ValueError:
                pass
    return out


def bench_commands(chk):
    dev = ["--device", chk.device]
    trees = ["--taxonomies", "sun,imagenet"]
    if chk.dry:
        return [
            ("curvature", ["bench/curvature.py", *dev, "--repeats", "20", "--batch", "64"], 60),
            (
                "step",
                ["bench/step.py", *dev, "--shapes", "tiny", *trees, "--rounds", "2", "--batch", "2", "--no-memory"],
                150,
            ),
            ("eval", ["bench/eval.py", *dev, "--shapes", "tiny", *trees, "--rounds", "1", "--batches", "1"], 90),
        ]
    prec = ["--precision", "amp"]
    return [
        ("curvature", ["bench/curvature.py", *dev], 90),
        ("step", ["bench/step.py", *dev, *prec, "--shapes", "b16", *trees, "--rounds", "15"], 240),
        ("eval", ["bench/eval.py", *dev, *prec, "--shapes", "b16", *trees, "--rounds", "5", "--batches", "4"], 150),
    ]


def bench_all(chk, res):
    """curvature.py, step.py, eval.py; their result lines and the targets."""
    for name, cmd, cap in bench_commands(chk):
        if chk.left() < 20:
            res["incomplete"] = True
            res["notes"].append(f"{name}: not started (budget)")
            continue
        rc, text, timed_out = chk.sh([sys.executable, *cmd], "bench.log", cap, f"bench {name}: {' '.join(cmd)}")
        if timed_out:
            res["incomplete"] = True
            res["notes"].append(f"{name}: stopped at its time share ({cap} s)")
            continue
        values = result_values(text)
        res[name] = values
        chk.check(res, f"bench {name} ran", rc == 0 and values, f"rc {rc}")
        if name == "curvature" and values:
            chk.check(res, "c_m solve: no host sync (dispatcher count)", values.get("host_syncs") == 0, str(values))
            if not chk.dry:
                chk.check(res, "c_m solve: set_sync_debug_mode('error')", values.get("cuda_sync_free") is True, "")
    res["targets"] = targets(res)


def targets(res):
    """Target verdicts (measurements, not checks: a miss does not fail the run)."""
    out = {}
    step, ev = res.get("step", {}), res.get("eval", {})
    for k, v in step.items():
        if k.startswith("time_ratio_"):
            out[f"step time hyptree/protect {k[11:]} <= 1.10"] = [v, v <= 1.10]
        if k.startswith("mem_ratio_"):
            out[f"peak memory hyptree/protect {k[10:]} <= 1.05"] = [v, v <= 1.05]
    for k, v in ev.items():
        if k.startswith("projected_ratio_"):
            out[f"full/leaf-only evaluation {k[16:]} <= 1.25"] = [v, v <= 1.25]
    if "single_ms" in res.get("curvature", {}):
        out["c_m solve + backward ms (single)"] = [res["curvature"]["single_ms"], None]
    return out
