"""Heterogeneous curvatures and the intermediate manifold (DESIGN.md section 3).

Text features live on a Lorentz manifold of curvature ``-c_t``, image features on
``-c_i``; cross-modal alignment happens on an intermediate manifold ``-c_m``.

* :func:`manifold_distance` -- ``D(c_ref -> c)`` between manifolds (KL of wrapped
  normals of radius ``r``).
* :func:`intermediate_curvature` -- ``c_m* = argmin_{c in [min, max]} D(c_t -> c; r_t)
  + D(c_i -> c; r_i)``: batched golden-section search in float64 with a fixed
  iteration count, polished by safeguarded Newton steps, differentiated with the
  implicit function theorem.
* :func:`path_radii` -- the radii ``r_t, r_i`` from the batch's path features.

The learnable curvatures of the four modes are :class:`hyptree.geometry.curvatures.Curvatures`.

Notation used below: ``a = sqrt(c_ref)``, ``s = sqrt(c)``, ``z = (s - a) r``.  Then

    D = (-a + 2 s cosh z) / (2 a s^2) = -1 / (2 s^2) + cosh(z) / (a s),

which is stationary at ``s = a`` with ``d2D/ds2 = (r^2 a^2 - 1) / a^4`` there: a
local minimum exactly when ``r sqrt(c_ref) > 1`` (checked in the tests; this
``c``-in-the-denominator form is DESIGN's, the paper's ``sqrt(c_ref c)`` form is
not stationary at ``c_ref``).
"""

import math

import torch

__all__ = [
    "GOLDEN_ITERS",
    "NEWTON_STEPS",
    "BOUNDARY_RTOL",
    "RATIO_RANGE",
    "manifold_distance",
    "intermediate_curvature",
    "radii_from_ratio",
    "path_radii",
]

#: Golden-section iterations.  The log-bracket ``log(max/min)`` is at most
#: ``log(1e4) = 9.2`` for curvatures in [1e-3, 10]; 32 iterations shrink it by
#: ``0.618**32 = 2e-7`` to <= 2e-6 (relative accuracy in ``c``), still above
#: float64's resolution of a flat minimum (~1e-8), where comparisons stay reliable.
GOLDEN_ITERS = 32
#: Newton steps on ``dF/dc = 0`` after the search: quadratic convergence takes the
#: 2e-6 of the search to ~1e-12 in one step and to rounding level in two; 3 for margin.
NEWTON_STEPS = 3
#: The optimum counts as on a bracket end when it is within this relative distance
#: of it (then the gradient goes entirely to the curvature owning that end).
BOUNDARY_RTOL = 1e-9

_INVPHI = (math.sqrt(5.0) - 1.0) / 2.0
# minimum half-width (in log c) of the interval the Newton steps may move in
_NEWTON_MARGIN = 1e-6
# cosh(300) ~ 1e130: keeps D and its derivatives finite in float64 even multiplied
# by large radii.  Reached only when |sqrt(c) - sqrt(c_ref)| r > 300, i.e. extreme
# radii (a feature-norm ratio near RATIO_RANGE's ends with far-apart curvatures;
# typical training values give z < 60).  There the capped objective is minimised:
# the result stays finite and in the bracket, but is no longer the exact optimum.
_Z_CAP = 300.0


# ------------------------------------------------------------- D and its derivatives
def _czs(s, a, r):
    z = ((s - a) * r).clamp(-_Z_CAP, _Z_CAP)
    return torch.cosh(z), torch.sinh(z)


def _d(s, a, r):
    """D as a function of s = sqrt(c)."""
    ch, _ = _czs(s, a, r)
    return -0.5 / (s * s) + ch / (a * s)


def _d_s(s, a, r):
    """dD/ds (the solver uses :func:`_d_s_ss`; kept as its second formula)."""
    ch, sh = _czs(s, a, r)
    return 1.0 / s**3 + r * sh / (a * s) - ch / (a * s * s)


