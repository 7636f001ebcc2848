"""hyptree.data.build on tiny generated copies of each dataset's real on-disk layout (no Dassl)."""

import logging
import os
import random

import pytest

# fixture builders of the reader tests (the files in each dataset's real format)
from test_data import SPECIES, _cifar_fake, _classnames_file, _img, _protect_cifar_tree, _rare, _write_cifar_archive
from test_taxonomy_io import SUN_CSV, make_protect_tree, write_meta_mat

from hyptree.data.build import (
    DATASET_NAMES,
    HIERARCHY_SOURCES,
    LAYOUTS,
    PROTECT_DIRS,
    match_classes,
)
from hyptree.data.build import (
    build_hierarchical_dataset as build,
)
from hyptree.data.common import fewshot_sample
from hyptree.run.config import default_config
from hyptree.run.factory import dataset_options
from hyptree.tree import Taxonomy, split_base_novel
from hyptree.tree.io import read_paths_file, write_paths_file

# --------------------------------------------------------------------------- checks


def _check(hd, class_of_item, leaf_of_class=lambda c: c):
    """Every item: label k <-> leaf k of the taxonomy, by the class read from its file path."""
    t = hd.taxonomy
    assert t.num_classes == len(hd.classnames) == len(hd.class_ids) == len(hd.full_labels)
    assert hd.classnames == [t.display_names[i] for i in t.leaves]
    assert hd.full_taxonomy.subtree([int(y) for y in hd.full_labels]) == t
    for k in range(t.num_classes):
        assert t.class_names[k] == leaf_of_class(hd.class_ids[k])
    for split in (hd.train_x, hd.val, hd.test):
        for it in split:
            assert 0 <= it.label < t.num_classes
            assert it.classname == hd.classnames[it.label]
            assert class_of_item(it) == hd.class_ids[it.label], it
    # every class has test images (and train images unless test-only)
    assert {it.label for it in hd.test} == set(range(t.num_classes))


def _folder(it):
    return os.path.basename(os.path.dirname(it.impath))


def _per_class(items):
    out = {}
    for it in items:
        out[it.label] = out.get(it.label, 0) + 1
    return out


# --------------------------------------------------------------------------- toy


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("toy"))
    build("toy", root)  # generates once (18 classes x 8/4/6 images)
    return root


def test_toy_all_base_new_and_fewshot(toy_root):
    full = build("toy", toy_root)
    assert full.tree == "all" and full.taxonomy == full.full_taxonomy
    assert full.taxonomy == read_paths_file(os.path.join(toy_root, "toy_hier", "hierarchy.txt"))
    assert full.classnames[0] == "red circle plain" and full.source.endswith("hierarchy.txt")
    _check(full, _folder)
    assert (len(full.train_x), len(full.val), len(full.test)) == (144, 72, 108)

    base_labels, novel_labels = split_base_novel(full.full_taxonomy, "balanced", 0)
    halves = {}
    for sub, expect in (("base", base_labels), ("new", novel_labels)):
        hd = build("toy", toy_root, num_shots=5, subsample=sub, seed=3)
        _check(hd, _folder)
        assert hd.tree == sub and hd.full_taxonomy == full.taxonomy
        assert hd.full_labels.tolist() == expect.tolist()
        assert hd.taxonomy == full.taxonomy.subtree(expect.tolist())
        assert _per_class(hd.train_x) == {k: 5 for k in range(len(expect))}  # 5 of 8
        assert _per_class(hd.val) == {k: 4 for k in range(len(expect))}  # min(5, 4) of 4
        assert _per_class(hd.test) == {k: 6 for k in range(len(expect))}  # all
        halves[sub] = hd
    ids = [set(halves[s].class_ids) for s in ("base", "new")]
    assert not ids[0] & ids[1] and ids[0] | ids[1] == set(full.class_ids)  # disjoint, covering
    assert halves["base"].taxonomy.num_classes == 9
    # split seed moves classes between halves; the run seed does not
    assert build("toy", toy_root, subsample="base", split_seed=1).class_ids != halves["base"].class_ids
    assert build("toy", toy_root, subsample="base", seed=9).class_ids == halves["base"].class_ids
    first = build("toy", toy_root, subsample="base", split_mode="first_half")
    assert first.class_ids == full.class_ids[:9]


