"""Tests for hyptree.geometry.lorentz.

Oracles are independent of the module's formulas: numpy float64 Poincare-ball
distances (via the standard isometry), the hyperbolic law of cosines, Moebius
addition in the (conformal) ball, and Euclidean geometry.
"""

import math

import numpy as np
import pytest
import torch

from hyptree.geometry import lorentz as L

F64 = torch.float64


# ----------------------------------------------------------------- numpy oracles
def np_poincare(x, c):
    """Space components -> Poincare ball of radius 1/sqrt(c) (the standard isometry).

    ``c`` broadcasts against the batch shape ``x.shape[:-1]``.
    """
    c = np.asarray(c)[..., None]
    t = np.sqrt(1.0 / c + (x * x).sum(-1, keepdims=True))
    return x / (1.0 + np.sqrt(c) * t)


def np_ball_dist(p, q, c):
    """Poincare-ball distance ``2/sqrt(c) artanh(sqrt(c) |(-p) (+) q|)`` (accurate when small)."""
    m = np_mobius_add(-p, q, c)
    return 2.0 * np.arctanh(np.sqrt(c) * np.linalg.norm(m, axis=-1)) / np.sqrt(c)


def np_hyp_dist(x, y, c):
    return np_ball_dist(np_poincare(x, c), np_poincare(y, c), c)


def np_mobius_add(u, w, c):
    c = np.asarray(c)[..., None]
    uw = (u * w).sum(-1, keepdims=True)
    uu = (u * u).sum(-1, keepdims=True)
    ww = (w * w).sum(-1, keepdims=True)
    num = (1 + 2 * c * uw + c * ww) * u + (1 - c * uu) * w
    return num / (1 + 2 * c * uw + c * c * uu * ww)


def np_angle(a, b):
    cos = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    return np.arccos(np.clip(cos, -1, 1))


def random_points(rng, n, d, c, lo=0.05, hi=4.0):
    """Points whose geodesic distance from the origin is log-uniform in [lo, hi]."""
    c = np.asarray(c)[..., None]
    u = rng.standard_normal((n, d))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    r = np.exp(rng.uniform(np.log(lo), np.log(hi), (n, 1)))  # sqrt(c) * distance
    return u * np.sinh(r) / np.sqrt(c)


# ------------------------------------------------------------------- maps, dist
def test_exp_log_roundtrip_float64():
    rng = np.random.default_rng(0)
    n, d = 600, 7
    c = np.exp(rng.uniform(np.log(1e-3), np.log(10.0), n))
    # sqrt(c)|v| log-uniform in [1e-7, 11] (below the sinh cap), plus exact zeros
    z = np.exp(rng.uniform(np.log(1e-7), np.log(11.0), n))
    z[:5] = 0.0
    u = rng.standard_normal((n, d))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    v = torch.tensor(u * (z / np.sqrt(c))[:, None])
    ct = torch.tensor(c)
    x = L.exp_map0(v, ct)
    back = L.log_map0(x, ct)
    assert x.dtype == F64 and back.dtype == F64
    np.testing.assert_allclose(back.numpy(), v.numpy(), rtol=1e-10, atol=1e-300)
    # exp_map0 keeps the direction and puts the point at geodesic distance |v|
    dist0 = np_hyp_dist(np.zeros_like(x.numpy()), x.numpy(), c)
    np.testing.assert_allclose(dist0, np.linalg.norm(v.numpy(), axis=1), rtol=1e-7, atol=1e-12)
    cosang = (x * v).sum(-1)[5:] / x.norm(dim=-1)[5:] / v.norm(dim=-1)[5:]
    np.testing.assert_allclose(cosang.numpy(), 1.0, rtol=1e-12)
    # the point is on the hyperboloid: <x, x> = -1/c
    np.testing.assert_allclose(L.inner(x, x, ct).numpy(), -1.0 / c, rtol=1e-6)  # |x|^2 - t^2 cancels
    np.testing.assert_allclose(L.time_component(x, ct).numpy(), np.sqrt(1 / c + (x.numpy() ** 2).sum(1)), rtol=1e-14)


