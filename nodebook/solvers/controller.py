"""Step-size control for the adaptive methods: error norm, I/PI controller,
initial step (chapter "From ResNets to ODE solvers").

An adaptive step of size h is accepted when its scaled error

    ratio = norm(err / (atol + rtol * max(|y|, |y1|))) <= 1

(:func:`rms_norm` by default), and the next step is ``h * factor(ratio)``,
where the factor grows the step after an easy step and shrinks it after a
hard one (:class:`Controller`). The very first step comes from
:func:`initial_step`. Everything here works on Python floats, except the
norms, which reduce a tensor to one number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from nodebook.solvers.rhs import RHS


# ---------------------------------------------------------------- error norm
def norm_dtype(dtype: torch.dtype) -> torch.dtype:
    """Norms are taken in at least float32 (mixed-precision safe)."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    """Root-mean-square of ``x`` (any shape), computed in >= float32."""
    x = x.to(norm_dtype(x.dtype))
    return torch.linalg.vector_norm(x) / math.sqrt(max(x.numel(), 1))


# ---------------------------------------------------------------- controller
@dataclass
class Controller:
    """PI step-size controller (an I controller with the default pcoeff=0).

    factor = safety * ratio_n^-(icoeff+pcoeff)/k * ratio_(n-1)^(pcoeff/k),
    k = embedded order + 1, clipped to [dfactor, ifactor] after a rejection
    and to [1, ifactor] after an acceptance (Hairer, Norsett & Wanner,
    *Solving ODEs I*, Sec. II.4; Gustafsson 1991 for the PI form).
    ``min_step`` / ``max_step`` bound |h| as torchdiffeq's options of the same
    names do; a step no longer than ``min_step`` is accepted whatever its error.
    """

    k: int
    safety: float
    ifactor: float
    dfactor: float
    pcoeff: float = 0.0
    icoeff: float = 1.0
    min_step: float = 0.0
    max_step: float = math.inf
    prev_ratio: float = 1.0

    def __post_init__(self):
        self.bounded = self.min_step > 0 or self.max_step < math.inf

    def factor(self, ratio: float, accepted: bool) -> float:
        """The factor by which to multiply the step just tried."""
        if ratio == 0.0:
            return self.ifactor
        if not math.isfinite(ratio):
            return self.dfactor
        f = self.safety * ratio ** (-(self.icoeff + self.pcoeff) / self.k)
        if self.pcoeff:
            f *= self.prev_ratio ** (self.pcoeff / self.k)
            if accepted:
                self.prev_ratio = max(ratio, 1e-4)
        return min(self.ifactor, max(1.0 if accepted else self.dfactor, f))

    def clamp(self, h: float) -> float:
        """h with |h| bounded to [min_step, max_step] (sign kept)."""
        if not self.bounded:
            return h
        return math.copysign(min(max(abs(h), self.min_step), self.max_step), h)

    def next_step(self, h: float, ratio: float, accepted: bool) -> float:
        """The step to try after a step of size h with error ``ratio``."""
        return self.clamp(h * self.factor(ratio, accepted))

    def forced(self, h: float) -> bool:
        """Whether a step of size h must be accepted (|h| <= min_step)."""
        return abs(h) <= self.min_step


# ---------------------------------------------------------------- initial step
def initial_step(rhs: RHS, t0: float, y0: torch.Tensor, f0: torch.Tensor, k: int,
                 rtol, atol, norm, direction: float) -> float:
    """Hairer's starting step size (Solving ODEs I, Sec. II.4, p. 169).

    Costs one evaluation of func (at t0 + h0); returns a signed step.
    y0, f0 have the state's shape; rtol, atol are floats or tensors of that shape.
    """
    with torch.no_grad():
        scale = y0.abs().to(norm_dtype(y0.dtype)) * rtol + atol
        d0 = float(norm(y0 / scale))
        d1 = float(norm(f0 / scale))
        h0 = 1e-6 if (d0 < 1e-5 or d1 < 1e-5) else 0.01 * d0 / d1
        f1 = rhs(t0 + direction * h0, y0 + (direction * h0) * f0)
        d2 = float(norm((f1 - f0) / scale)) / h0
        if not math.isfinite(d2):
            h1 = h0
        elif max(d1, d2) <= 1e-15:
            h1 = max(1e-6, h0 * 1e-3)
        else:
            h1 = (0.01 / max(d1, d2)) ** (1.0 / k)
    return direction * min(100 * h0, h1)
