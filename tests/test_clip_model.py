import argparse
import hashlib
import urllib.error
import urllib.request
import warnings

import pytest
import torch

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # clip imports pkg_resources
    import clip
from clip.model import CLIP

from hyptree.model.loading import (
    build_clip,
    cast_clip_weights,
    load_clip,
    tiny_clip,
    to_openai_state_dict,
)
from hyptree.model.towers import (
    TextTower,
    VisionTower,
    _pass_through,
    scale_layers,
)

NAMES = ["a cat", "the big red dog in the snow", "x", "bird of prey over a wide valley at dusk"]

# (tiny_clip kwargs) covering different widths, depths, patch sizes and resolutions
CONFIGS = {
    "default": {},
    "wide_p4": dict(
        embed_dim=24,
        image_resolution=16,
        vision_layers=3,
        vision_width=128,
        vision_patch_size=4,
        transformer_width=48,
        transformer_heads=3,
        transformer_layers=3,
    ),
    "deep_p16": dict(
        embed_dim=40,
        image_resolution=48,
        vision_layers=6,
        vision_width=64,
        vision_patch_size=16,
        transformer_width=64,
        transformer_heads=1,
        transformer_layers=4,
    ),
}


def images_for(model, batch=3, seed=1):
    size = model.visual.input_resolution
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def model():
    return tiny_clip(vision_layers=4, transformer_layers=4)


@pytest.fixture(scope="module")
def tokens():
    return clip.tokenize(NAMES)


def capture_block_inputs(blocks):
    """Record the input of every block (the input of its ln_1), first call per block."""
    seen = {}
    handles = []
    for i, block in enumerate(blocks):

        def hook(module, args, i=i):
            seen.setdefault(i, args[0].detach().clone())

        handles.append(block.ln_1.register_forward_pre_hook(hook))
    return seen, handles


# --------------------------------------------------------------------------- tiny_clip


def test_tiny_clip_is_the_packages_clip_and_deterministic():
    state = torch.random.get_rng_state()
    a = tiny_clip(seed=3)
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched
    b, c = tiny_clip(seed=3), tiny_clip(seed=4)
    assert type(a) is CLIP and not a.training and a.dtype == torch.float32
    assert a.token_embedding.weight.shape == (49408, 32)
    assert torch.equal(a.visual.proj, b.visual.proj) and not torch.equal(a.visual.proj, c.visual.proj)
    # biases and LayerNorm affine parameters are randomised so tests can catch a dropped bias
    assert a.visual.transformer.resblocks[0].attn.in_proj_bias.abs().min() > 0
    assert not torch.allclose(a.ln_final.weight, torch.ones(32))
    with torch.no_grad():
        assert a.encode_text(clip.tokenize(["a cat"])).shape == (1, 32)


def test_tiny_clip_rejects_widths_clip_cannot_build():
    with pytest.raises(ValueError, match="multiple of 64"):
        tiny_clip(vision_width=48)
    with pytest.raises(ValueError, match="divisible"):
        tiny_clip(transformer_width=30, transformer_heads=4)


# --------------------------------------------------------------------------- towers, no prompts


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_towers_reproduce_clip_encoders(name, tokens):
    model = tiny_clip(**CONFIGS[name])
    text_tower, vision_tower = TextTower(model), VisionTower(model)
    images = images_for(model)
    with torch.no_grad():
        expected_text = model.encode_text(tokens)
        for truncate in (True, False):
            got = text_tower(model.token_embedding(tokens), tokens, truncate=truncate)
            torch.testing.assert_close(got, expected_text, atol=1e-5, rtol=0)
        final, layer_tokens = vision_tower(images)
        torch.testing.assert_close(final, model.encode_image(images), atol=1e-5, rtol=0)
    assert layer_tokens is None
    assert final.shape == (3, model.visual.output_dim)


def test_towers_hold_no_parameters(model):
    for tower in (TextTower(model), VisionTower(model)):
        assert list(tower.parameters()) == [] and tower.state_dict() == {}


def test_text_tower_accepts_shortened_input_only_with_causal_mask(tokens):
    model = tiny_clip()
    tower = TextTower(model)
    embeds = model.token_embedding(tokens)
    length = int(tokens.argmax(-1).max()) + 1
    with torch.no_grad():
        short = tower(embeds[:, :length], tokens[:, :length])
        torch.testing.assert_close(short, model.encode_text(tokens), atol=1e-5, rtol=0)
        for block in model.transformer.resblocks:
            block.attn_mask = None  # full attention: later positions now matter
        open_tower = TextTower(model)
        assert tower.causal and not open_tower.causal
        with pytest.raises(ValueError, match="causal"):
            open_tower(embeds[:, :length], tokens[:, :length])
        full = open_tower(embeds, tokens)  # no truncation happens
        assert not torch.allclose(full, short, atol=1e-4)