def test_exp_map0_caps_large_norms():
    c = 2.0
    v = torch.tensor([[1e4, 0.0, 0.0], [0.0, 300.0, 400.0]], dtype=torch.float32)
    x = L.exp_map0(v, c)
    assert torch.isfinite(x).all()
    np.testing.assert_allclose((x.norm(dim=-1) * math.sqrt(c)).numpy(), 2.0**15, rtol=1e-5)
    np.testing.assert_allclose((x[1] / x[1].norm()).numpy(), [0.0, 0.6, 0.8], atol=1e-6)


def test_dist_matches_poincare_oracle():
    rng = np.random.default_rng(1)
    n, d = 400, 5
    c = np.exp(rng.uniform(np.log(1e-3), np.log(10.0), n))
    x = random_points(rng, n, d, c)
    y = random_points(rng, n, d, c)
    ref = np_hyp_dist(x, y, c)
    got = L.dist(torch.tensor(x), torch.tensor(y), torch.tensor(c)).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-6)
    # close pairs: the chordal form stays accurate where acosh(1 + tiny) would not
    y2 = x + 1e-5 * rng.standard_normal(x.shape) / np.sqrt(c)[:, None]
    ref2 = np_hyp_dist(x, y2, c)
    got2 = L.dist(torch.tensor(x), torch.tensor(y2), torch.tensor(c)).numpy()
    np.testing.assert_allclose(got2, ref2, rtol=1e-6)


def test_dist_identity_symmetry_and_pairwise():
    rng = np.random.default_rng(2)
    c = 0.37
    x = torch.tensor(random_points(rng, 40, 6, c))
    y = torch.tensor(random_points(rng, 30, 6, c))
    assert (L.dist(x, x, c) == 0).all()
    torch.testing.assert_close(L.dist(x[:30], y, c), L.dist(y, x[:30], c), rtol=1e-14, atol=0)
    pd = L.pairwise_dist(x, y, c)
    assert pd.shape == (40, 30)
    torch.testing.assert_close(pd, L.pairwise_dist(y, x, c).T, rtol=1e-13, atol=0)
    elem = L.dist(x[:, None, :], y[None, :, :], c)
    torch.testing.assert_close(pd, elem, rtol=1e-9, atol=0)
    ref = np_hyp_dist(x.numpy()[:, None, :], y.numpy()[None, :, :], c)
    np.testing.assert_allclose(pd.numpy(), ref, rtol=1e-6)
    # coincident points: pairwise is small but positive (acosh clamped at 1 + eps)
    diag = L.pairwise_dist(x, x, c).diagonal()
    assert (diag >= math.sqrt(2 * 8.8e-16) / math.sqrt(c)).all() and (diag < 1e-6).all()
    # per-pair curvature tensor broadcasts against (B1, B2)
    cm = torch.full((40, 30), c, dtype=F64)
    torch.testing.assert_close(L.pairwise_dist(x, y, cm), pd)


def test_curvature_broadcast_per_row():
    rng = np.random.default_rng(3)
    c = torch.tensor([0.01, 1.0, 5.0], dtype=F64)
    v = torch.tensor(rng.standard_normal((3, 4)))
    rows = torch.stack([L.exp_map0(v[i], float(c[i])) for i in range(3)])
    torch.testing.assert_close(L.exp_map0(v, c), rows)
    w = torch.tensor(rng.standard_normal((3, 4)))
    rows = torch.stack([L.dist(v[i], w[i], float(c[i])) for i in range(3)])
    torch.testing.assert_close(L.dist(v, w, c), rows)


def test_bad_python_curvature_raises():
    with pytest.raises(ValueError, match="c must be > 0"):
        L.exp_map0(torch.zeros(3), -1.0)


