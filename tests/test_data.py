"""Tests for the hyptree.data readers (common, folder, one module per dataset).

Every reader runs on generated files in the dataset's real layout."""

import io
import json
import os
import pickle
import random
import tarfile

import numpy as np
import pytest
from PIL import Image

from hyptree.data.build import LAYOUTS
from hyptree.data.cifar100 import extract_cifar100, read_cifar100_hierarchical
from hyptree.data.common import (
    Item,
    fewshot_sample,
    list_images,
    per_class_split,
    read_coop_split,
    subsample_classes,
    write_coop_split,
)
from hyptree.data.folder import read_image_folder_tree, read_protect_items, read_protect_split_names
from hyptree.data.imagenet import (
    read_imagenet,
    read_imagenet_a,
    read_imagenet_classnames,
    read_imagenet_r,
    read_imagenet_sketch,
    read_imagenet_v2,
)
from hyptree.data.rare_species import read_rare_species
from hyptree.data.sun397 import read_sun397, sun397_hierarchy_file

# --------------------------------------------------------------------------- helpers


def _img(path, colour=(10, 20, 30), size=4, fmt=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if fmt is None:
        fmt = "PNG" if path.lower().endswith(".png") else "JPEG"
    Image.new("RGB", (size, size), colour).save(path, format=fmt)
    return path


def _items(n_per_class, prefix="/x"):
    """Interleaved items: class order of first appearance is 2, 0, 1."""
    out = []
    for i in range(max(n_per_class.values())):
        for lab in (2, 0, 1):
            if i < n_per_class.get(lab, 0):
                out.append(Item(f"{prefix}/{lab}/{i}.jpg", lab, f"c{lab}"))
    return out


# --------------------------------------------------------------------------- CoOp splits


def test_coop_split_round_trip(tmp_path):
    image_dir = str(tmp_path / "images")
    splits = {
        "train": [Item(_img(f"{image_dir}/cat/{i}.jpg"), 0, "cat") for i in range(3)],
        "val": [Item(_img(f"{image_dir}/dog/sub/a.jpg"), 1, "dog")],
        "test": [Item(_img(f"{image_dir}/dog/b.jpg"), 1, "dog")],
    }
    split_json = str(tmp_path / "split_zhou_X.json")
    write_coop_split(splits, split_json, image_dir)
    raw = json.load(open(split_json))
    assert raw["val"] == [["dog/sub/a.jpg", 1, "dog"]]  # CoOp format: relative, forward slashes
    assert raw["train"][0] == ["cat/0.jpg", 0, "cat"]
    back = read_coop_split(split_json, image_dir)
    assert back == splits
    # a different image root re-bases the paths
    moved = read_coop_split(split_json, "/elsewhere")
    assert moved["test"][0].impath == os.path.join("/elsewhere", "dog/b.jpg")


def test_coop_split_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="relative_path, label, classname"):
        read_coop_split(str(tmp_path / "nope.json"), str(tmp_path))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train": [["a.jpg", 0]]}))
    with pytest.raises(ValueError, match="bad.json.*entry 0 of 'train'"):
        read_coop_split(str(bad), str(tmp_path))
    with pytest.raises(ValueError, match="not inside"):
        write_coop_split({"train": [Item("/other/a.jpg", 0, "a")]}, str(tmp_path / "s.json"), str(tmp_path))


def test_per_class_split_counts_and_determinism():
    items = _items({0: 10, 1: 20, 2: 7})
    a = per_class_split(items, p_train=0.5, p_val=0.2, seed=3)
    b = per_class_split(items, p_train=0.5, p_val=0.2, seed=3)
    c = per_class_split(items, p_train=0.5, p_val=0.2, seed=4)
    assert a == b and a != c
    for lab, n in {0: 10, 1: 20, 2: 7}.items():
        counts = [sum(it.label == lab for it in a[k]) for k in ("train", "val", "test")]
        assert counts == [round(n * 0.5), round(n * 0.2), n - round(n * 0.5) - round(n * 0.2)]
    union = a["train"] + a["val"] + a["test"]
    assert sorted(union, key=lambda it: it.impath) == sorted(items, key=lambda it: it.impath)
    with pytest.raises(ValueError, match="class 0 .*2 images"):
        per_class_split(_items({0: 2, 1: 10}), 0.5, 0.2)


