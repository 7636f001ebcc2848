"""Hyperbolic geometry (DESIGN.md sections 2-3); imports only ``hyptree.utils``.

* :mod:`~hyptree.geometry.lorentz` - Lorentz-model operations on space components;
* :mod:`~hyptree.geometry.curvature` - the manifold distance, the intermediate-curvature
  solver (golden section + implicit gradient) and the radius rule;
* :mod:`~hyptree.geometry.curvatures` - the learnable :class:`Curvatures` of the four modes.

Usage: ``from hyptree.geometry import lorentz, Curvatures, intermediate_curvature``.
"""

from hyptree.geometry import lorentz
from hyptree.geometry.curvature import (
    intermediate_curvature,
    manifold_distance,
    path_radii,
    radii_from_ratio,
)
from hyptree.geometry.curvatures import CURVATURE_MODES, Curvatures, CurvatureState

__all__ = [
    "lorentz",
    "manifold_distance",
    "intermediate_curvature",
    "path_radii",
    "radii_from_ratio",
    "CURVATURE_MODES",
    "CurvatureState",
    "Curvatures",
]
