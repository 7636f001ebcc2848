"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Every file HypTree writes that another process may read (run results, split files,
caches, generated images) goes through :func:`atomic_open`: the data goes to a
uniquely named temporary file in the target's folder, which is renamed over the target
(``os.replace``, atomic on POSIX and Windows) only once it is complete. A failure leaves
the old file untouched and removes the temporary one.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile

__all__ = ["atomic_open", "atomic_write_bytes", "atomic_write_text", "atomic_write_json"]


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w", encoding: str | None = "utf-8"):
    """``with atomic_open(path, "wb") as f: ...``: ``path`` appears when the block ends.

    The parent folder is created if needed. ``mode`` is ``"w"`` (text) or ``"wb"``.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open mode must be 'w' or 'wb', not {mode!r}")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def atomic_write_bytes(path: str, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_write_json(path: str, obj, indent: int | None = 1, **kwargs) -> None:
    """``json.dumps(obj)`` written atomically, with a final newline."""
    atomic_write_text(path, json.dumps(obj, indent=indent, **kwargs) + "\n")
