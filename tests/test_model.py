"""HierarchicalCLIP and the objective on a tiny CLIP (CPU)."""

import math

import numpy as np
import pytest
import torch
from helpers import LINES, make_model

from hyptree.geometry import lorentz
from hyptree.geometry.curvatures import Curvatures
from hyptree.loss.objective import (
    HierarchicalObjective,
    ObjectiveSettings,
    angle_contrastive_loss,
    einstein_midpoint,
    gather_paths,
    mmd_loss,
)
from hyptree.tree import Taxonomy


# unbalanced depths: leaves at depth 2 and 3
@pytest.fixture(scope="module")
def taxonomy():
    return Taxonomy.from_paths(LINES)


def images(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g)


@pytest.mark.parametrize("backbone", ["coop", "maple", "promptsrc"])
@pytest.mark.parametrize("preset", ["vanilla", "hyptree"])
def test_node_scores_shape_and_one_vision_pass(taxonomy, backbone, preset):
    model = make_model(taxonomy, backbone, preset)
    x = images(3)
    before = model.vision_tower.calls
    s = model.node_scores(x)
    assert s.shape == (3, taxonomy.num_nodes)
    assert model.vision_tower.calls == before + 1
    out = model.loss(x, torch.tensor([0, 3, 5]))
    assert model.vision_tower.calls == before + 2  # one prompted pass per training step
    assert torch.isfinite(out["total"])


def test_node_score_independent_of_label_set(taxonomy):
    """s(image, n) must not depend on which other nodes are scored."""
    model = make_model(taxonomy)
    model.eval()
    x = images(2)
    with torch.no_grad():
        full = model.node_scores(x)
        # score the subtree of the vehicle leaves only: same columns, same values
        sub = taxonomy.subtree(["sedan", "boat"])
        model.set_taxonomy(sub)
        part = model.node_scores(x)
        model.set_taxonomy(taxonomy)
    for node in ("vehicle", "car", "sedan", "boat"):
        np.testing.assert_allclose(part[:, sub.index(node)], full[:, taxonomy.index(node)], rtol=1e-5, atol=1e-5)


def test_precomputed_text_gives_same_scores(taxonomy):
    model = make_model(taxonomy).eval()
    x = images(2)
    with torch.no_grad():
        text = model.precompute_text()
        np.testing.assert_allclose(model.node_scores(x, text), model.node_scores(x), rtol=1e-6)


def test_only_prompts_fusion_and_curvatures_train(taxonomy):
    model = make_model(taxonomy)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable, "nothing to train"
    assert all(n.startswith(("prompt_learner.", "fusion.", "objective.curvatures.")) for n in trainable), trainable
    assert any(n.startswith("fusion.") for n in trainable)
    assert any(n.startswith("objective.curvatures.") for n in trainable)
    out = model.loss(images(4), torch.tensor([0, 1, 2, 3]))
    out["total"].backward()
    for name, p in model.named_parameters():
        if not p.requires_grad:
            assert p.grad is None, name
    assert all(model.get_parameter(n).grad is not None for n in trainable)


@pytest.mark.parametrize(
    "preset,terms",
    [
        ("vanilla", {"leaf"}),
        ("protect", {"cut", "node"}),
        ("hyptree", {"cut", "node", "text_ent", "image_ent", "cross"}),
    ],
)
def test_preset_terms_and_total(taxonomy, preset, terms):
    model = make_model(taxonomy, preset=preset)
    out = model.loss(images(4), torch.tensor([0, 2, 4, 5]))
    assert terms <= set(out)
    s = model.objective.settings
    if preset == "vanilla":
        expected = out["leaf"]
    elif preset == "protect":
        expected = s.w_cut * out["cut"] + s.lam * out["node"]
    else:
        expected = (
            s.w_cut * out["cut"] + s.lam * out["node"] + s.alpha * (out["text_ent"] + out["image_ent"] + out["cross"])
        )
    torch.testing.assert_close(out["total"], expected)


