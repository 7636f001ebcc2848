"""Full hierarchical evaluation vs leaf-only evaluation of the same model on the same data.

* full: ``text = model.precompute_text()`` once (all nodes), then per batch
  ``model.node_scores(images, text)`` and ``HierarchicalMeter.update`` (LA, HCA, per-node
  and per-depth accuracy, MTA over 25 evaluation cuts), ``compute()`` at the end;
* leaf-only: text features of the leaves only, once; per batch one image pass, the
  image features for the leaves only (the text-guided selection over the leaves'
  queries in the ``hyptree`` preset), ``argmax`` over those columns, count correct.

Both are timed as two parts, interleaved over rounds: the text pass (once per
evaluation) and the batch loop over the data (what grows with the test set). Reported:
the loop ratio (full / leaf-only), the ratio of whole evaluations on the benchmark's
images, and that ratio projected to a 10,000-image test set (CIFAR-100's; SUN397's is
~20k) from the measured parts. Both evaluations must give the same LA (checked).

    PYTHONPATH=. python bench/eval.py --quick
    PYTHONPATH=. python bench/eval.py             # small and ViT-B/16 shapes
"""

from __future__ import annotations

import os
import sys
import warnings

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
import torch

from bench.common import (
    SHAPES,
    TAXONOMY_HELP,
    autocast,
    base_parser,
    batch,
    build_model,
    interleaved,
    median,
    paired_ratio,
    prepare_clip,
    print_setup,
    result_line,
    setup,
    table,
    taxonomy,
)
from hyptree.eval.metrics import HierarchicalMeter
from hyptree.tree import evaluation_cuts

TARGET = 1.25
PROJECT_IMAGES = 10_000


class Evaluations:
    """The two evaluations of one model over a list of batches."""

    def __init__(self, model, batches, cuts, args):
        self.model, self.batches, self.cuts, self.args = model, batches, cuts, args
        tax = model.taxonomy
        self.leaf_rows = torch.as_tensor(np.array(tax.leaves), device=args.device) - 1  # prompt rows
        self.text_full = self.text_leaf = None
        self.metrics = None
        self.leaf_correct = None

    @torch.no_grad()
    def full_text(self):
        with autocast(self.args):
            self.text_full = self.model.precompute_text()

    @torch.no_grad()
    def full_loop(self):
        meter = HierarchicalMeter(self.model.taxonomy, self.cuts)
        for images, labels in self.batches:
            with autocast(self.args):
                scores = self.model.node_scores(images, self.text_full)
            meter.update(scores, labels)
        self.metrics = meter.compute()

    @torch.no_grad()
    def leaf_text(self):
        m = self.model
        with autocast(self.args):
            p = m.prompt_learner()
            rows = self.leaf_rows
            self.text_leaf = m.text_tower(p.token_embeds[rows], p.tokens[rows], deep_prompts=p.text_deep).float()

    @torch.no_grad()
    def leaf_loop(self):
        m = self.model
        correct = torch.zeros((), dtype=torch.int64, device=self.args.device)
        for images, labels in self.batches:
            with autocast(self.args):
                final, tokens = m.image_features(images)
                scores = m.scores(self.text_leaf, m.node_image_features(self.text_leaf, final, tokens))
            correct += (scores.argmax(1) == labels).sum()
        self.leaf_correct = int(correct)


