"""CoOp / MaPLe / PromptSRC prompt learners for any list of class or taxonomy-node names.

A learner owns only prompt parameters (and MaPLe's coupling layers); CLIP stays frozen
(:func:`freeze`). Calling it returns a :class:`PromptOutput` that the towers of
:mod:`hyptree.model.clip_model` consume::

    learner = build_prompt_learner("maple", clip_model, names)
    out = learner()
    text = text_tower(out.token_embeds, out.tokens, out.text_deep)              # (N, D)
    image, layers = vision_tower(images, out.vision_shallow, out.vision_deep,
                                 keep_layers=(4, 7))                           # (B, D), (B, 3, D)

Prompt text per name is ``[SOS] ctx_1 .. ctx_n [rest of ctx_init] name . [EOT]`` (CoOp's
class-token position "end"). The ``n`` context vectors are learned; when ``ctx_init`` has
more tokens than ``n`` the remaining words stay as fixed text (MaPLe and PromptSRC with
``n_ctx=2``/``"a photo of a"`` learn "a photo" and keep "of a"). Names are tokenised once
per name set into a buffer; each call is one embedding lookup and one concatenation, no
loop over names. ``set_names``/``with_names`` re-target a learner (e.g. base -> novel tree)
keeping its parameters.

Parameters are float32 whatever CLIP's precision (the towers cast prompts to their dtype),
so SGD updates are not lost to fp16 rounding.

Also here: PromptSRC's self-regulating losses and Gaussian prompt aggregation (GPA).
"""
import copy
import math
from collections import OrderedDict
from typing import List, NamedTuple, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clip.simple_tokenizer import SimpleTokenizer

from hyptree.model.clip_model import TextTower

__all__ = [
    "PromptOutput",
    "PromptLearner",
    "CoOpPromptLearner",
    "MaPLePromptLearner",
    "PromptSRCPromptLearner",
    "build_prompt_learner",
    "freeze",
    "tokenize_prompts",
    "DEFAULT_TEMPLATES",
    "TEXT_LOSS_WEIGHT",
    "IMAGE_LOSS_WEIGHT",
    "frozen_text_features",
    "self_regulating_losses",
    "GaussianPromptAggregator",
]

_TOKENIZER = None


def _tokenizer():
    global _TOKENIZER
    if _TOKENIZER is None:
        _TOKENIZER = SimpleTokenizer()
    return _TOKENIZER


def _special(name):
    return _tokenizer().encoder[name]


class PromptOutput(NamedTuple):
    """What a prompt learner hands to the towers.

    token_embeds: ``(N, L, Wt)`` input embeddings with the learned context at positions 1..n.
    tokens: ``(N, L)`` token ids (EOT = argmax per row).
    text_deep: list of ``(n, Wt)``, one per text block 1..J-1, or ``None``.
    vision_shallow: ``(n_v, Wv)`` appended visual prompt, or ``None``.
    vision_deep: list of ``(n_v, Wv)``, one per vision block 1..J-1, or ``None``.
    """

    token_embeds: torch.Tensor
    tokens: torch.Tensor
    text_deep: Optional[List[torch.Tensor]] = None
    vision_shallow: Optional[torch.Tensor] = None
    vision_deep: Optional[List[torch.Tensor]] = None


def freeze(clip_model):
    """Turn off gradients of every CLIP parameter and switch to eval mode; returns the model."""
    for param in clip_model.parameters():
        param.requires_grad_(False)
    return clip_model.eval()


def tokenize_prompts(texts, context_length=77, middle=None):
    """Token ids ``(len(texts), context_length)`` (int64) for prompt texts.

    ``middle`` (a list of ids) is inserted right after SOS, before the text: used for the
    context placeholders. Raises ``ValueError`` naming the text when a prompt does not fit.
    """
    tok = _tokenizer()
    sot, eot = _special("<|startoftext|>"), _special("<|endoftext|>")
    middle = list(middle or [])
    out = torch.zeros(len(texts), context_length, dtype=torch.long)
    for row, text in enumerate(texts):
        ids = [sot] + middle + tok.encode(text) + [eot]
        if len(ids) > context_length:
            raise ValueError(f"prompt for {text!r} has {len(ids)} tokens, more than the context "
                             f"length {context_length}; shorten the name or use a display name")
        out[row, :len(ids)] = torch.tensor(ids)
    return out


