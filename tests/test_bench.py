"""The benchmark scripts' core functions run (tiny shapes), the per-node reference scheme
gives the one-pass loss and gradients, and the performance changes made in ``hyptree``
keep their results. No wall-clock assertions (DESIGN section 9): where a change is about
speed, the test counts ATen calls, which is deterministic."""

import math
import os
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench import common  # noqa: E402
from hyptree.geometry import curvature as C  # noqa: E402
from hyptree.geometry.curvature import intermediate_curvature, radii_from_ratio  # noqa: E402


# ------------------------------------------------------------------- bench/common.py
def test_synthetic_taxonomies_have_the_documented_shape():
    sun = common.sun_like()
    assert sun.height == 3 and sun.num_classes == 397
    assert len(sun.nodes_at_depth(1)) == 3 and len(sun.nodes_at_depth(2)) == 16
    deep = common.deep_tree()
    assert deep.height >= 7 and deep.num_classes == 100
    assert len(set(deep.depth[deep.leaves])) >= 5  # unbalanced: leaves at many depths
    assert common.deep_tree(seed=0) == common.deep_tree(seed=0)  # fixed seed, reproducible


def test_count_syncs_sees_item_nonzero_and_bool_masks():
    x = torch.arange(6.0)
    _, counts = common.count_syncs(lambda: (x.sum().item(), x[x > 2], torch.nonzero(x)))
    assert counts == {"_local_scalar_dense": 1, "index[bool]": 1, "nonzero": 1}
    _, none = common.count_syncs(lambda: torch.where(x > 2, x, 0.0).sum() * 2)
    assert none == {}


def test_interleaved_and_paired_ratio():
    calls = []
    times = common.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=3, warmup=1)
    assert calls == ["a", "b"] * 4 and len(times["a"]) == 3
    assert common.paired_ratio([2.0, 4.0, 6.0], [1.0, 1.0, 2.0]) == 3.0