def _d_ss(s, a, r):
    """d2D/ds2."""
    ch, sh = _czs(s, a, r)
    return -3.0 / s**4 + r * r * ch / (a * s) - 2.0 * r * sh / (a * s * s) + 2.0 * ch / (a * s**3)


def _d_s_ss(s, a, r):
    """dD/ds and d2D/ds2 together (one cosh and sinh)."""
    ch, sh = _czs(s, a, r)
    p = ch / (a * s)
    q = r * sh / (a * s)
    inv_s = s.reciprocal()
    d_s = inv_s**3 + q - p * inv_s
    d_ss = -3.0 * inv_s**4 + r * r * p + 2.0 * inv_s * (p * inv_s - q)
    return d_s, d_ss


def _d_sa(s, a, r):
    """d2D/(ds da), a = sqrt(c_ref)."""
    ch, sh = _czs(s, a, r)
    return -r * r * ch / (a * s) - r * sh / (a * a * s) + r * sh / (a * s * s) + ch / (a * a * s * s)


def _d_sr(s, a, r):
    """d2D/(ds dr)."""
    ch, sh = _czs(s, a, r)
    return sh / (a * s) + r * (s - a) * ch / (a * s) - (s - a) * sh / (a * s * s)


def manifold_distance(c_ref, c, r):
    """``D(c_ref -> c) = (-sqrt(c_ref) + 2 sqrt(c) cosh((sqrt(c) - sqrt(c_ref)) r)) / (2 sqrt(c_ref) c)``.

    Args:
        c_ref, c: curvature parameters (> 0; tensors or floats, broadcastable).
        r: radius of the wrapped normals (> 0).
    Returns:
        tensor of the broadcast shape (differentiable; float64 when all inputs are
        python numbers).  ``D -> -inf`` as ``c -> 0``: ``c = c_ref`` is only a
        *local* minimum, and only when ``r sqrt(c_ref) > 1``.
    """
    ref = next((v for v in (c_ref, c, r) if isinstance(v, torch.Tensor)), None)
    dtype = ref.dtype if ref is not None else torch.float64
    device = ref.device if ref is not None else None
    c_ref, c, r = (torch.as_tensor(v, dtype=dtype, device=device) for v in (c_ref, c, r))
    a, s = c_ref.sqrt(), c.sqrt()
    z = ((s - a) * r).clamp(-_Z_CAP, _Z_CAP)
    return (-a + 2.0 * s * torch.cosh(z)) / (2.0 * a * c)


# --------------------------------------------------------------- the solver
def _f64(v, device):
    """float64 tensor (python numbers converted directly, not through float32)."""
    if isinstance(v, torch.Tensor):
        return v.to(device=device, dtype=torch.float64)
    return torch.tensor(v, dtype=torch.float64, device=device)


