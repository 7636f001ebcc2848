"""The total training loss (DESIGN section 5).

For a sample with root-to-leaf path ``n_1 .. n_H`` (root excluded):

* ``leaf``  - cross-entropy over all leaves (vanilla preset);
* ``cut``   - ProTeCt tree-cut loss over a random tree cut;
* ``node``  - ProTeCt node-centric loss (children of each internal node on the path);
* ``text_ent`` (J_Tent), ``image_ent`` (J_Vent) - entailment of each path node by its
  parent within the text tree (curvature ``c_t``) and the image tree (``c_i``);
* ``cross`` (J_ent by default) - text entails image on the intermediate manifold
  ``c_m``, or the ``angle`` / ``mmd`` alternatives.

``total = w_cut * cut + lambda * node + alpha * (text_ent + image_ent + cross)`` for
the ``hyptree`` preset, ``w_cut * cut + lambda * node`` for ``protect`` and ``leaf``
for ``vanilla``.

Paths have different lengths in real taxonomies. Every alignment term works on the
*valid* path entries only, selected with the path mask (never zero padding): a
padded zero vector would sit at the origin, where cones are undefined.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from hyptree.geometry import lorentz
from hyptree.geometry.curvatures import Curvatures, CurvatureState
from hyptree.loss.protect import leaf_loss, node_centric_loss, tree_cut_loss
from hyptree.tree.cuts import random_cut
from hyptree.tree.taxonomy import Taxonomy

__all__ = [
    "PRESETS",
    "CROSS_TERMS",
    "NODE_LOSS_REDUCTIONS",
    "ObjectiveSettings",
    "HierarchicalObjective",
    "gather_paths",
    "mmd_loss",
    "einstein_midpoint",
    "angle_contrastive_loss",
]

#: The objective presets (DESIGN section 5) and the cross-modal alignment terms: the one
#: list of each (the config's PRESET and ALIGN.CROSS are checked against them).
PRESETS = ("vanilla", "protect", "hyptree")
CROSS_TERMS = ("entailment", "angle", "mmd")
#: Reductions of the node-centric loss (config ``NODE_LOSS``): ``per_sample`` (ours: mean over
#: each sample's path nodes, then over samples) or ``per_node`` (ProTeCt's and the official
#: code's: mean over the samples passing each internal node, then over the nodes seen).
NODE_LOSS_REDUCTIONS = ("per_sample", "per_node")


@dataclass
class ObjectiveSettings:
    """Weights and constants of the objective (see ``hyptree.run.config`` for the keys)."""

    preset: str = "hyptree"
    w_cut: float = 1.0
    lam: float = 0.5
    alpha: float = 0.5
    cut_rate: float = 0.1
    scale_text: float = 10.0
    scale_image: float = 10.0
    cone_k: float = 0.1
    cross: str = "entailment"
    angle_temperature: float = 0.07
    centroid_weight: float = 0.0
    centroid_radii: tuple = (1.0, 2.0)  # (text, image): image centroid further out
    mmd_bandwidths: tuple = field(default_factory=lambda: (0.5, 1.0, 2.0, 4.0))
    node_loss: str = "per_sample"  # one of NODE_LOSS_REDUCTIONS

    def __post_init__(self):
        if self.node_loss not in NODE_LOSS_REDUCTIONS:
            raise ValueError(f"node loss {self.node_loss!r}; expected one of {', '.join(NODE_LOSS_REDUCTIONS)}")
        if self.preset not in PRESETS:
            raise ValueError(f"preset {self.preset!r}; expected one of {', '.join(PRESETS)}")
        if self.cross not in CROSS_TERMS:
            raise ValueError(f"cross term {self.cross!r}; expected one of {', '.join(CROSS_TERMS)}")


def gather_paths(node_feats: torch.Tensor, paths: torch.Tensor) -> torch.Tensor:
    """Features of each sample's path nodes.

    node_feats: ``(N, D)`` shared by the batch (text) or ``(B, N, D)`` per sample (image
    tree); paths: ``(B, H)`` node ids (padding entries must be valid ids; they are
    masked later). Returns ``(B, H, D)``.
    """
    if node_feats.dim() == 2:
        return node_feats[paths]
    idx = paths.unsqueeze(-1).expand(-1, -1, node_feats.shape[-1])
    return torch.gather(node_feats, 1, idx)


def _entail(parent: torch.Tensor, child: torch.Tensor, curv, cone_k: float) -> torch.Tensor:
    """Entailment loss of tangent vectors ``child`` under ``parent`` (both ``(P, D)``).

    ``curv`` None means the Euclidean ablation (Euclidean cones on the vectors).
    """
    if curv is None:
        return lorentz.euclidean_entailment_loss(parent, child, min_radius=cone_k)
    return lorentz.entailment_loss(
        lorentz.exp_map0(parent, curv), lorentz.exp_map0(child, curv), curv, min_radius=cone_k
    )


def mmd_loss(x: torch.Tensor, y: torch.Tensor, bandwidths) -> torch.Tensor:
    """Biased (V-statistic) squared MMD with a sum of Gaussian kernels; ``x (P, D)``, ``y (Q, D)``.

    Zero when the two sets coincide, positive otherwise (characteristic kernel).
    """
    z = torch.cat([x, y])
    d2 = torch.cdist(z, z).pow(2)
    k = sum(torch.exp(-d2 / (2.0 * b * b)) for b in bandwidths)
    n = x.shape[0]
    return k[:n, :n].mean() + k[n:, n:].mean() - 2.0 * k[:n, n:].mean()


def einstein_midpoint(x: torch.Tensor, curv) -> torch.Tensor:
    """Einstein midpoint of Lorentz points given by space components ``x (P, D)``.

    In the Klein ball of radius ``1/sqrt(c)`` a point is ``k = x / (sqrt(c) t(x))`` with
    Lorentz factor ``gamma = 1 / sqrt(1 - c |k|^2) = sqrt(c) t(x)``; the midpoint is the
    gamma-weighted mean of the ``k``, mapped back by ``x = k / sqrt(1 - c |k|^2)``.
    Returns ``(D,)``.
    """
    c = torch.as_tensor(curv, dtype=x.dtype, device=x.device)
    t = lorentz.time_component(x, c)
    gamma = c.sqrt() * t  # Lorentz factor of the Klein point
    klein = x / (c.sqrt() * t).unsqueeze(-1)
    k = (gamma.unsqueeze(-1) * klein).sum(0) / gamma.sum()
    denom = torch.clamp(1.0 - c * (k * k).sum(), min=1e-7)
    return k / torch.sqrt(denom)


def angle_contrastive_loss(alpha: torch.Tensor, node_ids: torch.Tensor, temperature: float) -> torch.Tensor:
    """Angle-based contrastive loss of "Accept the Modality Gap" (text -> image).

    alpha ``(P, P)``: exterior angle at text point i towards image point j of the P
    matched (text, image) pairs; node_ids ``(P,)``: pairs of the same node are all
    positives of each other. Similarities are ``-alpha`` (minimised for matches) and
    ``beta = pi - alpha`` (maximised), each in a text-to-image contrastive loss.
    """
    positives = (node_ids.unsqueeze(1) == node_ids.unsqueeze(0)).to(alpha.dtype)
    target = positives / positives.sum(1, keepdim=True)
    loss = alpha.new_zeros(())
    for sim in (-alpha, math.pi - alpha):
        loss = loss - (target * F.log_softmax(sim / temperature, dim=1)).sum(1).mean()
    return loss


class HierarchicalObjective(nn.Module):
    """The loss of one preset on node score matrices and path features.

    Holds the ``Curvatures`` (learnable) and a seeded generator for training tree cuts.
    """

    def __init__(
        self, taxonomy: Taxonomy, settings: ObjectiveSettings, curvatures: Curvatures | None = None, seed: int = 0
    ):
        super().__init__()
        if settings.preset == "hyptree" and curvatures is None:
            raise ValueError("the hyptree preset needs a Curvatures module")
        self.settings = settings
        self.curvatures = curvatures
        self.rng = np.random.default_rng(seed)
        self.set_taxonomy(taxonomy)

    def set_taxonomy(self, taxonomy: Taxonomy) -> None:
        self.taxonomy = taxonomy
        paths, mask = taxonomy.padded_paths()
        self._paths = torch.as_tensor(np.where(mask, paths, 0), dtype=torch.long)
        self._mask = torch.as_tensor(mask, dtype=torch.bool)

    def forward(
        self,
        scores: torch.Tensor,
        labels: torch.Tensor,
        text_feats: torch.Tensor | None = None,
        image_feats: torch.Tensor | None = None,
        image_paths: bool = False,
    ) -> dict:
        """scores ``(B, num_nodes)`` (scaled logits), labels ``(B,)`` class ids.

        text_feats ``(num_nodes, D)``: node text features; image_feats ``(B, num_nodes, D)``
        (image tree) or ``(B, D)`` (one feature for every node). Both are needed only by
        the ``hyptree`` preset. ``image_paths=True``: ``image_feats`` is ``(B, H, D)``, the
        features of each sample's path nodes :meth:`path_nodes` already (the model computes
        ``v_n`` for those nodes only). Returns a dict with ``total`` and every term.
        """
        s = self.settings
        out = {}
        if s.preset == "vanilla":
            out["leaf"] = leaf_loss(self.taxonomy, scores, labels)
            out["total"] = out["leaf"]
            return out
        cut = random_cut(self.taxonomy, self.rng, s.cut_rate)
        out["cut"] = tree_cut_loss(self.taxonomy, scores, labels, cut)
        average = "node" if s.node_loss == "per_node" else "sample"
        out["node"] = node_centric_loss(self.taxonomy, scores, labels, average=average)
        total = s.w_cut * out["cut"] + s.lam * out["node"]
        if s.preset == "hyptree":
            if text_feats is None or image_feats is None:
                raise ValueError("the hyptree preset needs text_feats and image_feats")
            out.update(self.alignment(labels, text_feats, image_feats, image_paths))
            # no image tree: no image_ent term (see alignment)
            total = total + s.alpha * sum(out[k] for k in ("text_ent", "image_ent", "cross") if k in out)
        out["total"] = total
        return out

    def path_nodes(self, labels: torch.Tensor) -> torch.Tensor:
        """``(B, H)`` node ids of each sample's root-excluded path (padding entries: 0)."""
        return self._paths.to(labels.device)[labels]

    def alignment(self, labels, text_feats, image_feats, image_paths=False) -> dict:
        """J_Tent, J_Vent and the cross term, plus the curvatures used (for logging).

        Without an image tree (``image_feats (B, D)``) every path node has the same image
        feature, so J_Vent would compare a point with itself: a constant that still sends
        gradient to ``log c_i``. It is left out (no ``image_ent`` key).
        """
        s = self.settings
        device = text_feats.device
        # The valid entries are selected with index lists built on the host from a host
        # copy of the labels: boolean-mask indexing on an accelerator syncs with the host
        # at every selection and again in its backward (12 syncs per step); this costs at
        # most the one copy of the (B,) labels, and nothing when they are on the CPU.
        lab = labels.detach().cpu().numpy()
        mask_h = self._mask.numpy()[lab]  # (B, H), a prefix of True per row
        H = mask_h.shape[1]
        valid = np.flatnonzero(mask_h)  # flat (B*H) ids of the valid entries, row-major
        b, k = np.nonzero(mask_h[:, 1:])  # parent k and child k + 1 both valid
        valid = torch.from_numpy(valid).to(device)
        parent = torch.from_numpy(b * H + k).to(device)
        child = parent + 1
        paths = self._paths.to(device)[torch.from_numpy(lab).to(device)]  # (B, H)
        # Hyperbolic coordinates are kept in fp32 at least (DESIGN section 2).
        dtype = torch.promote_types(text_feats.dtype, torch.float32)
        t = F.normalize(gather_paths(text_feats.to(dtype), paths), dim=-1) * s.scale_text
        if image_paths:
            if tuple(image_feats.shape[:2]) != tuple(paths.shape):
                raise ValueError(
                    f"path image features must be {tuple(paths.shape)} x D, got {tuple(image_feats.shape)}"
                )
            v = image_feats.to(dtype)
        elif image_feats.dim() == 2:
            v = image_feats.to(dtype).unsqueeze(1).expand(-1, paths.shape[1], -1)
        else:
            v = gather_paths(image_feats.to(dtype), paths)
        v = F.normalize(v, dim=-1) * s.scale_image

        t, v = t.flatten(0, 1), v.flatten(0, 1)  # (B*H, D)
        t_valid, v_valid = t.index_select(0, valid), v.index_select(0, valid)  # (P, D)
        curv: CurvatureState = self.curvatures(text_feats=t_valid, image_feats=v_valid)
        out = {
            "text_ent": _masked_mean(_entail(t.index_select(0, parent), t.index_select(0, child), curv.text, s.cone_k))
        }
        if image_feats.dim() == 3:  # an image tree: J_Vent
            out["image_ent"] = _masked_mean(
                _entail(v.index_select(0, parent), v.index_select(0, child), curv.image, s.cone_k)
            )
        if s.cross == "entailment":
            out["cross"] = _masked_mean(_entail(t_valid, v_valid, curv.inter, s.cone_k))
        elif s.cross == "mmd":
            out["cross"] = mmd_loss(t_valid, v_valid, s.mmd_bandwidths)
        else:
            out["cross"] = self._angle(t_valid, v_valid, paths.flatten().index_select(0, valid), curv.inter)
        for name in ("text", "image", "inter"):
            value = getattr(curv, name)
            if value is not None:
                out[f"curv_{name}"] = value.detach()
        return out

    def _angle(self, t, v, node_ids, curv):
        s = self.settings
        if curv is None:  # Euclidean ablation: the flat-space exterior angle
            alpha = lorentz.euclidean_exterior_angle(t.unsqueeze(1), v.unsqueeze(0))
            return angle_contrastive_loss(alpha, node_ids, s.angle_temperature)
        x, y = lorentz.exp_map0(t, curv), lorentz.exp_map0(v, curv)
        alpha = lorentz.exterior_angle(x.unsqueeze(1), y.unsqueeze(0), curv)
        loss = angle_contrastive_loss(alpha, node_ids, s.angle_temperature)
        if s.centroid_weight > 0:
            loss = loss + s.centroid_weight * self._centroid(x, y, curv)
        return loss

    def _centroid(self, x, y, c):
        """Text centroid nearer the origin than the image centroid (distances from origin)."""
        r_text, r_image = self.settings.centroid_radii
        origin = lambda p: lorentz.dist(p, torch.zeros_like(p), c)  # noqa: E731
        return (origin(einstein_midpoint(x, c)) - r_text).abs() + (origin(einstein_midpoint(y, c)) - r_image).abs()


def _masked_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean of already-selected valid entries; 0 (with a graph) when there are none."""
    if values.numel() == 0:
        return values.sum()
    return values.mean()
