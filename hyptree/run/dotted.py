"""Reading a yacs config by dotted key: ``cfg_get(cfg, "TRAINER.HYPTREE.PRESET")``.

Kept apart from ``hyptree.run.config`` (which imports the model code for its choice lists)
so the light command-line helpers of the protocol scripts start without torch.
"""

from __future__ import annotations

__all__ = ["cfg_get", "require_keys"]

_MISSING = object()


def cfg_get(cfg, dotted: str, default=_MISSING):
    """``cfg_get(cfg, "TRAINER.HYPTREE.PRESET")``: the value at a dotted key.

    Without ``default`` a missing key raises ``KeyError`` naming the first missing part;
    with it, ``default`` is returned.
    """
    node = cfg
    for i, part in enumerate(dotted.split(".")):
        if not hasattr(node, "keys") or part not in node:
            if default is _MISSING:
                raise KeyError(f"config has no key {'.'.join(dotted.split('.')[: i + 1])}")
            return default
        node = node[part]
    return node


def require_keys(cfg, keys, purpose: str) -> None:
    """Raise ``KeyError`` listing the dotted ``keys`` missing from ``cfg``."""
    absent = object()
    missing = [k for k in keys if cfg_get(cfg, k, absent) is absent]
    if missing:
        raise KeyError(
            f"config lacks {', '.join(missing)}: call hyptree.run.config.add_hyptree_config(cfg) "
            f"on the Dassl config before {purpose} (train.py's extend_cfg does)"
        )
