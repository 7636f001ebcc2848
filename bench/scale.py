"""How the cost grows with the taxonomy: vanilla / protect / hyptree from 100 to 20,000 nodes.

Trees: synthetic ones of each size N with realistic depth and prompt lengths
(:func:`realistic_tree`), plus the real ProTeCt trees ``$HYPTREE_PROTECT_DIR/<dataset>/tree.npy``
when that variable is set (``--real cifar100 sun imagenet rarespecies``). Text-pass modes:

* ``plain``: one pass over every prompt, grouped by length (``text_chunk=0``);
* ``chunked``: the memory-bounded pass, checkpointed chunks of ``--chunk`` prompts;
* ``unshared``: ``plain`` without the shared-prefix pass (every prompt runs SOS and the
  context itself), to show what that pass saves;
* ``before``: the step as it was before issue 16 (:func:`padded_materialised_loss`: every
  prompt padded to the tree's longest, ``(B, N, D)`` image-tree features), for the speed-up.

Each tree is one *group*, measured in a fresh child process (:func:`measure`): one frozen
CLIP shared by one model per configuration (preset x mode), ``--warmup`` rounds and then
``--rounds`` rounds of one step per configuration, interleaved (ratios inside a group are
paired); per configuration the step time, the step's peak memory increase (peak RSS on the
CPU, ``max_memory_allocated`` on CUDA) and the single-model peak; then, for hyptree and
vanilla in the tree's default mode, the evaluation rate (images/s of full hierarchical
scores vs leaf-only, text precomputed). ``--split`` makes one group per configuration (one
model per process), ``--jobs 2`` runs two groups at a time. ``--out FILE`` appends each
finished group (JSON lines) and skips the groups already there, so a long sweep can be
stopped and resumed; ``--report-only`` prints the table of everything in the file.
The report (ratios, growth exponents, the issue-16 targets, ``--plot``): ``bench/scale_report.py``.

    PYTHONPATH=. python bench/scale.py --quick
    PYTHONPATH=. python bench/scale.py --sizes 100 400 1368 --jobs 2 --out scale.jsonl
    PYTHONPATH=. python bench/scale.py --sizes 20000 --split --warmup 0 --rounds 1 --out scale.jsonl
    PYTHONPATH=. python bench/scale.py --report-only --out scale.jsonl --plot scale.png
"""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor

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
    median,
    prepare_clip,
    read_peak,
    reset_peak,
    result_line,
    setup,
    taxonomy,
    timed,
)
from bench.scale_report import PRESETS, ordered, plot, ratios, report  # noqa: E402
from hyptree.model.hierarchical import AUTO_CHUNK_ABOVE, HierarchicalCLIP  # noqa: E402
from hyptree.model.tokens import tokenizer  # noqa: E402
from hyptree.tree import Taxonomy  # noqa: E402

#: words per name: CIFAR-like short names, WordNet-like multi-word ones, and a tail of
#: SUN-like long scene descriptions ("transportation (roads, parking, bridges, ...)").
#: Real trees (CLIP tokens per name, mean / max): CIFAR-100 1.5 / 7, SUN 2.2 / 14,
#: ImageNet 2.1 / 12, Rare Species 15.8 / 29 (rank paths); this model: 2.7 / 12.
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


def tree_of(label: str) -> Taxonomy:
    """``N<n>``: the synthetic tree of ``n`` nodes; else the real ProTeCt tree of that name."""
    if label.startswith("N") and label[1:].isdigit():
        return realistic_tree(int(label[1:]))
    return taxonomy(f"protect:{label}")


def padded_materialised_loss(model, images, labels):
    """The step's loss as computed before issue 16: every node's prompt padded to the
    longest (``truncate=False``), all nodes encoded (vanilla too), ``(B, N, D)`` image-tree
    features. Same value and gradients as ``model.loss`` (``tests/test_scale.py``)."""
    p = model.prompt_learner()
    feats = model.text_tower(p.token_embeds, p.tokens, deep_prompts=p.text_deep, truncate=False).float()
    text = torch.cat([feats.new_zeros(1, feats.shape[1]), feats])
    final, tokens = model.image_features(images, p)
    node_image = model.fusion(text, tokens) if model.fusion is not None else final
    scores = model.scores(text, node_image)
    return model.objective(scores, labels, text_feats=text, image_feats=node_image)["total"]


def prompt_stats(model) -> dict:
    """Prompt tokens of the tree: mean / max per prompt and the share a padded pass wastes."""
    lengths = model.prompt_learner.tokens.argmax(-1).double() + 1  # up to and with the EOT
    return {
        "tokens_mean": float(lengths.mean()),
        "tokens_max": int(lengths.max()),
        "pad_waste": float(1 - lengths.mean() / lengths.max()),
    }