def test_vision_tower_rejects_resnet_and_wrong_sizes(model):
    resnet = CLIP(32, 64, (1, 1, 1, 1), 8, None, 77, 49408, 32, 2, 1)
    with pytest.raises(TypeError, match="ViT"):
        VisionTower(resnet)
    with pytest.raises(ValueError, match="images must be"):
        VisionTower(model)(torch.zeros(1, 3, 40, 40))


def test_calls_count_passes(model, tokens):
    text_tower, vision_tower = TextTower(model), VisionTower(model)
    with torch.no_grad():
        vision_tower(images_for(model), keep_layers=(1, 2))
        vision_tower(images_for(model))
        text_tower(model.token_embedding(tokens), tokens)
    assert vision_tower.calls == 2 and text_tower.calls == 1


# --------------------------------------------------------------------------- deep prompts


def test_text_deep_prompts_replace_context_positions_in_blocks_1_to_J_minus_1(model):
    tokens = clip.tokenize(["X X " + name for name in NAMES])  # two context placeholders
    tower = TextTower(model)
    blocks = model.transformer.resblocks  # 4 blocks; J = 3: prompts for blocks 1 and 2
    g = torch.Generator().manual_seed(0)
    n = 2
    deep = [torch.randn(n, 32, generator=g) for _ in range(2)]
    embeds = model.token_embedding(tokens)
    seen, handles = capture_block_inputs(blocks)
    with torch.no_grad():
        out = tower(embeds, tokens, deep_prompts=deep, truncate=False)
        outputs = {i: blocks[i](seen[i]) for i in range(4)}  # OpenAI's own block forward
    for h in handles:
        h.remove()
    pos = model.positional_embedding
    torch.testing.assert_close(seen[0], (embeds + pos).permute(1, 0, 2))
    for i in (1, 2):
        assert torch.equal(seen[i][1 : 1 + n], deep[i - 1].unsqueeze(1).expand(-1, len(NAMES), -1))
        # everything else is the previous block's output
        torch.testing.assert_close(seen[i][:1], outputs[i - 1][:1])
        torch.testing.assert_close(seen[i][1 + n :], outputs[i - 1][1 + n :])
    torch.testing.assert_close(seen[3], outputs[2])  # block 3 >= J: untouched
    eot = tokens.argmax(-1)
    final = model.ln_final(outputs[3][eot, torch.arange(len(NAMES))]) @ model.text_projection
    torch.testing.assert_close(out, final, atol=1e-5, rtol=0)
    with torch.no_grad():
        # a fresh prompt: a constant shift would be invisible, LayerNorm removes it
        changed = tower(embeds, tokens, deep_prompts=[deep[0], torch.randn(n, 32, generator=g)])
        shorter = tower(embeds, tokens, deep_prompts=deep[:1])
    assert not torch.allclose(changed, out, atol=1e-4)
    assert not torch.allclose(shorter, out, atol=1e-4)


def test_text_deep_prompt_errors(model, tokens):
    tower = TextTower(model)
    embeds = model.token_embedding(tokens)
    with pytest.raises(ValueError, match="at most 3"):
        tower(embeds, tokens, deep_prompts=[torch.zeros(1, 32)] * 4)
    with pytest.raises(ValueError, match="overwrite an EOT"):
        tower(embeds, tokens, deep_prompts=[torch.zeros(3, 32)])  # "x" has EOT at position 2
    with pytest.raises(ValueError, match=r"\(n, 32\)"):
        tower(embeds, tokens, deep_prompts=[torch.zeros(1, 31)])


def reference_vision(model, images, shallow, deep, keep, pass_through):
    """Independent reference: OpenAI's block forward for the sequence; kept tokens are
    carried through each later block's own nn.MultiheadAttention with a mask that lets every
    kept token attend only to itself."""
    v = model.visual
    x = v.conv1(images).flatten(2).transpose(1, 2)
    x = torch.cat([v.class_embedding.expand(x.shape[0], 1, -1), x], 1) + v.positional_embedding
    x = torch.cat([x, shallow.expand(x.shape[0], -1, -1)], 1)
    x = v.ln_pre(x).permute(1, 0, 2)
    n = shallow.shape[0]
    kept = []
    for i, block in enumerate(v.transformer.resblocks):
        if 1 <= i <= len(deep):
            x = torch.cat([x[:-n], deep[i - 1].unsqueeze(1).expand(-1, x.shape[1], -1)])
        if pass_through:
            kept = [self_attention_only(block, h) for h in kept]
        x = block(x)
        if i + 1 in keep:
            kept.append(x[:1])
    tokens = torch.cat(kept + [x[:1]]).transpose(0, 1)
    return v.ln_post(tokens) @ v.proj