# --------------------------------------------------------------------------- few-shot


def test_fewshot_counts_and_dassl_semantics():
    items = _items({0: 10, 1: 3, 2: 6})
    out = fewshot_sample(items, num_shots=4, seed=7)
    # classes in order of first appearance (2, 0, 1); 4 without replacement from 6 and 10;
    # the 3-item class keeps its 3 items (Dassl's default repeat=False)
    assert [it.label for it in out] == [2] * 4 + [0] * 4 + [1] * 3
    assert len(set(out)) == len(out)
    assert set(it for it in out if it.label == 1) == set(it for it in items if it.label == 1)
    # the explicit expectation: one random.Random(seed), random.sample per class in that order
    rng = random.Random(7)
    expected = []
    for lab in (2, 0, 1):
        members = [it for it in items if it.label == lab]
        expected += rng.sample(members, 4) if len(members) >= 4 else members
    assert out == expected
    # equal to the global-random recipe Dassl uses right after random.seed(seed)
    random.seed(7)
    glob = []
    for lab in (2, 0, 1):
        members = [it for it in items if it.label == lab]
        glob += random.sample(members, 4) if len(members) >= 4 else members
    assert out == glob


def test_fewshot_repeat_determinism_and_all():
    items = _items({0: 10, 1: 3, 2: 6})
    rep = fewshot_sample(items, num_shots=5, seed=1, repeat=True)
    small = [it for it in rep if it.label == 1]
    assert len(small) == 5 and len(set(small)) <= 3  # drawn with replacement
    rng = random.Random(1)
    expected = []
    for lab in (2, 0, 1):
        members = [it for it in items if it.label == lab]
        expected += rng.sample(members, 5) if len(members) >= 5 else rng.choices(members, k=5)
    assert rep == expected
    assert fewshot_sample(items, 4, seed=11) == fewshot_sample(items, 4, seed=11)
    assert fewshot_sample(items, 4, seed=11) != fewshot_sample(items, 4, seed=12)
    for k in (0, -1):
        full = fewshot_sample(items, k, seed=0)
        assert full == items and full is not items


@pytest.mark.dassl
def test_fewshot_matches_dassl(tmp_path):
    from dassl.data.datasets import DatasetBase, Datum

    items = [
        Item(_img(str(tmp_path / f"{it.label}_{i}.png")), it.label, it.classname)
        for i, it in enumerate(_items({0: 9, 1: 2, 2: 5}))
    ]
    datums = [Datum(impath=it.impath, label=it.label, classname=it.classname) for it in items]
    base = DatasetBase.__new__(DatasetBase)
    for repeat in (False, True):
        random.seed(5)
        ref = base.generate_fewshot_dataset(datums, num_shots=4, repeat=repeat)
        ours = fewshot_sample(items, 4, seed=5, repeat=repeat)
        assert [(d.impath, d.label) for d in ref] == [(i.impath, i.label) for i in ours]


# --------------------------------------------------------------------------- base / novel


def test_subsample_classes_relabels_in_given_order():
    train, test = _items({0: 2, 1: 2, 2: 2, 3: 0}), _items({0: 1, 1: 1, 2: 1}, prefix="/t")
    new_train, new_test = subsample_classes([train, test], [2, 0])
    assert {(it.label, it.classname) for it in new_train} == {(0, "c2"), (1, "c0")}
    assert len(new_train) == 4 and len(new_test) == 2
    assert [it.impath for it in new_train] == [it.impath for it in train if it.label in (2, 0)]
    as_dict = subsample_classes({"train": train, "test": test}, [1])
    assert set(as_dict) == {"train", "test"} and {it.label for it in as_dict["test"]} == {0}
    assert isinstance(subsample_classes((train, test), [1]), tuple)
    with pytest.raises(ValueError, match="repeated"):
        subsample_classes([train], [1, 1])
    with pytest.raises(ValueError, match=r"\[7\]"):
        subsample_classes([train], [1, 7])


# --------------------------------------------------------------------------- CIFAR-100


