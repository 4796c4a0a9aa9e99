"""``odeint``: the public entry point, the method registry and input checks.

Same conventions as torchdiffeq (chapter "Solvers"): ``func(t, y)`` returns
dy/dt, ``y0`` is a floating tensor of any shape S, ``t`` a 1-D strictly
monotonic tensor of output times, and the result has shape ``(len(t), *S)``
with ``result[0] == y0``. The solve is built from ordinary tensor operations,
so gradients reach ``y0`` and the parameters of ``func`` by backpropagation
through the solver (Sec. 2 of the paper calls this the memory-hungry
alternative to the adjoint). Output times are treated as constants here; for
dL/dt use :func:`nodebook.odeint_adjoint`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from nodebook.solvers import errors, tableaus
from nodebook.solvers.adaptive import integrate_adaptive
from nodebook.solvers.fixed import integrate_fixed
from nodebook.solvers.rhs import RHS
from nodebook.solvers.stats import start_solve
from nodebook.solvers.tableaus import ButcherTableau

_MAX_NUM_STEPS = 2 ** 31 - 1

FIXED_OPTIONS = {"step_size": None, "max_num_steps": _MAX_NUM_STEPS}
ADAPTIVE_OPTIONS = {"first_step": None, "safety": 0.9, "ifactor": 10.0, "dfactor": 0.2,
                    "pcoeff": 0.0, "icoeff": 1.0, "norm": None, "step_t": (),
                    "max_num_steps": _MAX_NUM_STEPS}


@dataclass(frozen=True)
class Solver:
    """A registry entry: a tableau, its stepping loop and its options (with defaults)."""

    tableau: ButcherTableau
    integrate: Callable
    options: dict


SOLVERS = {
    "euler": Solver(tableaus.EULER, integrate_fixed, FIXED_OPTIONS),
    "midpoint": Solver(tableaus.MIDPOINT, integrate_fixed, FIXED_OPTIONS),
    "rk4": Solver(tableaus.RK4, integrate_fixed, FIXED_OPTIONS),
    "bosh3": Solver(tableaus.BOSH3, integrate_adaptive, ADAPTIVE_OPTIONS),
    "dopri5": Solver(tableaus.DOPRI5, integrate_adaptive, ADAPTIVE_OPTIONS),
}


# ---------------------------------------------------------------- validation
def _check_tolerance(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError, RuntimeError):
        raise errors.bad_tolerance(name, value) from None
    if not (v > 0 and math.isfinite(v)):
        raise errors.bad_tolerance(name, value)
    return v


def _positive(name, value, allow_none=False):
    if value is None and allow_none:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError, RuntimeError):
        raise errors.bad_option(name, value, "a positive finite number") from None
    if not (v > 0 and math.isfinite(v)):
        raise errors.bad_option(name, value, "a positive finite number")
    return v


def check_inputs(func, y0, t, rtol, atol, method, options):
    """Validate everything; returns (solver, times as floats, rtol, atol, options)."""
    if not isinstance(y0, torch.Tensor):
        raise errors.y0_not_tensor(y0)
    if y0.is_complex() or not y0.is_floating_point():
        raise errors.bad_y0_dtype(y0.dtype)
    if not isinstance(t, torch.Tensor):
        raise errors.t_not_tensor(t)
    if t.is_complex() or not t.is_floating_point():
        raise errors.bad_t_dtype(t.dtype)
    if t.dim() != 1:
        raise errors.t_not_1d(t.shape)
    if t.numel() < 2:
        raise errors.t_too_short(t.numel())
    times = t.detach().tolist()
    if not all(map(math.isfinite, times)):
        raise errors.t_not_finite()
    diffs = [b - a for a, b in zip(times[:-1], times[1:])]
    if not (all(d > 0 for d in diffs) or all(d < 0 for d in diffs)):
        raise errors.t_not_monotonic()
    rtol = _check_tolerance("rtol", rtol)
    atol = _check_tolerance("atol", atol)
    if method not in SOLVERS:
        raise errors.unknown_method(method, SOLVERS)
    solver = SOLVERS[method]
    opts = dict(solver.options)
    if options:
        unknown = set(options) - set(opts)
        if unknown:
            raise errors.unknown_options(method, unknown, opts)
        opts.update(options)
    if "step_size" in opts:
        opts["step_size"] = _positive("step_size", opts["step_size"], allow_none=True)
    if "first_step" in opts:
        opts["first_step"] = _positive("first_step", opts["first_step"], allow_none=True)
    m = opts["max_num_steps"]
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise errors.bad_option("max_num_steps", m, "a positive integer")
    if "safety" in opts:
        for name in ("safety", "ifactor", "dfactor"):
            opts[name] = _positive(name, opts[name])
        if opts["ifactor"] < 1 or opts["dfactor"] > 1 or opts["safety"] > 1:
            raise errors.bad_option("safety/ifactor/dfactor", (opts["safety"], opts["ifactor"], opts["dfactor"]),
                                    "safety <= 1, ifactor >= 1, dfactor <= 1")
        step_t = opts["step_t"]
        try:
            step_t = (step_t.detach().reshape(-1).tolist() if isinstance(step_t, torch.Tensor)
                      else [float(x) for x in step_t])
        except (TypeError, ValueError):
            raise errors.bad_option("step_t", opts["step_t"], "a sequence or 1-D tensor of finite times") from None
        if not all(isinstance(x, (int, float)) and math.isfinite(x) for x in step_t):
            raise errors.bad_option("step_t", opts["step_t"], "a sequence or 1-D tensor of finite times")
        opts["step_t"] = step_t
        if opts["norm"] is not None and not callable(opts["norm"]):
            raise errors.bad_option("norm", opts["norm"], "a callable or None")
    if not callable(func):
        raise TypeError(f"func must be callable, got {type(func).__name__}")
    if not bool(torch.isfinite(y0).all()):
        raise errors.y0_not_finite()
    return solver, times, rtol, atol, opts


# ---------------------------------------------------------------- entry points
def solve(func, y0, t, rtol, atol, method, options, direction: str = "forward"):
    """:func:`odeint`, also returning the solve's :class:`SolveStats`
    (``direction`` is "backward" for the adjoint's solves)."""
    solver, times, rtol, atol, opts = check_inputs(func, y0, t, rtol, atol, method, options)
    stats = start_solve(method, direction)
    rhs = RHS(func, y0)
    if solver.tableau.adaptive:
        outs = solver.integrate(rhs, y0, times, solver.tableau, rtol, atol, opts, stats)
    else:
        outs = solver.integrate(rhs, y0, times, solver.tableau, opts, stats)
    return torch.stack([y0, *outs]), stats


def odeint(func, y0, t, rtol=1e-7, atol=1e-9, method="dopri5", options=None):
    """Solve dy/dt = func(t, y), y(t[0]) = y0, at the times ``t``.

    func: callable (t: 0-d tensor, y: tensor of shape S) -> dy/dt of shape S.
    y0: (*S) real floating tensor. t: (T,) strictly increasing or decreasing.
    rtol, atol: error tolerances of the adaptive methods (ignored by fixed ones).
    method: one of ``SOLVERS`` (euler, midpoint, rk4, bosh3, dopri5).
    options: fixed methods ``step_size`` (each interval of ``t`` is split into
    ceil(interval / step_size) equal steps, so the solver lands exactly on
    every requested time; without it, one step per interval) and
    ``max_num_steps``; adaptive methods
    ``first_step``, ``safety``, ``ifactor``, ``dfactor``, ``pcoeff``,
    ``icoeff``, ``norm`` (callable on the scaled error, shape S, returning a
    scalar), ``step_t`` (times that steps must land on, e.g. where func
    has a kink), ``max_num_steps``.
    Returns (T, *S), the solution at each time in ``t``.
    """
    return solve(func, y0, t, rtol, atol, method, options, "forward")[0]
