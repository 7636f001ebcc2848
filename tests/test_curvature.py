"""Tests for hyptree.geometry.curvature and hyptree.geometry.curvatures.

Oracles: the manifold distance written literally in numpy (float64) and
differentiated by hand in ``c`` (not in ``sqrt(c)`` as the module does, and itself
checked against finite differences), scipy's brentq on dF/dc for the optimum, and
central finite differences of that precise solve for the gradients.
"""

import math

import numpy as np
import pytest
import torch
from scipy.optimize import brentq

from hyptree.geometry import curvature as C
from hyptree.geometry.curvature import (
    intermediate_curvature,
    manifold_distance,
    path_radii,
    radii_from_ratio,
)
from hyptree.geometry.curvatures import Curvatures, CurvatureState

F64 = torch.float64


# ----------------------------------------------------------------- numpy oracle
def np_D(c_ref, c, r):
    a = np.sqrt(c_ref)
    return (-a + 2.0 * np.sqrt(c) * np.cosh((np.sqrt(c) - a) * r)) / (2.0 * a * c)


def np_dD_dc(c_ref, c, r):
    """dD/dc by hand in c: D = N / (2 a c), N = -a + 2 sqrt(c) cosh(z), z = (sqrt(c) - a) r."""
    a, sc = np.sqrt(c_ref), np.sqrt(c)
    z = (sc - a) * r
    n = -a + 2.0 * sc * np.cosh(z)
    dn = np.cosh(z) / sc + r * np.sinh(z)
    return dn / (2.0 * a * c) - n / (2.0 * a * c * c)


def oracle(c_t, c_i, r_t, r_i, grid=400):
    """Global minimiser of F over the bracket and where it lies ('lo', 'hi', 'in', 'eq').

    Every sign change - to + of dF/dc on a log grid is refined by brentq to float64
    precision; the ends are candidates too; the smallest F wins.
    """
    lo, hi = min(c_t, c_i), max(c_t, c_i)
    if lo == hi:
        return lo, "eq"

    def F(c):
        return np_D(c_t, c, r_t) + np_D(c_i, c, r_i)

    def dF(c):
        return np_dD_dc(c_t, c, r_t) + np_dD_dc(c_i, c, r_i)

    cs = np.exp(np.linspace(np.log(lo), np.log(hi), grid))
    g = dF(cs)
    cands = [(F(lo), lo, "lo"), (F(hi), hi, "hi")]
    for k in np.nonzero((g[:-1] < 0) & (g[1:] >= 0))[0]:
        root = brentq(dF, cs[k], cs[k + 1], xtol=1e-300, rtol=8.9e-16, maxiter=200)
        cands.append((F(root), root, "in"))
    _, c, where = min(cands, key=lambda t: t[0])
    return c, where


def solve(c_t, c_i, r_t, r_i):
    return intermediate_curvature(*(torch.tensor(v, dtype=F64) for v in (c_t, c_i, r_t, r_i)))


def random_cases(rng, n, lo=1e-3, hi=10.0, kappa=3.0, free_radii=False):
    """Curvature pairs log-uniform in [lo, hi]; radii by the rule (or free)."""
    c_t = np.exp(rng.uniform(np.log(lo), np.log(hi), n))
    c_i = np.exp(rng.uniform(np.log(lo), np.log(hi), n))
    if free_radii:
        r_t = rng.uniform(0.3, 20.0, n) / np.sqrt(c_t)
        r_i = rng.uniform(0.3, 20.0, n) / np.sqrt(c_i)
    else:
        ratio = np.exp(rng.uniform(np.log(0.3), np.log(3.0), n))
        r_t, r_i = (
            r.numpy() for r in radii_from_ratio(torch.tensor(ratio), torch.tensor(c_t), torch.tensor(c_i), kappa)
        )
    # keep |sqrt(c) - sqrt(c_ref)| r below the module's cosh cap (and numpy's overflow)
    dz = np.abs(np.sqrt(c_t) - np.sqrt(c_i)) * np.maximum(r_t, r_i)
    keep = dz < 250
    return c_t[keep], c_i[keep], r_t[keep], r_i[keep]