def _cifar_fake(n_train=12, n_test=6, seed=0):
    rng = np.random.default_rng(seed)
    fine = [b"apple", b"otter", b"seal", b"rose"]
    coarse = [b"fruit_and_vegetables", b"aquatic_mammals", b"flowers"]
    f2c = [0, 1, 1, 2]

    def split(n, name):
        labels = [int(x) for x in rng.integers(0, 4, n)]
        labels[:4] = [0, 1, 2, 3]
        return {
            b"filenames": [f"{name}_{i}.png".encode() for i in range(n)],
            b"batch_label": name.encode(),
            b"fine_labels": labels,
            b"coarse_labels": [f2c[y] for y in labels],
            b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        }

    meta = {b"fine_label_names": fine, b"coarse_label_names": coarse}
    return {"meta": meta, "train": split(n_train, "training"), "test": split(n_test, "testing")}


def _write_cifar_archive(dataset_dir, fake):
    os.makedirs(dataset_dir, exist_ok=True)
    with tarfile.open(os.path.join(dataset_dir, "cifar-100-python.tar.gz"), "w:gz") as tar:
        for name, obj in fake.items():
            blob = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))


def test_cifar100_extracts_once_from_archive(tmp_path, monkeypatch):
    root = str(tmp_path)
    fake = _cifar_fake()
    _write_cifar_archive(os.path.join(root, "cifar-100"), fake)
    saves = []
    real_save = Image.Image.save
    monkeypatch.setattr(Image.Image, "save", lambda self, *a, **k: (saves.append(a[0]), real_save(self, *a, **k)))
    d = extract_cifar100(root)
    assert len(saves) == 18
    assert d.classnames == ["apple", "otter", "seal", "rose"]
    assert d.hierarchy_lines == [
        "fruit_and_vegetables/apple",
        "aquatic_mammals/otter",
        "aquatic_mammals/seal",
        "flowers/rose",
    ]
    assert d.extra["fine_to_coarse"] == [0, 1, 1, 2]
    assert len(d.train) == 12 and len(d.test) == 6 and d.val == []
    for split, items in (("train", d.train), ("test", d.test)):
        for idx, it in enumerate(items):
            assert it.label == fake[split][b"fine_labels"][idx]
            assert it.classname == d.classnames[it.label]
            assert it.impath == os.path.join(
                root, "cifar-100", "cifar-100-images", split, it.classname, f"{idx:05d}.png"
            )
            expected = fake[split][b"data"][idx].reshape(3, 32, 32).transpose(1, 2, 0)
            assert np.array_equal(np.asarray(Image.open(it.impath).convert("RGB")), expected)
    # second call: nothing rewritten, the archive is not even needed any more
    mtimes = {it.impath: os.stat(it.impath).st_mtime_ns for it in d.train}
    os.remove(os.path.join(root, "cifar-100", "cifar-100-python.tar.gz"))
    d2 = extract_cifar100(root)
    assert len(saves) == 18
    assert d2.train == d.train and d2.test == d.test and d2.hierarchy_lines == d.hierarchy_lines
    assert mtimes == {it.impath: os.stat(it.impath).st_mtime_ns for it in d2.train}


def test_cifar100_from_extracted_folder_and_interrupted_run(tmp_path):
    root = str(tmp_path)
    fake = _cifar_fake(n_train=5, n_test=4, seed=1)
    folder = os.path.join(root, "cifar-100", "cifar-100-python")
    os.makedirs(folder)
    for name, obj in fake.items():
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump(obj, f, protocol=2)
    # a previous run died half-way: images folder without the completion marker
    partial = os.path.join(root, "cifar-100", "cifar-100-images", "train", "apple")
    os.makedirs(partial)
    open(os.path.join(partial, "00000.png"), "wb").write(b"truncated")
    d = extract_cifar100(root)
    assert os.path.isfile(os.path.join(root, "cifar-100", "cifar-100-images", ".complete"))
    first = d.train[0]
    expected = fake["train"][b"data"][0].reshape(3, 32, 32).transpose(1, 2, 0)
    assert np.array_equal(np.asarray(Image.open(first.impath)), expected)