# ------------------------------------------------------------ angles and cones
def test_exterior_angle_law_of_cosines_and_mobius():
    rng = np.random.default_rng(4)
    n, d = 500, 4
    c = np.exp(rng.uniform(np.log(1e-3), np.log(10.0), n))
    x = random_points(rng, n, d, c, lo=0.1, hi=3.0)
    y = random_points(rng, n, d, c, lo=0.1, hi=3.0)
    z = np.zeros_like(x)
    sc = np.sqrt(c)
    a, b, o = (sc * np_hyp_dist(z, x, c), sc * np_hyp_dist(x, y, c), sc * np_hyp_dist(z, y, c))
    cos_a = (np.cosh(a) * np.cosh(b) - np.cosh(o)) / (np.sinh(a) * np.sinh(b))
    keep = np.abs(cos_a) < 1 - 1e-6  # law of cosines is ill-conditioned at 0 / pi
    ref = np.pi - np.arccos(np.clip(cos_a, -1, 1))
    got = L.exterior_angle(torch.tensor(x), torch.tensor(y), torch.tensor(c)).numpy()
    np.testing.assert_allclose(got[keep], ref[keep], atol=1e-6)
    assert keep.mean() > 0.9
    # conformal ball: angle at p between the diameter (direction p, outward) and
    # the geodesic to q (initial direction (-p) (+) q)
    p, q = np_poincare(x, c), np_poincare(y, c)
    ref2 = np_angle(p, np_mobius_add(-p, q, c))
    np.testing.assert_allclose(got, ref2, atol=1e-6)


def test_exterior_angle_small_curvature_tends_to_euclidean():
    rng = np.random.default_rng(5)
    x = torch.tensor(rng.standard_normal((50, 3)))
    y = torch.tensor(rng.standard_normal((50, 3)))
    hyp = L.exterior_angle(x, y, 1e-9)
    euc = L.euclidean_exterior_angle(x, y)
    torch.testing.assert_close(hyp, euc, atol=1e-6, rtol=0)
    ref = np_angle(x.numpy(), (y - x).numpy())
    np.testing.assert_allclose(euc.numpy(), ref, atol=1e-12)


def test_half_apertures():
    c = 0.5
    x = torch.tensor([[0.0, 0.0], [0.1, 0.0], [3.0, 4.0], [100.0, 0.0]], dtype=F64)
    w = L.half_aperture(x, c)
    norms = np.array([0.0, 0.1, 5.0, 100.0])
    with np.errstate(divide="ignore"):
        ref = np.arcsin(np.minimum(1.0, 0.2 / (np.sqrt(c) * norms)))
    np.testing.assert_allclose(w.numpy(), ref, atol=1e-7)
    we = L.euclidean_half_aperture(x, min_radius=0.5)
    with np.errstate(divide="ignore"):
        ref_e = np.arcsin(np.minimum(1.0, 0.5 / norms))
    np.testing.assert_allclose(we.numpy(), ref_e, atol=1e-7)
    # a larger min_radius widens the cone
    assert (L.half_aperture(x[2:], c, min_radius=0.3) > w[2:]).all()


