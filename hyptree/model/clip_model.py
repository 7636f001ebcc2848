"""Loading CLIP and running its two towers with deep prompts and layer-token pass-through.

Everything here works on the ``clip`` package's model class (PyPI ``openai-clip``) and on
the modified copies vendored by MaPLe / PromptSRC, because it only touches the standard
module names:

- vision: ``visual.conv1``, ``visual.class_embedding``, ``visual.positional_embedding``,
  ``visual.ln_pre``, ``visual.transformer.resblocks[i].{ln_1, attn, ln_2, mlp, attn_mask}``,
  ``visual.ln_post``, ``visual.proj``;
- text: ``token_embedding``, ``positional_embedding``, ``transformer.resblocks[i]``,
  ``ln_final``, ``text_projection``.

The towers never call a block's own ``forward`` (MaPLe's blocks take a list, IVLP blocks
insert their own prompts); they run ``x + attn(ln_1(x)) ; x + mlp(ln_2(x))`` from the
block's submodules. Prompts are *arguments*, not state, so one CLIP serves the prompted
model and (with no prompts) the frozen zero-shot model of PromptSRC.

OpenAI's blocks work on sequence-first tensors ``(L, N, W)``; the text attention carries
a causal ``attn_mask``.
"""
import inspect
import math
import os
import pickle
import re
import warnings

import torch
import torch.nn.functional as F
from torch import nn

with warnings.catch_warnings():
    # openai-clip imports pkg_resources (hence setuptools<81), which warns on every import
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    import clip
    from clip.model import CLIP

__all__ = [
    "load_clip",
    "build_clip",
    "to_openai_state_dict",
    "cast_clip_weights",
    "tiny_clip",
    "scale_layers",
    "TextTower",
    "VisionTower",
    "PRECISIONS",
]

PRECISIONS = ("fp16", "bf16", "fp32", "amp")
_HALF = {"fp16": torch.float16, "bf16": torch.bfloat16}
_DEFAULT_ROOT = "~/.cache/clip"


# --------------------------------------------------------------------------- loading


def load_clip(name_or_path, device="cpu", download_root=None, precision=None, text_heads=None):
    """Load a CLIP model, frozen-ready and in eval mode.

    Args:
        name_or_path: a name from ``clip.available_models()`` (e.g. ``"ViT-B/16"``), read from
            ``download_root`` and downloaded there by the ``clip`` package if missing; or a
            local file: an OpenAI TorchScript archive, a plain state-dict file, or an OpenCLIP
            checkpoint of an OpenAI-layout architecture (e.g. BioCLIP's
            ``open_clip_pytorch_model.bin``; ``.safetensors`` needs the ``safetensors`` package).
        device: where the model goes.
        download_root: cache folder for named models (default ``~/.cache/clip``).
        precision: ``"fp16"`` or ``"bf16"`` (CLIP's own mixed layout: linear/conv/attention
            weights and projections in half precision, LayerNorms and embeddings in fp32),
            ``"fp32"``, or ``"amp"`` (fp32 weights; the caller runs under autocast, as
            MaPLe's ``PREC: amp``). Default: ``"fp16"`` on CUDA, like ``clip.load``, and
            ``"fp32"`` elsewhere. Half precision on the CPU is refused with a warning
            (fp32 is used).
        text_heads: attention heads of the text transformer for local files. Checkpoints do
            not store it; CLIP's rule is ``width // 64`` (used when ``None``). Only needed for
            non-standard models such as :func:`tiny_clip` ones.

    Returns:
        a ``clip.model.CLIP`` instance.

    Named models are fetched by the ``clip`` package's own cache/checksum/download function
    (``clip.clip._download``, the one ``clip.load`` and MaPLe's ``load_clip_to_cpu`` use).
    Every file is then read here and built in fp32 from its state dict, rather than by
    ``clip.load``/``clip.model.build_model``: those round fp32 checkpoints (OpenCLIP's)
    through fp16, cannot take a head count, and ``clip.load``'s state-dict fallback fails on
    recent PyTorch (it retries ``torch.load`` on a file object the failed TorchScript attempt
    has already consumed). For OpenAI's fp16 archives the result equals ``clip.load``'s.
    """
    device = torch.device(device)
    root = os.path.expanduser(download_root or _DEFAULT_ROOT)
    name_or_path = os.fspath(name_or_path)
    path = os.path.expanduser(name_or_path)
    if name_or_path in clip.available_models():
        model = _load_named(name_or_path, root)
    elif os.path.isfile(path):
        model = build_clip(_read_checkpoint(path), text_heads=text_heads, source=path)
    else:
        raise FileNotFoundError(_missing_weights_message(
            name_or_path, root, "it is neither a known model name nor an existing file"))
    return _apply_precision(model, precision, device)