def test_toy_fewshot_is_maples_order(toy_root):
    """Train then val drawn from one random.Random(seed) over all classes, before subsampling."""
    from hyptree.data.toy import make_toy_dataset

    raw = make_toy_dataset(toy_root)
    rng = random.Random(4)
    exp_train = fewshot_sample(raw.train, 2, 0, rng=rng)
    exp_val = fewshot_sample(raw.val, 2, 0, rng=rng)
    hd = build("toy", toy_root, num_shots=2, seed=4)
    assert [it.impath for it in hd.train_x] == [it.impath for it in exp_train]
    assert [it.impath for it in hd.val] == [it.impath for it in exp_val]
    # a base run trains on the same images of its classes as the all-class run
    base = build("toy", toy_root, num_shots=2, seed=4, subsample="base")
    keep = {full_k for full_k in base.full_labels.tolist()}
    assert [it.impath for it in base.train_x] == [it.impath for it in hd.train_x if it.label in keep]
    assert build("toy", toy_root, num_shots=2, seed=5).train_x != hd.train_x


# --------------------------------------------------------------------------- CIFAR-100


@pytest.fixture
def cifar_root(tmp_path):
    root = str(tmp_path)
    _write_cifar_archive(os.path.join(root, "cifar-100"), _cifar_fake(n_train=16, n_test=8))
    return root


def test_cifar100_archive_tree_and_val_fallback(cifar_root):
    hd = build("cifar100", cifar_root)
    _check(hd, _folder)
    t = hd.taxonomy
    assert t.class_names == ("apple", "otter", "seal", "rose")  # official fine label order
    assert [t.names[t.parent[t.leaves[k]]] for k in range(4)] == [
        "fruit_and_vegetables",
        "aquatic_mammals",
        "aquatic_mammals",
        "flowers",
    ]
    assert "archive" in hd.source
    assert hd.val == hd.test and len(hd.test) == 8  # no val split: test is val
    novel = build("cifar100", cifar_root, subsample="new", num_shots=1)
    _check(novel, _folder)
    assert novel.val == novel.test and set(novel.class_ids) < set(hd.class_ids)
    assert _per_class(novel.train_x) == {k: 1 for k in range(novel.taxonomy.num_classes)}


def test_cifar100_hierarchy_priority(cifar_root, tmp_path):
    # 2. ProTeCt's tree.npy beats the archive; its extra leaf is dropped, its names match
    protect = os.path.join(cifar_root, "protect", "cifar100")
    os.makedirs(protect)
    make_protect_tree(
        os.path.join(protect, "tree.npy"),
        {"organism": {"plant": {"rose": {}, "apple": {}, "oak": {}}, "mammal": {"seal": {}, "otter": {}}}},
    )
    hd = build("cifar100", cifar_root)
    _check(hd, _folder)
    assert hd.source.startswith("ProTeCt tree") and "cut down to the dataset's 4 classes" in hd.source
    assert hd.class_ids == ["apple", "otter", "seal", "rose"]  # still the dataset's label order
    assert hd.taxonomy.height == 3 and "oak" not in hd.taxonomy and not hd.dropped_classes
    # 1. taxonomy_file beats everything
    tf = tmp_path / "mine.txt"
    tf.write_text("# comment\nfood/apple\nsea/otter\nsea/seal\nflower/rose\n")
    hd2 = build("cifar100", cifar_root, taxonomy_file=str(tf))
    _check(hd2, _folder)
    assert hd2.source == f"taxonomy file {tf}" and hd2.taxonomy == read_paths_file(str(tf))
    # 3. ProTeCt's hierarchical folder version: images and tree from the folders
    os.remove(os.path.join(protect, "tree.npy"))
    _protect_cifar_tree(os.path.join(cifar_root, "cifar-100-hierarchical"))
    hd3 = build("cifar100", cifar_root)
    _check(hd3, _folder)
    assert hd3.class_ids == ["forest", "mountain", "baby"] and "hierarchical" in hd3.source
    assert [hd3.taxonomy.names[i] for i in hd3.taxonomy.path(2)] == ["physical_entity", "person", "baby"]
    assert all(os.path.basename(it.impath).startswith("train_") for it in hd3.train_x)
    # ... unless the archive is asked for
    assert build("cifar100", cifar_root, cifar_source="archive").class_ids == hd.class_ids


# --------------------------------------------------------------------------- ImageNet and variants

