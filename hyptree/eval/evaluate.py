"""The streaming evaluation loop, framework-agnostic (no Dassl).

:func:`evaluate` streams ``(images, labels)`` batches through a
:class:`~hyptree.model.hierarchical.HierarchicalCLIP`: node text features computed once, one vision
pass per batch, metrics accumulated by :class:`~hyptree.eval.metrics.HierarchicalMeter` (so the
result equals :func:`~hyptree.eval.metrics.hierarchical_metrics` on all scores at once), and
per-node mean image features gathered for the Poincare-disc plots. What a run writes from the
result is :mod:`hyptree.eval.runfiles`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from hyptree.eval.metrics import HierarchicalMeter
from hyptree.tree.taxonomy import Taxonomy

__all__ = ["evaluate"]


def _unpack(batch):
    """``(images, labels)`` from a tuple/list or a Dassl-style dict (``img``, ``label``)."""
    if isinstance(batch, Mapping):
        return batch["img"], batch["label"]
    images, labels = batch[0], batch[1]
    return images, labels


def _model_device(model):
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


@torch.no_grad()
def evaluate(
    model, batches: Iterable, taxonomy: Taxonomy, cuts: Sequence | None = None, device=None, depth: str = "ours"
):
    """Metrics and embeddings of ``model`` over ``batches``.

    Args:
        model: a :class:`~hyptree.model.hierarchical.HierarchicalCLIP`. It is put in eval mode (every
            submodule gets its own previous mode back afterwards). If its taxonomy differs from ``taxonomy``
            it scores ``taxonomy`` for the duration of the call.
        batches: iterable of ``(images (B, 3, H, W), labels (B,))`` or of dicts with
            ``"img"`` and ``"label"`` (Dassl's loaders); labels are leaf indices of
            ``taxonomy``.
        taxonomy: the tree the labels refer to.
        cuts: tree cuts for MTA (node ids or names), e.g. :func:`hyptree.run.records.evaluation_cuts_for`.
        device: where the images go (default: the model's device).
        depth: per-depth accuracy definition, ``ours`` or ``official`` (see :mod:`hyptree.eval.metrics`).

    Returns:
        ``(metrics, embeddings)``. ``metrics`` is :meth:`HierarchicalMeter.compute`'s dict
        (LA, HCA, MTA, node_acc, depth_acc, cut_acc, node_accs, num_samples).
        ``embeddings`` is a dict of numpy arrays for
        :func:`~hyptree.eval.runfiles.write_run`:

        * ``text (num_nodes, D)``: L2-normalised node text features (row 0, the root, is
          zero: it has no prompt);
        * ``image (num_nodes, D)``: per node, the mean of the L2-normalised image features
          the model scores that node with (the node's text-guided selection for the image
          tree, the final image feature otherwise), over the samples whose path passes
          the node (root included: all samples); ``NaN`` rows for nodes no sample passes;
        * ``counts (num_nodes,)``: those sample counts;
        * ``curv_text``, ``curv_image``, ``curv_inter``: the curvatures (``NaN`` without
          hyperbolic ones). The intermediate curvature is solved with the radii of the
          whole evaluation set's mean path features (``Curvatures`` uses a batch's).

    Text features are computed once (prompts are fixed in eval mode) and every batch costs
    one vision-tower pass.
    """
    device = torch.device(device) if device is not None else _model_device(model)
    modes = [(m, m.training) for m in model.modules()]
    previous = model.taxonomy
    swap = previous != taxonomy
    model.eval()
    if swap:
        model.set_taxonomy(taxonomy)
    try:
        text = model.precompute_text()  # (N, D) float32
        prompts = model.prompt_learner()  # fixed for the whole evaluation
        meter = HierarchicalMeter(taxonomy, cuts, depth=depth)
        num_nodes = taxonomy.num_nodes
        paths, mask = taxonomy.padded_paths()
        paths_t = torch.as_tensor(np.where(mask, paths, 0), dtype=torch.long, device=device)
        mask_t = torch.as_tensor(mask, dtype=torch.bool, device=device)
        image_sum = torch.zeros(num_nodes, text.shape[1], dtype=torch.float64, device=device)
        counts = torch.zeros(num_nodes, dtype=torch.float64, device=device)
        for batch in batches:
            images, labels = _unpack(batch)
            images = images.to(device)
            labels = torch.as_tensor(labels).to(device).long()
            final, tokens = model.image_features(images, prompts)
            scores, weights = model.node_scores_from(text, final, tokens)  # no (B, N, D) tensor
            meter.update(scores, labels)
            paths_b = paths_t[labels]
            nodes = torch.cat([torch.zeros_like(paths_b[:, :1]), paths_b], dim=1)  # root + path
            node_image = model.node_image_features(text, final, tokens, nodes, weights)  # (B, 1+H, D) or (B, D)
            _accumulate(image_sum, counts, F.normalize(node_image.float(), dim=-1), paths_b, mask_t[labels])
    finally:
        if swap:
            model.set_taxonomy(previous)
        for m, training in modes:
            m.training = training
    return meter.compute(), _embeddings(model, taxonomy, text, image_sum, counts)


def _embeddings(model, taxonomy, text, image_sum, counts) -> dict:
    """The ``embeddings`` dict of :func:`evaluate` from the accumulated sums (see there)."""
    text_unit = F.normalize(text.double(), dim=-1)
    text_unit[0] = 0.0
    image_mean = image_sum / counts.clamp(min=1).unsqueeze(1)
    image_mean[counts == 0] = math.nan
    curv = _curvatures(model, taxonomy, text_unit, image_sum, counts)
    nan = float("nan")
    return {
        "text": text_unit.float().cpu().numpy(),
        "image": image_mean.float().cpu().numpy(),
        "counts": counts.long().cpu().numpy(),
        "curv_text": np.float64(curv["text"] if curv else nan),
        "curv_image": np.float64(curv["image"] if curv else nan),
        "curv_inter": np.float64(curv["inter"] if curv else nan),
    }


def _accumulate(image_sum, counts, feats, paths, mask):
    """Add each sample's feature to the sums of the nodes on its path (and the root).

    feats ``(B, 1 + H, D)`` of the root and each path node, or ``(B, D)`` shared by all
    nodes; paths/mask ``(B, H)``.
    """
    b, h = paths.shape
    rows = torch.arange(b, device=paths.device).unsqueeze(1).expand(b, h)[mask]  # (P,)
    nodes = paths[mask]  # (P,)
    picked = feats[:, 1:][mask] if feats.dim() == 3 else feats[rows]  # (P, D)
    root = feats[:, 0] if feats.dim() == 3 else feats  # (B, D)
    image_sum.index_add_(0, nodes, picked.double())
    image_sum[0] += root.double().sum(0)
    counts.index_add_(0, nodes, torch.ones_like(nodes, dtype=counts.dtype))
    counts[0] += b


def _curvatures(model, taxonomy, text_unit, image_sum, counts):
    """Curvature values (floats) for the record, or None (no hyperbolic curvatures).

    The intermediate mode's radii come from the mean path features over the evaluation
    set, scaled as in the objective (``s_t``, ``s_i``), root excluded like the paths.
    """
    curv = getattr(model.objective, "curvatures", None)
    if curv is None or curv.euclidean:
        return None
    settings = model.objective.settings
    w = counts.clone()
    w[0] = 0.0
    total = w.sum().clamp(min=1)
    text_mean = settings.scale_text * (w.unsqueeze(1) * text_unit).sum(0) / total
    image_mean = settings.scale_image * image_sum[1:].sum(0) / total
    state = curv(text_feats=text_mean.unsqueeze(0), image_feats=image_mean.unsqueeze(0))
    return {k: float(getattr(state, k)) for k in ("text", "image", "inter")}
