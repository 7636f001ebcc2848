"""Taxonomy construction/validation, base/novel splits and tree cuts."""

import json
import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyptree.tree import (
    Taxonomy,
    cut_targets,
    evaluation_cuts,
    level_cut,
    load_cuts,
    random_cut,
    save_cuts,
    split_base_novel,
    validate_cut,
)
from hyptree.tree.cli import main

LINES = ["A/a1", "A/a2", "B/C/c1", "B/C/c2", "B/b1", "e"]


def small():
    return Taxonomy.from_paths(LINES)


def random_tree(rng, n=14, shuffle_classes=True):
    """Random rooted tree with unbalanced depths; classes in a random order."""
    parent = [-1] + [int(rng.integers(0, i)) for i in range(1, n)]
    names = [f"n{i}" for i in range(n)]
    childless = [i for i in range(n) if i not in parent]
    leaves = list(rng.permutation(childless)) if shuffle_classes else childless
    return Taxonomy(names, parent, leaves)


# ---------------------------------------------------------------- construction
def test_from_paths_node_order_and_fields():
    t = small()
    assert t.names == ("root", "A", "a1", "a2", "B", "C", "c1", "c2", "b1", "e")  # DFS pre-order
    assert t.parent.tolist() == [-1, 0, 1, 1, 0, 4, 5, 5, 4, 0]
    assert t.depth.tolist() == [0, 1, 2, 2, 1, 2, 3, 3, 2, 1]
    assert t.class_names == ("a1", "a2", "c1", "c2", "b1", "e")
    assert t.leaves.tolist() == [2, 3, 6, 7, 8, 9]
    assert t.internal.tolist() == [0, 1, 4, 5]
    assert (t.num_nodes, t.num_classes, t.height) == (10, 6, 3)
    assert t.children(0) == (1, 4, 9) and t.children("B") == (5, 8) and t.children("e") == ()
    assert t.index("C") == 5 and t.class_index("b1") == 4 and t.class_of("C") == -1
    assert t.path(2).tolist() == [4, 5, 6] and t.path(5).tolist() == [9]
    assert t.ancestors("c2") == (0, 4, 5)
    assert t.is_ancestor("B", "c1") and t.is_ancestor(0, "e") and not t.is_ancestor("A", "c1")
    assert not t.is_ancestor("c1", "c1")
    assert t.classes_under("B").tolist() == [2, 3, 4] and t.classes_under(0).tolist() == list(range(6))
    with pytest.raises(AttributeError):
        t.names = ()
    with pytest.raises(ValueError):
        t.parent[0] = 3  # read-only arrays


def test_first_appearance_order_when_lines_interleave():
    t = Taxonomy.from_paths(["a/x", "b/y", "a/z"])
    assert t.names == ("root", "a", "x", "z", "b", "y")
    assert t.class_names == ("x", "y", "z")  # class order = first appearance
    t2 = Taxonomy.from_paths(["a/x", "b/y", "a/z"], class_order=["z", "y", "x"])
    assert t2.class_names == ("z", "y", "x") and t2.names == t.names


def test_padded_paths():
    t = small()
    paths, mask = t.padded_paths()
    assert paths.dtype == np.int64 and paths.shape == (6, 3)
    assert paths[5].tolist() == [9, -1, -1] and mask[5].tolist() == [True, False, False]
    assert paths[2].tolist() == [4, 5, 6] and mask[2].all()
    for k in range(6):
        assert paths[k][mask[k]].tolist() == t.path(k).tolist()
        assert paths[k][mask[k]][-1] == t.leaves[k]
    p0, _ = t.padded_paths(pad=0)
    assert p0[5].tolist() == [9, 0, 0]