def test_cifar100_missing_shows_layout(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        extract_cifar100(str(tmp_path))
    assert "cifar-100-python.tar.gz" in str(e.value) and LAYOUTS["cifar100"] in str(e.value)


# --------------------------------------------------------------------------- folder trees, ProTeCt lists


def _protect_cifar_tree(tree):
    for rel, names in {
        "physical_entity/object/mountain": ["train_a.png", "train_b.png", "test_c.png"],
        "physical_entity/person/baby": ["train_d.png", "test_e.png", "test_f.png"],
        "forest": ["train_g.png", "test_h.png", "notes.txt"],
    }.items():
        for n in names:
            p = os.path.join(tree, rel, n)
            if n.endswith(".png"):
                _img(p)
            else:
                open(p, "w").write("x")


def test_read_cifar100_hierarchical(tmp_path):
    tree = str(tmp_path / "cifar-100-hierarchical")
    _protect_cifar_tree(tree)
    d = read_cifar100_hierarchical(str(tmp_path))
    assert d.hierarchy_lines == ["forest", "physical_entity/object/mountain", "physical_entity/person/baby"]
    assert d.classnames == ["forest", "mountain", "baby"]
    assert sorted(os.path.basename(it.impath) for it in d.train) == [
        "train_a.png",
        "train_b.png",
        "train_d.png",
        "train_g.png",
    ]
    assert [(os.path.basename(it.impath), it.label, it.classname) for it in d.test] == [
        ("test_h.png", 0, "forest"),
        ("test_c.png", 1, "mountain"),
        ("test_e.png", 2, "baby"),
        ("test_f.png", 2, "baby"),
    ]
    # ProTeCt's leaf order instead of sorted paths
    d2 = read_cifar100_hierarchical(str(tmp_path), class_order=["baby", "forest", "mountain"])
    assert d2.hierarchy_lines == ["physical_entity/person/baby", "forest", "physical_entity/object/mountain"]
    assert {it.impath: it.label for it in d2.test}[os.path.join(tree, "forest", "test_h.png")] == 1
    with pytest.raises(ValueError, match="not found.*'cat'"):
        read_image_folder_tree(tree, class_order=["baby", "forest", "cat"])


def test_read_image_folder_tree_rejects_bad_trees(tmp_path):
    _img(str(tmp_path / "a" / "x" / "leaf" / "1.png"))
    _img(str(tmp_path / "b" / "leaf" / "2.png"))
    with pytest.raises(ValueError, match="'leaf' occurs twice"):
        read_image_folder_tree(str(tmp_path))
    other = tmp_path / "o"
    _img(str(other / "n" / "leaf" / "1.png"))
    _img(str(other / "n" / "stray.png"))
    with pytest.raises(ValueError, match="sub-folders"):
        read_image_folder_tree(str(other))
    # keep= by name collection (ProTeCt split 'fnames')
    items, lines = read_image_folder_tree(str(tmp_path / "b"), keep={"2.png", "zzz.png"})
    assert lines == ["leaf"] and len(items) == 1


def test_read_protect_list_and_split_names(tmp_path):
    gt = tmp_path / "gt_test.txt"
    gt.write_text("a/abbey/x.jpg,1,0\nn07753592/0.1_envelope , chest_0.9.jpg,0,1\n\n")
    items = read_protect_items(str(gt), "/data/SUN397", ["envelope_class", "abbey_class"])
    assert items == [
        Item("/data/SUN397/a/abbey/x.jpg", 1, "abbey_class"),
        Item("/data/SUN397/n07753592/0.1_envelope , chest_0.9.jpg", 0, "envelope_class"),
    ]
    assert read_protect_items(str(gt), "/r")[0].classname == "abbey"
    with pytest.raises(ValueError, match=r"gt_test.txt:1: label 1 outside 0..0"):
        read_protect_items(str(gt), "/r", ["only"])
    (tmp_path / "bad.txt").write_text("just_a_path.jpg\n")
    with pytest.raises(ValueError, match="bad.txt:1"):
        read_protect_items(str(tmp_path / "bad.txt"), "/r")
    (tmp_path / "train.json").write_text(json.dumps({"fnames": ["train_a.png"], "cate": []}))
    assert read_protect_split_names(str(tmp_path / "train.json")) == ["train_a.png"]


# --------------------------------------------------------------------------- SUN397


def _sun_images(root, per_class=5):
    image_dir = os.path.join(root, "sun397", "SUN397")
    folders = ["a/abbey", "a/apartment_building/outdoor", "b/bakery/shop"]
    paths = {f: [_img(os.path.join(image_dir, f, f"sun_{i}.jpg")) for i in range(per_class)] for f in folders}
    return image_dir, folders, paths


def test_sun397_reads_coop_split(tmp_path):
    root = str(tmp_path)
    image_dir, folders, paths = _sun_images(root)
    rows = lambda f, lab, name, idx: [[f"{f}/sun_{i}.jpg", lab, name] for i in idx]
    split = {
        "train": rows(folders[0], 0, "abbey", [0, 1]) + rows(folders[1], 1, "outdoor apartment_building", [0, 1]),
        "val": rows(folders[2], 2, "shop bakery", [0]),
        "test": rows(folders[1], 1, "outdoor apartment_building", [2]),
    }
    json.dump(split, open(os.path.join(root, "sun397", "split_zhou_SUN397.json"), "w"))
    d = read_sun397(root)
    assert d.classnames == ["abbey", "outdoor apartment_building", "shop bakery"]
    assert d.class_ids == folders
    assert d.test == [Item(paths[folders[1]][2], 1, "outdoor apartment_building")]
    assert len(d.train) == 4 and len(d.val) == 1


def test_sun397_creates_split_from_partitions(tmp_path):
    root = str(tmp_path)
    image_dir, folders, _ = _sun_images(root, per_class=10)
    ds = os.path.join(root, "sun397")
    open(os.path.join(ds, "ClassName.txt"), "w").write("".join(f"/{f}\n" for f in folders))
    open(os.path.join(ds, "Training_01.txt"), "w").write(
        "".join(f"/{f}/sun_{i}.jpg\n" for f in folders for i in range(5))
    )
    open(os.path.join(ds, "Testing_01.txt"), "w").write(
        "".join(f"/{f}/sun_{i}.jpg\n" for f in folders for i in range(5, 10))
    )
    d = read_sun397(root, seed=2)
    assert os.path.isfile(os.path.join(ds, "split_zhou_SUN397.json"))
    assert d.classnames == ["abbey", "outdoor apartment_building", "shop bakery"]
    assert [sum(it.label == k for it in d.val) for k in range(3)] == [1, 1, 1]  # round(5 * 0.2)
    assert len(d.train) == 12 and len(d.test) == 15
    assert {os.path.basename(it.impath) for it in d.test} == {f"sun_{i}.jpg" for i in range(5, 10)}
    # the file written is what is read next time
    assert read_sun397(root, seed=99).train == d.train


def test_sun397_missing_and_hierarchy_path(tmp_path):
    root = str(tmp_path)
    with pytest.raises(FileNotFoundError) as e:
        read_sun397(root)
    assert "split_zhou_SUN397.json" in str(e.value) and "SUN397/<letter>/<class>" in str(e.value)
    _sun_images(root, per_class=1)
    with pytest.raises(FileNotFoundError, match="ClassName.txt"):
        read_sun397(root)
    with pytest.raises(FileNotFoundError, match="hierarchy_three_levels"):
        sun397_hierarchy_file(root)
    path = os.path.join(root, "sun397", "hierarchy_three_levels", "three_levels.csv")
    os.makedirs(os.path.dirname(path))
    open(path, "w").write("x")
    assert sun397_hierarchy_file(root) == path


# --------------------------------------------------------------------------- ImageNet family

WNIDS = ["n01440764", "n01443537", "n01484850"]
NAMES = ["tench", "goldfish", "great white shark"]


def _classnames_file(path, wnids=WNIDS, names=NAMES):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "w").write("".join(f"{w} {n}\n" for w, n in zip(wnids, names)))