# ------------------------------------------------------------- manifold distance
def test_oracle_derivative_matches_finite_differences():
    rng = np.random.default_rng(0)
    c_ref, c = np.exp(rng.uniform(-6, 2, (2, 50)))
    r = rng.uniform(0.1, 5.0, 50) / np.sqrt(c_ref)
    h = 1e-6 * c
    fd = (np_D(c_ref, c + h, r) - np_D(c_ref, c - h, r)) / (2 * h)
    err = np.abs(np_dD_dc(c_ref, c, r) - fd)
    assert (err <= 1e-5 * np.abs(fd) + 1e-8 / c**2).all()


def test_manifold_distance_is_design_formula():
    rng = np.random.default_rng(1)
    c_ref, c = np.exp(rng.uniform(-6, 2, (2, 100)))
    r = rng.uniform(0.1, 10.0, 100)
    got = manifold_distance(torch.tensor(c_ref), torch.tensor(c), torch.tensor(r)).numpy()
    np.testing.assert_allclose(got, np_D(c_ref, c, r), rtol=1e-12)
    # python numbers work and give float64
    assert manifold_distance(0.5, 0.5, 2.0).dtype == F64
    np.testing.assert_allclose(float(manifold_distance(0.5, 0.5, 2.0)), 1.0, rtol=1e-15)  # 1/(2c)


def test_manifold_distance_stationary_at_c_ref_for_any_r():
    c_ref = torch.tensor(np.geomspace(1e-3, 10.0, 9), dtype=F64)[:, None].expand(9, 12)
    r = torch.tensor(np.geomspace(0.01, 100.0, 12), dtype=F64)[None, :].expand(9, 12)
    c = c_ref.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(manifold_distance(c_ref, c, r).sum(), c)
    assert (g.abs() * c_ref**2 < 1e-12).all()
    # independent: central differences of the literal numpy formula
    cr, rr = c_ref.numpy(), r.numpy()
    h = 1e-5 * cr / np.maximum(1.0, rr * np.sqrt(cr))  # D varies on the scale 1 / (r sqrt(c))
    fd = (np_D(cr, cr + h, rr) - np_D(cr, cr - h, rr)) / (2 * h)
    assert (np.abs(fd) * cr**2 < 1e-7).all()
    # for scale: one step away from c_ref the slope is far from zero
    slope = np_dD_dc(cr, 1.2 * cr, rr)
    assert (np.abs(slope) * cr**2 > 1e-3).all()


def test_paper_form_is_not_stationary():
    """The paper's sqrt(c_ref c) denominator: dD/dc != 0 at c = c_ref (why DESIGN's form)."""

    def paper(c_ref, c, r):
        a = np.sqrt(c_ref)
        return (-a + 2.0 * np.sqrt(c) * np.cosh((np.sqrt(c) - a) * r)) / (2.0 * np.sqrt(c_ref * c))

    c_ref, r = 0.3, 4.0
    h = 1e-6
    fd = (paper(c_ref, c_ref + h, r) - paper(c_ref, c_ref - h, r)) / (2 * h)
    assert abs(fd) > 0.1


@pytest.mark.parametrize("c_ref", [1e-3, 0.05, 1.0, 10.0])
def test_stationary_point_is_local_min_iff_r_sqrt_c_ref_above_one(c_ref):
    rs = np.array([0.2, 0.5, 0.9, 0.99, 1.01, 1.1, 2.0, 3.0, 10.0]) / math.sqrt(c_ref)
    is_min = rs * math.sqrt(c_ref) > 1
    c = torch.full((len(rs),), c_ref, dtype=F64, requires_grad=True)
    (g,) = torch.autograd.grad(manifold_distance(c_ref, c, torch.tensor(rs)).sum(), c, create_graph=True)
    (g2,) = torch.autograd.grad(g.sum(), c)
    assert ((g2 > 0).numpy() == is_min).all()
    # closed form at c_ref: d2D/dc2 = (r^2 c_ref - 1) / (4 c_ref^3)
    np.testing.assert_allclose(g2.numpy(), (rs**2 * c_ref - 1) / (4 * c_ref**3), rtol=1e-8)
    # both sides, from function values of the numpy formula: a minimum rises on each side
    for eps in (1e-3, -1e-3):
        rise = np_D(c_ref, c_ref * (1 + eps), rs) - np_D(c_ref, c_ref, rs)
        assert ((rise > 0) == is_min).all()


