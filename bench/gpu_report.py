"""``summary.md`` of ``bench/gpu_check.py`` from its ``summary.json`` dict."""

from __future__ import annotations

REMEDIES = (
    "hyptree/protect step time > 1.10 in this run. On a GPU that points to launch overhead (compare "
    "the profile's kernel counts; a dry run's 1-2 rounds on the CPU are noise). Planned remedies, "
    "not implemented: capture the whole step in a CUDA graph "
    "(static batch shape; the 4 host syncs of the label checks and the EOT .tolist() must go first), "
    "or torch.compile the objective (curvature solve, entailment losses) to fuse its small ops; "
    "then run this check again."
)


def walk_floats(obj, path=""):
    """``(path, float)`` for every number (not bool) in a JSON-like object; ``None`` counts as
    NaN (``hyptree.eval.runfiles.jsonable`` writes non-finite floats as ``null``)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from walk_floats(v, f"{path}.{k}" if path else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from walk_floats(v, f"{path}[{i}]")
    elif obj is None:
        yield path, float("nan")
    elif isinstance(obj, float) or (isinstance(obj, int) and not isinstance(obj, bool)):
        yield path, float(obj)


def fmt(v, digits=4):
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return "-" if v is None else str(v)


def stage_rows(summary):
    rows = ["| stage | status | s | checks failed | notes |", "|---|---|---|---|---|"]
    for name, st in summary["stages"].items():
        bad = [c["name"] + (f" ({c['detail']})" if c["detail"] else "") for c in st["checks"] if not c["ok"]]
        rows.append(
            f"| {name} | {st['status']} | {st.get('seconds', '-')} | {'; '.join(bad) or '-'} | "
            f"{'; '.join(st['notes']) or '-'} |"
        )
    return rows


def train_rows(train):
    rows = [
        "| run | loaded | log rows | non-finite | first loss | vs fp32 | base LA | novel LA | max pts vs fp32 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in train.get("runs", {}).items():
        pts = r.get("metric_points_vs_fp32")
        rows.append(
            f"| {name} | {r.get('loaded', '-')} | {r.get('log_rows', '-')} | {len(r.get('log_nonfinite', []))} | "
            f"{fmt(r.get('first_loss'))} | {fmt(r.get('first_loss_rel_vs_fp32'), 2)} | "
            f"{fmt(r.get('base', {}).get('LA'))} | {fmt(r.get('novel', {}).get('LA'))} | "
            f"{fmt(max(pts.values())) if pts else '-'} |"
        )
    return rows


def bench_rows(bench, profile):
    rows = ["| target | measured | met |", "|---|---|---|"]
    for k, (v, ok) in bench.get("targets", {}).items():
        rows.append(f"| {k} | {fmt(v)} | {'-' if ok is None else ('yes' if ok else 'NO')} |")
    if profile.get("protect"):
        for k in ("aten_calls", "cuda_kernels", "kernel_launches", "host_syncs"):
            p, h = profile["protect"].get(k), profile["hyptree"].get(k)
            rows.append(
                f"| {k} per step, hyptree / protect ({profile['shape']}, {profile['nodes']} nodes) | "
                f"{fmt(h)} / {fmt(p)} | - |"
            )
    return rows


def markdown(summary, short=False):
    """The report; ``short``: the stage table and the verdict only (printed at the end)."""
    head = [
        f"# GPU check ({summary['mode']}): {summary.get('status', 'running')}",
        "",
        f"{summary['date']}, device {summary['device']}"
        + (f" ({summary['gpu']})" if summary.get("gpu") else "")
        + f", budget {summary['budget_seconds']:.0f} s, elapsed {summary.get('elapsed_seconds', 0)} s",
        "",
    ]
    out = head + stage_rows(summary)
    if short:
        return "\n".join(out)
    st = summary["stages"]
    env, tests = st.get("env", {}), st.get("tests", {})
    out += [
        "",
        f"torch {env.get('torch', '-')}, CUDA {env.get('cuda', '-')}, python {env.get('python', '-')}, "
        f"{env.get('cpus', '-')} CPUs; missing modules: {', '.join(env.get('missing_modules', [])) or 'none'}",
    ]
    if tests.get("tests") is not None:
        out += [
            "",
            f"tests: {tests['tests']} run, {tests['failures']} failed, {tests['errors']} errors, "
            f"{tests['skipped']} skipped ({tests['skipped_for_gpu']} for want of a GPU); "
            f"failed: {', '.join(tests['failed_tests']) or 'none'}",
        ]
    tol = summary["tolerances"]
    out += [
        "",
        "## Trainers (toy base-to-novel, tiny random CLIP)",
        "",
        f"Tolerances vs fp32: first-step loss relative {tol['first_loss']}, LA/HCA/MTA on base and novel "
        f"within {tol['metric_points']} points.",
        "",
    ] + train_rows(st.get("train", {}))
    out += ["", "## Benchmarks and profile", ""] + bench_rows(st.get("bench", {}), st.get("profile", {}))
    times = [v for k, (v, ok) in st.get("bench", {}).get("targets", {}).items() if k.startswith("step time")]
    if any(v > 1.10 for v in times):
        out += ["", REMEDIES]
    return "\n".join(out) + "\n"
