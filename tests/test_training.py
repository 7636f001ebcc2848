"""hyptree.run.training, HierarchicalCLIP.learnable_modules, the make-tiny CLI and the generated
trainer configs - all without Dassl (its own oracle tests are in test_trainers.py)."""

import io
import math
import os
import random
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from yacs.config import CfgNode as CN

from hyptree.model.loading import load_clip, tiny_clip
from hyptree.model.loading import main as clip_main
from hyptree.model.promptsrc import GaussianPromptAggregator
from hyptree.run import training
from hyptree.run.config import add_hyptree_config, check_config, default_config, resolve_backbone
from hyptree.run.factory import build_model
from hyptree.run.training import (
    CheckpointModule,
    RNGState,
    build_lr_scheduler,
    lr_factor,
    resolve_precision,
)
from hyptree.tree import Taxonomy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINES = [
    "animal/bird/sparrow",
    "animal/bird/eagle",
    "animal/cat",
    "vehicle/car/sedan",
    "vehicle/car/coupe",
    "vehicle/boat",
]


@pytest.fixture(scope="module")
def taxonomy():
    return Taxonomy.from_paths(LINES)


def make_model(taxonomy, preset="hyptree", backbone="maple"):
    cfg = default_config()
    cfg.TRAINER.HYPTREE.BACKBONE, cfg.TRAINER.HYPTREE.PRESET = backbone, preset
    cfg.TRAINER.MAPLE.PROMPT_DEPTH = 2
    torch.manual_seed(0)
    return build_model(cfg, tiny_clip(seed=0), taxonomy)


def roundtrip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)  # what Dassl's load_checkpoint does on torch >= 2.6


# ------------------------------------------------------------------ config / backbone


def test_backbone_default_is_implied_by_the_trainer():
    cfg = CN()
    add_hyptree_config(cfg)
    assert cfg.TRAINER.HYPTREE.BACKBONE == ""
    with pytest.raises(ValueError, match="BACKBONE is empty"):
        check_config(cfg)
    assert default_config().TRAINER.HYPTREE.BACKBONE == "maple"
    assert resolve_backbone("", "promptsrc", "PromptSRCHypTree") == "promptsrc"
    assert resolve_backbone("coop", "coop", "CoOpHier") == "coop"
    with pytest.raises(ValueError, match="'maple' but trainer PromptSRCHypTree is the 'promptsrc'"):
        resolve_backbone("maple", "promptsrc", "PromptSRCHypTree")


# ------------------------------------------------------------------ precision


def test_precision_resolution(monkeypatch):
    monkeypatch.setattr(training, "_warned", set())
    with pytest.warns(UserWarning, match="'fp16' on cpu"):
        assert resolve_precision("fp16", "cpu") == "fp32"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once only
        assert resolve_precision("fp16", torch.device("cpu")) == "fp32"
        assert resolve_precision("fp32", "cpu") == "fp32"
    with pytest.warns(UserWarning, match="'amp'"):
        assert resolve_precision("AMP", "cpu") == "fp32"
    for prec in ("fp16", "bf16", "fp32", "amp"):
        assert resolve_precision(prec, "cuda") == prec  # the decision needs no GPU
    with pytest.raises(ValueError, match="PREC"):
        resolve_precision("fp8", "cpu")
    assert training.grad_scaler("fp32", "cpu") is None
    with training.autocast("fp32", "cpu"):
        assert not torch.is_autocast_enabled("cpu")


# ------------------------------------------------------------------ lr schedule


def optim_cfg(**kw):
    c = CN()
    c.LR, c.MAX_EPOCH, c.LR_SCHEDULER = 0.02, 10, "cosine"
    c.WARMUP_EPOCH, c.WARMUP_TYPE, c.WARMUP_CONS_LR, c.WARMUP_MIN_LR = 1, "constant", 1e-5, 1e-5
    c.WARMUP_RECOUNT, c.GAMMA, c.STEPSIZE = False, 0.1, (-1,)
    for k, v in kw.items():
        c[k] = v
    return c


