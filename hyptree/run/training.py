"""Training-loop helpers the Dassl trainers use, kept framework-agnostic (no Dassl).

* :func:`resolve_precision`, :func:`autocast`, :func:`grad_scaler`: ``PREC`` handling
  (fp16 / bf16 / fp32 / amp; always fp32 on the CPU).
* :func:`build_lr_scheduler`: Dassl's learning-rate schedules (cosine / single_step /
  multi_step with constant or linear warm-up) with a plain, loadable state.
* :class:`RNGState`, :class:`CheckpointModule`: what a checkpoint holds besides Dassl's
  model/optimizer/scheduler state, so a resumed run continues exactly where it stopped;
  :func:`learnable_checkpoint` builds the one a trainer registers.
* :func:`loss_summary`: the scalar loss terms of a training step as floats (for the log).
"""

from __future__ import annotations

import bisect
import contextlib
import math
import random
import warnings

import numpy as np
import torch
from torch import nn

from hyptree.model.loading import PRECISIONS
from hyptree.run.dotted import cfg_get

__all__ = [
    "resolve_precision",
    "autocast",
    "grad_scaler",
    "lr_factor",
    "build_lr_scheduler",
    "official_lr_factor",
    "RNGState",
    "CheckpointModule",
    "learnable_checkpoint",
    "loss_summary",
]

# --------------------------------------------------------------------------- precision

_warned: set = set()


def resolve_precision(prec: str, device) -> str:
    """The precision actually used for ``PREC`` on ``device``.

    ``fp16``/``bf16``: CLIP weights in half precision (learned prompts stay fp32); ``fp32``;
    ``amp``: fp32 weights, forward under ``torch.autocast`` (fp16) and a ``GradScaler``.
    On the CPU everything runs in fp32 (warned once per requested precision).
    """
    prec = str(prec).lower()
    if prec not in PRECISIONS:
        raise ValueError(f"PREC must be one of {', '.join(PRECISIONS)}, got {prec!r}")
    if torch.device(device).type != "cuda" and prec != "fp32":
        if prec not in _warned:
            _warned.add(prec)
            warnings.warn(f"PREC {prec!r} on {torch.device(device).type}: running in fp32", stacklevel=2)
        return "fp32"
    return prec


def autocast(precision: str, device):
    """``torch.autocast`` (fp16) for ``amp``, a no-op context otherwise."""
    if precision == "amp":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.float16)
    return contextlib.nullcontext()


def grad_scaler(precision: str, device):
    """A ``GradScaler`` for ``amp``, else None."""
    if precision != "amp":
        return None
    return torch.amp.GradScaler(torch.device(device).type)


# --------------------------------------------------------------------------- lr schedule