def _imagenet(root):
    ds = os.path.join(root, "imagenet")
    _classnames_file(os.path.join(ds, "classnames.txt"))
    for k, w in enumerate(WNIDS):
        for i in range(k + 2):
            _img(os.path.join(ds, "images", "train", w, f"{w}_{i}.JPEG"))
        _img(os.path.join(ds, "images", "val", w, f"ILSVRC2012_val_{k}.JPEG"))
    open(os.path.join(ds, "images", "train", WNIDS[0], ".DS_Store"), "w").write("x")


def test_imagenet_reader_and_cache(tmp_path):
    root = str(tmp_path)
    _imagenet(root)
    d = read_imagenet(root)
    assert d.classnames == NAMES and d.class_ids == WNIDS
    assert [it.label for it in d.train] == [0, 0, 1, 1, 1, 2, 2, 2, 2]
    assert d.train[0] == Item(
        os.path.join(root, "imagenet", "images", "train", WNIDS[0], f"{WNIDS[0]}_0.JPEG"), 0, "tench"
    )
    assert d.test == d.val and [it.label for it in d.test] == [0, 1, 2]
    cache = os.path.join(root, "imagenet", "preprocessed_hyptree.json")
    assert os.path.isfile(cache)
    # the cache answers (a new image is not seen) until disabled or classnames.txt changes
    _img(os.path.join(root, "imagenet", "images", "train", WNIDS[1], "new.JPEG"))
    assert len(read_imagenet(root).train) == 9
    assert len(read_imagenet(root, cache=False).train) == 10
    # new names apply at once (the cache stores paths and labels only) ...
    _classnames_file(os.path.join(root, "imagenet", "classnames.txt"), names=["a", "b", "c"])
    d3 = read_imagenet(root)
    assert len(d3.train) == 9 and d3.train[0].classname == "a"
    # ... a different wnid list rescans
    _classnames_file(os.path.join(root, "imagenet", "classnames.txt"), WNIDS[::-1], ["c", "b", "a"])
    d4 = read_imagenet(root)
    assert len(d4.train) == 10 and d4.train[0].classname == "c" and d4.train[0].label == 0


