"""Dense output: the solution *between* the ends of an accepted step.

An adaptive solver chooses its steps for accuracy alone; the times the user
asked for are filled in afterwards by a continuous extension of the step,

    y(t0 + theta*h) = y0 + h * sum_i b_i(theta) k_i,      0 <= theta <= 1,

where ``k_i`` are the stage derivatives the step already computed, so dense
output costs no extra function evaluations and requested output times never
shorten a step (chapter "From ResNets to ODE solvers"). Each weight
``b_i(theta)`` is a polynomial without constant term, stored as the row of
coefficients of ``theta, theta**2, ...``; at ``theta = 1`` it must equal the
step's weight ``b_i`` (checked by :class:`~nodebook.solvers.tableaus.ButcherTableau`).
"""

from __future__ import annotations

from fractions import Fraction

import torch

Poly = tuple  # coefficients of theta^0, theta^1, ... (Fractions)


def _mul(p: Poly, q: Poly) -> Poly:
    out = [Fraction(0)] * (len(p) + len(q) - 1)
    for i, pi in enumerate(p):
        for j, qj in enumerate(q):
            out[i + j] += pi * qj
    return tuple(out)


def _add(*polys: Poly) -> Poly:
    n = max(len(p) for p in polys)
    return tuple(sum((p[i] for p in polys if i < len(p)), Fraction(0)) for i in range(n))


def _scale(c, p: Poly) -> Poly:
    return tuple(Fraction(c) * x for x in p)


def _drop_constant(p: Poly) -> tuple:
    assert p[0] == 0, "a dense-output weight must vanish at theta = 0"
    return tuple(p[1:])


THETA = (Fraction(0), Fraction(1))
ONE_MINUS_THETA = (Fraction(1), Fraction(-1))


def hermite_weights(b, first: int, last: int) -> tuple:
    """Cubic Hermite interpolation as dense-output weights.

    Interpolates y0, y1 and the slopes f(y0) = k[first], f(y1) = k[last]
    (the FSAL stage); used by ``bosh3``. Returns a tuple of ``len(b)`` rows of
    coefficients of theta, theta^2, theta^3.
    """
    h01 = (Fraction(0), Fraction(0), Fraction(3), Fraction(-2))   # 3θ² - 2θ³
    h10 = (Fraction(0), Fraction(1), Fraction(-2), Fraction(1))   # θ - 2θ² + θ³
    h11 = (Fraction(0), Fraction(0), Fraction(-1), Fraction(1))   # -θ² + θ³
    rows = []
    for i, bi in enumerate(b):
        p = _scale(bi, h01)
        if i == first:
            p = _add(p, h10)
        if i == last:
            p = _add(p, h11)
        rows.append(_drop_constant(p))
    return tuple(rows)


def dopri5_weights(b, d) -> tuple:
    """Dormand-Prince 4th-order continuous extension as dense-output weights.

    Hairer, Norsett & Wanner, *Solving ODEs I* (2nd ed.), Sec. II.6, and their
    DOPRI5 code (Shampine 1986 for the coefficients ``d``). In that code

        y(θ) = y0 + θ r2 + θ(1-θ) r3 + θ²(1-θ) r4 + θ²(1-θ)² r5,
        r2 = y1 - y0,  r3 = h k1 - r2,  r4 = r2 - h k7 - r3,  r5 = h Σ d_i k_i,

    which, with y1 - y0 = h Σ b_i k_i, gives the polynomial weights below.
    """
    s = len(b)
    t, omt = THETA, ONE_MINUS_THETA
    t_omt = _mul(t, omt)
    t2_omt = _mul(_mul(t, t), omt)
    t2_omt2 = _mul(t2_omt, omt)
    rows = []
    for i in range(s):
        delta1 = Fraction(int(i == 0))
        delta7 = Fraction(int(i == s - 1))
        p = _add(_scale(b[i], t),
                 _scale(delta1 - b[i], t_omt),
                 _scale(2 * b[i] - delta1 - delta7, t2_omt),
                 _scale(d[i], t2_omt2))
        rows.append(_drop_constant(p))
    return tuple(rows)


def weights_at(dense: tuple, theta: float) -> list:
    """Evaluate the dense-output weights b_i(theta) (floats) by Horner's rule."""
    out = []
    for row in dense:
        acc = 0.0
        for c in reversed(row):
            acc = acc * theta + c
        out.append(acc * theta)
    return out


def interpolate(y0: torch.Tensor, Kt: torch.Tensor, h: float, dense: tuple,
                theta: float) -> torch.Tensor:
    """y(t0 + theta*h) from a step's stages.

    y0: (n,) state at the start of the step; Kt: (n, s) stage derivatives as
    columns; returns (n,). One small host-to-device copy (the s weights) and
    one fused multiply-add.
    """
    w = torch.tensor(weights_at(dense, theta), dtype=Kt.dtype, device=Kt.device)
    return torch.addmv(y0, Kt, w, alpha=h)