def test_display_names_and_comments():
    text = "# comment\n\nbig_cats/snow_leopard\n   \nbig_cats/lion\n@ lion = Panthera leo\n@ root = everything\n"
    t = Taxonomy.from_paths(text)
    assert t.display_names[t.index("snow_leopard")] == "snow leopard"
    assert t.display_names[t.index("lion")] == "Panthera leo"
    assert t.display_names[0] == "everything"
    t2 = Taxonomy.from_paths(t.to_paths())
    assert t2 == t and t2.display_names == t.display_names
    t3 = Taxonomy.from_paths(["a/b"], display_names={"b": "Bee"})
    assert t3.display_names == ("root", "a", "Bee")


@pytest.mark.parametrize(
    "lines, needle",
    [
        (["a/b", "c/b"], "node with two parents: 'b' is under 'a' (line 1) and under 'c'"),
        (["a//b"], ":1: empty path component"),
        (["x", "/a/b"], ":2: empty path component"),
        (["a/b/"], "empty path component"),
        (["a/b", "a"], "class 'a' is an internal node"),
        (["a", "a/b"], "'a' is a class (line 1) and also has children"),
        (["a/b", "a/b"], "class 'b' is listed twice"),
        (["a/b/a"], "repeats within the path"),
        (["root/a"], "root 'root' is implicit"),
        (["# only comments", ""], "no paths"),
        (["a/b", "@ zz = Z"], "display name for unknown node 'zz'"),
        (["a/b", "@ b Z"], "'@ NAME = TEXT'"),
    ],
)
def test_from_paths_errors(lines, needle):
    with pytest.raises(ValueError) as e:
        Taxonomy.from_paths(lines, source="f.txt")
    assert needle in str(e.value)


def test_root_name_directive():
    t = Taxonomy.from_paths(["@root entity", "a/b", "@ entity = Entity"])
    assert t.names[0] == "entity" and t.display_names[0] == "Entity"
    assert Taxonomy.from_paths(t.to_paths()) == t
    assert Taxonomy.from_paths(["a/b"], root_name="top").names[0] == "top"
    with pytest.raises(ValueError, match=":2: a second '@root' line"):
        Taxonomy.from_paths(["@root x", "@root y", "a"])


def test_class_order_mismatch_lists_missing_and_extra():
    with pytest.raises(ValueError) as e:
        Taxonomy.from_paths(LINES, class_order=["a1", "a2", "c1", "c2", "b1", "zebra"])
    msg = str(e.value)
    assert "missing from the tree: 'zebra'" in msg and "not in class_order: 'e'" in msg
    with pytest.raises(ValueError, match="repeated in class_order: 'a1'"):
        Taxonomy.from_paths(LINES, class_order=["a1", "a1", "a2", "c1", "c2", "b1", "e"])


@pytest.mark.parametrize(
    "names, parent, leaves, needle",
    [
        (["r", "a", "a"], [-1, 0, 0], None, "duplicate node name 'a' (nodes 1 and 2)"),
        (["r", "a", "b", "c"], [-1, 2, 3, 1], None, "cycle: "),
        (["r", "a", "b"], [-1, 0, 1], [1], "class 'a' is an internal node"),
        (["r", "a", "b", "c"], [-1, 0, 0, 0], ["a", "b"], "internal nodes without leaves): 'c'"),
        (["r", "a", "b"], [-1, 0, 0], ["a", "zz"], "unknown class name 'zz'"),
        (["r", "a", "b"], [-1, 0, 0], ["a", "a", "b"], "listed twice"),
        (["r", "a", "b"], [-1, -1, 0], None, "node 'a' has no parent"),
        (["r", "a"], [0, 0], None, "must have parent -1"),
        (["r", "a"], [-1, 5], None, "has parent 5, outside"),
        (["r"], [-1], None, "no children"),
        (["r", ""], [-1, 0], None, "non-empty"),
    ],
)
def test_constructor_errors(names, parent, leaves, needle):
    with pytest.raises(ValueError) as e:
        Taxonomy(names, parent, leaves)
    assert needle in str(e.value)


