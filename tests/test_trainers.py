"""The Dassl trainers end to end on ToyHier with a tiny random CLIP (CPU, seconds per run).

Runs go through ``train.py``'s own ``main`` in this process (same code path as the command
line, without paying the interpreter and Dassl import per run). Needs Dassl: run with
``/work/dassl-venv/bin/python -m pytest tests/test_trainers.py``.
"""

import io
import json
import math
import os
import shutil
import sys

import numpy as np
import pytest
import torch
from helpers import RECORD_KEYS

pytestmark = pytest.mark.dassl
pytest.importorskip("dassl")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAINERS = ("MaPLeHypTree", "PromptSRCHypTree", "CoOpHier")
EPOCHS = 2


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from hyptree.model.loading import main as clip_main

    base = tmp_path_factory.mktemp("trainers")
    clip_path = str(base / "tiny_clip.pt")
    assert clip_main(["make-tiny", clip_path]) == 0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only contend with other jobs
    yield {"base": base, "clip": clip_path, "data": str(base / "data"), "runs": {}}
    torch.set_num_threads(threads)


def run(env, trainer, out, *extra, subsample="base", opts=()):
    """``python train.py ...`` in-process; returns the trainer."""
    sys.path.insert(0, ROOT) if ROOT not in sys.path else None
    import train

    argv = [
        "--root",
        env["data"],
        "--seed",
        "1",
        "--trainer",
        trainer,
        "--dataset-config-file",
        os.path.join(ROOT, "configs/datasets/toy_hier.yaml"),
        "--config-file",
        os.path.join(ROOT, f"configs/trainers/{trainer}/tiny_cpu.yaml"),
        "--output-dir",
        str(out),
        *extra,
        "TRAINER.HYPTREE.CLIP_PATH",
        env["clip"],
        "DATASET.NUM_SHOTS",
        "2",
        "DATASET.SUBSAMPLE_CLASSES",
        subsample,
        "TRAIN.CHECKPOINT_FREQ",
        "1",
        *opts,
    ]
    args = train.build_parser().parse_args(argv)
    console = sys.stdout
    try:
        return train.main(args)
    finally:
        logger, sys.stdout = sys.stdout, console  # Dassl's setup_logger replaced it
        if logger is not console:
            # its close() (also run by __del__) would close our console too
            logger.console = io.StringIO()
            logger.close()


def trainer_opts(trainer):
    # CoOpHier runs the "CoOp + ProTeCt" baseline: no image tree, no curvatures
    return ("TRAINER.HYPTREE.PRESET", "protect") if trainer == "CoOpHier" else ()


def trained(env, trainer):
    """Train ``trainer`` on the base tree once per module; returns its output folder."""
    if trainer not in env["runs"]:
        out = env["base"] / f"{trainer}_train"
        run(env, trainer, out, opts=trainer_opts(trainer))
        env["runs"][trainer] = out
    return env["runs"][trainer]


def results(folder):
    with open(os.path.join(folder, "results.json")) as f:
        return json.load(f)


def checkpoint(folder, epoch):
    return torch.load(os.path.join(folder, "learnable", f"model.pth.tar-{epoch}"), map_location="cpu")


