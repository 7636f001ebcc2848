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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files readable by the owner only; give atomic files the mode a plain open() would
_FILE_MODE = 0o666 & ~_umask()

__all__ = [
    "atomic_open",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "file_lock",
    "build_dir_once",
    "build_file_once",
]


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
        os.chmod(tmp, _FILE_MODE)
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


# ------------------------------------------------------------------ build once, under concurrency


def file_lock(path: str, timeout: float = -1):
    """An inter-process lock on ``path + ".lock"`` (``with file_lock(p): ...``).

    Used around "build it if it is not there yet" steps (data preparation, caches), so two
    runs started together build once: the second waits, then finds the result.
    """
    from filelock import FileLock  # a torch dependency; imported here to keep this module light

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return FileLock(path + ".lock", timeout=timeout)


def build_dir_once(target: str, build, marker: str = ".complete") -> bool:
    """Make the folder ``target`` with ``build(tmp_dir)`` unless it is already complete.

    Complete means ``target/marker`` exists. ``build`` fills a private temporary folder next
    to ``target``; the marker is written into it, and it is renamed to ``target`` in one step,
    so no process ever sees a half-built folder. An incomplete ``target`` (a crash of an older
    version) is removed first. Concurrent callers serialise on a file lock; the later ones
    find the folder complete and return. Returns True when this call built it.
    """
    import shutil

    if os.path.isfile(os.path.join(target, marker)):
        return False
    with file_lock(target):
        if os.path.isfile(os.path.join(target, marker)):
            return False
        parent = os.path.dirname(os.path.abspath(target))
        tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(target)}.", suffix=".tmp")
        try:
            build(tmp)
            atomic_write_text(os.path.join(tmp, marker), "")
            if os.path.lexists(target):
                shutil.rmtree(target)
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return True


def build_file_once(path: str, build) -> bool:
    """Write ``path`` with ``build(f)`` (a binary file object) unless it exists; lock-guarded.

    Returns True when this call wrote it.
    """
    if os.path.isfile(path):
        return False
    with file_lock(path):
        if os.path.isfile(path):
            return False
        with atomic_open(path, "wb") as f:
            build(f)
    return True
