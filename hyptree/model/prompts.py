"""CoOp / MaPLe / PromptSRC prompt learners for any list of class or taxonomy-node names.

A learner owns only prompt parameters (and MaPLe's coupling layers); CLIP stays frozen
(:func:`freeze`). Calling it returns a :class:`PromptOutput` that the towers of
:mod:`hyptree.model.towers` consume::

    learner = build_prompt_learner("maple", clip_model, names)
    out = learner()
    text = text_tower(out.token_embeds, out.tokens, out.text_deep)              # (N, D)
    image, layers = vision_tower(images, out.vision_shallow, out.vision_deep,
                                 keep_layers=(5, 8))                           # (B, D), (B, 3, D)

Prompt text per name is ``[SOS] ctx_1 .. ctx_n [rest of ctx_init] name . [EOT]`` (CoOp's
class-token position "end"). The ``n`` context vectors are learned; when ``ctx_init`` has
more tokens than ``n`` the remaining words stay as fixed text (MaPLe and PromptSRC with
``n_ctx=2``/``"a photo of a"`` learn "a photo" and keep "of a"). Names are tokenised once
per name set into a buffer; each call is one embedding lookup and one concatenation, no
loop over names. ``set_names``/``with_names`` re-target a learner (e.g. base -> novel tree)
keeping its parameters.

Parameters are float32 whatever CLIP's precision (the towers cast prompts to their dtype),
so SGD updates are not lost to fp16 rounding.

Backbone-specific loss terms come from the learner too: :meth:`PromptLearner.extra_losses`
returns nothing by default, PromptSRC's returns its self-regulating terms
(:class:`hyptree.model.promptsrc.SelfRegulation`), and the model adds whatever it gets.
:data:`BACKBONES` lists the learner kinds :func:`build_prompt_learner` knows.
"""

import copy
from collections import OrderedDict
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from hyptree.model.promptsrc import IMAGE_LOSS_WEIGHT, TEXT_LOSS_WEIGHT, SelfRegulation
from hyptree.model.tokens import tokenize_prompts, tokenizer

__all__ = [
    "BACKBONES",
    "PromptOutput",
    "PromptLearner",
    "CoOpPromptLearner",
    "MaPLePromptLearner",
    "PromptSRCPromptLearner",
    "build_prompt_learner",
    "freeze",
]


class PromptOutput(NamedTuple):
    """What a prompt learner hands to the towers.

    token_embeds: ``(N, L, Wt)`` input embeddings with the learned context at positions 1..n.
    tokens: ``(N, L)`` token ids (EOT = argmax per row).
    text_deep: list of ``(n, Wt)``, one per text block 1..J-1, or ``None``.
    vision_shallow: ``(n_v, Wv)`` appended visual prompt, or ``None``.
    vision_deep: list of ``(n_v, Wv)``, one per vision block 1..J-1, or ``None``.
    shared: how many leading positions are the same in every prompt (SOS, the learned
        context, the fixed rest of ``ctx_init``: tokens and embeddings); ``0`` = unknown.
    """

    token_embeds: torch.Tensor
    tokens: torch.Tensor
    text_deep: list[torch.Tensor] | None = None
    vision_shallow: torch.Tensor | None = None
    vision_deep: list[torch.Tensor] | None = None
    shared: int = 0


def freeze(clip_model):
    """Turn off gradients of every CLIP parameter and switch to eval mode; returns the model."""
    for param in clip_model.parameters():
        param.requires_grad_(False)
    return clip_model.eval()


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
    #: whether :meth:`extra_losses` reads the text features of every name (not only the
    #: classes'): a vanilla model then encodes every name in training, not only the leaves
    extra_losses_read_all_text = False

    def __init__(self, clip_model, names, n_ctx=None, ctx_init="", truncate=True):
        super().__init__()
        embedding = clip_model.token_embedding
        object.__setattr__(self, "_token_embedding", embedding)  # frozen CLIP part: not registered
        self.text_width = embedding.weight.shape[1]
        self.context_length = clip_model.positional_embedding.shape[0]
        visual = clip_model.visual
        self.vision_width = visual.conv1.weight.shape[0] if hasattr(visual, "class_embedding") else None
        self.truncate = truncate
        init_ids = tokenizer().encode(ctx_init.replace("_", " ")) if ctx_init else []
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
                vectors[:known] = (
                    embedding.weight[torch.tensor(init_ids[:known], device=embedding.weight.device)].float().cpu()
                )
        self.ctx = nn.Parameter(vectors)
        placeholder = tokenizer().encode("X")[0]
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
        embeds = torch.cat([embeds[:, :1], ctx, embeds[:, 1 + self.n_ctx :]], dim=1)
        return embeds, self.tokens

    @property
    def shared_prefix(self) -> int:
        """Leading positions equal in every prompt: SOS, the context, the rest of ``ctx_init``."""
        return 1 + len(self._middle)

    def forward(self):
        embeds, tokens = self.text_inputs()
        return PromptOutput(embeds, tokens, shared=self.shared_prefix)

    def extra_losses(self, images, text, image, logits, classes):
        """Loss terms this backbone adds to the training objective: none by default.

        Called once per training step after the prompted passes, with their results.

        Args:
            images: ``(B, 3, H, W)`` the batch.
            text: ``(N, D)`` prompted text features of this learner's names (in order).
            image: ``(B, D)`` prompted final image features.
            logits: ``(B, N)`` prompted scores of the names (scaled cosines).
            classes: ``(C,)`` long tensor: the names that are the classes, by index.
        Returns:
            ``{name: scalar tensor}``; each is logged and added to the total as it is.
        """
        return {}

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
            raise ValueError(
                "class-specific context (csc) is not supported: it cannot transfer "
                "to another name set; use a unified context"
            )
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
            [nn.Parameter(torch.empty(self.n_ctx, self.text_width).normal_(std=0.02)) for _ in range(depth - 1)]
        )
        self.proj = nn.Linear(self.text_width, self.vision_width)
        self.deep_proj = nn.ModuleList([nn.Linear(self.text_width, self.vision_width) for _ in range(depth - 1)])

    def forward(self):
        embeds, tokens = self.text_inputs()
        text_deep = list(self.text_deep)
        vision_deep = [proj(p) for proj, p in zip(self.deep_proj, text_deep)]
        return PromptOutput(
            embeds, tokens, text_deep or None, self.proj(self.ctx), vision_deep or None, self.shared_prefix
        )