@pytest.mark.parametrize("trainer", TRAINERS)
def test_train_then_evaluate_base_and_novel(env, trainer):
    out = trained(env, trainer)
    rec = results(out)
    assert RECORD_KEYS <= set(rec)
    assert (rec["split"], rec["tree"], rec["dataset"], rec["trainer"]) == ("test", "base", "ToyHier", trainer)
    assert rec["backbone"] == {"MaPLeHypTree": "maple", "PromptSRCHypTree": "promptsrc", "CoOpHier": "coop"}[trainer]
    assert rec["epoch"] == EPOCHS and rec["num_shots"] == 2 and rec["seed"] == 1
    assert rec["model_dir"] is None and rec["output_dir"] == str(out)  # trained here, not eval-only
    m = rec["metrics"]
    assert m["num_samples"] == 9 * 6  # 9 base classes x 6 test images
    for key in ("LA", "HCA", "MTA", "node_acc"):
        assert 0.0 <= m[key] <= 100.0
    assert m["HCA"] <= m["LA"] and len(m["depth_acc"]) == 3
    assert math.isclose(m["depth_acc"][-1], m["LA"])
    if trainer == "CoOpHier":
        assert rec["preset"] == "protect" and rec["curvatures"] is None and rec["image_tree"] is False
    else:
        assert rec["preset"] == "hyptree" and set(rec["curvatures"]) == {"text", "image", "inter"}
    for name in ("cuts.json", "taxonomy.txt", "embeddings.npz", "train_log.jsonl"):
        assert os.path.isfile(os.path.join(out, name)), name

    # checkpoints hold the learned parts only: no frozen CLIP weights
    ckpt = checkpoint(out, EPOCHS)
    assert ckpt["epoch"] == EPOCHS
    prefixes = {k.split(".")[0] for k in ckpt["state_dict"]}
    assert prefixes <= {"prompt_learner", "fusion", "curvatures", "_extra_state"}, prefixes
    assert not any("token_embedding" in k or "visual" in k or "tokens" in k for k in ckpt["state_dict"])
    assert os.path.getsize(os.path.join(out, "learnable", f"model.pth.tar-{EPOCHS}")) < os.path.getsize(env["clip"]) / 5

    # --eval-only on the same tree reproduces the end-of-training test exactly
    ev = env["base"] / f"{trainer}_eval_base"
    run(
        env,
        trainer,
        ev,
        "--eval-only",
        "--model-dir",
        str(out),
        "--load-epoch",
        str(EPOCHS),
        opts=trainer_opts(trainer),
    )
    again = results(ev)
    assert again["metrics"] == m
    assert (again["epoch"], again["model_dir"]) == (EPOCHS, str(out))
    assert again["config_hash"] == rec["config_hash"]  # only the output folder differs

    # the base checkpoint scores the novel tree
    nv = env["base"] / f"{trainer}_eval_new"
    run(
        env,
        trainer,
        nv,
        "--eval-only",
        "--model-dir",
        str(out),
        "--load-epoch",
        str(EPOCHS),
        subsample="new",
        opts=trainer_opts(trainer),
    )
    novel = results(nv)
    assert (novel["tree"], novel["subsample"]) == ("new", "new")
    assert novel["metrics"]["num_samples"] == 9 * 6
    assert novel["taxonomy"]["leaves"] == 9
    with open(os.path.join(out, "taxonomy.txt")) as f_base, open(os.path.join(nv, "taxonomy.txt")) as f_new:
        leaves_base = {line.strip().rsplit("/", 1)[-1] for line in f_base if "/" in line}
        leaves_new = {line.strip().rsplit("/", 1)[-1] for line in f_new if "/" in line}
    assert len(leaves_base) == len(leaves_new) == 9 and not leaves_base & leaves_new
    assert novel["config_hash"] != rec["config_hash"]


@pytest.mark.parametrize("trainer", ["PromptSRCHypTree", "MaPLeHypTree"])
def test_resume_after_interruption_matches_uninterrupted_run(env, trainer):
    """Epoch 1's checkpoint + a log torn in epoch 2 (what a crash leaves), resumed, must
    end exactly where the uninterrupted run ended: weights, GPA state, metrics, log."""
    full = trained(env, trainer)
    out = env["base"] / f"{trainer}_resumed"
    os.makedirs(out / "learnable")
    shutil.copy(os.path.join(full, "learnable", "model.pth.tar-1"), out / "learnable")
    (out / "learnable" / "checkpoint").write_text("model.pth.tar-1\n")
    with open(os.path.join(full, "train_log.jsonl")) as f:
        lines = f.readlines()
    first = [line for line in lines if json.loads(line)["epoch"] == 1]
    assert 0 < len(first) < len(lines)
    (out / "train_log.jsonl").write_text("".join(lines[: len(first) + 1]) + '{"epoch": 2, "itera')

    run(env, trainer, out, opts=trainer_opts(trainer))
    a, b = checkpoint(full, EPOCHS)["state_dict"], checkpoint(out, EPOCHS)["state_dict"]
    assert set(a) == set(b)
    for key in a:
        if key != "_extra_state":
            assert torch.equal(a[key], b[key]), key
    if trainer == "PromptSRCHypTree":
        ga, gb = a["_extra_state"]["gpa"], b["_extra_state"]["gpa"]
        assert ga["seen"] == gb["seen"] == [0, 1]
        for key in ga["sum"]:
            assert torch.equal(ga["sum"][key], gb["sum"][key]), key
    assert results(out)["metrics"] == results(full)["metrics"]
    with open(out / "train_log.jsonl") as f:
        resumed = [json.loads(line) for line in f]
    assert resumed == [json.loads(line) for line in lines]  # same losses, lr, curvatures per step


