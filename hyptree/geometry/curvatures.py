"""The learnable curvatures of DESIGN.md section 3's four modes.

:data:`CURVATURE_MODES` is the one list of modes (config ``CURVATURE.MODE`` checks
against it); :class:`Curvatures` holds the ``log c`` parameters and returns a
:class:`CurvatureState` per step, solving the intermediate curvature with
:func:`hyptree.geometry.curvature.intermediate_curvature` in the ``intermediate`` mode.
"""

import math
from typing import NamedTuple

import torch
from torch import nn

from hyptree.geometry.curvature import intermediate_curvature, path_radii, radii_from_ratio

__all__ = ["CURVATURE_MODES", "CurvatureState", "Curvatures"]

#: The curvature modes, in DESIGN's table order (``intermediate`` is the default).
CURVATURE_MODES = ("euclidean", "shared", "separate", "intermediate")


class CurvatureState(NamedTuple):
    """Curvatures used in one step: 0-d tensors (``None`` in Euclidean mode)."""

    text: torch.Tensor | None
    image: torch.Tensor | None
    inter: torch.Tensor | None
    euclidean: bool


class Curvatures(nn.Module):
    """Learnable curvatures of the four modes of DESIGN.md section 3.

    ========== ======== ======== =========================================
    mode       text     image    intermediate
    ========== ======== ======== =========================================
    euclidean  None     None     None (Euclidean cones)
    shared     c        c        c (one parameter)
    separate   c_t      c_i      c_m (third parameter, no search)
    intermediate c_t    c_i      c_m* solved by :func:`intermediate_curvature`
    ========== ======== ======== =========================================

    Parameters are ``log c`` (0-d, default dtype), initialised at ``log c0`` and kept
    in ``[log(c0/10), log(10 c0)]``: clamped at use (so the returned values are
    always in range) and clamped in place by :meth:`clamp_`, which :meth:`forward`
    calls first (so a parameter an optimizer step pushed out of range is pulled back
    at the next forward; call it after ``optimizer.step()`` to keep the stored value
    in range too).  ``learn=False`` freezes them (``requires_grad=False``; they stay
    parameters so checkpoints are interchangeable).

    Args:
        mode: one of :attr:`MODES`.
        c0: initial curvature, > 0.
        learn: train the curvatures.
        kappa: radius factor for the ``intermediate`` mode (see :func:`path_radii`).
        c_text_init, c_image_init: initial ``c_t`` and ``c_i`` (absolute values inside the
            clamp range; ``None``: ``c0``). The official runs mostly start one of them at
            ``c0 / 2``. Used by the ``separate`` and ``intermediate`` modes; ``shared`` and the
            ``separate`` mode's ``c_m`` start at ``c0``.
    """

    MODES = CURVATURE_MODES
    _PARAMS = {
        "euclidean": (),
        "shared": ("log_c",),
        "separate": ("log_c_text", "log_c_image", "log_c_inter"),
        "intermediate": ("log_c_text", "log_c_image"),
    }

    def __init__(self, mode="intermediate", c0=0.05, learn=True, kappa=3.0, c_text_init=None, c_image_init=None):
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"unknown curvature mode {mode!r}; valid modes: {', '.join(self.MODES)}")
        if not (isinstance(c0, (int, float)) and c0 > 0):
            raise ValueError(f"c0 must be a positive number, got {c0!r}")
        if not kappa > 0:
            raise ValueError(f"kappa must be > 0, got {kappa!r}")
        self._mode = mode
        self.c0 = float(c0)
        self.learn = bool(learn)
        self.kappa = float(kappa)
        self.log_c_min = math.log(self.c0 / 10.0)
        self.log_c_max = math.log(self.c0 * 10.0)
        inits = {"log_c_text": c_text_init, "log_c_image": c_image_init}
        for name in self._PARAMS[mode]:
            init = inits.get(name)
            init = self.c0 if init is None else float(init)
            if not self.c0 / 10.0 <= init <= self.c0 * 10.0:
                raise ValueError(
                    f"initial curvature {init:g} for {name} is outside the clamp range "
                    f"[{self.c0 / 10:g}, {self.c0 * 10:g}] = [c0/10, 10 c0]"
                )
            setattr(self, name, nn.Parameter(torch.tensor(math.log(init)), requires_grad=self.learn))

    @property
    def mode(self):
        return self._mode

    @property
    def euclidean(self):
        return self._mode == "euclidean"

    @torch.no_grad()
    def clamp_(self):
        """Clamp the stored ``log c`` into range, in place.

        Works on ``.data`` so the parameters' autograd version counters do not move
        (a graph from an earlier forward stays valid for backward).
        """
        for p in self.parameters():
            p.data.clamp_(self.log_c_min, self.log_c_max)
        return self

    def _c(self, name):
        return getattr(self, name).clamp(self.log_c_min, self.log_c_max).exp()

    def forward(self, text_feats=None, image_feats=None):
        """Curvatures for this step.

        Args:
            text_feats: ``(N_t, D)`` valid tangent-space text path features.
            image_feats: ``(N_i, D)`` valid tangent-space image path features.
                Both are used only by the ``intermediate`` mode (for the radii); if
                both are omitted there, the radii use ``ratio = 1``.
        Returns:
            :class:`CurvatureState` of 0-d tensors.
        """
        self.clamp_()
        if self._mode == "euclidean":
            return CurvatureState(None, None, None, True)
        if self._mode == "shared":
            c = self._c("log_c")
            return CurvatureState(c, c, c, False)
        c_t, c_i = self._c("log_c_text"), self._c("log_c_image")
        if self._mode == "separate":
            return CurvatureState(c_t, c_i, self._c("log_c_inter"), False)
        if (text_feats is None) != (image_feats is None):
            raise ValueError("Curvatures(mode='intermediate') needs both text_feats and image_feats, or neither")
        if text_feats is None:
            r_t, r_i = radii_from_ratio(1.0, c_t, c_i, self.kappa)
        else:
            r_t, r_i = path_radii(image_feats, text_feats, c_t, c_i, self.kappa)
        return CurvatureState(c_t, c_i, intermediate_curvature(c_t, c_i, r_t, r_i), False)

    def extra_repr(self):
        return (
            f"mode={self._mode}, c0={self.c0:g}, range=[{self.c0 / 10:g}, {self.c0 * 10:g}], "
            f"learn={self.learn}, kappa={self.kappa:g}"
        )