def _solve(c_t, c_i, r_t, r_i, iters, newton_steps):
    """Batched minimiser of F on [min(c_t, c_i), max(c_t, c_i)]; float64, no host sync.

    Returns ``(c_m, at_lo, at_hi)``.
    """
    lo, hi = torch.minimum(c_t, c_i), torch.maximum(c_t, c_i)
    a_t, a_i = c_t.sqrt(), c_i.sqrt()
    # both terms of F evaluated as one stacked (2, ...) tensor: the search runs ~35 times
    # per solve on tiny tensors, where the cost is the number of ATen calls
    rr = torch.stack(torch.broadcast_tensors(r_t, r_i))
    aa = torch.stack(torch.broadcast_tensors(a_t, a_i))
    ar = torch.stack(torch.broadcast_tensors(a_t * r_t, a_i * r_i))
    inv_a = torch.stack(torch.broadcast_tensors(a_t.reciprocal(), a_i.reciprocal()))

    def f(u):  # F in u = log c: relative accuracy in c, bracket up to 9.2 wide
        # F = sum_k D(c_k -> c) = w * sum_k cosh(z_k) / a_k - w^2, w = 1/sqrt(c), z_k = (sqrt(c) - a_k) r_k
        s = torch.exp(0.5 * u)
        w = s.reciprocal()
        z = (s * rr - ar).clamp(-_Z_CAP, _Z_CAP)
        return w * (torch.cosh(z) * inv_a).sum(0) - w * w

    # golden-section search in log c (a monotone reparametrisation of the bracket). The
    # two interior points are symmetric in the bracket, so each new point is the mirror
    # image of the one kept: x_new = a + b - x_kept (rounding drift over 32 iterations is
    # ~1e-8 of the final bracket, far below what comparisons of F can resolve).
    a, b = lo.log(), hi.log()
    x_keep = a + _INVPHI * (b - a)
    x_new = b - _INVPHI * (b - a)
    f_keep, f_new = f(x_keep), f(x_new)
    for _ in range(iters):
        better = f_new < f_keep
        x_other = torch.where(better, x_keep, x_new)
        x_keep = torch.where(better, x_new, x_keep)
        f_keep = torch.where(better, f_new, f_keep)
        # the minimum lies between the bracket end beyond the best point and the other point
        below = x_keep < x_other
        a, b = torch.where(below, a, x_other), torch.where(below, x_other, b)
        x_new = a + b - x_keep
        f_new = f(x_new)
    better = f_new < f_keep
    u_best = torch.where(better, x_new, x_keep)
    f_best = torch.where(better, f_new, f_keep)

    # the ends themselves are candidates (a minimum on an end is then hit exactly)
    f_lo, f_hi = f(lo.log()), f(hi.log())
    c = torch.where((f_lo <= f_best) & (f_lo <= f_hi), lo, torch.where(f_hi <= f_best, hi, torch.exp(u_best)))

    # safeguarded Newton on dF/dc = 0, confined to the final golden bracket widened by
    # its width and by _NEWTON_MARGIN: comparisons of F cannot locate a flat minimum
    # better than ~sqrt(float64 eps) = 1e-8, so the last golden brackets may miss it
    w = (b - a).clamp_min(_NEWTON_MARGIN)
    n_lo = torch.maximum(lo, torch.minimum(c, torch.exp(a - w)))
    n_hi = torch.minimum(hi, torch.maximum(c, torch.exp(b + w)))
    for _ in range(newton_steps):
        s = c.sqrt()
        d_s, d_ss = _d_s_ss(s, aa, rr)
        f_s, f_ss = d_s.sum(0), d_ss.sum(0)
        f_c = f_s / (2.0 * s)
        f_cc = (f_ss - f_s / s) / (4.0 * s * s)
        ok = (f_cc > 0) & torch.isfinite(f_c)
        step = torch.where(ok, f_c / torch.where(ok, f_cc, torch.ones_like(f_cc)), torch.zeros_like(c))
        c = torch.minimum(torch.maximum(c - step, n_lo), n_hi)

    c = torch.minimum(torch.maximum(c, lo), hi)
    at_lo = c <= lo * (1.0 + BOUNDARY_RTOL)
    at_hi = c >= hi * (1.0 - BOUNDARY_RTOL)
    return c, at_lo, at_hi


