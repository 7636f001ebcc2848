"""Tests for hyptree.data.toy: the generated ToyHier set."""

import hashlib
import math
import os

import numpy as np
import pytest
from PIL import Image

from hyptree.data import toy
from hyptree.data.common import read_coop_split


def _digest(items):
    return {
        os.path.relpath(it.impath, os.path.dirname(os.path.dirname(os.path.dirname(it.impath)))): hashlib.sha1(
            open(it.impath, "rb").read()
        ).hexdigest()
        for it in items
    }


def test_toy_generated_layout(tmp_path):
    d = toy.make_toy_dataset(str(tmp_path))
    assert len(d.classnames) == 18 == len(set(d.classnames))
    assert (len(d.train), len(d.val), len(d.test)) == (18 * 8, 18 * 4, 18 * 6)
    for split in (d.train, d.val, d.test):
        assert sorted({it.label for it in split}) == list(range(18))
        assert all(d.classnames[it.label] == it.classname for it in split)
    ds = tmp_path / "toy_hier"
    it = d.train[0]
    assert it.impath == str(ds / "images" / "train" / it.classname / "0000.png")
    assert Image.open(it.impath).size == (32, 32)
    lines = d.hierarchy_lines
    assert (ds / "hierarchy.txt").read_text().split() == lines
    assert (ds / "classnames.txt").read_text().split() == d.classnames
    # three levels, leaf = class name in label order, every node name unique across the tree
    parts = [line.split("/") for line in lines]
    assert all(len(p) == 3 for p in parts) and [p[-1] for p in parts] == d.classnames
    nodes = {n for p in parts for n in p}
    assert len(nodes) == 3 + 9 + 18
    parent = {}
    for p in parts:
        for a, b in zip(p, p[1:]):
            assert parent.setdefault(b, a) == a
    assert lines[1] == "circle/red_circle/red_circle_striped"
    assert read_coop_split(str(ds / "split_toy_hier.json"), str(ds / "images"))["val"] == d.val


def test_toy_idempotent_and_regenerates_on_new_params(tmp_path, monkeypatch):
    d = toy.make_toy_dataset(str(tmp_path), n_train=2, n_val=1, n_test=1)
    mtimes = {it.impath: os.stat(it.impath).st_mtime_ns for it in d.train + d.val + d.test}
    saves = []
    real_save = Image.Image.save
    monkeypatch.setattr(Image.Image, "save", lambda self, *a, **k: (saves.append(1), real_save(self, *a, **k)))
    again = toy.make_toy_dataset(str(tmp_path), n_train=2, n_val=1, n_test=1)
    assert saves == [] and again.train == d.train and again.test == d.test
    assert mtimes == {it.impath: os.stat(it.impath).st_mtime_ns for it in d.train + d.val + d.test}
    bigger = toy.make_toy_dataset(str(tmp_path), n_train=3, n_val=1, n_test=1)
    assert len(saves) == 18 * 5 and len(bigger.train) == 54
    assert len(os.listdir(tmp_path / "toy_hier" / "images" / "train" / bigger.classnames[0])) == 3


def test_toy_deterministic_given_seed(tmp_path):
    kw = dict(n_train=2, n_val=1, n_test=2)
    a = toy.make_toy_dataset(str(tmp_path / "a"), seed=3, **kw)
    b = toy.make_toy_dataset(str(tmp_path / "b"), seed=3, **kw)
    c = toy.make_toy_dataset(str(tmp_path / "c"), seed=4, **kw)
    da, db, dc = (_digest(x.train + x.val + x.test) for x in (a, b, c))
    assert da == db
    assert set(da) == set(dc) and sum(da[k] != dc[k] for k in da) == len(da)


def _compactness(mask):
    """Mask area over the area of the circle through its farthest pixel: 1 circle, 0.64 square, 0.41 triangle."""
    ys, xs = np.nonzero(mask)
    r = np.sqrt((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2).max() + 0.5
    return mask.sum() / (math.pi * r * r)


def test_toy_classes_are_distinct_in_pixels():
    """Each level of a class shows in the pixels: colour, pattern and shape can be read back."""
    expected_compactness = {"circle": (0.85, 1.1), "square": (0.5, 0.78), "triangle": (0.3, 0.52)}
    for shape, colour, pattern in toy.toy_classes():
        for i in range(6):
            rng = np.random.default_rng([11, i, len(shape), len(colour)])
            img, mask = toy.render_toy_image(shape, colour, pattern, rng, size=48, return_mask=True)
            assert img.shape == (48, 48, 3) and img.dtype == np.uint8
            inside = img[mask].astype(float)
            # colour: the dominant channel of the shape's brightest pixels
            bright = inside[inside.sum(1) >= np.percentile(inside.sum(1), 60)].mean(0)
            assert ("red", "green", "blue")[int(np.argmax(bright))] == colour
            # pattern: stripes make the inside two-toned
            spread = inside.sum(1).std()
            assert (spread > 60) if pattern == "striped" else (spread < 30), (shape, colour, pattern, spread)
            lo, hi = expected_compactness[shape]
            assert lo < _compactness(mask) < hi, (shape, _compactness(mask))
            # the background differs from the shape
            assert np.abs(img[~mask].astype(float).mean(0) - inside.mean(0)).max() > 20


def test_toy_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="image_size"):
        toy.make_toy_dataset(str(tmp_path), image_size=4)
    with pytest.raises(ValueError, match="unknown toy class"):
        toy.render_toy_image("hexagon", "red", "plain", np.random.default_rng(0))


def _make(root, log):
    from hyptree.data import toy as T

    calls = []
    real = T._generate

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    T._generate = counting
    d = T.make_toy_dataset(root, n_train=3, n_val=1, n_test=2)
    with open(log, "a") as f:
        f.write(f"{len(calls)} {len(d.train) + len(d.val) + len(d.test)}\n")


def test_two_first_uses_at_once_build_one_complete_set(tmp_path):
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    log = str(tmp_path / "log")
    procs = [ctx.Process(target=_make, args=(str(tmp_path / "data"), log)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    rows = sorted(open(log).read().split("\n")[:-1])
    n = len(toy.toy_classes()) * 6
    assert rows == [f"0 {n}", f"1 {n}"]  # one process generated, the other found it complete
    folder = tmp_path / "data" / toy.TOY_DIR / "images"
    assert sum(len(files) for _, _, files in os.walk(folder)) == n
    assert not [x for x in os.listdir(tmp_path / "data") if x.endswith((".tmp", ".old"))]