@pytest.mark.parametrize("backbone", ["coop", "maple", "promptsrc"])
@pytest.mark.parametrize(
    "preset,mode,cross",
    [
        ("vanilla", "intermediate", "entailment"),
        ("protect", "intermediate", "entailment"),
        ("hyptree", "intermediate", "entailment"),
    ],
)
def test_training_decreases_loss(taxonomy, backbone, preset, mode, cross):
    _train_and_check(taxonomy, backbone, preset, mode, cross)


@pytest.mark.parametrize(
    "mode,cross",
    [
        ("euclidean", "entailment"),
        ("shared", "entailment"),
        ("separate", "entailment"),
        ("intermediate", "angle"),
        ("intermediate", "mmd"),
        ("euclidean", "angle"),
    ],
)
def test_training_decreases_loss_every_mode(taxonomy, mode, cross):
    _train_and_check(taxonomy, "maple", "hyptree", mode, cross)


def _train_and_check(taxonomy, backbone, preset, mode, cross, steps=8):
    model = make_model(taxonomy, backbone, preset, **{"CURVATURE.MODE": mode, "ALIGN.CROSS": cross})
    # a fixed training cut so the loss is comparable across steps
    model.objective.settings.cut_rate = 0.0
    # PromptSRC's consistency terms (weights 25/10) have steep gradients: smaller steps
    lr = 0.002 if backbone == "promptsrc" else 0.05
    opt = torch.optim.SGD(model.trainable_parameters(), lr=lr, momentum=0.9)
    x, y = images(6, seed=1), torch.tensor([0, 1, 2, 3, 4, 5])
    losses = []
    for _ in range(steps):
        out = model.loss(x, y)
        assert all(torch.isfinite(v).all() for v in out.values()), out
        opt.zero_grad()
        out["total"].backward()
        for p in model.trainable_parameters():
            assert p.grad is None or torch.isfinite(p.grad).all()
        opt.step()
        losses.append(out["total"].item())
    assert losses[-1] < losses[0], losses


def test_image_tree_ablation_and_pass_through_flags(taxonomy):
    flat = make_model(taxonomy, IMAGE_TREE=False)
    assert flat.fusion is None and flat.keep_layers == ()
    raw = make_model(taxonomy, PASS_THROUGH=False)
    full = make_model(taxonomy)
    x = images(2)
    with torch.no_grad():
        assert not torch.allclose(raw.node_scores(x), full.node_scores(x))


def test_autocast_losses_finite(taxonomy):
    model = make_model(taxonomy)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model.loss(images(2), torch.tensor([1, 4]))
    except RuntimeError as e:  # pragma: no cover - CPU without bf16 autocast kernels
        pytest.skip(f"bf16 autocast unsupported here: {e}")
    assert torch.isfinite(out["total"])
    assert out["total"].dtype == torch.float32


# ---------------------------------------------------------------- objective pieces


def test_gather_paths_shared_and_per_sample():
    feats = torch.arange(12.0).reshape(4, 3)
    paths = torch.tensor([[1, 2], [3, 0]])
    assert torch.equal(gather_paths(feats, paths), feats[paths])
    per = torch.stack([feats, feats + 100])
    got = gather_paths(per, paths)
    assert torch.equal(got[1, 0], feats[3] + 100) and torch.equal(got[0, 1], feats[2])


def test_padding_never_enters_alignment(taxonomy):
    """Shallow leaves' padded path entries must not change the alignment terms."""
    settings = ObjectiveSettings(preset="hyptree")
    obj = HierarchicalObjective(taxonomy, settings, Curvatures("separate", c0=0.5))
    g = torch.Generator().manual_seed(0)
    text = torch.randn(taxonomy.num_nodes, 8, generator=g)
    image = torch.randn(2, taxonomy.num_nodes, 8, generator=g)
    labels = torch.tensor([taxonomy.class_index("cat"), taxonomy.class_index("boat")])  # depth-2 leaves
    a = obj.alignment(labels, text, image)
    # change the feature of the node that padding would point at (node 0, the root)
    text2, image2 = text.clone(), image.clone()
    text2[0] = 1e3
    image2[:, 0] = -1e3
    b = obj.alignment(labels, text2, image2)
    for k in ("text_ent", "image_ent", "cross"):
        torch.testing.assert_close(a[k], b[k])