class _IntermediateCurvature(torch.autograd.Function):
    """float64, same-shape inputs; see :func:`intermediate_curvature`."""

    @staticmethod
    def forward(ctx, c_t, c_i, r_t, r_i, iters, newton_steps):
        c_m, at_lo, at_hi = _solve(c_t, c_i, r_t, r_i, iters, newton_steps)
        ctx.save_for_backward(c_t, c_i, r_t, r_i, c_m, at_lo, at_hi)
        return c_m

    @staticmethod
    def backward(ctx, grad):
        c_t, c_i, r_t, r_i, c_m, at_lo, at_hi = ctx.saved_tensors
        s, a_t, a_i = c_m.sqrt(), c_t.sqrt(), c_i.sqrt()
        one, zero = torch.ones_like(s), torch.zeros_like(s)

        # implicit function theorem on dF/ds = 0, in s = sqrt(c):
        #   ds/dp = -(d2F/ds dp) / (d2F/ds2), and dc_m/dc_k = (s / a_k) ds/da_k
        f_ss = _d_ss(s, a_t, r_t) + _d_ss(s, a_i, r_i)
        convex = f_ss > 0
        f_ss = torch.where(convex, f_ss, one)
        g_t = -(s / a_t) * _d_sa(s, a_t, r_t) / f_ss
        g_i = -(s / a_i) * _d_sa(s, a_i, r_i) / f_ss
        g_rt = -2.0 * s * _d_sr(s, a_t, r_t) / f_ss
        g_ri = -2.0 * s * _d_sr(s, a_i, r_i) / f_ss

        interior = ~at_lo & ~at_hi
        equal = at_lo & at_hi  # c_t == c_i (to BOUNDARY_RTOL)
        # interior: IFT (a degenerate flat optimum, never seen with the radius rule, splits 1/2)
        gt = torch.where(convex, g_t, 0.5 * one)
        gi = torch.where(convex, g_i, 0.5 * one)
        # c_t == c_i: the IFT weights are the limit of the interior gradient and sum to 1
        # there; if they are not in [0, 1] (a well is not a minimum) split 1/2
        w_ok = convex & (g_t >= 0) & (g_t <= 1)
        gt_eq = torch.where(w_ok, g_t, 0.5 * one)
        # optimum on an end: c_m follows the curvature that end belongs to
        t_owns = (at_lo & (c_t <= c_i)) | (at_hi & (c_t > c_i))
        gt_end = torch.where(t_owns, one, zero)

        gt = torch.where(interior, gt, torch.where(equal, gt_eq, gt_end))
        gi = torch.where(interior, gi, torch.where(equal, 1.0 - gt_eq, 1.0 - gt_end))
        radii_ok = interior & convex
        g_rt = torch.where(radii_ok, g_rt, zero)
        g_ri = torch.where(radii_ok, g_ri, zero)
        return grad * gt, grad * gi, grad * g_rt, grad * g_ri, None, None


def intermediate_curvature(c_t, c_i, r_t, r_i, iters=GOLDEN_ITERS, newton_steps=NEWTON_STEPS):
    """Curvature of the intermediate manifold between text (``c_t``) and image (``c_i``).

    ``c_m* = argmin_{c in [min(c_t, c_i), max(c_t, c_i)]} D(c_t -> c; r_t) + D(c_i -> c; r_i)``.

    Golden-section search on ``log c`` over the bracket (fixed ``iters``), the two
    ends as extra candidates, then ``newton_steps`` Newton steps on ``dF/dc = 0``
    with analytic derivatives, each clamped to the final golden bracket widened by
    its width (and to the bracket).  float64 inside, batched, on the inputs'
    device, no data-dependent Python branching or host sync.  Accuracy ~1e-12
    relative for curvatures in [1e-3, 10].  Finds the local minimum the search
    converges to (the global one on the bracket when F is unimodal there, which the
    radius rule of :func:`radii_from_ratio` is designed for).

    Gradients (exact):

    * interior optimum: implicit function theorem, ``dc_m/dp = -(d2F/dc dp) / (d2F/dc2)``
      for ``p`` in ``c_t, c_i, r_t, r_i`` (radii get exact gradients too; they are
      cheap.  :func:`path_radii` returns detached radii, so in training nothing
      flows through them);
    * optimum on an end (within :data:`BOUNDARY_RTOL`): ``c_m`` equals the curvature
      owning that end, gradient 1 to it and 0 to the other and to the radii;
    * ``c_t == c_i``: returns ``c_t``; the gradient splits as the limit of the interior
      formula, ``dc_m/dc_t = D_t'' / (D_t'' + D_i'')`` (second derivatives at ``c_t``,
      both wells being minima), ``dc_m/dc_i = 1 - dc_m/dc_t``; falls back to 1/2 each
      when a well is not a minimum.

    Args:
        c_t, c_i: curvature parameters (> 0), tensors or floats, broadcastable.
        r_t, r_i: radii (> 0), broadcastable with them.
        iters: golden-section iterations.  newton_steps: Newton steps after it.
    Returns:
        ``c_m`` of the broadcast shape, dtype of ``c_t`` (the default dtype when
        ``c_t`` is a python number).
    """
    vals = (c_t, c_i, r_t, r_i)
    ref = next((v for v in vals if isinstance(v, torch.Tensor)), None)
    device = ref.device if ref is not None else None
    out_dtype = c_t.dtype if isinstance(c_t, torch.Tensor) else torch.get_default_dtype()
    args = torch.broadcast_tensors(*(_f64(v, device) for v in vals))
    c_m = _IntermediateCurvature.apply(*args, int(iters), int(newton_steps))
    return c_m.to(out_dtype)


