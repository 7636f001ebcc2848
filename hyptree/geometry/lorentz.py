"""Lorentz-model operations on space components, safe in float32.

Conventions (DESIGN.md section 2):

* curvature is ``-c`` with ``c > 0``; ``curv`` is a python float or a tensor that
  broadcasts against the batch shape ``(...)`` of the points (shape ``()`` or
  ``(...)``; for :func:`pairwise_dist` against ``(B1, B2)``);
* a point is stored by its space part ``x`` of shape ``(..., d)``; its time part is
  ``t(x) = sqrt(1/c + |x|^2)``;
* tangent vectors at the origin (the inputs of :func:`exp_map0`) are plain
  ``(..., d)`` vectors.

Precision: fp16 / bf16 inputs are computed and returned in float32 (hyperbolic
coordinates grow like ``sinh`` and overflow half precision, so they are never cast
back down); float32 stays float32 and float64 stays float64.  ``curv`` is cast to
that compute dtype (gradients still flow to it).

Numerical safety.  All of these return finite values and finite gradients (with
respect to points, tangent vectors and ``curv``) for feature norms from 0 (exact
zero vectors included) to 1e4 and ``c`` in [1e-3, 10]:

* ``sinh`` argument cap: :func:`exp_map0` clamps ``sqrt(c)|v|`` at
  :data:`MAX_SINH_ARG` ``= asinh(2**15) ~= 11.09``, so ``sqrt(c)|x| <= 2**15`` and a
  mapped point is at most ``11.09 / sqrt(c)`` from the origin.  With that cap the
  Lorentz products stay below ~1e9 / c and their squares below float32's range.
  Tangent norms past the cap all map onto the same sphere (zero radial gradient).
* ``sinh(z)/z`` and ``asinh(z)/z`` use a Taylor series for ``z < 1e-3`` so the maps
  are smooth through the origin (no ``0/0``).
* ``acos`` / ``asin`` / ``acosh`` arguments are clamped ``eps = 4 * finfo(dtype).eps``
  away from their singular end (float32: 4.8e-7, float64: 8.9e-16): gradients there
  are at most ``1/sqrt(2 eps)`` (~1e3 in float32), at the price of a value floor of
  ``sqrt(2 eps)`` rad (~1e-3 in float32) for angles that are exactly 0 or pi, and
  of ``sqrt(2 eps)/sqrt(c)`` for :func:`pairwise_dist` of coincident points.
* :func:`dist` and :func:`exterior_angle` use a chordal form built on ``y - x`` (see
  :func:`_chordal_sq`) instead of ``acosh(-c<x,y>)``: the same quantity, but
  exactly 0 for ``x == y`` and without the ``1/c - 1/c`` cancellation.  Where an
  angle is undefined (``x == y``, or a parent at the origin) it is set to ``pi/2``
  with zero gradient.

Note: in float32, points far from the origin (``sqrt(c)|x| >~ 1e3``) that are
nearly radially aligned have distances/angles with few correct digits: that is a
property of the space-component representation (the answer is a small difference
of large numbers), not of these formulas.
"""

import math

import torch

__all__ = [
    "MAX_SINH_ARG",
    "exp_map0",
    "log_map0",
    "time_component",
    "inner",
    "dist",
    "pairwise_dist",
    "half_aperture",
    "exterior_angle",
    "entailment_loss",
    "euclidean_half_aperture",
    "euclidean_exterior_angle",
    "euclidean_entailment_loss",
]

#: Cap on ``sqrt(c) |v|`` in :func:`exp_map0`: ``sinh(MAX_SINH_ARG) = 2**15``.
MAX_SINH_ARG = math.asinh(2.0**15)

# Below this |z| the Taylor series of sinh(z)/z and asinh(z)/z are used.
_TAYLOR_Z = 1e-3


# --------------------------------------------------------------------------- helpers
def _compute_dtype(*tensors):
    """float32 for half / bf16 / integer inputs, otherwise the promoted dtype."""
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    if dtype in (torch.float16, torch.bfloat16) or not dtype.is_floating_point:
        return torch.float32
    return dtype


def _prep(*tensors):
    """Cast points / vectors to the compute dtype (see module docstring)."""
    dtype = _compute_dtype(*tensors)
    return [t.to(dtype) for t in tensors]


