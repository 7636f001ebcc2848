"""hyptree.utils.files: atomic writes and build-once folders under concurrency."""

import multiprocessing as mp
import os
import time

import pytest

from hyptree.utils.files import atomic_open, atomic_write_json, build_dir_once, build_file_once


def test_atomic_open_keeps_the_old_file_on_failure(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_open(str(p)) as f:
            f.write("half")
            raise RuntimeError("boom")
    assert p.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.txt"]  # no temporary left behind


def test_atomic_write_json_creates_folders(tmp_path):
    atomic_write_json(str(tmp_path / "x" / "y.json"), {"a": 1})
    assert (tmp_path / "x" / "y.json").read_text() == '{\n "a": 1\n}\n'


def _slow_build(target, log):
    def build(tmp):
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        for i in range(20):
            with open(os.path.join(tmp, f"{i}.txt"), "w") as f:
                f.write(str(i))
            time.sleep(0.01)

    build_dir_once(target, build)
    # every caller, when it returns, sees the complete folder
    assert sorted(os.listdir(target)) == sorted([".complete"] + [f"{i}.txt" for i in range(20)])


def test_build_dir_once_two_processes(tmp_path):
    target, log = str(tmp_path / "data"), str(tmp_path / "log")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_slow_build, args=(target, log)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len(open(log).read().split()) == 1  # built exactly once
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_build_dir_once_replaces_an_incomplete_folder(tmp_path):
    target = tmp_path / "data"
    target.mkdir()
    (target / "stale.txt").write_text("from a crash")
    assert build_dir_once(str(target), lambda tmp: open(os.path.join(tmp, "new.txt"), "w").close())
    assert sorted(os.listdir(target)) == [".complete", "new.txt"]
    assert not build_dir_once(str(target), lambda tmp: pytest.fail("rebuilt a complete folder"))


def test_build_dir_once_failure_leaves_nothing(tmp_path):
    target = str(tmp_path / "data")

    def bad(tmp):
        open(os.path.join(tmp, "part"), "w").close()
        raise OSError("disk full")

    with pytest.raises(OSError):
        build_dir_once(target, bad)
    assert not os.path.exists(target)
    assert [n for n in os.listdir(tmp_path) if not n.endswith(".lock")] == []


def test_build_file_once(tmp_path):
    p = str(tmp_path / "m.bin")
    assert build_file_once(p, lambda f: f.write(b"abc"))
    assert not build_file_once(p, lambda f: f.write(b"other"))
    assert open(p, "rb").read() == b"abc"


def test_atomic_files_get_the_usual_mode(tmp_path):
    mask = os.umask(0o022)
    try:
        import importlib

        import hyptree.utils.files as files

        importlib.reload(files)
        files.atomic_write_text(str(tmp_path / "r.json"), "{}")
        assert (os.stat(tmp_path / "r.json").st_mode & 0o777) == 0o644
    finally:
        os.umask(mask)
