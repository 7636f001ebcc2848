"""Running CLIP's two towers with deep prompts and layer-token pass-through.

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

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["scale_layers", "TextTower", "VisionTower"]


def scale_layers(layers=(4, 7, 11), depth=12, reference_depth=12):
    """The tower's ``keep_layers`` for layer-token block indices given for a ``reference_depth``-block ViT.

    Convention (the official code's): ``layers`` are **0-based block indices**; the class
    token is taken after that block has run. The last entry must be the final block
    (``reference_depth - 1``), whose token the tower always returns. The default ``(4, 7, 11)``
    takes the tokens after the 5th, 8th and 12th block of ViT-B/16.

    The intermediate indices become 1-based block counts ``i + 1`` (the number of blocks run),
    scaled to ``depth`` as ``floor((i + 1) * depth / reference_depth + 1/2)`` and clamped into
    ``[1, depth - 1]``. Examples: ``(4, 7, 11)`` gives ``(5, 8)`` for 12 blocks, ``(10, 16)``
    for ViT-L (24) and ``(2, 3)`` for a 4-block test model. Raises ``ValueError`` when the
    last index is not the final block, or the scaled counts are not strictly increasing.
    """
    layers = tuple(int(i) for i in layers)
    if depth < 2:
        raise ValueError(f"a ViT with {depth} block(s) has no intermediate layer tokens")
    if not layers or layers[-1] != reference_depth - 1:
        raise ValueError(
            f"layers {layers}: 0-based block indices ending with the final block "
            f"{reference_depth - 1} of the {reference_depth}-block reference ViT (e.g. (4, 7, 11))"
        )
    if any(b <= a for a, b in zip(layers, layers[1:])) or layers[0] < 0:
        raise ValueError(f"layers {layers}: expected strictly increasing 0-based block indices")
    scaled = tuple(min(depth - 1, max(1, math.floor((i + 1) * depth / reference_depth + 0.5))) for i in layers[:-1])
    if any(b <= a for a, b in zip(scaled, scaled[1:])):
        raise ValueError(
            f"layers {layers} scaled from {reference_depth} to {depth} blocks "
            f"give block counts {scaled}, which are not strictly increasing; pass explicit "
            f"layers for this depth"
        )
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
        weight = attn.in_proj_weight[2 * width :]
    else:
        weight = attn.v_proj_weight
    bias = attn.in_proj_bias[2 * width :] if attn.in_proj_bias is not None else None
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

    def forward(self, token_embeds, tokens, deep_prompts=None, truncate=True, chunk=0, shared=0):
        """Text features for prompts given as token embeddings.

        Args:
            token_embeds: ``(N, L, W)`` input embeddings (SOS, context, name, EOT, padding),
                before the positional embedding; ``L <= context_length``.
            tokens: ``(N, L)`` token ids; the EOT token is the largest id (``argmax``).
            deep_prompts: ``None`` or a list of ``(n_j, W)`` tensors; entry ``j - 1`` replaces
                positions ``1..n_j`` (right after SOS) of the input of block ``j``
                (0-based, ``j = 1..len``), as MaPLe and PromptSRC do. Blocks past the list
                are untouched.
            truncate: run each prompt only up to its own EOT: the prompts are grouped by
                length and each group is one transformer call over ``EOT + 1`` positions,
                so no prompt pays for the longest name's padding. Exact because the mask
                is causal (positions after a prompt's EOT never reach it); skipped (one
                call over all ``L`` positions) when it is not.
            chunk: ``> 0`` runs each group in chunks of at most ``chunk`` prompts, each
                under activation checkpointing when gradients are recorded (its
                activations are recomputed in backward instead of kept): memory for
                backward then grows with the chunk, not with ``N``. Same features and
                gradients as ``chunk=0``.
            shared: the first ``shared`` positions are the same in every prompt (tokens and
                embeddings: ``PromptOutput.shared``). With ``truncate``, their activations
                are computed once per call and each prompt runs only its own positions,
                attending to the shared ones (exact under the causal mask: a shared position
                never sees a prompt's own tokens). ``0``: every position of every prompt.

        Returns:
            ``(N, D)`` unnormalised text features in the tower's dtype.
        """
        self.calls += 1
        if token_embeds.dim() != 3 or token_embeds.shape[-1] != self.width:
            raise ValueError(f"token_embeds must be (N, L, {self.width}), got {tuple(token_embeds.shape)}")
        count, length = token_embeds.shape[:2]
        if tuple(tokens.shape) != (count, length):
            raise ValueError(f"tokens must be {(count, length)}, got {tuple(tokens.shape)}")
        if length > self.context_length:
            raise ValueError(f"sequence length {length} exceeds the context length {self.context_length}")
        if length < self.context_length and not self.causal:
            raise ValueError("shortened sequences need a causal text attention mask")
        if int(chunk) < 0:
            raise ValueError(f"chunk must be >= 0 (0 = one call per length group), got {chunk}")
        deep_prompts = list(deep_prompts or [])
        if len(deep_prompts) > self.num_layers - 1:
            raise ValueError(
                f"{len(deep_prompts)} deep text prompts for {self.num_layers} blocks "
                f"(at most {self.num_layers - 1}: block 0 takes the shallow context)"
            )
        eot = tokens.argmax(dim=-1)
        eot_host = eot.cpu().numpy()  # the one device-to-host copy of the call
        first_eot = int(eot_host.min())
        for j, prompt in enumerate(deep_prompts, start=1):
            _check_prompt(prompt, self.width, f"deep text prompt {j}")
            if 1 + prompt.shape[0] > first_eot:
                raise ValueError(
                    f"deep text prompt {j} has {prompt.shape[0]} tokens and would "
                    f"overwrite an EOT token at position {first_eot}"
                )
        grouped = truncate and self.causal
        groups = _length_groups(eot_host) if grouped else [(length, None)]
        shared = int(shared) if grouped and all(1 + p.shape[0] <= int(shared) for p in deep_prompts) else 0
        shared = min(shared, first_eot)  # every prompt keeps at least its EOT position
        encode = self._encode_shared if shared else self._encode
        prefix = (token_embeds[:1, :shared],) if shared else ()
        step = int(chunk) or count
        keep = torch.is_grad_enabled() and (token_embeds.requires_grad or any(p.requires_grad for p in deep_prompts))
        checkpointed = bool(chunk) and keep
        pieces, order = [], []
        for size, rows in groups:
            if rows is None:
                embeds, ends = token_embeds[:, :size], eot
            else:
                index = torch.from_numpy(rows).to(token_embeds.device)
                embeds, ends = token_embeds.index_select(0, index)[:, :size], eot.index_select(0, index)
                order.append(index)
            if shared:
                embeds, ends = embeds[:, shared:], ends - shared
            for start in range(0, embeds.shape[0], step):
                args = (*prefix, embeds[start : start + step], ends[start : start + step], *deep_prompts)
                if checkpointed:
                    pieces.append(checkpoint(encode, *args, use_reentrant=False))
                else:
                    pieces.append(encode(*args))
        feats = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
        if len(order) > 1:  # back to the input order
            order = torch.cat(order)
            inverse = torch.empty_like(order)
            inverse[order] = torch.arange(count, device=order.device)
            feats = feats.index_select(0, inverse)
        return feats

    def _encode(self, token_embeds, eot, *deep_prompts):
        """The transformer over ``token_embeds (n, L, W)`` (all ``L`` positions), EOT rows out."""
        model = self.clip_model
        count, length = token_embeds.shape[:2]
        dtype = self.dtype
        x = token_embeds.to(dtype) + model.positional_embedding[:length].to(dtype)
        x = x.permute(1, 0, 2)  # (L, N, W)
        for i, block in enumerate(self.blocks):
            if 1 <= i <= len(deep_prompts):
                prompt = deep_prompts[i - 1].to(dtype)
                prompt = prompt.unsqueeze(1).expand(-1, count, -1)
                x = torch.cat([x[:1], prompt, x[1 + prompt.shape[0] :]], dim=0)
            x = _run_block(block, x, _block_mask(block, length, dtype, x.device, self._masks))
        return self._project(x, eot)

    def _encode_shared(self, prefix, token_embeds, eot, *deep_prompts):
        """:meth:`_encode` for prompts that all start with ``prefix (1, P, W)``: the prefix runs
        once (batch 1), each prompt's own positions ``token_embeds (n, S, W)`` (absolute
        positions ``P..P+S-1``) attend to the prefix's and their own; ``eot`` is relative to
        ``P``. Deep prompts (positions ``1..n_j < P``) replace prefix positions only."""
        model = self.clip_model
        dtype, count = self.dtype, token_embeds.shape[0]
        shared, length = prefix.shape[1], token_embeds.shape[1]
        pos = model.positional_embedding.to(dtype)
        xp = (prefix.to(dtype) + pos[:shared]).permute(1, 0, 2)  # (P, 1, W)
        x = (token_embeds.to(dtype) + pos[shared : shared + length]).permute(1, 0, 2)  # (S, n, W)
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            if 1 <= i <= len(deep_prompts):
                prompt = deep_prompts[i - 1].to(dtype).unsqueeze(1)
                xp = torch.cat([xp[:1], prompt, xp[1 + prompt.shape[0] :]], dim=0)
            mask = _block_mask(block, shared + length, dtype, x.device, self._masks)
            hp, h = block.ln_1(xp), block.ln_1(x)
            keys = torch.cat([hp.expand(-1, count, -1), h], dim=0)  # (P + S, n, W)
            x = x + block.attn(h, keys, keys, need_weights=False, attn_mask=mask[shared:])[0]
            x = x + block.mlp(block.ln_2(x))
            if i < last:  # the prefix's own update (its last one feeds nothing)
                xp = xp + block.attn(hp, hp, hp, need_weights=False, attn_mask=mask[:shared, :shared])[0]
                xp = xp + block.mlp(block.ln_2(xp))
        return self._project(x, eot)

    def _project(self, x, eot):
        """Features from the last block's output ``x (L, n, W)``: each prompt's EOT token, the
        final LayerNorm and the text projection."""
        x = x[eot, torch.arange(x.shape[1], device=x.device)]  # (n, W)
        return self.clip_model.ln_final(x).to(self.dtype) @ self.clip_model.text_projection


def _length_groups(eot):
    """``[(length, rows)]``: the prompts of each length ``EOT + 1``, shortest first; ``rows``
    is an int64 numpy index, or ``None`` when every prompt has the same length."""
    lengths = eot.astype(np.int64) + 1
    sizes = np.unique(lengths)
    if len(sizes) == 1:
        return [(int(sizes[0]), None)]
    return [(int(size), np.flatnonzero(lengths == size)) for size in sizes]


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
            raise TypeError(
                f"VisionTower needs a ViT CLIP backbone; got {type(visual).__name__} "
                f"(ResNet backbones have no class token or visual prompts)"
            )
        object.__setattr__(self, "visual", visual)  # reference, not a submodule
        object.__setattr__(self, "blocks", list(visual.transformer.resblocks))
        for i, block in enumerate(self.blocks):
            if block.attn.bias_k is not None or block.attn.add_zero_attn:
                raise ValueError(
                    f"vision block {i}: attention with bias_k/add_zero_attn is not supported by the pass-through"
                )
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
            raise ValueError(
                f"keep_layers must be strictly increasing block counts in "
                f"[1, {self.num_layers - 1}] (the last block's token is always "
                f"returned), got {tuple(keep_layers)}; see scale_layers()"
            )
        return keep

    def forward(self, images, shallow_prompts=None, deep_prompts=None, keep_layers=(), pass_through=True):
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
            raise ValueError(
                f"images must be (B, 3, {self.input_resolution}, {self.input_resolution}), got {tuple(images.shape)}"
            )
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
            raise ValueError(
                f"{len(deep_prompts)} deep vision prompts for {self.num_layers} blocks (at most {self.num_layers - 1})"
            )
        for j, prompt in enumerate(deep_prompts, start=1):
            _check_prompt(prompt, self.width, f"deep vision prompt {j}")
            if prompt.shape[0] != n_prompt:
                raise ValueError(f"deep vision prompt {j} has {prompt.shape[0]} tokens, the shallow prompt {n_prompt}")
        x = visual.ln_pre(x).permute(1, 0, 2)  # (S, B, W)
        length = x.shape[0]
        kept = None  # (k, B, W) class tokens kept so far
        for i, block in enumerate(self.blocks):
            if 1 <= i <= len(deep_prompts):
                prompt = deep_prompts[i - 1].to(dtype).unsqueeze(1).expand(-1, batch, -1)
                x = torch.cat([x[: length - n_prompt], prompt], dim=0)
            if pass_through and kept is not None:
                kept = _pass_through(block, kept)
            x = _run_block(block, x, _block_mask(block, length, dtype, x.device, self._masks))
            if i + 1 in keep:
                kept = x[:1] if kept is None else torch.cat([kept, x[:1]], dim=0)
        tokens = x[:1] if kept is None else torch.cat([kept, x[:1]], dim=0)  # (m+1, B, W)
        tokens = visual.ln_post(tokens.transpose(0, 1)) @ visual.proj  # (B, m+1, D)
        return tokens[:, -1], (tokens if keep else None)
