"""Loading CLIP: checkpoints (OpenAI TorchScript, state dicts, OpenCLIP) to ``clip.model.CLIP``.

* :func:`load_clip` - a named model (cached/downloaded by the ``clip`` package) or a local
  file, built in fp32 from its state dict, then cast to a precision of :data:`PRECISIONS`;
* :func:`to_openai_state_dict` / :func:`build_clip` - OpenCLIP -> OpenAI key mapping and
  building the model from tensor shapes;
* :func:`cast_clip_weights` - CLIP's fp16/bf16 weight layout;
* :func:`tiny_clip` - random-weight models for tests, and the ``make-tiny`` command
  (:func:`main`, ``python -m hyptree clip make-tiny OUT.pt``).

Works on the ``clip`` package's model class (PyPI ``openai-clip``) and on the modified
copies vendored by MaPLe / PromptSRC (see :data:`PLAIN_DESIGN`). Running the towers is
:mod:`hyptree.model.towers`.
"""

import inspect
import os
import pickle
import re
import warnings

import torch
from torch import nn

with warnings.catch_warnings():
    # openai-clip imports pkg_resources (hence setuptools<81), which warns on every import
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    import clip
    from clip.model import CLIP

from hyptree.utils.files import atomic_open

__all__ = [
    "PRECISIONS",
    "load_clip",
    "build_clip",
    "to_openai_state_dict",
    "cast_clip_weights",
    "tiny_clip",
    "PLAIN_DESIGN",
    "main",
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
        raise FileNotFoundError(
            _missing_weights_message(name_or_path, root, "it is neither a known model name nor an existing file")
        )
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
        why = (
            f"{target} exists but does not match the published SHA256 and could not be downloaded again ({error})"
            if existed
            else f"downloading it to {target} failed ({error})"
        )
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
            f"torch.save(ckpt['state_dict'], 'clip_weights.pt')"
        ) from error


# Wrapper keys of training checkpoints (open_clip saves {"epoch", "name", "state_dict", ...}).
_WRAPPERS = ("state_dict", "model", "module")
# Keys with no counterpart in OpenAI's CLIP class, safe to drop: SigLIP's logit bias, causal
# masks saved as buffers by older open_clip versions, and the scalar extras of OpenAI's
# TorchScript archives.
_DROP = re.compile(
    r"^(logit_bias|attn_mask|visual\.attn_mask|input_resolution|context_length|"
    r"vocab_size)$"
)
# open_clip's CustomTextCLIP keeps the text tower under "text."; these are its names.
_TEXT_KEYS = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection", "attn_mask")


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
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    out = {}
    for key, value in sd.items():
        if key.startswith("text.") and key[len("text.") :].startswith(_TEXT_KEYS):
            key = key[len("text.") :]
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
        raise ValueError(
            f"{source}: not a CLIP checkpoint in OpenAI/OpenCLIP layout "
            f"(missing {missing or ['visual.*']}; first keys: {sorted(sd)[:6]})"
        )
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
            f"naming are not supported)"
        )
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
            for name in (
                "in_proj_weight",
                "q_proj_weight",
                "k_proj_weight",
                "v_proj_weight",
                "in_proj_bias",
                "bias_k",
                "bias_v",
            ):
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
            warnings.warn(f"precision {precision!r} on the CPU: using fp32 instead", stacklevel=2)
        else:
            cast_clip_weights(model, _HALF[precision])
    return model.to(device).eval()


def tiny_clip(
    embed_dim=32,
    image_resolution=32,
    vision_layers=4,
    vision_width=64,
    vision_patch_size=8,
    transformer_width=32,
    transformer_heads=2,
    transformer_layers=2,
    context_length=77,
    seed=0,
):
    """A random-weight ``clip.model.CLIP`` for tests: float32, eval mode, CPU.

    Vocabulary 49408 so ``clip.tokenize`` works. Vision heads follow CLIP's fixed
    ``vision_width // 64`` rule, so ``vision_width`` must be a multiple of 64.
    Besides CLIP's own ``initialize_parameters`` (run by the constructor), LayerNorm affine
    parameters and all linear/attention biases get small random values: CLIP's init leaves
    them at 1 and 0, which would hide code that forgets a bias or a LayerNorm.
    The global RNG state is left untouched.
    """
    if vision_width % 64:
        raise ValueError(f"vision_width must be a multiple of 64 (CLIP uses width // 64 heads), got {vision_width}")
    if transformer_width % transformer_heads:
        raise ValueError(
            f"transformer_width {transformer_width} is not divisible by transformer_heads {transformer_heads}"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _new_clip(
            embed_dim=embed_dim,
            image_resolution=image_resolution,
            vision_layers=vision_layers,
            vision_width=vision_width,
            vision_patch_size=vision_patch_size,
            context_length=context_length,
            vocab_size=49408,
            transformer_width=transformer_width,
            transformer_heads=transformer_heads,
            transformer_layers=transformer_layers,
        )
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
PLAIN_DESIGN = {
    "trainer": "CoOp",
    "vision_depth": 0,
    "language_depth": 0,
    "vision_ctx": 0,
    "language_ctx": 0,
    "maple_length": 0,
}


def _new_clip(**dims):
    """Instantiate the importable ``clip.model.CLIP`` (OpenAI's package, or the copy vendored
    in a MaPLe / PromptSRC checkout, which shadows it when run from there)."""
    if "design_details" in inspect.signature(CLIP).parameters:
        dims["design_details"] = dict(PLAIN_DESIGN)
    return CLIP(**dims)


# --------------------------------------------------------------------------- command line


def main(argv=None):
    """``python -m hyptree clip make-tiny OUT.pt``: write a random tiny CLIP state dict.

    For offline smoke runs (``TRAINER.HYPTREE.CLIP_PATH OUT.pt``). Its text tower uses
    ``max(1, width // 64)`` heads, the count :func:`load_clip` infers for state-dict files,
    so the file loads back as exactly the model that was saved.
    """
    import argparse

    parser = argparse.ArgumentParser(prog="python -m hyptree clip", description="CLIP weight utilities")
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
    model = tiny_clip(
        embed_dim=args.embed_dim,
        image_resolution=args.image_size,
        vision_layers=args.vision_layers,
        vision_patch_size=args.patch_size,
        transformer_width=args.text_width,
        transformer_heads=max(1, args.text_width // 64),
        transformer_layers=args.text_layers,
        seed=args.seed,
    )
    out = os.path.expanduser(args.out)
    with atomic_open(out, "wb") as f:  # creates the folder; never a half-written model file
        torch.save(model.state_dict(), f)
    params = sum(p.numel() for p in model.parameters())
    print(
        f"wrote {out}: tiny CLIP, {params:,} parameters, {args.image_size}px input, "
        f"{args.vision_layers} vision / {args.text_layers} text blocks"
    )
    return 0