def _load_named(name, root):
    url = clip.clip._MODELS[name]
    target = os.path.join(root, os.path.basename(url))
    existed = os.path.isfile(target)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # clip warns before re-downloading
            path = clip.clip._download(url, root)
    except Exception as error:  # offline, proxy, disk, checksum: one clear message, cause chained
        why = (f"{target} exists but does not match the published SHA256 and could not be "
               f"downloaded again ({error})" if existed
               else f"downloading it to {target} failed ({error})")
        raise RuntimeError(_missing_weights_message(name, root, why)) from error
    return build_clip(_read_checkpoint(path), source=path)


def _missing_weights_message(name, root, why):
    return (
        f"Cannot load CLIP weights {name!r}: {why}.\n"
        f"Known model names (clip.available_models()): {', '.join(clip.available_models())}.\n"
        f"A named model is read from the cache folder {root} (download_root; default "
        f"{_DEFAULT_ROOT}) under its published file name, e.g. ViT-B-16.pt for 'ViT-B/16', "
        f"and downloaded there when missing.\n"
        f"Without internet access: copy the OpenAI file into that folder, or pass the path of "
        f"a local file instead of a name (OpenAI TorchScript archive, a state-dict file, or an "
        f"OpenCLIP checkpoint such as BioCLIP's open_clip_pytorch_model.bin)."
    )


def _read_checkpoint(path):
    """Tensors of a checkpoint file: TorchScript archive, torch.save file or .safetensors."""
    if path.endswith(".safetensors"):
        try:
            from safetensors.torch import load_file
        except ImportError as error:
            raise ImportError(f"{path}: reading .safetensors needs `pip install safetensors`") from error
        return load_file(path, device="cpu")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.jit.load(path, map_location="cpu").state_dict()
    except RuntimeError:
        pass  # not a TorchScript archive: a pickled state dict (as clip.load assumes too)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise RuntimeError(
            f"{path} holds Python objects besides tensors, and loading those could run "
            f"arbitrary code, so it is not done here. If you trust the file, extract the "
            f"weights once: ckpt = torch.load(path, weights_only=False); "
            f"torch.save(ckpt['state_dict'], 'clip_weights.pt')") from error


# Wrapper keys of training checkpoints (open_clip saves {"epoch", "name", "state_dict", ...}).
_WRAPPERS = ("state_dict", "model", "module")
# Keys with no counterpart in OpenAI's CLIP class, safe to drop: SigLIP's logit bias, causal
# masks saved as buffers by older open_clip versions, and the scalar extras of OpenAI's
# TorchScript archives.
_DROP = re.compile(r"^(logit_bias|attn_mask|visual\.attn_mask|input_resolution|context_length|"
                   r"vocab_size)$")
# open_clip's CustomTextCLIP keeps the text tower under "text."; these are its names.
_TEXT_KEYS = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.",
              "text_projection", "attn_mask")


