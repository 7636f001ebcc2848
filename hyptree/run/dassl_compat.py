"""Make Dassl 0.6.3 (the last release, 2022) work on current PyTorch and NumPy.

:func:`apply_dassl_compat` patches Dassl in place; our ``train.py`` calls it, and the
MaPLe / PromptSRC install (:mod:`hyptree.run.maple_patch`) adds the same call to their
``train.py``, so their own trainers (MaPLe, IVLP, VPT, CoOp, CoCoOp, PromptSRC) and ours
run in one environment. Call it before the trainers are imported: they bind
``from dassl.utils import load_checkpoint`` at import time. It is idempotent.

The patches (``DASSL_COMPAT_SKIP=name,name`` turns single ones off, to show each is needed):

``warmup_init``
    Dassl's warm-up schedulers call ``LRScheduler.__init__(optimizer, last_epoch, verbose)``;
    torch >= 2.7 dropped the positional ``verbose``, so every config with
    ``OPTIM.WARMUP_EPOCH > 0`` dies in ``build_lr_scheduler`` with a ``TypeError``.
``warmup_state``
    A warm-up scheduler's ``state_dict()`` holds its ``successor`` as a live scheduler
    object (which holds the optimizer and the trainable parameters), so the checkpoint
    cannot be read by ``torch.load(weights_only=True)``, the default since torch 2.6. The
    successor is stored as its own ``state_dict()`` instead: new checkpoints are plain
    data. ``load_state_dict`` accepts both forms.
``load_ckpt``
    ``dassl.utils.load_checkpoint`` reads checkpoints that are plain data with
    ``weights_only=True``; an older checkpoint (a pickled successor, as every MaPLe /
    PromptSRC checkpoint written with a warm-up has) is read by a restricted unpickler
    that resolves only tensors, storages, plain containers and torch / Dassl optimizer
    and scheduler classes, and refuses anything else. Torch's own weights-only unpickler
    cannot read those files even with an allow-list (it refuses to fill the
    ``defaultdict`` of an optimizer's state). ``DASSL_COMPAT_TRUST_CKPT=1`` loads a
    refused file with plain pickle, for files you trust.
``numpy_int``
    Dassl's AutoAugment / RandAugment policies use ``np.int`` (removed in NumPy 1.24);
    those two modules get a NumPy stand-in that has it (NumPy itself is untouched).
"""

from __future__ import annotations

import collections
import inspect
import os
import pickle
import types
import warnings

__all__ = ["apply_dassl_compat", "PATCHES", "RestrictedUnpickler", "load_checkpoint", "TRUST_ENV", "SKIP_ENV"]

TRUST_ENV = "DASSL_COMPAT_TRUST_CKPT"
SKIP_ENV = "DASSL_COMPAT_SKIP"
_applied: set[str] = set()


# --------------------------------------------------------------------------- schedulers


def _patch_warmup_init() -> None:
    from dassl.optim import lr_scheduler as dls
    from torch.optim.lr_scheduler import LRScheduler

    has_verbose = "verbose" in inspect.signature(LRScheduler.__init__).parameters

    def __init__(self, optimizer, successor, warmup_epoch, last_epoch=-1, verbose=False):
        self.successor = successor
        self.warmup_epoch = warmup_epoch
        if has_verbose and verbose:
            LRScheduler.__init__(self, optimizer, last_epoch, verbose=verbose)
        else:
            LRScheduler.__init__(self, optimizer, last_epoch)

    dls._BaseWarmupScheduler.__init__ = __init__


def _patch_warmup_state() -> None:
    from dassl.optim import lr_scheduler as dls

    def state_dict(self):
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "successor")}
        state["successor"] = self.successor.state_dict()
        return state

    def load_state_dict(self, state_dict):
        state = dict(state_dict)
        successor = state.pop("successor", None)
        if successor is not None:
            if not isinstance(successor, dict):  # an old checkpoint: the pickled scheduler itself
                successor = {k: v for k, v in vars(successor).items() if k != "optimizer"}
            self.successor.load_state_dict(successor)
        self.__dict__.update(state)

    dls._BaseWarmupScheduler.state_dict = state_dict
    dls._BaseWarmupScheduler.load_state_dict = load_state_dict