def test_promptsrc_gpa_weights_and_final_model(env):
    """GPA by hand: Gaussian weights of epochs 1, 2 (mean 2, std 1 in tiny_cpu.yaml)."""
    out = trained(env, "PromptSRCHypTree")
    g = np.exp(-0.5 * ((np.array([1.0, 2.0]) - 2.0) / 1.0) ** 2)
    w = g / g.sum()
    c1, c2 = checkpoint(out, 1)["state_dict"], checkpoint(out, 2)["state_dict"]
    gpa1, gpa2 = c1["_extra_state"]["gpa"], c2["_extra_state"]["gpa"]
    assert gpa1["seen"] == [0] and gpa2["seen"] == [0, 1]
    changed = 0
    for key, theta1 in c1.items():
        if key == "_extra_state" or not theta1.is_floating_point():
            continue
        torch.testing.assert_close(gpa1["sum"][key], w[0] * theta1.float(), rtol=1e-6, atol=1e-7)
        raw2 = (gpa2["sum"][key] - w[0] * theta1.float()) / w[1]  # epoch 2's own weights
        final = c2[key].float()
        torch.testing.assert_close(final, w[0] * theta1.float() + w[1] * raw2, rtol=1e-5, atol=1e-6)
        changed += int(not torch.allclose(final, raw2))
    assert changed > 0  # the saved (and tested) final model is the aggregate, not epoch 2's


def test_gpa_hook_by_hand(env):
    """The trainer's end-of-epoch hook with weights set by hand (no training)."""
    trainer = run(env, "PromptSRCHypTree", env["base"] / "gpa_hook", "--no-train")
    learnable = trainer.learnable
    ctx = learnable.prompt_learner.ctx
    with torch.no_grad():
        ctx.fill_(1.0)
    trainer.epoch = 0
    trainer.end_of_epoch()
    assert torch.all(ctx == 1.0)  # not the last epoch: weights untouched
    with torch.no_grad():
        ctx.fill_(3.0)
    trainer.epoch = trainer.max_epoch - 1
    trainer.end_of_epoch()
    g = np.exp(-0.5 * ((np.array([1.0, 2.0]) - 2.0) / 1.0) ** 2)
    w = g / g.sum()
    torch.testing.assert_close(ctx.detach(), torch.full_like(ctx, w[0] * 1.0 + w[1] * 3.0))


def test_backbone_is_implied_and_contradictions_are_refused(env):
    with pytest.raises(ValueError, match="TRAINER.HYPTREE.BACKBONE is 'coop' but trainer MaPLeHypTree"):
        run(env, "MaPLeHypTree", env["base"] / "mismatch", "--no-train", opts=("TRAINER.HYPTREE.BACKBONE", "coop"))
    trainer = run(env, "CoOpHier", env["base"] / "implied", "--no-train", opts=("TRAINER.HYPTREE.BACKBONE", "coop"))
    assert trainer.cfg.TRAINER.HYPTREE.BACKBONE == "coop"
    assert trainer.model.backbone == "coop"


def test_train_log_has_every_term_and_curvature(env):
    from hyptree.eval.trainlog import TrainLog

    rows = TrainLog.read(os.path.join(trained(env, "MaPLeHypTree"), "train_log.jsonl"))
    assert [r["epoch"] for r in rows] == sorted(r["epoch"] for r in rows)
    assert {r["epoch"] for r in rows} == {1, 2}
    assert [r["iteration"] for r in rows] == list(range(len(rows)))
    for key in (
        "lr",
        "total",
        "cut",
        "node",
        "text_ent",
        "image_ent",
        "cross",
        "curv_text",
        "curv_image",
        "curv_inter",
    ):
        assert all(key in r and math.isfinite(r[key]) for r in rows), key
    assert rows[0]["lr"] == pytest.approx(1e-5) and rows[-1]["lr"] == pytest.approx(0.01)  # warm-up, then base


def test_every_trainer_config_loads(env):
    """All generated yaml files, and MaPLe's / PromptSRC's own published ones, merge."""
    import train

    folder = os.path.join(ROOT, "configs", "trainers")
    files = [
        os.path.join(folder, t, f)
        for t in os.listdir(folder)
        if os.path.isdir(os.path.join(folder, t))
        for f in sorted(os.listdir(os.path.join(folder, t)))
    ]
    assert len(files) >= 30
    for path in files:
        args = train.build_parser().parse_args(["--config-file", path, "--trainer", path.split(os.sep)[-2]])
        cfg = train.setup_cfg(args)
        assert cfg.TRAINER.HYPTREE.PRESET in ("vanilla", "protect", "hyptree"), path
    upstream = env["base"] / "promptsrc_upstream.yaml"
    upstream.write_text(
        "TRAINER:\n  PROMPTSRC:\n    N_CTX_VISION: 4\n    TEXT_LOSS_WEIGHT: 25\n    IMAGE_LOSS_WEIGHT: 10\n"
        "    GPA_MEAN: 15\n    GPA_STD: 1\n  MAPLE:\n    PROMPT_DEPTH: 9\n  IVLP:\n    N_CTX_TEXT: 2\n"
        "  VPT:\n    N_CTX_VISION: 8\n  COCOOP:\n    N_CTX: 4\n"
        "OPTIM:\n  WARMUP_CONS_LR: 1e-5\n"
    )
    cfg = train.setup_cfg(train.build_parser().parse_args(["--config-file", str(upstream)]))
    assert cfg.TRAINER.PROMPTSRC.TEXT_LOSS_WEIGHT == 25 and cfg.TRAINER.VPT.N_CTX_VISION == 8