def test_imagenet_labels_follow_classnames_order(tmp_path):
    root = str(tmp_path)
    _imagenet(root)
    _classnames_file(os.path.join(root, "imagenet", "classnames.txt"), WNIDS[::-1], NAMES[::-1])
    d = read_imagenet(root, cache=False)
    assert d.class_ids == WNIDS[::-1]
    assert {it.classname: it.label for it in d.test} == {"great white shark": 0, "goldfish": 1, "tench": 2}


def test_imagenet_errors(tmp_path):
    root = str(tmp_path)
    with pytest.raises(FileNotFoundError) as e:
        read_imagenet(root)
    assert LAYOUTS["imagenet"] in str(e.value)
    _imagenet(root)
    os.rename(
        os.path.join(root, "imagenet", "images", "val", WNIDS[2]),
        os.path.join(root, "imagenet", "images", "val", "n99999999"),
    )
    with pytest.raises(ValueError, match="n99999999"):
        read_imagenet(root, cache=False)
    os.rename(os.path.join(root, "imagenet", "images", "val", "n99999999"), str(tmp_path / "gone"))
    with pytest.raises(FileNotFoundError, match="n01484850"):
        read_imagenet(root, cache=False)
    bad = tmp_path / "cn.txt"
    bad.write_text("n01440764\n")
    with pytest.raises(ValueError, match="cn.txt:1"):
        read_imagenet_classnames(str(bad))


def test_imagenet_v2(tmp_path):
    root = str(tmp_path)
    ds = os.path.join(root, "imagenetv2")
    _classnames_file(os.path.join(ds, "classnames.txt"))
    for k in range(3):
        for i in range(2):
            _img(os.path.join(ds, "imagenetv2-matched-frequency-format-val", str(k), f"{k}{i}abc.jpeg"))
    d = read_imagenet_v2(root)
    assert d.train == [] and d.classnames == NAMES and d.class_ids == WNIDS
    assert [(it.label, it.classname) for it in d.test[::2]] == [(0, "tench"), (1, "goldfish"), (2, "great white shark")]
    assert all(os.path.basename(os.path.dirname(it.impath)) == str(it.label) for it in d.test)
    # falls back to $DATA/imagenet/classnames.txt when the copy is missing
    os.remove(os.path.join(ds, "classnames.txt"))
    with pytest.raises(FileNotFoundError) as e:
        read_imagenet_v2(root)
    assert "imagenetv2-matched-frequency-format-val" in str(e.value)
    _classnames_file(os.path.join(root, "imagenet", "classnames.txt"))
    assert read_imagenet_v2(root).test == d.test
    os.rename(os.path.join(ds, "imagenetv2-matched-frequency-format-val", "2"), str(tmp_path / "x"))
    with pytest.raises(FileNotFoundError, match="class folder 2"):
        read_imagenet_v2(root)