def test_cycle_message_names_the_cycle():
    with pytest.raises(ValueError) as e:
        Taxonomy(["r", "a", "b", "c", "d"], [-1, 0, 3, 4, 2], None)
    assert "cycle" in str(e.value) and "'b'" in str(e.value) and "'c'" in str(e.value) and "'d'" in str(e.value)


def test_from_edges():
    t = Taxonomy.from_edges([("root", "x"), ("x", "p"), ("root", "q"), ("x", "p")])
    assert t.names == ("root", "x", "p", "q") and t.class_names == ("p", "q")
    with pytest.raises(ValueError, match="node with two parents: 'p' is under 'x' and 'root'"):
        Taxonomy.from_edges([("root", "x"), ("x", "p"), ("root", "p")])
    with pytest.raises(ValueError, match="cycle"):
        Taxonomy.from_edges([("root", "x"), ("a", "b"), ("b", "a")])
    with pytest.raises(ValueError, match="not connected to the root"):
        Taxonomy.from_edges([("root", "x"), ("a", "b")])
    with pytest.raises(ValueError, match="cannot be a child"):
        Taxonomy.from_edges([("root", "x"), ("x", "root")])


def test_subtree_keeps_given_order_and_drops_empty_nodes():
    t = small()
    s = t.subtree(["b1", "a2", "c1"])
    assert s.class_names == ("b1", "a2", "c1")
    assert s.names == ("root", "A", "a2", "B", "C", "c1", "b1")  # relative order kept, e/a1/c2 gone
    assert s.path(2).tolist() == [s.index("B"), s.index("C"), s.index("c1")]
    assert t.subtree([4, 0]).class_names == ("b1", "a1")
    with pytest.raises(ValueError, match="unknown class.*'B'.*'zz'"):
        t.subtree(["a1", "B", "zz"])
    with pytest.raises(ValueError, match="given twice"):
        t.subtree(["a1", "a1"])


def test_stats():
    st_ = small().stats()
    assert st_["nodes"] == 10 and st_["leaves"] == 6 and st_["internal"] == 4 and st_["height"] == 3
    assert st_["depth_histogram"] == {0: 1, 1: 3, 2: 4, 3: 2}
    assert st_["leaf_depth_histogram"] == {1: 1, 2: 3, 3: 2}
    assert st_["branching"] == {"min": 2, "max": 3, "mean": 2.25}
    assert st_["balanced"] is False


def test_equality_pickle_and_hash():
    t = small()
    t2 = pickle.loads(pickle.dumps(t))
    assert t2 == t and hash(t2) == hash(t) and t2.names == t.names
    assert t != Taxonomy.from_paths(LINES, class_order=["a2", "a1", "c1", "c2", "b1", "e"])
    assert t != Taxonomy.from_paths(LINES + ["@ e = E"])


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 30))
def test_paths_round_trip_random_trees(seed, n):
    t = random_tree(np.random.default_rng(seed), n)
    t2 = Taxonomy.from_paths(t.to_paths())
    assert t.to_paths()[0] == "@root n0"
    assert t2 == t
    assert t2.class_names == t.class_names
    for k in range(t.num_classes):
        assert [t2.names[i] for i in t2.path(k)] == [t.names[i] for i in t.path(k)]
    # subtree of everything in label order is the same tree
    assert t.subtree(list(t.class_names)) == t


