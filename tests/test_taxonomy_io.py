"""Readers on files generated in each source's real format, and their error messages."""

import logging
import os
import pickle
import struct
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

from hyptree.tree import Taxonomy, cut_targets, load_protect_cuts
from hyptree.tree.io import (
    detect_format,
    read_cifar100_meta,
    read_classnames_file,
    read_folder_tree,
    read_imagenet_meta,
    read_paths_file,
    read_protect_list,
    read_protect_tree,
    read_rare_species,
    read_sun397_hierarchy,
    read_taxonomy,
    write_paths_file,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ====================================================================== canonical text
def test_paths_file_round_trip_and_errors(tmp_path):
    t = Taxonomy.from_paths(["A/a1", "A/a2", "B/C/c_1", "e", "@ e = Eee"])
    p = tmp_path / "tax.txt"
    write_paths_file(str(p), t)
    assert p.read_text().startswith("# hyptree taxonomy")
    t2 = read_paths_file(str(p))
    assert t2 == t and t2.names == t.names and t2.display_names[t2.index("e")] == "Eee"
    assert read_paths_file(str(p), class_order=["e", "c_1", "a2", "a1"]).class_names == ("e", "c_1", "a2", "a1")
    p.write_text("a/b\n\nc/b\n")
    with pytest.raises(ValueError) as e:
        read_paths_file(str(p))
    assert f"{p}:3: node with two parents: 'b'" in str(e.value)


# ====================================================================== folder tree
def test_folder_tree(tmp_path):
    for d in ["animal/dog", "animal/cat", "plant/trees/oak", "plant/rose", ".git/objects", "animal/.cache"]:
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "animal" / "dog" / "img.jpg").write_text("x")
    (tmp_path / "notes.txt").write_text("x")
    t = read_folder_tree(str(tmp_path))
    assert t.names == ("root", "animal", "cat", "dog", "plant", "rose", "trees", "oak")  # sorted, DFS
    assert t.class_names == ("cat", "dog", "rose", "oak")
    assert t.path(t.class_index("oak")).tolist() == [t.index("plant"), t.index("trees"), t.index("oak")]
    assert read_folder_tree(str(tmp_path), class_order=["oak", "rose", "dog", "cat"]).class_names[0] == "oak"
    (tmp_path / "plant" / "dog").mkdir()
    with pytest.raises(ValueError, match="directory name 'dog' appears twice: 'animal/dog' and 'plant/dog'"):
        read_folder_tree(str(tmp_path))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no subdirectories"):
        read_folder_tree(str(empty))


# ====================================================================== ProTeCt tree.npy
def _fake_treelibs():
    """A stand-in for ProTeCt's ``treelibs`` module: same class names and attributes."""
    mod = types.ModuleType("treelibs")

    class TreeNode:
        def __init__(self, name, path, depth, node_id, child_idx=-1, parent=None):
            self.name, self.path, self.depth, self.node_id = name, path, depth, node_id
            self.children = {}
            self.child_idx, self.param_list, self.parent, self.codeword = child_idx, [], parent, None

    class Tree:
        pass

    class TreeForRareSpecies(Tree):  # the official Rare Species tree.npy: path-like node names
        pass

    for cls in (TreeNode, Tree, TreeForRareSpecies):
        cls.__module__ = "treelibs"
        cls.__qualname__ = cls.__name__
        setattr(mod, cls.__name__, cls)
    return mod


def make_protect_tree(path, nested, cls="Tree"):
    """Build and np.save a ProTeCt-style ``treelibs.<cls>`` from {name: subtree-dict or {}}
    (DFS node ids)."""
    mod = _fake_treelibs()
    sys.modules["treelibs"] = mod
    try:
        tree = getattr(mod, cls)()
        tree.root = mod.TreeNode("root", "prepro/raw/x", 0, 0)
        tree.nodes = {"root": tree.root}
        tree.nid2name = {0: "root"}

        def build(node, sub, depth):
            for name, kids in sub.items():
                child = mod.TreeNode(
                    name, node.path + "/" + name, depth + 1, len(tree.nodes), len(node.children), node.name
                )
                node.children[len(node.children)] = name
                tree.nodes[name] = child
                tree.nid2name[child.node_id] = name
                build(child, kids, depth + 1)

        build(tree.root, nested, 0)
        tree.depth = max(n.depth for n in tree.nodes.values())
        leaves = sorted((n for n in tree.nodes.values() if not n.children), key=lambda n: n.node_id)
        tree.leaf_nodes = {i: n.name for i, n in enumerate(leaves)}
        inner = sorted((n for n in tree.nodes.values() if n.children), key=lambda n: n.node_id)
        tree.intnl_nodes = {i: n.name for i, n in enumerate(inner)}
        tree.sublabels = -np.ones((len(leaves), len(inner)))
        np.save(path, tree, allow_pickle=True)
    finally:
        del sys.modules["treelibs"]
    return tree


