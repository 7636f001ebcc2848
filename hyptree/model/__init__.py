"""CLIP with learned prompts scoring every taxonomy node; imports loss, geometry, tree, utils.

* :mod:`~hyptree.model.loading` - :func:`load_clip`, checkpoint mapping, :func:`tiny_clip`,
  precisions (:data:`PRECISIONS`), the ``clip make-tiny`` command;
* :mod:`~hyptree.model.towers` - :class:`TextTower` / :class:`VisionTower` with deep prompts
  and layer-token pass-through;
* :mod:`~hyptree.model.tokens` - prompt tokenisation;
* :mod:`~hyptree.model.prompts` - the CoOp / MaPLe / PromptSRC learners (:data:`BACKBONES`);
* :mod:`~hyptree.model.promptsrc` - PromptSRC's self-regulation and GPA;
* :mod:`~hyptree.model.fusion` - text-guided selection over layer tokens;
* :mod:`~hyptree.model.hierarchical` - :class:`HierarchicalCLIP`.

Usage: ``from hyptree.model import HierarchicalCLIP, load_clip, tiny_clip``.
"""

# loading first: it imports the clip package with its pkg_resources warning silenced
from hyptree.model.fusion import TextGuidedSelection
from hyptree.model.hierarchical import HierarchicalCLIP
from hyptree.model.loading import (
    PRECISIONS,
    build_clip,
    cast_clip_weights,
    load_clip,
    tiny_clip,
    to_openai_state_dict,
)
from hyptree.model.prompts import (
    BACKBONES,
    CoOpPromptLearner,
    MaPLePromptLearner,
    PromptLearner,
    PromptOutput,
    PromptSRCPromptLearner,
    build_prompt_learner,
    freeze,
)
from hyptree.model.promptsrc import (
    DEFAULT_TEMPLATES,
    IMAGE_LOSS_WEIGHT,
    TEXT_LOSS_WEIGHT,
    GaussianPromptAggregator,
    SelfRegulation,
    frozen_text_features,
    self_regulating_losses,
)
from hyptree.model.tokens import tokenize_prompts
from hyptree.model.towers import TextTower, VisionTower, scale_layers

__all__ = [
    "PRECISIONS",
    "load_clip",
    "build_clip",
    "to_openai_state_dict",
    "cast_clip_weights",
    "tiny_clip",
    "TextTower",
    "VisionTower",
    "scale_layers",
    "tokenize_prompts",
    "BACKBONES",
    "PromptOutput",
    "PromptLearner",
    "CoOpPromptLearner",
    "MaPLePromptLearner",
    "PromptSRCPromptLearner",
    "build_prompt_learner",
    "freeze",
    "TEXT_LOSS_WEIGHT",
    "IMAGE_LOSS_WEIGHT",
    "DEFAULT_TEMPLATES",
    "frozen_text_features",
    "self_regulating_losses",
    "SelfRegulation",
    "GaussianPromptAggregator",
    "TextGuidedSelection",
    "HierarchicalCLIP",
]