# -------------------------------------------------------- intermediate curvature
@pytest.mark.parametrize("free_radii", [False, True])
def test_solver_matches_scipy_both_orders(free_radii):
    rng = np.random.default_rng(2 + free_radii)
    c_t, c_i, r_t, r_i = random_cases(rng, 300, free_radii=free_radii)
    assert len(c_t) > 200
    args = [torch.tensor(v) for v in (c_t, c_i, r_t, r_i)]
    got = intermediate_curvature(*args).numpy()
    swapped = intermediate_curvature(args[1], args[0], args[3], args[2]).numpy()
    refs = [oracle(*case) for case in zip(c_t, c_i, r_t, r_i)]
    ref = np.array([c for c, _ in refs])
    np.testing.assert_allclose(got, ref, rtol=1e-8, atol=0)
    np.testing.assert_allclose(swapped, ref, rtol=1e-8, atol=0)
    assert (c_t > c_i).sum() > 50 and (c_t < c_i).sum() > 50
    where = [w for _, w in refs]
    if free_radii:  # free radii also exercise optima on the ends
        assert where.count("lo") + where.count("hi") > 10
        assert where.count("in") > 100
    else:
        assert where.count("in") == len(where)


def test_solver_matches_scipy_nearly_equal_curvatures():
    """Narrow brackets: the golden search alone stalls ~1e-8 away (flat minimum)."""
    rng = np.random.default_rng(8)
    n = 200
    c_t = np.exp(rng.uniform(np.log(1e-3), np.log(10.0), n))
    c_i = c_t * np.exp(rng.uniform(-0.05, 0.05, n))
    ratio = np.exp(rng.uniform(np.log(0.3), np.log(3.0), n))
    r_t, r_i = (r.numpy() for r in radii_from_ratio(torch.tensor(ratio), torch.tensor(c_t), torch.tensor(c_i)))
    got = intermediate_curvature(*(torch.tensor(v) for v in (c_t, c_i, r_t, r_i))).numpy()
    ref = np.array([oracle(*case)[0] for case in zip(c_t, c_i, r_t, r_i)])
    np.testing.assert_allclose(got, ref, rtol=1e-8, atol=0)


def _fd_grads(c_t, c_i, r_t, r_i, rel=1e-6):
    out = []
    base = [c_t, c_i, r_t, r_i]
    for k in range(4):
        h = rel * base[k]
        up, dn = list(base), list(base)
        up[k] += h
        dn[k] -= h
        out.append((oracle(*up)[0] - oracle(*dn)[0]) / (2 * h))
    return np.array(out)


def _autograd_grads(c_t, c_i, r_t, r_i):
    args = [torch.tensor(v, dtype=F64, requires_grad=True) for v in (c_t, c_i, r_t, r_i)]
    c_m = intermediate_curvature(*args)
    return np.array([g.item() for g in torch.autograd.grad(c_m, args)])


@pytest.mark.parametrize("order", ["t<i", "t>i"])
def test_interior_gradients_match_finite_differences(order):
    rng = np.random.default_rng(4)
    c_t, c_i, r_t, r_i = random_cases(rng, 60, lo=1e-3, hi=10.0)
    sel = (c_t < c_i) if order == "t<i" else (c_t > c_i)
    sel &= np.abs(np.log(c_t / c_i)) > 0.05
    cases = list(zip(c_t[sel], c_i[sel], r_t[sel], r_i[sel]))[:12]
    assert len(cases) == 12
    for case in cases:
        assert oracle(*case)[1] == "in"
        ag, fd = _autograd_grads(*case), _fd_grads(*case)
        scale = np.abs(fd[:2]).max()
        np.testing.assert_allclose(ag[:2], fd[:2], rtol=1e-4, atol=1e-6 * scale)
        np.testing.assert_allclose(ag[2:], fd[2:], rtol=1e-4, atol=1e-6 * np.abs(fd[2:]).max())
        # both curvatures get a genuine, non-trivial gradient (the reference gives 1 and 0
        # for t > i); note dc_m/dc_k is not confined to [0, 1]
        assert abs(ag[0]) > 1e-3 * scale and abs(ag[1]) > 1e-3 * scale
        assert abs(ag[0] - 1.0) > 1e-3 and abs(ag[1] - 1.0) > 1e-3


