"""How the cost grows with the taxonomy: vanilla / protect / hyptree from 100 to 20,000 nodes.

For each tree size N (synthetic trees with realistic depth and prompt lengths,
:func:`realistic_tree`; plus the real ProTeCt trees under ``$HYPTREE_PROTECT_DIR`` when
present: ``<dir>/<dataset>/tree.npy``) and each preset: one training step's median time,
its peak memory (CPU: peak RSS of a fresh child process; CUDA: max allocated), with the
plain text pass (``text_chunk=0``) and the memory-bounded one (``--chunk``, checkpointed
chunks); evaluation images/s (full hierarchical scores vs leaf-only). Prints the ratios
(hyptree / protect, full / leaf, chunked / plain) and the growth exponents
``log(t_2 / t_1) / log(N_2 / N_1)`` between successive sizes.

    PYTHONPATH=. python bench/scale.py --quick
    PYTHONPATH=. python bench/scale.py --shape b16 --sizes 100 400 1368 5000 20000
"""

from __future__ import annotations

import glob
import json
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import (  # noqa: E402
    _WORDS,
    SHAPES,
    base_parser,
    batch,
    child_answer,
    child_peak_memory,
    interleaved,
    make_step,
    measure_peak,
    median,
    prepare_clip,
    result_line,
    setup,
    table,
)
from hyptree.model.hierarchical import HierarchicalCLIP  # noqa: E402
from hyptree.tree import Taxonomy  # noqa: E402

PRESETS = ("vanilla", "protect", "hyptree")
#: words per name: CIFAR-like short names, WordNet-like multi-word ones, and a tail of
#: SUN-like long scene descriptions ("transportation (roads, parking, bridges, ...)")
WORD_COUNTS = (1, 2, 3, 4, 5, 6, 9, 12)
WORD_P = (0.30, 0.30, 0.17, 0.10, 0.06, 0.04, 0.02, 0.01)


