import io
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import norm

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import clip

from hyptree.model.loading import tiny_clip
from hyptree.model.prompts import (
    CoOpPromptLearner,
    MaPLePromptLearner,
    PromptOutput,
    PromptSRCPromptLearner,
    build_prompt_learner,
    freeze,
)
from hyptree.model.promptsrc import (
    DEFAULT_TEMPLATES,
    GaussianPromptAggregator,
    frozen_text_features,
    self_regulating_losses,
)
from hyptree.model.towers import TextTower, VisionTower

NAMES = ["cat", "golden retriever", "red-tailed hawk", "sea anemone"]
NOVEL = ["zebra", "snow leopard", "axolotl"]


@pytest.fixture(scope="module")
def model():
    # 9 blocks on both sides so MaPLe's and PromptSRC's default depth 9 fit
    return freeze(tiny_clip(vision_layers=9, transformer_layers=9, seed=1))


def encode(model, out, images):
    text = TextTower(model)(out.token_embeds, out.tokens, out.text_deep)
    image, _ = VisionTower(model)(images, out.vision_shallow, out.vision_deep)
    return text, image


def images(n=2):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_build_prompt_learner_kinds(model):
    assert isinstance(build_prompt_learner("CoOp", model, NAMES), CoOpPromptLearner)
    assert isinstance(build_prompt_learner("maple", model, NAMES), MaPLePromptLearner)
    assert isinstance(build_prompt_learner("promptsrc", model, NAMES), PromptSRCPromptLearner)
    with pytest.raises(ValueError, match="choose from"):
        build_prompt_learner("cocoop", model, NAMES)
    with pytest.raises(ValueError, match="csc"):
        build_prompt_learner("coop", model, NAMES, csc=True)
    with pytest.raises(ValueError, match="non-empty"):
        build_prompt_learner("coop", model, [])


def test_coop_with_init_words_reproduces_the_hand_written_prompt(model):
    learner = CoOpPromptLearner(model, NAMES, ctx_init="a photo of a")
    assert learner.n_ctx == 4  # CoOp: n_ctx from the init words
    out = learner()
    expected_tokens = clip.tokenize([f"a photo of a {n}." for n in NAMES])
    length = out.tokens.shape[1]
    assert length == int(expected_tokens.argmax(-1).max()) + 1 < 77  # truncated to the last EOT
    assert torch.equal(out.tokens, expected_tokens[:, :length].long())
    with torch.no_grad():
        text = TextTower(model)(out.token_embeds, out.tokens)
        torch.testing.assert_close(text, model.encode_text(expected_tokens), atol=1e-5, rtol=0)


def test_coop_default_context(model):
    learner = CoOpPromptLearner(model, NAMES)
    out = learner()
    assert learner.n_ctx == 16 and learner.ctx.shape == (16, 32)
    assert 0.01 < learner.ctx.std().item() < 0.03  # N(0, 0.02^2)
    assert out.text_deep is None and out.vision_shallow is None and out.vision_deep is None
    assert torch.equal(out.token_embeds[:, 1:17], learner.ctx.expand(len(NAMES), -1, -1))
    fixed = model.token_embedding(out.tokens)
    assert torch.equal(out.token_embeds[:, :1], fixed[:, :1])
    assert torch.equal(out.token_embeds[:, 17:], fixed[:, 17:])
    # the name and its period follow the context, then EOT
    name_ids = clip.tokenize(["golden retriever."])[0]
    count = int(name_ids.argmax()) - 1
    assert torch.equal(out.tokens[1, 17 : 17 + count], name_ids[1 : 1 + count].long())
    assert int(out.tokens[1].argmax()) == 17 + count
    # truncation is exact
    full = CoOpPromptLearner(model, NAMES, truncate=False)
    full.ctx.data.copy_(learner.ctx.data)
    with torch.no_grad():
        long_out = full()
        assert long_out.tokens.shape[1] == 77
        torch.testing.assert_close(TextTower(model)(*long_out[:2]), TextTower(model)(*out[:2]), atol=1e-5, rtol=0)


def test_maple_defaults_and_coupling(model):
    learner = MaPLePromptLearner(model, NAMES)
    out = learner()
    assert learner.n_ctx == 2 and learner.depth == 9
    assert len(out.text_deep) == 8 and len(out.vision_deep) == 8
    assert out.vision_shallow.shape == (2, 64) and out.vision_deep[0].shape == (2, 64)
    # "a photo" is learned, "of a" stays fixed text: at init the prompt is the hand-written one
    expected = clip.tokenize([f"a photo of a {n}." for n in NAMES])
    assert torch.equal(out.token_embeds, model.token_embedding(expected[:, : out.tokens.shape[1]]))
    torch.testing.assert_close(out.vision_shallow, learner.proj(learner.ctx))
    for j in range(8):
        torch.testing.assert_close(out.vision_deep[j], learner.deep_proj[j](learner.text_deep[j]))
    assert not torch.equal(learner.deep_proj[0].weight, learner.deep_proj[1].weight)
    shallow = MaPLePromptLearner(model, NAMES, depth=1)()
    assert shallow.text_deep is None and shallow.vision_deep is None
    with pytest.raises(ValueError, match="exceeds"):
        MaPLePromptLearner(tiny_clip(), NAMES)  # 2 text blocks < depth 9