@pytest.mark.parametrize("owner", ["text", "image"])
@pytest.mark.parametrize("end", ["lo", "hi"])
def test_boundary_optimum_gradient_goes_to_owner(owner, end):
    # a strong well at one curvature and a well that is a local max (r sqrt(c) < 1)
    # at the other: the optimum is the strong curvature's end of the bracket
    strong, weak = (0.1, 1.0) if end == "lo" else (1.0, 0.1)
    r_strong, r_weak = 10.0 / math.sqrt(strong), 0.1 / math.sqrt(weak)
    case = (strong, weak, r_strong, r_weak) if owner == "text" else (weak, strong, r_weak, r_strong)
    c_ref, where = oracle(*case)
    assert where == end and c_ref == strong
    assert float(solve(*case)) == strong
    ag, fd = _autograd_grads(*case), _fd_grads(*case)
    expected = [1.0, 0.0] if owner == "text" else [0.0, 1.0]
    np.testing.assert_allclose(fd[:2], expected, atol=1e-6)  # independent
    np.testing.assert_array_equal(ag, expected + [0.0, 0.0])


def test_gradcheck_interior_both_orders():
    for args in [(0.02, 0.4, 40.0, 30.0), (0.4, 0.02, 30.0, 40.0), (1.3, 0.7, 5.0, 6.0)]:
        ts = tuple(torch.tensor(v, dtype=F64, requires_grad=True) for v in args)
        assert torch.autograd.gradcheck(intermediate_curvature, ts, eps=1e-7, atol=1e-8, rtol=1e-5)


def _rule_cases(rng, n, kappa):
    c_t, c_i = rng.uniform(0.05, 5.0, (2, n))
    ratio = rng.uniform(0.6, 1.6, n)
    r_t, r_i = radii_from_ratio(torch.tensor(ratio), torch.tensor(c_t), torch.tensor(c_i), kappa)
    return c_t, c_i, r_t.numpy(), r_i.numpy()


def _on_end(c_t, c_i, r_t, r_i):
    """True where an end is a local minimum (dF/dc does not point into the bracket).

    False for every case proves the minimum over the bracket is interior.
    """
    lo, hi = np.minimum(c_t, c_i), np.maximum(c_t, c_i)

    def dF(c):
        return np_dD_dc(c_t, c, r_t) + np_dD_dc(c_i, c, r_i)

    return (dF(lo) >= 0) | (dF(hi) <= 0)