class PromptLearner(nn.Module):
    """Shared part: the learned text context and the name tokens.

    Args:
        clip_model: a CLIP model (only its token embedding and sizes are used here).
        names: display names (spaces, not underscores).
        n_ctx: number of learned context tokens; ``None``: the class default, or the length
            of ``ctx_init`` when only that is given (CoOp's rule).
        ctx_init: words initialising the context, e.g. ``"a photo of a"``; ``""``: random
            ``N(0, 0.02^2)``. The first ``min(n_ctx, len)`` init tokens give the first context
            vectors; extra context vectors are random, extra init words stay as fixed text.
        truncate: emit only the first ``max EOT + 1`` positions of the name set. Exact for
            CLIP's causal text attention and cuts the text pass for short names ~3x
            (TextTower refuses shortened input when its mask is not causal).
    """

    default_n_ctx = 16

    def __init__(self, clip_model, names, n_ctx=None, ctx_init="", truncate=True):
        super().__init__()
        embedding = clip_model.token_embedding
        object.__setattr__(self, "_token_embedding", embedding)  # frozen CLIP part: not registered
        self.text_width = embedding.weight.shape[1]
        self.context_length = clip_model.positional_embedding.shape[0]
        visual = clip_model.visual
        self.vision_width = visual.conv1.weight.shape[0] if hasattr(visual, "class_embedding") else None
        self.truncate = truncate
        init_ids = _tokenizer().encode(ctx_init.replace("_", " ")) if ctx_init else []
        if n_ctx is None:
            n_ctx = len(init_ids) or self.default_n_ctx
        if n_ctx < 1:
            raise ValueError(f"n_ctx must be >= 1, got {n_ctx}")
        self.n_ctx = n_ctx
        self.ctx_init = ctx_init
        vectors = torch.empty(n_ctx, self.text_width).normal_(std=0.02)
        known = min(n_ctx, len(init_ids))
        with torch.no_grad():
            if known:
                vectors[:known] = embedding.weight[torch.tensor(init_ids[:known],
                                                   device=embedding.weight.device)].float().cpu()
        self.ctx = nn.Parameter(vectors)
        placeholder = _tokenizer().encode("X")[0]
        # ids at the context positions only matter for readability: their embeddings are replaced
        self._middle = init_ids[:n_ctx] + [placeholder] * (n_ctx - known) + init_ids[n_ctx:]
        self.set_names(names)

    def set_names(self, names):
        """Re-target to a new name list in place (parameters kept); returns ``self``."""
        names = list(names)
        if not names or not all(isinstance(n, str) and n.strip() for n in names):
            raise ValueError("names must be a non-empty list of non-empty strings")
        tokens = tokenize_prompts([f"{n}." for n in names], self.context_length, self._middle)
        length = int(tokens.argmax(dim=-1).max()) + 1 if self.truncate else self.context_length
        device = self.ctx.device
        self.register_buffer("tokens", tokens[:, :length].to(device), persistent=False)
        self.names = names
        return self

    def with_names(self, names):
        """A view of this learner for another name list, sharing its parameters.

        Training either one updates both; only the name tokens differ (e.g. evaluating the
        base- and novel-class trees with the same learned prompts).
        """
        view = copy.copy(self)
        view._buffers = OrderedDict(self._buffers)  # own buffer dict so set_names leaves self alone
        return view.set_names(names)

    @property
    def num_names(self):
        return len(self.names)

    def text_inputs(self):
        """``(token_embeds (N, L, Wt), tokens (N, L))`` with the context at positions 1..n."""
        weight = self._token_embedding.weight
        embeds = F.embedding(self.tokens, weight).to(self.ctx.dtype)
        ctx = self.ctx.unsqueeze(0).expand(len(self.names), -1, -1)
        embeds = torch.cat([embeds[:, :1], ctx, embeds[:, 1 + self.n_ctx:]], dim=1)
        return embeds, self.tokens

    def forward(self):
        embeds, tokens = self.text_inputs()
        return PromptOutput(embeds, tokens)

    def extra_repr(self):
        return f"names={len(self.names)}, n_ctx={self.n_ctx}, ctx_init={self.ctx_init!r}"