IN_WNIDS = ["n01440764", "n01443537", "n01484850", "n01491361"]
IN_NAMES = ["tench", "goldfish", "great white shark", "tiger shark"]
IN_SYNSETS = [  # ILSVRC2012_ID, WNID, words, children
    (1, "n01440764", "tench, Tinca tinca", []),
    (2, "n01443537", "goldfish, Carassius auratus", []),
    (3, "n01484850", "great white shark, white shark", []),
    (4, "n01491361", "tiger shark, Galeocerdo cuvieri", []),
    (5, "n02512053", "fish", [6, 7]),
    (6, "n01439121", "cyprinid, cyprinid fish", [1, 2]),
    (7, "n01482330", "shark", [3, 4]),
]


def _imagenet_root(root, meta=True):
    ds = os.path.join(root, "imagenet")
    _classnames_file(os.path.join(ds, "classnames.txt"), IN_WNIDS, IN_NAMES)
    for k, w in enumerate(IN_WNIDS):
        for i in range(3):
            _img(os.path.join(ds, "images", "train", w, f"{w}_{i}.JPEG"))
        for i in range(2):
            _img(os.path.join(ds, "images", "val", w, f"ILSVRC2012_val_{k}{i}.JPEG"))
    if meta:
        os.makedirs(os.path.join(ds, "ILSVRC2012_devkit_t12", "data"))
        write_meta_mat(os.path.join(ds, "ILSVRC2012_devkit_t12", "data", "meta.mat"), IN_SYNSETS)
    return root


def test_imagenet_meta_tree_display_names_and_fewshot(tmp_path):
    root = _imagenet_root(str(tmp_path))
    hd = build("imagenet", root, num_shots=2, seed=1)
    _check(hd, _folder)
    t = hd.taxonomy
    assert t.class_names == tuple(IN_WNIDS) and hd.classnames == IN_NAMES  # CLIP names from classnames.txt
    assert [t.display_names[i] for i in t.path(3)] == ["shark", "tiger shark"]
    assert t.names[0] == "n02512053" and "meta.mat" in hd.source
    assert _per_class(hd.train_x) == {k: 2 for k in range(4)}
    assert hd.val == hd.test and len(hd.test) == 8  # ImageNet: val is the (unsampled) test set


@pytest.mark.parametrize(
    "name,folder,sub",
    [
        ("imagenet_a", "imagenet-adversarial", "imagenet-a"),
        ("imagenet_r", "imagenet-rendition", "imagenet-r"),
    ],
)
def test_imagenet_variant_uses_imagenet_tree_cut_down(tmp_path, name, folder, sub):
    root = _imagenet_root(str(tmp_path))
    in_tree = build("imagenet", root).full_taxonomy
    ds = os.path.join(root, folder)
    _classnames_file(os.path.join(ds, "classnames.txt"), IN_WNIDS, IN_NAMES)
    for w in (IN_WNIDS[3], IN_WNIDS[0]):
        _img(os.path.join(ds, sub, w, "0.jpg"))
        _img(os.path.join(ds, sub, w, "1.jpg"))
    hd = build(name, root)
    _check(hd, _folder)
    assert hd.tree == name and hd.train_x == []
    assert hd.class_ids == [IN_WNIDS[0], IN_WNIDS[3]] and hd.classnames == ["tench", "tiger shark"]
    assert hd.taxonomy == in_tree.subtree([IN_WNIDS[0], IN_WNIDS[3]])
    assert "cut down" in hd.source
    # a target's own ProTeCt tree beats ImageNet's; ImageNet's ProTeCt tree beats meta.mat
    pimg = os.path.join(root, "protect", "imagenet")
    os.makedirs(pimg)
    make_protect_tree(
        os.path.join(pimg, "tree.npy"),
        {"animal": {"tench": {}, "goldfish": {}}, "fish_1": {"great_white_shark": {}, "tiger_shark": {}}},
    )
    hp = build(name, root)
    _check(hp, _folder, leaf_of_class={IN_WNIDS[0]: "tench", IN_WNIDS[3]: "tiger_shark"}.get)
    assert hp.source.startswith(f"ProTeCt tree {pimg}")
    assert hp.taxonomy.names == ("root", "animal", "tench", "fish_1", "tiger_shark")
    assert hp.taxonomy.display_names[3] == "fish"  # ProTeCt's prompt text
    own = os.path.join(root, "protect", {"imagenet_a": "imagenet-a", "imagenet_r": "imagenet-r"}[name])
    os.makedirs(own)
    make_protect_tree(os.path.join(own, "tree.npy"), {"x": {"tench": {}, "tiger_shark": {}}})
    assert build(name, root).source.startswith(f"ProTeCt tree {own}")


