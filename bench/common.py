"""Shared pieces of the benchmarks: model shapes, synthetic taxonomies, timing, memory.

Nothing here is a test; the scripts print tables and one ``result:`` line each.

* Shapes (:data:`SHAPES`): random-weight ``clip.model.CLIP`` models built by
  :func:`hyptree.model.loading.tiny_clip`. ``b16`` is the ViT-B/16 shape; ``small`` and
  ``tiny`` are documented stand-ins for the CPU (quick runs).
* Taxonomies (:func:`sun_like`, :func:`deep_tree`, :func:`imagenet_like`): generated with a fixed seed; node
  names are 1-3 common English words, so the text prompts have realistic token counts.
  :func:`taxonomy` also reads the real ProTeCt trees (``protect:<dataset>``).
* Timing (:func:`interleaved`): every configuration is run once per round, rounds
  repeated; medians per configuration and medians of the per-round (paired) ratios.
* Memory (:func:`child_peak_memory`): on the CPU a fresh subprocess per configuration
  with ``MALLOC_MMAP_THRESHOLD_`` fixed, so freed tensors go back to the OS and the
  resident set follows live memory; the kernel's peak-RSS counter (``VmHWM``) is reset
  after warm-up (``/proc/self/clear_refs``) and read after the measured call. On CUDA,
  ``torch.cuda.max_memory_allocated`` in the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from hyptree.model.hierarchical import HierarchicalCLIP
from hyptree.model.loading import tiny_clip
from hyptree.tree import Taxonomy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------- shapes
@dataclass(frozen=True)
class Shape:
    """A CLIP shape plus the MaPLe prompt depth used with it."""

    name: str
    clip: dict
    maple_depth: int

    @property
    def resolution(self) -> int:
        return self.clip["image_resolution"]

    def describe(self) -> str:
        c = self.clip
        return (
            f"{self.name}: ViT {c['vision_layers']}x{c['vision_width']} patch {c['vision_patch_size']} "
            f"@{c['image_resolution']}px, text {c['transformer_layers']}x{c['transformer_width']}, "
            f"D={c['embed_dim']}, MaPLe depth {self.maple_depth}"
        )


SHAPES = {
    # ViT-B/16 (OpenAI's CLIP ViT-B/16 architecture), MaPLe's published depth 9
    "b16": Shape(
        "b16",
        dict(
            embed_dim=512,
            image_resolution=224,
            vision_layers=12,
            vision_width=768,
            vision_patch_size=16,
            transformer_width=512,
            transformer_heads=8,
            transformer_layers=12,
        ),
        9,
    ),
    # a CPU stand-in: half the width and depth of B/16, 112px images (49 patches)
    "small": Shape(
        "small",
        dict(
            embed_dim=256,
            image_resolution=112,
            vision_layers=6,
            vision_width=384,
            vision_patch_size=16,
            transformer_width=256,
            transformer_heads=4,
            transformer_layers=6,
        ),
        5,
    ),
    # quick runs and tests
    "tiny": Shape(
        "tiny",
        dict(
            embed_dim=64,
            image_resolution=64,
            vision_layers=4,
            vision_width=128,
            vision_patch_size=16,
            transformer_width=64,
            transformer_heads=2,
            transformer_layers=4,
        ),
        3,
    ),
}


def build_clip(shape: Shape, device="cpu", seed=0):
    return tiny_clip(**shape.clip, seed=seed).to(device)


def build_model(clip_model, taxonomy: Taxonomy, preset: str, shape: Shape, backbone="maple", seed=0):
    """A ``HierarchicalCLIP`` with MaPLe prompts (2 context tokens from "a photo of a")."""
    torch.manual_seed(seed)
    if backbone == "maple":
        options = dict(n_ctx=2, ctx_init="a photo of a", depth=shape.maple_depth)
    elif backbone == "coop":
        options = dict(n_ctx=4, ctx_init="a photo of a")
    else:
        options = dict(depth_text=shape.maple_depth, depth_vision=shape.maple_depth)
    model = HierarchicalCLIP(clip_model, taxonomy, backbone=backbone, preset=preset, prompt_options=options, seed=seed)
    return model.to(next(clip_model.parameters()).device)


def batch(shape: Shape, taxonomy: Taxonomy, size: int, device="cpu", seed=0):
    """Random images ``(size, 3, R, R)`` and labels covering the tree (fixed seed)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(size, 3, shape.resolution, shape.resolution, generator=g)
    labels = torch.randint(0, taxonomy.num_classes, (size,), generator=g)
    return images.to(device), labels.to(device)