NESTED = {
    "object": {
        "vessel": {"canoe": {}, "liner": {}},
        "container": {"vessel_1": {"jar": {}, "vase": {}}, "cap_1": {"bottle_cap": {}, "lens_cap": {}}},
    },
    "garment": {"cap_2": {"beret": {}, "baseball_cap": {}}, "coat": {}},
}


def test_protect_tree_round_trip(tmp_path):
    p = str(tmp_path / "tree.npy")
    tree = make_protect_tree(p, NESTED)
    with pytest.raises((ModuleNotFoundError, AttributeError)):
        np.load(p, allow_pickle=True)  # their code is needed for a plain load ...
    t = read_protect_tree(p)  # ... but not here
    assert list(t.names) == [tree.nid2name[i] for i in range(len(tree.nid2name))]  # same node ids
    assert t.class_names == tuple(tree.leaf_nodes[i] for i in range(len(tree.leaf_nodes)))
    assert t.class_names == ("canoe", "liner", "jar", "vase", "bottle_cap", "lens_cap", "beret", "baseball_cap", "coat")
    assert [t.names[i] for i in t.path(t.class_index("jar"))] == ["object", "container", "vessel_1", "jar"]
    # ProTeCt prompt texts by default, plain names on request
    assert t.display_names[t.index("vessel_1")] == "vessel" and t.display_names[t.index("cap_2")] == "cap"
    assert read_protect_tree(p, display="plain").display_names[t.index("vessel_1")] == "vessel 1"
    assert sys.modules.get("treelibs") is None


def test_protect_tree_rare_species_class(tmp_path):
    """The official Rare Species tree.npy pickles a ``treelibs.TreeForRareSpecies`` whose node
    names are rank paths (``chordata_aves``); the prompt text is the whole path, as in their code."""
    nested = {"chordata": {"chordata_aves": {"chordata_aves_passeriformes": {}}, "chordata_mammalia": {}}}
    p = str(tmp_path / "tree.npy")
    make_protect_tree(p, nested, cls="TreeForRareSpecies")
    t = read_protect_tree(p)
    assert t.class_names == ("chordata_aves_passeriformes", "chordata_mammalia")
    assert t.display_names[t.index("chordata_aves_passeriformes")] == "chordata aves passeriformes"
    assert sys.modules.get("treelibs") is None


def test_protect_tree_generic_walker(tmp_path):
    """Nested node objects under other attribute names: wnid + childs list, no node table.
    (The class must be one the ``protect_tree`` allow-list names: ``treelibs.TreeNode``.)"""
    mod = types.ModuleType("treelibs")

    class Synset:
        def __init__(self, wnid, childs=()):
            self.wnid, self.childs = wnid, list(childs)

    Synset.__module__, Synset.__qualname__ = "treelibs", "TreeNode"
    mod.TreeNode = Synset
    sys.modules["treelibs"] = mod
    try:
        top = Synset("n0", [Synset("n1", [Synset("n3"), Synset("n4")]), Synset("n2")])
        p = str(tmp_path / "tree.npy")
        np.save(p, top, allow_pickle=True)
        dag = Synset("n0", [Synset("n1"), Synset("n2")])
        dag.childs[1].childs.append(dag.childs[0])  # n1 reached twice
        pd_ = str(tmp_path / "dag.npy")
        np.save(pd_, dag, allow_pickle=True)
    finally:
        del sys.modules["treelibs"]
    t = read_protect_tree(p)
    assert t.names == ("n0", "n1", "n3", "n4", "n2") and t.class_names == ("n3", "n4", "n2")
    with pytest.raises(ValueError, match="'n1' is reached twice"):
        read_protect_tree(pd_)


