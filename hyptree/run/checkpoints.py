"""Checkpoints that survive a kill: atomic writes, and a resume that finds the newest intact one.

Dassl writes ``model.pth.tar-N`` and then the ``checkpoint`` pointer naming it, both in
place: a run killed in between leaves a torn or empty ``tar-N`` and no (or an empty)
pointer, and Dassl's resume then fails for good. Here

* :func:`save_checkpoint` writes the file and the pointer (and ``model-best.pth.tar``)
  through :func:`hyptree.utils.files.atomic_open`: each is the old file or the complete new
  one, never half of one;
* :func:`find_resumable` ignores the pointer when it is missing, empty or names a file that
  does not load, tries every ``model.pth.tar-N`` newest first, skips the ones that do not
  load (saying which and why) and returns the newest intact one;
* :func:`config_difference` compares the options a checkpoint was trained with (stored in
  it as ``config``, the yacs dump without :data:`~hyptree.run.records.VOLATILE_KEYS`) with
  the resuming run's, so a resume with changed options is refused with the differing keys.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections import OrderedDict

import torch
import yaml

from hyptree.run.records import VOLATILE_KEYS
from hyptree.utils.files import atomic_open, atomic_write_text

__all__ = [
    "POINTER",
    "save_checkpoint",
    "find_resumable",
    "load_intact",
    "config_text",
    "config_difference",
    "remove_stale_temporaries",
]

POINTER = "checkpoint"  # Dassl's file naming the latest model.pth.tar-N
_EPOCH_FILE = re.compile(r"^model\.pth\.tar-(\d+)$")


def save_checkpoint(state: dict, save_dir: str, is_best: bool = False, model_name: str = "") -> str:
    """Dassl's ``save_checkpoint`` (same files, same ``module.`` stripping), written atomically:
    ``model.pth.tar-EPOCH`` (or ``model_name``), then the pointer, then ``model-best.pth.tar``
    when ``is_best``. Returns the checkpoint's path."""
    state = dict(state)
    state["state_dict"] = OrderedDict(
        (k[7:] if k.startswith("module.") else k, v) for k, v in state["state_dict"].items()
    )
    name = model_name or f"model.pth.tar-{state['epoch']}"
    path = os.path.join(save_dir, name)
    with atomic_open(path, "wb") as f:
        torch.save(state, f)
    print(f"Checkpoint saved to {path}")
    atomic_write_text(os.path.join(save_dir, POINTER), name + "\n")
    if is_best:
        best = os.path.join(save_dir, "model-best.pth.tar")
        with atomic_open(best, "wb") as f:
            torch.save(state, f)
        print(f'Best checkpoint saved to "{best}"')
    return path


