"""ProTeCt losses against per-sample loops with F.cross_entropy."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hyptree.loss.protect import leaf_loss, node_centric_loss, tree_cut_loss
from hyptree.tree import ProTeCtIndex, Taxonomy, random_cut


def random_tree(rng, n=14):
    parent = [-1] + [int(rng.integers(0, i)) for i in range(1, n)]
    childless = [i for i in range(n) if i not in parent]
    return Taxonomy([f"n{i}" for i in range(n)], parent, list(rng.permutation(childless)))


def data(seed, n_nodes=20, N=16):
    rng = np.random.default_rng(seed)
    t = random_tree(rng, n_nodes)
    g = torch.Generator().manual_seed(seed)
    scores = (3 * torch.randn(N, t.num_nodes, generator=g, dtype=torch.float64)).requires_grad_()
    labels = torch.from_numpy(rng.integers(0, t.num_classes, N))
    return t, scores, labels


def brute_node_losses(t, scores, labels):
    """{(sample, internal node): CE over the node's children} from a loop."""
    out = {}
    for i, k in enumerate(labels.tolist()):
        full = [0] + t.path(k).tolist()
        for par, child in zip(full[:-1], full[1:]):
            kids = list(t.children(par))
            out[(i, par)] = F.cross_entropy(scores[i, kids][None], torch.tensor([kids.index(child)]))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_node_centric_sample_average(seed):
    t, s, y = data(seed)
    per = brute_node_losses(t, s, y)
    want = torch.stack([torch.stack([v for (i, _), v in per.items() if i == n]).mean() for n in range(len(y))]).mean()
    got = node_centric_loss(t, s, y)
    assert got.dtype == torch.float32
    assert torch.allclose(got.double(), want, rtol=1e-5, atol=1e-6)
    (g_got,) = torch.autograd.grad(got, s)
    (g_want,) = torch.autograd.grad(want, s)
    assert torch.allclose(g_got, g_want.to(g_got.dtype), atol=1e-6)
    assert torch.isfinite(g_got).all() and g_got.abs().sum() > 0


@pytest.mark.parametrize("seed", range(3))
def test_node_centric_node_average_is_protects_reduction(seed):
    t, s, y = data(seed)
    per = brute_node_losses(t, s, y)
    nodes = sorted({p for _, p in per})
    want = torch.stack([torch.stack([v for (_, p), v in per.items() if p == q]).mean() for q in nodes]).mean()
    got = node_centric_loss(t, s, y, average="node")
    assert torch.allclose(got.double(), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="average"):
        node_centric_loss(t, s, y, average="batch")


@pytest.mark.parametrize("seed", range(4))
def test_tree_cut_loss(seed):
    t, s, y = data(seed)
    cut = random_cut(t, np.random.default_rng(seed), 0.4)
    losses = []
    for i, k in enumerate(y.tolist()):
        leaf = int(t.leaves[k])
        tgt = [j for j, c in enumerate(cut) if c == leaf or t.is_ancestor(c, leaf)]
        assert len(tgt) == 1
        losses.append(F.cross_entropy(s[i, list(cut)][None], torch.tensor(tgt)))
    want = torch.stack(losses).mean()
    got = tree_cut_loss(t, s, y, cut)
    assert torch.allclose(got.double(), want, rtol=1e-5, atol=1e-6)
    (g,) = torch.autograd.grad(got, s)
    outside = [v for v in range(t.num_nodes) if v not in cut]
    assert g[:, outside].abs().max() == 0 and g[:, list(cut)].abs().sum() > 0
    names = [t.names[c] for c in cut]
    assert torch.allclose(tree_cut_loss(t, s, y, names), got)


def test_leaf_loss_and_leaf_cut_equivalence():
    t, s, y = data(11)
    want = torch.stack([F.cross_entropy(s[i, list(t.leaves)][None], y[i : i + 1]) for i in range(len(y))]).mean()
    got = leaf_loss(t, s, y)
    assert torch.allclose(got.double(), want, rtol=1e-5)
    leaf_cut = tuple(t.leaves.tolist())  # the cut of all leaves in label order = leaf loss
    assert torch.allclose(tree_cut_loss(t, s, y, leaf_cut), got)


def test_half_precision_scores_are_computed_in_float32():
    t, s, y = data(4)
    h = s.detach().half().requires_grad_()
    for fn in (
        lambda: node_centric_loss(t, h, y),
        lambda: leaf_loss(t, h, y),
        lambda: tree_cut_loss(t, h, y, t.children(0)),
    ):
        out = fn()
        assert out.dtype == torch.float32 and torch.isfinite(out)
        (g,) = torch.autograd.grad(out, h)
        assert g.dtype == torch.float16 and torch.isfinite(g).all()


def test_single_child_chain_gives_zero_loss_and_finite_grad():
    t = Taxonomy.from_paths(["a/b/c", "a/b/d", "e/f"])  # e has one child
    s = torch.randn(3, t.num_nodes, requires_grad=True)
    y = torch.tensor([2, 2, 2])  # class f: path e -> f, root picks e, e's only child f
    loss = node_centric_loss(t, s, y)
    want = torch.stack([F.cross_entropy(s[i, [1, t.index("e")]][None], torch.tensor([1])) for i in range(3)])
    assert torch.allclose(loss, (want / 2).mean())  # mean over 2 steps, the 2nd is CE over one child = 0
    (g,) = torch.autograd.grad(loss, s)
    assert torch.isfinite(g).all() and g[:, t.index("f")].abs().max() == 0


def test_index_tables_cached_and_errors():
    t, s, y = data(2)
    assert ProTeCtIndex.of(t) is ProTeCtIndex.of(t)
    idx = ProTeCtIndex.of(t)
    assert idx.on("cpu") is idx
    with pytest.raises(ValueError, match="scores must be"):
        node_centric_loss(t, s[:, :-1], y)
    with pytest.raises(ValueError, match="class indices"):
        leaf_loss(t, s, y + t.num_classes)
    with pytest.raises(ValueError, match="invalid cut"):
        tree_cut_loss(t, s, y, (int(t.leaves[0]),))  # covers one class only


def test_tree_tables_move_every_tensor_and_cache_the_copy():
    """``on(device)`` (shared by ProTeCtIndex and the decode tables): tensors, tensor lists and
    nested tables move; the copy is cached; the CPU tables are themselves on the CPU."""
    from hyptree.eval.decode import DecodeTables

    t = Taxonomy.from_paths(["a/b/x", "a/y", "c/z/w", "c/v"])
    idx = ProTeCtIndex.of(t)
    assert idx.on("cpu") is idx
    meta = idx.on("meta")
    assert meta is idx.on("meta") and meta is not idx
    assert meta.child_ids.device.type == "meta" and meta.child_ids.shape == idx.child_ids.shape
    assert all(c.device.type == "meta" for c in meta.level_cuts)
    assert meta.num_nodes == idx.num_nodes and meta.taxonomy is t
    dec = DecodeTables.of(t).on("meta")
    assert dec.index is meta and dec.row_of.device.type == "meta"