def run_config(shape_name, tax_name, preset, args, n_batches, rounds, budget):
    shape = SHAPES[shape_name]
    tax = taxonomy(tax_name)
    model = build_model(prepare_clip(shape, args), tax, preset, shape).eval()
    batches = [batch(shape, tax, args.eval_batch, args.device, seed=100 + i) for i in range(n_batches)]
    cuts = evaluation_cuts(tax, 25, seed=0)
    ev = Evaluations(model, batches, cuts, args)
    times = interleaved(
        {"full_text": ev.full_text, "full_loop": ev.full_loop, "leaf_text": ev.leaf_text, "leaf_loop": ev.leaf_loop},
        rounds,
        args.device,
        warmup=1,
        budget_s=budget,
    )
    n = n_batches * args.eval_batch
    la_full = ev.metrics["LA"]
    la_leaf = 100.0 * ev.leaf_correct / n
    if abs(la_full - la_leaf) > 1e-9:
        raise AssertionError(f"LA differs: full {la_full} leaf-only {la_leaf}")
    whole_full = [a + b for a, b in zip(times["full_text"], times["full_loop"])]
    whole_leaf = [a + b for a, b in zip(times["leaf_text"], times["leaf_loop"])]
    k = PROJECT_IMAGES / n
    projected = (median(times["full_text"]) + k * median(times["full_loop"])) / (
        median(times["leaf_text"]) + k * median(times["leaf_loop"])
    )
    return dict(
        shape=shape_name,
        taxonomy=tax_name,
        tax=tax,
        preset=preset,
        times=times,
        images=n,
        loop_ratio=paired_ratio(times["full_loop"], times["leaf_loop"]),
        text_ratio=paired_ratio(times["full_text"], times["leaf_text"]),
        whole_ratio=paired_ratio(whole_full, whole_leaf),
        projected=projected,
        la=la_full,
        mta=ev.metrics["MTA"],
        cuts=len(cuts),
    )


def main(argv=None):
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--eval-batch", type=int, default=None, help="images per evaluation batch")
    p.add_argument("--batches", type=int, default=None, help="batches in the evaluated data")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--shapes", default=None, help="comma-separated (tiny, small, b16)")
    p.add_argument("--taxonomies", default="sun,deep", help=TAXONOMY_HELP)
    p.add_argument("--presets", default="hyptree,vanilla")
    args = setup(p.parse_args(argv))
    warnings.filterwarnings("ignore")
    shapes = (args.shapes or ("tiny" if args.quick else "small,b16")).split(",")
    results = []
    asked_batch = args.eval_batch
    for s in shapes:
        args.eval_batch = asked_batch or {"tiny": 64, "small": 32}.get(s, 16)
        nb = args.batches or (4 if s != "b16" else 2)
        rounds = args.rounds or (5 if s != "b16" else 3)
        budget = 6.0 if args.quick else 240.0
        for t in args.taxonomies.split(","):
            for pr in args.presets.split(","):
                results.append(run_config(s, t, pr, args, nb, rounds, budget))

    print_setup(args, shapes, results)
    rows, values = [], {}
    for r in results:
        t = r["times"]
        rows.append(
            [
                r["shape"],
                r["taxonomy"],
                r["preset"],
                r["images"],
                f"{1e3 * median(t['full_text']):.1f} / {1e3 * median(t['leaf_text']):.1f}",
                f"{1e3 * median(t['full_loop']):.1f} / {1e3 * median(t['leaf_loop']):.1f}",
                len(t["full_loop"]),
                f"{r['loop_ratio']:.3f}",
                f"{r['whole_ratio']:.3f}",
                f"{r['projected']:.3f}",
            ]
        )
        key = f"{r['shape']}_{r['taxonomy']}_{r['preset']}"
        values[f"loop_ratio_{key}"] = r["loop_ratio"]
        values[f"whole_ratio_{key}"] = r["whole_ratio"]
        values[f"projected_ratio_{key}"] = r["projected"]
    print(
        table(
            rows,
            [
                "shape",
                "taxonomy",
                "preset",
                "images",
                "text ms full / leaf",
                "loop ms full / leaf",
                "rounds",
                "loop ratio",
                "whole ratio",
                f"projected ratio ({PROJECT_IMAGES} images)",
            ],
        )
    )
    values["target_met"] = all(r["loop_ratio"] <= TARGET and r["projected"] <= TARGET for r in results)
    print(
        f"target: full hierarchical / leaf-only evaluation <= {TARGET} (loop and projected whole "
        f"evaluation); LA of the two evaluations equal (checked)"
    )
    print(result_line(values))


if __name__ == "__main__":
    main()