def lr_factor(epoch: int, optim_cfg, base_lr: float) -> float:
    """Learning rate of 0-based ``epoch`` as a multiple of ``base_lr``, as Dassl schedules it.

    Dassl (``dassl.optim.build_lr_scheduler``) runs the main schedule (cosine over
    ``MAX_EPOCH`` with ``eta_min = 0``, or step decay) as the *successor* of a warm-up
    scheduler. Without ``WARMUP_RECOUNT`` the successor starts at epoch ``W =
    WARMUP_EPOCH``, and PyTorch's chained cosine update continues from the base rate at
    ``W``; the resulting rates are, for ``W > 0``:

    * epochs ``< W``: ``WARMUP_CONS_LR`` (constant) or ``WARMUP_MIN_LR`` at epoch 0 and
      ``base * e / W`` after (linear);
    * epochs ``e >= W`` (cosine): ``base * (1 + cos(pi e / T)) / (1 + cos(pi W / T))``, i.e.
      the full base rate at ``W`` and the cosine's shape after; with ``WARMUP_RECOUNT`` the
      cosine restarts at ``W``: ``base * (1 + cos(pi (e - W) / T)) / 2``;
    * step schedules: ``gamma`` per boundary passed after ``W`` (``STEPSIZE`` epochs, or the
      listed milestones); with ``WARMUP_RECOUNT`` counted from ``W``.

    ``W = 0`` gives the plain schedules (cosine ``base * (1 + cos(pi e / T)) / 2``).
    """
    name = optim_cfg.LR_SCHEDULER
    T = float(optim_cfg.MAX_EPOCH)
    W = int(optim_cfg.WARMUP_EPOCH) if optim_cfg.WARMUP_EPOCH and optim_cfg.WARMUP_EPOCH > 0 else 0
    recount = bool(cfg_get(optim_cfg, "WARMUP_RECOUNT", True))
    if epoch < W:
        wtype = optim_cfg.WARMUP_TYPE
        if wtype == "constant":
            return optim_cfg.WARMUP_CONS_LR / base_lr if base_lr else 0.0
        if wtype == "linear":
            if epoch == 0:
                return optim_cfg.WARMUP_MIN_LR / base_lr if base_lr else 0.0
            return epoch / W
        raise ValueError(f"OPTIM.WARMUP_TYPE must be constant or linear, got {wtype!r}")
    if name == "cosine":
        if W == 0:
            return (1.0 + math.cos(math.pi * epoch / T)) / 2.0
        if recount:
            return (1.0 + math.cos(math.pi * (epoch - W) / T)) / 2.0
        return (1.0 + math.cos(math.pi * epoch / T)) / (1.0 + math.cos(math.pi * W / T))
    gamma = float(optim_cfg.GAMMA)
    if name == "single_step":
        step = optim_cfg.STEPSIZE
        step = step[-1] if isinstance(step, (list, tuple)) else step
        if not isinstance(step, int):
            raise TypeError(f"OPTIM.STEPSIZE must be an integer for single_step, got {step!r}")
        step = step if step > 0 else int(T)
        if W == 0 or recount:
            return gamma ** ((epoch - W) // step)
        # successor starts at W: boundaries are the multiples of step in (W, epoch]
        return gamma ** (epoch // step - W // step)
    if name == "multi_step":
        milestones = sorted(optim_cfg.STEPSIZE)
        if W == 0 or recount:
            return gamma ** (bisect.bisect_right(milestones, epoch - W) - bisect.bisect_right(milestones, 0))
        return gamma ** (bisect.bisect_right(milestones, epoch) - bisect.bisect_right(milestones, W))
    raise ValueError(f"OPTIM.LR_SCHEDULER must be one of cosine, single_step, multi_step, got {name!r}")


def _factor_fn(optim_cfg, base_lr):
    # a plain function: LambdaLR saves nothing for it (a callable object's __dict__, here the
    # config, would go into the checkpoint)
    def factor(epoch):
        return lr_factor(epoch, optim_cfg, base_lr)

    return factor


def official_lr_factor(it: int, optim_cfg, base_lr: float) -> float:
    """Learning rate of 0-based global iteration ``it`` as a multiple of ``base_lr``, as the
    official code schedules it (``TRAINER.HYPTREE.SCHEDULE official_per_iteration``).

    The official trainer builds Dassl's cosine schedule (``T_max = MAX_EPOCH``) behind a
    constant warm-up of ``WARMUP_EPOCH`` steps and steps it after *every optimiser step*, so
    ``T_max`` counts iterations. With ``W = WARMUP_EPOCH`` (warm-up recount, the default):

    * ``it < W``: ``WARMUP_CONS_LR`` (constant) or, linear, ``WARMUP_MIN_LR`` at 0 and ``base * it / W``;
    * ``it >= W``: ``base * (1 + cos(pi (it - W) / T)) / 2``, continued past ``T`` (PyTorch's
      chained cosine update keeps this closed form), i.e. periodic with period ``2 T``
      iterations: 0 at ``it = T + W``, the base rate again at ``2 T + W``.

    The official files have ``W = 1``: ``0.001`` at iteration 0, then ``base (1 + cos(pi (it-1)/T)) / 2``.
    """
    T = float(optim_cfg.MAX_EPOCH)
    W = int(optim_cfg.WARMUP_EPOCH) if optim_cfg.WARMUP_EPOCH and optim_cfg.WARMUP_EPOCH > 0 else 0
    if optim_cfg.LR_SCHEDULER != "cosine":
        raise ValueError(
            f"TRAINER.HYPTREE.SCHEDULE official_per_iteration needs OPTIM.LR_SCHEDULER cosine, "
            f"got {optim_cfg.LR_SCHEDULER!r}"
        )
    if it < W:
        return lr_factor(it, optim_cfg, base_lr)  # the warm-up rates are Dassl's
    return (1.0 + math.cos(math.pi * (it - W) / T)) / 2.0


def _iteration_factor_fn(optim_cfg, base_lr):
    def factor(it):
        return official_lr_factor(it, optim_cfg, base_lr)

    return factor


def build_lr_scheduler(optimizer, optim_cfg, schedule: str = "dassl_per_epoch"):
    """A ``LambdaLR`` following Dassl's schedules (see :func:`lr_factor`), stepped per epoch,
    or with ``schedule="official_per_iteration"`` the official per-iteration cosine (see
    :func:`official_lr_factor`), to be stepped after every optimiser step. Either way the
    state is ``LambdaLR``'s (the step count), so a resumed run continues the schedule.

    Why not Dassl's own: its warm-up schedulers pass a positional ``verbose`` that recent
    PyTorch no longer accepts, and their ``state_dict`` pickles the successor scheduler (and
    through it the optimizer), which ``torch.load(weights_only=True)`` - the default since
    PyTorch 2.6 - refuses. This one's state is plain numbers; the rates match Dassl's.
    """
    if schedule not in ("dassl_per_epoch", "official_per_iteration"):
        raise ValueError(f"TRAINER.HYPTREE.SCHEDULE = {schedule!r}; expected dassl_per_epoch or official_per_iteration")
    per_iteration = schedule == "official_per_iteration"
    factor_fn = _iteration_factor_fn if per_iteration else _factor_fn
    check = official_lr_factor if per_iteration else lr_factor
    for epoch in {0, max(int(optim_cfg.WARMUP_EPOCH), 0)}:  # validate the settings now
        check(epoch, optim_cfg, optim_cfg.LR)
    lambdas = [factor_fn(optim_cfg, g["lr"]) for g in optimizer.param_groups]
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
    return sched


# --------------------------------------------------------------------------- checkpoint state


class RNGState:
    """Every random-number stream training draws from, for exact resumption.

    ``state_dict()`` captures them *now* (Python's ``random``, NumPy's global RNG, torch's
    CPU and CUDA generators, and the extra ``numpy.random.Generator`` objects given, e.g.
    the objective's tree-cut generator); ``load_state_dict`` sets them. Stored as tensors,
    ints and lists (``torch.load(weights_only=True)``-safe).
    """

    def __init__(self, generators: dict | None = None):
        self.generators = dict(generators or {})

    def state_dict(self):
        np_state = np.random.get_state()
        return {
            "python": random.getstate(),
            "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "generators": {k: g.bit_generator.state for k, g in self.generators.items()},
        }

    def load_state_dict(self, state):
        random.setstate(_tuples(state["python"]))
        n = state["numpy"]
        np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
        torch.set_rng_state(state["torch"].cpu())
        if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([t.cpu() for t in state["cuda"]])
        for k, g in self.generators.items():
            if k in state["generators"]:
                g.bit_generator.state = state["generators"][k]


def _tuples(x):
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


class CheckpointModule(nn.Module):
    """The module a trainer checkpoints: given learnable submodules plus extra state.

    The submodules are registered by reference (parameters shared, not copied), so the
    ``state_dict`` holds exactly the learned weights. Objects added with :meth:`add_state`
    (anything with ``state_dict``/``load_state_dict``: a GPA aggregator, an
    :class:`RNGState`) travel in the same ``state_dict`` under ``_extra_state`` (PyTorch's
    extra-state hook), so Dassl's save / resume / load functions carry them unchanged.

    Loading a checkpoint only *stores* that extra state; :meth:`restore_state` hands it to
    the objects. A trainer calls it when it resumes training, not when it loads weights
    for evaluation (which must not disturb the random streams or need matching GPA
    settings).
    """

    def __init__(self, modules):
        super().__init__()
        for name, module in dict(modules).items():
            self.add_module(name, module)
        self._states = {}
        self._loaded = None

    def add_state(self, name: str, obj) -> None:
        self._states[name] = obj

    def get_extra_state(self):
        return {name: obj.state_dict() for name, obj in self._states.items()}

    def set_extra_state(self, state):
        self._loaded = dict(state or {})

    def restore_state(self) -> list:
        """Load the extra state of the last loaded checkpoint into the objects; returns
        the names restored."""
        loaded, self._loaded = self._loaded or {}, None
        done = []
        for name, obj in self._states.items():
            if name in loaded:
                obj.load_state_dict(loaded[name])
                done.append(name)
        return done

    def weights(self) -> dict:
        """The learned tensors (``state_dict`` without the extra state), detached."""
        return {k: v.detach() for k, v in self.state_dict().items() if not k.endswith("_extra_state")}

    @torch.no_grad()
    def load_weights(self, weights: dict) -> None:
        """Copy ``weights`` (same keys as :meth:`weights`) into the modules in place."""
        own = {k: v for k, v in self.state_dict(keep_vars=True).items() if not k.endswith("_extra_state")}
        if set(own) != set(weights):
            missing, extra = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
            raise KeyError(f"weights do not match: missing {missing[:5]}, unexpected {extra[:5]}")
        for k, v in weights.items():
            own[k].copy_(v.to(own[k].device, own[k].dtype))


def learnable_checkpoint(model) -> CheckpointModule:
    """The checkpointed module of a :class:`~hyptree.model.hierarchical.HierarchicalCLIP`: its
    learnable submodules, plus the random streams (the objective's tree-cut generator too)."""
    module = CheckpointModule(model.learnable_modules())
    module.add_state("rng", RNGState({"tree_cuts": model.objective.rng}))
    return module


def loss_summary(terms: dict) -> dict:
    """``{name: float}`` of the one-element tensors in a loss dict, with one device sync."""
    names = [k for k, v in terms.items() if torch.is_tensor(v) and v.numel() == 1]
    if not names:
        return {}
    values = torch.stack([terms[k].detach().float().reshape(()) for k in names])
    return dict(zip(names, values.tolist()))