def to_openai_state_dict(checkpoint):
    """Map a CLIP checkpoint to the key layout of ``clip.model.CLIP`` (idempotent).

    Handles, in this order:
    1. wrappers: ``{"state_dict": ...}``, ``{"model": ...}``, ``{"module": ...}``;
    2. a ``module.`` prefix (DistributedDataParallel) on every key;
    3. open_clip ``CustomTextCLIP``: ``text.<name>`` -> ``<name>`` for the text tower;
    4. a text projection stored as ``nn.Linear`` (``text_projection.weight`` of shape
       ``(D, W)``): transposed to OpenAI's ``(W, D)`` matrix; a non-zero bias is refused;
    5. keys OpenAI's class has no use for (``logit_bias``, ``attn_mask`` buffers, the scalar
       extras of TorchScript archives) are dropped.
    open_clip's plain ``CLIP`` class (ViT-B/16 BioCLIP and the OpenAI-architecture models)
    already uses OpenAI's names for everything else (``visual.*``, ``transformer.*``, ...).
    Any other layout difference (LayerScale ``ls_1``, CoCa decoders, attention pooling,
    Hugging Face ``text_model.*``) is reported by :func:`build_clip` as unexpected keys.
    """
    sd = checkpoint
    while isinstance(sd, dict):
        inner = [k for k in _WRAPPERS if isinstance(sd.get(k), dict)]
        if not inner:
            break
        sd = sd[inner[0]]
    if not isinstance(sd, dict) or not all(torch.is_tensor(v) for v in sd.values()):
        bad = sorted(k for k, v in sd.items() if not torch.is_tensor(v)) if isinstance(sd, dict) else []
        raise ValueError(f"not a CLIP state dict: non-tensor entries {bad[:8]}")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    out = {}
    for key, value in sd.items():
        if key.startswith("text.") and key[len("text."):].startswith(_TEXT_KEYS):
            key = key[len("text."):]
        if _DROP.match(key):
            continue
        out[key] = value
    if "text_projection.weight" in out:
        weight = out.pop("text_projection.weight")
        bias = out.pop("text_projection.bias", None)
        if bias is not None and bool(bias.abs().max() > 0):
            raise ValueError("text_projection has a bias; OpenAI's CLIP layout has none")
        out["text_projection"] = weight.t().contiguous()
    return out


def _count_blocks(sd, prefix):
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({m.group(1) for k in sd for m in [pattern.match(k)] if m})


