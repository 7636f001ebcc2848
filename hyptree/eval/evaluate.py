"""Evaluation and run outputs, framework-agnostic (no Dassl).

* :func:`evaluate` streams ``(images, labels)`` batches through a
  :class:`~hyptree.model.hierarchical.HierarchicalCLIP`: node text features computed once, one vision
  pass per batch, metrics accumulated by :class:`~hyptree.eval.metrics.HierarchicalMeter` (so the
  result equals :func:`~hyptree.eval.metrics.hierarchical_metrics` on all scores at once), and
  per-node mean image features gathered for the Poincare-disc plots.
* :func:`write_run` writes what every run leaves behind: ``results.json``, ``cuts.json``,
  ``taxonomy.txt``, ``embeddings.npz`` (the record itself comes from
  :func:`hyptree.run.records.run_record`, which reads the yacs config).
* :class:`TrainLog` appends one JSON line per training iteration (``train_log.jsonl``).

``results.json`` (read by ``hyptree.eval.results``; keys are a contract)::

    {"metrics": {"LA", "HCA", "MTA", "node_acc", "depth_acc": [...], "num_samples", ...},
     "split": "test" | "val", "tree": "all" | "base" | "new" | <target>,
     "dataset", "num_shots", "subsample", "trainer", "backbone", "preset",
     "curvature_mode", "cross", "image_tree", "pass_through", "seed", "config_hash",
     "epoch", "model_dir", "output_dir", "taxonomy": Taxonomy.stats(),
     "taxonomy_source", "curvatures": {"text", "image", "inter"} | null, "time"}

plus ``"clip"`` (the CLIP weights used) and ``"num_cuts"``.
"""
from __future__ import annotations

import json
import math
import os
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from hyptree.eval.metrics import HierarchicalMeter
from hyptree.tree.cutfiles import save_cuts
from hyptree.tree.io.paths import write_paths_file
from hyptree.tree.taxonomy import Taxonomy
from hyptree.utils.files import atomic_open, atomic_write_text

__all__ = [
    "evaluate",
    "write_run",
    "jsonable",
    "format_metrics",
    "TrainLog",
    "RESULTS_FILE",
]

RESULTS_FILE = "results.json"


# ---------------------------------------------------------------------------- evaluation


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
def evaluate(model, batches: Iterable, taxonomy: Taxonomy, cuts: Sequence | None = None,
             device=None):
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

    Returns:
        ``(metrics, embeddings)``. ``metrics`` is :meth:`HierarchicalMeter.compute`'s dict
        (LA, HCA, MTA, node_acc, depth_acc, cut_acc, node_accs, num_samples).
        ``embeddings`` is a dict of numpy arrays for :func:`write_run`:

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
        meter = HierarchicalMeter(taxonomy, cuts)
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
            node_image = model.node_image_features(text, final, tokens)  # (B, N, D) or (B, D)
            scores = model.scores(text, node_image)
            meter.update(scores, labels)
            _accumulate(image_sum, counts, F.normalize(node_image.float(), dim=-1),
                        paths_t[labels], mask_t[labels])
    finally:
        if swap:
            model.set_taxonomy(previous)
        for m, training in modes:
            m.training = training
    metrics = meter.compute()
    text_unit = F.normalize(text.double(), dim=-1)
    text_unit[0] = 0.0
    image_mean = image_sum / counts.clamp(min=1).unsqueeze(1)
    image_mean[counts == 0] = math.nan
    curv = _curvatures(model, taxonomy, text_unit, image_sum, counts)
    nan = float("nan")
    embeddings = {
        "text": text_unit.float().cpu().numpy(),
        "image": image_mean.float().cpu().numpy(),
        "counts": counts.long().cpu().numpy(),
        "curv_text": np.float64(curv["text"] if curv else nan),
        "curv_image": np.float64(curv["image"] if curv else nan),
        "curv_inter": np.float64(curv["inter"] if curv else nan),
    }
    return metrics, embeddings


def _accumulate(image_sum, counts, feats, paths, mask):
    """Add each sample's feature to the sums of the nodes on its path (and the root).

    feats ``(B, N, D)`` per node or ``(B, D)`` shared by all nodes; paths/mask ``(B, H)``.
    """
    b, h = paths.shape
    rows = torch.arange(b, device=paths.device).unsqueeze(1).expand(b, h)[mask]  # (P,)
    nodes = paths[mask]  # (P,)
    picked = feats[rows, nodes] if feats.dim() == 3 else feats[rows]  # (P, D)
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