def _curv(curv, ref):
    """``curv`` as a tensor of ``ref``'s dtype and device, with a trailing unit dim.

    Returns ``(c, c_feat)``: ``c`` broadcasts with the batch shape ``(...)``,
    ``c_feat`` (= ``c[..., None]``) with ``(..., d)``.
    """
    if isinstance(curv, torch.Tensor):
        c = curv.to(dtype=ref.dtype, device=ref.device)
    else:
        if not curv > 0:
            raise ValueError(f"curvature parameter c must be > 0 (curvature -c), got {curv}")
        c = torch.tensor(float(curv), dtype=ref.dtype, device=ref.device)
    return c, c.unsqueeze(-1)


def _eps(dtype):
    """Distance kept from the singular ends of acos / asin / acosh."""
    return 4.0 * torch.finfo(dtype).eps


def _sumsq(x, keepdim=False):
    return (x * x).sum(dim=-1, keepdim=keepdim)


def _sinhc(z2, z_cap):
    """``sinh(min(z, z_cap)) / z`` from ``z2 = z**2``; 1 at z = 0, smooth there."""
    small = z2 < _TAYLOR_Z**2
    z = torch.where(small, torch.ones_like(z2), z2).sqrt()
    series = 1.0 + z2 / 6.0 + z2 * z2 / 120.0
    return torch.where(small, series, torch.sinh(z.clamp_max(z_cap)) / z)


def _asinhc(z2):
    """``asinh(z) / z`` from ``z2 = z**2``; 1 at z = 0, smooth there."""
    small = z2 < _TAYLOR_Z**2
    z = torch.where(small, torch.ones_like(z2), z2).sqrt()
    series = 1.0 - z2 / 6.0 + 0.075 * z2 * z2
    return torch.where(small, series, torch.asinh(z) / z)


# ------------------------------------------------------------------------ basic maps
def time_component(x, curv):
    """Time part ``t(x) = sqrt(1/c + |x|^2)``.

    Args:
        x: ``(..., d)`` space components.
        curv: ``c > 0``, broadcastable to ``(...)``.
    Returns:
        ``(...)``.
    """
    (x,) = _prep(x)
    c, _ = _curv(curv, x)
    return (1.0 / c + _sumsq(x)).sqrt()


def exp_map0(v, curv):
    """Exponential map at the origin: ``x = sinh(sqrt(c)|v|) / (sqrt(c)|v|) * v``.

    Args:
        v: ``(..., d)`` tangent vectors at the origin.
        curv: ``c > 0``, broadcastable to ``(...)``.
    Returns:
        ``(..., d)`` space components (float32 for half inputs).  ``sqrt(c)|v|`` is
        capped at :data:`MAX_SINH_ARG` (the point then lies on the sphere
        ``sqrt(c)|x| = 2**15``, direction of ``v`` kept).
    """
    (v,) = _prep(v)
    _, c = _curv(curv, v)
    z2 = c * _sumsq(v, keepdim=True)
    return _sinhc(z2, MAX_SINH_ARG) * v


def log_map0(x, curv):
    """Logarithmic map at the origin: ``v = asinh(sqrt(c)|x|) / (sqrt(c)|x|) * x``.

    Why asinh: DESIGN writes ``acosh(sqrt(c) t(x))``; since ``sqrt(c) t(x) =
    sqrt(1 + c|x|^2) = cosh(asinh(sqrt(c)|x|))`` both are equal, but ``acosh`` has an
    infinite slope at 1 (points near the origin) and ``asinh`` does not.

    Args:
        x: ``(..., d)`` space components.
        curv: ``c > 0``, broadcastable to ``(...)``.
    Returns:
        ``(..., d)`` tangent vectors at the origin.
    """
    (x,) = _prep(x)
    _, c = _curv(curv, x)
    return _asinhc(c * _sumsq(x, keepdim=True)) * x


def inner(x, y, curv):
    """Lorentz inner product ``<x, y> = x.y - t(x) t(y)`` (elementwise).

    Args:
        x, y: ``(..., d)`` space components (broadcastable).
        curv: ``c > 0``, broadcastable to the batch shape.
    Returns:
        ``(...)``; equals ``-1/c`` for ``x == y``.
    """
    x, y = _prep(x, y)
    c, _ = _curv(curv, x)
    tx = (1.0 / c + _sumsq(x)).sqrt()
    ty = (1.0 / c + _sumsq(y)).sqrt()
    return (x * y).sum(-1) - tx * ty