def self_attention_only(block, h):
    k = h.shape[0]
    mask = torch.full((k, k), float("-inf")).fill_diagonal_(0.0)
    a = block.ln_1(h)
    h = h + block.attn(a, a, a, need_weights=False, attn_mask=mask)[0]
    return h + block.mlp(block.ln_2(h))


def test_pass_through_equals_attention_to_itself_only(model):
    block = model.visual.transformer.resblocks[2]
    h = torch.randn(3, 5, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(_pass_through(block, h), self_attention_only(block, h), atol=1e-6, rtol=1e-5)
        # and it is not the ordinary block (tokens mixing with each other)
        assert not torch.allclose(_pass_through(block, h), block(h), atol=1e-3)


@pytest.mark.parametrize("pass_through", [True, False])
def test_vision_prompts_and_layer_tokens_match_reference(model, pass_through):
    tower = VisionTower(model)
    g = torch.Generator().manual_seed(2)
    n = 3
    shallow = torch.randn(n, 64, generator=g)
    deep = [torch.randn(n, 64, generator=g) for _ in range(2)]  # blocks 1, 2 of 4
    images = images_for(model)
    with torch.no_grad():
        final, layers = tower(images, shallow, deep, keep_layers=(1, 3), pass_through=pass_through)
        expected = reference_vision(model, images, shallow, deep, (1, 3), pass_through)
        other, _ = tower(images, shallow, deep, keep_layers=(1, 3), pass_through=not pass_through)
    assert layers.shape == (3, 3, model.visual.output_dim)
    torch.testing.assert_close(layers, expected, atol=1e-5, rtol=0)
    assert torch.equal(layers[:, -1], final)
    torch.testing.assert_close(other, final)  # the final token does not depend on the ablation


def test_vision_prompt_positions_per_block(model):
    tower = VisionTower(model)
    blocks = model.visual.transformer.resblocks
    g = torch.Generator().manual_seed(5)
    n = 2
    shallow = torch.randn(n, 64, generator=g)
    deep = [torch.randn(n, 64, generator=g) for _ in range(2)]
    seen, handles = capture_block_inputs(blocks)
    with torch.no_grad():
        final, _ = tower(images_for(model), shallow, deep)
        outputs = {i: blocks[i](seen[i]) for i in range(4)}
        changed, _ = tower(images_for(model), shallow, [deep[0], torch.randn(n, 64, generator=g)])
    for h in handles:
        h.remove()
    torch.testing.assert_close(seen[0][-n:], model.visual.ln_pre(shallow).unsqueeze(1).expand(-1, 3, -1))
    for i in (1, 2):
        assert torch.equal(seen[i][-n:], deep[i - 1].unsqueeze(1).expand(-1, 3, -1))
        torch.testing.assert_close(seen[i][:-n], outputs[i - 1][:-n])
    torch.testing.assert_close(seen[3], outputs[2])  # untouched past the prompt depth
    assert not torch.allclose(changed, final, atol=1e-4)


def test_vision_prompt_errors(model):
    tower = VisionTower(model)
    images = images_for(model, batch=1)
    with pytest.raises(ValueError, match="shallow_prompts too"):
        tower(images, None, [torch.zeros(2, 64)])
    with pytest.raises(ValueError, match="has 3 tokens"):
        tower(images, torch.zeros(2, 64), [torch.zeros(3, 64)])
    with pytest.raises(ValueError, match="at most 3"):
        tower(images, torch.zeros(2, 64), [torch.zeros(2, 64)] * 4)
    for bad in [(0,), (4,), (2, 1), (1, 1)]:
        with pytest.raises(ValueError, match="keep_layers"):
            tower(images, keep_layers=bad)


def test_scale_layers():
    # 0-based block indices ending with the final block -> 1-based block counts of the
    # intermediate tokens (the tower returns the final token itself)
    assert scale_layers((4, 7, 11), 12) == (5, 8)
    assert scale_layers((4, 7, 11), 24) == (10, 16)  # ViT-L/14
    assert scale_layers((4, 7, 11), 4) == (2, 3)
    assert scale_layers((4, 7, 11), 6) == (3, 4)  # 2.5 rounds half up
    assert scale_layers((0, 10, 11), 3) == (1, 2)  # clamped into [1, depth - 1]
    assert scale_layers((11,), 12) == ()  # the final token only
    with pytest.raises(ValueError, match="strictly increasing"):
        scale_layers((4, 7, 11), 2)
    with pytest.raises(ValueError):
        scale_layers((4, 7, 11), 1)
    with pytest.raises(ValueError, match="final block"):
        scale_layers((4, 7), 12)  # the old 1-based form without the final block


# --------------------------------------------------------------------------- precision


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_towers_follow_clip_layout(dtype, tokens):
    reference = tiny_clip()
    model = cast_clip_weights(tiny_clip(), dtype)
    block = model.visual.transformer.resblocks[0]
    assert block.attn.in_proj_weight.dtype == dtype and model.visual.proj.dtype == dtype
    assert model.text_projection.dtype == dtype and block.mlp.c_fc.bias.dtype == dtype
    assert block.ln_1.weight.dtype == torch.float32  # LayerNorms and embeddings stay fp32
    assert model.token_embedding.weight.dtype == torch.float32
    images = images_for(model)
    with torch.no_grad():
        final, layers = VisionTower(model)(images, torch.randn(2, 64), keep_layers=(2,))
        text = TextTower(model)(model.token_embedding(tokens), tokens)
        assert final.dtype == layers.dtype == text.dtype == dtype
        torch.testing.assert_close(
            VisionTower(model)(images)[0].float(), reference.encode_image(images), atol=0.05, rtol=0.05
        )
        torch.testing.assert_close(text.float(), reference.encode_text(tokens), atol=0.05, rtol=0.05)


# --------------------------------------------------------------------------- loading


def standard_tiny():
    """Tiny model whose head counts follow CLIP's width // 64 rule (so clip's build_model works)."""
    return tiny_clip(transformer_width=64, transformer_heads=1, seed=7)


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key].float(), sb[key].float()), key