def rates(cfg, epochs=None):
    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=cfg.LR)
    sched = build_lr_scheduler(opt, cfg)
    out = []
    for _ in range(epochs or cfg.MAX_EPOCH):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out, opt, sched


def test_lr_schedule_closed_forms():
    plain, _, _ = rates(optim_cfg(WARMUP_EPOCH=0))
    T = 10
    np.testing.assert_allclose(plain, [0.02 * (1 + math.cos(math.pi * e / T)) / 2 for e in range(T)])
    warm, _, _ = rates(optim_cfg())
    assert warm[0] == pytest.approx(1e-5) and warm[1] == pytest.approx(0.02)
    np.testing.assert_allclose(warm[5], 0.02 * (1 + math.cos(math.pi * 5 / T)) / (1 + math.cos(math.pi / T)))
    lin, _, _ = rates(optim_cfg(WARMUP_EPOCH=4, WARMUP_TYPE="linear"))
    np.testing.assert_allclose(lin[:5], [1e-5, 0.005, 0.01, 0.015, 0.02])
    assert lr_factor(3, optim_cfg(LR_SCHEDULER="single_step", STEPSIZE=(2,), WARMUP_EPOCH=0), 0.02) == pytest.approx(
        0.1
    )
    with pytest.raises(ValueError, match="LR_SCHEDULER"):
        rates(optim_cfg(LR_SCHEDULER="poly"))


def test_lr_schedule_state_is_plain_and_resumes(tmp_path):
    cfg = optim_cfg()
    full, _, _ = rates(cfg)
    first, opt, sched = rates(cfg, epochs=4)
    state = roundtrip(sched.state_dict())  # no pickled objects: weights_only loading works
    assert state["lr_lambdas"] == [None]
    opt2 = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=cfg.LR)
    sched2 = build_lr_scheduler(opt2, cfg)
    sched2.load_state_dict(state)
    opt2.param_groups[0]["lr"] = sched2.get_last_lr()[0]  # the optimizer state carries it in a checkpoint
    rest = []
    for _ in range(6):
        rest.append(opt2.param_groups[0]["lr"])
        opt2.step()
        sched2.step()
    np.testing.assert_allclose(first + rest, full)


# ------------------------------------------------------------------ checkpoint state


def test_rng_state_roundtrip_restores_every_stream():
    gen = np.random.default_rng(5)
    rng = RNGState({"cuts": gen})
    state = roundtrip(rng.state_dict())

    def draw():
        return (random.random(), float(np.random.rand()), float(torch.rand(1)), float(gen.random()))

    first = draw()
    draw()
    rng.load_state_dict(state)
    assert draw() == first


def test_checkpoint_module_shares_parameters_and_carries_extra_state(taxonomy):
    model = make_model(taxonomy)
    module = CheckpointModule(model.learnable_modules())
    gpa = GaussianPromptAggregator(3, mean=2, std=1)
    module.add_state("gpa", gpa)
    module.add_state("rng", RNGState({"cuts": model.objective.rng}))
    with torch.no_grad():
        module.prompt_learner.ctx.add_(1.0)
    assert torch.equal(module.prompt_learner.ctx, model.prompt_learner.ctx)  # shared, not copied
    gpa.update(0, module.weights())
    sd = module.state_dict()
    assert {k.split(".")[0] for k in sd} == {"prompt_learner", "fusion", "curvatures", "_extra_state"}
    assert not any("visual" in k or "token_embedding" in k or k.endswith("tokens") for k in sd)
    saved = roundtrip(sd)

    other = make_model(taxonomy.subtree(["eagle", "cat", "coupe"]))  # another tree, same shapes
    target = CheckpointModule(other.learnable_modules())
    gpa2 = GaussianPromptAggregator(3, mean=2, std=1)
    target.add_state("gpa", gpa2)
    target.load_state_dict(saved)
    assert torch.equal(other.prompt_learner.ctx, model.prompt_learner.ctx)
    assert gpa2.epochs_seen == []  # extra state waits for restore_state (resume only)
    assert target.restore_state() == ["gpa"]
    assert gpa2.epochs_seen == [0]
    assert target.restore_state() == []

    w = module.weights()
    assert "_extra_state" not in w and set(w) == {k for k in sd if k != "_extra_state"}
    doubled = {k: v * 2 for k, v in w.items()}
    module.load_weights(doubled)
    assert torch.equal(model.prompt_learner.ctx, doubled["prompt_learner.ctx"])
    with pytest.raises(KeyError, match="missing"):
        module.load_weights({k: v for k, v in doubled.items() if k != "prompt_learner.ctx"})