def test_result_line_format():
    line = common.result_line({"x": 1.23456, "ok": True, "n": 3})
    assert line == "result: x=1.235 ok=true n=3"


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
def test_peak_memory_window_sees_a_temporary_allocation():
    def work():
        t = torch.ones(64 * 2**20 // 4)  # 64 MiB, freed on return
        return float(t[0])

    base, peak = common.measure_peak(work, "cpu")
    assert peak - base > 48 * 2**20


# ------------------------------------------------------- hyptree/curvature.py change
def _reference_solve(c_t, c_i, r_t, r_i, iters=C.GOLDEN_ITERS, newton_steps=C.NEWTON_STEPS):
    """The solver before the op-count change: textbook golden section (both interior
    points recomputed from the bracket each step), each term of F and its derivatives
    evaluated separately (``_d``, ``_d_s``, ``_d_ss``)."""
    lo, hi = torch.minimum(c_t, c_i), torch.maximum(c_t, c_i)
    a_t, a_i = c_t.sqrt(), c_i.sqrt()

    def F(c):
        s = c.sqrt()
        return C._d(s, a_t, r_t) + C._d(s, a_i, r_i)

    g = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = lo.log(), hi.log()
    x1, x2 = b - g * (b - a), a + g * (b - a)
    f1, f2 = F(x1.exp()), F(x2.exp())
    for _ in range(iters):
        left = f1 < f2
        a, b = torch.where(left, a, x1), torch.where(left, x2, b)
        xn = torch.where(left, b - g * (b - a), a + g * (b - a))
        fn = F(xn.exp())
        x1, x2, f1, f2 = (
            torch.where(left, xn, x2),
            torch.where(left, x1, xn),
            torch.where(left, fn, f2),
            torch.where(left, f1, fn),
        )
    u = torch.where(f1 < f2, x1, x2)
    fb = torch.minimum(f1, f2)
    f_lo, f_hi = F(lo), F(hi)
    c = torch.where((f_lo <= fb) & (f_lo <= f_hi), lo, torch.where(f_hi <= fb, hi, u.exp()))
    w = (b - a).clamp_min(C._NEWTON_MARGIN)
    n_lo = torch.maximum(lo, torch.minimum(c, torch.exp(a - w)))
    n_hi = torch.minimum(hi, torch.maximum(c, torch.exp(b + w)))
    for _ in range(newton_steps):
        s = c.sqrt()
        f_s = C._d_s(s, a_t, r_t) + C._d_s(s, a_i, r_i)
        f_ss = C._d_ss(s, a_t, r_t) + C._d_ss(s, a_i, r_i)
        f_c, f_cc = f_s / (2 * s), (f_ss - f_s / s) / (4 * s * s)
        ok = (f_cc > 0) & torch.isfinite(f_c)
        step = torch.where(ok, f_c / torch.where(ok, f_cc, torch.ones_like(f_cc)), torch.zeros_like(c))
        c = torch.minimum(torch.maximum(c - step, n_lo), n_hi)
    return torch.minimum(torch.maximum(c, lo), hi)


def _cases(n, seed, free_radii):
    g = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    c_t = torch.exp(torch.empty(n, dtype=f64).uniform_(math.log(1e-3), math.log(10.0), generator=g))
    c_i = torch.exp(torch.empty(n, dtype=f64).uniform_(math.log(1e-3), math.log(10.0), generator=g))
    if free_radii:  # any radii: includes optima on the bracket's ends
        r_t = torch.exp(torch.empty(n, dtype=f64).uniform_(math.log(0.3), math.log(30.0), generator=g))
        r_i = torch.exp(torch.empty(n, dtype=f64).uniform_(math.log(0.3), math.log(30.0), generator=g))
    else:
        ratio = torch.exp(torch.empty(n, dtype=f64).uniform_(math.log(0.2), math.log(5.0), generator=g))
        r_t, r_i = radii_from_ratio(ratio, c_t, c_i)
    return c_t, c_i, r_t, r_i


@pytest.mark.parametrize("free_radii", [False, True])
def test_curvature_solver_matches_the_previous_implementation(free_radii):
    c_t, c_i, r_t, r_i = _cases(2000, 3 + free_radii, free_radii)
    new = intermediate_curvature(c_t, c_i, r_t, r_i)
    old = _reference_solve(c_t, c_i, r_t, r_i)
    rel = ((new - old).abs() / old).max().item()
    assert rel < 1e-12
    lo, hi = torch.minimum(c_t, c_i), torch.maximum(c_t, c_i)
    on_end = (old <= lo * (1 + 1e-9)) | (old >= hi * (1 - 1e-9))
    assert torch.equal(on_end, (new <= lo * (1 + 1e-9)) | (new >= hi * (1 - 1e-9)))
    if free_radii:
        assert on_end.sum() > 20  # the end-candidates path is exercised
    # golden section alone (no polish) agrees to what comparisons of F can resolve
    g_new = intermediate_curvature(c_t, c_i, r_t, r_i, newton_steps=0)
    g_old = _reference_solve(c_t, c_i, r_t, r_i, newton_steps=0)
    assert ((g_new - g_old).abs() / g_old).max().item() < 1e-6


def test_combined_derivatives_equal_the_separate_formulas():
    g = torch.Generator().manual_seed(0)
    f64 = torch.float64
    s = torch.empty(500, dtype=f64).uniform_(0.03, 3.0, generator=g)
    a = torch.empty(500, dtype=f64).uniform_(0.03, 3.0, generator=g)
    r = torch.empty(500, dtype=f64).uniform_(0.5, 60.0, generator=g)
    d_s, d_ss = C._d_s_ss(s, a, r)
    torch.testing.assert_close(d_s, C._d_s(s, a, r), rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(d_ss, C._d_ss(s, a, r), rtol=1e-11, atol=1e-11)


def test_curvature_solve_is_sync_free_and_cheap_in_aten_calls():
    """The solve is a fixed sequence of ATen calls on tiny tensors: its cost is their
    number. 1903 calls (solve + backward, 0-d inputs) before the change, 1122 after."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from bench.curvature import inputs, solve_and_backward

    n = [0]

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            n[0] += 1
            return func(*args, **(kwargs or {}))

    args = inputs(0, "cpu")
    with Count():
        solve_and_backward(*args)
    assert n[0] <= 1200
    _, syncs = common.count_syncs(lambda: solve_and_backward(*inputs(16, "cpu")))
    assert syncs == {}


# ------------------------------------------------------------------ the bench scripts
@pytest.fixture(autouse=True)
def _keep_thread_count():
    """The scripts' ``main`` sets ``torch.set_num_threads``; give other tests theirs back."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _args(**kw):
    import argparse

    base = dict(device="cpu", precision="fp32", threads=1, batch=4, eval_batch=4)
    base.update(kw)
    return argparse.Namespace(**base)


def _result(out):
    lines = [ln for ln in out.splitlines() if ln.startswith("result: ")]
    assert len(lines) == 1, out
    return dict(kv.split("=", 1) for kv in lines[0][len("result: ") :].split())


def test_step_core_runs_all_presets_and_counts_syncs():
    from bench import step

    rows, values, _ = step.run(_args(), [("tiny", "deep")], rounds=1, budget_s=None, memory=False)
    assert [r[2] for r in rows] == ["vanilla", "protect", "hyptree"]
    assert values["time_ratio_tiny_deep"] > 0 and values["hyptree_ms_tiny_deep"] > 0
    # the hyptree terms add no sync-forcing calls to the protect step (the protect losses'
    # label-range checks are the ones left, see bench/README.md)
    assert rows[2][-1] == rows[1][-1] >= 1


def test_step_memory_child_reports_a_peak():
    from bench import step

    spec = dict(shape="tiny", taxonomy="deep", preset="protect", batch=2, device="cpu", precision="fp32", threads=1)
    mem = common.child_peak_memory(step.__file__, spec)
    assert mem["peak"] > mem["base"] > 0


def test_step_main_prints_one_result_line(capsys):
    from bench import step

    step.main(["--shapes", "tiny", "--taxonomies", "deep", "--rounds", "1", "--no-memory", "--batch", "2"])
    values = _result(capsys.readouterr().out)
    assert float(values["time_ratio_tiny_deep"]) > 0 and values["time_target_met"] in ("true", "false")


def test_eval_core_full_and_leaf_only_agree():
    from bench import eval as ev

    r = ev.run_config("tiny", "deep", "hyptree", _args(), n_batches=2, rounds=1, budget=None)
    assert r["images"] == 8 and 0.0 <= r["la"] <= 100.0 and r["cuts"] == 25
    assert r["loop_ratio"] > 0 and r["projected"] > 0


def test_eval_main_prints_one_result_line(capsys):
    from bench import eval as ev

    ev.main(
        [
            "--shapes",
            "tiny",
            "--taxonomies",
            "sun",
            "--presets",
            "vanilla",
            "--batches",
            "1",
            "--eval-batch",
            "4",
            "--rounds",
            "1",
        ]
    )
    values = _result(capsys.readouterr().out)
    assert float(values["loop_ratio_tiny_sun_vanilla"]) > 0


def test_curvature_main_prints_one_result_line(capsys):
    from bench import curvature as cb

    cb.main(["--repeats", "3", "--batch", "8"])
    values = _result(capsys.readouterr().out)
    assert values["host_syncs"] == "0" and float(values["single_ms"]) > 0


# ------------------------------------------------------------ the per-node reference
@pytest.mark.parametrize("preset", ["protect", "hyptree"])
@pytest.mark.parametrize("tax_name", ["deep", "sun"])
def test_per_node_scheme_gives_the_one_pass_loss_and_gradients(preset, tax_name):
    from bench import per_node

    r = per_node.check(common.SHAPES["tiny"], common.TAXONOMIES[tax_name](), preset, 6, torch.float64)
    assert r["loss_rel"] < 1e-12
    assert r["grad_rel"] < 1e-9 and r["grad_rel_all"] < 1e-12


def test_keep_float64_is_scoped():
    from bench import per_node

    x = torch.zeros(2, dtype=torch.float64)
    with per_node.keep_float64():
        assert x.float().dtype == torch.float64 and x.type(torch.float32).dtype == torch.float64
        assert torch.zeros(2, dtype=torch.float16).float().dtype == torch.float32
    assert x.float().dtype == torch.float32 and x.type(torch.float32).dtype == torch.float32


def test_per_node_scheme_has_the_reference_cost_structure_and_detects_differences():
    from bench import per_node
    from hyptree.tree import ProTeCtIndex, random_cut

    shape, tax = common.SHAPES["tiny"], common.deep_tree()
    model = common.build_model(common.build_clip(shape), tax, "hyptree", shape)
    images, labels = common.batch(shape, tax, 6)
    idx = ProTeCtIndex.of(tax)
    steps = idx.step_rows[labels][idx.step_mask[labels]]
    touched = len(set(steps.tolist()))
    counter = per_node.Counter()
    cut = random_cut(tax, np.random.default_rng(0), 0.1)
    before = model.vision_tower.calls
    with torch.no_grad():
        out = per_node.per_node_loss(model, images, labels, cut, counter)
    # one vision pass per internal node on the batch's paths (its samples only), one for the cut
    assert counter.vision_passes == touched + 1 == model.vision_tower.calls - before
    assert counter.images == int(idx.step_mask[labels].sum()) + 6
    # another cut gives another loss: the comparison would notice a wrong cut
    other = random_cut(tax, np.random.default_rng(5), 0.5)
    assert other != cut
    with torch.no_grad():
        out2 = per_node.per_node_loss(model, images, labels, other)
    assert abs(float(out2["cut"]) - float(out["cut"])) > 1e-3
    torch.testing.assert_close(out2["node"], out["node"])


# -------------------------------------------------------- hyptree/objective.py change
def _old_alignment(obj, labels, text_feats, image_feats):
    """``HierarchicalObjective.alignment`` before the change: boolean-mask selections
    on the device (each one, and its backward, a host sync on an accelerator)."""
    import torch.nn.functional as F

    from hyptree.loss.objective import _entail, _masked_mean, gather_paths, mmd_loss

    s = obj.settings
    paths = obj._paths[labels]
    mask = obj._mask[labels]
    dtype = torch.promote_types(text_feats.dtype, torch.float32)
    t = F.normalize(gather_paths(text_feats.to(dtype), paths), dim=-1) * s.scale_text
    if image_feats.dim() == 2:
        v = image_feats.to(dtype).unsqueeze(1).expand(-1, paths.shape[1], -1)
    else:
        v = gather_paths(image_feats.to(dtype), paths)
    v = F.normalize(v, dim=-1) * s.scale_image
    pair = mask[:, 1:]
    t_valid, v_valid = t[mask], v[mask]
    curv = obj.curvatures(text_feats=t_valid, image_feats=v_valid)
    out = {
        "text_ent": _masked_mean(_entail(t[:, :-1][pair], t[:, 1:][pair], curv.text, s.cone_k)),
        "image_ent": _masked_mean(_entail(v[:, :-1][pair], v[:, 1:][pair], curv.image, s.cone_k)),
    }
    if s.cross == "entailment":
        out["cross"] = _masked_mean(_entail(t_valid, v_valid, curv.inter, s.cone_k))
    elif s.cross == "mmd":
        out["cross"] = mmd_loss(t_valid, v_valid, s.mmd_bandwidths)
    else:
        out["cross"] = obj._angle(t_valid, v_valid, paths[mask], curv.inter)
    return out


@pytest.mark.parametrize("cross", ["entailment", "mmd", "angle"])
@pytest.mark.parametrize("image_tree", [True, False])
def test_alignment_with_index_lists_equals_boolean_masks(cross, image_tree):
    from hyptree.geometry.curvatures import Curvatures
    from hyptree.loss.objective import HierarchicalObjective, ObjectiveSettings

    tax = common.deep_tree()  # unbalanced: paths of lengths 1..9, so masks matter
    settings = ObjectiveSettings(preset="hyptree", cross=cross, centroid_weight=0.1)
    obj = HierarchicalObjective(tax, settings, Curvatures("intermediate", c0=0.5)).double()
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, tax.num_classes, (12,), generator=g)
    labels[0] = int(np.argmin(tax.depth[tax.leaves]))  # include the shallowest leaf
    D = 16
    text = torch.randn(tax.num_nodes, D, generator=g, dtype=torch.float64)
    image = torch.randn(*((12, tax.num_nodes, D) if image_tree else (12, D)), generator=g, dtype=torch.float64)
    # without an image tree J_Vent is left out (issue 10): compare the terms that remain
    keys = ("text_ent", "image_ent", "cross") if image_tree else ("text_ent", "cross")
    results = []
    for fn in (obj.alignment, lambda *a: _old_alignment(obj, *a)):
        t, v = text.clone().requires_grad_(), image.clone().requires_grad_()
        out = fn(labels, t, v)
        assert ("image_ent" in out) == image_tree or fn is not obj.alignment
        gt, gv = torch.autograd.grad(sum(out[k] for k in keys), (t, v))
        results.append(([out[k].detach() for k in keys], gt, gv))
    (new, gt_new, gv_new), (old, gt_old, gv_old) = results
    for a, b in zip(new, old):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-15)
    assert all(float(x) > 0 for x in new[:2])  # terms that could differ do not vanish
    torch.testing.assert_close(gt_new, gt_old, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(gv_new, gv_old, rtol=1e-12, atol=1e-14)
    assert gv_new.abs().sum() > 0


def test_alignment_makes_no_device_sync_calls():
    from hyptree.geometry.curvatures import Curvatures
    from hyptree.loss.objective import HierarchicalObjective, ObjectiveSettings

    tax = common.deep_tree()
    obj = HierarchicalObjective(tax, ObjectiveSettings(preset="hyptree"), Curvatures())
    labels = torch.arange(8) * 11
    text = torch.randn(tax.num_nodes, 16, requires_grad=True)
    image = torch.randn(8, tax.num_nodes, 16, requires_grad=True)

    def run():
        out = obj.alignment(labels, text, image)
        (out["text_ent"] + out["image_ent"] + out["cross"]).backward()

    _, counts = common.count_syncs(run)
    assert counts == {}
    _, old_counts = common.count_syncs(lambda: sum(_old_alignment(obj, labels, text, image).values()).backward())
    assert old_counts == {"index[bool]": 6, "index_put[bool]": 6}