def build_clip(state_dict, text_heads=None, source="state dict"):
    """Build a float32 ``clip.model.CLIP`` from a state dict (OpenAI or OpenCLIP layout).

    The architecture is read off the tensor shapes, as ``clip.model.build_model`` does;
    head counts follow CLIP's ``width // 64`` rule (vision: always, it is fixed by the CLIP
    class; text: unless ``text_heads`` is given). Missing or unexpected keys raise a
    ``ValueError`` naming them and ``source``.
    """
    sd = to_openai_state_dict(state_dict)
    required = ("token_embedding.weight", "positional_embedding", "ln_final.weight", "text_projection")
    missing = [k for k in required if k not in sd]
    if missing or not any(k.startswith("visual.") for k in sd):
        raise ValueError(f"{source}: not a CLIP checkpoint in OpenAI/OpenCLIP layout "
                         f"(missing {missing or ['visual.*']}; first keys: {sorted(sd)[:6]})")
    if "visual.proj" in sd:  # ViT
        vision_width = sd["visual.conv1.weight"].shape[0]
        vision_layers = _count_blocks(sd, "visual.transformer.resblocks.")
        patch = sd["visual.conv1.weight"].shape[-1]
        grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        resolution = patch * grid
    else:  # ModifiedResNet (RN50 ...): loads fine, but the VisionTower needs a ViT
        vision_layers = tuple(_count_blocks(sd, f"visual.layer{b}.") for b in (1, 2, 3, 4))
        vision_width = sd["visual.layer1.0.conv1.weight"].shape[0]
        patch = None
        resolution = round((sd["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5) * 32
    width = sd["ln_final.weight"].shape[0]
    heads = text_heads or max(1, width // 64)
    if width % heads:
        raise ValueError(f"{source}: text width {width} is not divisible by text_heads={heads}")
    model = _new_clip(
        embed_dim=sd["text_projection"].shape[1],
        image_resolution=resolution,
        vision_layers=vision_layers,
        vision_width=vision_width,
        vision_patch_size=patch,
        context_length=sd["positional_embedding"].shape[0],
        vocab_size=sd["token_embedding.weight"].shape[0],
        transformer_width=width,
        transformer_heads=heads,
        transformer_layers=_count_blocks(sd, "transformer.resblocks."),
    )
    result = model.load_state_dict(sd, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{source}: the checkpoint does not fit OpenAI's CLIP class; missing keys "
            f"{result.missing_keys[:8]}, unexpected keys {result.unexpected_keys[:8]} "
            f"(architectures with LayerScale, attention pooling, CoCa decoders or Hugging Face "
            f"naming are not supported)")
    return model.float().eval()


def cast_clip_weights(model, dtype):
    """Cast CLIP's matmul weights to ``dtype`` in place, like ``clip.model.convert_weights``.

    Conv/Linear weights and biases, attention projections and the two output projections go
    to ``dtype``; LayerNorms, embeddings, class embedding and logit scale stay fp32 (CLIP's
    LayerNorm upcasts internally). Works for fp16 and bf16. Returns ``model``.
    """
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            module.weight.data = module.weight.data.to(dtype)
            if module.bias is not None:
                module.bias.data = module.bias.data.to(dtype)
        if isinstance(module, nn.MultiheadAttention):
            for name in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight",
                         "in_proj_bias", "bias_k", "bias_v"):
                tensor = getattr(module, name)
                if tensor is not None:
                    tensor.data = tensor.data.to(dtype)
        for name in ("text_projection", "proj"):
            tensor = getattr(module, name, None)
            if isinstance(tensor, torch.Tensor):
                tensor.data = tensor.data.to(dtype)
    return model


def _apply_precision(model, precision, device):
    if precision is None:
        precision = "fp16" if device.type == "cuda" else "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    model.float()
    if precision in _HALF:
        if device.type == "cpu":
            warnings.warn(f"precision {precision!r} on the CPU: using fp32 instead")
        else:
            cast_clip_weights(model, _HALF[precision])
    return model.to(device).eval()


def tiny_clip(embed_dim=32, image_resolution=32, vision_layers=4, vision_width=64,
              vision_patch_size=8, transformer_width=32, transformer_heads=2,
              transformer_layers=2, context_length=77, seed=0):
    """A random-weight ``clip.model.CLIP`` for tests: float32, eval mode, CPU.

    Vocabulary 49408 so ``clip.tokenize`` works. Vision heads follow CLIP's fixed
    ``vision_width // 64`` rule, so ``vision_width`` must be a multiple of 64.
    Besides CLIP's own ``initialize_parameters`` (run by the constructor), LayerNorm affine
    parameters and all linear/attention biases get small random values: CLIP's init leaves
    them at 1 and 0, which would hide code that forgets a bias or a LayerNorm.
    The global RNG state is left untouched.
    """
    if vision_width % 64:
        raise ValueError(f"vision_width must be a multiple of 64 (CLIP uses width // 64 heads), "
                         f"got {vision_width}")
    if transformer_width % transformer_heads:
        raise ValueError(f"transformer_width {transformer_width} is not divisible by "
                         f"transformer_heads {transformer_heads}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _new_clip(
            embed_dim=embed_dim, image_resolution=image_resolution, vision_layers=vision_layers,
            vision_width=vision_width, vision_patch_size=vision_patch_size,
            context_length=context_length, vocab_size=49408, transformer_width=transformer_width,
            transformer_heads=transformer_heads, transformer_layers=transformer_layers)
        model.initialize_parameters()
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith("bias"):
                    param.normal_(0.0, 0.02)
                elif re.search(r"ln_\w+\.weight$", name):
                    param.normal_(1.0, 0.1)
    return model.float().eval()


#: What MaPLe's / PromptSRC's vendored ``clip`` needs to build plain CLIP blocks: their
#: ``CLIP`` takes a ``design_details`` dict and builds prompt-carrying blocks unless the
#: trainer is CoOp with no prompt depth. Our towers add the prompts themselves.
PLAIN_DESIGN = {"trainer": "CoOp", "vision_depth": 0, "language_depth": 0,
                "vision_ctx": 0, "language_ctx": 0, "maple_length": 0}


def _new_clip(**dims):
    """Instantiate the importable ``clip.model.CLIP`` (OpenAI's package, or the copy vendored
    in a MaPLe / PromptSRC checkout, which shadows it when run from there)."""
    if "design_details" in inspect.signature(CLIP).parameters:
        dims["design_details"] = dict(PLAIN_DESIGN)
    return CLIP(**dims)


# --------------------------------------------------------------------------- towers


def scale_layers(layers=(4, 7), depth=12, reference_depth=12):
    """Scale layer-token block indices given for a ``reference_depth``-block ViT to ``depth``.

    ``p -> floor(p * depth / reference_depth + 1/2)``, clamped into ``[1, depth - 1]`` (the last
    block's token is always kept separately). Examples: ``(4, 7)`` stays ``(4, 7)`` for ViT-B
    (12 blocks), becomes ``(8, 14)`` for ViT-L (24) and ``(1, 2)`` for a 4-block test model.
    Raises ``ValueError`` when the scaled indices are not strictly increasing (too shallow).
    """
    if depth < 2:
        raise ValueError(f"a ViT with {depth} block(s) has no intermediate layer tokens")
    scaled = tuple(min(depth - 1, max(1, math.floor(p * depth / reference_depth + 0.5)))
                   for p in layers)
    if any(b <= a for a, b in zip(scaled, scaled[1:])):
        raise ValueError(f"layers {tuple(layers)} scaled from {reference_depth} to {depth} blocks "
                         f"give {scaled}, which is not strictly increasing; pass explicit "
                         f"layers for this depth")
    return scaled


def _block_mask(block, length, dtype, device, cache):
    """The block's attention mask cut to ``length``, on ``device``; cached per tower, since
    OpenAI's blocks keep it as a plain attribute that ``model.to(device)`` does not move."""
    mask = getattr(block, "attn_mask", None)
    if mask is None:
        return None
    key = (id(block), length, dtype, device)
    source, cut = cache.get(key, (None, None))
    if source is not mask:  # first use, or the block's mask was replaced
        cut = mask[:length, :length].to(dtype=dtype, device=device)
        cache[key] = (mask, cut)
    return cut


def _run_block(block, x, attn_mask=None):
    """One pre-LN residual attention block on ``x (L, N, W)`` from its submodules."""
    h = block.ln_1(x)
    x = x + block.attn(h, h, h, need_weights=False, attn_mask=attn_mask)[0]
    return x + block.mlp(block.ln_2(x))


def _pass_through(block, h):
    """Carry kept tokens ``h (k, B, W)`` through ``block``, each attending only to itself.

    With a single key the softmax weight is 1, so attention reduces to its value and output
    projections: ``h + out_proj(V ln_1(h))``; then the block's MLP as usual.
    """
    attn = block.attn
    width = h.shape[-1]
    if attn.in_proj_weight is not None:
        weight = attn.in_proj_weight[2 * width:]
    else:
        weight = attn.v_proj_weight
    bias = attn.in_proj_bias[2 * width:] if attn.in_proj_bias is not None else None
    h = h + attn.out_proj(F.linear(block.ln_1(h), weight, bias))
    return h + block.mlp(block.ln_2(h))


def _is_causal(mask, length):
    if mask is None or tuple(mask.shape) != (length, length):
        return False
    upper = torch.ones(length, length, dtype=torch.bool, device=mask.device).triu(1)
    blocked = torch.isinf(mask) & (mask < 0)
    return bool(torch.equal(blocked, upper) and (mask[~upper] == 0).all())


def _check_prompt(prompt, width, what):
    if prompt.dim() != 2 or prompt.shape[1] != width:
        raise ValueError(f"{what} must have shape (n, {width}), got {tuple(prompt.shape)}")


class TextTower(nn.Module):
    """CLIP's text transformer with MaPLe/PromptSRC deep prompts.

    Holds a reference to ``clip_model`` without registering it (no parameters of its own,
    nothing duplicated in checkpoints of modules that own a tower). ``calls`` counts passes.
    """

    def __init__(self, clip_model):
        super().__init__()
        object.__setattr__(self, "clip_model", clip_model)  # reference, not a submodule
        object.__setattr__(self, "blocks", list(clip_model.transformer.resblocks))
        self.num_layers = len(self.blocks)
        self.width = clip_model.ln_final.weight.shape[0]
        self.context_length = clip_model.positional_embedding.shape[0]
        # Causal attention: the EOT token never sees later positions, so those can be cut.
        self.causal = all(_is_causal(b.attn_mask, self.context_length) for b in self.blocks)
        self._masks = {}
        self.calls = 0

    @property
    def dtype(self):
        return self.clip_model.text_projection.dtype

    def forward(self, token_embeds, tokens, deep_prompts=None, truncate=True):
        """Text features for prompts given as token embeddings.

        Args:
            token_embeds: ``(N, L, W)`` input embeddings (SOS, context, name, EOT, padding),
                before the positional embedding; ``L <= context_length``.
            tokens: ``(N, L)`` token ids; the EOT token is the largest id (``argmax``).
            deep_prompts: ``None`` or a list of ``(n_j, W)`` tensors; entry ``j - 1`` replaces
                positions ``1..n_j`` (right after SOS) of the input of block ``j``
                (0-based, ``j = 1..len``), as MaPLe and PromptSRC do. Blocks past the list
                are untouched.
            truncate: drop positions after the batch's last EOT before the transformer.
                Exact because the mask is causal; skipped when it is not.

        Returns:
            ``(N, D)`` unnormalised text features in the tower's dtype.
        """
        self.calls += 1
        model = self.clip_model
        if token_embeds.dim() != 3 or token_embeds.shape[-1] != self.width:
            raise ValueError(f"token_embeds must be (N, L, {self.width}), got {tuple(token_embeds.shape)}")
        count, length = token_embeds.shape[:2]
        if tuple(tokens.shape) != (count, length):
            raise ValueError(f"tokens must be {(count, length)}, got {tuple(tokens.shape)}")
        if length > self.context_length:
            raise ValueError(f"sequence length {length} exceeds the context length {self.context_length}")
        if length < self.context_length and not self.causal:
            raise ValueError("shortened sequences need a causal text attention mask")
        deep_prompts = list(deep_prompts or [])
        if len(deep_prompts) > self.num_layers - 1:
            raise ValueError(f"{len(deep_prompts)} deep text prompts for {self.num_layers} blocks "
                             f"(at most {self.num_layers - 1}: block 0 takes the shallow context)")
        eot = tokens.argmax(dim=-1)
        first_eot, last_eot = (int(v) for v in torch.stack([eot.min(), eot.max()]).tolist())
        for j, prompt in enumerate(deep_prompts, start=1):
            _check_prompt(prompt, self.width, f"deep text prompt {j}")
            if 1 + prompt.shape[0] > first_eot:
                raise ValueError(f"deep text prompt {j} has {prompt.shape[0]} tokens and would "
                                 f"overwrite an EOT token at position {first_eot}")
        if truncate and self.causal:
            length = last_eot + 1
            token_embeds = token_embeds[:, :length]
        dtype = self.dtype
        x = token_embeds.to(dtype) + model.positional_embedding[:length].to(dtype)
        x = x.permute(1, 0, 2)  # (L, N, W)
        for i, block in enumerate(self.blocks):
            if 1 <= i <= len(deep_prompts):
                prompt = deep_prompts[i - 1].to(dtype)
                prompt = prompt.unsqueeze(1).expand(-1, count, -1)
                x = torch.cat([x[:1], prompt, x[1 + prompt.shape[0]:]], dim=0)
            x = _run_block(block, x, _block_mask(block, length, dtype, x.device, self._masks))
        x = x[eot, torch.arange(count, device=x.device)]  # (N, W): the EOT token of each prompt
        x = model.ln_final(x).to(dtype)
        return x @ model.text_projection


class VisionTower(nn.Module):
    """CLIP's ViT with appended visual prompts and pass-through layer tokens (DESIGN 4.1-4.2).

    Holds a reference to ``clip_model`` (not registered; no parameters of its own). Works for
    any width, depth and patch size. ``calls`` counts forward passes so callers can check
    one image pass per step.
    """

    def __init__(self, clip_model):
        super().__init__()
        visual = clip_model.visual
        if not all(hasattr(visual, n) for n in ("conv1", "class_embedding", "transformer", "proj")):
            raise TypeError(f"VisionTower needs a ViT CLIP backbone; got {type(visual).__name__} "
                            f"(ResNet backbones have no class token or visual prompts)")
        object.__setattr__(self, "visual", visual)  # reference, not a submodule
        object.__setattr__(self, "blocks", list(visual.transformer.resblocks))
        for i, block in enumerate(self.blocks):
            if block.attn.bias_k is not None or block.attn.add_zero_attn:
                raise ValueError(f"vision block {i}: attention with bias_k/add_zero_attn is not "
                                 f"supported by the pass-through")
        self.num_layers = len(self.blocks)
        self.width = visual.conv1.weight.shape[0]
        self.patch_size = visual.conv1.weight.shape[-1]
        self.input_resolution = getattr(visual, "input_resolution", None)
        self.output_dim = visual.proj.shape[1]
        self._masks = {}
        self.calls = 0

    @property
    def dtype(self):
        return self.visual.conv1.weight.dtype

    def _check_keep(self, keep_layers):
        keep = tuple(int(p) for p in keep_layers)
        if any(b <= a for a, b in zip(keep, keep[1:])) or any(not 1 <= p < self.num_layers for p in keep):
            raise ValueError(f"keep_layers must be strictly increasing block counts in "
                             f"[1, {self.num_layers - 1}] (the last block's token is always "
                             f"returned), got {tuple(keep_layers)}; see scale_layers()")
        return keep

    def forward(self, images, shallow_prompts=None, deep_prompts=None, keep_layers=(),
                pass_through=True):
        """Image features and layer tokens.

        Args:
            images: ``(B, 3, H, W)``, cast to the tower's dtype.
            shallow_prompts: ``None`` or ``(n, Wv)``, appended after the patch tokens once the
                positional embedding is added (before ``ln_pre``), as MaPLe/PromptSRC do.
            deep_prompts: ``None`` or a list of ``(n, Wv)``; entry ``j - 1`` replaces the last
                ``n`` tokens of the input of block ``j`` (0-based, ``j = 1..len``). Needs
                ``shallow_prompts`` with the same ``n``.
            keep_layers: 1-based block counts ``p_1 < ... < p_m < depth``: the class token
                after block ``p`` (output of ``resblocks[p - 1]``) is kept.
            pass_through: carry each kept token through every later block attending only to
                itself (DESIGN 4.2), then ``ln_post`` and ``proj``. ``False`` takes the raw
                kept tokens straight to ``ln_post`` and ``proj`` (ablation).

        Returns:
            ``(final (B, D), layer_tokens)``: ``layer_tokens`` is ``(B, m + 1, D)`` holding
            ``[h_{p_1}, ..., h_{p_m}, final]`` in the joint space, or ``None`` when
            ``keep_layers`` is empty. Both in the tower's dtype.
        """
        self.calls += 1
        visual, dtype = self.visual, self.dtype
        keep = self._check_keep(keep_layers)
        if images.dim() != 4 or (self.input_resolution and images.shape[-2:] != (self.input_resolution,) * 2):
            raise ValueError(f"images must be (B, 3, {self.input_resolution}, {self.input_resolution}), "
                             f"got {tuple(images.shape)}")
        x = visual.conv1(images.to(dtype))  # (B, W, g, g)
        batch = x.shape[0]
        x = x.flatten(2).transpose(1, 2)  # (B, g*g, W)
        cls = visual.class_embedding.to(dtype).expand(batch, 1, -1)
        x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(dtype)
        n_prompt = 0
        if shallow_prompts is not None:
            _check_prompt(shallow_prompts, self.width, "shallow vision prompt")
            n_prompt = shallow_prompts.shape[0]
            x = torch.cat([x, shallow_prompts.to(dtype).expand(batch, -1, -1)], dim=1)
        deep_prompts = list(deep_prompts or [])
        if deep_prompts and shallow_prompts is None:
            raise ValueError("deep vision prompts replace the shallow ones; pass shallow_prompts too")
        if len(deep_prompts) > self.num_layers - 1:
            raise ValueError(f"{len(deep_prompts)} deep vision prompts for {self.num_layers} blocks "
                             f"(at most {self.num_layers - 1})")
        for j, prompt in enumerate(deep_prompts, start=1):
            _check_prompt(prompt, self.width, f"deep vision prompt {j}")
            if prompt.shape[0] != n_prompt:
                raise ValueError(f"deep vision prompt {j} has {prompt.shape[0]} tokens, the shallow "
                                 f"prompt {n_prompt}")
        x = visual.ln_pre(x).permute(1, 0, 2)  # (S, B, W)
        length = x.shape[0]
        kept = None  # (k, B, W) class tokens kept so far
        for i, block in enumerate(self.blocks):
            if 1 <= i <= len(deep_prompts):
                prompt = deep_prompts[i - 1].to(dtype).unsqueeze(1).expand(-1, batch, -1)
                x = torch.cat([x[:length - n_prompt], prompt], dim=0)
            if pass_through and kept is not None:
                kept = _pass_through(block, kept)
            x = _run_block(block, x, _block_mask(block, length, dtype, x.device, self._masks))
            if i + 1 in keep:
                kept = x[:1] if kept is None else torch.cat([kept, x[:1]], dim=0)
        tokens = x[:1] if kept is None else torch.cat([kept, x[:1]], dim=0)  # (m+1, B, W)
        tokens = visual.ln_post(tokens.transpose(0, 1)) @ visual.proj  # (B, m+1, D)
        return tokens[:, -1], (tokens if keep else None)


# --------------------------------------------------------------------------- command line


def main(argv=None):
    """``python -m hyptree clip make-tiny OUT.pt``: write a random tiny CLIP state dict.

    For offline smoke runs (``TRAINER.HYPTREE.CLIP_PATH OUT.pt``). Its text tower uses
    ``max(1, width // 64)`` heads, the count :func:`load_clip` infers for state-dict files,
    so the file loads back as exactly the model that was saved.
    """
    import argparse

    parser = argparse.ArgumentParser(prog="python -m hyptree clip",
                                     description="CLIP weight utilities")
    sub = parser.add_subparsers(dest="command", required=True)
    tiny = sub.add_parser("make-tiny", help="write a random tiny CLIP (for CPU smoke runs)")
    tiny.add_argument("out", help="output file (a torch state dict, e.g. tiny_clip.pt)")
    tiny.add_argument("--image-size", type=int, default=32, help="input resolution (default 32)")
    tiny.add_argument("--patch-size", type=int, default=8, help="ViT patch size (default 8)")
    tiny.add_argument("--vision-layers", type=int, default=4, help="ViT blocks (default 4)")
    tiny.add_argument("--text-layers", type=int, default=2, help="text blocks (default 2)")
    tiny.add_argument("--text-width", type=int, default=32, help="text width (default 32)")
    tiny.add_argument("--embed-dim", type=int, default=32, help="joint embedding size (default 32)")
    tiny.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.image_size % args.patch_size:
        parser.error(f"--image-size {args.image_size} is not a multiple of --patch-size {args.patch_size}")
    model = tiny_clip(embed_dim=args.embed_dim, image_resolution=args.image_size,
                      vision_layers=args.vision_layers, vision_patch_size=args.patch_size,
                      transformer_width=args.text_width,
                      transformer_heads=max(1, args.text_width // 64),
                      transformer_layers=args.text_layers, seed=args.seed)
    out = os.path.expanduser(args.out)
    if os.path.dirname(out):
        os.makedirs(os.path.dirname(out), exist_ok=True)
    torch.save(model.state_dict(), out)
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {out}: tiny CLIP, {params:,} parameters, {args.image_size}px input, "
          f"{args.vision_layers} vision / {args.text_layers} text blocks")
    return 0