def test_protect_tree_errors(tmp_path):
    p = tmp_path / "plain.npy"
    np.save(p, np.arange(3))
    with pytest.raises(ValueError, match="plain int64 array"):
        read_protect_tree(str(p))
    p = tmp_path / "dict.npy"
    np.save(p, {"a": 1}, allow_pickle=True)
    with pytest.raises(ValueError, match="no tree root found"):
        read_protect_tree(str(p))
    # a child name missing from the node table
    p = str(tmp_path / "tree.npy")
    mod = _fake_treelibs()
    sys.modules["treelibs"] = mod
    try:
        tree = mod.Tree()
        tree.root = mod.TreeNode("root", "", 0, 0)
        tree.root.children = {0: "a", 1: "ghost"}
        tree.nodes = {"root": tree.root, "a": mod.TreeNode("a", "", 1, 1, 0, "root")}
        np.save(p, tree, allow_pickle=True)
    finally:
        del sys.modules["treelibs"]
    with pytest.raises(ValueError, match="child 'ghost' of node 'root'"):
        read_protect_tree(p)


# ====================================================================== ProTeCt tree cuts
def test_protect_cuts_torch_archive_with_ambiguous_texts(tmp_path):
    p = str(tmp_path / "tree.npy")
    make_protect_tree(p, NESTED)
    t = read_protect_tree(p)
    # ProTeCt: dict {i: [tuple of prompt texts in node order, tgt_mapping per class]}
    cut_a = tuple(t.index(n) for n in ["vessel", "vessel_1", "cap_1", "cap_2", "coat"])
    cut_b = tuple(t.index(n) for n in ["object", "garment"])
    entry = lambda cut: [tuple(t.display_names[i] for i in cut), cut_targets(t, cut).tolist()]
    assert entry(cut_a)[0] == ("vessel", "vessel", "cap", "cap", "coat")
    f = str(tmp_path / "treecuts_2_multi.pkl")
    torch.save({0: entry(cut_a), 1: entry(cut_b)}, f)
    assert load_protect_cuts(f, t) == [cut_a, cut_b]
    # without tgt_mapping the shared texts cannot be resolved
    with open(f, "wb") as fh:
        pickle.dump([list(entry(cut_a)[0])], fh)
    with pytest.raises(ValueError, match="cut 0: node text 'vessel' matches several nodes"):
        load_protect_cuts(f, t)
    # other accepted forms: exact names, membership flags, expansion flags
    mem = np.zeros(t.num_nodes - 1, dtype=int)
    mem[np.asarray(cut_b) - 1] = 1
    exp = {"root": 1, "object": 0, "garment": 1, "cap_2": 0}
    with open(f, "wb") as fh:
        pickle.dump([["object", "garment"], mem, exp, {"names": ["garment", "object"]}, {"garment", "object"}], fh)
    got = load_protect_cuts(f, t)
    assert got[0] == cut_b and got[1] == cut_b
    assert got[2] == (t.index("object"), t.index("cap_2"), t.index("coat"))
    assert got[3] == (t.index("garment"), t.index("object"))
    assert got[4] == cut_b
    # a tgt_mapping in another class order warns
    bad = entry(cut_b)
    bad[1] = bad[1][::-1]
    torch.save({0: bad}, f)
    with pytest.warns(UserWarning, match="class orders differ"):
        load_protect_cuts(f, t)
    for obj, needle in [
        ([["object", "nothing"]], "cut 0: node 'nothing' not found"),
        ([["object"]], "cut 0: invalid cut: class 'beret'"),
        ([[1, 0, 1]], "0/1 flags of length 3"),
        (42, "expected a dict or list of cuts"),
    ]:
        with open(f, "wb") as fh:
            pickle.dump(obj, fh)
        with pytest.raises(ValueError, match=needle):
            load_protect_cuts(f, t)


def test_protect_cuts_single_child_chain_of_equal_texts(tmp_path):
    """ProTeCt's ImageNet base / novel trees keep single-child chains whose two nodes have one
    prompt text ('slot_machine' -> 'slot_machine_1'); their cut files name the text once."""
    nested = {"machine": {"slot_machine": {"slot_machine_1": {}}, "lathe": {}}, "tool": {"saw": {}, "drill": {}}}
    p = str(tmp_path / "tree.npy")
    make_protect_tree(p, nested)
    t = read_protect_tree(p)
    cut = (t.index("slot_machine"), t.index("lathe"), t.index("tool"))
    f = str(tmp_path / "treecuts_1_multi_base.pkl")
    torch.save({0: [("slot machine", "lathe", "tool"), cut_targets(t, cut).tolist()]}, f)
    assert load_protect_cuts(f, t) == [cut]  # the topmost of the chain
    torch.save({0: [("slot machine", "lathe", "tool"), [2, 1, 2, 2]]}, f)  # no node covers {1, 3}
    with pytest.raises(ValueError, match="'slot machine': no node covers exactly"):
        load_protect_cuts(f, t)


