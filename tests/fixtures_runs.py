"""Generated run folders in the format train.py / hyptree.eval.evaluate write (DESIGN.md, section 7).

Independent of the trainers: results.json, train_log.jsonl and embeddings.npz built
from the documented contract only.
"""

import json
import math
import os

import numpy as np


def tree(branching=(3, 2, 2)):
    """A complete tree: names, parent array (root first, breadth-first)."""
    names, parent = ["root"], [-1]
    frontier = [0]
    for _level, b in enumerate(branching, 1):
        nxt = []
        for p in frontier:
            for k in range(b):
                names.append(f"{names[p]}_{k}" if p else f"n{k}")
                parent.append(p)
                nxt.append(len(names) - 1)
        frontier = nxt
    return names, np.asarray(parent)


def record(**over):
    """A results.json record; ``over`` replaces fields, ``metrics`` entries are merged."""
    metrics = {
        "LA": 70.0,
        "HCA": 50.0,
        "MTA": 60.0,
        "node_acc": 80.0,
        "depth_acc": [90.0, 80.0, 70.0],
        "num_samples": 100,
    }
    metrics.update(over.pop("metrics", {}))
    rec = {
        "metrics": metrics,
        "split": "test",
        "tree": "all",
        "dataset": "CIFAR100Hier",
        "num_shots": 16,
        "subsample": "all",
        "trainer": "MaPLeHypTree",
        "backbone": "maple",
        "preset": "hyptree",
        "curvature_mode": "intermediate",
        "cross": "entailment",
        "image_tree": True,
        "pass_through": True,
        "seed": 1,
        "config_hash": "abc123",
        "epoch": 5,
        "model_dir": None,
        "output_dir": "",
        "taxonomy": {"num_nodes": 16},
        "taxonomy_source": "meta",
        "curvatures": {"text": 0.06, "image": 0.04, "inter": 0.05},
        "time": "2026-01-01T00:00:00",
    }
    rec.update(over)
    return rec


def write_results(run_dir, **over):
    os.makedirs(run_dir, exist_ok=True)
    rec = record(**over)
    if not rec.get("output_dir"):
        rec["output_dir"] = str(run_dir)
    with open(os.path.join(run_dir, "results.json"), "w") as f:
        json.dump(rec, f)
    return rec


def write_train_log(run_dir, epochs=3, iters=4, euclidean=False, global_iteration=False):
    lines = []
    for e in range(epochs):
        for i in range(iters):
            step = e * iters + i
            rec = {
                "epoch": e,
                "iteration": step if global_iteration else i,
                "lr": 0.01,
                "total": 3.0 * math.exp(-step / 6),
                "cut": 1.5 * math.exp(-step / 6),
                "node": 1.0 * math.exp(-step / 5),
                "text_ent": 0.2,
                "image_ent": 0.3,
                "cross": 0.1,
            }
            if not euclidean:
                rec.update(
                    curv_text=0.05 + 0.002 * step, curv_image=0.05 - 0.001 * step, curv_inter=0.05 + 0.0005 * step
                )
            lines.append(json.dumps(rec))
    with open(os.path.join(run_dir, "train_log.jsonl"), "w") as f:
        f.write("\n".join(lines) + "\n")


def write_embeddings(run_dir, branching=(3, 2, 2), dim=32, euclidean=False, seed=0, missing_image=(5,)):
    """Child features = parent feature + noise; image tree = text tree + a modality offset."""
    rng = np.random.default_rng(seed)
    names, parent = tree(branching)
    n = len(names)
    text = np.zeros((n, dim))
    text[0] = rng.normal(size=dim)
    for i in range(1, n):
        text[i] = text[parent[i]] + rng.normal(size=dim)
    image = text + 2.0 * rng.normal(size=dim) + 0.3 * rng.normal(size=(n, dim))
    image[list(missing_image)] = np.nan
    nan = float("nan")
    np.savez(
        os.path.join(run_dir, "embeddings.npz"),
        text=text.astype(np.float32),
        image=image.astype(np.float32),
        names=np.asarray(names),
        parent=parent,
        curv_text=np.float32(nan if euclidean else 0.08),
        curv_image=np.float32(nan if euclidean else 0.03),
        curv_inter=np.float32(nan if euclidean else 0.05),
    )
    return names, parent


def write_full_run(run_dir, euclidean=False, **over):
    rec = write_results(run_dir, **over)
    write_train_log(run_dir, euclidean=euclidean)
    write_embeddings(run_dir, euclidean=euclidean)
    return rec