def _check_depth(depth, layers, what):
    if depth > layers:
        raise ValueError(f"{what} prompt depth {depth} exceeds the {layers} blocks of the tower")


class CoOpPromptLearner(PromptLearner):
    """CoOp: one unified learned context (default 16 random tokens), class token at the end.

    Class-specific contexts (CoOp's CSC) are not offered: they cannot follow a name set that
    changes (base -> novel, taxonomy nodes), which is what HypTree evaluates.
    """

    default_n_ctx = 16

    def __init__(self, clip_model, names, n_ctx=None, ctx_init="", truncate=True, csc=False):
        if csc:
            raise ValueError("class-specific context (csc) is not supported: it cannot transfer "
                             "to another name set; use a unified context")
        super().__init__(clip_model, names, n_ctx, ctx_init, truncate)


class MaPLePromptLearner(PromptLearner):
    """MaPLe: text context + deep text prompts, vision prompts coupled from the text ones.

    Defaults are MaPLe's published config: 2 context tokens initialised from
    ``"a photo of a"``, prompt depth 9 (the shallow context plus 8 deep prompts for blocks
    1..8 of both towers). Coupling: ``vision_shallow = proj(ctx)`` and
    ``vision_deep[j] = deep_proj[j](text_deep[j])``, each a ``Linear(Wt -> Wv)``.
    Deep text prompts are ``N(0, 0.02^2)``; the coupling layers use PyTorch's default
    ``Linear`` init, each independently (MaPLe deep-copies one layer, so its deep couplings
    start identical).
    """

    default_n_ctx = 2

    def __init__(self, clip_model, names, n_ctx=2, ctx_init="a photo of a", depth=9, truncate=True):
        super().__init__(clip_model, names, n_ctx, ctx_init, truncate)
        if self.vision_width is None:
            raise TypeError("MaPLe needs a ViT CLIP backbone")
        if depth < 1:
            raise ValueError(f"MaPLe prompt depth must be >= 1, got {depth}")
        _check_depth(depth, len(clip_model.transformer.resblocks), "text")
        _check_depth(depth, len(clip_model.visual.transformer.resblocks), "vision")
        self.depth = depth
        self.text_deep = nn.ParameterList(
            [nn.Parameter(torch.empty(self.n_ctx, self.text_width).normal_(std=0.02))
             for _ in range(depth - 1)])
        self.proj = nn.Linear(self.text_width, self.vision_width)
        self.deep_proj = nn.ModuleList(
            [nn.Linear(self.text_width, self.vision_width) for _ in range(depth - 1)])

    def forward(self):
        embeds, tokens = self.text_inputs()
        text_deep = list(self.text_deep)
        vision_deep = [proj(p) for proj, p in zip(self.deep_proj, text_deep)]
        return PromptOutput(embeds, tokens, text_deep or None, self.proj(self.ctx),
                            vision_deep or None)


class PromptSRCPromptLearner(PromptLearner):
    """PromptSRC (independent vision-language prompting, as its IVLP backbone).

    Defaults are PromptSRC's published config: 4 text tokens from ``"a photo of a"``,
    4 vision tokens, depth 9 on both sides. ``depth_text >= 1`` (shallow context + deep
    prompts for blocks 1..depth-1); ``depth_vision`` 0 means no vision prompts, otherwise a
    shallow vision prompt plus deep ones for blocks 1..depth-1. All new prompts are
    ``N(0, 0.02^2)``. The self-regulating losses and GPA are :func:`self_regulating_losses`
    and :class:`GaussianPromptAggregator`.
    """

    default_n_ctx = 4

    def __init__(self, clip_model, names, n_ctx_text=4, n_ctx_vision=4, ctx_init="a photo of a",
                 depth_text=9, depth_vision=9, truncate=True):
        super().__init__(clip_model, names, n_ctx_text, ctx_init, truncate)
        if depth_text < 1 or depth_vision < 0:
            raise ValueError(f"PromptSRC needs depth_text >= 1 and depth_vision >= 0, got "
                             f"{depth_text}, {depth_vision}")
        if depth_vision and self.vision_width is None:
            raise TypeError("vision prompts need a ViT CLIP backbone")
        _check_depth(depth_text, len(clip_model.transformer.resblocks), "text")
        if depth_vision:
            _check_depth(depth_vision, len(clip_model.visual.transformer.resblocks), "vision")
        self.depth_text, self.depth_vision, self.n_ctx_vision = depth_text, depth_vision, n_ctx_vision

        def prompts(count, n, width):
            return nn.ParameterList([nn.Parameter(torch.empty(n, width).normal_(std=0.02))
                                     for _ in range(count)])

        self.text_deep = prompts(depth_text - 1, self.n_ctx, self.text_width)
        self.vision_shallow = (nn.Parameter(torch.empty(n_ctx_vision, self.vision_width).normal_(std=0.02))
                               if depth_vision else None)
        self.vision_deep = prompts(max(depth_vision - 1, 0), n_ctx_vision, self.vision_width)

    def forward(self):
        embeds, tokens = self.text_inputs()
        return PromptOutput(embeds, tokens, list(self.text_deep) or None, self.vision_shallow,
                            list(self.vision_deep) or None)