def test_promptsrc_defaults(model):
    learner = PromptSRCPromptLearner(model, NAMES)
    out = learner()
    assert learner.n_ctx == 4 and learner.n_ctx_vision == 4
    assert len(out.text_deep) == 8 and len(out.vision_deep) == 8
    assert out.vision_shallow.shape == (4, 64) and out.text_deep[0].shape == (4, 32)
    expected = clip.tokenize([f"a photo of a {n}." for n in NAMES])
    assert torch.equal(out.token_embeds, model.token_embedding(expected[:, : out.tokens.shape[1]]))
    text_only = PromptSRCPromptLearner(model, NAMES, depth_vision=0, depth_text=3)()
    assert text_only.vision_shallow is None and text_only.vision_deep is None
    assert len(text_only.text_deep) == 2
    with pytest.raises(ValueError):
        PromptSRCPromptLearner(model, NAMES, depth_text=0)


@pytest.mark.parametrize("kind", ["coop", "maple", "promptsrc"])
def test_gradients_reach_every_prompt_parameter_and_no_clip_weight(model, kind):
    learner = build_prompt_learner(kind, model, NAMES, **({"depth": 3} if kind == "maple" else {}))
    text, image = encode(model, learner(), images())
    logits = F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).t()
    F.cross_entropy(logits * 10, torch.tensor([0, 1])).backward()
    for name, param in learner.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in model.parameters())


def test_maple_text_context_is_trained_through_the_vision_side(model):
    learner = MaPLePromptLearner(model, NAMES, depth=2)
    out = learner()
    image, _ = VisionTower(model)(images(), out.vision_shallow, out.vision_deep)
    image.sum().backward()
    assert learner.ctx.grad.abs().sum() > 0 and learner.text_deep[0].grad.abs().sum() > 0


def test_state_dict_holds_only_prompt_parameters(model):
    learner = MaPLePromptLearner(model, NAMES, depth=3)
    assert set(learner.state_dict()) == {
        "ctx",
        "text_deep.0",
        "text_deep.1",
        "proj.weight",
        "proj.bias",
        "deep_proj.0.weight",
        "deep_proj.0.bias",
        "deep_proj.1.weight",
        "deep_proj.1.bias",
    }
    src = PromptSRCPromptLearner(model, NAMES, depth_text=2, depth_vision=2)
    assert set(src.state_dict()) == {"ctx", "text_deep.0", "vision_shallow", "vision_deep.0"}


def test_set_names_and_with_names_keep_the_learned_prompts(model):
    learner = PromptSRCPromptLearner(model, NAMES, depth_text=3, depth_vision=3)
    with torch.no_grad():
        learner.ctx.add_(1.0)
    base_tokens = learner().tokens.clone()
    novel = learner.with_names(NOVEL)
    assert novel.ctx is learner.ctx and novel.text_deep[0] is learner.text_deep[0]
    assert novel().token_embeds.shape[0] == 3 and novel.names == NOVEL
    assert torch.equal(learner().tokens, base_tokens) and learner.names == NAMES
    expected = clip.tokenize([f"X X X X {n}." for n in NOVEL])  # placeholders at the context
    assert torch.equal(novel().tokens[:, 5:], expected[:, 5 : novel().tokens.shape[1]].long())
    before = novel().token_embeds.clone()
    with torch.no_grad():
        learner.ctx.mul_(2.0)  # training the base learner moves the novel view too
    assert torch.equal(novel().token_embeds[:, 1:5], learner.ctx.expand(3, -1, -1))
    assert not torch.equal(novel().token_embeds, before)
    params = [id(p) for p in learner.parameters()]
    assert learner.set_names(NOVEL) is learner and learner.names == NOVEL
    assert [id(p) for p in learner.parameters()] == params
    assert torch.equal(learner().tokens, novel().tokens)


def test_many_names_and_errors(model):
    names = [f"node {i} of the generated tree" for i in range(600)]
    out = CoOpPromptLearner(model, names, n_ctx=4)()
    assert out.token_embeds.shape[:2] == out.tokens.shape and out.tokens.shape[0] == 600
    assert (out.tokens.argmax(-1) > 4).all()
    with pytest.raises(ValueError, match="'word word"):
        CoOpPromptLearner(model, ["word " * 80])


def test_frozen_text_features_average_template_features(model):
    names = NAMES[:3]
    templates = ["a photo of a {}.", "art of the {}.", "a {} in a video game."]
    got = frozen_text_features(model, names, templates, batch_size=2)
    with torch.no_grad():
        feats = [model.encode_text(clip.tokenize([t.format(n) for n in names])) for t in templates]
    expected = F.normalize(torch.stack(feats).mean(0), dim=-1)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert len(DEFAULT_TEMPLATES) >= 5 and all("{}" in t for t in DEFAULT_TEMPLATES)
    with pytest.raises(ValueError, match="placeholder"):
        frozen_text_features(model, names, ["a photo"])