# ====================================================================== gt lists
def test_protect_list(tmp_path):
    p = tmp_path / "gt_test.txt"
    p.write_text(
        "physical_entity/object/mountain/test_mount_s_001582.png,0,0\n"
        "n07753592/0.005161_envelope _ envelope_0.99835336.jpg,52,1\n"
        "\n"
        "o/orchard/sun a.jpg 3\n"
        "a,b/c.jpg,7\n"
    )
    assert read_protect_list(str(p)) == [
        ("physical_entity/object/mountain/test_mount_s_001582.png", 0),
        ("n07753592/0.005161_envelope _ envelope_0.99835336.jpg", 52),
        ("o/orchard/sun a.jpg", 3),
        ("a,b/c.jpg", 7),
    ]
    p.write_text("ok.jpg,1,0\nbroken line without label\n")
    with pytest.raises(ValueError, match=r"gt_test.txt:2: expected"):
        read_protect_list(str(p))
    p.write_text("x.jpg,-1,0\n")
    with pytest.raises(ValueError, match=":1: negative label"):
        read_protect_list(str(p))


def test_protect_list_root_and_label_bound(tmp_path):
    """What hyptree.data's reader needs: image_root joined, labels bounded, a missing file explained."""
    p = tmp_path / "gt_test.txt"
    p.write_text("a/abbey/x.jpg,1,0\nn07753592/0.1_envelope , chest_0.9.jpg,0,1\n\n")
    assert read_protect_list(str(p), "/data/SUN397", num_classes=2) == [
        ("/data/SUN397/a/abbey/x.jpg", 1),
        ("/data/SUN397/n07753592/0.1_envelope , chest_0.9.jpg", 0),
    ]
    with pytest.raises(ValueError, match=r"gt_test.txt:1: label 1 outside 0..0"):
        read_protect_list(str(p), num_classes=1)
    p.write_text("x.jpg,-1,0\n")
    with pytest.raises(ValueError, match=r":1: label -1 outside 0..2"):
        read_protect_list(str(p), num_classes=3)
    with pytest.raises(FileNotFoundError, match="ProTeCt data list not found"):
        read_protect_list(str(tmp_path / "gt_missing.txt"))


# ====================================================================== CIFAR-100
def py2_pickle(obj) -> bytes:
    """Protocol-2 pickle as Python 2 wrote it: str as SHORT_BINSTRING."""
    out = bytearray(b"\x80\x02")

    def emit(o):
        if isinstance(o, dict):
            out.extend(b"}(")
            for k, v in o.items():
                emit(k)
                emit(v)
            out.extend(b"u")
        elif isinstance(o, list):
            out.extend(b"](")
            for x in o:
                emit(x)
            out.extend(b"e")
        elif isinstance(o, str):
            b = o.encode("latin1")
            out.extend(b"U" + bytes([len(b)]) + b)
        elif isinstance(o, int):
            out.extend(b"K" + bytes([o]) if 0 <= o < 256 else b"J" + struct.pack("<i", o))
        else:
            raise TypeError(o)

    emit(obj)
    out.extend(b".")
    return bytes(out)


COARSE = ["aquatic_mammals", "fish", "vehicles_1"]
FINE = ["beaver", "bicycle", "dolphin", "flatfish", "bus", "trout"]
FINE_TO_COARSE = [0, 2, 0, 1, 2, 1]


