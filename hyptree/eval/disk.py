"""Putting a node tree on the Poincare disk: depths, a 2-D projection, the disk map, geodesics.

Pure NumPy (no plotting), so the geometry of the pictures is testable on its own.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["node_depths", "project_2d", "to_poincare_disk", "geodesic"]


def node_depths(parent: np.ndarray) -> np.ndarray:
    """Depth of every node (root 0) from a parent array (-1 for the root)."""
    parent = np.asarray(parent, dtype=int)
    n = len(parent)
    depth = np.full(n, -1, dtype=int)
    for i in range(n):
        path, j = [], i
        while j >= 0 and depth[j] < 0:
            if j in path or len(path) > n:
                raise ValueError(f"parent array has a cycle through node {j}")
            if not -1 <= parent[j] < n:
                raise ValueError(f"node {j} has parent {parent[j]}, outside 0..{n - 1}")
            path.append(j)
            j = parent[j]
        base = -1 if j < 0 else depth[j]
        for k, node in enumerate(reversed(path)):
            depth[node] = base + 1 + k
    return depth


def project_2d(features: np.ndarray, scale: float = 10.0) -> np.ndarray:
    """``(N, D)`` features -> ``(N, 2)`` tangent vectors (steps 1-2 of the module doc).

    Rows of NaN stay NaN. Zero rows (the root, which has no prompt and is never embedded)
    sit at the origin, the apex of every entailment cone, and stay out of the PCA. The
    farthest node gets norm ``scale``.
    """
    f = np.asarray(features, dtype=np.float64)
    out = np.full((len(f), 2), np.nan)
    finite = np.isfinite(f).all(axis=1)
    zero = finite & (np.abs(np.where(finite[:, None], f, 0.0)).sum(axis=1) == 0)
    out[zero] = 0.0
    ok = finite & ~zero
    if ok.sum() == 0:
        return out
    u = f[ok] / np.maximum(np.linalg.norm(f[ok], axis=1, keepdims=True), 1e-12)
    x = u - u.mean(axis=0)
    if len(x) >= 2:
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        axes = vt[:2]
        if len(axes) < 2:
            axes = np.vstack([axes, np.zeros_like(axes)])
        y = x @ axes.T
    else:
        y = np.zeros((len(x), 2))
    r = np.linalg.norm(y, axis=1).max()
    out[ok] = y * (scale / r) if r > 0 else y
    return out


def to_poincare_disk(v: np.ndarray, curv: float) -> np.ndarray:
    """Tangent vectors at the origin -> unit Poincaré disk, through the Lorentz model (step 3)."""
    v = np.asarray(v, dtype=np.float64)
    c = float(curv)
    if not c > 0:
        raise ValueError(f"curvature must be > 0, got {curv}")
    sc = math.sqrt(c)
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    z = np.minimum(sc * norm, 300.0)  # sinh(z)^2 stays finite in float64; tanh(150) == 1
    factor = np.where(z > 1e-8, np.sinh(z) / np.maximum(z, 1e-300), 1.0)
    x = factor * v  # space part on the hyperboloid of curvature -c
    t = np.sqrt(1.0 / c + np.sum(x * x, axis=-1, keepdims=True))
    p = x / (1.0 + sc * t)  # Poincaré ball of radius 1/sqrt(c)
    return sc * p


def geodesic(a: complex, b: complex, num: int = 16) -> np.ndarray:
    """Points of the unit-disk geodesic from ``a`` to ``b`` (Möbius transport), shape (num, 2)."""
    w = (b - a) / (1 - np.conj(a) * b)
    r = abs(w)
    if r < 1e-12:
        pts = np.full(num, a, dtype=complex)
    else:
        s = np.tanh(np.linspace(0, 1, num) * np.arctanh(min(r, 1 - 1e-12))) * (w / r)
        pts = (s + a) / (1 + np.conj(a) * s)
    return np.stack([pts.real, pts.imag], axis=1)
