"""The report of ``bench/scale.py``: ratios, growth exponents, the issue-16 targets, the
table and the plot, from ``[(config, result)]`` (``scale.run`` / ``scale.flatten``)."""

from __future__ import annotations

import math

from bench.common import paired_ratio, table

PRESETS = ("vanilla", "protect", "hyptree")
MODE_ORDER = {"plain": 0, "chunked": 1, "unshared": 2, "before": 3}


def ordered(results) -> list:
    """Synthetic trees by size, then the real ones; presets and modes in a fixed order. A
    configuration measured more than once (a rerun with more rounds) keeps its latest result."""
    results = list({(s["tree"], s["preset"], s["mode"]): (s, r) for s, r in results}.values())

    def order(item):
        s, r = item
        synthetic = s["tree"].startswith("N")
        return (
            not synthetic,
            r["nodes"] if synthetic else 0,
            s["tree"],
            MODE_ORDER[s["mode"]],
            PRESETS.index(s["preset"]),
        )

    return sorted(results, key=order)


def _ratio(a, b) -> float:
    """Paired (median of per-round ratios) when both ran in one group, else of the medians."""
    return paired_ratio(a["times"], b["times"]) if a["_group"] == b["_group"] else a["step_s"] / b["step_s"]


def ratios(results) -> dict:
    """hyptree / protect (time, peak, step increase), full / leaf evaluation, chunked / plain
    and before / now, per tree and mode."""
    by = {(s["tree"], s["preset"], s["mode"]): dict(r, _group=s["group"]) for s, r in results}
    values = {}
    for (tree, preset, mode), r in by.items():
        p = by.get((tree, "protect", mode))
        if preset == "hyptree" and p:
            values[f"time_ratio_{tree}_{mode}"] = _ratio(r, p)
            values[f"mem_ratio_{tree}_{mode}"] = r["peak_mb"] / p["peak_mb"]
            if p["delta_mb"] > 0:
                values[f"delta_ratio_{tree}_{mode}"] = r["delta_mb"] / p["delta_mb"]
        if "eval_full" in r:
            values[f"eval_ratio_{tree}_{preset}"] = r["eval_leaf"] / r["eval_full"]  # full / leaf time
        now = by.get((tree, preset, "plain"))
        if mode == "before" and now:
            values[f"speedup_{tree}_{preset}"] = _ratio(r, now)
            values[f"mem_before_now_{tree}_{preset}"] = r["peak_mb"] / now["peak_mb"]
            values[f"loss_rel_{tree}_{preset}"] = abs(r["loss"] - now["loss"]) / abs(now["loss"])
        if mode == "unshared" and now:
            values[f"shared_speedup_{tree}_{preset}"] = _ratio(r, now)
        if mode == "chunked" and now:
            values[f"chunk_time_{tree}_{preset}"] = _ratio(r, now)
            values[f"chunk_mem_{tree}_{preset}"] = r["peak_mb"] / now["peak_mb"]
    return values


def growth(results, field: str, mode="chunked") -> dict:
    """``{preset: [exponent log(y2/y1)/log(N2/N1) between successive synthetic sizes]}``."""
    out = {}
    for preset in PRESETS:
        pts = sorted(
            (r["nodes"], r[field])
            for s, r in results
            if s["tree"].startswith("N") and s["preset"] == preset and s["mode"] == mode
        )
        out[preset] = [math.log(b[1] / a[1]) / math.log(b[0] / a[0]) for a, b in zip(pts, pts[1:]) if a[1] > 0]
    return out


