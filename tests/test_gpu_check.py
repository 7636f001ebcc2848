"""bench/gpu_check.py: the prepared GPU check, on the CPU.

The whole ``--cpu-dry-run`` takes minutes (it trains 4 toy runs), so here: its fast stages
end to end (env, a one-file pytest, the budget cut-off), the summary's structure, and the
checks of a training run on hand-written run folders in the real file formats (a NaN loss,
an inf checkpoint tensor, a dropped curvature must each fail their check).
"""

import json
import math
import os
import subprocess
import sys
import types

import pytest
import torch

from bench import gpu_check, gpu_train
from bench.gpu_report import markdown

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGE_KEYS = {"status", "checks", "notes"}


def run_check(out, *args, timeout=240):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), PYTHON=sys.executable)
    proc = subprocess.run(
        ["bash", "bench/gpu_check.sh", str(out), "--cpu-dry-run", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    with open(os.path.join(out, "summary.json")) as f:
        return proc, json.load(f)


def test_dry_run_fast_stages_and_summary_structure(tmp_path):
    out = tmp_path / "o"
    proc, s = run_check(out, "--stages", "env,tests", "--pytest-args", "tests/test_layout.py")
    assert proc.returncode == 3, proc.stdout + proc.stderr  # train/bench/profile not asked for
    assert s["mode"] == "cpu-dry-run" and s["device"] == "cpu" and s["status"] == "incomplete"
    assert list(s["stages"]) == list(gpu_check.STAGES)
    for st in s["stages"].values():
        assert STAGE_KEYS <= set(st)
    assert s["stages"]["env"]["status"] == "pass" and s["stages"]["env"]["torch"] == torch.__version__
    tests = s["stages"]["tests"]
    assert tests["status"] == "pass" and tests["tests"] > 0 and tests["failures"] == 0
    assert {s["stages"][k]["status"] for k in ("train", "bench", "profile")} == {"skipped"}
    files = sorted(os.listdir(out))
    assert files == ["summary.json", "summary.md", "tests.log", "tests.xml"]
    md = (out / "summary.md").read_text()
    assert md.startswith("# GPU check (cpu-dry-run): incomplete") and "| tests | pass |" in md
    assert "# GPU check" in proc.stdout  # the short summary is printed


def test_budget_skips_later_stages_with_a_note(tmp_path):
    proc, s = run_check(tmp_path / "o", "--budget-seconds", "20")  # 15 s reserve: no stage fits
    assert proc.returncode == 3
    assert s["stages"]["env"]["status"] == "pass"
    for k in ("tests", "train", "bench", "profile"):
        assert s["stages"][k]["status"] == "skipped" and "budget" in s["stages"][k]["notes"][0]


def test_failed_pytest_fails_the_check(tmp_path):
    bad = tmp_path / "test_bad.py"
    bad.write_text("def test_x():\n    assert 1 == 2\n")
    proc, s = run_check(tmp_path / "o", "--stages", "tests", "--pytest-args", str(bad))
    assert proc.returncode == 1 and s["status"] == "fail"
    t = s["stages"]["tests"]
    # junit's classname carries the path from pytest's rootdir, which depends on where the clone is
    assert t["failures"] == 1 and len(t["failed_tests"]) == 1
    assert t["failed_tests"][0].split(".")[-1] == "test_bad::test_x"


def test_options_are_validated():
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["--precisions", "fp16,bf16"])  # no fp32 reference
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["--stages", "env,nonsense"])
    a = gpu_check.parse_args(["o", "--cpu-dry-run"])
    assert a.precisions == ["fp32", "amp"] and a.stages == list(gpu_check.STAGES)


# ----------------------------------------------------------------------------- run checks
def fake_run(tmp_path, trainer="MaPLeHypTree", prec="fp32", loss=2.0, ckpt_value=1.0, curv=0.05, la=40.0):
    """A run folder as base2novel.sh writes it (train_log.jsonl, learnable/ checkpoint, results.json)."""
    out = tmp_path / f"{trainer}_{prec}"
    train = out / gpu_train.RUN.format("train_base", trainer)
    novel = out / gpu_train.RUN.format("test_new", trainer)
    (train / "learnable").mkdir(parents=True)
    novel.mkdir(parents=True)
    rows = [{"epoch": 1, "iteration": i, "total": loss if i == 0 else 1.5, "curv_inter": curv} for i in range(3)]
    # TrainLog writes non-finite floats as null (hyptree.eval.runfiles.jsonable)
    lines = [
        json.dumps({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()})
        for r in rows
    ]
    (train / "train_log.jsonl").write_text("\n".join(lines) + "\n")
    torch.save(
        {"state_dict": {"ctx": torch.full((2, 3), ckpt_value)}, "epoch": 2}, train / "learnable" / "model.pth.tar-2"
    )
    c = None if not math.isfinite(curv) else {"text": curv, "image": curv, "inter": curv}
    for folder in (train, novel):
        rec = {"metrics": {"LA": la, "HCA": la / 2, "MTA": la / 3, "depth_acc": [la]}, "curvatures": c}
        (folder / "results.json").write_text(json.dumps(rec))
    text = "Loading CLIP x.pt (fp32, cpu)\n"
    return str(out), text


