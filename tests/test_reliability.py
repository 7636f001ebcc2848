"""Issue 13: nothing lost, nothing silent - crafted pickles, torn checkpoints, concurrent
data preparation, mixed settings in tables, BOMs and bad labels, validation up front."""

import os
import pickle
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ====================================================================== unpickling
class _Evil:
    """Pickles as a call of ``module.name("touch MARKER")``."""

    def __init__(self, module, name, arg):
        self.module, self.name, self.arg = module, name, arg

    def __reduce__(self):
        import importlib

        return getattr(importlib.import_module(self.module), self.name), (self.arg,)


def _crafted_npy(path, module, name, arg):
    """A ``tree.npy`` (numpy header + pickle) whose pickle names ``module.name``."""
    blob = pickle.dumps(_Evil(module, name, arg), protocol=2)
    header = {"descr": "|O", "fortran_order": False, "shape": ()}
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(blob)


def _raw_global_pickle(module, name):
    """A pickle that only names ``module.name`` (GLOBAL opcode) and calls it with no arguments."""
    return b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n)R."


@pytest.mark.parametrize("module,name", [("os", "system"), ("posix", "system"), ("subprocess", "call")])
def test_crafted_tree_npy_is_refused_and_runs_nothing(tmp_path, module, name):
    from hyptree.tree.io.protect import read_protect_tree

    marker = tmp_path / "pwned"
    p = tmp_path / "tree.npy"
    _crafted_npy(p, module, name, f"touch {marker}")
    with pytest.raises(ValueError, match=rf"tree\.npy: refusing to unpickle the global \w+\.{name}"):
        read_protect_tree(str(p))
    assert not marker.exists()


