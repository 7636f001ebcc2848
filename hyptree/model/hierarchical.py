"""``HierarchicalCLIP``: node scores for every taxonomy node from one image pass.

The score of an image for node ``n`` depends only on the image and on ``n`` (DESIGN
section 4), never on which other labels are in the label set. So one vision-tower
pass per image and one text-tower pass over all node prompts give a score matrix
``S (B, num_nodes)``; every classification (leaves, the children of any internal
node, any tree cut) is an argmax over a subset of its columns.

* ``vanilla`` / ``protect``: ``s(image, n) = exp(logit_scale) cos(f(image), t_n)``.
* ``hyptree``: the image's layer tokens ``(B, m+1, D)`` are mixed per node by
  text-guided cross-attention, ``v_n``, and ``s(image, n) = exp(logit_scale) cos(v_n, t_n)``.

Only the prompts (and MaPLe's coupling layers), the cross-attention query/key and the
curvatures are trainable; the CLIP weights are frozen. Backbone-specific loss terms
(PromptSRC's self-regulation) come from the prompt learner's ``extra_losses``.
"""

from __future__ import annotations

import functools
import operator

import torch
import torch.nn as nn
import torch.nn.functional as F

from hyptree.geometry.curvatures import Curvatures
from hyptree.loss.objective import HierarchicalObjective, ObjectiveSettings
from hyptree.model.fusion import TextGuidedSelection
from hyptree.model.prompts import build_prompt_learner
from hyptree.model.towers import TextTower, VisionTower, scale_layers
from hyptree.tree.taxonomy import Taxonomy

#: ``text_chunk="auto"``: checkpoint the text pass in chunks of this many prompts when it
#: encodes more than ``AUTO_CHUNK_ABOVE`` (peak text memory then stays that of ~256 prompts
#: for one extra text forward in backward; below, the plain pass is kept: it is faster).
AUTO_CHUNK = 256
AUTO_CHUNK_ABOVE = 2048