def test_imagenet_sketch(tmp_path):
    root = str(tmp_path)
    ds = os.path.join(root, "imagenet-sketch")
    _classnames_file(os.path.join(ds, "classnames.txt"))
    for w in WNIDS:
        _img(os.path.join(ds, "images", w, "sketch_1.JPEG"))
    d = read_imagenet_sketch(root)
    assert [it.label for it in d.test] == [0, 1, 2] and d.class_ids == WNIDS
    os.rename(os.path.join(ds, "images", WNIDS[1]), str(tmp_path / "x"))
    with pytest.raises(FileNotFoundError, match="1 missing"):
        read_imagenet_sketch(root)


@pytest.mark.parametrize(
    "reader,folder,sub",
    [
        (read_imagenet_a, "imagenet-adversarial", "imagenet-a"),
        (read_imagenet_r, "imagenet-rendition", "imagenet-r"),
    ],
)
def test_imagenet_a_r_reindex_subset(tmp_path, reader, folder, sub):
    root = str(tmp_path)
    ds = os.path.join(root, folder)
    with pytest.raises(FileNotFoundError) as e:
        reader(root)
    assert f"{folder}/" in str(e.value) and f"{sub}/<wnid>" in str(e.value)
    _classnames_file(os.path.join(ds, "classnames.txt"))
    for w in (WNIDS[2], WNIDS[0]):
        _img(os.path.join(ds, sub, w, "0.jpg"))
        _img(os.path.join(ds, sub, w, "1.jpg"))
    open(os.path.join(ds, sub, "README.txt"), "w").write("ignored")
    d = reader(root)
    assert d.class_ids == [WNIDS[0], WNIDS[2]]
    assert d.classnames == ["tench", "great white shark"]
    assert [(it.label, it.classname) for it in d.test] == [(0, "tench")] * 2 + [(1, "great white shark")] * 2
    os.makedirs(os.path.join(ds, sub, "n00000001"))
    with pytest.raises(ValueError, match="n00000001"):
        reader(root)


# --------------------------------------------------------------------------- Rare Species

SPECIES = [
    "chordata_aves_accipitriformes_accipitridae_aquila_heliaca",
    "chordata_mammalia_carnivora_felidae_panthera_pardus",
    "arthropoda_insecta_lepidoptera_papilionidae_ornithoptera_alexandrae",
]


def _rare(root, n=10):
    for s in SPECIES:
        for i in range(n):
            _img(os.path.join(root, "rare_species", "images", s, f"{i:03d}.jpg"))


def test_rare_species_split_created_once_and_deterministic(tmp_path):
    a, b, c = (str(tmp_path / x) for x in "abc")
    for r in (a, b, c):
        _rare(r)
    da = read_rare_species(a, seed=1)
    db = read_rare_species(b, seed=1)
    read_rare_species(c, seed=2)
    split_name = os.path.join("rare_species", "split_hyptree_RareSpecies.json")
    ja, jb, jc = (json.load(open(os.path.join(r, split_name))) for r in (a, b, c))
    assert ja == jb and ja != jc
    assert da.classnames == sorted(SPECIES) and da.class_ids == da.classnames
    for k in range(3):
        assert [sum(it.label == k for it in getattr(da, s)) for s in ("train", "val", "test")] == [6, 1, 3]
    paths = [it.impath for s in (da.train, da.val, da.test) for it in s]
    assert len(paths) == len(set(paths)) == 30
    assert [it.classname for it in da.train if it.label == 0][0] == sorted(SPECIES)[0]
    # the saved split is reused: another seed does not re-split
    assert read_rare_species(a, seed=5).train == da.train
    assert db.test == [Item(it.impath.replace(a, b), it.label, it.classname) for it in da.test]


def test_rare_species_missing(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        read_rare_species(str(tmp_path))
    assert "phylum" in str(e.value) and "rare_species/" in str(e.value)


# --------------------------------------------------------------------------- scanning


def test_list_images_filters_and_sorts(tmp_path):
    for n in ("b.JPEG", "a.png", ".hidden.jpg", "c.txt", "d.Jpg"):
        (tmp_path / n).write_bytes(b"x")
    (tmp_path / "e.jpg").mkdir()
    assert list_images(str(tmp_path)) == ["a.png", "b.JPEG", "d.Jpg"]