def _chordal_sq(x, y, c, tx, ty):
    """``q = c <X - Y, X - Y>_L`` for the full points ``X = (t(x), x)``.

    ``q = 2 (-c<x,y> - 1) = 4 sinh^2(sqrt(c) d(x, y) / 2)``.  Why: written through
    ``delta = y - x`` and ``t(x) - t(y) = -(x + y).delta / (t(x) + t(y))`` it is
    exactly 0 for ``x == y`` and free of the cancellation in ``c t(x) t(y) - c x.y``.
    """
    delta = y - x
    dt = (delta * (x + y)).sum(-1) / (tx + ty)
    return (c * (_sumsq(delta) - dt * dt)).clamp_min(0.0)


def dist(x, y, curv):
    """Geodesic distance ``d(x, y) = acosh(-c<x,y>) / sqrt(c)`` (elementwise).

    Computed as ``2 asinh(sqrt(q) / 2) / sqrt(c)`` with ``q`` from
    :func:`_chordal_sq` (same value; exactly 0 for ``x == y``, zero gradient there).

    Args:
        x, y: ``(..., d)`` space components (broadcastable).
        curv: ``c > 0``, broadcastable to the batch shape.
    Returns:
        ``(...)``.
    """
    x, y = _prep(x, y)
    c, _ = _curv(curv, x)
    tx = (1.0 / c + _sumsq(x)).sqrt()
    ty = (1.0 / c + _sumsq(y)).sqrt()
    q = _chordal_sq(x, y, c, tx, ty)
    pos = q > torch.finfo(q.dtype).tiny
    q_safe = torch.where(pos, q, torch.ones_like(q))
    d = 2.0 * torch.asinh(0.5 * q_safe.sqrt()) / c.sqrt()
    return torch.where(pos, d, torch.zeros_like(d))


def pairwise_dist(x, y, curv):
    """All-pairs geodesic distance ``acosh(-c<x_i, y_j>) / sqrt(c)``.

    Uses one matrix product (memory ``O(B1 B2)``, no ``(B1, B2, d)`` difference
    tensor), so coincident points get a small positive value instead of 0: at
    least ``acosh(1 + eps) / sqrt(c)`` (the clamp), more when the rounding of
    ``-c<x,y> ~ 1 + c|x|^2`` exceeds eps.  Use :func:`dist` when exact small
    distances matter.

    Args:
        x: ``(B1, d)``, y: ``(B2, d)`` space components.
        curv: ``c > 0``, scalar or broadcastable to ``(B1, B2)``.
    Returns:
        ``(B1, B2)``.
    """
    x, y = _prep(x, y)
    if x.dim() != 2 or y.dim() != 2:
        raise ValueError(f"pairwise_dist expects (B1, d) and (B2, d), got {tuple(x.shape)} and {tuple(y.shape)}")
    c, _ = _curv(curv, x)
    tx = (1.0 / c + _sumsq(x)[:, None]).sqrt()  # (B1, 1) or (B1, B2)
    ty = (1.0 / c + _sumsq(y)[None, :]).sqrt()
    arg = c * (tx * ty - x @ y.T)
    arg = arg.clamp_min(1.0 + _eps(arg.dtype))
    return torch.acosh(arg) / c.sqrt()


# ------------------------------------------------------------------ entailment cones
def half_aperture(x, curv, min_radius=0.1):
    """Half-aperture of the entailment cone at ``x``: ``asin(2K / (sqrt(c)|x|))``.

    ``K = min_radius``.  The argument is clamped below ``1 - eps``, so points with
    ``sqrt(c)|x| <= 2K`` (including the origin) get ``~pi/2``.

    Args:
        x: ``(..., d)`` space components.
        curv: ``c > 0``, broadcastable to ``(...)``.
    Returns:
        ``(...)`` angles in ``(0, pi/2)``.
    """
    (x,) = _prep(x)
    c, _ = _curv(curv, x)
    # floor the denominator where the argument is clamped anyway: no 1/tiny^2 in backward
    den = (c * _sumsq(x)).clamp_min(max(2.0 * min_radius, 1e-18) ** 2).sqrt()
    return torch.asin((2.0 * min_radius / den).clamp(max=1.0 - _eps(x.dtype)))