# ------------------------------------------------------------------------- taxonomies
_WORDS = (
    "red blue green black white small large old new open closed high low deep wide "
    "north south east west river lake sea hill mountain forest field garden park road street "
    "house room hall tower bridge market station office shop school church farm beach island "
    "desert valley canyon cave harbor airport kitchen bedroom library museum theater stadium "
    "bird fish cat dog horse cow bear wolf fox deer mouse rabbit snake frog whale shark tiger "
    "lion eagle owl duck goose crab shell tree flower plant grass leaf seed fruit apple "
    "orange lemon grape berry rose tulip oak pine maple palm car truck bus train boat ship "
    "plane bike wheel door window wall floor roof stone sand snow ice fire water cloud sun"
).split()


def _namer(rng: np.random.Generator):
    """Unique names of 1-3 words (about 1.7 words on average), from a fixed vocabulary."""
    used: set = set()

    def name():
        while True:
            k = int(rng.choice([1, 2, 3], p=[0.45, 0.4, 0.15]))
            n = "_".join(rng.choice(_WORDS, size=k, replace=False))
            if n not in used:
                used.add(n)
                return n

    return name


def sun_like(seed: int = 0, top: int = 3, middle: int = 16, leaves: int = 397) -> Taxonomy:
    """SUN397-like: 3 levels, ``top -> middle -> leaves`` (3 -> 16 -> 397)."""
    rng = np.random.default_rng(seed)
    name = _namer(rng)
    tops = [name() for _ in range(top)]
    mids = [name() for _ in range(middle)]
    mid_parent = [tops[i % top] for i in range(middle)]
    lines = []
    for j in range(leaves):
        m = j % middle
        lines.append(f"{mid_parent[m]}/{mids[m]}/{name()}")
    return Taxonomy.from_paths(lines)


def deep_tree(seed: int = 0, leaves: int = 100, min_height: int = 7, max_depth: int = 9) -> Taxonomy:
    """A deep, unbalanced tree like the WordNet CIFAR-100 one: ~``leaves`` classes at depths
    3..``max_depth``, height >= ``min_height``. Grown by expanding a leaf chosen with weight
    ``(depth + 1)^1.5`` into 2-3 children until there are enough leaves (fixed seed)."""
    rng = np.random.default_rng(seed)
    name = _namer(rng)
    parent = {"root": None}
    depth = {"root": 0}
    kids = {"root": []}
    frontier = ["root"]
    n_leaves = 1
    while n_leaves < leaves:
        cand = [n for n in frontier if depth[n] < max_depth]
        w = np.array([(depth[n] + 1) ** 1.5 for n in cand], dtype=float)
        node = cand[int(rng.choice(len(cand), p=w / w.sum()))]
        k = int(rng.integers(2, 4)) if node != "root" else 4
        k = min(k, leaves - n_leaves + 1)
        frontier.remove(node)
        for _ in range(k):
            c = name()
            parent[c], depth[c], kids[c] = node, depth[node] + 1, []
            kids[node].append(c)
            frontier.append(c)
        n_leaves += k - 1
    edges = [(p, c) for c, p in parent.items() if p is not None]
    tax = Taxonomy.from_edges(edges, root="root")
    if tax.height < min_height:
        raise RuntimeError(f"deep_tree(seed={seed}) has height {tax.height} < {min_height}")
    return tax


def imagenet_like(seed: int = 0, leaves: int = 1000, internal: int = 368, max_depth: int = 12) -> Taxonomy:
    """ImageNet-like (the WordNet tree of ProTeCt's ImageNet): ``leaves`` classes under
    ``internal`` internal nodes (root included), 1,368 nodes by default, unbalanced. The
    internal nodes are grown first (each attached to an earlier one, deeper ones preferred,
    depth <= ``max_depth - 1``); every internal node then gets leaves so that it has at least
    2 children, and the remaining leaves go to random internal nodes (fixed seed)."""
    rng = np.random.default_rng(seed)
    name = _namer(rng)
    nodes, depth, n_int_kids = ["root"], [0], [0]
    edges = []
    for _ in range(internal - 1):
        cand = [i for i in range(len(nodes)) if depth[i] < max_depth - 1]
        w = np.array([(depth[i] + 1) ** 1.2 for i in cand], dtype=float)
        parent = cand[int(rng.choice(len(cand), p=w / w.sum()))]
        nodes.append(name())
        depth.append(depth[parent] + 1)
        n_int_kids.append(0)
        n_int_kids[parent] += 1
        edges.append((nodes[parent], nodes[-1]))
    n_leaves = [max(0, 2 - k) for k in n_int_kids]
    if sum(n_leaves) > leaves:
        raise RuntimeError(f"imagenet_like(seed={seed}): {sum(n_leaves)} leaves needed > {leaves}")
    for i in rng.choice(internal, size=leaves - sum(n_leaves)):
        n_leaves[int(i)] += 1
    for i, k in enumerate(n_leaves):
        edges += [(nodes[i], name()) for _ in range(k)]
    return Taxonomy.from_edges(edges, root="root")


