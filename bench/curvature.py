"""Intermediate-curvature solve + backward: time (single and batched) and host syncs.

Times ``hyptree.geometry.curvature.intermediate_curvature(c_t, c_i, r_t, r_i)`` followed by
``backward`` (the implicit-function-theorem gradient) for

* ``single``: 0-d curvatures, the training case (one solve per step), radii from the
  radius rule (``radii_from_ratio``);
* ``batched``: ``N`` random curvature pairs in [0.05, 5] and feature-norm ratios in
  [0.2, 5] solved at once (a sweep, e.g. for a plot or a test).

Median over many repeats, interleaved. Host syncs: every ATen call that would force a
device-to-host synchronisation on an accelerator is counted at the dispatcher
(``.item()``, ``nonzero``, boolean-mask indexing, ...; works on the CPU), and on CUDA
the solve also runs under ``torch.cuda.set_sync_debug_mode("error")``.

    PYTHONPATH=. python bench/curvature.py --quick
    PYTHONPATH=. python bench/curvature.py --device cuda
"""

from __future__ import annotations

import math
import os
import sys
import warnings

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch

from bench.common import base_parser, count_syncs, interleaved, machine_info, median, result_line, setup, table
from hyptree.geometry.curvature import intermediate_curvature, radii_from_ratio

TARGET_MS = 2.0


def inputs(n, device, seed=0):
    """Curvature pairs and radii: ``n = 0`` gives 0-d tensors (one pair)."""
    g = torch.Generator().manual_seed(seed)
    shape = () if n == 0 else (n,)
    log_lo, log_hi = math.log(0.05), math.log(5.0)
    c_t = torch.exp(log_lo + (log_hi - log_lo) * torch.rand(shape, generator=g)).to(device)
    c_i = torch.exp(log_lo + (log_hi - log_lo) * torch.rand(shape, generator=g)).to(device)
    ratio = torch.exp(math.log(0.2) + math.log(25.0) * torch.rand(shape, generator=g))
    r_t, r_i = radii_from_ratio(ratio.to(device), c_t, c_i)
    return c_t, c_i, r_t, r_i


def solve_and_backward(c_t, c_i, r_t, r_i):
    """One solve + backward; returns the gradients (fresh leaves each call)."""
    ct = c_t.detach().requires_grad_(True)
    ci = c_i.detach().requires_grad_(True)
    c_m = intermediate_curvature(ct, ci, r_t, r_i)
    c_m.sum().backward()
    return c_m.detach(), ct.grad, ci.grad


def sync_check(device, n=16):
    """``(syncs counted at the dispatcher, CUDA sync-debug verdict or None)``."""
    args = inputs(n, device)
    _, counts = count_syncs(lambda: solve_and_backward(*args))
    cuda_ok = None
    if torch.device(device).type == "cuda":
        solve_and_backward(*args)  # warm-up outside the check (lazy init may sync)
        torch.cuda.synchronize(device)
        torch.cuda.set_sync_debug_mode("error")
        try:
            solve_and_backward(*args)
            solve_and_backward(*inputs(0, device))
            cuda_ok = True
        except RuntimeError as e:
            print(f"sync inside the solve: {e}")
            cuda_ok = False
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return sum(counts.values()), counts, cuda_ok


def main(argv=None):
    p = base_parser(__doc__.splitlines()[0], "a few seconds")
    p.add_argument("--batch", type=int, default=1024, help="pairs in the batched solve")
    p.add_argument("--repeats", type=int, default=None)
    args = setup(p.parse_args(argv))
    warnings.filterwarnings("ignore")
    repeats = args.repeats or (200 if args.quick else 1000)
    single = inputs(0, args.device)
    batched = inputs(args.batch, args.device, seed=1)
    fns = {"single": lambda: solve_and_backward(*single), "batched": lambda: solve_and_backward(*batched)}
    times = interleaved(fns, repeats, args.device, warmup=5)
    n_sync, counts, cuda_ok = sync_check(args.device)

    print(machine_info(args.device))
    rows = [
        [
            "single (0-d)",
            "1",
            f"{1e3 * median(times['single']):.3f}",
            f"{1e3 * min(times['single']):.3f}",
            len(times["single"]),
        ],
        [
            "batched",
            str(args.batch),
            f"{1e3 * median(times['batched']):.3f}",
            f"{1e3 * min(times['batched']):.3f}",
            len(times["batched"]),
        ],
    ]
    print(table(rows, ["solve + backward", "pairs", "median ms", "min ms", "repeats"]))
    print(f"host-sync ops inside solve + backward (dispatcher count): {n_sync} {counts or ''}")
    if cuda_ok is not None:
        print(f"torch.cuda.set_sync_debug_mode('error') around solve + backward: {'no sync' if cuda_ok else 'SYNC'}")
    values = {
        "single_ms": 1e3 * median(times["single"]),
        "batched_ms": 1e3 * median(times["batched"]),
        "batched_pairs": args.batch,
        "host_syncs": n_sync,
    }
    if cuda_ok is not None:
        values["cuda_sync_free"] = cuda_ok
    target = values["single_ms"] < TARGET_MS and n_sync == 0 and cuda_ok is not False
    values["target_met"] = target
    print(f"target: single solve + backward < {TARGET_MS} ms on the CPU, no host sync")
    print(result_line(values))


if __name__ == "__main__":
    main()
