"""Issue 13: nothing lost, nothing silent - crafted pickles, torn checkpoints, concurrent
data preparation, mixed settings in tables, BOMs and bad labels, validation up front."""

import os
import pickle
import subprocess
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


# ====================================================================== concurrent data preparation
_CONCURRENT = r"""
import os, sys, time
from PIL import Image
saves = []
real = Image.Image.save
Image.Image.save = lambda self, *a, **k: (saves.append(1), real(self, *a, **k))[1]
from hyptree.data.cifar100 import extract_cifar100
go = sys.argv[2]
open(go + "." + str(os.getpid()), "w").close()  # ready
while not os.path.exists(go):
    time.sleep(0.01)
d = extract_cifar100(sys.argv[1])
print(len(saves), len(d.train), len(d.test), d.train[0].impath)
"""


def test_two_first_uses_of_cifar100_at_once_build_one_complete_folder(tmp_path):
    import test_data

    root = tmp_path / "data"
    fake = test_data._cifar_fake(n_train=40, n_test=20, seed=3)
    test_data._write_cifar_archive(str(root / "cifar-100"), fake)
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": ROOT}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CONCURRENT, str(root), str(go)], stdout=subprocess.PIPE, text=True, env=env
        )
        for _ in range(2)
    ]
    import time

    deadline = time.time() + 120
    while len(list(tmp_path.glob("go.*"))) < 2 and time.time() < deadline:
        time.sleep(0.05)  # both have imported and wait at the start line
    go.write_text("")
    outs = [p.communicate(timeout=300)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    saves = sorted(int(o[0]) for o in outs)
    assert saves == [0, 60]  # one process converted, the other waited and reused it
    assert all(o[1:3] == ["40", "20"] for o in outs) and outs[0][3] == outs[1][3]
    images = root / "cifar-100" / "cifar-100-images"
    pngs = [os.path.join(dp, f) for dp, _, fs in os.walk(images) for f in fs if f.endswith(".png")]
    assert len(pngs) == 60 and (images / ".complete").is_file()
    assert not [f for f in os.listdir(root / "cifar-100") if f.endswith(".tmp")]
    from PIL import Image

    for p in pngs:
        Image.open(p).load()


def test_imagenet_cache_is_json_not_pickle(tmp_path):
    import json

    from hyptree.data.imagenet import IMAGENET_CACHE, read_imagenet

    assert IMAGENET_CACHE.endswith(".json")
    root = tmp_path
    d = root / "imagenet"
    for split, n in (("train", 2), ("val", 1)):
        for w in ("n01", "n02"):
            (d / "images" / split / w).mkdir(parents=True)
            for i in range(n):
                (d / "images" / split / w / f"{i}.jpg").write_bytes(b"x")
    (d / "classnames.txt").write_text("n01 fish\nn02 bird\n")
    a = read_imagenet(str(root))
    with open(d / IMAGENET_CACHE) as f:
        obj = json.load(f)
    assert obj["wnids"] == ["n01", "n02"] and len(obj["rows"]["train"][0]) == 4
    assert read_imagenet(str(root)).train == a.train
    (d / IMAGENET_CACHE).write_bytes(pickle.dumps(_Evil("os", "system", f"touch {tmp_path / 'pwned'}")))
    assert read_imagenet(str(root)).train == a.train  # an unreadable cache is rebuilt, never unpickled
    assert not (tmp_path / "pwned").exists()


# ====================================================================== small things (item 6)
def test_bom_and_non_utf8_taxonomy_files(tmp_path):
    from hyptree.tree.io.paths import read_paths_file

    p = tmp_path / "tax.txt"
    p.write_bytes("\ufeff# a comment header\nanimal/cat\nanimal/dog\nplant/rose\n".encode())
    t = read_paths_file(str(p))
    assert t.class_names == ("cat", "dog", "rose")
    p.write_bytes("\ufeffanimal/cat\nanimal/dog\n".encode())
    assert read_paths_file(str(p)).names[1] == "animal"
    p.write_bytes(b"animal/cat\nanimal/d\xf6g\n")
    with pytest.raises(ValueError, match=r"tax\.txt:2: not UTF-8"):
        read_paths_file(str(p))


def test_imagenet_classnames_with_bom(tmp_path):
    from hyptree.tree.io.imagenet import read_classnames_file

    p = tmp_path / "classnames.txt"
    p.write_bytes("\ufeffn01440764 tench\nn01443537 goldfish\n".encode())
    assert list(read_classnames_file(str(p))) == ["n01440764", "n01443537"]


@pytest.mark.parametrize(
    "label,needle",
    [(2.7, "label 2.7 is not an integer"), ("2.7", "label '2.7' is not an integer"), (-1, "label -1 is negative")],
)
def test_split_labels_are_strict_integers(tmp_path, label, needle):
    import json

    from hyptree.data.common import read_coop_split

    p = tmp_path / "split.json"
    p.write_text(json.dumps({"train": [["a.png", 0, "a"], ["b.png", label, "b"]]}))
    with pytest.raises(ValueError, match=f"split.json: entry 1 of 'train': {needle}"):
        read_coop_split(str(p), str(tmp_path))
    p.write_text(json.dumps({"train": [["a.png", "3", "a"]]}))
    assert read_coop_split(str(p), str(tmp_path))["train"][0].label == 3


def test_check_items_labels_missing_and_truncated_images(tmp_path):
    from PIL import Image

    from hyptree.data.common import Item, check_items

    good = tmp_path / "good.png"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(good)
    check_items({"train": [Item(str(good), 1, "x")]}, 2, "toy", decode=True)
    with pytest.raises(ValueError, match=r"toy: test entry 0 \(.*good.png\) has label 5, outside 0..1"):
        check_items({"test": [Item(str(good), 5, "x")]}, 2, "toy")
    with pytest.raises(FileNotFoundError, match="toy: 1 image file.*missing, e.g. .*nope.png \\(test split\\)"):
        check_items({"test": [Item(str(tmp_path / "nope.png"), 0, "x")]}, 2, "toy")
    bad = tmp_path / "torn.png"
    bad.write_bytes(good.read_bytes()[:-20])
    with pytest.raises(ValueError, match=r"toy: .*torn\.png \(test split\) is not a readable image"):
        check_items({"test": [Item(str(bad), 0, "x")]}, 2, "toy", decode=True)


def test_bad_test_image_found_before_training(tmp_path):
    """A truncated test image of the toy set fails when the dataset is built, naming the file."""
    from hyptree.data.build import build_hierarchical_dataset

    root = tmp_path / "data"
    d = build_hierarchical_dataset("toy", str(root), num_shots=1)
    victim = d.test[3].impath
    data = open(victim, "rb").read()
    with open(victim, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"{os.path.basename(victim)} \\(test split\\) is not a readable image"):
        build_hierarchical_dataset("toy", str(root), num_shots=1)
    os.remove(victim)
    with pytest.raises(FileNotFoundError, match=os.path.basename(victim)):
        build_hierarchical_dataset("toy", str(root), num_shots=1)


@pytest.mark.parametrize(
    "key,value,needle",
    [
        ("OPTIM.MAX_EPOCH", 0, "OPTIM.MAX_EPOCH = 0; expected >= 1"),
        ("TRAINER.HYPTREE.ALPHA", -1.0, "TRAINER.HYPTREE.ALPHA = -1.0; expected >= 0"),
        ("TRAINER.HYPTREE.LAMBDA", -0.5, "TRAINER.HYPTREE.LAMBDA = -0.5"),
        ("TRAINER.HYPTREE.EVAL.NUM_CUTS", 0, "TRAINER.HYPTREE.EVAL.NUM_CUTS = 0; expected >= 1"),
        ("TRAINER.HYPTREE.CURVATURE.KAPPA", 0.0, "TRAINER.HYPTREE.CURVATURE.KAPPA = 0.0; expected > 0"),
        ("TRAINER.HYPTREE.LAYERS", [40], r"TRAINER.HYPTREE.LAYERS = \[40\]; .*ending with the final block 11"),
    ],
)
def test_config_values_checked_with_the_key(key, value, needle):
    from yacs.config import CfgNode as CN

    from hyptree.run.config import add_hyptree_config, check_config

    cfg = CN()
    cfg.OPTIM = CN()
    cfg.OPTIM.MAX_EPOCH = 5
    cfg.DATASET = CN()
    add_hyptree_config(cfg)
    cfg.TRAINER.HYPTREE.BACKBONE = "maple"
    check_config(cfg)
    node = cfg
    *parents, leaf = key.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = value
    with pytest.raises(ValueError, match=needle):
        check_config(cfg)
