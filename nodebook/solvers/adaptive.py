"""Adaptive Runge-Kutta stepping: embedded error estimate, step-size
controller, error norm and initial step (bosh3, dopri5).

One attempted step of size h from (t, y) computes the stages k_i, the new
state ``y1 = y + h sum b_i k_i`` and the error estimate
``err = h sum e_i k_i`` (``e = b - b_low``). The step is accepted when

    ratio = norm(err / (atol + rtol * max(|y|, |y1|))) <= 1

(RMS norm by default), and the next step is ``h * factor(ratio)`` from
:class:`Controller`. Requested output times inside an accepted step come from
the method's dense output (:mod:`nodebook.solvers.interp`), so they never
shorten a step; only the final time clips the last step. Time runs in Python
floats and h may be negative (integration backwards in time).

The state is kept flat, shape (n,), and the stages live in one (s, n) buffer
so that each stage is a single fused ``addmv``; with gradients disabled the
buffer is reused across steps, with gradients enabled each attempted step gets
a fresh one so autograd sees no overwritten values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from nodebook.solvers import errors
from nodebook.solvers.interp import interpolate
from nodebook.solvers.rhs import RHS
from nodebook.solvers.stats import SolveStats
from nodebook.solvers.tableaus import ButcherTableau

_EPS = 2.220446049250313e-16  # float64 machine epsilon: time is a Python float


# ---------------------------------------------------------------- error norm
def _norm_dtype(dtype: torch.dtype) -> torch.dtype:
    """Norms are taken in at least float32 (mixed-precision safe)."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    """Root-mean-square of ``x`` (any shape), computed in >= float32."""
    x = x.to(_norm_dtype(x.dtype))
    return torch.linalg.vector_norm(x) / math.sqrt(max(x.numel(), 1))


# ---------------------------------------------------------------- controller
@dataclass
class Controller:
    """PI step-size controller (an I controller with the default pcoeff=0).

    factor = safety * ratio_n^-(icoeff+pcoeff)/k * ratio_(n-1)^(pcoeff/k),
    k = embedded order + 1, clipped to [dfactor, ifactor] after a rejection
    and to [1, ifactor] after an acceptance (Hairer, Norsett & Wanner,
    *Solving ODEs I*, Sec. II.4; Gustafsson 1991 for the PI form).
    """

    k: int
    safety: float
    ifactor: float
    dfactor: float
    pcoeff: float = 0.0
    icoeff: float = 1.0
    prev_ratio: float = 1.0

    def factor(self, ratio: float, accepted: bool) -> float:
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


# ---------------------------------------------------------------- initial step
def initial_step(rhs: RHS, t0: float, y0: torch.Tensor, f0: torch.Tensor, k: int,
                 rtol: float, atol: float, norm, direction: float) -> float:
    """Hairer's starting step size (Solving ODEs I, Sec. II.4, p. 169).

    Costs one evaluation of func (at t0 + h0); returns a signed step.
    y0, f0 have the state's shape.
    """
    with torch.no_grad():
        scale = y0.abs().to(_norm_dtype(y0.dtype)) * rtol + atol
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


# ---------------------------------------------------------------- stages
@lru_cache(maxsize=64)
def _coefficients(tab: ButcherTableau, dtype: torch.dtype, device: torch.device):
    """Rows of A, b and e as tensors, once per (method, dtype, device)."""
    def T(x):
        return torch.tensor(x, dtype=dtype, device=device)
    rows = [None] + [T(r) for r in tab.a_float[1:]]
    return rows, T(tab.b_float), T(tab.e)


class _BufferStages:
    """Stages in one reused (s, n) buffer: for solves without autograd.

    Row views (state-shaped) receive func's output, column blocks feed the
    fused stage combinations; nothing is allocated per step but the stage
    inputs themselves.
    """

    def __init__(self, tab, n, shape, dtype, device):
        s = tab.stages
        self.K = torch.empty(s, n, dtype=dtype, device=device)
        self.rows = [self.K[i].view(shape) for i in range(s)]
        self.cols = [None] + [self.K[:i].t() for i in range(1, s)]
        self.Kt = self.K.t()
        self.A, self.b, _ = _coefficients(tab, dtype, device)
        self.c, self.fsal, self.shape = tab.c_float, tab.fsal, shape

    def set_first(self, f: torch.Tensor) -> None:
        self.rows[0].copy_(f)

    def step(self, rhs: RHS, t: float, y: torch.Tensor, h: float):
        """Returns (y1 (n,), Kt (n, s)) for the step of size h from (t, y)."""
        yi, c, A, rows, cols, shape = y, self.c, self.A, self.rows, self.cols, self.shape
        for i in range(1, len(c)):
            yi = torch.addmv(y, cols[i], A[i], alpha=h)
            rows[i].copy_(rhs(t + c[i] * h, yi.view(shape)))
        y1 = yi if self.fsal else torch.addmv(y, self.Kt, self.b, alpha=h)
        return y1, self.Kt

    def reuse_last(self) -> None:
        self.rows[0].copy_(self.rows[-1])


class _GraphStages:
    """Stages as a list of fresh tensors: for solves that autograd records
    (backpropagation through the solver), where nothing may be overwritten."""

    def __init__(self, tab, n, shape, dtype, device):
        self.A, self.b, _ = _coefficients(tab, dtype, device)
        self.c, self.fsal, self.shape = tab.c_float, tab.fsal, shape
        self.ks = []

    def set_first(self, f: torch.Tensor) -> None:
        self.ks = [f.reshape(-1)]

    def step(self, rhs: RHS, t: float, y: torch.Tensor, h: float):
        ks, c, A, shape = [self.ks[0]], self.c, self.A, self.shape
        yi = y
        for i in range(1, len(c)):
            yi = torch.addmv(y, torch.stack(ks, 1), A[i], alpha=h)
            ks.append(rhs(t + c[i] * h, yi.view(shape)).reshape(-1))
        Kt = torch.stack(ks, 1)
        y1 = yi if self.fsal else torch.addmv(y, Kt, self.b, alpha=h)
        self.last = ks[-1]
        return y1, Kt

    def reuse_last(self) -> None:
        self.ks = [self.last]


# ---------------------------------------------------------------- the loop
def integrate_adaptive(rhs: RHS, y0: torch.Tensor, times: list, tab: ButcherTableau,
                       rtol: float, atol: float, options: dict,
                       stats: SolveStats) -> list:
    """Solutions at ``times[1:]`` (a list of tensors shaped like y0).

    options: first_step, safety, ifactor, dfactor, pcoeff, icoeff, norm,
    step_t (floats), max_num_steps (all filled in by :func:`nodebook.solvers.odeint`).
    """
    shape, dtype, device = y0.shape, y0.dtype, y0.device
    n = y0.numel()
    s = tab.stages
    c = tab.c_float
    dense = tab.dense_float
    fsal = tab.fsal
    e = _coefficients(tab, dtype, device)[2]
    norm = options["norm"]
    inv_sqrt_n = 1.0 / math.sqrt(max(n, 1))
    ndtype = _norm_dtype(dtype)
    max_num_steps = options["max_num_steps"]
    k = tab.embedded_order + 1
    ctrl = Controller(k=k, safety=options["safety"], ifactor=options["ifactor"],
                      dfactor=options["dfactor"], pcoeff=options["pcoeff"],
                      icoeff=options["icoeff"])

    t0, t_end = times[0], times[-1]
    direction = 1.0 if t_end > t0 else -1.0
    f0 = rhs.checked(t0, y0)
    nfe = 1
    try:
        if options["first_step"] is None:
            h = initial_step(rhs, t0, y0, f0, k, rtol, atol,
                             norm if norm is not None else rms_norm, direction)
            nfe += 1
        else:
            h = direction * abs(float(options["first_step"]))

        Stages = _GraphStages if torch.is_grad_enabled() else _BufferStages
        ws = Stages(tab, n, shape, dtype, device)
        ws.set_first(f0)
        t = t0
        stats.step_times.append(t0)
        y = y0.reshape(-1)
        with torch.no_grad():
            y_abs = y.abs()
        out = []
        i_out = 1
        n_times = len(times)
        last_nonfinite = False
        # step_t: times the steps must land on (e.g. known kinks of func)
        stops = sorted((x for x in options["step_t"] if (x - t0) * direction > 0
                        and (t_end - x) * direction > 0), key=lambda x: x * direction)
        stops.append(t_end)
        i_stop = 0
        while i_out < n_times:
            if stats.n_accepted + stats.n_rejected >= max_num_steps:
                raise errors.max_steps_exceeded(max_num_steps, t)
            h_min = 4.0 * _EPS * max(abs(t), abs(t_end))
            if abs(h) < h_min:
                if last_nonfinite:
                    raise errors.non_finite_step(t)
                raise errors.step_size_underflow(t, h)
            # clip the step to the next stop (Hairer's 1% rule)
            stop = stops[i_stop]
            if (t + 1.01 * h - stop) * direction > 0:
                h = stop - t
                t_new = stop
            else:
                t_new = t + h

            # ---- stages
            y1, Kt = ws.step(rhs, t, y, h)
            nfe += s - 1

            # ---- error ratio: one reduction, one host sync
            with torch.no_grad():
                err = torch.mv(Kt, e)
                y1_abs = y1.abs()
                scale = torch.maximum(y_abs, y1_abs)
                if ndtype != dtype:
                    err, scale = err.to(ndtype), scale.to(ndtype)
                scale.mul_(rtol).add_(atol)
                err.div_(scale)
                if norm is None:
                    ratio = float(torch.linalg.vector_norm(err)) * abs(h) * inv_sqrt_n
                else:
                    ratio = float(norm(err.mul_(abs(h)).view(shape)))

            if ratio <= 1.0:  # ---- accept (False for NaN)
                stats.n_accepted += 1
                stats.step_times.append(t_new)
                last_nonfinite = False
                while i_out < n_times and (times[i_out] - t_new) * direction <= 0:
                    t_req = times[i_out]
                    if t_req == t_new:
                        out.append(y1.view(shape))
                    else:
                        theta = (t_req - t) / h
                        out.append(interpolate(y, Kt, h, dense, theta).view(shape))
                    i_out += 1
                h_next = h * ctrl.factor(ratio, True)
                t, y, y_abs = t_new, y1, y1_abs
                if t == stop and i_stop < len(stops) - 1:
                    i_stop += 1
                if i_out < n_times:
                    if fsal:
                        ws.reuse_last()
                    else:
                        ws.set_first(rhs(t, y.view(shape)))
                        nfe += 1
                h = h_next
            else:  # ---- reject
                stats.n_rejected += 1
                last_nonfinite = not math.isfinite(ratio)
                h = h * ctrl.factor(ratio, False)
    finally:
        stats.nfe += nfe
    return out