def test_kappa3_keeps_optimum_interior_kappa1_does_not():
    rng = np.random.default_rng(5)
    n = 1000
    c_t, c_i, r_t, r_i = _rule_cases(rng, n, 3.0)
    assert not _on_end(c_t, c_i, r_t, r_i).any()
    c_m = intermediate_curvature(*(torch.tensor(v) for v in (c_t, c_i, r_t, r_i))).numpy()
    lo, hi = np.minimum(c_t, c_i), np.maximum(c_t, c_i)
    assert ((c_m - lo) / lo > 1e-6).all() and ((hi - c_m) / hi > 1e-6).all()
    # documentation of the why: the reference's kappa = 1 puts a large share on an end
    # (F is then not even unimodal in some cases: a local minimum on an end and the
    # global one inside, so ask the oracle rather than the slopes at the ends)
    c_t, c_i, r_t, r_i = (v[:300] for v in _rule_cases(rng, n, 1.0))
    ends = np.array([oracle(*case)[1] != "in" for case in zip(c_t, c_i, r_t, r_i)])
    assert 0.15 < ends.mean() < 0.45
    c_m = intermediate_curvature(*(torch.tensor(v) for v in (c_t, c_i, r_t, r_i))).numpy()
    lo, hi = np.minimum(c_t, c_i), np.maximum(c_t, c_i)
    np.testing.assert_array_equal(((c_m == lo) | (c_m == hi)), ends)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_equal_curvatures_return_c_t_with_finite_gradients(dtype):
    for c in (1e-3, 0.05, 0.7, 10.0):
        r_t, r_i = radii_from_ratio(1.3, c, c)
        c_t = torch.tensor(c, dtype=dtype, requires_grad=True)
        c_i = torch.tensor(c, dtype=dtype, requires_grad=True)
        c_m = intermediate_curvature(c_t, c_i, r_t, r_i)
        assert c_m.dtype == dtype and c_m.item() == c_t.item()
        gt, gi = torch.autograd.grad(c_m, (c_t, c_i))
        assert torch.isfinite(gt) and torch.isfinite(gi)
        assert abs(gt.item() + gi.item() - 1.0) < 1e-6
        # the split is the limit of the interior (IFT) gradient for nearly equal curvatures
        near = _autograd_grads(c, c * (1 + 1e-7), float(r_t), float(r_i))
        np.testing.assert_allclose([gt.item(), gi.item()], near[:2], atol=1e-4)
    # a well that is not a minimum on one side: split 1/2
    c_t = torch.tensor(0.3, dtype=F64, requires_grad=True)
    c_i = torch.tensor(0.3, dtype=F64, requires_grad=True)
    c_m = intermediate_curvature(c_t, c_i, 10.0, 0.1)
    assert torch.autograd.grad(c_m, (c_t, c_i)) == (torch.tensor(0.5, dtype=F64), torch.tensor(0.5, dtype=F64))


def test_batched_shapes_and_dtypes():
    rng = np.random.default_rng(6)
    c_t = torch.tensor(np.exp(rng.uniform(-5, 1, (3, 4))), dtype=torch.float32)
    c_i = torch.tensor(np.exp(rng.uniform(-5, 1, 4)), dtype=F64)
    r_t, r_i = 25.0, torch.tensor(30.0)
    out = intermediate_curvature(c_t, c_i, r_t, r_i)
    assert out.shape == (3, 4) and out.dtype == torch.float32
    for j in range(3):
        for k in range(4):
            one = intermediate_curvature(float(c_t[j, k]), float(c_i[k]), 25.0, 30.0)
            assert one.dtype == torch.get_default_dtype() and one.shape == ()
            ref = solve(float(c_t[j, k]), float(c_i[k]), 25.0, 30.0)
            assert out[j, k].item() == pytest.approx(ref.item(), rel=1e-6)
            np.testing.assert_allclose(ref.item(), oracle(float(c_t[j, k]), float(c_i[k]), 25.0, 30.0)[0], rtol=1e-8)
    # gradients reduce correctly over broadcast dimensions
    c_i_leaf = c_i.clone().requires_grad_(True)
    intermediate_curvature(c_t.double(), c_i_leaf, r_t, r_i).sum().backward()
    assert c_i_leaf.grad.shape == (4,) and torch.isfinite(c_i_leaf.grad).all()


def test_extreme_inputs_stay_finite_and_in_bracket():
    """Curvatures at the ends of [1e-3, 10], ratios at the clamp: radii up to ~1e4."""
    cs = [1e-3, 1e-2, 0.1, 1.0, 10.0]
    grid = torch.tensor([(a, b, r) for a in cs for b in cs for r in (*C.RATIO_RANGE, 1.0)], dtype=F64)
    c_t, c_i = grid[:, 0].clone().requires_grad_(True), grid[:, 1].clone().requires_grad_(True)
    r_t, r_i = radii_from_ratio(grid[:, 2], c_t, c_i)
    c_m = intermediate_curvature(c_t, c_i, r_t, r_i)
    assert torch.isfinite(c_m).all()
    assert (c_m >= torch.minimum(c_t, c_i)).all() and (c_m <= torch.maximum(c_t, c_i)).all()
    gt, gi = torch.autograd.grad(c_m.sum(), (c_t, c_i))
    assert torch.isfinite(gt).all() and torch.isfinite(gi).all()