def test_load_state_dict_file(tmp_path, tokens):
    model = tiny_clip()  # text width 32 with 2 heads: not CLIP's default rule
    path = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), path)
    loaded = load_clip(path, text_heads=2)  # a pathlib.Path works too
    assert_same_weights(model, loaded)
    assert loaded.dtype == torch.float32 and not loaded.training
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_text(tokens), model.encode_text(tokens))
    with pytest.raises(ValueError, match="not divisible"):
        load_clip(str(path), text_heads=5)


def test_load_torchscript_archive_like_clip_load(tmp_path):
    model = standard_tiny()
    with torch.no_grad():  # OpenAI's archives hold fp16 weights; clip.load rounds through fp16
        for p in model.parameters():
            p.copy_(p.half().float())
    images = images_for(model, batch=2)
    path = tmp_path / "tiny_jit.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(model, (images, clip.tokenize(["a cat", "a dog"]))), str(path))
        reference, _ = clip.load(str(path), device="cpu", jit=False)
    loaded = load_clip(str(path))
    assert_same_weights(model, loaded)
    assert_same_weights(reference, loaded)


def test_load_named_model_from_the_cache_folder(tmp_path, monkeypatch):
    offline(monkeypatch)  # a file with the published checksum is used without any download
    model = standard_tiny()
    path = tmp_path / "tiny-test.pt"
    torch.save(model.state_dict(), path)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setitem(clip.clip._MODELS, "Tiny/8", f"https://example.invalid/{sha}/tiny-test.pt")
    loaded = load_clip("Tiny/8", download_root=str(tmp_path))
    assert_same_weights(model, loaded)  # exact: fp32 weights are not rounded through fp16
    assert loaded.dtype == torch.float32


def offline(monkeypatch):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def test_missing_named_weights_give_a_clear_error(tmp_path, monkeypatch):
    offline(monkeypatch)
    with pytest.raises(RuntimeError) as info:
        load_clip("ViT-B/32", download_root=str(tmp_path))
    message = str(info.value)
    for part in (
        "ViT-B/32",
        "RN50",
        "ViT-L/14@336px",
        str(tmp_path),
        "ViT-B-32.pt",
        "downloading",
        "path of a local file",
    ):
        assert part in message, part
    (tmp_path / "ViT-B-32.pt").write_bytes(b"not the weights")
    with pytest.raises(RuntimeError, match="exists but does not match"):
        load_clip("ViT-B/32", download_root=str(tmp_path))


def test_unknown_name_or_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a known model name") as info:
        load_clip(str(tmp_path / "nope.pt"))
    assert "ViT-B/16" in str(info.value) and "~/.cache/clip" in str(info.value)