def write_cifar(d, style):
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    fine = rng.permutation(np.repeat(np.arange(6), 3)).tolist()
    coarse = [FINE_TO_COARSE[f] for f in fine]
    meta = {"fine_label_names": FINE, "coarse_label_names": COARSE}
    train = {"filenames": [f"img{i}.png" for i in range(len(fine))], "fine_labels": fine, "coarse_labels": coarse}
    if style == "py2":
        (d / "meta").write_bytes(py2_pickle(meta))
        (d / "train").write_bytes(py2_pickle(train))
    elif style == "bytes":  # py3 reading of the original files with encoding='bytes', re-pickled
        enc = lambda x: {
            k.encode(): ([v.encode() for v in vs] if isinstance(vs[0], str) else vs) for k, vs in x.items()
        }
        (d / "meta").write_bytes(pickle.dumps(enc(meta), protocol=3))
        train_b = enc(train)
        train_b[b"data"] = np.zeros((len(fine), 12), dtype=np.uint8)
        (d / "train").write_bytes(pickle.dumps(train_b, protocol=3))
    else:
        (d / "meta").write_bytes(pickle.dumps(meta, protocol=4))
        (d / "train").write_bytes(pickle.dumps({**train, "data": np.zeros((18, 4), np.uint8)}, protocol=4))
    return fine, coarse


@pytest.mark.parametrize("style", ["py2", "bytes", "str"])
def test_cifar100(tmp_path, style):
    d = tmp_path / "cifar-100-python"
    write_cifar(d, style)
    t = read_cifar100_meta(str(d))
    assert t.class_names == tuple(FINE)
    assert t.names[:4] == ("root", "aquatic_mammals", "beaver", "dolphin")
    for k, c in enumerate(FINE_TO_COARSE):
        assert t.names[t.parent[t.leaves[k]]] == COARSE[c]
    assert t.height == 2 and t.display_names[t.index("vehicles_1")] == "vehicles 1"
    assert read_cifar100_meta(str(d / "meta"), str(d / "train")) == t


def test_cifar100_errors(tmp_path):
    d = tmp_path / "c"
    fine, coarse = write_cifar(d, "str")
    coarse[fine.index(3)] = 0  # one 'flatfish' sample labelled aquatic_mammals
    (d / "train").write_bytes(pickle.dumps({"fine_labels": fine, "coarse_labels": coarse}))
    with pytest.raises(
        ValueError, match="fine class 'flatfish' maps to two coarse classes: 'aquatic_mammals' and 'fish'"
    ):
        read_cifar100_meta(str(d))
    (d / "train").write_bytes(pickle.dumps({"fine_labels": fine}))
    with pytest.raises(ValueError, match="no 'coarse_labels' entry"):
        read_cifar100_meta(str(d))
    coarse = [FINE_TO_COARSE[f] for f in fine]
    keep = [i for i, f in enumerate(fine) if f != 4]
    (d / "train").write_bytes(
        pickle.dumps({"fine_labels": [fine[i] for i in keep], "coarse_labels": [coarse[i] for i in keep]})
    )
    with pytest.raises(ValueError, match=r"without samples.*'bus'"):
        read_cifar100_meta(str(d))


# ====================================================================== ImageNet meta.mat
SYNSETS = [  # ILSVRC2012_ID, WNID, words, children (1-based IDs)
    (1, "n01", "tench, Tinca tinca", []),
    (2, "n02", "goldfish, Carassius auratus", []),
    (3, "n03", "tabby, tabby cat", []),
    (4, "n04", "platypus, duckbill", []),
    (5, "n05", "ball", []),
    (6, "n10", "entity", [7, 8]),
    (7, "n11", "animal, animate being, beast", [9, 10]),
    (8, "n12", "object, physical object", [11, 12, 4]),
    (9, "n13", "fish", [1, 2, 4]),  # platypus also under object (ID 8 < 9 wins)
    (10, "n14", "mammal", [3]),
    (11, "n15", "toy", [5]),
    (12, "n16", "plaything", [5]),  # ball also under toy (11 wins) -> plaything empty, dropped
]


def write_meta_mat(path, synsets):
    from scipy.io import savemat

    dt = [
        (f, "O")
        for f in (
            "ILSVRC2012_ID",
            "WNID",
            "words",
            "gloss",
            "num_children",
            "children",
            "wordnet_height",
            "num_train_images",
        )
    ]
    arr = np.zeros((len(synsets), 1), dtype=dt)
    for i, (sid, wnid, words, kids) in enumerate(synsets):
        ch = np.asarray(kids, dtype=np.float64).reshape(1, -1) if kids else np.zeros((1, 0))
        arr[i, 0] = (float(sid), wnid, words, f"gloss of {wnid}", float(len(kids)), ch, 0.0, 1300.0)
    savemat(path, {"synsets": arr})