def test_solver_precision_needs_the_newton_polish():
    """Golden-section alone stalls near sqrt(eps); the polish reaches float64 level."""
    rng = np.random.default_rng(7)
    c_t, c_i, r_t, r_i = random_cases(rng, 100)
    args = [torch.tensor(v) for v in (c_t, c_i, r_t, r_i)]
    ref = np.array([oracle(*case)[0] for case in zip(c_t, c_i, r_t, r_i)])
    err_golden = np.abs(intermediate_curvature(*args, iters=32, newton_steps=0).numpy() / ref - 1)
    err_full = np.abs(intermediate_curvature(*args).numpy() / ref - 1)
    assert err_full.max() < 1e-12 and err_golden.max() > 1e-9


# ------------------------------------------------------------------------- radii
def test_path_radii_rule_and_guards():
    g = torch.Generator().manual_seed(0)
    text = torch.randn(7, 16, generator=g) + 2.0
    image = torch.randn(5, 16, generator=g) * 0.5 + 1.0
    c_t = torch.tensor(0.2, requires_grad=True)
    c_i = torch.tensor(0.05, requires_grad=True)
    r_t, r_i = path_radii(image.requires_grad_(True), text, c_t, c_i)
    assert not r_t.requires_grad and not r_i.requires_grad
    ratio = (image.detach().double().mean(0).norm() / text.double().mean(0).norm()).item()
    exp_ri = 3.0 * max(1 / math.sqrt(0.05), ratio / math.sqrt(0.2))
    assert r_i.item() == pytest.approx(exp_ri, rel=1e-6)
    assert r_t.item() == pytest.approx(exp_ri / ratio, rel=1e-6)
    # both wells are minima with margin kappa: r sqrt(c) >= kappa, one with equality
    prods = sorted([r_t.item() * math.sqrt(0.2), r_i.item() * math.sqrt(0.05)])
    assert prods[0] == pytest.approx(3.0, rel=1e-6) and prods[1] >= 3.0 * (1 - 1e-9)
    # kappa scales the radii
    r_t1, r_i1 = path_radii(image, text, c_t, c_i, kappa=1.0)
    assert r_i.item() == pytest.approx(3 * r_i1.item()) and r_t.item() == pytest.approx(3 * r_t1.item())
    # zero / empty features: finite, ratio 1
    z = torch.zeros(4, 16)
    for im, tx in [(z, z), (z[:0], text), (image, z[:0])]:
        rt, ri = path_radii(im, tx, 0.2, 0.05)
        assert rt.item() == pytest.approx(ri.item())
    rt, ri = path_radii(image, z, 0.2, 0.05)  # text mean vanishes: ratio clamped
    assert torch.isfinite(rt) and torch.isfinite(ri) and ri.item() / rt.item() == pytest.approx(C.RATIO_RANGE[1])


# ---------------------------------------------------------------------- module
def test_unknown_mode_lists_valid_modes():
    with pytest.raises(ValueError, match="euclidean, shared, separate, intermediate"):
        Curvatures(mode="poincare")


def _trainable(m):
    return [n for n, p in m.named_parameters() if p.requires_grad]


def test_euclidean_mode():
    m = Curvatures("euclidean")
    st = m()
    assert st == CurvatureState(None, None, None, True)
    assert m.euclidean and m.mode == "euclidean" and list(m.parameters()) == []


def test_shared_mode_ties_everything():
    m = Curvatures("shared", c0=0.05)
    assert _trainable(m) == ["log_c"] and not m.euclidean
    st = m()
    assert st.text is st.image is st.inter and st.text.dim() == 0
    assert st.text.item() == pytest.approx(0.05)
    st.inter.backward()
    assert m.log_c.grad.item() == pytest.approx(0.05)