def fake_chk(precisions=("fp32", "fp16")):
    res = {"status": "pass", "checks": [], "notes": []}
    chk = types.SimpleNamespace(dry=True, args=types.SimpleNamespace(precisions=list(precisions)))
    chk.check = gpu_check.Check.check
    return chk, res


def failed(res):
    return sorted(c["name"] for c in res["checks"] if not c["ok"])


def test_clean_run_passes_every_check(tmp_path):
    chk, res = fake_chk()
    out, text = fake_run(tmp_path)
    row = gpu_train.inspect_run(chk, res, "MaPLeHypTree", "fp32", out, 0, text, False)
    assert failed(res) == [] and len(res["checks"]) == 11
    assert row["first_loss"] == 2.0 and row["base"]["LA"] == 40.0 and row["loaded"] == "fp32, cpu"


@pytest.mark.parametrize(
    "kw, check",
    [
        (dict(loss=float("nan")), "MaPLeHypTree/fp32: train_log.jsonl finite"),
        (dict(ckpt_value=float("inf")), "MaPLeHypTree/fp32: checkpoint finite"),
        (dict(la=float("nan")), "MaPLeHypTree/fp32: base metrics finite"),
    ],
)
def test_non_finite_values_fail(tmp_path, kw, check):
    chk, res = fake_chk()
    out, text = fake_run(tmp_path, **kw)
    gpu_train.inspect_run(chk, res, "MaPLeHypTree", "fp32", out, 0, text, False)
    assert check in failed(res)


def test_dropped_curvature_and_wrong_precision_fail(tmp_path):
    chk, res = fake_chk()
    out, _ = fake_run(tmp_path, curv=float("nan"))
    gpu_train.inspect_run(chk, res, "MaPLeHypTree", "fp32", out, 0, "Loading CLIP x.pt (fp16, cuda)\n", False)
    f = failed(res)
    assert "MaPLeHypTree/fp32: CLIP loaded in fp32 on cpu" in f
    assert "MaPLeHypTree/fp32: base curvatures finite and > 0" in f and "MaPLeHypTree/fp32: train_log.jsonl finite" in f


def test_half_precision_compared_with_fp32():
    chk, res = fake_chk()
    base = {"base": {"LA": 40.0, "HCA": 20.0, "MTA": 10.0}, "novel": {"LA": 30.0, "HCA": 15.0, "MTA": 5.0}}
    runs = {
        "MaPLeHypTree/fp32": dict(first_loss=2.0, **base),
        "MaPLeHypTree/fp16": dict(first_loss=2.0 * (1 + 0.5e-2), **base),  # within 1e-2
        "PromptSRCHypTree/fp32": dict(first_loss=2.0, **base),
        "PromptSRCHypTree/fp16": dict(
            first_loss=2.0 * (1 + 2e-2), base=base["base"], novel={"LA": 30.0, "HCA": 15.0, "MTA": 17.0}
        ),
    }
    gpu_train.compare_precisions(chk, res, runs)
    assert failed(res) == ["PromptSRCHypTree/fp16: first loss vs fp32", "PromptSRCHypTree/fp16: metrics vs fp32"]
    assert runs["PromptSRCHypTree/fp16"]["metric_points_vs_fp32"]["novel_MTA"] == 12.0


def test_result_line_and_targets():
    text = "table\nresult: time_ratio_b16_sun=1.2 mem_ratio_b16_sun=1.01 host_syncs=0 cuda_sync_free=true tag=x\n"
    v = gpu_train.result_values(text)
    assert v == {
        "time_ratio_b16_sun": 1.2,
        "mem_ratio_b16_sun": 1.01,
        "host_syncs": 0.0,
        "cuda_sync_free": True,
        "tag": "x",
    }
    t = gpu_train.targets({"step": v})
    assert t["step time hyptree/protect b16_sun <= 1.10"] == [1.2, False]
    assert t["peak memory hyptree/protect b16_sun <= 1.05"] == [1.01, True]
    summary = {
        "mode": "gpu",
        "date": "d",
        "device": "cuda",
        "budget_seconds": 480,
        "tolerances": gpu_check.TOL,
        "stages": {"bench": {"status": "pass", "checks": [], "notes": [], "targets": t}},
    }
    md = markdown(summary)
    assert "| step time hyptree/protect b16_sun <= 1.10 | 1.2 | NO |" in md and "CUDA graph" in md