TAXONOMIES = {"sun": sun_like, "deep": deep_tree, "imagenet": imagenet_like}
PROTECT_DIR = "HYPTREE_PROTECT_DIR"
"""Environment variable naming the folder of real ProTeCt trees, ``<dir>/<dataset>/tree.npy``
(e.g. the official repository's ``prepro/data``), read by ``--taxonomies protect:<dataset>``."""
TAXONOMY_HELP = "comma-separated: sun, deep, imagenet (synthetic) or protect:<dataset> (real, $HYPTREE_PROTECT_DIR)"


def taxonomy(name: str) -> Taxonomy:
    """A synthetic tree of :data:`TAXONOMIES` by name, or ``protect:<dataset>``: the real
    ProTeCt tree ``$HYPTREE_PROTECT_DIR/<dataset>/tree.npy`` (real node names, so real
    prompt lengths)."""
    if name in TAXONOMIES:
        return TAXONOMIES[name]()
    if not name.startswith("protect:"):
        raise SystemExit(f"unknown taxonomy {name!r}: one of {', '.join(TAXONOMIES)} or protect:<dataset>")
    root = os.environ.get(PROTECT_DIR)
    if not root:
        raise SystemExit(f"taxonomy {name!r}: set {PROTECT_DIR} to the folder holding <dataset>/tree.npy")
    from hyptree.tree.io.protect import read_protect_tree

    return read_protect_tree(os.path.join(root, name[len("protect:") :], "tree.npy"))


def describe_taxonomy(tax: Taxonomy) -> str:
    s = tax.stats()
    return (
        f"{s['nodes']} nodes, {s['leaves']} leaves, {s['internal']} internal, height {s['height']}, "
        f"leaf depths {s['leaf_depth_histogram']}"
    )


# ----------------------------------------------------------------------------- timing
def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    """Wall-clock seconds of ``fn()`` (device synchronised before and after)."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def interleaved(fns: dict, rounds: int, device="cpu", warmup: int = 1, budget_s: float | None = None):
    """Run each of ``fns`` once per round (ABCABC...), ``rounds`` times after ``warmup``
    rounds. Stops early (after >= 3 rounds) when ``budget_s`` is exceeded.
    Returns ``{name: [seconds per round]}``."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {k: [] for k in fns}
    start = time.perf_counter()
    for r in range(rounds):
        for k, fn in fns.items():
            times[k].append(timed(fn, device))
        if budget_s is not None and r >= 2 and time.perf_counter() - start > budget_s:
            break
    return times


def median(xs):
    return statistics.median(xs)


def paired_ratio(num, den):
    """Median over rounds of ``num[r] / den[r]`` (robust to load drifting between rounds)."""
    return statistics.median(a / b for a, b in zip(num, den))


# ----------------------------------------------------------------------------- memory
def _status_kb(key):
    with open("/proc/self/status") as f:
        return int(re.search(key + r":\s+(\d+)", f.read()).group(1))