def load_intact(path: str) -> dict:
    """Load a checkpoint, or raise ``ValueError`` naming the file and what is wrong with it
    (empty, torn, not a checkpoint)."""
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path}: empty file (a write that never finished)")
    try:
        ckpt = torch.load(path, map_location="cpu")
    except Exception as e:  # torn zip, truncated pickle, ...
        raise ValueError(f"{path}: unreadable ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "epoch" not in ckpt:
        raise ValueError(f"{path}: not a Dassl checkpoint (no state_dict / epoch)")
    return ckpt


def _read_pointer(save_dir: str) -> tuple[str | None, str]:
    """``(file named by the pointer, note)``; None with a note when there is no usable pointer."""
    path = os.path.join(save_dir, POINTER)
    if not os.path.isfile(path):
        return None, f"{path} is missing"
    with open(path, encoding="utf-8", errors="replace") as f:
        first = f.readline().strip()
    if not first:
        return None, f"{path} is empty"
    return first, ""


def find_resumable(save_dir: str) -> tuple[str | None, dict | None, list[str]]:
    """The newest intact checkpoint in ``save_dir``: ``(path, loaded checkpoint, notes)``.

    Candidates are every ``model.pth.tar-N``, highest ``N`` first (the pointer's file, if it
    names another one, is tried first). Files that do not load are skipped; ``notes`` says
    what was skipped and why, and when the pointer was missing, empty or stale. ``(None,
    None, notes)`` when no file loads.
    """
    notes: list[str] = []
    named, note = _read_pointer(save_dir)
    if note:
        notes.append(note)
    files = sorted(
        (f for f in os.listdir(save_dir) if _EPOCH_FILE.match(f)),
        key=lambda f: int(_EPOCH_FILE.match(f).group(1)),
        reverse=True,
    )
    if named and named not in files and os.path.isfile(os.path.join(save_dir, named)):
        files.insert(0, named)
    elif named and named not in files:
        notes.append(f"{os.path.join(save_dir, POINTER)} names {named!r}, which does not exist")
    for name in files:
        path = os.path.join(save_dir, name)
        try:
            ckpt = load_intact(path)
        except (ValueError, OSError) as e:
            notes.append(f"skipped {e}")
            continue
        if named and name != named:
            notes.append(f"{os.path.join(save_dir, POINTER)} names {named!r}; resuming from the newest intact {name}")
        return path, ckpt, notes
    return None, None, notes


def remove_stale_temporaries(save_dir: str) -> list[str]:
    """Delete the temporary files a killed :func:`save_checkpoint` left (``.NAME.*.tmp``)."""
    gone = []
    for f in os.listdir(save_dir):
        if f.startswith((".model", f".{POINTER}.")) and f.endswith(".tmp"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(save_dir, f))
                gone.append(f)
    return gone


def config_text(cfg) -> str:
    """The yacs dump a checkpoint stores: the run's options without the volatile keys."""
    data = yaml.safe_load(cfg.dump())
    for key in VOLATILE_KEYS:
        node, parts = data, key.split(".")
        for p in parts[:-1]:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(parts[-1], None)
    return yaml.safe_dump(data, sort_keys=True)


def _flatten(node, prefix: str = "") -> dict:
    if not isinstance(node, dict):
        return {prefix: node}
    out = {}
    for k, v in node.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def config_difference(saved: str, current: str) -> list[str]:
    """``KEY: saved -> current`` for every option that differs between two :func:`config_text` dumps."""
    a, b = _flatten(yaml.safe_load(saved) or {}), _flatten(yaml.safe_load(current) or {})
    missing = object()
    return [
        f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}"
        for k in sorted(set(a) | set(b))
        if a.get(k, missing) != b.get(k, missing)
    ]


def checkpoint_state(model, optim, sched, epoch: int, val_result, cfg) -> dict:
    """What Dassl's ``save_model`` stores for one registered module, plus the run's options."""
    return {
        "state_dict": model.state_dict(),
        "epoch": epoch + 1,
        "optimizer": None if optim is None else optim.state_dict(),
        "scheduler": None if sched is None else sched.state_dict(),
        "val_result": val_result,
        "config": config_text(cfg),
    }


def resumable_checkpoints(folders: dict, cfg, log=print) -> dict | None:
    """``{name: (path, checkpoint)}``: the newest intact checkpoint of every module folder.

    None (train from scratch) when a folder is missing or holds no intact checkpoint. Torn,
    empty or unreadable files and a missing or empty pointer are skipped, each with a note.
    Raises ``ValueError`` listing the keys when a checkpoint was trained with other options.
    """
    found = {}
    for name, folder in folders.items():
        if not os.path.isdir(folder):
            log("No checkpoint found, train from scratch")
            return None
        remove_stale_temporaries(folder)
        path, ckpt, notes = find_resumable(folder)
        for note in notes:
            log(f"Resume: {note}")
        if path is None:
            log(f"No intact checkpoint in {folder}, train from scratch")
            return None
        found[name] = (path, ckpt)
    current = config_text(cfg)
    for path, ckpt in found.values():
        diff = config_difference(ckpt["config"], current) if ckpt.get("config", current) != current else []
        if diff:
            raise ValueError(
                f"{path} was trained with other options; refusing to resume with changed options "
                f"(start a new --output-dir, or go back to the saved ones):\n  " + "\n  ".join(diff)
            )
    return found
