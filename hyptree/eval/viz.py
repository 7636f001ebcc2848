"""Plots written next to a run's results (matplotlib's Agg canvas: no display, no pyplot state).

* :func:`plot_curvatures` - ``c_t``, ``c_i``, ``c_m`` over training (``train_log.jsonl``);
* :func:`plot_losses` - the loss terms over training;
* :func:`plot_depth_accuracy` - per-depth accuracy bars, several runs side by side;
* :func:`plot_poincare` - the text and image feature trees on Poincaré disks;
* :func:`plot_run` - all of those that apply to one run folder
  (``curvatures.png``, ``losses.png``, ``depth_acc.png``, ``poincare.png``).

Poincaré view (``embeddings.npz``: ``text``/``image`` ``(num_nodes, D)`` node features,
NaN rows for image nodes without samples, ``names``, ``parent``, ``curv_text``,
``curv_image``, ``curv_inter``). A 2-D picture of a ``D``-dimensional tree needs a
projection; the one used here is:

1. features are normalised to unit length (the model's ``T_k``, ``V_k``) and centred
   on their mean;
2. they are projected on their two principal axes (PCA) and rescaled so that the
   farthest node gets the tangent norm ``scale`` (the model's ``s``, 10 by default):
   ``v`` is a tangent vector at the origin, as ``s * T_k`` is in the model;
3. ``v`` goes to the Lorentz model of curvature ``-c`` with the exponential map at the
   origin, ``x = sinh(sqrt(c)|v|) / (sqrt(c)|v|) v``, ``t = sqrt(1/c + |x|^2)``, and to the
   Poincaré ball with ``p = x / (1 + sqrt(c) t)``; ``sqrt(c) p`` lies in the unit disk
   (its radius is ``tanh(sqrt(c)|v| / 2)``).

Text uses ``c_t``, image ``c_i``; a third panel shows both trees on the intermediate
manifold ``c_m`` after one joint PCA (its first axis usually separates the modalities:
the modality gap). Parent-child edges are drawn as geodesics (circle arcs orthogonal to
the boundary), nodes coloured by depth. Euclidean runs (NaN curvatures) are drawn in
the plane with straight edges (``v / scale``).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle

from hyptree.eval.disk import geodesic, node_depths, project_2d, to_poincare_disk
from hyptree.eval.runfiles import RESULTS_FILE
from hyptree.eval.trainlog import TRAIN_LOG_FILE
from hyptree.utils.files import atomic_open

__all__ = [
    "read_train_log",
    "plot_curvatures",
    "plot_losses",
    "plot_depth_accuracy",
    "project_2d",
    "to_poincare_disk",
    "node_depths",
    "plot_poincare",
    "poincare_figure",
    "plot_run",
]

CURVATURE_KEYS = (("curv_text", "c_t (text)"), ("curv_image", "c_i (image)"), ("curv_inter", "c_m (intermediate)"))
# bookkeeping fields of train_log.jsonl (hyptree.eval.trainlog) that are not loss terms
_NOT_LOSSES = {
    "epoch",
    "iteration",
    "iter",
    "step",
    "batch",
    "batch_idx",
    "lr",
    "time",
    "eta",
    "batch_time",
    "data_time",
    "num_batches",
}


def _save(fig: Figure, out_png: str) -> str:
    FigureCanvasAgg(fig)
    with atomic_open(out_png, "wb") as f:  # creates the folder
        fig.savefig(f, format="png", dpi=120, bbox_inches="tight")
    return out_png


# --------------------------------------------------------------------------- training log


def read_train_log(path: str) -> list[dict]:
    """The JSON objects of a ``train_log.jsonl`` (blank lines skipped, bad lines warned about)."""
    records = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                warnings.warn(f"{path}:{lineno}: not a JSON object, skipped", stacklevel=2)
                continue
            if isinstance(rec, dict):
                records.append(rec)
    if not records:
        raise ValueError(f"{path}: no log records")
    return records


def _x_axis(records: list[dict]) -> tuple[np.ndarray, str]:
    """Global iterations when ``iteration`` always increases, else fractional epochs."""
    its = [r.get("iteration") for r in records]
    eps = [r.get("epoch") for r in records]
    if all(isinstance(i, (int, float)) for i in its):
        its_a = np.asarray(its, dtype=float)
        if len(its_a) < 2 or np.all(np.diff(its_a) > 0):
            return its_a, "iteration"
        if all(isinstance(e, (int, float)) for e in eps):
            eps_a = np.asarray(eps, dtype=float)
            per_epoch = {e: its_a[eps_a == e].max() + 1 for e in np.unique(eps_a)}
            return eps_a + its_a / np.asarray([per_epoch[e] for e in eps_a]), "epoch"
    if all(isinstance(e, (int, float)) for e in eps):
        return np.asarray(eps, dtype=float), "epoch"
    return np.arange(len(records), dtype=float), "logged step"


def _series(records: list[dict], key: str) -> np.ndarray:
    out = []
    for r in records:
        v = r.get(key)
        out.append(float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else np.nan)
    return np.asarray(out)


def plot_curvatures(train_log_path: str, out_png: str) -> str:
    """``c_t``, ``c_i``, ``c_m`` over training. ValueError when the log has none (euclidean)."""
    records = read_train_log(train_log_path)
    x, xlabel = _x_axis(records)
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    drawn = 0
    for (key, label), style in zip(CURVATURE_KEYS, ("-", "--", ":")):
        y = _series(records, key)
        ok = np.isfinite(y)
        if ok.any():
            ax.plot(x[ok], y[ok], style, lw=1.8, label=f"{label}: {y[ok][-1]:.4g}")
            drawn += 1
    if not drawn:
        raise ValueError(
            f"{train_log_path}: no curvature values (curv_text/curv_image/curv_inter); a euclidean run has none"
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel("curvature c (manifold curvature is -c)")
    ax.set_title("Learned curvatures")
    ax.grid(alpha=0.3)
    ax.legend(title="final value")
    return _save(fig, out_png)


def plot_losses(train_log_path: str, out_png: str) -> str:
    """Every numeric loss term of the log (``total``, ``cut``, ``node``, ...) over training."""
    records = read_train_log(train_log_path)
    x, xlabel = _x_axis(records)
    keys = loss_keys(records)
    if not keys:
        raise ValueError(f"{train_log_path}: no loss values")
    return _plot_loss_curves(records, keys, x, xlabel, out_png)


def loss_keys(records: list[dict]) -> list[str]:
    """The loss terms among the numeric fields of train-log records (``total`` first)."""
    keys = []
    for r in records:
        for k, v in r.items():
            if (
                k not in keys
                and k not in _NOT_LOSSES
                and not k.startswith("curv")
                and isinstance(v, (int, float))
                and not isinstance(v, bool)
            ):
                keys.append(k)
    keys.sort(key=lambda k: (k != "total", k))
    return keys


def _plot_loss_curves(records, keys, x, xlabel, out_png):
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    for k in keys:
        y = _series(records, k)
        ok = np.isfinite(y)
        if ok.any():
            ax.plot(x[ok], y[ok], lw=2.2 if k == "total" else 1.2, label=k)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("loss")
    ax.set_title("Training losses")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    return _save(fig, out_png)


# --------------------------------------------------------------------------- depth accuracy


def _load_result(item) -> dict:
    if isinstance(item, dict):
        return item
    path = os.fspath(item)
    if os.path.isdir(path):
        path = os.path.join(path, RESULTS_FILE)
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _run_label(rec: dict) -> str:
    bits = [rec.get("trainer"), rec.get("preset")]
    tree = rec.get("tree")
    if tree and tree != "all":
        bits.append(str(tree))
    label = " ".join(str(b) for b in bits if b)
    return label or "run"


def plot_depth_accuracy(results, out_png: str, labels: Sequence[str] | None = None) -> str:
    """Per-depth accuracy (``metrics.depth_acc``, depth 1 = children of the root) as grouped bars.

    ``results``: one or several ``results.json`` paths (or run folders) or loaded dicts.
    """
    if isinstance(results, (dict, str, os.PathLike)):
        results = [results]
    recs = [_load_result(r) for r in results]
    if not recs:
        raise ValueError("plot_depth_accuracy needs at least one result")
    accs = []
    for i, rec in enumerate(recs):
        d = (rec.get("metrics") or {}).get("depth_acc")
        if not d:
            raise ValueError(f"result {i} ({_run_label(rec)}) has no metrics.depth_acc")
        accs.append([float(v) for v in d])
    if labels is None:
        labels = [_run_label(r) for r in recs]
        if len(set(labels)) < len(labels):
            labels = [
                f"{lab} seed{r.get('seed')}" if r.get("seed") is not None else lab for lab, r in zip(labels, recs)
            ]
        if len(set(labels)) < len(labels):
            labels = [f"{lab} #{i + 1}" for i, lab in enumerate(labels)]
    elif len(labels) != len(recs):
        raise ValueError(f"{len(labels)} labels for {len(recs)} results")
    depth = max(len(a) for a in accs)
    n = len(accs)
    width = 0.8 / n
    fig = Figure(figsize=(max(5.0, 1.0 + depth * (0.5 + 0.35 * n)), 4.0))
    ax = fig.add_subplot(1, 1, 1)
    cmap = colormaps["tab10"]
    annotate = depth * n <= 24
    for k, (acc, lab) in enumerate(zip(accs, labels)):
        xs = np.arange(1, len(acc) + 1) + (k - (n - 1) / 2) * width
        bars = ax.bar(xs, acc, width=width * 0.95, color=cmap(k % 10), label=lab)
        if annotate:
            ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
    ax.set_xticks(np.arange(1, depth + 1))
    ax.set_xlabel("depth (1 = children of the root)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title("Per-depth accuracy")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out_png)


# --------------------------------------------------------------------------- Poincaré view


def _draw_tree(ax, pos, parent, depth, cmap, norm_depth, marker, curved, size, label_nodes, names, edge_style="-"):
    ok = np.isfinite(pos).all(axis=1)
    segs, colours = [], []
    for child, par in enumerate(parent):
        if par < 0 or not (ok[child] and ok[par]):
            continue
        a, b = complex(*pos[par]), complex(*pos[child])
        segs.append(geodesic(a, b) if curved else np.array([pos[par], pos[child]]))
        colours.append(cmap(norm_depth(depth[child])))
    if segs:
        ax.add_collection(
            LineCollection(segs, colors=colours, linewidths=0.8, alpha=0.6, linestyles=edge_style, zorder=1)
        )
    sizes = np.maximum(size / (1 + depth[ok]), 6)
    ax.scatter(
        pos[ok, 0],
        pos[ok, 1],
        c=[cmap(norm_depth(d)) for d in depth[ok]],
        s=sizes,
        marker=marker,
        edgecolors="k",
        linewidths=0.3,
        zorder=2,
    )
    for i in np.flatnonzero(ok & label_nodes):
        ax.annotate(str(names[i]), pos[i], fontsize=7, xytext=(3, 3), textcoords="offset points", zorder=3)


def _scalar(data, key) -> float:
    if key not in data:
        return float("nan")
    v = np.asarray(data[key], dtype=np.float64).ravel()
    return float(v[0]) if v.size else float("nan")


def plot_poincare(embeddings_npz, out_png: str, scale: float = 10.0, max_labels: int = 16) -> str:
    """Text and image trees on Poincaré disks (see the module docstring for the projection).

    ``embeddings_npz``: a path or a dict of its arrays. ``max_labels``: names are written
    for the shallowest levels that together have at most this many nodes.
    """
    return _save(poincare_figure(embeddings_npz, scale, max_labels), out_png)


def _read_embeddings(embeddings_npz):
    """``(data dict, text (N, D), image (N, D), parent (N,), names (N,))`` from a run's npz or a dict."""
    if isinstance(embeddings_npz, (str, os.PathLike)):
        with np.load(embeddings_npz, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
        source = os.fspath(embeddings_npz)
    else:
        data, source = dict(embeddings_npz), "embeddings"
    for key in ("text", "parent"):
        if key not in data:
            raise ValueError(f"{source}: missing array {key!r}")
    text = np.asarray(data["text"], dtype=np.float64)
    parent = np.asarray(data["parent"], dtype=int)
    n = len(parent)
    image = np.asarray(data.get("image", np.full_like(text, np.nan)), dtype=np.float64)
    if text.shape[0] != n or image.shape[0] != n:
        raise ValueError(f"{source}: text {text.shape}, image {image.shape} and parent ({n},) disagree")
    names = np.asarray(data["names"]).astype(str) if "names" in data else np.arange(n).astype(str)
    return data, text, image, parent, names


def _label_nodes(depth: np.ndarray, max_labels: int) -> np.ndarray:
    """Label the shallowest levels that together hold at most ``max_labels`` nodes."""
    levels = np.bincount(depth)
    label_depth = -1
    for d in range(len(levels)):
        if levels[: d + 1].sum() <= max_labels:
            label_depth = d
    return depth <= label_depth


def poincare_figure(embeddings_npz, scale: float = 10.0, max_labels: int = 16) -> Figure:
    """The figure :func:`plot_poincare` saves: one panel per tree (+ a joint one on ``c_m``)."""
    data, text, image, parent, names = _read_embeddings(embeddings_npz)
    n = len(parent)
    depth = node_depths(parent)
    label_nodes = _label_nodes(depth, max_labels)
    c_t, c_i, c_m = (_scalar(data, k) for k in ("curv_text", "curv_image", "curv_inter"))

    has_image = bool(np.isfinite(image).all(axis=1).any())
    panels = [("text tree", text, c_t, "o")]
    if has_image:
        panels.append(("image tree", image, c_i, "^"))
        panels.append(("joint", None, c_m, None))
    cmap = colormaps["viridis"]
    max_d = max(int(depth.max()), 1)

    def norm_depth(d):
        return 0.9 * d / max_d

    fig = Figure(figsize=(5.2 * len(panels), 5.4))
    for k, (title, feats, c, marker) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        curved = bool(np.isfinite(c) and c > 0)
        if feats is None:  # joint PCA of both trees
            both = project_2d(np.vstack([text, image]), scale)
            trees = [(both[:n], "o", "-"), (both[n:], "^", "--")]
        else:
            trees = [(project_2d(feats, scale), marker, "-")]
        for v, mk, style in trees:
            pos = to_poincare_disk(v, c) if curved else v / scale
            _draw_tree(
                ax,
                pos,
                parent,
                depth,
                cmap,
                norm_depth,
                mk,
                curved,
                60.0,
                label_nodes if feats is not None else np.zeros(n, bool),
                names,
                style,
            )
        if curved:
            ax.add_patch(Circle((0, 0), 1.0, fill=False, lw=1.0, color="0.3"))
            sub = {"text tree": "c_t", "image tree": "c_i", "joint": "c_m"}[title]
            ax.set_title(f"{title} ({sub} = {c:.4g})")
        else:
            ax.set_title(f"{title} (euclidean)")
            ax.grid(alpha=0.3)
        lim = 1.05
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [
        Line2D([], [], marker="o", ls="", color=cmap(norm_depth(d)), label=f"depth {d}")
        for d in range(int(depth.max()) + 1)
    ]
    if has_image:
        handles += [
            Line2D([], [], marker="o", ls="-", color="0.4", label="text"),
            Line2D([], [], marker="^", ls="--", color="0.4", label="image"),
        ]
    fig.legend(
        handles=handles,
        loc="lower center",
        ncol=min(len(handles), 8),
        fontsize=8,
        frameon=False,
        bbox_to_anchor=(0.5, 0.0),
    )
    if any(np.isfinite(c) and c > 0 for _, _, c, _ in panels):
        fig.suptitle(f"Poincaré view: PCA of unit features, tangent norm <= {scale:g}", fontsize=10)
    else:
        fig.suptitle("Euclidean run: PCA of unit features in the plane", fontsize=10)
    fig.subplots_adjust(bottom=0.08, top=0.88, wspace=0.08)
    return fig


# --------------------------------------------------------------------------- one run


def plot_run(run_dir: str, scale: float = 10.0) -> list[str]:
    """Write every plot that applies to ``run_dir``; returns the PNG paths written.

    ``depth_acc.png`` from ``results.json``, ``losses.png`` and (not for euclidean runs)
    ``curvatures.png`` from ``train_log.jsonl``, ``poincare.png`` from ``embeddings.npz``.
    """
    written = []
    res = os.path.join(run_dir, RESULTS_FILE)
    if os.path.isfile(res):
        rec = _load_result(res)
        if (rec.get("metrics") or {}).get("depth_acc"):
            written.append(plot_depth_accuracy([rec], os.path.join(run_dir, "depth_acc.png")))
    log = os.path.join(run_dir, TRAIN_LOG_FILE)
    if os.path.isfile(log):
        records = read_train_log(log)
        if any(np.isfinite(_series(records, k)).any() for k, _ in CURVATURE_KEYS):
            written.append(plot_curvatures(log, os.path.join(run_dir, "curvatures.png")))
        try:
            written.append(plot_losses(log, os.path.join(run_dir, "losses.png")))
        except ValueError:
            pass
    emb = os.path.join(run_dir, "embeddings.npz")
    if os.path.isfile(emb):
        written.append(plot_poincare(emb, os.path.join(run_dir, "poincare.png"), scale=scale))
    return written