# --------------------------------------------------------------------------- checkpoints


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only what a Dassl checkpoint needs; any other global is an UnpicklingError."""

    _BUILTINS = frozenset(
        "dict list set frozenset tuple int float bool str complex slice range bytes bytearray".split()
    )
    _TORCH_NAMES = frozenset({"Size", "device", "dtype"})

    def find_class(self, module, name):
        import torch

        module = "builtins" if module == "__builtin__" else module  # protocol-2 names
        if module == "builtins" and name in self._BUILTINS:
            return super().find_class(module, name)
        if module == "collections" and name in ("OrderedDict", "defaultdict", "Counter"):
            return getattr(collections, name)
        if module in ("torch._utils", "torch._tensor") and name.startswith("_rebuild"):
            return super().find_class(module, name)
        if module == "torch.storage" and name in ("UntypedStorage", "TypedStorage"):
            return super().find_class(module, name)
        if module == "torch":
            obj = getattr(torch, name, None)
            if isinstance(obj, torch.dtype) or (
                isinstance(obj, type) and (name.endswith("Storage") or name in self._TORCH_NAMES)
            ):
                return obj
        if module.startswith(("torch.optim", "dassl.optim")):
            obj = super().find_class(module, name)
            sched = torch.optim.lr_scheduler
            bases = (torch.optim.Optimizer, sched.LRScheduler, sched.ReduceLROnPlateau)
            if isinstance(obj, type) and issubclass(obj, bases):
                return obj
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name} (not on the Dassl checkpoint allow-list)")


class _RestrictedPickle(types.ModuleType):
    """A ``pickle_module`` for ``torch.load`` whose Unpickler is :class:`RestrictedUnpickler`."""

    Unpickler = RestrictedUnpickler

    @staticmethod
    def load(file, **kwargs):
        return RestrictedUnpickler(file, **kwargs).load()


def load_checkpoint(fpath):
    """Dassl's ``load_checkpoint`` without arbitrary unpickling (see the module docstring)."""
    import torch

    if fpath is None:
        raise ValueError("File path is None")
    if not os.path.exists(fpath):
        raise FileNotFoundError(f'File is not found at "{fpath}"')
    where = None if torch.cuda.is_available() else "cpu"
    try:
        return torch.load(fpath, map_location=where, weights_only=True)
    except pickle.UnpicklingError as first:
        try:
            return torch.load(
                fpath, map_location=where, weights_only=False, pickle_module=_RestrictedPickle("restricted_pickle")
            )
        except pickle.UnpicklingError as second:
            if os.environ.get(TRUST_ENV) != "1":
                raise pickle.UnpicklingError(
                    f"{fpath}: refused: {second}; the file is not plain data either (torch.load(weights_only=True) "
                    f"fails). If you trust this file, set {TRUST_ENV}=1 to load it with plain pickle."
                ) from first
        warnings.warn(f"{fpath}: loading with plain pickle ({TRUST_ENV}=1)", stacklevel=2)
        return torch.load(fpath, map_location=where, weights_only=False)


def _patch_load_checkpoint() -> None:
    import dassl.engine.trainer as engine_trainer
    import dassl.utils as du
    import dassl.utils.torchtools as torchtools

    load_checkpoint.__doc__ = torchtools.load_checkpoint.__doc__ or load_checkpoint.__doc__
    for module in (torchtools, du, engine_trainer):
        module.load_checkpoint = load_checkpoint


# --------------------------------------------------------------------------- numpy


def _patch_numpy_int() -> None:
    import numpy

    if "int" in vars(numpy):
        return
    from dassl.data.transforms import autoaugment, randaugment

    class NumpyWithInt(types.ModuleType):
        int = int

        def __getattr__(self, name):
            return getattr(numpy, name)

    for module in (autoaugment, randaugment):
        module.np = NumpyWithInt("numpy")


PATCHES = {
    "warmup_init": _patch_warmup_init,
    "warmup_state": _patch_warmup_state,
    "load_ckpt": _patch_load_checkpoint,
    "numpy_int": _patch_numpy_int,
}


def apply_dassl_compat() -> list[str]:
    """Apply the patches not named in ``DASSL_COMPAT_SKIP`` (once each); returns the names applied."""
    skip = {s.strip() for s in os.environ.get(SKIP_ENV, "").split(",") if s.strip()}
    unknown = skip - set(PATCHES)
    if unknown:
        raise ValueError(f"{SKIP_ENV}: unknown patch name(s) {sorted(unknown)}; choices: {sorted(PATCHES)}")
    for name, patch in PATCHES.items():
        if name not in skip and name not in _applied:
            patch()
            _applied.add(name)
    return sorted(_applied)
