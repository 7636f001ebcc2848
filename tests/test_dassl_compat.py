"""hyptree.run.dassl_compat against the real Dassl: warm-up schedulers on torch >= 2,
checkpoints written by Dassl's own save_checkpoint, old-format checkpoints, crafted pickles."""

import math
import os
import pickle

import pytest
import torch

pytestmark = pytest.mark.dassl

BASE_LR, CONS_LR, MAX_EPOCH = 0.002, 1e-5, 5


@pytest.fixture(scope="module")
def dassl():
    from hyptree.run.dassl_compat import apply_dassl_compat

    apply_dassl_compat()
    assert apply_dassl_compat() == ["load_ckpt", "numpy_int", "warmup_init", "warmup_state"]  # idempotent
    import dassl.optim
    import dassl.utils

    return dassl


def _optim_cfg(warmup_epoch=1):
    from dassl.config import get_cfg_default

    cfg = get_cfg_default().OPTIM.clone()
    cfg.merge_from_list(
        ["NAME", "sgd", "LR", BASE_LR, "MAX_EPOCH", MAX_EPOCH, "LR_SCHEDULER", "cosine"]
        + ["WARMUP_EPOCH", warmup_epoch, "WARMUP_TYPE", "constant", "WARMUP_CONS_LR", CONS_LR]
    )
    return cfg


def _build(dassl, seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    cfg = _optim_cfg()
    optim = dassl.optim.build_optimizer(model, cfg)
    return model, optim, dassl.optim.build_lr_scheduler(optim, cfg)


def _train_epoch(model, optim, sched):
    loss = model(torch.ones(4, 3)).pow(2).sum()
    optim.zero_grad()
    loss.backward()
    optim.step()
    sched.step()


def _cosine(epoch):  # closed form of CosineAnnealingLR (eta_min 0)
    return 0.5 * BASE_LR * (1 + math.cos(math.pi * epoch / MAX_EPOCH))


def test_warmup_scheduler_builds_and_follows_constant_then_cosine(dassl):
    model, optim, sched = _build(dassl)
    assert type(sched).__name__ == "ConstantWarmupScheduler"
    lrs = [optim.param_groups[0]["lr"]]
    for _ in range(MAX_EPOCH):
        _train_epoch(model, optim, sched)
        lrs.append(optim.param_groups[0]["lr"])
    # epoch 0: the warm-up constant; then the cosine restarted at 0 (WARMUP_RECOUNT)
    expected = [CONS_LR] + [_cosine(e) for e in range(MAX_EPOCH)]
    assert lrs == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_dassl_checkpoint_is_plain_data_and_resumes(dassl, tmp_path):
    model, optim, sched = _build(dassl)
    for _ in range(3):
        _train_epoch(model, optim, sched)
    state = {"state_dict": model.state_dict(), "epoch": 3, "optimizer": optim.state_dict()}
    state["scheduler"] = sched.state_dict()
    dassl.utils.save_checkpoint(state, str(tmp_path), model_name="model.pth.tar-3")
    path = str(tmp_path / "model.pth.tar-3")

    plain = torch.load(path, weights_only=True)  # no allow-list needed
    assert isinstance(plain["scheduler"]["successor"], dict)

    model2, optim2, sched2 = _build(dassl, seed=1)
    start = dassl.utils.resume_from_checkpoint(str(tmp_path), model2, optim2, sched2)
    assert start == 3
    for _ in range(2):
        _train_epoch(model, optim, sched)
        _train_epoch(model2, optim2, sched2)
        assert optim2.param_groups[0]["lr"] == optim.param_groups[0]["lr"]
    assert torch.equal(model2.weight, model.weight)
    assert optim.param_groups[0]["lr"] == pytest.approx(_cosine(4))


def test_old_format_checkpoint_loads_through_the_restricted_unpickler(dassl, tmp_path):
    model, optim, sched = _build(dassl)
    _train_epoch(model, optim, sched)
    _train_epoch(model, optim, sched)
    # what unpatched Dassl writes: torch's LRScheduler.state_dict, with the live successor in it
    old = torch.optim.lr_scheduler.LRScheduler.state_dict(sched)
    assert isinstance(old["successor"], torch.optim.lr_scheduler.CosineAnnealingLR)
    path = tmp_path / "model.pth.tar-2"
    torch.save({"state_dict": model.state_dict(), "epoch": 2, "optimizer": optim.state_dict(), "scheduler": old}, path)
    with pytest.raises(pickle.UnpicklingError):  # what --eval-only hit without the layer
        torch.load(path, weights_only=True)

    ckpt = dassl.utils.load_checkpoint(str(path))
    assert ckpt["epoch"] == 2 and torch.equal(ckpt["state_dict"]["weight"], model.weight)
    _, optim2, sched2 = _build(dassl, seed=1)
    optim2.load_state_dict(ckpt["optimizer"])
    sched2.load_state_dict(ckpt["scheduler"])
    assert sched2.successor.last_epoch == sched.successor.last_epoch == 1
    _train_epoch(model, optim2, sched2)
    assert optim2.param_groups[0]["lr"] == pytest.approx(_cosine(2))


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_crafted_pickle_is_refused_unless_trusted(dassl, tmp_path, monkeypatch):
    target = str(tmp_path / "was_run")
    path = tmp_path / "evil.pth.tar"
    torch.save({"state_dict": {}, "epoch": 1, "payload": _Evil(target)}, path)
    monkeypatch.delenv("DASSL_COMPAT_TRUST_CKPT", raising=False)
    with pytest.raises(pickle.UnpicklingError, match=r"refused.*posix\.mkdir.*DASSL_COMPAT_TRUST_CKPT=1"):
        dassl.utils.load_checkpoint(str(path))
    assert not os.path.exists(target)
    # the trainer modules keep their own binding of load_checkpoint: it is the patched one too
    import dassl.engine.trainer as engine_trainer

    assert engine_trainer.load_checkpoint is dassl.utils.load_checkpoint
    monkeypatch.setenv("DASSL_COMPAT_TRUST_CKPT", "1")
    with pytest.warns(UserWarning, match="plain pickle"):
        dassl.utils.load_checkpoint(str(path))
    assert os.path.isdir(target)


def test_autoaugment_policies_run_on_numpy_without_int(dassl):
    import numpy as np
    from dassl.data.transforms.autoaugment import CIFAR10Policy, ImageNetPolicy, SVHNPolicy
    from PIL import Image

    assert "int" not in vars(np)
    img = Image.fromarray(np.full((32, 32, 3), 128, dtype=np.uint8))
    for policy in (ImageNetPolicy(), CIFAR10Policy(), SVHNPolicy()):
        assert policy(img).size == (32, 32)


def test_skip_names_are_checked(monkeypatch):
    from hyptree.run.dassl_compat import apply_dassl_compat

    monkeypatch.setenv("DASSL_COMPAT_SKIP", "warmup_int")
    with pytest.raises(ValueError, match=r"warmup_int.*choices.*warmup_init"):
        apply_dassl_compat()
