"""Time and peak memory of one training step: vanilla vs protect vs hyptree.

One step = ``zero_grad``; ``model.loss(images, labels)["total"]``; ``backward``;
``optimizer.step()`` (SGD, momentum 0.9, weight decay 5e-4, as CoOp/MaPLe), MaPLe
prompts, on the same batch, for each shape and taxonomy. Time: median over interleaved
rounds (vanilla, protect, hyptree, vanilla, ...) in one process; ratios are medians of
the per-round ratios. Memory: one fresh subprocess per configuration (see
``bench/common.py``): warm-up step, reset the peak counter, one measured step; reported
as the process peak during the step (CPU: resident set, includes the weights; CUDA:
``max_memory_allocated``) and as the step's increase over the memory held before it.
Host syncs: ATen calls in one step that force a device-to-host sync on an accelerator
(counted at the dispatcher, so it works on the CPU too).

    PYTHONPATH=. python bench/step.py --quick          # tiny shape, ~1 min on 2 cores
    PYTHONPATH=. python bench/step.py                  # small + ViT-B/16 shapes
    PYTHONPATH=. python bench/step.py --device cuda    # GPU, amp
"""

from __future__ import annotations

import json
import os
import sys
import warnings

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


from bench.common import (
    SHAPES,
    TAXONOMY_HELP,
    base_parser,
    batch,
    build_model,
    child_answer,
    child_peak_memory,
    count_syncs,
    describe_taxonomy,
    interleaved,
    machine_info,
    make_step,
    measure_peak,
    median,
    paired_ratio,
    prepare_clip,
    result_line,
    setup,
    table,
    taxonomy,
)
from hyptree.loss import PRESETS

TARGET_TIME, TARGET_MEM = 1.10, 1.05


def build(shape_name, tax_name, presets, args, size):
    shape = SHAPES[shape_name]
    tax = taxonomy(tax_name)
    clip_model = prepare_clip(shape, args)
    images, labels = batch(shape, tax, size, args.device)
    steps = {p: make_step(build_model(clip_model, tax, p, shape), images, labels, args) for p in presets}
    return shape, tax, steps


def child(spec):
    """Peak memory of one configuration (run in a fresh process)."""
    args = setup(
        base_parser("child").parse_args(
            ["--device", spec["device"], "--threads", str(spec["threads"])]
            + (["--precision", spec["precision"]] if spec["precision"] else [])
        )
    )
    _, _, steps = build(spec["shape"], spec["taxonomy"], [spec["preset"]], args, spec["batch"])
    step = steps[spec["preset"]]
    step()  # warm-up: optimiser state, cached index tables
    base, peak = measure_peak(step, args.device)
    child_answer({"base": base, "peak": peak})


def run(args, configs, rounds, budget_s, memory=True, syncs=True):
    """Time (and measure) every (shape, taxonomy); returns rows and the result values."""
    rows, values, notes = [], {}, []
    for shape_name, tax_name in configs:
        shape, tax, steps = build(shape_name, tax_name, PRESETS, args, args.batch)
        notes.append(f"{tax_name}: {describe_taxonomy(tax)}")
        times = interleaved(steps, rounds, args.device, warmup=1, budget_s=budget_s)
        sync_counts = {}
        if syncs:
            for p, step in steps.items():
                sync_counts[p] = sum(count_syncs(step)[1].values())
        del steps
        mem = {}
        if memory:
            for p in PRESETS:
                spec = dict(
                    shape=shape_name,
                    taxonomy=tax_name,
                    preset=p,
                    batch=args.batch,
                    device=args.device,
                    precision=args.precision,
                    threads=args.threads,
                )
                mem[p] = child_peak_memory(os.path.abspath(__file__), spec)
        t_ref = times["protect"]
        for p in PRESETS:
            r = paired_ratio(times[p], t_ref)
            row = [shape_name, tax_name, p, f"{1e3 * median(times[p]):.1f}", len(times[p]), f"{r:.3f}"]
            if memory:
                delta = mem[p]["peak"] - mem[p]["base"]
                ref_delta = mem["protect"]["peak"] - mem["protect"]["base"]
                row += [
                    f"{mem[p]['peak'] / 2**20:.0f}",
                    f"{delta / 2**20:.0f}",
                    f"{mem[p]['peak'] / mem['protect']['peak']:.3f}",
                    f"{delta / ref_delta:.3f}",
                ]
            if syncs:
                row.append(sync_counts[p])
            rows.append(row)
        key = f"{shape_name}_{tax_name}"
        values[f"time_ratio_{key}"] = paired_ratio(times["hyptree"], t_ref)
        values[f"hyptree_ms_{key}"] = 1e3 * median(times["hyptree"])
        values[f"protect_ms_{key}"] = 1e3 * median(t_ref)
        if memory:
            values[f"mem_ratio_{key}"] = mem["hyptree"]["peak"] / mem["protect"]["peak"]
            values[f"mem_delta_ratio_{key}"] = (mem["hyptree"]["peak"] - mem["hyptree"]["base"]) / (
                mem["protect"]["peak"] - mem["protect"]["base"]
            )
        if syncs:
            values[f"syncs_hyptree_{key}"] = sync_counts["hyptree"]
        print(f"  done {key}", file=sys.stderr, flush=True)
    return rows, values, notes


def main(argv=None):
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8, help="images per step (8: the paper's batch)")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds per configuration")
    p.add_argument("--shapes", default=None, help="comma-separated shape names (tiny, small, b16)")
    p.add_argument("--taxonomies", default="sun,deep", help=TAXONOMY_HELP)
    p.add_argument("--no-memory", action="store_true")
    args = setup(p.parse_args(argv))
    if args.child_mem:
        return child(json.loads(args.child_mem))
    warnings.filterwarnings("ignore")
    shapes = (args.shapes or ("tiny" if args.quick else "small,b16")).split(",")
    rounds = args.rounds or (7 if args.quick else 9)
    configs = [(s, t) for s in shapes for t in args.taxonomies.split(",")]
    budget = 10.0 if args.quick else 240.0  # per configuration; at least 3 rounds always
    rows, values, notes = run(args, configs, rounds, budget, memory=not args.no_memory)

    print(machine_info(args.device))
    print(f"device {args.device}, precision {args.precision}, batch {args.batch}, MaPLe prompts")
    for s in shapes:
        print(f"shape {SHAPES[s].describe()}")
    for n in dict.fromkeys(notes):
        print(f"taxonomy {n}")
    header = ["shape", "taxonomy", "preset", "step ms (median)", "rounds", "time / protect"]
    if not args.no_memory:
        header += ["peak MB", "step delta MB", "peak / protect", "delta / protect"]
    header.append("host syncs/step")
    print(table(rows, header))
    time_ok = all(v <= TARGET_TIME for k, v in values.items() if k.startswith("time_ratio_"))
    values["time_target_met"] = time_ok
    if not args.no_memory:
        values["mem_target_met"] = all(v <= TARGET_MEM for k, v in values.items() if k.startswith("mem_ratio_"))
    print(f"targets: hyptree/protect time <= {TARGET_TIME}, peak memory <= {TARGET_MEM}")
    print(result_line(values))


if __name__ == "__main__":
    main()