def reset_peak(device):
    """Start a new peak-memory window."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    return _status_kb("VmRSS") * 1024


def read_peak(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device)
    return _status_kb("VmHWM") * 1024


def measure_peak(fn, device):
    """``(bytes before, peak bytes during fn())``: process RSS on the CPU, allocated
    tensor bytes on CUDA."""
    base = reset_peak(device)
    fn()
    return base, read_peak(device)


def child_peak_memory(script: str, spec: dict, timeout=3600):
    """Run ``script --child-mem JSON`` in a fresh interpreter and return its JSON answer.

    A fresh process per configuration: nothing allocated by another configuration is
    still held by the allocator. ``MALLOC_MMAP_THRESHOLD_`` fixed at 64 KiB makes glibc
    serve every tensor-sized block from its own mapping and return it on free, so the
    resident set tracks live memory (glibc would otherwise raise the threshold
    dynamically and keep freed blocks in its heap).
    """
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(
        [sys.executable, script, "--child-mem", json.dumps(spec)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    if out.returncode != 0:
        raise RuntimeError(f"memory child failed ({spec}):\n{out.stderr[-3000:]}")
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("child-mem: ")][-1]
    return json.loads(line[len("child-mem: ") :])


def child_answer(obj):
    print("child-mem: " + json.dumps(obj), flush=True)


# ---------------------------------------------------------------- host-sync counting
SYNC_OPS = {
    "_local_scalar_dense",
    "nonzero",
    "masked_select",
    "unique",
    "_unique2",
    "unique_dim",
    "unique_consecutive",
    "repeat_interleave",
    "masked_scatter",
    "nonzero_static",
}


def count_syncs(fn):
    """Run ``fn()`` and count the ATen calls that force a device-to-host synchronisation
    on an accelerator: ``.item()``/``bool()``/``int()`` of a tensor (``_local_scalar_dense``),
    ``nonzero``, boolean-mask indexing (``index`` with a bool index), ``masked_select``,
    ``unique`` and friends. Works on the CPU (a dispatch-level proxy for
    ``torch.cuda.set_sync_debug_mode``). Returns ``(result, {op: count})``."""
    from torch.utils._python_dispatch import TorchDispatchMode

    counts: dict = {}

    class Counter(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            hit = name in SYNC_OPS
            if name in ("index", "index_put", "index_put_") and len(args) > 1:
                idx = args[1]
                hit = any(isinstance(t, torch.Tensor) and t.dtype == torch.bool for t in idx if t is not None)
                name = name + "[bool]"
            if hit:
                counts[name] = counts.get(name, 0) + 1
            return func(*args, **(kwargs or {}))

    with Counter():
        result = fn()
    return result, counts


# ---------------------------------------------------------------------- presentation
def machine_info(device="cpu") -> str:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"model name\s*:\s*(.*)", f.read())
            cpu = m.group(1).strip() if m else cpu
    except OSError:
        pass
    info = (
        f"cpu: {cpu} ({os.cpu_count()} logical CPUs), torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, python {platform.python_version()}"
    )
    if torch.device(device).type == "cuda":
        info += f", gpu: {torch.cuda.get_device_name(device)}"
    return info


def table(rows, header):
    """A Markdown table string."""
    cols = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cols) for i in range(len(header))]
    fmt = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    lines = [fmt(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += [fmt(r) for r in cols[1:]]
    return "\n".join(lines)


def result_line(values: dict) -> str:
    def fmt(v):
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    return "result: " + " ".join(f"{k}={fmt(v)}" for k, v in values.items())


def base_parser(description, quick_help="about a minute on 2 CPU cores"):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help=f"small shapes, few repeats ({quick_help})")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch.set_num_threads (CPU); 1 by default: on cores shared with other jobs, "
        "one preempted thread stalls a multi-threaded op at its barrier, which makes "
        "timings far noisier than with one thread",
    )
    p.add_argument(
        "--precision",
        default=None,
        choices=["fp32", "fp16", "amp"],
        help="CUDA only: fp16 weights or fp32 weights under autocast (default amp on CUDA, fp32 on the CPU)",
    )
    p.add_argument("--child-mem", default=None, help=argparse.SUPPRESS)
    return p


def setup(args):
    torch.set_num_threads(args.threads)
    if torch.device(args.device).type == "cuda":
        if args.precision is None:
            args.precision = "amp"
    else:
        args.precision = "fp32"
    return args


def autocast(args):
    """The autocast context of ``--precision amp`` on CUDA, a no-op otherwise."""
    if args.precision == "amp" and torch.device(args.device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    import contextlib

    return contextlib.nullcontext()


def prepare_clip(shape, args, seed=0):
    """Build the CLIP of ``shape`` on ``args.device`` in ``args.precision``."""
    from hyptree.model.loading import cast_clip_weights

    clip_model = build_clip(shape, "cpu", seed)
    if args.precision == "fp16":
        cast_clip_weights(clip_model, torch.float16)
    return clip_model.to(args.device)


def make_step(model, images, labels, args, loss_fn=None):
    """A closure running one optimiser step of ``model`` on the batch (its loss from
    ``loss_fn()`` when given, else ``model.loss``); returns the loss."""
    opt = torch.optim.SGD(model.trainable_parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast(args):
            loss = loss_fn() if loss_fn is not None else model.loss(images, labels)["total"]
        loss.backward()
        opt.step()
        return loss

    return step


def print_setup(args, shapes, results, extra=""):
    """The header every script prints: machine, device, shapes, taxonomies of ``results``."""
    print(machine_info(args.device))
    print(f"device {args.device}, precision {args.precision}{extra}, MaPLe prompts")
    for s in shapes:
        print(f"shape {SHAPES[s].describe()}")
    for r in {r["taxonomy"]: r for r in results}.values():
        cuts = f"; {r['cuts']} evaluation cuts" if "cuts" in r else ""
        print(f"taxonomy {r['taxonomy']}: {describe_taxonomy(r['tax'])}{cuts}")