def test_separate_mode_three_parameters():
    m = Curvatures("separate", c0=0.1)
    assert sorted(_trainable(m)) == ["log_c_image", "log_c_inter", "log_c_text"]
    with torch.no_grad():
        m.log_c_text.fill_(math.log(0.05))
        m.log_c_image.fill_(math.log(0.2))
        m.log_c_inter.fill_(math.log(0.5))
    st = m()
    assert [st.text.item(), st.image.item(), st.inter.item()] == pytest.approx([0.05, 0.2, 0.5])
    st.inter.backward()
    assert m.log_c_text.grad is None and m.log_c_inter.grad.item() == pytest.approx(0.5)


def test_intermediate_mode_solves_and_differentiates_both():
    m = Curvatures("intermediate", c0=0.05)
    assert sorted(_trainable(m)) == ["log_c_image", "log_c_text"]
    with torch.no_grad():
        m.log_c_text.fill_(math.log(0.3))
        m.log_c_image.fill_(math.log(0.01))
    g = torch.Generator().manual_seed(1)
    text, image = torch.randn(9, 8, generator=g) + 1, torch.randn(6, 8, generator=g) + 1.2
    st = m(text_feats=text, image_feats=image)
    assert st.text.item() == pytest.approx(0.3) and st.image.item() == pytest.approx(0.01)
    assert 0.01 < st.inter.item() < 0.3 and st.inter.dim() == 0 and st.inter.dtype == torch.float32
    r_t, r_i = path_radii(image, text, 0.3, 0.01)
    assert st.inter.item() == pytest.approx(oracle(0.3, 0.01, r_t.item(), r_i.item())[0], rel=1e-6)
    st.inter.backward()
    assert m.log_c_text.grad.item() > 0 and m.log_c_image.grad.item() > 0
    # without features the ratio is 1; a single one is an error
    assert 0.01 < m().inter.item() < 0.3
    with pytest.raises(ValueError, match="both"):
        m(text_feats=text)


@pytest.mark.parametrize("mode", ["shared", "separate", "intermediate"])
@pytest.mark.parametrize("direction", [1.0, -1.0])
def test_clamping_holds_after_huge_optimizer_step(mode, direction):
    c0 = 0.05
    m = Curvatures(mode, c0=c0)
    opt = torch.optim.SGD(m.parameters(), lr=1e6)
    st = m()
    loss = -direction * (st.text + st.image + st.inter)
    loss.backward()
    opt.step()
    assert any(p.item() > m.log_c_max or p.item() < m.log_c_min for p in m.parameters())
    st = m()  # forward clamps at use and in place
    for v in (st.text, st.image, st.inter):
        assert c0 / 10 * (1 - 1e-6) <= v.item() <= 10 * c0 * (1 + 1e-6)
    for p in m.parameters():  # (float32 parameters: the bounds rounded)
        assert m.log_c_min - 1e-6 <= p.item() <= m.log_c_max + 1e-6
    target = 10 * c0 if direction > 0 else c0 / 10
    assert st.text.item() == pytest.approx(target, rel=1e-5)


def test_clamp_method_and_repeated_forward_before_backward():
    m = Curvatures("intermediate")
    with torch.no_grad():
        m.log_c_text.fill_(100.0)
    m.clamp_()
    assert m.log_c_text.item() == pytest.approx(m.log_c_max)
    a, b = m(), m()  # in-place clamping in forward must not break the first graph
    (a.inter + b.inter).backward()
    assert torch.isfinite(m.log_c_text.grad)


def test_learn_false_freezes():
    for mode in Curvatures.MODES:
        m = Curvatures(mode, c0=0.5, learn=False)
        assert _trainable(m) == []
        st = m()
        if mode != "euclidean":
            assert st.text.item() == pytest.approx(0.5) and not st.inter.requires_grad


def test_extra_repr_and_bad_arguments():
    text = repr(Curvatures("separate", c0=0.5, learn=False))
    assert "mode=separate" in text and "c0=0.5" in text and "learn=False" in text and "[0.05, 5]" in text
    with pytest.raises(ValueError, match="c0"):
        Curvatures(c0=0.0)
