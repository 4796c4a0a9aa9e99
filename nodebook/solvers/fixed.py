"""Fixed-step Runge-Kutta stepping (euler, midpoint, rk4, rk4_38), on
torchdiffeq's time grid (chapter "From ResNets to ODE solvers").

The solver steps along a time grid and reads the requested times off it:

* without options, the grid is ``t`` itself: one step per interval, so the
  outputs are exactly the steps' ends (a ResNet is ``euler`` on
  ``t = 0, 1, 2, ...``);
* with ``step_size=h`` the grid is ``t[0], t[0] + h, t[0] + 2h, ...`` with
  its last point moved onto ``t[-1]``, built exactly as torchdiffeq 0.2.5
  builds it (in ``t``'s dtype); a requested time between two grid points is
  interpolated, linearly (``interp="linear"``, the default) or by a cubic
  Hermite polynomial through both ends and their slopes (``interp="cubic"``,
  one extra evaluation of func per step holding an output);
* ``grid_constructor(func, y0, t)`` may return any grid from ``t[0]`` to
  ``t[-1]``.

``perturb=True`` evaluates func at the first stage just after the step's
start and at stages with c = 1 just before its end (torchdiffeq's option of
the same name: steps that start or end on a discontinuity of func in time
see the one-sided values). The same call thus gives torchdiffeq's numbers,
to rounding.
"""

from __future__ import annotations

import math

import torch

from nodebook.solvers import errors
from nodebook.solvers.method import IVP, MAX_NUM_STEPS, Method, Step, positive
from nodebook.solvers.rhs import RHS
from nodebook.solvers.stats import SolveStats
from nodebook.solvers.tableaus import ButcherTableau

__all__ = ["FixedRK", "rk_step", "time_grid", "GridOutputs", "integrate_fixed", "replay_fixed"]


# ---------------------------------------------------------------- the registry entry
class FixedRK(Method):
    """An explicit Runge-Kutta method stepping on a fixed grid, given by its tableau.

    Options (torchdiffeq's names and defaults): ``step_size``,
    ``grid_constructor``, ``interp`` ("linear" or "cubic"), ``perturb``;
    nodebook's ``max_num_steps``. ``norm`` is accepted and ignored, as in
    torchdiffeq; so are rtol and atol.
    """

    adaptive = False
    checkpointable = True
    defaults = {"step_size": None, "grid_constructor": None, "interp": "linear", "perturb": False,
                "max_num_steps": MAX_NUM_STEPS}
    ignored = frozenset({"norm"})

    def __init__(self, tableau: ButcherTableau):
        self.tableau = tableau
        self.name = tableau.name
        self.order = tableau.order

    def check_options(self, opts: dict, y0: torch.Tensor) -> dict:
        opts["step_size"] = positive("step_size", opts["step_size"], allow_none=True)
        if opts["grid_constructor"] is not None:
            if not callable(opts["grid_constructor"]):
                raise errors.bad_option("grid_constructor", opts["grid_constructor"], "a callable or None")
            if opts["step_size"] is not None:
                raise errors.exclusive_grid_options()
        if opts["interp"] not in ("linear", "cubic"):
            raise errors.bad_option("interp", opts["interp"], "'linear' or 'cubic'")
        opts["perturb"] = bool(opts["perturb"])
        return opts

    def integrate(self, ivp: IVP, options: dict, stats: SolveStats, record=None) -> list:
        grid, dts = time_grid(ivp, options)
        return integrate_fixed(ivp, self.tableau, grid, dts, options, stats, record)

    def replay(self, ivp: IVP, options: dict, step: Step, prev: Step | None, stats: SolveStats) -> tuple:
        return replay_fixed(ivp, self.tableau, step, options, stats)


# ---------------------------------------------------------------- the grid
def _grid_from_step_size(t: torch.Tensor, step_size: float, max_num_steps: int) -> torch.Tensor:
    """torchdiffeq's grid: ``t[0] + k * step_size`` (in t's dtype), last point t[-1].

    Built on increasing times (decreasing ``t`` is negated first and the grid
    negated back), as torchdiffeq does, so both give the same grid.
    """
    reverse = bool(t[0] > t[-1])
    s = -t if reverse else t
    niters = torch.ceil((s[-1] - s[0]) / step_size + 1).item()
    if niters - 1 > max_num_steps:  # before building a huge grid
        raise errors.max_steps_exceeded(max_num_steps, float(t[0]))
    grid = torch.arange(0, niters, dtype=t.dtype, device=t.device) * step_size + s[0]
    grid[-1] = s[-1]
    return -grid if reverse else grid