def _namer(rng):
    used: set = set()

    def name():
        while True:
            k = int(rng.choice(WORD_COUNTS, p=WORD_P))
            n = " ".join(rng.choice(_WORDS, size=k, replace=k > len(_WORDS) // 2))
            if n not in used:
                used.add(n)
                return n

    return name


def realistic_tree(nodes: int, seed: int = 0, branching=(2, 12), max_depth: int = 7) -> Taxonomy:
    """About ``nodes`` nodes, depth <= ``max_depth`` (leaves ~70 % of the nodes, as in
    ImageNet's 1,000 of 1,368), grown breadth-first with 2-12 children per node."""
    rng = np.random.default_rng(seed)
    name = _namer(rng)
    edges, frontier, count = [], [("root", 0)], 1
    while count < nodes and frontier:
        i = int(rng.integers(len(frontier)))
        node, depth = frontier.pop(i)
        k = min(int(rng.integers(*branching)), nodes - count)
        for _ in range(max(k, 1)):
            child = name()
            edges.append((node, child))
            if depth + 1 < max_depth:
                frontier.append((child, depth + 1))
        count += max(k, 1)
    return Taxonomy.from_edges(edges, root="root")


def trees(sizes):
    """``{label: taxonomy}``: synthetic trees of each size, plus the real ProTeCt trees."""
    out = {f"N{n}": realistic_tree(n) for n in sizes}
    root = os.environ.get("HYPTREE_PROTECT_DIR")
    if root:
        from hyptree.tree.io.protect import read_protect_tree

        for path in sorted(glob.glob(os.path.join(root, "*", "tree.npy"))):
            out[os.path.basename(os.path.dirname(path))] = read_protect_tree(path)
    return out


def build(shape, tax, preset, chunk, args):
    clip_model = prepare_clip(shape, args)
    torch.manual_seed(0)
    model = HierarchicalCLIP(
        clip_model,
        tax,
        backbone="maple",
        preset=preset,
        prompt_options=dict(n_ctx=2, ctx_init="a photo of a", depth=shape.maple_depth),
        text_chunk=chunk,
    ).to(args.device)
    images, labels = batch(shape, tax, args.batch, args.device)
    return model, images, labels


def child(spec):
    """Peak memory of one step (fresh process)."""
    args = setup(base_parser("child").parse_args(["--device", spec["device"], "--threads", "1"]))
    args.batch = spec["batch"]
    model, images, labels = build(
        SHAPES[spec["shape"]], realistic_tree(spec["nodes"]), spec["preset"], spec["chunk"], args
    )
    step = make_step(model, images, labels, args)
    step()
    base, peak = measure_peak(step, args.device)
    child_answer({"base": base, "peak": peak})


def eval_rate(model, images):
    """Images/s of full hierarchical scoring and of leaf-only scoring (text precomputed)."""
    with torch.no_grad():
        text = model.precompute_text()
        leaves = torch.as_tensor(np.array(model.taxonomy.leaves), device=images.device)
        text_leaf = model.text_features(nodes=leaves)[leaves]
        p = model.prompt_learner()

        def full():
            model.node_scores(images, text)

        def leaf():
            final, tokens = model.image_features(images, p)
            model.node_scores_from(text_leaf, final, tokens)

        times = interleaved({"full": full, "leaf": leaf}, rounds=2, device=images.device)
    return {k: images.shape[0] / median(v) for k, v in times.items()}


def run(args, sizes, memory=True):
    """Rows ``(tree, N, preset, chunk, step_s, peak_MB, eval_img_s)`` and the result values."""
    shape, rows, values = SHAPES[args.shape], [], {}
    for label, tax in trees(sizes).items():
        for chunk in (0, args.chunk):
            steps = {}
            for preset in PRESETS:
                model, images, labels = build(shape, tax, preset, chunk, args)
                steps[preset] = (model, make_step(model, images, labels, args), images)
            times = interleaved({p: s[1] for p, s in steps.items()}, rounds=args.rounds, device=args.device)
            for preset, (model, _, images) in steps.items():
                peak = float("nan")
                if memory and label.startswith("N"):
                    spec = dict(shape=args.shape, nodes=tax.num_nodes, preset=preset, chunk=chunk, batch=args.batch)
                    mem = child_peak_memory(__file__, dict(spec, device=args.device))
                    peak = mem["peak"] / 2**20
                rate = eval_rate(model, images) if chunk == 0 else {"full": float("nan"), "leaf": float("nan")}
                rows.append(
                    [label, tax.num_nodes, preset, chunk, median(times[preset]), peak, rate["full"], rate["leaf"]]
                )
    _ratios(rows, values)
    return rows, values


def _ratios(rows, values):
    by = {(r[0], r[2], r[3]): r for r in rows}
    for (label, preset, chunk), r in by.items():
        if preset != "hyptree":
            continue
        p = by[(label, "protect", chunk)]
        values[f"time_ratio_{label}_c{chunk}"] = r[4] / p[4]
        if not math.isnan(r[5]):
            values[f"mem_ratio_{label}_c{chunk}"] = r[5] / p[5]
        if chunk == 0:
            values[f"eval_ratio_{label}"] = r[7] / r[6]  # full / leaf time = leaf rate / full rate


def growth(rows, column):
    """``{(preset, chunk): [exponent between successive synthetic sizes]}``."""
    out = {}
    for key in sorted({(r[2], r[3]) for r in rows}):
        pts = sorted((r[1], r[column]) for r in rows if (r[2], r[3]) == key and r[0].startswith("N"))
        out[key] = [math.log(b[1] / a[1]) / math.log(b[0] / a[0]) for a, b in zip(pts, pts[1:]) if a[1] > 0]
    return out


def main(argv=None):
    p = base_parser(__doc__.splitlines()[0], quick_help="tiny shape, 3 small trees, no memory children")
    p.add_argument("--shape", default="b16", choices=sorted(SHAPES))
    p.add_argument("--sizes", type=int, nargs="+", default=[100, 400, 1368, 5000, 20000])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--chunk", type=int, default=256, help="prompts per checkpointed chunk of the bounded pass")
    p.add_argument("--no-memory", action="store_true")
    args = p.parse_args(argv)
    if args.child_mem:
        return child(json.loads(args.child_mem))
    args = setup(args)
    if args.quick:
        args.shape, args.sizes, args.batch, args.rounds, args.chunk = "tiny", [30, 60, 120], 2, 1, 16
        args.no_memory = True  # one fresh interpreter per configuration is too slow for a quick run
    rows, values = run(args, args.sizes, memory=not args.no_memory)
    print(f"shape {SHAPES[args.shape].describe()}, batch {args.batch}, device {args.device}")
    header = ["tree", "N", "preset", "chunk", "step s", "peak MB", "eval full img/s", "eval leaf img/s"]
    print(table([[f"{v:.3g}" if isinstance(v, float) else v for v in r] for r in rows], header))
    for name, col in (("step time", 4), ("peak memory", 5)):
        for (preset, chunk), ex in growth(rows, col).items():
            print(f"growth exponent of {name}, {preset} chunk {chunk}: " + " ".join(f"{e:.2f}" for e in ex))
    print(result_line(values))


if __name__ == "__main__":
    main()