def test_imagenet_meta(tmp_path, caplog):
    p = str(tmp_path / "meta.mat")
    write_meta_mat(p, SYNSETS)
    with caplog.at_level(logging.INFO, logger="hyptree.tree.io"):
        t = read_imagenet_meta(p)
    assert "2 synsets had several parents" in caplog.text
    assert t.names == ("n10", "n11", "n13", "n01", "n02", "n14", "n03", "n12", "n04", "n15", "n05")
    assert t.class_names == ("n01", "n02", "n03", "n04", "n05")
    assert t.names[t.parent[t.index("n04")]] == "n12"  # lowest-ID parent
    assert "n16" not in t
    assert t.display_names[t.index("n01")] == "tench" and t.display_names[t.index("n11")] == "animal"
    assert Taxonomy.from_paths(t.to_paths()) == t  # root 'n10' and display names survive the text format
    sub = read_imagenet_meta(p, class_order=["n03", "n01"], display_names={"n03": "tabby cat"})
    assert sub.class_names == ("n03", "n01") and sub.names == ("n10", "n11", "n13", "n01", "n14", "n03")
    assert sub.display_names[sub.index("n03")] == "tabby cat"
    names = tmp_path / "classnames.txt"
    names.write_text("n02 goldfish\nn01 tench\n")
    cn = read_classnames_file(str(names))
    t2 = read_imagenet_meta(p, class_order=list(cn), display_names=cn)
    assert t2.class_names == ("n02", "n01")
    with pytest.raises(ValueError, match="class 'n13' is an internal synset"):
        read_imagenet_meta(p, class_order=["n13"])
    with pytest.raises(ValueError, match="class 'n99' is not a WNID"):
        read_imagenet_meta(p, class_order=["n99"])


def test_imagenet_meta_several_tops_and_errors(tmp_path):
    p = str(tmp_path / "meta.mat")
    write_meta_mat(p, [(1, "n01", "a", []), (2, "n02", "b", []), (3, "n03", "c", []), (4, "n10", "top", [1, 2])])
    t = read_imagenet_meta(p)
    assert t.names == ("root", "n03", "n10", "n01", "n02")  # tops in ID order
    write_meta_mat(p, [(1, "n01", "a", []), (2, "n10", "top", [1, 7])])
    with pytest.raises(ValueError, match="'n10' lists unknown child ILSVRC2012_ID 7"):
        read_imagenet_meta(p)
    from scipy.io import savemat

    savemat(p, {"other": np.zeros(2)})
    with pytest.raises(ValueError, match="no 'synsets' variable"):
        read_imagenet_meta(p)


# ====================================================================== Rare Species
RARE = [
    "chordata_aves_passeriformes_corvidae_corvus_corax",
    "chordata_aves_passeriformes_corvidae_corvus_brachyrhynchos",
    "chordata_mammalia_carnivora_felidae_panthera_leo",
    "chordata_mammalia_carnivora_canidae_canis_lupus_familiaris",
    "chordata_aves_suliformes_sulidae_morus_bassanus",
    "arthropoda_insecta_hemiptera_miridae_morus_fictus",
    "arthropoda_insecta_lepidoptera_nymphalidae_danaus_plexippus",
]


def test_rare_species_from_names_and_folders(tmp_path):
    t = read_rare_species(sorted(RARE))
    assert t.class_names == tuple(sorted(RARE))
    assert read_rare_species(RARE).class_names == tuple(RARE)  # a list keeps its order
    k = t.class_index("chordata_mammalia_carnivora_canidae_canis_lupus_familiaris")
    path = [t.names[i] for i in t.path(k)]
    assert path[:5] == ["chordata", "mammalia", "carnivora", "canidae", "canis"]
    assert t.display_names[t.leaves[k]] == "canis lupus familiaris"
    assert "morus (sulidae)" in t and "morus (miridae)" in t and "morus" not in t
    assert t.display_names[t.index("morus (sulidae)")] == "morus"
    assert t.height == 6 and all(t.depth[t.leaves] == 6)
    for n in RARE:
        (tmp_path / n).mkdir()
    (tmp_path / ".ipynb_checkpoints").mkdir()
    assert read_rare_species(str(tmp_path)) == t
    order = RARE[::-1]
    assert read_rare_species(RARE, class_order=order).class_names == tuple(order)