# ---------------------------------------------------------------- base / novel
def test_first_half_is_coops_rule():
    t = small()
    b, n = split_base_novel(t, "first_half")
    assert b.tolist() == [0, 1, 2] and n.tolist() == [3, 4, 5]
    t7 = Taxonomy.from_paths([f"g/c{i}" for i in range(7)])
    b, n = split_base_novel(t7, "first_half")
    assert len(b) == 4 and b.tolist() == [0, 1, 2, 3]  # ceil(7/2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_balanced_split(seed):
    rng = np.random.default_rng(100 + seed)
    t = random_tree(rng, 40)
    b, n = split_base_novel(t, "balanced", seed=seed)
    b2, n2 = split_base_novel(t, "balanced", seed=seed)
    assert b.tolist() == b2.tolist() and n.tolist() == n2.tolist()
    assert set(b.tolist()).isdisjoint(n.tolist())
    assert sorted(b.tolist() + n.tolist()) == list(range(t.num_classes))
    assert len(b) == math.ceil(t.num_classes / 2)
    leaf_parent = t.parent[t.leaves]
    for p in np.unique(leaf_parent):
        group = set(np.nonzero(leaf_parent == p)[0].tolist())
        nb = len(group & set(b.tolist()))
        assert len(group) // 2 <= nb <= (len(group) + 1) // 2
    for half in (b, n):
        s = t.subtree(half.tolist())
        assert s.class_names == tuple(t.class_names[k] for k in half)
        assert all(s.children(i) for i in s.internal)


def test_balanced_split_depends_on_seed_and_rejects_bad_mode():
    t = Taxonomy.from_paths([f"g{j}/c{j}_{i}" for j in range(4) for i in range(6)])
    splits = {tuple(split_base_novel(t, seed=s)[0].tolist()) for s in range(5)}
    assert len(splits) > 1
    for b in splits:  # half of every parent's 6 leaves
        assert all(sum(1 for k in b if k // 6 == j) == 3 for j in range(4))
    with pytest.raises(ValueError, match="unknown split mode"):
        split_base_novel(t, "random")


# ---------------------------------------------------------------- cuts
def covers_each_leaf_once(t, cut):
    for k in range(t.num_classes):
        leaf = t.leaves[k]
        hits = [c for c in cut if c == leaf or t.is_ancestor(c, leaf)]
        if len(hits) != 1:
            return False
    return True


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 25), st.floats(0, 1))
def test_random_cut_is_a_cut(seed, n, rate):
    t = random_tree(np.random.default_rng(seed), n)
    cut = random_cut(t, np.random.default_rng(seed), rate)
    assert list(cut) == sorted(cut) and 0 not in cut
    assert covers_each_leaf_once(t, cut)
    tg = cut_targets(t, cut)
    for k in range(t.num_classes):
        c = cut[tg[k]]
        assert c == t.leaves[k] or t.is_ancestor(c, t.leaves[k])


def test_rate_extremes():
    t = random_tree(np.random.default_rng(3), 30)
    rng = np.random.default_rng(0)
    assert random_cut(t, rng, 1.0) == t.children(0)
    assert random_cut(t, rng, 0.0) == tuple(sorted(t.leaves.tolist()))
    with pytest.raises(ValueError):
        random_cut(t, rng, 1.5)


def test_expansion_frequency_matches_one_minus_rate():
    # A binary tree of depth 5: 31 internal nodes.
    lines = [f"{'/'.join('x' + bin(i >> (5 - d))[2:].zfill(d) for d in range(1, 6))}/leaf{i}" for i in range(32)]
    t = Taxonomy.from_paths(lines)
    rng = np.random.default_rng(1)
    for rate in (0.1, 0.5, 0.8):
        reached = expanded = 0
        for _ in range(600):
            cut = set(random_cut(t, rng, rate))
            above = {a for c in cut for a in t.ancestors(c)}
            for v in t.internal[1:]:
                v = int(v)
                if v in cut or v in above:  # v was reached (its parent was expanded)
                    reached += 1
                    expanded += v in above
        p = 1 - rate
        sd = math.sqrt(p * (1 - p) / reached)
        assert abs(expanded / reached - p) < 4.5 * sd, (rate, expanded / reached)


def test_evaluation_cuts_distinct_reproducible():
    t = random_tree(np.random.default_rng(5), 80)
    cuts = evaluation_cuts(t, n=25, seed=3)
    assert len(cuts) == 25 and len(set(cuts)) == 25
    assert cuts == evaluation_cuts(t, n=25, seed=3)
    assert cuts != evaluation_cuts(t, n=25, seed=4)
    assert all(covers_each_leaf_once(t, c) for c in cuts)
    # 5 per rate, in rate order: rate 0.9 cuts are coarser (fewer nodes) on average
    sizes = [len(c) for c in cuts]
    assert np.mean(sizes[:5]) < np.mean(sizes[-5:])
    assert len(evaluation_cuts(t, n=7, seed=0)) == 7