def targets(results, values) -> list:
    """``[(target, measured, met)]`` for the issue-16 targets that the results cover."""
    out = []

    def add(name, keys, ok, fmt="{:.3f}"):
        got = {k[len(p) :]: v for k, v in values.items() for p in keys if k.startswith(p)}
        if got:
            text = ", ".join(f"{k} " + fmt.format(v) for k, v in got.items())
            out.append((name, text, all(ok(v) for v in got.values())))

    add("hyptree / protect step time <= 1.05", ["time_ratio_"], lambda v: v <= 1.05)
    add("hyptree / protect peak memory <= 1.05", ["mem_ratio_"], lambda v: v <= 1.05)
    add("full / leaf-only evaluation <= 1.10", ["eval_ratio_"], lambda v: v <= 1.10)
    add("before / now step time >= 1.8 (real trees)", ["speedup_"], lambda v: v >= 1.8)
    add("before / now peak memory > 1", ["mem_before_now_"], lambda v: v > 1)
    add("same loss before and now (relative)", ["loss_rel_"], lambda v: v <= 1e-5, "{:.1e}")
    chunked = {r["nodes"]: r["peak_mb"] for s, r in results if s["tree"].startswith("N") and s["mode"] == "chunked"}
    if 1368 in chunked and max(chunked) > 1368:
        ratio = chunked[max(chunked)] / chunked[1368]
        out.append((f"chunked peak at {max(chunked)} nodes <= 3x that at 1,368", f"{ratio:.2f}x", ratio <= 3))
    ex = [e for preset in PRESETS for e in growth(results, "step_s", "chunked")[preset]]
    if ex:
        out.append(("chunked step time grows at most linearly", f"exponents <= {max(ex):.2f}", max(ex) <= 1.0))
    return out


def report(results, values):
    header = ["tree", "N", "tok mean/max", "pad waste", "preset", "mode", "step s", "peak MB", "step +MB"]
    header += ["eval full img/s", "eval leaf img/s", "loss"]
    rows = []
    for s, r in ordered(results):
        tok = f"{r['tokens_mean']:.1f}/{r['tokens_max']}"
        row = [s["tree"], r["nodes"], tok, f"{r['pad_waste']:.2f}", s["preset"], s["mode"]]
        row += [f"{r['step_s']:.3g}", f"{r['peak_mb']:.0f}", f"{r['delta_mb']:.0f}"]
        row += [f"{r[k]:.3g}" if k in r else "" for k in ("eval_full", "eval_leaf")] + [f"{r['loss']:.6g}"]
        rows.append(row)
    print(table(rows, header))
    for field, name in (("step_s", "step time"), ("peak_mb", "peak memory")):
        for mode in ("plain", "chunked"):
            for preset, ex in growth(results, field, mode).items():
                if ex:
                    print(f"growth exponent of {name}, {preset} {mode}: " + " ".join(f"{e:.2f}" for e in ex))
    for k in (k for k in values if k.startswith("time_ratio")):
        t = k[len("time_ratio_") :]
        print(f"hyptree / protect {t}: time {values[k]:.3f}, peak {values['mem_ratio_' + t]:.3f}")
    rows = [(name, got, "met" if ok else "**missed**") for name, got, ok in targets(results, values)]
    if rows:
        print(table(rows, ["target", "measured", ""]))
    values["target_met"] = all(ok for _, _, ok in targets(results, values))


def plot(results, path: str) -> str:
    """Step time and peak memory against N (log-log), a line per preset and text-pass mode
    over the synthetic trees, the real trees as labelled points; written to ``path`` (PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from hyptree.utils.files import atomic_open

    fig = Figure(figsize=(11, 4.2))
    axes = fig.subplots(1, 2)
    colours = {"vanilla": "tab:gray", "protect": "tab:blue", "hyptree": "tab:red"}
    for ax, field, label in zip(axes, ("step_s", "peak_mb"), ("step time (s)", "peak memory (MB)")):
        for preset in PRESETS:
            for mode, style in (("plain", "-"), ("chunked", "--")):
                pts = sorted(
                    (r["nodes"], r[field])
                    for s, r in results
                    if s["tree"].startswith("N") and s["preset"] == preset and s["mode"] == mode
                )
                if pts:
                    ax.plot(*zip(*pts), style, marker="o", color=colours[preset], label=f"{preset} {mode}")
        for s, r in ordered(results):
            if not s["tree"].startswith("N") and s["preset"] == "hyptree":
                marker = "x" if s["mode"] == "before" else "s"
                ax.plot([r["nodes"]], [r[field]], marker, color="black")
                ax.annotate(f"{s['tree']} {s['mode']}", (r["nodes"], r[field]), fontsize=7)
        ax.set(xscale="log", yscale="log", xlabel="nodes N", ylabel=label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("cost vs taxonomy size (x: the step before issue 16, squares: real trees now)", fontsize=9)
    FigureCanvasAgg(fig)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
    return path