def test_rare_species_kingdom_and_errors():
    names = ["Animalia_" + n for n in RARE[:3]]
    t = read_rare_species(names)
    assert t.children(0) == (t.index("chordata"),)
    tk = read_rare_species(names, keep_kingdom=True)
    assert tk.children(0) == (tk.index("Animalia"),) and tk.height == 7
    with pytest.raises(ValueError, match="'chordata_aves_corvus' is not 'phylum_class_order_family_genus_species'"):
        read_rare_species(RARE + ["chordata_aves_corvus"])
    with pytest.raises(ValueError, match="listed twice"):
        read_rare_species(RARE + RARE[:1])
    # the same name at two ranks gets qualified
    t2 = read_rare_species(["x_y_z_w_v_u", "x_z_q_r_s_t"])
    assert "z (y)" in t2 and "z (x)" in t2


# ====================================================================== SUN397
SUN_CSV = (
    "SUN397 three-level hierarchy,,,,,,,,,,,\n"
    'category,indoor,"outdoor, natural","outdoor, man-made","shopping and dining",'
    '"workplace (office building, factory, lab, etc.)","home or hotel","water, ice, snow",'
    '"mountains, hills, desert, sky","forest, field, jungle",'
    '"transportation (roads, parking, bridges, boats, airports, etc.)","houses, cabins, gardens, and farms"\n'
    "'/b/bakery/shop',1,0,0,1,0,0,0,0,0,0,0\n"
    "'/o/office',1,0,0,0,1,0,0,0,0,0,0\n"
    "'/b/bedroom',1,0,0,0,0,1,0,0,0,0,0\n"
    "'/h/hotel_room',1,0,0,0,1,1,0,0,0,0,0\n"
    "'/c/coast',0,1,0,0,0,0,1,0,0,0,0\n"
    "'/m/mountain',0,1,0,0,0,0,0,1,0,0,0\n"
    "'/f/forest/broadleaf',0,1,0,0,0,0,0,0,1,0,0\n"
    "'/h/highway',0,0,1,0,0,0,0,0,0,1,0\n"
    "'/b/barn',0,1,1,0,0,0,0,0,1,0,1\n"
    "'/c/cabin/outdoor',0,0,1,0,0,0,0,0,0,0,1\n"
    "'/a/apse/indoor',1,0,0,1,0,0,0,0,0,0,0\n"
)


def test_sun397_hierarchy(tmp_path, caplog):
    p = tmp_path / "three_levels.csv"
    p.write_text(SUN_CSV)
    with caplog.at_level(logging.INFO, logger="hyptree.tree.io"):
        t = read_sun397_hierarchy(str(p))
    assert "2 categories are flagged in several level-2 groups" in caplog.text
    assert t.class_names[:3] == ("bakery_shop", "office", "bedroom") and t.class_names[-1] == "apse_indoor"
    assert t.height == 3 and t.num_classes == 11
    assert [t.names[c] for c in t.children(0)] == ["indoor", "outdoor,_natural", "outdoor,_man-made"]
    par = lambda n: t.names[t.parent[t.index(n)]]
    assert par("hotel_room") == "workplace_(office_building,_factory,_lab,_etc.)"  # first flagged under indoor
    assert par("barn") == "forest,_field,_jungle"  # first level-1 flag is 'outdoor, natural'
    assert par("houses,_cabins,_gardens,_and_farms") == "outdoor,_man-made"  # co-occurrence 2 vs 1
    assert par("forest,_field,_jungle") == "outdoor,_natural"
    assert t.display_names[t.index("outdoor,_natural")] == "outdoor, natural"
    assert t.display_names[t.index("bakery_shop")] == "bakery shop"
    coop = read_sun397_hierarchy(str(p), name_style="coop")
    assert "shop_bakery" in coop and "indoor_apse" in coop
    tsv = tmp_path / "three_levels.tsv"
    rows = list(__import__("csv").reader(SUN_CSV.splitlines()[1:]))
    tsv.write_text("\n".join("\t".join(r) for r in rows) + "\n")
    assert read_sun397_hierarchy(str(tsv)) == t
    order = list(reversed(t.class_names))
    assert read_sun397_hierarchy(str(p), class_order=order).class_names == tuple(order)


