"""PromptSRC's parts besides its prompts (Khattak et al., ICCV 2023).

* :func:`self_regulating_losses` - the consistency terms of the prompted model against the
  frozen one (text and image L1, logit KL), weighted by :data:`TEXT_LOSS_WEIGHT` /
  :data:`IMAGE_LOSS_WEIGHT` by default;
* :func:`frozen_text_features` - the frozen model's template-averaged text features;
* :class:`SelfRegulation` - both for a batch, with the frozen teacher tower and the text
  cache: what :class:`~hyptree.model.prompts.PromptSRCPromptLearner` adds to the loss;
* :class:`GaussianPromptAggregator` - Gaussian prompt aggregation (GPA) over epochs.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F

from hyptree.model.tokens import tokenize_prompts
from hyptree.model.towers import TextTower, VisionTower

__all__ = [
    "TEXT_LOSS_WEIGHT",
    "IMAGE_LOSS_WEIGHT",
    "DEFAULT_TEMPLATES",
    "frozen_text_features",
    "self_regulating_losses",
    "SelfRegulation",
    "GaussianPromptAggregator",
]

#: PromptSRC's default weights of the text and image consistency terms: the one place they
#: are written (``TRAINER.PROMPTSRC.TEXT_LOSS_WEIGHT`` / ``IMAGE_LOSS_WEIGHT`` default to
#: them). Ints, as PromptSRC's config declares them: yacs refuses to merge a yaml ``25``
#: into a float default, and ``tensor * 25`` equals ``tensor * 25.0``.
TEXT_LOSS_WEIGHT = 25
IMAGE_LOSS_WEIGHT = 10

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
        tokens = tokenize_prompts([template.format(n) for n in names], clip_model.positional_embedding.shape[0]).to(
            device
        )
        feats = torch.cat([tower(embedding(chunk), chunk).float() for chunk in tokens.split(batch_size)])
        total = feats if total is None else total + feats
    return F.normalize(total / len(templates), dim=-1)


def self_regulating_losses(
    text_features,
    frozen_text,
    image_features,
    frozen_image,
    logits,
    frozen_logits,
    text_weight=TEXT_LOSS_WEIGHT,
    image_weight=IMAGE_LOSS_WEIGHT,
    temperature=1.0,
):
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
    kl = F.kl_div(
        F.log_softmax(logits.float() / temperature, dim=-1),
        F.log_softmax(frozen_logits.detach().float() / temperature, dim=-1),
        reduction="sum",
        log_target=True,
    )
    kl = kl * temperature**2 / logits.numel()
    return {"text": text, "image": image, "logits": kl, "total": text + image + kl}


class SelfRegulation:
    """PromptSRC's self-regulating terms of a prompted CLIP against the same CLIP frozen.

    Owned by :class:`~hyptree.model.prompts.PromptSRCPromptLearner`, which returns its terms
    from ``extra_losses``: text consistency over all names, image consistency on the final
    feature, and the logit (KL) consistency over the class columns (the classes the frozen
    model knows). It keeps what only PromptSRC needs: the frozen teacher's vision tower (its
    own :class:`~hyptree.model.towers.VisionTower`, built on first use, so a prompted model's
    ``vision_tower.calls`` counts the prompted passes only) and the frozen text features of
    the current name list (computed once per name list).

    Args:
        clip_model: the frozen CLIP the prompts are learned on (a reference, not copied).
        text_weight, image_weight: weights of the text and image consistency terms.
        templates: hand-crafted templates of the frozen text features.
    """

    def __init__(
        self, clip_model, text_weight=TEXT_LOSS_WEIGHT, image_weight=IMAGE_LOSS_WEIGHT, templates=DEFAULT_TEMPLATES
    ):
        self.clip = clip_model
        self.text_weight, self.image_weight = text_weight, image_weight
        self.templates = tuple(templates)
        self._teacher = None
        self._frozen = (None, None)  # (names, frozen text features)

    def frozen_text(self, names):
        """``(N, D)`` frozen text features of ``names`` (cached for the last name list)."""
        names = tuple(names)
        if self._frozen[0] != names:
            self._frozen = (names, frozen_text_features(self.clip, names, self.templates))
        return self._frozen[1]

    def teacher(self):
        """The frozen model's vision tower (no prompts)."""
        if self._teacher is None:
            self._teacher = VisionTower(self.clip)
        return self._teacher

    def __call__(self, names, images, text, image, logits, classes):
        """The weighted terms (see :func:`self_regulating_losses`) for one batch.

        Args:
            names: the prompted name list; ``text`` holds its features ``(N, D)``.
            images: ``(B, 3, H, W)``; the teacher encodes them once, without gradients.
            image: ``(B, D)`` prompted final image features.
            logits: ``(B, C)`` prompted logits of the classes.
            classes: ``(C,)`` long tensor: index in ``names`` of each class.
        """
        frozen_text = self.frozen_text(names).to(text.device)
        with torch.no_grad():
            frozen_image = F.normalize(self.teacher()(images)[0].float(), dim=-1)
        scale = self.clip.logit_scale.exp().float()
        frozen_logits = scale * frozen_image @ frozen_text[classes].t()
        return self_regulating_losses(
            text,
            frozen_text,
            image,
            frozen_image,
            logits,
            frozen_logits,
            text_weight=self.text_weight,
            image_weight=self.image_weight,
        )


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
        return {
            "max_epochs": self.max_epochs,
            "mean": self.mean,
            "std": self.std,
            "sum": {k: v.clone() for k, v in self._sum.items()},
            "latest": dict(self._latest),
            "seen": list(self._seen),
        }

    def load_state_dict(self, state):
        if (state["max_epochs"], state["mean"], state["std"]) != (self.max_epochs, self.mean, self.std):
            raise ValueError(
                f"GPA settings differ from the checkpoint's {(state['max_epochs'], state['mean'], state['std'])}"
            )
        self._sum = {k: v.clone() for k, v in state["sum"].items()}
        self._latest = dict(state["latest"])
        self._seen = list(state["seen"])