@pytest.mark.parametrize(
    "preset,parts",
    [
        ("vanilla", {"prompt_learner"}),
        ("protect", {"prompt_learner"}),
        ("hyptree", {"prompt_learner", "fusion", "curvatures"}),
    ],
)
def test_learnable_modules_cover_exactly_the_trainable_parameters(taxonomy, preset, parts):
    model = make_model(taxonomy, preset)
    modules = model.learnable_modules()
    assert set(modules) == parts
    learn = {id(p) for p in modules.parameters() if p.requires_grad}
    assert learn == {id(p) for p in model.trainable_parameters()}
    clip_params = {id(p) for p in model.clip.parameters()}
    assert not clip_params & {id(p) for p in modules.parameters()}
    size = sum(p.numel() for p in modules.parameters())
    assert size < sum(p.numel() for p in model.clip.parameters()) / 10


# ------------------------------------------------------------------ make-tiny CLI


def test_make_tiny_writes_a_loadable_clip(tmp_path, capsys):
    path = tmp_path / "nested" / "tiny.pt"
    assert clip_main(["make-tiny", str(path), "--seed", "3"]) == 0
    assert "tiny CLIP" in capsys.readouterr().out
    loaded = load_clip(str(path), device="cpu")
    reference = tiny_clip(seed=3, transformer_heads=1)
    tokens = torch.randint(1, 1000, (2, 77))
    tokens[:, 5] = 49407  # EOT
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_text(tokens), reference.encode_text(tokens))
        torch.testing.assert_close(loaded.encode_image(x), reference.encode_image(x))
    with pytest.raises(SystemExit):
        clip_main(["make-tiny", str(tmp_path / "bad.pt"), "--image-size", "30"])


def test_make_tiny_module_entry_point(tmp_path):
    out = tmp_path / "t.pt"
    proc = subprocess.run(
        [sys.executable, "-m", "hyptree", "clip", "make-tiny", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.is_file()


# ------------------------------------------------------------------ configs


def test_generated_trainer_configs_are_up_to_date():
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "configs", "trainers", "generate.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_generated_configs_keep_the_published_settings():
    sys.path.insert(0, os.path.join(ROOT, "configs", "trainers"))
    try:
        import generate
    finally:
        sys.path.pop(0)
    files = generate.all_files()
    one = files["MaPLeHypTree/vit_b16_c2_ep200_batch8_2ctx_cifar100_1shot.yaml"]
    for needle in (
        "LR: 0.02",
        "MAX_EPOCH: 200",
        "BATCH_SIZE: 8",
        "C0: 0.5",
        "SCALE_TEXT: 10.0",
        "PROMPT_DEPTH: 3",
        "LAMBDA: 0.5",
        "ALPHA: 0.5",
        "LAYERS: [4, 7, 11]",
        "WARMUP_EPOCH: 1",
    ):
        assert needle in one, needle
    src = files["PromptSRCHypTree/vit_b16_c2_ep10_batch8_4+4ctx_rarespecies_16shot.yaml"]
    for needle in ("GPA_MEAN: 30", "GPA_STD: 30", "C0: 0.05", "TEXT_LOSS_WEIGHT: 25", "CLIP_PATH"):
        assert needle in src, needle
    assert 'PRESET: "protect"' in files["CoOpHier/protect.yaml"]
    assert 'MODE: "euclidean"' in files["MaPLeHypTree/ablation_euclidean.yaml"]
    assert "IMAGE_TREE: False" in files["PromptSRCHypTree/ablation_no_image_tree.yaml"]
    tiny = files["MaPLeHypTree/tiny_cpu.yaml"]
    assert 'PREC: "fp32"' in tiny and "NUM_WORKERS: 0" in tiny and "SIZE: (32, 32)" in tiny
