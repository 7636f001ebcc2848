"""The run layer: the one part of ``hyptree`` that reads yacs configs (top of the house).

    from hyptree.run import add_hyptree_config, default_config, build_model

* :mod:`~hyptree.run.config` - the keys and their defaults, :func:`check_config`;
* :mod:`~hyptree.run.dotted` - :func:`cfg_get`, the one dotted-key reader;
* :mod:`~hyptree.run.factory` - model and dataset options from a config;
* :mod:`~hyptree.run.records` - evaluation cuts, config hash, the ``results.json`` record;
* :mod:`~hyptree.run.training` - precision, learning-rate schedule, checkpoint state;
* :mod:`~hyptree.run.protocols`, :mod:`~hyptree.run.maple_patch` - the scripts' helpers.

The names below are imported on first use, so ``python -m hyptree protocols ...`` (called
once per run by the scripts) loads no torch.
"""

import importlib

_EXPORTS = {
    "hyptree.run.config": (
        "add_hyptree_config",
        "default_config",
        "check_config",
        "configure_for_trainer",
        "resolve_backbone",
        "BACKBONES",
        "PRESETS",
        "CURVATURE_MODES",
        "CROSS_TERMS",
        "SPLIT_MODES",
    ),
    "hyptree.run.dotted": ("cfg_get", "require_keys"),
    "hyptree.run.factory": (
        "build_model",
        "dataset_options",
        "prompt_options",
        "objective_settings",
        "curvature_options",
    ),
    "hyptree.run.records": (
        "evaluation_cuts_for",
        "config_hash",
        "run_record",
        "results_name",
        "write_evaluation",
        "VOLATILE_KEYS",
    ),
    "hyptree.run.training": (
        "resolve_precision",
        "autocast",
        "grad_scaler",
        "lr_factor",
        "build_lr_scheduler",
        "RNGState",
        "CheckpointModule",
        "learnable_checkpoint",
        "loss_summary",
    ),
    "hyptree.run.protocols": ("ABLATIONS", "ablation_variants", "max_epoch", "is_done"),
    "hyptree.run.maple_patch": ("install", "plan_install", "patch_train_py", "InstallError"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = list(_MODULE_OF)


def __getattr__(name):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
