"""The files a run leaves behind, and how results are printed.

* :func:`write_run` writes ``results.json`` (``RESULTS_FILE``), ``cuts.json``, ``taxonomy.txt``
  and ``embeddings.npz`` into a run folder (the record itself comes from
  :func:`hyptree.run.records.run_record`, which reads the yacs config);
* :func:`jsonable` makes metrics strict JSON (NaN -> null, numpy -> Python);
* :func:`format_metrics` is the small text table a run prints.

``results.json`` (read by :mod:`hyptree.eval.runs`; keys are a contract)::

    {"metrics": {"LA", "HCA", "MTA", "node_acc", "depth_acc": [...], "num_samples", ...},
     "split": "test" | "val", "tree": "all" | "base" | "new" | <target>,
     "dataset", "num_shots", "subsample", "trainer", "backbone", "preset",
     "curvature_mode", "cross", "image_tree", "pass_through", "seed", "config_hash",
     "epoch", "model_dir", "output_dir", "taxonomy": Taxonomy.stats(),
     "taxonomy_source", "curvatures": {"text", "image", "inter"} | null, "time"}

plus ``"clip"`` (the CLIP weights used), ``"num_cuts"``, ``"dropped_classes"`` (list of
``{"class", "reason"}``: dataset classes left out) and, for runs with training images,
``"num_shots_used"`` / ``"train_per_class"`` (``[fewest, most]`` images of a class).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from hyptree.tree.cutfiles import save_cuts
from hyptree.tree.io.paths import write_paths_file
from hyptree.tree.taxonomy import Taxonomy
from hyptree.utils.files import atomic_open, atomic_write_json

__all__ = ["RESULTS_FILE", "write_run", "jsonable", "format_metrics"]

RESULTS_FILE = "results.json"


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


def write_run(
    output_dir: str,
    record: dict,
    taxonomy: Taxonomy,
    cuts: Sequence | None,
    embeddings: dict | None = None,
    results_name: str = RESULTS_FILE,
) -> dict:
    """Write a run's outputs into ``output_dir`` (created if needed); returns their paths.
    ``results.json`` is written last (the scripts' "done" marker).

    * ``results.json`` (``results_name``): ``record`` (NaN written as ``null``);
    * ``cuts.json``: the MTA cuts as node names (:func:`~hyptree.tree.taxonomy.save_cuts`);
    * ``taxonomy.txt``: the evaluated tree (:func:`~hyptree.tree.io.write_paths_file`);
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
    record = jsonable(record)  # fails before any file is written on a value JSON cannot hold
    save_cuts(paths["cuts"], taxonomy, list(cuts or []))
    write_paths_file(paths["taxonomy"], taxonomy)
    if embeddings is not None:
        paths["embeddings"] = os.path.join(output_dir, "embeddings.npz")
        arrays = dict(embeddings)
        for key in ("text", "image"):
            if np.asarray(arrays[key]).shape[0] != taxonomy.num_nodes:
                raise ValueError(
                    f"embeddings[{key!r}] has {np.asarray(arrays[key]).shape[0]} rows, "
                    f"the taxonomy {taxonomy.num_nodes} nodes"
                )
        arrays.update(
            names=np.asarray(taxonomy.names),
            display_names=np.asarray(taxonomy.display_names),
            parent=np.asarray(taxonomy.parent),
            depth=np.asarray(taxonomy.depth),
        )
        with atomic_open(paths["embeddings"], "wb") as f:
            np.savez(f, **arrays)
    # last: the scripts take results.json as "this run is done", so it appears after the rest
    atomic_write_json(paths["results"], record, indent=1, allow_nan=False)
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
