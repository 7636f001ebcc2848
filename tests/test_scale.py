"""Cost that grows gently with the taxonomy (issue 16): the length-grouped and chunked text
pass, the factorised image-tree scores and the vanilla leaf-only text pass equal the plain
padded / materialised computations, in float64, values and gradients."""

import numpy as np
import pytest
import torch
from helpers import LINES, make_model
from torch import nn

from bench.per_node import keep_float64
from bench.scale import padded_materialised_loss
from hyptree.model.fusion import TextGuidedSelection
from hyptree.model.loading import tiny_clip
from hyptree.model.prompts import build_prompt_learner
from hyptree.model.towers import TextTower
from hyptree.run.config import check_config, default_config
from hyptree.tree import Taxonomy

# names of very different token counts, so the prompts fall into several length groups
NAMES = [
    "cat",
    "sparrow hawk",
    "a",
    "transportation (roads, parking, bridges, boats, airports, etc.)",
    "red fox",
    "b c",
]


@pytest.fixture(autouse=True)
def float64():
    """CLIP's LayerNorm and the model's ``.float()`` keep float64 tensors as they are."""
    with keep_float64():
        yield


def _double_clip(layers=3):
    return tiny_clip(transformer_layers=layers, seed=0).double()


def _grads(params):
    return [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in params]


def _text_pass(tower, learner, weights, **kw):
    learner.zero_grad(set_to_none=True)
    out = learner()
    feats = tower(out.token_embeds, out.tokens, deep_prompts=out.text_deep, **kw)
    (feats * weights).sum().backward()
    return feats.detach(), _grads([p for p in learner.parameters() if p.requires_grad])


@pytest.mark.parametrize("backbone", ["coop", "maple", "promptsrc"])
def test_length_grouped_text_pass_equals_the_padded_pass(backbone):
    clip_model = _double_clip()
    options = {"maple": dict(depth=3), "promptsrc": dict(depth_text=3, depth_vision=0), "coop": dict(n_ctx=4)}
    torch.manual_seed(0)
    learner = build_prompt_learner(backbone, clip_model, NAMES, **options[backbone]).double()
    tower = TextTower(clip_model)
    eot = learner.tokens.argmax(-1)
    assert len(set(eot.tolist())) >= 3  # several groups, so the regrouping is exercised
    weights = torch.randn(len(NAMES), clip_model.text_projection.shape[1], dtype=torch.float64)
    grouped, g_grouped = _text_pass(tower, learner, weights)
    padded, g_padded = _text_pass(tower, learner, weights, truncate=False)
    torch.testing.assert_close(grouped, padded, rtol=1e-10, atol=1e-12)
    for a, b in zip(g_grouped, g_padded):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # the prefix-shared pass: SOS + context computed once, each prompt's own tokens attend to it
    out = learner()
    assert out.shared == 1 + len(learner._middle) and out.shared < int(eot.min())
    rows = out.token_embeds[:, : out.shared]
    torch.testing.assert_close(rows, rows[:1].expand_as(rows), rtol=0, atol=0)  # really shared
    calls = []
    encode_shared = tower._encode_shared
    tower._encode_shared = lambda *a: calls.append(len(a[1])) or encode_shared(*a)
    shared, g_shared = _text_pass(tower, learner, weights, shared=out.shared)
    assert sum(calls) == len(NAMES)  # every prompt went through the shared-prefix pass
    torch.testing.assert_close(shared, padded, rtol=1e-10, atol=1e-12)
    for a, b in zip(g_shared, g_padded):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    chunked, g_chunked = _text_pass(tower, learner, weights, shared=out.shared, chunk=2)
    torch.testing.assert_close(chunked, padded, rtol=1e-10, atol=1e-12)
    for a, b in zip(g_chunked, g_padded):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # a brute-force oracle: each prompt alone, cut right after its own EOT
    for i, e in enumerate(eot.tolist()):
        alone = tower(out.token_embeds[i : i + 1, : e + 1], out.tokens[i : i + 1, : e + 1], out.text_deep)
        torch.testing.assert_close(alone[0].detach(), grouped[i], rtol=1e-10, atol=1e-12)