@pytest.mark.parametrize(
    "sched,warmup,wtype,recount",
    [
        ("cosine", 1, "constant", False),
        ("cosine", 2, "linear", False),
        ("cosine", 2, "constant", True),
        ("cosine", -1, "linear", True),
        ("single_step", 2, "constant", False),
        ("single_step", 1, "linear", True),
        ("multi_step", 1, "constant", False),
        ("multi_step", 0, "constant", True),
    ],
)
def test_lr_schedule_matches_dassl(monkeypatch, sched, warmup, wtype, recount):
    """Dassl's own scheduler (its warm-up classes patched to accept the ``verbose`` argument
    current PyTorch dropped) gives the same per-epoch rates as ours."""
    from dassl.config import get_cfg_default
    from dassl.optim import build_lr_scheduler as dassl_sched
    from dassl.optim import build_optimizer

    from hyptree.run.training import build_lr_scheduler

    original = torch.optim.lr_scheduler.LRScheduler.__init__

    def accepting_verbose(self, optimizer, last_epoch=-1, verbose=False):
        original(self, optimizer, last_epoch)

    monkeypatch.setattr(torch.optim.lr_scheduler.LRScheduler, "__init__", accepting_verbose)
    cfg = get_cfg_default()
    cfg.OPTIM.NAME, cfg.OPTIM.LR, cfg.OPTIM.MAX_EPOCH = "sgd", 0.02, 12
    cfg.OPTIM.LR_SCHEDULER, cfg.OPTIM.WARMUP_EPOCH, cfg.OPTIM.WARMUP_TYPE = sched, warmup, wtype
    cfg.OPTIM.WARMUP_RECOUNT, cfg.OPTIM.GAMMA = recount, 0.5
    cfg.OPTIM.STEPSIZE = (3,) if sched == "single_step" else (2, 5, 9)
    rates = []
    for build in (dassl_sched, build_lr_scheduler):
        opt = build_optimizer(torch.nn.Linear(2, 2), cfg.OPTIM)
        s = build(opt, cfg.OPTIM)
        seq = []
        for _ in range(cfg.OPTIM.MAX_EPOCH):
            seq.append(opt.param_groups[0]["lr"])
            opt.step()
            s.step()
        rates.append(seq)
    np.testing.assert_allclose(rates[1], rates[0], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("trainer", ["MaPLeHypTree", "PromptSRCHypTree"])
def test_amp_path_with_grad_scaler(env, monkeypatch, trainer):
    """PREC amp: autocast + GradScaler. No GPU here, so the CPU is made to take that path
    (fp16 autocast and a CPU GradScaler), enough to run the scaler branch end to end.
    PromptSRC keeps its self-regulating terms and GPA under amp (the original drops both)."""
    import trainers.hyptree_base as base
    from hyptree.eval.trainlog import TrainLog

    monkeypatch.setattr(base, "resolve_precision", lambda prec, device: "amp")
    out = env["base"] / f"amp_{trainer}"
    t = run(env, trainer, out, opts=("OPTIM.MAX_EPOCH", "1"))
    assert t.scaler is not None and t.precision == "amp"
    rec = results(out)
    assert rec["epoch"] == 1 and 0 <= rec["metrics"]["LA"] <= 100
    rows = TrainLog.read(out / "train_log.jsonl")
    assert rows and all(math.isfinite(r["total"]) for r in rows)
    if trainer == "PromptSRCHypTree":
        assert all({"src_text", "src_image", "src_logits"} <= set(r) for r in rows)
        assert t.gpa.epochs_seen == [0]


@pytest.mark.slow
def test_base2novel_script_on_toy_prints_the_table(env, tmp_path):
    """``scripts/hyptree/base2novel.sh toy`` for real: train base, evaluate novel, table."""
    import subprocess

    if shutil.which("bash") is None:
        pytest.skip("bash not available")
    out = tmp_path / "output"
    environ = dict(
        os.environ,
        PYTHON=sys.executable,
        CFG="tiny_cpu",
        DATA=env["data"],
        OUT=str(out),
        SHOTS="2",
        OMP_NUM_THREADS="1",
        EXTRA_OPTS=f"TRAINER.HYPTREE.CLIP_PATH {env['clip']}",
        PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    proc = subprocess.run(
        ["bash", "scripts/hyptree/base2novel.sh", "toy", "1"],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    train_dir = out / "base2new/train_base/toy/shots_2/MaPLeHypTree/tiny_cpu_hyptree/seed1"
    novel_dir = out / "base2new/test_new/toy/shots_2/MaPLeHypTree/tiny_cpu_hyptree/seed1"
    base, novel = results(train_dir), results(novel_dir)
    assert (base["tree"], novel["tree"]) == ("base", "new")
    assert novel["model_dir"] and novel["model_dir"].endswith("seed1")
    assert "Base-to-novel" in proc.stdout and "| ToyWorld |" in proc.stdout  # toy.yaml is ToyWorld
    # the printed LA row carries the two runs' numbers and their harmonic mean
    b, n = base["metrics"]["LA"], novel["metrics"]["LA"]
    h = 2 * b * n / (b + n) if b + n else 0.0
    assert f"{b:.2f}" in proc.stdout and f"{n:.2f}" in proc.stdout and f"{h:.2f}" in proc.stdout
    # a second call skips both finished runs
    again = subprocess.run(
        ["bash", "scripts/hyptree/base2novel.sh", "toy", "1"],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 0 and again.stdout.count("[skip]") == 2, again.stdout[-2000:]


# --------------------------------------------------------------------------- error messages


def test_eval_only_errors_name_the_folder_and_the_epochs_there(env, tmp_path):
    out = trained(env, "CoOpHier")
    opts = trainer_opts("CoOpHier")
    with pytest.raises(FileNotFoundError, match=r"--model-dir .*nowhere: no such folder"):
        run(env, "CoOpHier", tmp_path / "e1", "--eval-only", "--model-dir", str(tmp_path / "nowhere"), opts=opts)
    with pytest.raises(FileNotFoundError, match=r"model\.pth\.tar-7 \(--load-epoch 7\).*checkpoint: 1, 2;"):
        run(env, "CoOpHier", tmp_path / "e2", "--eval-only", "--model-dir", str(out), "--load-epoch", "7", opts=opts)
    with pytest.raises(FileNotFoundError, match=r"model-best\.pth\.tar: no.*TEST\.FINAL_MODEL best_val"):
        run(env, "CoOpHier", tmp_path / "e3", "--eval-only", "--model-dir", str(out), opts=opts)
    with pytest.raises(FileNotFoundError, match=r"does not exist: is --model-dir the OUTPUT_DIR"):
        run(env, "CoOpHier", tmp_path / "e4", "--eval-only", "--model-dir", str(tmp_path), opts=opts)


def test_setup_errors_name_the_config_key(env, tmp_path):
    opts = trainer_opts("CoOpHier")
    missing = str(tmp_path / "no_clip.pt")
    with pytest.raises(FileNotFoundError, match=r"TRAINER\.HYPTREE\.CLIP_PATH .*no_clip\.pt: no such file"):
        run(env, "CoOpHier", tmp_path / "a", "--no-train", opts=(*opts, "TRAINER.HYPTREE.CLIP_PATH", missing))
    with pytest.raises(ValueError, match=r"INPUT\.SIZE \(64, 64\) does not match the CLIP image resolution 32"):
        run(env, "CoOpHier", tmp_path / "b", "--no-train", opts=(*opts, "INPUT.SIZE", "(64, 64)"))
    with pytest.raises(SystemExit, match=r"unknown trainer 'MaPLeHyptree'.*available: .*CoOpHier.*MaPLeHypTree"):
        run(env, "CoOpHier", tmp_path / "c", "--no-train", opts=("TRAINER.NAME", "MaPLeHyptree"))


def test_train_log_is_short_unless_verbose(env, tmp_path, capsys):
    opts = trainer_opts("CoOpHier")
    run(env, "CoOpHier", tmp_path / "q", "--no-train", opts=opts)
    quiet = capsys.readouterr().out
    run(env, "CoOpHier", tmp_path / "v", "--no-train", "--verbose", opts=opts)
    verbose = capsys.readouterr().out
    assert "** Config **" not in quiet and "--verbose" in quiet
    assert "** Config **" in verbose and "PyTorch version" in verbose
    assert len(quiet.splitlines()) < 80 < len(verbose.splitlines()), (
        len(quiet.splitlines()),
        len(verbose.splitlines()),
    )