def eval_rate(model, images, rounds=2):
    """Images/s of full hierarchical scoring and of leaf-only scoring (text precomputed)."""
    with torch.no_grad():
        text = model.precompute_text()
        leaves = torch.as_tensor(np.array(model.taxonomy.leaves), device=images.device)
        text_leaf = text[leaves]  # the leaves' rows of the same pass
        p = model.prompt_learner()

        def full():  # as hyptree.eval.evaluate: prompts and text fixed for the evaluation
            final, tokens = model.image_features(images, p)
            model.node_scores_from(text, final, tokens)

        def leaf():
            final, tokens = model.image_features(images, p)
            model.node_scores_from(text_leaf, final, tokens)

        times = interleaved({"full": full, "leaf": leaf}, rounds=rounds, device=images.device)
    return {k: images.shape[0] / median(v) for k, v in times.items()}


def _rss_mb(device) -> float:
    return reset_peak(device) / 2**20  # the resident set now (CPU) / allocated bytes (CUDA)


def _build(group, args):
    """One frozen CLIP shared by the group's models, one model per configuration."""
    shape, tax = SHAPES[group["shape"]], tree_of(group["tree"])
    clip_model = prepare_clip(shape, args)
    images, labels = batch(shape, tax, group["batch"], args.device)
    tokenizer()  # loaded once per process, counted with CLIP
    clip_mb, models, sizes = _rss_mb(args.device), {}, {}
    shared = {t.data_ptr() for t in [*clip_model.parameters(), *clip_model.buffers()]}
    for preset, mode in group["configs"]:
        torch.manual_seed(0)
        models[(preset, mode)] = HierarchicalCLIP(
            clip_model,
            tax,
            backbone="maple",
            preset=preset,
            prompt_options={"n_ctx": 2, "ctx_init": "a photo of a", "depth": shape.maple_depth},
            text_chunk=group["chunk"] if mode == "chunked" else 0,
        ).to(args.device)
        model = models[(preset, mode)]
        own = {t.data_ptr(): t for t in [*model.parameters(), *model.buffers()] if t.data_ptr() not in shared}
        sizes[(preset, mode)] = sum(t.numel() * t.element_size() for t in own.values()) / 2**20
    return models, images, labels, clip_mb, sizes


def measure(group: dict, args) -> dict:
    """One group (a tree and its configurations ``(preset, mode)``), in one process: one
    frozen CLIP, one model per configuration, steps interleaved round by round (so ratios
    within the group are paired), ``warmup`` rounds not kept; then evaluation rates.

    Per configuration: step times, the loss of its first step, peak memory of its steps and
    ``peak_mb`` = what a process holding only this configuration holds at its peak: resident
    after building CLIP and the batch + the model's own tensors (prompts, buffers, heads)
    + the step's increase.
    """
    models, images, labels, clip_mb, sizes = _build(group, args)
    steps, out = {}, {}
    for (preset, mode), model in models.items():
        loss_fn = (lambda m=model: padded_materialised_loss(m, images, labels)) if mode == "before" else None
        if mode == "unshared":  # grouped by length, but every prompt runs its shared prefix too
            learner, forward = model.prompt_learner, model.prompt_learner.forward
            learner.forward = lambda forward=forward: forward()._replace(shared=0)
        steps[(preset, mode)] = make_step(model, images, labels, args, loss_fn=loss_fn)
        out[(preset, mode)] = {"nodes": model.taxonomy.num_nodes, **prompt_stats(model), "times": [], "delta_mb": 0}
    for r in range(group["warmup"] + group["rounds"]):
        for name, step in steps.items():
            o, held = out[name], []
            base = reset_peak(args.device)
            t = timed(lambda step=step, held=held: held.append(step()), args.device)
            delta = (read_peak(args.device) - base) / 2**20
            o.setdefault("loss", float(held[0].detach()))
            if r >= group["warmup"]:
                o["times"].append(t)
                o["delta_mb"] = max(o["delta_mb"], delta)
    for name, o in out.items():
        o.update(step_s=median(o["times"]), base_mb=clip_mb + sizes[name], model_mb=sizes[name])
        o["peak_mb"] = o["base_mb"] + o["delta_mb"]
        if list(name) in group["eval"]:
            rate = eval_rate(models[name], images)
            o.update(eval_full=rate["full"], eval_leaf=rate["leaf"])
    return {f"{p}/{m}": o for (p, m), o in out.items()}


def child(spec):
    args = setup(base_parser("child").parse_args(["--device", spec["device"], "--threads", "1"]))
    child_answer(measure(spec, args))


def key(spec) -> str:
    return json.dumps({k: spec[k] for k in sorted(spec) if k != "device"}, sort_keys=True)