def test_small_tree_warns_with_counts():
    t = Taxonomy.from_paths(["a/x", "a/y", "b"])  # cuts: {a,b} and {x,y,b} only
    with pytest.warns(UserWarning, match=r"found 2 distinct cuts of 25 asked"):
        cuts = evaluation_cuts(t, n=25, max_draws=200)
    assert sorted(cuts) == sorted([(1, 4), (2, 3, 4)])


def test_cut_targets_and_errors():
    t = small()
    assert cut_targets(t, ["A", "C", "b1", "e"]).tolist() == [0, 0, 1, 1, 2, 3]
    assert cut_targets(t, ("e", "b1", "C", "A")).tolist() == [3, 3, 2, 2, 1, 0]  # positions follow the tuple
    with pytest.raises(ValueError, match="class 'b1' \\(label 4\\) is not covered"):
        cut_targets(t, ["A", "C", "e"])
    with pytest.raises(ValueError, match="class 'c1' \\(label 2\\) is covered 2 times, by 'B', 'C'"):
        cut_targets(t, ["A", "B", "C", "e"])
    with pytest.raises(ValueError, match="root"):
        cut_targets(t, [0])
    with pytest.raises(ValueError, match="appears twice"):
        cut_targets(t, ["A", "A", "B", "e"])
    with pytest.raises(KeyError, match="zz"):
        validate_cut(t, ["zz"])
    assert validate_cut(t, ["A", "B", "e"]) == (1, 4, 9)


def test_level_cut():
    t = small()
    assert level_cut(t, 1) == (1, 4, 9)
    assert level_cut(t, 2) == (2, 3, 5, 8, 9)  # e is a shallower leaf
    assert level_cut(t, 3) == tuple(sorted(t.leaves.tolist()))
    with pytest.raises(ValueError):
        level_cut(t, 4)


def test_save_load_cuts(tmp_path):
    t = small()
    cuts = [(1, 4, 9), (1, 5, 8, 9)]
    p = tmp_path / "cuts.json"
    save_cuts(str(p), t, cuts)
    doc = json.loads(p.read_text())
    assert doc["cuts"] == [["A", "B", "e"], ["A", "C", "b1", "e"]]
    assert load_cuts(str(p), t) == cuts
    p.write_text(json.dumps([["A", "B", "e"], ["A", "e"]]))
    with pytest.raises(ValueError, match="cut 1: invalid cut: class 'c1'"):
        load_cuts(str(p), t)
    p.write_text(json.dumps({"cuts": [["A", "Q"]]}))
    with pytest.raises(ValueError, match="cut 0: unknown node 'Q'"):
        load_cuts(str(p), t)
    with pytest.raises(ValueError, match="cut 0"):
        save_cuts(str(p), t, [(1,)])


# ---------------------------------------------------------------- CLI
def test_cli_show_stats_convert(tmp_path, capsys):
    src = tmp_path / "tax.txt"
    src.write_text("\n".join(LINES) + "\n")
    assert main(["show", str(src)]) == 0
    out = capsys.readouterr().out
    assert "root\n  A\n    a1  [0]\n" in out and "      c2  [3]" in out
    assert main(["stats", str(src)]) == 0
    assert json.loads(capsys.readouterr().out)["leaves"] == 6
    dst = tmp_path / "out.txt"
    assert main(["convert", str(src), "-o", str(dst)]) == 0
    assert Taxonomy.from_paths(dst.read_text()) == small()
    assert main(["show", str(tmp_path / "nothing.bin")]) == 2
    assert "no such file" in capsys.readouterr().err