def test_self_regulating_losses_by_hand():
    g = torch.Generator().manual_seed(0)
    t, t0 = torch.randn(5, 8, generator=g, requires_grad=True), torch.randn(5, 8, generator=g)
    f, f0 = torch.randn(3, 8, generator=g), torch.randn(3, 8, generator=g)
    z, z0 = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    z0.requires_grad_(True)
    losses = self_regulating_losses(t, t0, f, f0, z, z0)
    nt, nt0 = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (t.detach().numpy(), t0.numpy()))
    nf, nf0 = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (f.numpy(), f0.numpy()))
    p, p0 = (np.exp(x) / np.exp(x).sum(1, keepdims=True) for x in (z.numpy(), z0.detach().numpy()))
    assert losses["text"].item() == pytest.approx(25 * np.abs(nt - nt0).mean(), rel=1e-5)
    assert losses["image"].item() == pytest.approx(10 * np.abs(nf - nf0).mean(), rel=1e-5)
    kl = (p0 * (np.log(p0) - np.log(p))).sum() / z.numel()
    assert losses["logits"].item() == pytest.approx(kl, rel=1e-5)
    assert losses["total"].item() == pytest.approx(sum(losses[k].item() for k in ("text", "image", "logits")), rel=1e-6)
    losses["total"].backward()
    assert t.grad is not None and z0.grad is None  # the frozen side gets no gradient
    same = self_regulating_losses(t, t * 3, f, f, z, z)
    assert all(same[k].item() == pytest.approx(0, abs=1e-6) for k in same)
    two = self_regulating_losses(t, t0, f, f0, z, z0, text_weight=1, image_weight=2, temperature=2)
    assert two["text"].item() == pytest.approx(losses["text"].item() / 25, rel=1e-5)


@pytest.mark.parametrize("epochs, mean, std", [(50, 30, 30), (20, 15, 1), (5, 6, 10)])
def test_gpa_weights_are_a_normalised_gaussian_over_epochs(epochs, mean, std):
    gpa = GaussianPromptAggregator(epochs, mean, std)
    density = norm.pdf(np.arange(1, epochs + 1), loc=mean, scale=std)
    np.testing.assert_allclose(gpa.weights, density / density.sum(), rtol=1e-12)
    assert gpa.weights.sum() == pytest.approx(1.0)


def states(epochs, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        {"ctx": torch.randn(2, 3, generator=g), "deep.0": torch.randn(4, generator=g), "step": torch.tensor(e)}
        for e in range(epochs)
    ]


def test_gpa_aggregate_is_the_weighted_average():
    gpa = GaussianPromptAggregator(6, mean=4, std=1.5)
    history = states(6)
    for e, state in enumerate(history):
        gpa.update(e, state)
    w = norm.pdf(np.arange(1, 7), 4, 1.5)
    w = w / w.sum()
    agg = gpa.aggregated_state()
    expected = sum(w[e] * history[e]["ctx"].double().numpy() for e in range(6))
    np.testing.assert_allclose(agg["ctx"].numpy(), expected, rtol=1e-5, atol=1e-6)
    assert agg["ctx"].dtype == torch.float32 and int(agg["step"]) == 5  # non-float: latest
    assert gpa.complete
    with pytest.raises(ValueError, match="already"):
        gpa.update(2, history[2])
    with pytest.raises(ValueError, match="outside"):
        gpa.update(6, history[0])


def test_gpa_partial_and_resume():
    history = states(8, seed=3)
    whole = GaussianPromptAggregator(8, 5, 2)
    for e, s in enumerate(history):
        whole.update(e, s)
    first = GaussianPromptAggregator(8, 5, 2)
    for e in range(3):
        first.update(e, history[e])
    w = first.weights[:3] / first.weights[:3].sum()
    np.testing.assert_allclose(
        first.aggregated_state()["deep.0"].numpy(),
        sum(w[e] * history[e]["deep.0"].numpy() for e in range(3)),
        rtol=1e-5,
    )
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = GaussianPromptAggregator(8, 5, 2)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    for e in range(3, 8):
        resumed.update(e, history[e])
    for key in ("ctx", "deep.0"):
        torch.testing.assert_close(resumed.aggregated_state()[key], whole.aggregated_state()[key])
    with pytest.raises(ValueError, match="differ"):
        GaussianPromptAggregator(8, 5, 3).load_state_dict(first.state_dict())
    with pytest.raises(RuntimeError):
        GaussianPromptAggregator(8).aggregated_state()


def test_prompt_output_is_a_named_tuple(model):
    out = CoOpPromptLearner(model, NAMES, n_ctx=2)()
    assert isinstance(out, PromptOutput) and out._fields == (
        "token_embeds",
        "tokens",
        "text_deep",
        "vision_shallow",
        "vision_deep",
        "shared",
    )
    assert out.shared == 3  # SOS + the 2 context vectors: the same in every prompt
    assert bool((out.token_embeds[:, :3] == out.token_embeds[:1, :3]).all())
    assert not bool((out.token_embeds[:, 3] == out.token_embeds[:1, 3]).all())  # the names differ from here