def test_entailment_cross_zero_when_image_inside_text_cone(taxonomy):
    # the image scale is larger, so an image along its node's text direction lies further
    # out on the text point's axis: inside its cone (an equal scale would put both on the
    # same point, where the exterior angle is undefined)
    settings = ObjectiveSettings(preset="hyptree", scale_text=2.0, scale_image=3.0)
    obj = HierarchicalObjective(taxonomy, settings, Curvatures("shared", c0=0.5))
    g = torch.Generator().manual_seed(0)
    text = torch.randn(taxonomy.num_nodes, 8, generator=g)
    labels = torch.arange(taxonomy.num_classes)
    image = text.unsqueeze(0).expand(len(labels), -1, -1).clone()
    assert obj.alignment(labels, text, image)["cross"].item() == pytest.approx(0.0, abs=1e-6)
    image = -image
    assert obj.alignment(labels, text, image)["cross"].item() > 0.1


def test_angle_loss_prefers_aligned_pairs():
    g = torch.Generator().manual_seed(0)
    t = torch.randn(5, 6, generator=g)
    t = 2.0 * t / t.norm(dim=-1, keepdim=True)
    x = lorentz.exp_map0(t, 0.5)
    aligned = lorentz.exp_map0(t * 2.0, 0.5)  # same directions, further out: alpha ~ 0
    shuffled = aligned[torch.tensor([1, 2, 3, 4, 0])]
    ids = torch.arange(5)
    good = angle_contrastive_loss(lorentz.exterior_angle(x[:, None], aligned[None], 0.5), ids, 0.07)
    bad = angle_contrastive_loss(lorentz.exterior_angle(x[:, None], shuffled[None], 0.5), ids, 0.07)
    assert good < 0.05 < bad
    # a node seen twice in the batch: both of its images are positives (soft target); the
    # ideal configuration reaches the bound, the target's entropy: 2 rows of 5 cost log 2,
    # for each of the two similarities
    t2 = t.clone()
    t2[1] = t2[0]
    x2, y2 = lorentz.exp_map0(t2, 0.5), lorentz.exp_map0(2.0 * t2, 0.5)
    alpha = lorentz.exterior_angle(x2[:, None], y2[None], 0.5)
    loss = angle_contrastive_loss(alpha, torch.tensor([0, 0, 1, 2, 3]), 0.07)
    assert loss.item() == pytest.approx(2 * 2 / 5 * math.log(2), abs=1e-3)


def test_mmd_zero_for_identical_sets_and_positive_otherwise():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, 4, generator=g)
    assert mmd_loss(x, x.clone(), (1.0, 2.0)).abs().item() < 1e-6
    assert mmd_loss(x, x + 1.5, (1.0, 2.0)).item() > 0.05
    # brute-force oracle of the V-statistic
    y = torch.randn(7, 4, generator=g)
    k = lambda a, b: sum(torch.exp(-((a - b) ** 2).sum() / (2 * s * s)) for s in (1.0, 2.0))  # noqa: E731
    kxx = sum(k(a, b) for a in x for b in x) / 400
    kyy = sum(k(a, b) for a in y for b in y) / 49
    kxy = sum(k(a, b) for a in x for b in y) / 140
    torch.testing.assert_close(mmd_loss(x, y, (1.0, 2.0)), kxx + kyy - 2 * kxy, rtol=1e-4, atol=1e-6)


def test_einstein_midpoint_of_two_points_is_geodesic_midpoint():
    c = 0.7
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, dtype=torch.float64, generator=g)
    m = einstein_midpoint(x, c)
    d0, d1 = lorentz.dist(m, x[0], c), lorentz.dist(m, x[1], c)
    total = lorentz.dist(x[0], x[1], c)
    torch.testing.assert_close(d0, d1)
    torch.testing.assert_close(d0 + d1, total)
    single = einstein_midpoint(x[:1], c)
    torch.testing.assert_close(single, x[0])
