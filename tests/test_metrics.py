"""Hierarchical metrics: hand-computed values, invariants, a brute-force oracle."""

import math

import numpy as np
import pytest
import torch

from hyptree.eval.metrics import HierarchicalMeter, hierarchical_metrics
from hyptree.tree import Taxonomy, evaluation_cuts

LINES = ["A/a1", "A/a2", "B/C/c1", "B/C/c2", "B/b1", "e"]  # unbalanced: e at depth 1, c* at depth 3


def small():
    return Taxonomy.from_paths(LINES)


def random_tree(rng, n=14):
    parent = [-1] + [int(rng.integers(0, i)) for i in range(1, n)]
    childless = [i for i in range(n) if i not in parent]
    return Taxonomy([f"n{i}" for i in range(n)], parent, list(rng.permutation(childless)))


def rows(t, specs):
    s = np.zeros((len(specs), t.num_nodes), dtype=np.float32)
    for i, spec in enumerate(specs):
        for name, v in spec.items():
            s[i, t.index(name)] = v
    return s


def test_hand_computed():
    t = small()
    s1 = {"B": 5, "A": 1, "C": 3, "b1": 1, "c1": 2, "c2": 1}
    scores = rows(
        t,
        [
            s1,  # label c1: everything right
            s1,  # label c2: root and B right, C wrong, leaf wrong
            {"e": 4, "A": 5, "a1": 1},  # label e: leaf right, root picks A -> inconsistent
            {"A": 2, "B": 1, "a1": 1, "a2": 3},  # label a2: everything right
        ],
    )
    labels = [2, 3, 5, 1]
    cuts = [["A", "C", "b1", "e"], ["a1", "a2", "B", "e"]]
    m = hierarchical_metrics(t, scores, labels, cuts)
    assert m["num_samples"] == 4
    assert m["LA"] == pytest.approx(75.0)
    assert m["HCA"] == pytest.approx(50.0)
    # internal nodes root, A, B, C: 3/4, 1/1, 2/2, 1/2
    assert m["node_accs"] == pytest.approx([75.0, 100.0, 100.0, 50.0])
    assert m["node_acc"] == pytest.approx(81.25)
    # level 1 {A,B,e}: 3/4; level 2 {a1,a2,C,b1,e}: 4/4; level 3 = leaves = LA
    assert m["depth_acc"] == pytest.approx([75.0, 100.0, 75.0])
    assert m["cut_acc"] == pytest.approx([75.0, 100.0])
    assert m["MTA"] == pytest.approx(87.5)


def test_no_cuts_gives_nan_mta_and_unseen_nodes_nan():
    t = small()
    m = hierarchical_metrics(t, rows(t, [{"A": 1, "a1": 1}]), [0])
    assert math.isnan(m["MTA"]) and m["cut_acc"] == []
    assert m["LA"] == 100.0 and m["HCA"] == 100.0
    assert m["node_accs"][0] == 100.0 and m["node_accs"][1] == 100.0
    assert math.isnan(m["node_accs"][2]) and math.isnan(m["node_accs"][3])
    assert m["node_acc"] == 100.0


@pytest.mark.parametrize("seed", range(4))
def test_perfect_scores(seed):
    t = random_tree(np.random.default_rng(seed), 25)
    labels = np.arange(t.num_classes).repeat(2)
    scores = np.zeros((len(labels), t.num_nodes), dtype=np.float32)
    for i, k in enumerate(labels):
        scores[i, t.path(k)] = 1.0
    cuts = evaluation_cuts(t, n=10, seed=seed)
    m = hierarchical_metrics(t, torch.from_numpy(scores), torch.from_numpy(labels), cuts)
    assert m["LA"] == m["HCA"] == m["MTA"] == m["node_acc"] == 100.0
    assert m["depth_acc"] == [100.0] * t.height


def brute_force(t, scores, labels, cuts):
    """Per-sample loops over the Taxonomy API only."""
    scores = np.asarray(scores, dtype=np.float64)
    n = len(labels)
    la = hca = 0
    node_ok = {int(i): [] for i in t.internal}
    depth_ok = np.zeros(t.height)
    cut_ok = np.zeros(len(cuts))
    leaves = list(t.leaves)
    for x, k in zip(scores, labels):
        leaf = leaves[k]
        pred_leaf = leaves[int(np.argmax(x[leaves]))]
        consistent = pred_leaf == leaf
        la += pred_leaf == leaf
        full = [0] + list(t.path(k))
        for par, child in zip(full[:-1], full[1:]):
            kids = list(t.children(par))
            ok = kids[int(np.argmax(x[kids]))] == child
            node_ok[par].append(ok)
            consistent &= ok
        hca += consistent
        for d in range(1, t.height + 1):
            level = [v for v in range(t.num_nodes) if t.depth[v] == d or (t.is_leaf(v) and t.depth[v] < d)]
            target = full[min(d, len(full) - 1)]
            depth_ok[d - 1] += level[int(np.argmax(x[level]))] == target
        for j, cut in enumerate(cuts):
            pred = cut[int(np.argmax(x[list(cut)]))]
            cut_ok[j] += pred == leaf or t.is_ancestor(pred, leaf)
    accs = [100 * np.mean(v) if v else math.nan for v in node_ok.values()]
    return {
        "LA": 100 * la / n,
        "HCA": 100 * hca / n,
        "node_accs": accs,
        "node_acc": float(np.nanmean(accs)),
        "depth_acc": list(100 * depth_ok / n),
        "cut_acc": list(100 * cut_ok / n),
        "MTA": float(np.mean(100 * cut_ok / n)),
    }