def test_checkpointed_chunks_give_the_same_features_and_gradients():
    clip_model = _double_clip()
    torch.manual_seed(1)
    learner = build_prompt_learner("maple", clip_model, NAMES * 3, depth=3).double()
    tower = TextTower(clip_model)
    weights = torch.randn(len(NAMES) * 3, clip_model.text_projection.shape[1], dtype=torch.float64)
    plain, g_plain = _text_pass(tower, learner, weights)
    chunked, g_chunked = _text_pass(tower, learner, weights, chunk=2)
    torch.testing.assert_close(chunked, plain, rtol=1e-12, atol=1e-13)
    for a, b in zip(g_chunked, g_plain):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)
    with torch.no_grad():  # no graph: chunks without checkpointing
        out = learner()
        torch.testing.assert_close(tower(out.token_embeds, out.tokens, out.text_deep, chunk=4), plain)
    with pytest.raises(ValueError, match="chunk"):
        tower(out.token_embeds, out.tokens, out.text_deep, chunk=-1)


def _selection(dim, value):
    module = TextGuidedSelection(dim).double()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.3)
    if value and getattr(module, "v_proj", None) is None:  # a learnable V (test-local if absent)
        module.v_proj = nn.Linear(dim, dim).double()
    if value:
        with torch.no_grad():
            module.v_proj.weight.copy_(torch.randn(dim, dim, generator=g, dtype=torch.float64) / dim**0.5)
            module.v_proj.bias.copy_(torch.randn(dim, generator=g, dtype=torch.float64))
    return module