@pytest.mark.parametrize("hyperbolic", [True, False])
def test_entailment_zero_inside_cone_and_monotone_outside(hyperbolic):
    c = 0.8
    theta = torch.linspace(0.0, math.pi, 721, dtype=F64)
    e1 = torch.tensor([1.0, 0.0, 0.0], dtype=F64)
    dirs = torch.stack([theta.cos(), theta.sin(), torch.zeros_like(theta)], -1)
    if hyperbolic:
        parent = L.exp_map0(2.0 * e1, c).expand(len(theta), 3)
        child = L.exp_map0(3.0 * dirs, c)
        phi = L.exterior_angle(parent, child, c)
        w = L.half_aperture(parent, c)
        loss = L.entailment_loss(parent, child, c)
    else:
        parent = (2.0 * e1).expand(len(theta), 3)
        child = 3.0 * dirs
        phi = L.euclidean_exterior_angle(parent, child)
        w = L.euclidean_half_aperture(parent)
        loss = L.euclidean_entailment_loss(parent, child)
    assert phi[0] < 1e-6 and abs(phi[-1] - math.pi) < 1e-6
    assert (phi.diff() > 0).all()  # rotating the child away opens the angle
    inside = phi <= w
    assert inside[:3].all() and not inside[-1]
    assert (loss[inside] == 0).all()
    out = loss[~inside]
    assert (out > 0).all() and (out.diff() > 0).all()
    torch.testing.assert_close(out, (phi - w)[~inside])
    # a child straight outward from the parent is always entailed
    assert loss[0] == 0


def test_undefined_angles_are_pi_over_2():
    x = torch.tensor([[0.0, 0.0], [1.0, 2.0]], dtype=F64, requires_grad=True)
    y = torch.tensor([[1.0, 0.0], [1.0, 2.0]], dtype=F64, requires_grad=True)
    for phi in (L.exterior_angle(x, y, 1.0), L.euclidean_exterior_angle(x, y)):
        torch.testing.assert_close(phi, torch.full((2,), math.pi / 2, dtype=F64))
        gx, gy = torch.autograd.grad(phi.sum(), (x, y))
        assert (gx == 0).all() and (gy == 0).all()


# --------------------------------------------------------------- robustness grid
NORMS = [0.0, 1e-8, 1e-3, 1.0, 10.0, 1e2, 1e3, 1e4]
CURVS = [1e-3, 1e-2, 0.1, 1.0, 10.0]


def _grid(dtype, d=16, seed=0):
    """Rows (c, v1, v2) over all curvature x norm x norm combos plus y==x, y=-x, y=2x."""
    g = torch.Generator().manual_seed(seed)
    cs, n1, n2 = torch.meshgrid(
        torch.tensor(CURVS, dtype=F64),
        torch.tensor(NORMS, dtype=F64),
        torch.tensor(NORMS, dtype=F64),
        indexing="ij",
    )
    cs, n1, n2 = cs.reshape(-1), n1.reshape(-1), n2.reshape(-1)
    u1 = torch.randn(len(cs), d, generator=g, dtype=F64)
    u2 = torch.randn(len(cs), d, generator=g, dtype=F64)
    v1 = u1 / u1.norm(dim=1, keepdim=True) * n1[:, None]
    v2 = u2 / u2.norm(dim=1, keepdim=True) * n2[:, None]
    k = len(CURVS) * len(NORMS)
    a = v1[:: len(NORMS)][:k]  # one row per (c, norm)
    ca = cs[:: len(NORMS)][:k]
    v1 = torch.cat([v1, a, a, a])
    v2 = torch.cat([v2, a.clone(), -a, 2 * a])
    cs = torch.cat([cs, ca, ca, ca])
    return cs.to(torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype), v1.to(dtype), v2.to(dtype)