@pytest.mark.parametrize("seed", range(6))
def test_matches_brute_force_on_random_trees(seed):
    rng = np.random.default_rng(seed)
    t = random_tree(rng, int(rng.integers(5, 30)))
    n = 60
    labels = rng.integers(0, t.num_classes, n)
    # scores correlated with the truth so that accuracies are not all ~0
    scores = rng.normal(size=(n, t.num_nodes))
    for i, k in enumerate(labels):
        scores[i, t.path(k)] += rng.uniform(0, 2.5)
    cuts = evaluation_cuts(t, n=5, seed=seed, rates=(0.7, 0.3)) if t.num_classes > 2 else []
    with np.errstate(all="ignore"):
        want = brute_force(t, scores, labels, cuts)
    got = hierarchical_metrics(t, scores, labels, cuts)
    for key in ("LA", "HCA", "node_acc", "MTA"):
        if math.isnan(want[key]):
            assert math.isnan(got[key])
        else:
            assert got[key] == pytest.approx(want[key]), key
    assert got["depth_acc"] == pytest.approx(want["depth_acc"])
    assert got["cut_acc"] == pytest.approx(want["cut_acc"])
    assert np.allclose(got["node_accs"], want["node_accs"], equal_nan=True)
    assert got["HCA"] <= got["LA"]
    assert got["depth_acc"][-1] == pytest.approx(got["LA"])


@pytest.mark.parametrize("seed", range(5))
def test_hca_never_exceeds_la_on_random_scores(seed):
    rng = np.random.default_rng(seed)
    t = random_tree(rng, 20)
    scores = torch.randn(300, t.num_nodes, generator=torch.Generator().manual_seed(seed))
    labels = torch.from_numpy(rng.integers(0, t.num_classes, 300))
    m = hierarchical_metrics(t, scores, labels)
    assert 0 <= m["HCA"] <= m["LA"] <= 100


def test_streaming_equals_one_shot():
    rng = np.random.default_rng(7)
    t = random_tree(rng, 30)
    N = 257
    scores = torch.from_numpy(rng.normal(size=(N, t.num_nodes)).astype(np.float32))
    labels = torch.from_numpy(rng.integers(0, t.num_classes, N))
    cuts = evaluation_cuts(t, n=10, seed=1)
    whole = hierarchical_metrics(t, scores, labels, cuts)
    for _trial in range(3):
        meter = HierarchicalMeter(t, cuts)
        bounds = np.sort(rng.choice(np.arange(1, N), size=6, replace=False))
        for a, b in zip([0, *bounds], [*bounds, N]):
            meter.update(scores[a:b], labels[a:b])
        meter.update(scores[:0], labels[:0])  # empty batch is a no-op
        part = meter.compute()
        for key, v in whole.items():
            if isinstance(v, list):
                assert np.allclose(part[key], v, equal_nan=True), key
            elif isinstance(v, float) and math.isnan(v):
                assert math.isnan(part[key])
            else:
                assert part[key] == pytest.approx(v), key
    meter.reset()
    with pytest.raises(ValueError, match="no samples"):
        meter.compute()


def test_numpy_and_float64_torch_inputs_agree():
    rng = np.random.default_rng(2)
    t = random_tree(rng, 18)
    s = rng.normal(size=(50, t.num_nodes)).astype(np.float32)
    y = rng.integers(0, t.num_classes, 50)
    a = hierarchical_metrics(t, s, y)
    b = hierarchical_metrics(t, torch.from_numpy(s).double(), torch.from_numpy(y))
    assert a["LA"] == b["LA"] and a["HCA"] == b["HCA"] and a["depth_acc"] == b["depth_acc"]


def test_input_errors():
    t = small()
    with pytest.raises(ValueError, match=r"scores must be \(N, num_nodes=10\)"):
        hierarchical_metrics(t, np.zeros((3, 9)), [0, 1, 2])
    with pytest.raises(ValueError, match="labels must be class indices in 0..5"):
        hierarchical_metrics(t, np.zeros((2, 10)), [0, 6])
    with pytest.raises(ValueError, match=r"labels must be \(N,\)"):
        hierarchical_metrics(t, np.zeros((2, 10)), [0, 1, 2])
    with pytest.raises(ValueError, match="cut 1: invalid cut"):
        HierarchicalMeter(t, [["A", "B", "e"], ["A", "e"]])