@pytest.mark.parametrize("value", [False, True], ids=["identity-V", "learnable-V"])
def test_factorised_cosines_equal_the_materialised_ones(value):
    dim, nodes, batch, layers = 6, 7, 3, 3
    module = _selection(dim, value)
    g = torch.Generator().manual_seed(5)
    text = torch.randn(nodes, dim, generator=g, dtype=torch.float64, requires_grad=True)
    tokens = torch.randn(batch, layers, dim, generator=g, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(batch, nodes, generator=g, dtype=torch.float64)
    params = [text, tokens, *module.parameters()]

    def materialised():
        mixed = module(text, tokens)  # (B, N, D)
        if value:  # V applied after the mix: the definition, not the factorised order
            assert torch.allclose(
                mixed, torch.einsum("bnm,bmd->bnd", module.attention(text, tokens), module.v_proj(tokens))
            )
        return (nn.functional.normalize(mixed, dim=-1) * nn.functional.normalize(text, dim=-1)).sum(-1)

    results = []
    for fn in (materialised, lambda: module.cosines(text, tokens)):
        for p in params:
            p.grad = None
        cos = fn()
        (cos * upstream).sum().backward()
        results.append((cos.detach(), [p.grad.clone() for p in params]))
    (c_ref, g_ref), (c_fac, g_fac) = results
    torch.testing.assert_close(c_fac, c_ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(g_fac, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # path nodes only: the same rows as the materialised mix
    ids = torch.tensor([[0, 2, 5], [1, 1, 6], [3, 4, 0]])
    weights = module.attention(text, tokens)
    full = module.mix(weights, tokens)
    torch.testing.assert_close(
        module.mix(weights, tokens, ids), torch.gather(full, 1, ids[..., None].expand(-1, -1, dim))
    )


@pytest.mark.parametrize(
    "preset, value", [("hyptree", False), ("hyptree", True), ("protect", False), ("vanilla", False)]
)
def test_the_new_step_equals_the_padded_materialised_step_in_float64(preset, value):
    taxonomy = Taxonomy.from_paths(LINES + ["vehicle/transportation (roads, parking, bridges, boats)"])
    model = make_model(taxonomy, "maple", preset).double()
    if model.fusion is not None:
        model.fusion.load_state_dict(_selection(model.fusion.dim, value).state_dict(), strict=False)
        if value:
            model.fusion.v_proj = _selection(model.fusion.dim, True).v_proj
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    labels = torch.tensor([0, 3, 4, 6])
    params = [p for p in model.parameters() if p.requires_grad]
    state = model.objective.rng.bit_generator.state
    results = []
    for fn in (lambda: padded_materialised_loss(model, images, labels), lambda: model.loss(images, labels)["total"]):
        model.objective.rng = np.random.default_rng()
        model.objective.rng.bit_generator.state = state  # the same tree cut
        model.zero_grad(set_to_none=True)
        loss = fn()
        assert loss.dtype == torch.float64
        loss.backward()
        results.append((loss.detach(), [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params]))
    (l_old, g_old), (l_new, g_new) = results
    torch.testing.assert_close(l_new, l_old, rtol=1e-10, atol=1e-12)
    for a, b in zip(g_new, g_old):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-11)


def test_vanilla_training_encodes_only_the_leaves_and_evaluation_every_node():
    taxonomy = Taxonomy.from_paths(LINES)
    model = make_model(taxonomy, "maple", "vanilla")
    seen = []
    original = model.text_tower.forward
    model.text_tower.forward = lambda embeds, *a, **k: seen.append(len(embeds)) or original(embeds, *a, **k)
    model.loss(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))
    text = model.precompute_text()
    assert seen == [len(taxonomy.leaves), taxonomy.num_nodes - 1]
    assert text.abs().sum(1).gt(0).sum() == taxonomy.num_nodes - 1  # every node but the root
    src = make_model(taxonomy, "promptsrc", "vanilla")  # its text term reads every name
    assert src._scored_nodes(torch.device("cpu")) is None


def test_text_chunk_key_reaches_the_model_and_auto_is_safe():
    taxonomy = Taxonomy.from_paths(LINES)
    assert make_model(taxonomy).text_chunk == "auto"  # the default
    model = make_model(taxonomy, TEXT_CHUNK=3)
    assert model.text_chunk == 3 and model._text_chunk(10) == 3
    auto = make_model(taxonomy, TEXT_CHUNK=-1)
    assert auto._text_chunk(100) == 0 and auto._text_chunk(5000) == 256
    with pytest.raises(ValueError, match="text_chunk"):
        make_model(taxonomy, TEXT_CHUNK=-2)
    cfg = default_config()
    cfg.TRAINER.HYPTREE.TEXT_CHUNK = -2
    with pytest.raises(ValueError, match="TRAINER.HYPTREE.TEXT_CHUNK"):
        check_config(cfg)


def _tiny_bench_args(**over):
    """``bench/scale.py``'s options for an in-process run on the tiny shape."""
    import argparse

    from bench import scale

    opts = dict(shape="tiny", device="cpu", precision="fp32", batch=2, rounds=1, chunk=8, plain_max=30)
    opts.update(before=False, no_eval=False, out=None, presets=scale.PRESETS, warmup=1, split=False)
    return argparse.Namespace(**{**opts, **over})


def test_scale_bench_core_runs_on_tiny_shapes(tmp_path, monkeypatch):

    from bench import scale, scale_report

    tax = scale.realistic_tree(40)
    assert tax.num_nodes == 40 and tax.height <= 7
    words = [len(n.split()) for n in tax.display_names[1:]]
    assert min(words) >= 1 and max(words) >= 3  # multi-word names, not one-token stand-ins
    out = str(tmp_path / "scale.jsonl")
    args = _tiny_bench_args(out=out)
    results = scale.run(args, ["N20", "N40"])
    modes = [(s["tree"], s["mode"]) for s, _ in results]
    assert modes.count(("N20", "plain")) == 3 and ("N40", "plain") not in modes  # plain only up to plain_max
    assert modes.count(("N20", "chunked")) == modes.count(("N40", "chunked")) == 3
    values = scale_report.ratios(results)
    assert values["time_ratio_N40_chunked"] > 0 and values["eval_ratio_N20_hyptree"] > 0
    assert values["eval_ratio_N40_vanilla"] > 0  # evaluation in the default (chunked) mode above plain_max
    assert set(scale_report.growth(results, "step_s")) == set(scale.PRESETS)
    png = scale_report.plot(results, str(tmp_path / "scale.png"))
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert all(r["pad_waste"] > 0 for _, r in results)  # the synthetic names differ in length
    assert len({s["group"] for s, _ in results}) == 2  # one process per tree: paired ratios
    assert all(
        len(r["times"]) == 1 and r["peak_mb"] == r["base_mb"] + r["delta_mb"] >= r["base_mb"] > 0 for _, r in results
    )
    # every finished group was kept: a second call measures nothing and gives the same
    with open(out) as f:
        assert len(f.readlines()) == 2
    monkeypatch.setattr(scale, "measure", None)  # fails if called
    again = scale.run(args, ["N20", "N40"])
    assert [r for _, r in again] == [r for _, r in results]


def test_bench_trees_by_name_include_the_real_protect_trees(tmp_path, monkeypatch):
    from test_taxonomy_io import NESTED, make_protect_tree

    from bench import common, scale

    (tmp_path / "sun").mkdir()
    make_protect_tree(str(tmp_path / "sun" / "tree.npy"), NESTED)
    monkeypatch.delenv(common.PROTECT_DIR, raising=False)
    with pytest.raises(SystemExit, match="set HYPTREE_PROTECT_DIR"):
        common.taxonomy("protect:sun")
    monkeypatch.setenv(common.PROTECT_DIR, str(tmp_path))
    real = common.taxonomy("protect:sun")
    assert real.class_names[:2] == ("canoe", "liner") and scale.tree_of("sun").names == real.names
    assert common.taxonomy("deep").height >= 7 and scale.tree_of("N50").num_nodes == 50
    with pytest.raises(SystemExit, match="unknown taxonomy 'sunny'"):
        common.taxonomy("sunny")


def test_scale_targets_say_met_and_missed():
    from bench.scale_report import targets

    def row(n, preset, step, peak):
        return {"tree": f"N{n}", "preset": preset, "mode": "chunked", "group": str(n)}, {
            "nodes": n,
            "step_s": step,
            "peak_mb": peak,
        }

    results = [row(1368, p, 10.0, 1000.0) for p in ("protect", "hyptree")]
    results += [row(20000, p, 200.0, 4000.0) for p in ("protect", "hyptree")]  # 20x time for 14.6x nodes
    values = {"time_ratio_N1368_chunked": 1.01, "time_ratio_N20000_chunked": 1.07, "speedup_sun_hyptree": 2.0}
    got = {name: (text, ok) for name, text, ok in targets(results, values)}
    assert got["hyptree / protect step time <= 1.05"] == ("N1368_chunked 1.010, N20000_chunked 1.070", False)
    assert got["before / now step time >= 1.8 (real trees)"][1]
    assert got["chunked peak at 20000 nodes <= 3x that at 1,368"] == ("4.00x", False)
    assert got["chunked step time grows at most linearly"] == ("exponents <= 1.12", False)
    assert "hyptree / protect peak memory <= 1.05" not in got  # nothing measured, nothing claimed


def test_scale_bench_before_and_unshared_modes_give_the_same_loss(tmp_path, monkeypatch):

    from test_taxonomy_io import NESTED, make_protect_tree

    from bench import common, scale, scale_report

    (tmp_path / "sun").mkdir()
    make_protect_tree(str(tmp_path / "sun" / "tree.npy"), NESTED)
    monkeypatch.setenv(common.PROTECT_DIR, str(tmp_path))
    args = _tiny_bench_args(before=True, no_eval=True, presets=("protect", "hyptree"), warmup=0)
    results = scale.run(args, ["sun"])
    assert sorted(s["mode"] for s, _ in results) == ["before", "plain", "plain", "unshared"]
    losses = {s["mode"]: r["loss"] for s, r in results if s["preset"] == "hyptree"}
    assert losses["unshared"] == pytest.approx(losses["plain"], rel=1e-5)
    assert losses["before"] == pytest.approx(losses["plain"], rel=1e-5)
    values = scale_report.ratios(results)
    assert values["speedup_sun_hyptree"] > 0 and values["shared_speedup_sun_hyptree"] > 0