def time_grid(ivp: IVP, options: dict) -> tuple[list, list]:
    """The grid points and the steps between them, as Python floats.

    The steps are differences in the grid's dtype, as torchdiffeq takes them.
    """
    t = ivp.t.to(ivp.y0.device)
    if options["grid_constructor"] is not None:
        grid = options["grid_constructor"](ivp.rhs.func, ivp.y0, t)
        if not isinstance(grid, torch.Tensor) or grid.dim() != 1 or grid.numel() < 2:
            raise errors.bad_grid("it must be a 1-D tensor of at least 2 times")
        if grid[0] != t[0] or grid[-1] != t[-1]:
            raise errors.bad_grid(f"it must start at t[0] = {ivp.times[0]} and end at t[-1] = {ivp.times[-1]}")
        grid = grid.detach()
    elif options["step_size"] is not None:
        grid = _grid_from_step_size(t, options["step_size"], options["max_num_steps"])
    else:
        grid = t
    if grid.numel() - 1 > options["max_num_steps"]:
        raise errors.max_steps_exceeded(options["max_num_steps"], ivp.times[0])
    return grid.tolist(), (grid[1:] - grid[:-1]).tolist()


# ---------------------------------------------------------------- one step
def rk_step(rhs: RHS, tab: ButcherTableau, t: float, y: torch.Tensor, dt: float,
            f0: torch.Tensor | None = None, t1: float | None = None,
            perturb: bool = False) -> torch.Tensor:
    """One explicit RK step of size dt from (t, y); y of any shape, same out.

    Zero coefficients of the tableau are skipped, so rk4 costs 4 evaluations
    and 7 tensor additions. ``f0`` is func(t, y) when already known; ``t1``
    the step's end as the grid has it (stages with c = 1 are evaluated
    there; default t + dt); ``perturb`` nudges the first stage's time
    forward and those stages' time backward (see :meth:`RHS.nudged`).
    """
    a, b, c = tab.a_float, tab.b_float, tab.c_float
    direction = math.copysign(1.0, dt)
    if f0 is None:
        f0 = rhs.nudged(t, y, direction) if perturb else rhs(t, y)
    ks = [f0]
    for i in range(1, tab.stages):
        yi = y
        for j, aij in enumerate(a[i]):
            if aij:
                yi = torch.add(yi, ks[j], alpha=aij * dt)
        if c[i] == 1.0:
            end = t + dt if t1 is None else t1
            ks.append(rhs.nudged(end, yi, -direction) if perturb else rhs(end, yi))
        else:
            ks.append(rhs(t + c[i] * dt, yi))
    y1 = y
    for bj, kj in zip(b, ks):
        if bj:
            y1 = torch.add(y1, kj, alpha=bj * dt)
    return y1


# ---------------------------------------------------------------- reading outputs off the grid
def _fraction(t: float, t0: float, t1: float, dtype: torch.dtype) -> float:
    """(t - t0) / (t1 - t0), computed in the grid's dtype as torchdiffeq does."""
    if dtype == torch.float64:
        return (t - t0) / (t1 - t0)
    t, t0, t1 = (torch.tensor(x, dtype=dtype) for x in (t, t0, t1))
    return float((t - t0) / (t1 - t0))


def linear_interp(t: float, t0: float, t1: float, y0: torch.Tensor, y1: torch.Tensor,
                  dtype: torch.dtype) -> torch.Tensor:
    """y at t on the chord from (t0, y0) to (t1, y1) (torchdiffeq's ``_linear_interp``)."""
    if t == t0:
        return y0
    if t == t1:
        return y1
    return y0 + _fraction(t, t0, t1, dtype) * (y1 - y0)