def test_openclip_checkpoints_are_mapped(tmp_path, tokens):
    model = standard_tiny()
    sd = model.state_dict()
    wrapped = {"epoch": 3, "name": "bioclip-like", "state_dict": {"module." + k: v for k, v in sd.items()}}
    wrapped["state_dict"]["module.logit_bias"] = torch.tensor(-10.0)
    wrapped["state_dict"]["module.attn_mask"] = torch.zeros(77, 77)
    custom_text = {}
    for k, v in sd.items():
        if k == "text_projection":
            custom_text["text.text_projection.weight"] = v.t().clone()
            custom_text["text.text_projection.bias"] = torch.zeros(v.shape[1])
        elif k.startswith(("transformer.", "token_embedding.", "positional_embedding", "ln_final.")):
            custom_text["text." + k] = v
        else:
            custom_text[k] = v
    for i, checkpoint in enumerate([wrapped, custom_text]):
        path = tmp_path / f"open_clip_{i}.bin"
        torch.save(checkpoint, path)
        loaded = load_clip(str(path))
        assert_same_weights(model, loaded)
        with torch.no_grad():
            torch.testing.assert_close(loaded.encode_text(tokens), model.encode_text(tokens))
    assert to_openai_state_dict(sd).keys() == sd.keys()  # idempotent on OpenAI layout


def test_unsupported_checkpoints_are_named(tmp_path):
    sd = dict(standard_tiny().state_dict())
    sd["visual.transformer.resblocks.0.ls_1.gamma"] = torch.ones(64)
    with pytest.raises(ValueError, match="ls_1.gamma"):
        build_clip(sd, source="layerscale.bin")
    with pytest.raises(ValueError, match="not a CLIP checkpoint"):
        build_clip({"weight": torch.zeros(2)})
    bias = dict(standard_tiny().state_dict())
    projection = bias.pop("text_projection")
    bias["text_projection.weight"] = projection.t()
    bias["text_projection.bias"] = torch.ones(projection.shape[1])
    with pytest.raises(ValueError, match="bias"):
        to_openai_state_dict(bias)
    path = tmp_path / "pickled.pt"
    torch.save({"state_dict": sd, "args": argparse.Namespace(lr=1)}, path)
    with pytest.raises(RuntimeError, match="weights_only=False"):
        load_clip(str(path))


def test_precision_argument(tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save(standard_tiny().state_dict(), path)
    with pytest.warns(UserWarning, match="fp32 instead"):
        model = load_clip(str(path), precision="fp16")
    assert model.dtype == torch.float32
    assert load_clip(str(path), precision="amp").dtype == torch.float32
    with pytest.raises(ValueError, match="precision must be"):
        load_clip(str(path), precision="fp8")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_default_is_fp16_like_clip_load(tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save(standard_tiny().state_dict(), path)
    model = load_clip(str(path), device="cuda")
    assert model.dtype == torch.float16 and model.visual.ln_post.weight.dtype == torch.float32
    assert load_clip(str(path), device="cuda", precision="amp").dtype == torch.float32
    final, layers = VisionTower(model)(torch.randn(2, 3, 32, 32, device="cuda"), keep_layers=(2,))
    assert final.dtype == torch.float16 and torch.isfinite(layers).all()


def test_vendored_clip_with_design_details_builds_plain_blocks(monkeypatch, tmp_path):
    """MaPLe/PromptSRC checkouts shadow ``clip`` with a copy whose CLIP needs design_details."""
    from clip.model import CLIP as OpenAICLIP

    import hyptree.model.loading as cm

    seen = []

    class VendoredCLIP(OpenAICLIP):
        def __init__(
            self,
            embed_dim,
            image_resolution,
            vision_layers,
            vision_width,
            vision_patch_size,
            context_length,
            vocab_size,
            transformer_width,
            transformer_heads,
            transformer_layers,
            design_details,
        ):
            seen.append(design_details)
            super().__init__(
                embed_dim,
                image_resolution,
                vision_layers,
                vision_width,
                vision_patch_size,
                context_length,
                vocab_size,
                transformer_width,
                transformer_heads,
                transformer_layers,
            )

    monkeypatch.setattr(cm, "CLIP", VendoredCLIP)
    model = cm.tiny_clip()
    path = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), path)
    loaded = cm.load_clip(str(path))
    assert isinstance(loaded, VendoredCLIP) and len(seen) == 2
    assert all(d["trainer"] == "CoOp" and d["vision_depth"] == 0 and d["language_depth"] == 0 for d in seen)