class HierarchicalCLIP(nn.Module):
    """A prompt-learning CLIP scoring every node of a taxonomy.

    Args:
        clip_model: a ``clip.model.CLIP`` (OpenAI's package or MaPLe's copy); frozen here.
        taxonomy: the label tree; its non-root nodes get a text prompt each.
        backbone: ``coop`` | ``maple`` | ``promptsrc``.
        preset: ``vanilla`` | ``protect`` | ``hyptree``.
        prompt_options: keyword options of the prompt learner (PromptSRC's loss weights
            ``text_weight`` / ``image_weight`` among them).
        layers: image-tree blocks, 0-based block indices of a 12-block ViT ending with the
            final block (scaled to the model's depth; see ``scale_layers``).
        image_tree: ``False`` uses the final image feature for every node (ablation).
        pass_through: ``False`` takes raw intermediate class tokens (ablation).
        settings: the objective's weights (``ObjectiveSettings``).
        curvature: keyword options of ``Curvatures`` (mode, c0, learn, kappa, inits).
        fusion: keyword options of ``TextGuidedSelection`` (learn_value, qk_init).
        text_chunk: prompts per checkpointed chunk of the text pass (0: one call per length
            group; ``"auto"``: chunks of ``AUTO_CHUNK`` above ``AUTO_CHUNK_ABOVE`` prompts).
    """

    def __init__(
        self,
        clip_model,
        taxonomy: Taxonomy,
        backbone: str = "maple",
        preset: str = "hyptree",
        prompt_options: dict | None = None,
        layers=(4, 7, 11),
        image_tree: bool = True,
        pass_through: bool = True,
        settings: ObjectiveSettings | None = None,
        curvature: dict | None = None,
        seed: int = 0,
        fusion: dict | None = None,
        text_chunk: int | str = 0,
    ):
        super().__init__()
        settings = settings or ObjectiveSettings(preset=preset)
        if settings.preset != preset:
            raise ValueError(f"settings.preset {settings.preset!r} differs from preset {preset!r}")
        for p in clip_model.parameters():
            p.requires_grad_(False)
        self.clip = clip_model
        self.backbone = backbone
        self.preset = preset
        self.text_tower = TextTower(clip_model)
        self.vision_tower = VisionTower(clip_model)
        self.hierarchical_image = preset == "hyptree" and image_tree
        depth = len(clip_model.visual.transformer.resblocks)
        self.keep_layers = tuple(scale_layers(layers, depth)) if self.hierarchical_image else ()
        self.pass_through = pass_through
        self.prompt_learner = build_prompt_learner(
            backbone, clip_model, self._node_names(taxonomy), **(prompt_options or {})
        )
        dim = clip_model.text_projection.shape[1]
        self.fusion = TextGuidedSelection(dim, **(fusion or {})) if self.hierarchical_image else None
        curvatures = Curvatures(**(curvature or {})) if preset == "hyptree" else None
        self.objective = HierarchicalObjective(taxonomy, settings, curvatures, seed=seed)
        self.taxonomy = taxonomy
        self._classes = {}  # device -> (C,) name index of each leaf, for extra_losses
        if text_chunk != "auto" and (isinstance(text_chunk, bool) or int(text_chunk) < 0):
            raise ValueError(f"text_chunk must be an int >= 0 or 'auto', got {text_chunk!r}")
        self.text_chunk = text_chunk

    # ------------------------------------------------------------------ taxonomy
    @staticmethod
    def _node_names(taxonomy: Taxonomy) -> list[str]:
        return list(taxonomy.display_names[1:])  # the root has no prompt

    def set_taxonomy(self, taxonomy: Taxonomy) -> None:
        """Score another tree (e.g. the novel classes' one) with the learned prompts."""
        self.taxonomy = taxonomy
        self.prompt_learner.set_names(self._node_names(taxonomy))
        self.objective.set_taxonomy(taxonomy)
        self._classes = {}

    def _class_rows(self, device) -> torch.Tensor:
        """``(C,)`` index of each class among the prompt learner's names (node id - 1)."""
        if device not in self._classes:
            leaves = torch.tensor(self.taxonomy.leaves, dtype=torch.long)
            self._classes[device] = (leaves - 1).to(device)
        return self._classes[device]

    # ------------------------------------------------------------------ towers
    def text_features(self, prompts=None, nodes=None) -> torch.Tensor:
        """``(num_nodes, D)`` float32 node text features (row 0, the root, is zero).

        ``nodes``: encode only these node ids (a ``(K,)`` long tensor, root excluded); the
        other rows stay zero. The text pass groups prompts by length (no padding past a
        prompt's own EOT) and, with ``text_chunk``, is memory-bounded (see ``TextTower``).
        """
        p = self.prompt_learner() if prompts is None else prompts
        embeds, tokens = p.token_embeds, p.tokens
        if nodes is not None:
            rows = nodes.to(tokens.device) - 1
            embeds, tokens = embeds.index_select(0, rows), tokens.index_select(0, rows)
        chunk = self._text_chunk(len(tokens))
        feats = self.text_tower(embeds, tokens, deep_prompts=p.text_deep, chunk=chunk, shared=p.shared).float()
        if nodes is None:
            return torch.cat([feats.new_zeros(1, feats.shape[1]), feats])
        full = feats.new_zeros(self.taxonomy.num_nodes, feats.shape[1])
        return full.index_copy(0, nodes.to(feats.device), feats)

    def _text_chunk(self, count: int) -> int:
        """Prompts per checkpointed chunk for a pass over ``count`` prompts (0: off)."""
        if self.text_chunk == "auto":
            return AUTO_CHUNK if count > AUTO_CHUNK_ABOVE else 0
        return int(self.text_chunk)

    def image_features(self, images: torch.Tensor, prompts=None):
        """One vision-tower pass: final ``(B, D)`` and layer tokens ``(B, m+1, D)`` or None."""
        p = self.prompt_learner() if prompts is None else prompts
        final, tokens = self.vision_tower(
            images,
            shallow_prompts=p.vision_shallow,
            deep_prompts=p.vision_deep,
            keep_layers=self.keep_layers,
            pass_through=self.pass_through,
        )
        return final.float(), (tokens.float() if tokens is not None else None)

    def node_image_features(self, text: torch.Tensor, final: torch.Tensor, tokens, nodes=None, weights=None):
        """Per-node image features ``(B, K, D)`` (image tree) or the shared ``(B, D)``.

        ``nodes``: ``None`` for all ``num_nodes`` (``K = N``, materialised: inspection and
        tests only), or ``(B, K)`` / ``(K,)`` node ids, e.g. each sample's path: the terms
        that need ``v_n`` use those only. ``weights``: the ``(B, N, M)`` selection weights
        when already computed (:meth:`node_scores_from` returns them).
        """
        if self.fusion is None:
            return final
        if weights is None:
            weights = self.fusion.attention(text, tokens)
        return self.fusion.mix(weights, tokens, nodes)

    def scores(self, text: torch.Tensor, node_image: torch.Tensor) -> torch.Tensor:
        """``(B, num_nodes)`` = exp(logit_scale) * cos(image feature of node n, t_n)."""
        scale = self.clip.logit_scale.exp().float()
        t = F.normalize(text, dim=-1)
        v = F.normalize(node_image, dim=-1)
        if v.dim() == 2:
            return scale * v @ t.t()
        return scale * (v * t.unsqueeze(0)).sum(-1)

    def node_scores_from(self, text: torch.Tensor, final: torch.Tensor, tokens):
        """``(scores (B, num_nodes), weights)`` from the towers' outputs, factorised.

        Equal to ``scores(text, node_image_features(text, final, tokens))`` without the
        ``(B, N, D)`` tensor (``TextGuidedSelection.cosines``); ``weights`` ``(B, N, M)``
        (``None`` without the image tree) serve :meth:`node_image_features` for a few nodes.
        """
        if self.fusion is None:
            return self.scores(text, final), None
        weights = self.fusion.attention(text, tokens)
        scale = self.clip.logit_scale.exp().float()
        return scale * self.fusion.cosines(text, tokens, weights).float(), weights

    @torch.no_grad()
    def precompute_text(self) -> torch.Tensor:
        """Node text features for evaluation (prompts frozen): compute once, reuse."""
        return self.text_features()

    def node_scores(self, images: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, num_nodes)`` scores; pass ``text`` from ``precompute_text`` to reuse it."""
        prompts = self.prompt_learner()
        if text is None:
            text = self.text_features(prompts)
        final, tokens = self.image_features(images, prompts)
        return self.node_scores_from(text, final, tokens)[0]

    # ------------------------------------------------------------------ training
    def _scored_nodes(self, device):
        """Node ids the training loss reads text for: the leaves for ``vanilla`` (unless the
        prompt learner's own terms read every name's text), else ``None`` (all)."""
        if self.preset != "vanilla" or self.prompt_learner.extra_losses_read_all_text:
            return None
        return self._class_rows(device) + 1

    def loss(self, images: torch.Tensor, labels: torch.Tensor) -> dict:
        """The total loss (differentiable ``"total"``) and each term, from one image pass."""
        prompts = self.prompt_learner()
        text = self.text_features(prompts, nodes=self._scored_nodes(labels.device))
        final, tokens = self.image_features(images, prompts)
        scores, weights = self.node_scores_from(text, final, tokens)
        path_image = None
        if self.preset == "hyptree":
            path_image = self.node_image_features(text, final, tokens, self.objective.path_nodes(labels), weights)
        out = self.objective(scores, labels, text_feats=text, image_feats=path_image, image_paths=weights is not None)
        # the root (row/column 0) has no prompt: the learner sees its names' rows only
        extra = self.prompt_learner.extra_losses(
            images, text[1:], final, scores[:, 1:], self._class_rows(scores.device)
        )
        if extra:
            out.update(extra)
            out["total"] = out["total"] + functools.reduce(operator.add, extra.values())
        return out

    def trainable_parameters(self):
        return [p for p in self.parameters() if p.requires_grad]

    def learnable_modules(self) -> nn.ModuleDict:
        """The learned parts as one module, sharing (not copying) their parameters.

        ``prompt_learner`` (incl. MaPLe's coupling layers), ``fusion`` (image tree only) and
        ``curvatures`` (hyptree preset only). Its ``state_dict`` is what a checkpoint needs:
        no frozen CLIP weights, and no name tokens (non-persistent buffers), so a checkpoint
        trained on one tree loads for another (base -> novel, ImageNet -> a target domain).
        """
        parts = {"prompt_learner": self.prompt_learner}
        if self.fusion is not None:
            parts["fusion"] = self.fusion
        if self.objective.curvatures is not None:
            parts["curvatures"] = self.objective.curvatures
        return nn.ModuleDict(parts)
