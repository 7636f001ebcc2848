"""Mistake measures and decoding against per-sample brute force (python sets and loops,
none of the batched tables), on generated trees of mixed depths and a ProTeCt tree.npy."""

import math

import numpy as np
import pytest
import torch
from test_taxonomy_io import NESTED, make_protect_tree

from hyptree.eval.decode import decode, sibling_probs, top_down
from hyptree.eval.metrics import HierarchicalMeter, hierarchical_metrics
from hyptree.eval.mistakes import node_heights
from hyptree.tree import Taxonomy
from hyptree.tree.io import read_protect_tree

KEYS = ("severity", "hdist@1", "hdist@5", "TIE", "hP", "hR", "hF1", "TD_LA", "TD_agree", "consistency", "num_mistakes")


def random_tree(rng, n):
    parent = [-1] + [int(rng.integers(0, i)) for i in range(1, n)]
    childless = [i for i in range(n) if i not in parent]
    return Taxonomy([f"n{i}" for i in range(n)], parent, list(rng.permutation(childless)))


def chain(t, v):
    """Root-excluded ancestors of node v, v included, as a list root-side first."""
    return [a for a in t.ancestors(v) if a != 0] + [v]


def height(t, v):
    kids = t.children(v)
    return 0 if not kids else 1 + max(height(t, c) for c in kids)


def lca(t, a, b):
    common = set(t.ancestors(a)) | {a}
    common &= set(t.ancestors(b)) | {b}
    return max(common, key=lambda v: t.depth[v])


def brute(t, scores, labels):
    """Per-sample loops over the definitions in hyptree.eval.mistakes / docs/metrics.md."""
    scores = np.asarray(scores, dtype=np.float64)
    leaves = [int(x) for x in t.leaves]
    sev, hd, tie, inter, npred, ntrue, td_ok, agree, cons = [], {1: [], 5: []}, [], 0, 0, 0, 0, 0, 0
    levels = [[v for v in range(t.num_nodes) if t.depth[v] == d or (t.is_leaf(v) and 0 < t.depth[v] < d)]
              for d in range(1, t.height + 1)]  # fmt: skip
    for s, y in zip(scores, labels):
        y = leaves[int(y)]
        order = sorted(range(len(leaves)), key=lambda k: (-s[leaves[k]], k))
        p = leaves[order[0]]
        m = lca(t, p, y)
        if p != y:
            sev.append(height(t, m))
        for k in (1, 5):
            if k <= len(leaves):
                hd[k].append(np.mean([height(t, lca(t, leaves[j], y)) for j in order[:k]]))
        tie.append(len(set(chain(t, p)) ^ set(chain(t, y))))  # edges on the p - y path
        inter += len(set(chain(t, p)) & set(chain(t, y)))
        npred, ntrue = npred + len(chain(t, p)), ntrue + len(chain(t, y))
        v = 0
        while not t.is_leaf(v):
            kids = list(t.children(v))
            v = max(kids, key=lambda c: (s[c], -c))
        td_ok += v == y
        agree += v == p
        picks = [max(lv, key=lambda c: (s[c], -c)) for lv in levels]
        cons += all(q == p or t.is_ancestor(q, p) for q in picks)
    n = len(labels)
    hp, hr = 100 * inter / npred, 100 * inter / ntrue
    return {
        "severity": float(np.mean(sev)) if sev else math.nan,
        "hdist@1": float(np.mean(hd[1])),
        "hdist@5": float(np.mean(hd[5])) if hd[5] else math.nan,
        "TIE": float(np.mean(tie)),
        "hP": hp,
        "hR": hr,
        "hF1": 2 * hp * hr / (hp + hr),
        "TD_LA": 100 * td_ok / n,
        "TD_agree": 100 * agree / n,
        "consistency": 100 * cons / n,
        "num_mistakes": len(sev),
    }


def check(t, scores, labels):
    got = hierarchical_metrics(t, scores, labels)
    want = brute(t, scores, labels)
    for key in KEYS:
        if isinstance(want[key], float) and math.isnan(want[key]):
            assert math.isnan(got[key]), key
        else:
            assert got[key] == pytest.approx(want[key], rel=1e-12, abs=1e-12), key
    return got


@pytest.mark.parametrize("seed", range(6))
def test_random_trees_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    t = random_tree(rng, int(rng.integers(8, 40)))
    while len(set(t.depth[t.leaves])) < 3:  # leaves at three depths or more
        t = random_tree(rng, int(rng.integers(8, 40)))
    n = 120
    # half random, half near the truth: both many mistakes and many hits
    scores = rng.normal(size=(n, t.num_nodes))
    labels = rng.integers(0, t.num_classes, n)
    for i in range(0, n, 2):
        for v in chain(t, int(t.leaves[labels[i]])):
            scores[i, v] += 2.0
    got = check(t, torch.from_numpy(scores.astype(np.float32)), torch.from_numpy(labels))
    assert 0 < got["num_mistakes"] < n


def test_protect_tree_fixture_and_small_trees(tmp_path):
    p = str(tmp_path / "tree.npy")
    make_protect_tree(p, NESTED)
    t = read_protect_tree(p)
    rng = np.random.default_rng(3)
    check(t, rng.normal(size=(200, t.num_nodes)).astype(np.float32), rng.integers(0, t.num_classes, 200))
    few = Taxonomy.from_paths(["A/a1", "A/a2", "b"])  # 3 classes: hdist@5 undefined
    got = check(few, rng.normal(size=(30, few.num_nodes)), rng.integers(0, 3, 30))
    assert math.isnan(got["hdist@5"])