_LEARNERS = {"coop": CoOpPromptLearner, "maple": MaPLePromptLearner,
             "promptsrc": PromptSRCPromptLearner}


def build_prompt_learner(kind, clip_model, names, **options):
    """``kind`` in ``coop``, ``maple``, ``promptsrc`` (case-insensitive); options go to the class.

    The learner is created on the device of ``clip_model``'s token embedding.
    """
    key = str(kind).lower()
    if key not in _LEARNERS:
        raise ValueError(f"unknown prompt learner {kind!r}; choose from {sorted(_LEARNERS)}")
    learner = _LEARNERS[key](clip_model, names, **options)
    return learner.to(clip_model.token_embedding.weight.device)


# --------------------------------------------------------------------------- PromptSRC

TEXT_LOSS_WEIGHT = 25.0
IMAGE_LOSS_WEIGHT = 10.0

# Hand-crafted templates for PromptSRC's frozen text features. The first is CLIP's basic
# prompt; the other seven are the ensemble subset CLIP's ImageNet prompt-engineering
# notebook reports as best. PromptSRC itself averages all 60+ ImageNet templates, which for
# thousands of taxonomy nodes is a long one-off pass; pass your own list to match it.
DEFAULT_TEMPLATES = (
    "a photo of a {}.",
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)


@torch.no_grad()
def frozen_text_features(clip_model, names, templates=DEFAULT_TEMPLATES, batch_size=1024):
    """Frozen CLIP text features per name, averaged over templates, as PromptSRC's teacher.

    The unnormalised features of every template are averaged, then L2-normalised.
    Returns ``(N, D)`` float32 on the model's device. ``batch_size`` bounds prompts per pass.
    """
    tower = TextTower(clip_model)
    embedding = clip_model.token_embedding
    device = embedding.weight.device
    total = None
    for template in templates:
        if "{}" not in template:
            raise ValueError(f"template {template!r} has no '{{}}' placeholder for the name")
        tokens = tokenize_prompts([template.format(n) for n in names],
                                  clip_model.positional_embedding.shape[0]).to(device)
        feats = torch.cat([tower(embedding(chunk), chunk).float()
                           for chunk in tokens.split(batch_size)])
        total = feats if total is None else total + feats
    return F.normalize(total / len(templates), dim=-1)


def self_regulating_losses(text_features, frozen_text, image_features, frozen_image, logits,
                           frozen_logits, text_weight=TEXT_LOSS_WEIGHT,
                           image_weight=IMAGE_LOSS_WEIGHT, temperature=1.0):
    """PromptSRC's self-regulating consistency terms against the frozen model.

    Args:
        text_features, frozen_text: ``(N, D)`` prompted / frozen text features.
        image_features, frozen_image: ``(B, D)`` prompted / frozen image features.
        logits, frozen_logits: ``(B, N)`` prompted / frozen logits.
    All features are L2-normalised here (idempotent if already done); frozen inputs are
    detached; everything is computed in float32.

    Returns a dict: ``text = text_weight * mean|t - t0|``, ``image = image_weight * mean|f - f0|``,
    ``logits = T^2 * KL(softmax(z0/T) || softmax(z/T)) summed / numel(z)`` (PromptSRC
    normalises by the number of logits, not by the batch), and ``total`` their sum.
    """
    t = F.normalize(text_features.float(), dim=-1)
    t0 = F.normalize(frozen_text.detach().float(), dim=-1)
    f = F.normalize(image_features.float(), dim=-1)
    f0 = F.normalize(frozen_image.detach().float(), dim=-1)
    text = F.l1_loss(t, t0) * text_weight
    image = F.l1_loss(f, f0) * image_weight
    kl = F.kl_div(F.log_softmax(logits.float() / temperature, dim=-1),
                  F.log_softmax(frozen_logits.detach().float() / temperature, dim=-1),
                  reduction="sum", log_target=True)
    kl = kl * temperature ** 2 / logits.numel()
    return {"text": text, "image": image, "logits": kl, "total": text + image + kl}