def _ops(v1, v2, c):
    x, y = L.exp_map0(v1, c), L.exp_map0(v2, c)
    return {
        "exp_map0": x,
        "log_map0(exp)": L.log_map0(x, c),
        "log_map0(raw)": L.log_map0(v1, c),
        "time_component": L.time_component(v1, c),
        "inner": L.inner(v1, v2, c),
        "dist(exp)": L.dist(x, y, c),
        "dist(raw)": L.dist(v1, v2, c),
        "half_aperture": L.half_aperture(x, c),
        "exterior_angle(exp)": L.exterior_angle(x, y, c),
        "exterior_angle(raw)": L.exterior_angle(v1, v2, c),
        "entailment_loss(exp)": L.entailment_loss(x, y, c),
        "entailment_loss(raw)": L.entailment_loss(v1, v2, c),
        "euclidean_half_aperture": L.euclidean_half_aperture(v1),
        "euclidean_exterior_angle": L.euclidean_exterior_angle(v1, v2),
        "euclidean_entailment_loss": L.euclidean_entailment_loss(v1, v2),
    }


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_no_nan_or_inf_in_values_or_gradients(dtype):
    cs, v1, v2 = _grid(dtype)
    cs.requires_grad_(True)
    v1.requires_grad_(True)
    v2.requires_grad_(True)
    out_dtype = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    for name, val in _ops(v1, v2, cs).items():
        assert val.dtype == out_dtype, name
        assert torch.isfinite(val).all(), name
        # random weights so gradients do not cancel by symmetry
        wts = torch.rand(val.shape, generator=torch.Generator().manual_seed(1), dtype=val.dtype)
        grads = torch.autograd.grad((val * wts).sum(), (v1, v2, cs), allow_unused=True, retain_graph=True)
        for g, what in zip(grads, ("v1", "v2", "c")):
            if g is not None:
                assert torch.isfinite(g).all(), f"{name}: gradient w.r.t. {what}"
    # all-pairs distances at each curvature, including coincident points
    for c in CURVS:
        p = L.exp_map0(v1[:40], c)
        pd = L.pairwise_dist(p, p, c)
        assert pd.dtype == out_dtype and torch.isfinite(pd).all()
        (g,) = torch.autograd.grad(pd.sum(), v1)
        assert torch.isfinite(g).all()
        pr = L.pairwise_dist(v1[:40], v2[:40], c)
        (g,) = torch.autograd.grad(pr.sum(), v1)
        assert torch.isfinite(pr).all() and torch.isfinite(g).all()


def test_half_precision_matches_float32_computation():
    rng = np.random.default_rng(6)
    v = torch.tensor(rng.standard_normal((64, 8)) * 3)
    w = torch.tensor(rng.standard_normal((64, 8)) * 3)
    for half in (torch.float16, torch.bfloat16):
        vh, wh = v.to(half), w.to(half)
        ref_x = L.exp_map0(vh.float(), 0.5)
        x = L.exp_map0(vh, 0.5)
        assert x.dtype == torch.float32
        torch.testing.assert_close(x, ref_x)
        loss = L.entailment_loss(x, L.exp_map0(wh, 0.5), torch.tensor(0.5, dtype=half))
        assert loss.dtype == torch.float32
        ref = L.entailment_loss(ref_x, L.exp_map0(wh.float(), 0.5), 0.5)
        torch.testing.assert_close(loss, ref)


def test_zero_vector_gradients_are_exact():
    """At v = 0, exp_map0 and log_map0 have the identity Jacobian."""
    v = torch.zeros(3, dtype=F64, requires_grad=True)
    jac = torch.autograd.functional.jacobian(lambda t: L.exp_map0(t, 2.0), v)
    torch.testing.assert_close(jac, torch.eye(3, dtype=F64))
    jac = torch.autograd.functional.jacobian(lambda t: L.log_map0(t, 2.0), v)
    torch.testing.assert_close(jac, torch.eye(3, dtype=F64))


def test_gradcheck_smooth_region():
    rng = np.random.default_rng(7)
    x = torch.tensor(rng.standard_normal((4, 3)), requires_grad=True)
    y = torch.tensor(rng.standard_normal((4, 3)), requires_grad=True)
    c = torch.tensor([0.3, 1.0, 2.0, 0.05], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, k: L.dist(a, b, k), (x, y, c))
    assert torch.autograd.gradcheck(lambda a, b, k: L.exterior_angle(a, b, k), (x, y, c))
    assert torch.autograd.gradcheck(lambda a, k: L.exp_map0(a, k), (x, c))
    assert torch.autograd.gradcheck(lambda a, k: L.log_map0(a, k), (x, c))
    assert torch.autograd.gradcheck(lambda a, b: L.pairwise_dist(a, b, 0.7), (x, y))