# ---------------------------------------------------------------------------- cuts


# ---------------------------------------------------------------------------- records


def jsonable(x):
    """Floats NaN/inf -> None (strict JSON), numpy scalars -> Python, recursively."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_run(output_dir: str, record: dict, taxonomy: Taxonomy, cuts: Sequence | None,
              embeddings: dict | None = None, results_name: str = RESULTS_FILE) -> dict:
    """Write a run's outputs into ``output_dir`` (created if needed); returns their paths.

    * ``results.json`` (``results_name``): ``record`` (NaN written as ``null``);
    * ``cuts.json``: the MTA cuts as node names (:func:`~hyptree.tree.cutfiles.save_cuts`);
    * ``taxonomy.txt``: the evaluated tree (:func:`~hyptree.tree.io.paths.write_paths_file`);
    * ``embeddings.npz`` (when ``embeddings`` is given, see :func:`evaluate`): ``text``,
      ``image``, ``counts``, ``names``, ``display_names``, ``parent``, ``depth``,
      ``curv_text``, ``curv_image``, ``curv_inter``.
    """
    os.makedirs(output_dir, exist_ok=True)
    paths = {
        "results": os.path.join(output_dir, results_name),
        "cuts": os.path.join(output_dir, "cuts.json"),
        "taxonomy": os.path.join(output_dir, "taxonomy.txt"),
    }
    atomic_write_text(paths["results"], json.dumps(jsonable(record), indent=1, allow_nan=False) + "\n")
    save_cuts(paths["cuts"], taxonomy, list(cuts or []))
    write_paths_file(paths["taxonomy"], taxonomy)
    if embeddings is not None:
        paths["embeddings"] = os.path.join(output_dir, "embeddings.npz")
        arrays = dict(embeddings)
        for key in ("text", "image"):
            if np.asarray(arrays[key]).shape[0] != taxonomy.num_nodes:
                raise ValueError(f"embeddings[{key!r}] has {np.asarray(arrays[key]).shape[0]} rows, "
                                 f"the taxonomy {taxonomy.num_nodes} nodes")
        arrays.update(names=np.asarray(taxonomy.names), display_names=np.asarray(taxonomy.display_names),
                      parent=np.asarray(taxonomy.parent), depth=np.asarray(taxonomy.depth))
        with atomic_open(paths["embeddings"], "wb") as f:
            np.savez(f, **arrays)
    return paths


def format_metrics(metrics: dict, title: str = "") -> str:
    """A small text table: LA, HCA, MTA, node accuracy and accuracy per depth."""
    def pct(v):
        return "  n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:6.2f}"

    lines = [title] if title else []
    lines.append(f"{'metric':<10} {'value':>6}")
    for key in ("LA", "HCA", "MTA", "node_acc"):
        lines.append(f"{key:<10} {pct(metrics.get(key))}")
    for d, v in enumerate(metrics.get("depth_acc", []), start=1):
        lines.append(f"{'depth ' + str(d):<10} {pct(v)}")
    lines.append(f"{'samples':<10} {metrics.get('num_samples', 0):>6}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- training log


class TrainLog:
    """Append-only JSON-lines log of training iterations (``train_log.jsonl``).

    One object per line, e.g. ``{"epoch": 1, "iteration": 0, "batch": 0, "lr": 0.002,
    "total": ..., "cut": ..., "curv_text": ..., ...}``: ``epoch`` is 1-based (Dassl's
    printout), ``iteration`` the 0-based global step. Lines are flushed as written so a
    crashed run keeps its log. :meth:`truncate` drops the lines of epochs after a resume
    point (an interrupted epoch is retrained, and logged, again).
    """

    def __init__(self, path: str):
        self.path = path
        if os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        self._file = None

    def append(self, **fields) -> None:
        if self._file is None:
            self._file = open(self.path, "a", encoding="utf-8")
        self._file.write(json.dumps(jsonable(fields), allow_nan=False) + "\n")
        self._file.flush()

    def truncate(self, completed_epochs: int) -> int:
        """Keep only lines with ``epoch <= completed_epochs``; returns how many were dropped."""
        self.close()
        if not os.path.isfile(self.path):
            return 0
        rows = self.read(self.path)
        keep = [r for r in rows if r.get("epoch", 0) <= completed_epochs]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in keep))
        return len(rows) - len(keep)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    @staticmethod
    def read(path: str) -> list:
        """All records of a log (a torn last line from a crash is skipped)."""
        out = []
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return out