def test_imagenet_v2_and_base_new(tmp_path):
    root = _imagenet_root(str(tmp_path))
    ds = os.path.join(root, "imagenetv2")
    for k in range(4):
        _img(os.path.join(ds, "imagenetv2-matched-frequency-format-val", str(k), "a.jpeg"))
    hd = build("imagenetv2", root)  # no own classnames.txt: ImageNet's is used
    _check(hd, lambda it: IN_WNIDS[int(_folder(it))])
    assert hd.tree == "imagenetv2" and hd.taxonomy == build("imagenet", root).taxonomy
    b = build("imagenetv2", root, subsample="base")
    _check(b, lambda it: IN_WNIDS[int(_folder(it))])
    assert b.tree == "base" and b.taxonomy.num_classes == 2


def test_imagenet_taxonomy_file_wnid_leaves_show_class_names(tmp_path):
    root = _imagenet_root(str(tmp_path), meta=False)
    with pytest.raises(FileNotFoundError, match="meta.mat") as e:
        build("imagenet", root)
    assert "TAXONOMY.FILE" in str(e.value) and "protect/imagenet/tree.npy" in str(e.value)
    tf = tmp_path / "in.txt"
    tf.write_text(
        "fish/n01440764\nfish/n01443537\nfish/shark/n01484850\nfish/shark/n01491361\n@ n01491361 = Galeocerdo\n"
    )
    hd = build("imagenet", root, taxonomy_file=str(tf))
    _check(hd, _folder)
    assert hd.classnames == ["tench", "goldfish", "great white shark", "Galeocerdo"]  # explicit name kept
    # the canonical file of a run reads back to the same tree
    out = str(tmp_path / "written.txt")
    write_paths_file(out, hd.taxonomy)
    assert build("imagenet", root, taxonomy_file=out).taxonomy == hd.taxonomy


# --------------------------------------------------------------------------- SUN397

SUN_FOLDERS = ["a/abbey", "a/apartment_building/outdoor", "b/bakery/shop", "b/bedroom"]