class PromptSRCPromptLearner(PromptLearner):
    """PromptSRC (independent vision-language prompting, as its IVLP backbone).

    Defaults are PromptSRC's published config: 4 text tokens from ``"a photo of a"``,
    4 vision tokens, depth 9 on both sides. ``depth_text >= 1`` (shallow context + deep
    prompts for blocks 1..depth-1); ``depth_vision`` 0 means no vision prompts, otherwise a
    shallow vision prompt plus deep ones for blocks 1..depth-1. All new prompts are
    ``N(0, 0.02^2)``.

    Its :meth:`extra_losses` are PromptSRC's self-regulating terms against the frozen CLIP
    (:class:`~hyptree.model.promptsrc.SelfRegulation`, weights ``text_weight`` and
    ``image_weight``), named ``src_text``, ``src_image`` and ``src_logits``. GPA is
    :class:`~hyptree.model.promptsrc.GaussianPromptAggregator`, driven by the trainer.
    """

    default_n_ctx = 4
    extra_losses_read_all_text = True  # the text self-regulation averages over every name

    def __init__(
        self,
        clip_model,
        names,
        n_ctx_text=4,
        n_ctx_vision=4,
        ctx_init="a photo of a",
        depth_text=9,
        depth_vision=9,
        truncate=True,
        text_weight=TEXT_LOSS_WEIGHT,
        image_weight=IMAGE_LOSS_WEIGHT,
    ):
        super().__init__(clip_model, names, n_ctx_text, ctx_init, truncate)
        if depth_text < 1 or depth_vision < 0:
            raise ValueError(f"PromptSRC needs depth_text >= 1 and depth_vision >= 0, got {depth_text}, {depth_vision}")
        if depth_vision and self.vision_width is None:
            raise TypeError("vision prompts need a ViT CLIP backbone")
        _check_depth(depth_text, len(clip_model.transformer.resblocks), "text")
        if depth_vision:
            _check_depth(depth_vision, len(clip_model.visual.transformer.resblocks), "vision")
        self.depth_text, self.depth_vision, self.n_ctx_vision = depth_text, depth_vision, n_ctx_vision

        def prompts(count, n, width):
            return nn.ParameterList([nn.Parameter(torch.empty(n, width).normal_(std=0.02)) for _ in range(count)])

        self.text_deep = prompts(depth_text - 1, self.n_ctx, self.text_width)
        self.vision_shallow = (
            nn.Parameter(torch.empty(n_ctx_vision, self.vision_width).normal_(std=0.02)) if depth_vision else None
        )
        self.vision_deep = prompts(max(depth_vision - 1, 0), n_ctx_vision, self.vision_width)
        # plain attribute: no parameters, nothing in the state dict; shared by with_names views
        self.regulariser = SelfRegulation(clip_model, text_weight, image_weight)

    def forward(self):
        embeds, tokens = self.text_inputs()
        return PromptOutput(
            embeds,
            tokens,
            list(self.text_deep) or None,
            self.vision_shallow,
            list(self.vision_deep) or None,
            self.shared_prefix,
        )

    def extra_losses(self, images, text, image, logits, classes):
        terms = self.regulariser(self.names, images, text, image, logits[:, classes], classes)
        return {f"src_{k}": v for k, v in terms.items() if k != "total"}


_LEARNERS = {"coop": CoOpPromptLearner, "maple": MaPLePromptLearner, "promptsrc": PromptSRCPromptLearner}
#: The backbones (prompt learner kinds) :func:`build_prompt_learner` builds.
BACKBONES = tuple(_LEARNERS)


def build_prompt_learner(kind, clip_model, names, **options):
    """``kind`` in ``coop``, ``maple``, ``promptsrc`` (case-insensitive); options go to the class.

    The learner is created on the device of ``clip_model``'s token embedding.
    """
    key = str(kind).lower()
    if key not in _LEARNERS:
        raise ValueError(f"unknown prompt learner {kind!r}; choose from {sorted(_LEARNERS)}")
    learner = _LEARNERS[key](clip_model, names, **options)
    return learner.to(clip_model.token_embedding.weight.device)