def groups(args, labels: list[str]) -> list[dict]:
    """One group per tree (``--split``: one per configuration, so each process holds one model),
    its configurations ordered protect, hyptree, vanilla; the evaluation runs for hyptree and
    vanilla in the tree's default mode (plain up to ``--plain-max`` nodes, else chunked)."""
    out = []
    for label in labels:
        synthetic = label.startswith("N")
        modes = ["plain"] if (not synthetic or int(label[1:]) <= args.plain_max) else []
        modes += ["chunked"] if synthetic else []
        presets = [p for p in ("protect", "hyptree", "vanilla") if p in args.presets]
        configs = [[p, m] for m in modes for p in presets]
        if args.before and not synthetic:
            configs.append(["hyptree", "unshared"])  # without the shared-prefix pass
            configs.append(["hyptree", "before"])  # the pre-issue-16 step, for the speed-up
        evals = [] if args.no_eval else [[p, modes[0]] for p in presets if p in ("hyptree", "vanilla")]
        common = {"tree": label, "shape": args.shape, "batch": args.batch, "chunk": args.chunk}
        common.update(rounds=args.rounds, warmup=args.warmup)
        for part in [[c] for c in configs] if args.split else [configs]:
            out.append(dict(common, configs=part, eval=[e for e in evals if e in part]))
    return out


def _load(path):
    done = {}
    if path and os.path.exists(path):
        with open(path) as f:
            for i, line in enumerate(f, 1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise SystemExit(f"{path}:{i}: not a JSON line ({e}); move the file away") from None
                    done[key(row["spec"])] = row["result"]
    return done


def run(args, labels, jobs=0):
    """``[(config, result)]`` for every configuration of every group, ``config`` =
    ``{tree, preset, mode, group}``; ``jobs=0`` measures in this process (tests)."""
    from tqdm import tqdm

    todo, done = groups(args, labels), _load(getattr(args, "out", None))
    missing = [g for g in todo if key(g) not in done]
    bar = tqdm(total=len(missing), desc="groups", disable=not missing or jobs == 0)

    def one(group):
        if jobs == 0:
            res = measure(group, args)
        else:
            res = child_peak_memory(__file__, dict(group, device=args.device), timeout=args.timeout)
        if getattr(args, "out", None):
            with open(args.out, "a") as f:  # one line per finished group, written at once
                f.write(json.dumps({"spec": group, "result": res}) + "\n")
        bar.set_postfix_str(f"{group['tree']} " + " ".join(f"{k} {r['step_s']:.1f}s" for k, r in res.items()))
        bar.update()
        return key(group), res

    if jobs == 0:
        done.update(one(g) for g in missing)
    else:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            done.update(pool.map(one, missing))
    bar.close()
    return flatten((g, done[key(g)]) for g in todo)


def flatten(rows) -> list:
    out = []
    for group, res in rows:
        for name, r in res.items():
            preset, mode = name.split("/")
            out.append(({"tree": group["tree"], "preset": preset, "mode": mode, "group": key(group)}, r))
    return out


def main(argv=None):
    p = base_parser(__doc__.splitlines()[0], quick_help="tiny shape, 3 small trees")
    p.add_argument("--shape", default="b16", choices=sorted(SHAPES))
    p.add_argument("--sizes", type=int, nargs="*", default=[100, 400, 1368, 5000, 20000])
    p.add_argument("--real", nargs="*", default=[], help="real ProTeCt trees under $HYPTREE_PROTECT_DIR")
    p.add_argument("--before", action="store_true", help="also the pre-issue-16 step on the real trees")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2, help="measured steps per configuration")
    p.add_argument("--warmup", type=int, default=1, help="rounds run first and not kept")
    p.add_argument("--split", action="store_true", help="one process per configuration (unpaired)")
    p.add_argument("--chunk", type=int, default=256, help="prompts per checkpointed chunk of the bounded pass")
    p.add_argument(
        "--plain-max",
        type=int,
        default=AUTO_CHUNK_ABOVE,
        help="largest synthetic tree also run with the plain pass (its memory grows with N)",
    )
    p.add_argument("--presets", nargs="+", default=list(PRESETS), choices=PRESETS)
    p.add_argument("--no-eval", action="store_true")
    p.add_argument("--jobs", type=int, default=1, help="children run at a time")
    p.add_argument("--timeout", type=int, default=4 * 3600, help="seconds per child")
    p.add_argument("--out", default=None, help="JSON-lines file of finished configurations (resumable)")
    p.add_argument("--report-only", action="store_true", help="print every configuration in --out, run nothing")
    p.add_argument("--plot", default=None, help="write step time and peak memory vs N to this PNG")
    args = p.parse_args(argv)
    if args.child_mem:
        return child(json.loads(args.child_mem))
    args = setup(args)
    if args.quick:
        args.shape, args.sizes, args.batch, args.rounds, args.chunk = "tiny", [30, 60, 120], 2, 3, 16
    labels = [f"N{n}" for n in args.sizes] + list(args.real)
    if args.report_only:
        if not args.out:
            raise SystemExit("--report-only needs --out FILE")
        results = ordered(flatten((json.loads(k), r) for k, r in _load(args.out).items()))
    else:
        results = run(args, labels, jobs=args.jobs)
    values = ratios(results)
    print(f"shape {SHAPES[args.shape].describe()}, batch {args.batch}, device {args.device}")
    report(results, values)
    if args.plot:
        print(f"plot: {plot(results, args.plot)}")
    print(result_line(values))


if __name__ == "__main__":
    main()