def _sun_root(root, table_rows=None, per_class=10):
    ds = os.path.join(root, "sun397")
    for f in SUN_FOLDERS:
        for i in range(per_class):
            _img(os.path.join(ds, "SUN397", f, f"sun_{i}.jpg"))
    open(os.path.join(ds, "ClassName.txt"), "w").write("".join(f"/{f}\n" for f in SUN_FOLDERS))
    open(os.path.join(ds, "Training_01.txt"), "w").write(
        "".join(f"/{f}/sun_{i}.jpg\n" for f in SUN_FOLDERS for i in range(per_class // 2))
    )
    open(os.path.join(ds, "Testing_01.txt"), "w").write(
        "".join(f"/{f}/sun_{i}.jpg\n" for f in SUN_FOLDERS for i in range(per_class // 2, per_class))
    )
    head = SUN_CSV.splitlines()[:2]  # title row + SUN's header (3 level-1, 8 level-2 groups)
    if table_rows is None:
        table_rows = [
            "'/a/abbey',0,0,1,0,0,0,0,0,0,0,1",
            "'/a/apartment_building/outdoor',0,0,1,0,0,0,0,0,0,0,1",
            "'/b/bakery/shop',1,0,0,1,0,0,0,0,0,0,0",
            "'/b/bedroom',1,0,0,0,0,1,0,0,0,0,0",
            "'/o/office',1,0,0,0,1,0,0,0,0,0,0",  # not in the dataset
        ]
    os.makedirs(os.path.join(ds, "hierarchy_three_levels"))
    open(os.path.join(ds, "hierarchy_three_levels", "three_levels.csv"), "w").write("\n".join(head + table_rows) + "\n")
    return root


def _sun_class(it):
    return os.path.dirname(it.impath).split(os.sep + "SUN397" + os.sep, 1)[1].replace(os.sep, "/")


def _coop_leaf(folder):
    return "_".join(folder.split("/")[1:][::-1])


def test_sun397_table_base_new(tmp_path):
    root = _sun_root(str(tmp_path))
    hd = build("sun397", root)
    _check(hd, _sun_class, _coop_leaf)
    t = hd.taxonomy
    assert hd.class_ids == SUN_FOLDERS and "three_levels.csv" in hd.source
    assert hd.classnames == ["abbey", "outdoor apartment building", "shop bakery", "bedroom"]
    assert [t.names[i] for i in t.path(2)] == ["indoor", "shopping_and_dining", "shop_bakery"]
    assert "office" not in t and t.height == 3
    assert _per_class(hd.val) == {k: 1 for k in range(4)}  # the split's own val (round(5 * 0.2))
    base = build("sun397", root, num_shots=2, subsample="base")
    new = build("sun397", root, num_shots=2, subsample="new")
    for h in (base, new):
        _check(h, _sun_class, _coop_leaf)
        assert _per_class(h.train_x) == {k: 2 for k in range(2)} and _per_class(h.val) == {0: 1, 1: 1}
    assert sorted(base.class_ids + new.class_ids) == sorted(SUN_FOLDERS)
    # balanced split: each parent with two leaves gives one to each half
    assert {base.class_ids[0], base.class_ids[1]} & set(SUN_FOLDERS[:2]) and {
        base.class_ids[0],
        base.class_ids[1],
    } & set(SUN_FOLDERS[2:])


def test_sun397_protect_subset_drops_classes_with_warning(tmp_path, caplog):
    root = _sun_root(str(tmp_path))
    p = os.path.join(root, "protect", "sun")
    os.makedirs(p)
    # ProTeCt's names ('apartment_building_outdoor'), and not every SUN397 class
    make_protect_tree(
        os.path.join(p, "tree.npy"),
        {"outdoor": {"abbey": {}, "apartment_building_outdoor": {}}, "indoor": {"bedroom": {}, "office": {}}},
    )
    with caplog.at_level(logging.WARNING, logger="hyptree.data.build"):
        hd = build("sun397", root)
    assert "1 of 4 classes are not leaves" in caplog.text
    assert hd.dropped_classes == ["b/bakery/shop"]
    assert hd.class_ids == ["a/abbey", "a/apartment_building/outdoor", "b/bedroom"]
    _check(
        hd,
        _sun_class,
        {"a/abbey": "abbey", "a/apartment_building/outdoor": "apartment_building_outdoor", "b/bedroom": "bedroom"}.get,
    )
    assert not any("bakery" in it.impath for it in hd.train_x + hd.val + hd.test)


def test_sun397_native_table_missing_a_class_is_an_error(tmp_path):
    root = _sun_root(
        str(tmp_path), table_rows=["'/a/abbey',0,0,1,0,0,0,0,0,0,0,1", "'/b/bedroom',1,0,0,0,0,1,0,0,0,0,0"]
    )
    with pytest.raises(ValueError, match=r"2 classes are not leaves of .*three_levels.csv.*apartment_building"):
        build("sun397", root)


# --------------------------------------------------------------------------- Rare Species


def test_rare_species_folder_taxonomy(tmp_path):
    root = str(tmp_path)
    _rare(root)
    hd = build("rare_species", root, num_shots=3, seed=2)
    _check(hd, _folder)
    t = hd.taxonomy
    assert hd.class_ids == sorted(SPECIES) and t.height == 6
    assert hd.classnames == ["ornithoptera alexandrae", "aquila heliaca", "panthera pardus"]
    assert [t.names[i] for i in t.path(1)][:2] == ["chordata", "aves"]
    assert _per_class(hd.train_x) == {0: 3, 1: 3, 2: 3} and _per_class(hd.val) == {0: 1, 1: 1, 2: 1}
    novel = build("rare_species", root, subsample="new")
    _check(novel, _folder)
    assert novel.taxonomy.num_classes == 1 and novel.taxonomy.height == 6


def test_rare_species_official_protect_tree(tmp_path):
    """The official Rare Species ``tree.npy`` (a ``treelibs.TreeForRareSpecies``) under
    ``$DATA/protect/rarespecies/`` is used: nodes named by their rank paths, prompts the
    whole path (the official prompt text), classes matched to the folders by name."""
    root = str(tmp_path)
    _rare(root)
    nested: dict = {}
    for species in SPECIES:
        parts, sub = species.split("_"), nested
        for k in range(1, len(parts) + 1):
            sub = sub.setdefault("_".join(parts[:k]), {})
    os.makedirs(os.path.join(root, "protect", "rarespecies"))
    make_protect_tree(os.path.join(root, "protect", "rarespecies", "tree.npy"), nested, cls="TreeForRareSpecies")
    hd = build("rare_species", root)
    t = hd.taxonomy
    assert "ProTeCt tree" in hd.source and hd.class_ids == sorted(SPECIES)
    assert t.height == 6 and t.num_nodes == 1 + 11 + 6  # root, the chordata paths (shared phylum), arthropoda
    leaf = t.leaves[hd.class_ids.index(SPECIES[1])]
    assert t.display_names[leaf] == "chordata mammalia carnivora felidae panthera pardus"


# --------------------------------------------------------------------------- matching, errors, cfg


def test_match_classes_exact_before_normalised_and_conflicts():
    t = Taxonomy.from_paths(["a/Great_White-Shark", "a/tench", "b/goldfish", "b/gold_fish_x", "c/Gold Fish"])
    keys = [["n1", "great white shark"], ["n2", "TENCH"], ["n3", "goldfish"], ["n4", "gold fish"], ["n5", "carp"]]
    # exact first ('goldfish'), else case/separator-insensitive ('gold fish' -> 'Gold Fish'), else None
    assert match_classes(t, keys) == ["Great_White-Shark", "tench", "goldfish", "Gold Fish", None]
    # an exact later candidate beats a normalised earlier one
    assert match_classes(t, [["GOLDFISH", "tench"]]) == ["tench"]
    t2 = Taxonomy.from_paths(["a/gold_fish", "b/Gold Fish"])  # one normalised spelling, two leaves
    assert match_classes(t2, [["gold-fish"]]) == [None]
    assert match_classes(t2, [["Gold Fish"]]) == ["Gold Fish"]
    with pytest.raises(ValueError, match="both match the leaf 'tench'"):
        match_classes(t, [["tench"], ["Tench"]])


def test_errors(tmp_path, toy_root):
    assert set(HIERARCHY_SOURCES) == set(PROTECT_DIRS) == set(DATASET_NAMES)
    with pytest.raises(ValueError) as e:
        build("cifar10", str(tmp_path))
    assert all(n in str(e.value) for n in DATASET_NAMES)
    with pytest.raises(ValueError, match="subsample = 'novel'"):
        build("toy", toy_root, subsample="novel")
    with pytest.raises(ValueError, match="split_mode"):
        build("toy", toy_root, split_mode="random")
    with pytest.raises(TypeError, match="toy: .*colour"):
        build("toy", toy_root, colour=1)
    for name, layout in (
        ("cifar100", "cifar100"),
        ("sun397", "sun397"),
        ("imagenet", "imagenet"),
        ("imagenet_sketch", "imagenet_sketch"),
        ("rare_species", "rare_species"),
    ):
        with pytest.raises(FileNotFoundError) as e:
            build(name, str(tmp_path / "empty"))
        assert LAYOUTS[layout] in str(e.value), name
    with pytest.raises(FileNotFoundError, match="cifar-100-hierarchical"):
        build("cifar100", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="taxonomy file not found: .*nope.txt"):
        build("toy", toy_root, taxonomy_file=str(tmp_path / "nope.txt"))
    other = tmp_path / "other.txt"
    other.write_text("x/dog\nx/cat\n")
    with pytest.raises(ValueError, match="none of the dataset's 18 classes is a leaf"):
        build("toy", toy_root, taxonomy_file=str(other))
    bad = tmp_path / "bad.txt"
    bad.write_text("a/b\nc/b\n")
    with pytest.raises(ValueError, match="bad.txt:2: node with two parents"):
        build("toy", toy_root, taxonomy_file=str(bad))


def test_dataset_options():
    cfg = default_config()
    cfg.DATASET.ROOT = "/data"
    cfg.DATASET.NUM_SHOTS = 16
    cfg.DATASET.SUBSAMPLE_CLASSES = "base"
    cfg.SEED = 3
    cfg.TRAINER.HYPTREE.TAXONOMY.FILE = "/t.txt"
    assert dataset_options(cfg) == dict(
        root="/data",
        num_shots=16,
        subsample="base",
        split_mode="balanced",
        split_seed=0,
        seed=3,
        taxonomy_file="/t.txt",
    )
    del cfg.TRAINER["HYPTREE"]
    del cfg.DATASET["SUBSAMPLE_SEED"]
    with pytest.raises(KeyError, match="DATASET.SUBSAMPLE_SEED, TRAINER.HYPTREE.TAXONOMY.FILE.*add_hyptree_config"):
        dataset_options(cfg)