def test_numpy_module_outside_the_allow_list_is_never_imported(tmp_path):
    """The old check let any ``numpy.*`` module through when the name looked harmless:
    ``numpy.f2py.__main__`` runs f2py (and exits the process) on import."""
    from hyptree.tree.pickles import load_pickle_file, loads_permissive

    sys.modules.pop("numpy.f2py.__main__", None)
    for name in ("_reconstruct", "ndarray", "scalar", "dtype"):
        blob = _raw_global_pickle("numpy.f2py.__main__", name)
        with pytest.raises(
            ValueError, match=rf"evil\.pkl: refusing to unpickle the global numpy\.f2py\.__main__\.{name}"
        ):
            loads_permissive(blob, source="evil.pkl", kind="protect_tree")
    p = tmp_path / "tree.npy"
    header = {"descr": "|O", "fortran_order": False, "shape": ()}
    with open(p, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(_raw_global_pickle("numpy.f2py.__main__", "_reconstruct"))
    with pytest.raises(ValueError, match="tree.npy: refusing"):
        load_pickle_file(str(p), kind="protect_tree")
    assert "numpy.f2py.__main__" not in sys.modules


def test_allow_lists_are_per_kind(tmp_path):
    from hyptree.tree.pickles import KINDS, StandIn, loads_permissive

    assert set(KINDS) == {"protect_tree", "cuts", "cifar100"}
    blob = _raw_global_pickle("treelibs", "TreeNode")
    assert isinstance(loads_permissive(blob, source="t.npy", kind="protect_tree"), StandIn)
    for kind in ("cuts", "cifar100"):
        with pytest.raises(ValueError, match=f"x: refusing to unpickle the global treelibs.TreeNode: .*{kind}"):
            loads_permissive(blob, source="x", kind=kind)
    # numpy arrays and containers still load, exactly
    arr = np.arange(6, dtype=np.uint8).reshape(2, 3)
    obj = loads_permissive(pickle.dumps({"a": [arr, {1, 2}], "b": (1.5, b"x")}, protocol=2), kind="cifar100")
    assert np.array_equal(obj["a"][0], arr) and obj["a"][1] == {1, 2} and obj["b"] == (1.5, b"x")


def test_cifar100_archive_with_crafted_pickle_is_refused(tmp_path):
    import io
    import tarfile

    from hyptree.data.cifar100 import extract_cifar100

    marker = tmp_path / "pwned"
    d = tmp_path / "cifar-100"
    d.mkdir()
    with tarfile.open(d / "cifar-100-python.tar.gz", "w:gz") as tar:
        for n in ("meta", "train", "test"):
            blob = pickle.dumps(_Evil("os", "system", f"touch {marker}"), protocol=2)
            info = tarfile.TarInfo(f"cifar-100-python/{n}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    with pytest.raises(
        ValueError, match=r"cifar-100-python.tar.gz:cifar-100-python/meta: refusing .*os\.system|posix\.system"
    ):
        extract_cifar100(str(tmp_path))
    assert not marker.exists()


# ====================================================================== checkpoints
def _save(folder, epoch, **extra):
    import torch

    from hyptree.run.checkpoints import save_checkpoint

    state = {"state_dict": {"module.w": torch.full((3,), float(epoch))}, "epoch": epoch, **extra}
    return save_checkpoint(state, str(folder))


def test_find_resumable_falls_back_to_the_newest_intact_checkpoint(tmp_path):
    import torch

    from hyptree.run.checkpoints import find_resumable

    for e in (1, 2, 3):
        _save(tmp_path, e)
    assert (tmp_path / "checkpoint").read_text() == "model.pth.tar-3\n"
    assert torch.equal(torch.load(tmp_path / "model.pth.tar-3")["state_dict"]["w"], torch.full((3,), 3.0))
    path, ckpt, notes = find_resumable(str(tmp_path))
    assert path.endswith("model.pth.tar-3") and ckpt["epoch"] == 3 and notes == []
    data = (tmp_path / "model.pth.tar-3").read_bytes()
    (tmp_path / "model.pth.tar-3").write_bytes(data[: len(data) // 3])  # torn
    (tmp_path / "model.pth.tar-2").write_bytes(b"")  # 0 bytes
    path, ckpt, notes = find_resumable(str(tmp_path))
    assert path.endswith("model.pth.tar-1") and ckpt["epoch"] == 1
    assert any("model.pth.tar-3: unreadable" in n for n in notes)
    assert any("model.pth.tar-2: empty file" in n for n in notes)
    (tmp_path / "checkpoint").write_text("")
    assert find_resumable(str(tmp_path))[1]["epoch"] == 1
    assert "is empty" in find_resumable(str(tmp_path))[2][0]
    os.remove(tmp_path / "checkpoint")
    path, ckpt, notes = find_resumable(str(tmp_path))
    assert ckpt["epoch"] == 1 and "is missing" in notes[0]
    (tmp_path / "model.pth.tar-1").write_bytes(b"PK\x03\x04garbage")
    assert find_resumable(str(tmp_path))[:2] == (None, None)


def test_checkpoint_write_is_atomic_when_killed(tmp_path):
    """A save killed inside torch.save leaves the previous checkpoint and pointer untouched."""
    import torch

    from hyptree.run.checkpoints import find_resumable, remove_stale_temporaries

    _save(tmp_path, 1)

    class Boom:
        def __reduce__(self):
            raise KeyboardInterrupt  # dies half-way through the pickle

    with pytest.raises(KeyboardInterrupt):
        _save(tmp_path, 2, extra=Boom())
    assert not (tmp_path / "model.pth.tar-2").exists()
    assert (tmp_path / "checkpoint").read_text() == "model.pth.tar-1\n"
    assert find_resumable(str(tmp_path))[1]["epoch"] == 1
    (tmp_path / ".model.pth.tar-2.abc.tmp").write_bytes(b"x")  # what a SIGKILL leaves
    assert remove_stale_temporaries(str(tmp_path)) == [".model.pth.tar-2.abc.tmp"]
    assert torch.load(tmp_path / "model.pth.tar-1")["epoch"] == 1


def test_config_difference_names_the_keys():
    from hyptree.run.checkpoints import config_difference

    a = "OPTIM:\n  LR: 0.01\n  MAX_EPOCH: 2\nSEED: 1\n"
    b = "OPTIM:\n  LR: 0.02\n  MAX_EPOCH: 2\nNEW: x\n"
    assert config_difference(a, b) == ["NEW: '<absent>' -> 'x'", "OPTIM.LR: 0.01 -> 0.02", "SEED: 1 -> '<absent>'"]
    assert config_difference(a, a) == []


# ====================================================================== tables never mix settings
def test_seeds_of_different_settings_in_one_folder_are_not_averaged(tmp_path):
    import fixtures_runs as F

    from hyptree.eval import tables as R

    base = tmp_path / "fewshot" / "cifar100" / "shots_16" / "MaPLeHypTree" / "hyptree"
    for s, la, h in ((1, 70.0, "aaaa1111"), (2, 72.0, "aaaa1111"), (3, 90.0, "bbbb2222")):
        F.write_results(base / f"seed{s}", seed=s, config_hash=h, metrics={"LA": la})
    (t,) = R.collect(str(tmp_path))
    rows = [dict(zip(t.header, r)) for r in t.rows]
    assert len(rows) == 2
    by_hash = {r["Config"]: r for r in rows}
    assert set(by_hash) == {"hyptree [aaaa1111]", "hyptree [bbbb2222]"}
    assert by_hash["hyptree [aaaa1111]"]["LA"].startswith("71.00") and by_hash["hyptree [aaaa1111]"]["Seeds"] == "2"
    assert by_hash["hyptree [bbbb2222]"]["LA"].startswith("90.00")
    for r in rows:
        assert "mixes 2 settings (config_hash aaaa1111, bbbb2222)" in r["Note"]
    # one setting: no hash in the label, no note
    for s in (1, 2, 3):
        F.write_results(base / f"seed{s}", seed=s, config_hash="aaaa1111", metrics={"LA": 70.0})
    (t,) = R.collect(str(tmp_path))
    assert len(t.rows) == 1 and dict(zip(t.header, t.rows[0]))["Config"] == "hyptree"
