"""The ``profile`` stage of ``bench/gpu_check.py``: per training step of ``protect`` and
``hyptree`` (same shape, tree and batch), the ATen calls (dispatcher count), the host-sync
calls (``bench.common.count_syncs``) and, on CUDA, the kernels the GPU ran and the kernel
launches the host issued (``torch.profiler``). A GPU step of batch 8 lasts tens of
milliseconds, so a step issuing twice the launches can be launch-bound: this is the figure
to read when ``step.py``'s hyptree / protect time ratio exceeds 1.10 on a GPU.

    PYTHONPATH=. python bench/gpu_profile.py '{"device": "cpu", "shape": "tiny", "taxonomy": "sun"}'

Prints one line ``profile: JSON``.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from bench.common import (
    SHAPES,
    base_parser,
    batch,
    build_model,
    count_syncs,
    make_step,
    prepare_clip,
    setup,
    taxonomy,
)

LAUNCHES = {"cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx", "cudaGraphLaunch"}
PRESETS = ("protect", "hyptree")


def count_aten(fn):
    """ATen calls made by ``fn()`` (forward, backward and optimiser), counted at the dispatcher."""
    n = [0]

    class Counter(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            n[0] += 1
            return func(*args, **(kwargs or {}))

    with Counter():
        fn()
    return n[0]


def profile_step(step, device):
    """``(kernels run on the GPU, kernel launches by the host, memcpy/memset)`` of one step;
    ``(None, None, None)`` on the CPU."""
    if torch.device(device).type != "cuda":
        return None, None, None
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize(device)
    events = prof.events()
    gpu = [e for e in events if e.device_type == DeviceType.CUDA]
    copies = sum(("memcpy" in e.name.lower() or "memset" in e.name.lower()) for e in gpu)
    launches = sum(e.name in LAUNCHES for e in events if e.device_type == DeviceType.CPU)
    return len(gpu) - copies, launches, copies


def main(spec):
    warnings.filterwarnings("ignore")
    argv = ["--device", spec["device"]] + (["--precision", spec["precision"]] if spec.get("precision") else [])
    args = setup(base_parser("profile").parse_args(argv))
    shape, tax = SHAPES[spec["shape"]], taxonomy(spec["taxonomy"])
    clip_model = prepare_clip(shape, args)
    images, labels = batch(shape, tax, spec.get("batch", 8), args.device)
    out = {"shape": spec["shape"], "taxonomy": spec["taxonomy"], "nodes": tax.num_nodes, "device": args.device}
    out["precision"] = args.precision
    for p in PRESETS:
        step = make_step(build_model(clip_model, tax, p, shape), images, labels, args)
        for _ in range(2):  # warm-up: optimiser state, cached index tables, cuBLAS handles
            step()
        t0 = time.perf_counter()
        step()
        if torch.device(args.device).type == "cuda":
            torch.cuda.synchronize(args.device)
        kernels, launches, copies = profile_step(step, args.device)
        out[p] = {
            "aten_calls": count_aten(step),
            "host_syncs": sum(count_syncs(step)[1].values()),
            "cuda_kernels": kernels,
            "kernel_launches": launches,
            "memcpy_memset": copies,
            "one_step_ms": round(1e3 * (time.perf_counter() - t0), 2),
        }
        del step
    for k in ("aten_calls", "cuda_kernels", "kernel_launches"):
        a, b = out["hyptree"][k], out["protect"][k]
        out[f"{k}_ratio"] = round(a / b, 3) if a is not None and b else None
    print("profile: " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