class GaussianPromptAggregator:
    """PromptSRC's Gaussian prompt aggregation (GPA) over training epochs.

    Epoch ``e`` (0-based, Dassl's ``self.epoch``) gets weight
    ``w_e = g(e + 1) / sum_{k=1..E} g(k)`` with ``g`` the N(mean, std^2) density, ``E =
    max_epochs``; after each epoch ``update(e, learner.state_dict())`` adds ``w_e *`` the
    floating-point tensors to a running sum. ``aggregated_state()`` is that sum divided by the
    weights seen so far (equal to PromptSRC's sum once every epoch is in; a fair average if
    training stopped early). Non-float entries keep their latest value.

    Defaults mean 30, std 30 are PromptSRC's few-shot setting (and DESIGN's); its
    base-to-novel config uses mean 15, std 1 over 20 epochs.
    """

    def __init__(self, max_epochs, mean=30.0, std=30.0):
        if max_epochs < 1 or std <= 0:
            raise ValueError(f"need max_epochs >= 1 and std > 0, got {max_epochs}, {std}")
        self.max_epochs, self.mean, self.std = int(max_epochs), float(mean), float(std)
        epochs = np.arange(1, self.max_epochs + 1, dtype=np.float64)
        density = np.exp(-0.5 * ((epochs - self.mean) / self.std) ** 2) / (self.std * math.sqrt(2 * math.pi))
        self.weights = density / density.sum()
        self._sum = {}
        self._latest = {}
        self._seen = []

    @property
    def epochs_seen(self):
        return list(self._seen)

    @property
    def complete(self):
        return len(self._seen) == self.max_epochs

    def update(self, epoch, state_dict):
        """Add the prompt state after 0-based ``epoch`` (each epoch at most once)."""
        if not 0 <= epoch < self.max_epochs:
            raise ValueError(f"epoch {epoch} outside [0, {self.max_epochs})")
        if epoch in self._seen:
            raise ValueError(f"epoch {epoch} was already aggregated (resumed twice?)")
        weight = float(self.weights[epoch])
        for key, value in state_dict.items():
            value = value.detach()
            if value.is_floating_point():
                term = value.float() * weight
                self._sum[key] = term if key not in self._sum else self._sum[key] + term
                self._latest[key] = value.dtype
            else:
                self._latest[key] = value.clone()
        self._seen.append(int(epoch))

    def aggregated_state(self):
        """The Gaussian-weighted average state dict (original dtypes)."""
        if not self._seen:
            raise RuntimeError("no epoch aggregated yet")
        mass = float(sum(self.weights[e] for e in self._seen))
        out = {}
        for key, latest in self._latest.items():
            out[key] = (self._sum[key] / mass).to(latest) if isinstance(latest, torch.dtype) else latest.clone()
        return out

    def state_dict(self):
        """Everything needed to resume (put it in the trainer's checkpoint)."""
        return {"max_epochs": self.max_epochs, "mean": self.mean, "std": self.std,
                "sum": {k: v.clone() for k, v in self._sum.items()},
                "latest": dict(self._latest), "seen": list(self._seen)}

    def load_state_dict(self, state):
        if (state["max_epochs"], state["mean"], state["std"]) != (self.max_epochs, self.mean, self.std):
            raise ValueError(f"GPA settings differ from the checkpoint's "
                             f"{(state['max_epochs'], state['mean'], state['std'])}")
        self._sum = {k: v.clone() for k, v in state["sum"].items()}
        self._latest = dict(state["latest"])
        self._seen = list(state["seen"])