def test_sun397_errors(tmp_path):
    p = tmp_path / "h.csv"
    p.write_text(SUN_CSV.replace("'/o/office',1,0,0,0,1,0", "'/o/office',1,0,0,0,0,0"))
    with pytest.raises(ValueError, match=r"h.csv:4: category 'office' has no level-2 group flagged"):
        read_sun397_hierarchy(str(p))
    p.write_text(SUN_CSV.replace("'/b/bedroom',1,0,0,0,0,1", "'/b/bedroom',1,0,0,0,0,yes"))
    with pytest.raises(ValueError, match=r"h.csv:5: column 'home or hotel' must be 0 or 1, got 'yes'"):
        read_sun397_hierarchy(str(p))
    p.write_text("category,indoor\n")
    with pytest.raises(ValueError, match="no header row followed by category rows"):
        read_sun397_hierarchy(str(p))
    with pytest.raises(ValueError, match="save the sheet as CSV"):
        read_sun397_hierarchy(str(tmp_path / "three_levels.xlsx"))


# ====================================================================== detection and CLI
def test_detect_format_and_read_taxonomy(tmp_path):
    (tmp_path / "t.txt").write_text("a/b\na/c\n")
    make_protect_tree(str(tmp_path / "tree.npy"), NESTED)
    write_meta_mat(str(tmp_path / "meta.mat"), SYNSETS)
    (tmp_path / "levels.csv").write_text(SUN_CSV)
    write_cifar(tmp_path / "cifar-100-python", "str")
    (tmp_path / "folders" / "x" / "y").mkdir(parents=True)
    (tmp_path / "gt_train.txt").write_text("a.jpg,0,0\n")
    expect = {
        "t.txt": "paths",
        "tree.npy": "protect",
        "meta.mat": "imagenet",
        "levels.csv": "sun397",
        "cifar-100-python": "cifar100",
        "folders": "folder",
        "cifar-100-python/meta": "cifar100",
    }
    for name, fmt in expect.items():
        assert detect_format(str(tmp_path / name)) == fmt
        assert isinstance(read_taxonomy(str(tmp_path / name)), Taxonomy)
    with pytest.raises(ValueError, match="image list"):
        detect_format(str(tmp_path / "gt_train.txt"))
    (tmp_path / "x.bin").write_text("")
    with pytest.raises(ValueError, match="pass --format"):
        detect_format(str(tmp_path / "x.bin"))
    rare = tmp_path / "rare"
    for n in RARE:
        (rare / n).mkdir(parents=True)
    with pytest.raises(ValueError, match="--format rare_species"):
        detect_format(str(rare))
    assert read_taxonomy(str(rare), "rare_species").num_classes == len(RARE)


def test_cli_module_entry_point(tmp_path):
    make_protect_tree(str(tmp_path / "tree.npy"), NESTED)
    out = tmp_path / "tax.txt"
    env = {**os.environ, "PYTHONPATH": ROOT}
    r = subprocess.run(
        [sys.executable, "-m", "hyptree", "taxonomy", "convert", str(tmp_path / "tree.npy"), "-o", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr
    t = read_paths_file(str(out))
    assert t == read_protect_tree(str(tmp_path / "tree.npy"))  # display names survive via '@' lines
    r = subprocess.run(
        [sys.executable, "-m", "hyptree", "taxonomy", "stats", str(tmp_path / "x.bin"), "--format", "paths"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert r.returncode == 2 and "error:" in r.stderr


def test_cifar100_archive_and_dataset_folder(tmp_path):
    """The layout docs/datasets.md recommends: $DATA/cifar-100/cifar-100-python.tar.gz, not extracted."""
    import subprocess
    import sys
    import tarfile

    from hyptree.tree.io import detect_format, read_taxonomy

    extracted = tmp_path / "x" / "cifar-100-python"
    write_cifar(extracted, "py2")
    (extracted / "test").write_bytes((extracted / "train").read_bytes())
    expected = read_cifar100_meta(str(extracted))
    data = tmp_path / "cifar-100"
    data.mkdir()
    archive = data / "cifar-100-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(extracted, arcname="cifar-100-python")
    for source in (archive, data):
        assert detect_format(str(source)) == "cifar100"
        assert read_taxonomy(str(source)) == expected
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(
        [sys.executable, "-m", "hyptree", "taxonomy", "show", str(data)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": root},
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    assert "aquatic_mammals" in proc.stdout and "beaver" in proc.stdout
    with tarfile.open(tmp_path / "cifar-100-other.tar.gz", "w:gz") as tar:
        tar.add(extracted / "meta", arcname="meta")
    with pytest.raises(ValueError, match="no member cifar-100-python/meta"):
        read_cifar100_meta(str(tmp_path / "cifar-100-other.tar.gz"))