def exterior_angle(x, y, curv):
    """Exterior angle at ``x`` of the geodesic triangle (origin, x, y).

    ``phi = acos((t(y) + c<x,y> t(x)) / (|x| sqrt((c<x,y>)^2 - 1)))`` (DESIGN), i.e.
    pi minus the angle at ``x`` between the geodesics to the origin and to ``y``:
    0 when ``y`` lies straight outward from ``x``, pi when straight back.

    Why the rewrite: the numerator equals ``c (t(x) x.y - t(y)|x|^2)``, written
    through ``delta = y - x``, and ``(c<x,y>)^2 - 1 = q (1 + q/4)`` with ``q`` from
    :func:`_chordal_sq`; both vanish exactly at ``x == y`` instead of being
    differences of large numbers.  Undefined cases (``y == x``, ``x`` at the
    origin) give ``pi/2`` with zero gradient.

    Args:
        x: ``(..., d)`` parent / apex points; y: ``(..., d)`` other points.
        curv: ``c > 0``, broadcastable to the batch shape.
    Returns:
        ``(...)`` angles in ``[0, pi]``.
    """
    x, y = _prep(x, y)
    c, _ = _curv(curv, x)
    tiny = torch.finfo(x.dtype).tiny
    sx = _sumsq(x)
    tx = (1.0 / c + sx).sqrt()
    ty = (1.0 / c + _sumsq(y)).sqrt()
    delta = y - x
    q = _chordal_sq(x, y, c, tx, ty)

    # unit direction of x; exactly 0 (with zero gradient) at the origin
    has_dir = sx > tiny
    xn = torch.where(has_dir, sx, torch.ones_like(sx)).sqrt()
    xhat = torch.where(has_dir.unsqueeze(-1), x / xn.unsqueeze(-1), torch.zeros_like(x))
    # numerator / |x|
    num = c * (tx * (xhat * delta).sum(-1) - xn * (delta * (x + y)).sum(-1) / (tx + ty))

    ok = (q > tiny) & has_dir
    q_safe = torch.where(ok, q, torch.ones_like(q))
    cos = torch.where(ok, num / (q_safe * (1.0 + 0.25 * q_safe)).sqrt(), torch.zeros_like(q))
    e = _eps(cos.dtype)
    return torch.acos(cos.clamp(-1.0 + e, 1.0 - e))


def entailment_loss(parent, child, curv, min_radius=0.1):
    """Entailment-cone loss ``max(0, phi(parent, child) - w(parent))`` (no reduction).

    Args:
        parent, child: ``(..., d)`` space components (broadcastable).
        curv: ``c > 0``, broadcastable to the batch shape.
        min_radius: ``K`` of :func:`half_aperture`.
    Returns:
        ``(...)``, zero when ``child`` lies in the cone of ``parent``.
    """
    phi = exterior_angle(parent, child, curv)
    w = half_aperture(parent, curv, min_radius)
    return torch.relu(phi - w)


# -------------------------------------------------------- Euclidean counterparts
def euclidean_half_aperture(x, min_radius=0.1):
    """Euclidean cone half-aperture ``asin(min(1, K / |x|))`` (``K = min_radius``).

    Args:
        x: ``(..., d)``.
    Returns:
        ``(...)`` angles in ``(0, pi/2)`` (argument clamped below ``1 - eps``).
    """
    (x,) = _prep(x)
    den = _sumsq(x).clamp_min(max(min_radius, 1e-18) ** 2).sqrt()
    return torch.asin((min_radius / den).clamp(max=1.0 - _eps(x.dtype)))


def euclidean_exterior_angle(x, y):
    """Angle between ``x`` and ``y - x`` (Euclidean exterior angle at ``x``).

    ``pi/2`` with zero gradient where undefined (``x == 0`` or ``y == x``).

    Args:
        x, y: ``(..., d)`` (broadcastable).
    Returns:
        ``(...)`` angles in ``[0, pi]``.
    """
    x, y = _prep(x, y)
    tiny = torch.finfo(x.dtype).tiny
    delta = y - x
    sx, sd = _sumsq(x), _sumsq(delta)
    ok = (sx > tiny) & (sd > tiny)
    one = torch.ones_like(sx)
    den = torch.where(ok, sx, one).sqrt() * torch.where(ok, sd, one).sqrt()
    cos = torch.where(ok, (x * delta).sum(-1) / den, torch.zeros_like(sx))
    e = _eps(cos.dtype)
    return torch.acos(cos.clamp(-1.0 + e, 1.0 - e))


def euclidean_entailment_loss(parent, child, min_radius=0.1):
    """Euclidean-cone loss ``max(0, angle(parent, child - parent) - w(parent))``.

    Args:
        parent, child: ``(..., d)`` (broadcastable).
    Returns:
        ``(...)``, no reduction.
    """
    phi = euclidean_exterior_angle(parent, child)
    w = euclidean_half_aperture(parent, min_radius)
    return torch.relu(phi - w)