def cubic_hermite_interp(t: float, t0: float, t1: float, y0, f0, y1, f1, dtype: torch.dtype):
    """y at t from the cubic through (t0, y0) and (t1, y1) with slopes f0, f1
    (torchdiffeq's ``_cubic_hermite_interp``)."""
    tt, tt0, tt1 = (torch.tensor(x, dtype=dtype) for x in (t, t0, t1))
    h = (tt - tt0) / (tt1 - tt0)
    dt = tt1 - tt0
    h00 = float((1 + 2 * h) * (1 - h) * (1 - h))
    h10dt = float(h * (1 - h) * (1 - h) * dt)
    h01 = float(h * h * (3 - 2 * h))
    h11dt = float(h * h * (h - 1) * dt)
    return h00 * y0 + h10dt * f0 + h01 * y1 + h11dt * f1


class GridOutputs:
    """The requested times, read off each grid step as it comes (linearly or
    by the cubic Hermite polynomial)."""

    def __init__(self, ivp: IVP, options: dict):
        self.rhs, self.times, self.direction = ivp.rhs, ivp.times, ivp.direction
        self.cubic, self.dtype = options["interp"] == "cubic", ivp.t.dtype
        self.i = 1          # index of the next requested time
        self.values = []
        self.nfe = 0        # the cubic's evaluations of func at the steps' ends

    def due(self, t1: float) -> bool:
        """Whether the step ending at t1 reaches the next requested time."""
        return self.i < len(self.times) and (t1 - self.times[self.i]) * self.direction >= 0

    def fill(self, t0: float, t1: float, y: torch.Tensor, f0: torch.Tensor, y1: torch.Tensor) -> None:
        """Every requested time in the step [t0, t1] (call it when :meth:`due`)."""
        times, i, direction, dtype = self.times, self.i, self.direction, self.dtype
        if not bool(torch.isfinite(y1).all()):
            raise errors.non_finite_state(times[i])
        if self.cubic:
            f1 = self.rhs(t1, y1)
            self.nfe += 1
        while i < len(times) and (t1 - times[i]) * direction >= 0:
            if self.cubic:
                self.values.append(cubic_hermite_interp(times[i], t0, t1, y, f0, y1, f1, dtype))
            else:
                self.values.append(linear_interp(times[i], t0, t1, y, y1, dtype))
            i += 1
        self.i = i


# ---------------------------------------------------------------- the loop
def integrate_fixed(ivp: IVP, tab: ButcherTableau, grid: list, dts: list, options: dict,
                    stats: SolveStats, record=None) -> list:
    """Solutions at ``ivp.times[1:]`` (a list of tensors shaped like y0), stepping along ``grid``.

    record: None, or a callable receiving a :class:`~nodebook.solvers.method.Step`
    per step (for :func:`replay_fixed`).
    """
    rhs, direction, perturb = ivp.rhs, ivp.direction, options["perturb"]
    outputs = GridOutputs(ivp, options)
    y = ivp.y0
    f0 = rhs.checked(grid[0], y, direction if perturb else None)
    nfe = 1
    stats.step_times.append(grid[0])
    try:
        for t0, t1, dt in zip(grid[:-1], grid[1:], dts):
            if f0 is None:  # (the first step's was computed, and checked, above)
                f0 = rhs.nudged(t0, y, direction) if perturb else rhs(t0, y)
                nfe += 1
            y1 = rk_step(rhs, tab, t0, y, dt, f0, t1, perturb)
            nfe += tab.stages - 1
            stats.n_accepted += 1
            stats.step_times.append(t1)
            if record is not None:
                record(Step(t0, t1, dt, y, outputs.i))
            if outputs.due(t1):
                outputs.fill(t0, t1, y, f0, y1)
            y, f0 = y1, None
    finally:
        stats.nfe += nfe + outputs.nfe
    return outputs.values


def replay_fixed(ivp: IVP, tab: ButcherTableau, step: Step, options: dict, stats: SolveStats) -> tuple:
    """One recorded step of :func:`integrate_fixed` again, with the same
    operations: ``(y1, outputs filled from the step)`` (see :meth:`Method.replay`)."""
    rhs, y, perturb = ivp.rhs, step.y, options["perturb"]
    f0 = rhs.nudged(step.t0, y, ivp.direction) if perturb else rhs(step.t0, y)
    y1 = rk_step(rhs, tab, step.t0, y, step.h, f0, step.t1, perturb)
    outputs = GridOutputs(ivp, options)
    outputs.i = step.first
    if outputs.due(step.t1):
        outputs.fill(step.t0, step.t1, y, f0, y1)
    stats.nfe += tab.stages + outputs.nfe
    return y1, outputs.values

