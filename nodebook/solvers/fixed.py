"""Fixed-step Runge-Kutta stepping (euler, midpoint, rk4).

Without ``options["step_size"]`` each interval ``[t_i, t_(i+1)]`` of the
requested times is one step. With ``step_size=h`` each interval is split into
``ceil(|t_(i+1) - t_i| / h)`` equal steps, so the solver steps *exactly* to
every requested time (no interpolation) and no step is longer than h; when h
divides the intervals, the steps are exactly h (chapter "Solvers").
"""

from __future__ import annotations

import math

import torch

from nodebook.solvers import errors
from nodebook.solvers.rhs import RHS
from nodebook.solvers.stats import SolveStats
from nodebook.solvers.tableaus import ButcherTableau


def rk_step(rhs: RHS, tab: ButcherTableau, t: float, y: torch.Tensor, dt: float,
            f0: torch.Tensor | None = None) -> torch.Tensor:
    """One explicit RK step of size dt from (t, y); y of any shape, same out.

    Zero coefficients of the tableau are skipped, so rk4 costs 4 evaluations
    and 7 tensor additions. ``f0`` is func(t, y) when already known.
    """
    a, b, c = tab.a_float, tab.b_float, tab.c_float
    ks = [rhs(t, y) if f0 is None else f0]
    for i in range(1, tab.stages):
        yi = y
        for j, aij in enumerate(a[i]):
            if aij:
                yi = torch.add(yi, ks[j], alpha=aij * dt)
        ks.append(rhs(t + c[i] * dt, yi))
    y1 = y
    for bj, kj in zip(b, ks):
        if bj:
            y1 = torch.add(y1, kj, alpha=bj * dt)
    return y1


def num_substeps(span: float, step_size: float | None) -> int:
    """Number of equal steps covering an interval of length |span|."""
    if step_size is None:
        return 1
    return max(1, math.ceil(abs(span) / step_size - 1e-9))


def integrate_fixed(rhs: RHS, y0: torch.Tensor, times: list, tab: ButcherTableau,
                    options: dict, stats: SolveStats) -> list:
    """Solutions at ``times[1:]`` (a list of tensors shaped like y0)."""
    step_size = options.get("step_size")
    max_num_steps = options["max_num_steps"]
    counts = [num_substeps(t1 - t0, step_size) for t0, t1 in zip(times[:-1], times[1:])]
    total = sum(counts)
    if total > max_num_steps:
        raise errors.max_steps_exceeded(max_num_steps, times[0])
    out = []
    y = y0
    f0 = rhs.checked(times[0], y0)
    nfe = 1
    stats.step_times.append(times[0])
    try:
        for (t0, t1), n in zip(zip(times[:-1], times[1:]), counts):
            dt = (t1 - t0) / n
            for k in range(n):
                y = rk_step(rhs, tab, t0 + k * dt, y, dt, f0)
                nfe += tab.stages if f0 is None else tab.stages - 1
                f0 = None
                stats.n_accepted += 1
                stats.step_times.append(t0 + (k + 1) * dt)
            if not bool(torch.isfinite(y).all()):
                raise errors.non_finite_state(t1)
            out.append(y)
    finally:
        stats.nfe += nfe
    return out