def test_perfect_scores_and_heights():
    t = Taxonomy.from_paths(["A/a1", "A/a2", "B/C/c1", "B/C/c2", "B/b1", "e"])
    assert [int(node_heights(t)[i]) for i in range(t.num_nodes)] == [height(t, i) for i in range(t.num_nodes)]
    assert node_heights(t)[t.index("B")] == 2 and node_heights(t)[t.index("A")] == 1 and node_heights(t)[0] == 3
    labels = np.arange(t.num_classes)
    scores = np.zeros((t.num_classes, t.num_nodes), dtype=np.float32)
    for i, y in enumerate(labels):
        scores[i, chain(t, int(t.leaves[y]))] = 1.0
    m = hierarchical_metrics(t, scores, labels)
    assert math.isnan(m["severity"]) and m["hdist@1"] == 0 and m["TIE"] == 0 and m["num_mistakes"] == 0
    assert m["hP"] == m["hR"] == m["hF1"] == m["TD_LA"] == m["TD_agree"] == m["consistency"] == 100.0
    # one hand-checked mistake: truth c1 (depth 3), prediction b1 (depth 2) -> LCA B, height 2
    s = np.zeros((1, t.num_nodes), dtype=np.float32)
    s[0, [t.index("B"), t.index("b1")]] = 1.0
    m = hierarchical_metrics(t, s, [t.class_index("c1")])
    assert (m["severity"], m["TIE"], m["hP"], m["hR"]) == (2, 3, 50.0, pytest.approx(100 / 3))
    assert m["TD_LA"] == 0 and m["TD_agree"] == 100.0 and m["consistency"] == 100.0


def test_streaming_equals_all_at_once():
    rng = np.random.default_rng(11)
    t = random_tree(rng, 35)
    n = 301
    scores = torch.from_numpy(rng.normal(size=(n, t.num_nodes)).astype(np.float32))
    labels = torch.from_numpy(rng.integers(0, t.num_classes, n))
    whole = hierarchical_metrics(t, scores, labels)
    meter = HierarchicalMeter(t)
    bounds = np.sort(rng.choice(np.arange(1, n), size=7, replace=False))
    for a, b in zip([0, *bounds], [*bounds, n]):
        meter.update(scores[a:b], labels[a:b])
    part = meter.compute()
    for key in KEYS:
        assert part[key] == whole[key], key  # integer sums: exactly equal
    meter.reset()
    meter.update(scores[:5], labels[:5])
    assert meter.compute()["num_samples"] == 5 and meter.mistakes.n == 5


def test_decode_against_loops():
    rng = np.random.default_rng(5)
    t = random_tree(rng, 25)
    s = rng.normal(size=(40, t.num_nodes)).astype(np.float32)
    dec = decode(t, s, k=4)
    probs = sibling_probs(t, torch.from_numpy(s)).numpy()
    assert np.array_equal(dec.top_down, top_down(t, torch.from_numpy(s)).numpy())
    for i in range(len(s)):
        leaf_scores = s[i, t.leaves]
        assert dec.flat[i] == int(np.argmax(leaf_scores))
        assert list(dec.topk[i]) == list(np.argsort(-leaf_scores)[:4])
        e = np.exp(leaf_scores - leaf_scores.max())
        assert np.allclose(dec.topk_probs[i], np.sort(e / e.sum())[::-1][:4], atol=1e-6)
        for v in range(1, t.num_nodes):
            sib = list(t.children(int(t.parent[v])))
            z = np.exp(s[i, sib] - s[i, sib].max())
            assert probs[i, v] == pytest.approx(z[sib.index(v)] / z.sum(), abs=1e-6)
    with pytest.raises(ValueError, match="num_nodes"):
        decode(t, s[:, :-1])


def test_results_table_metric_selection(tmp_path, capsys):
    import fixtures_runs as F

    from hyptree.eval import results as RS
    from hyptree.eval import tables as R

    assert RS.select_metrics(["default"]) == list(R.METRICS)
    assert RS.select_metrics(["la", "hF1", "severity", "LA"]) == ["LA", "hF1", "severity"]
    assert RS.select_metrics(["all"]) == list(R.METRICS) + [m for m in KEYS if m != "num_mistakes"]
    t = Taxonomy.from_paths(["A/a1", "A/a2", "B/C/c1", "B/C/c2", "B/b1", "e"])
    rng = np.random.default_rng(0)
    m = hierarchical_metrics(t, rng.normal(size=(40, t.num_nodes)), rng.integers(0, 6, 40))
    assert set(KEYS) <= set(m) and set(R.ALL_METRICS) <= set(m)  # the table knows every scalar
    root = tmp_path / "out" / "fewshot" / "toy" / "shots_4" / "MaPLeHypTree" / "hyptree"
    for seed, sev in ((1, 1.5), (2, 2.5)):
        F.write_results(root / f"seed{seed}", seed=seed, metrics={"LA": 50.0, "severity": sev, "hF1": 70.0 + seed})
    assert RS.main([str(tmp_path / "out"), "--metrics", "LA", "severity", "hF1"]) == 0
    out = capsys.readouterr().out
    assert "| LA | severity | hF1 |" in out and "| 50.00 ± 0.00 | 2.00 ± 0.50 | 71.50 ± 0.50 |" in out
    with pytest.raises(SystemExit):
        RS.main([str(tmp_path / "out"), "--metrics", "LA", "sevrity"])
    assert "unknown metric 'sevrity'" in capsys.readouterr().err