# ------------------------------------------------------------------ radii
#: ``|mean(image)| / |mean(text)|`` is clamped into this range (guards zero norms).
RATIO_RANGE = (1e-2, 1e2)


def radii_from_ratio(ratio, c_t, c_i, kappa=3.0):
    """``r_i = kappa * max(1/sqrt(c_i), ratio/sqrt(c_t))``, ``r_t = r_i / ratio``.

    All float64, detached.  See :func:`path_radii` for the why.
    Returns ``(r_t, r_i)`` of the broadcast shape.
    """
    ref = next((v for v in (ratio, c_t, c_i) if isinstance(v, torch.Tensor)), None)
    device = ref.device if ref is not None else None
    ratio, c_t, c_i = (_f64(v, device).detach() for v in (ratio, c_t, c_i))
    r_i = kappa * torch.maximum(1.0 / c_i.sqrt(), ratio / c_t.sqrt())
    return r_i / ratio, r_i


def _mean_norm(feats):
    feats = feats.detach().reshape(-1, feats.shape[-1]).to(torch.float64)
    if feats.shape[0] == 0:
        return None
    return feats.mean(0).norm()


def path_radii(image_feats, text_feats, c_t, c_i, kappa=3.0):
    """Radii ``(r_t, r_i)`` of the wrapped normals for :func:`intermediate_curvature`.

    ``ratio = |mean(image_feats)| / |mean(text_feats)|`` (detached, clamped into
    :data:`RATIO_RANGE`; 1 when either set is empty or both means vanish), then
    ``r_i = kappa * max(1/sqrt(c_i), ratio/sqrt(c_t))`` and ``r_t = r_i / ratio``.

    Why this rule and ``kappa = 3``: it gives ``r_i sqrt(c_i) >= kappa`` and
    ``r_t sqrt(c_t) >= kappa``, with equality for (at least) one of them.  Each
    ``D(c_k -> c)`` has ``d2D/ds2 = (r^2 c_k - 1) / c_k^2`` at its own curvature, so
    with ``kappa = 1`` (the reference implementation) one well is flat to second
    order at its end and the other term drags the minimiser onto the bracket end for
    a large fraction of curvature pairs (about a quarter of random pairs in
    [0.05, 5]; the optimum is then not a stationary point and ``c_m`` just copies one
    curvature).  ``kappa = 3`` makes both wells strictly convex (``r^2 c - 1 >= 8``)
    and keeps the optimum interior (tested over random pairs and ratios).

    Args:
        image_feats: ``(N_i, D)`` valid tangent-space image path features.
        text_feats: ``(N_t, D)`` valid tangent-space text path features.
        c_t, c_i: current curvatures (tensors or floats).
    Returns:
        ``(r_t, r_i)`` float64, detached, shape of ``c_t`` / ``c_i`` broadcast.
    """
    n_i, n_t = _mean_norm(image_feats), _mean_norm(text_feats)
    if n_i is None or n_t is None:
        ratio = torch.ones((), dtype=torch.float64, device=image_feats.device)
    else:
        tiny = 1e-30
        ratio = torch.where((n_i <= tiny) & (n_t <= tiny), torch.ones_like(n_i), n_i / n_t.clamp_min(tiny)).clamp(
            *RATIO_RANGE
        )
    return radii_from_ratio(ratio, c_t, c_i, kappa)
