"""``odeint``: the public entry point, the method registry and input checks.

Same conventions as torchdiffeq 0.2.5 (chapter "From ResNets to ODE
solvers"): ``func(t, y)`` returns dy/dt, ``y0`` is a floating tensor of any
shape S (or a tuple of them), ``t`` a 1-D strictly monotonic tensor of output
times, and the result has shape ``(len(t), *S)`` with ``result[0] == y0``.
The solve is built from ordinary tensor operations, so gradients reach ``y0``
and the parameters of ``func`` by backpropagation through the solver (Sec. 2
of the paper calls this the memory-hungry alternative to the adjoint).
Output times are treated as constants here; for dL/dt use
:func:`nodebook.odeint_adjoint`.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from nodebook.solvers import errors, tableaus
from nodebook.solvers.adaptive import AdaptiveRK
from nodebook.solvers.controller import norm_dtype
from nodebook.solvers.fixed import FixedRK
from nodebook.solvers.method import IVP, Method
from nodebook.solvers.rhs import RHS
from nodebook.solvers.stats import SolveStats, start_solve
from nodebook.solvers.tuples import flatten_problem

DEFAULT_METHOD = "dopri5"  # what method=None means, as in torchdiffeq

SOLVERS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add ``method`` to the registry under ``method.name`` (replacing any namesake)."""
    if not isinstance(method, Method):
        raise TypeError(f"only a nodebook.solvers.method.Method can be registered, got {type(method).__name__}")
    SOLVERS[method.name] = method
    return method


for _tab in tableaus.ALL:
    register(AdaptiveRK(_tab) if _tab.adaptive else FixedRK(_tab))


def get_method(method: str | None) -> Method:
    """The registry entry for ``method`` (None: dopri5), or a clear error."""
    name = DEFAULT_METHOD if method is None else method
    try:
        return SOLVERS[name]
    except (KeyError, TypeError):
        raise errors.unknown_method(method, SOLVERS) from None


# ---------------------------------------------------------------- validation
def check_tolerance(name: str, value, y0: torch.Tensor):
    """A positive finite tolerance: a float, or (per element) a tensor of y0's
    shape in the norm's dtype."""
    if isinstance(value, torch.Tensor) and value.numel() != 1:
        if value.is_complex() or value.dtype == torch.bool:
            raise errors.bad_tolerance(name, value)
        try:
            if torch.broadcast_shapes(value.shape, y0.shape) != y0.shape:
                raise RuntimeError
        except RuntimeError:
            raise errors.bad_tolerance_shape(name, value.shape, y0.shape) from None
        v = value.detach()
        if not bool(((v > 0) & torch.isfinite(v)).all()):
            raise errors.bad_tolerance(name, value)
        return v.to(device=y0.device, dtype=norm_dtype(y0.dtype)).expand(y0.shape).contiguous()
    try:
        v = float(value)
    except (TypeError, ValueError, RuntimeError):
        raise errors.bad_tolerance(name, value) from None
    if not (v > 0 and math.isfinite(v)):
        raise errors.bad_tolerance(name, value)
    return v


def check_device(func, y0: torch.Tensor) -> None:
    """func's parameters on y0's device, or a clear error (``t`` may live elsewhere: it follows y0).

    Only an ``nn.Module`` with parameters is checked (for a tuple state, the
    module the flat function wraps), and only its first parameter: one look
    per solve, never inside the solver's loop.
    """
    module = getattr(func, "__wrapped__", func)
    if not isinstance(module, nn.Module):
        return
    first = next(module.parameters(), None)
    if first is not None and first.device != y0.device:
        raise errors.device_mismatch("func's parameters", first.device, y0.device)


def check_inputs(func, y0, t, rtol, atol, method, options):
    """Validate everything; returns (method, times as floats, rtol, atol, options).

    ``method`` is the registry entry; ``options`` has every option of that
    method, defaults filled in and unknown ones dropped (with a warning).
    """
    if not isinstance(y0, torch.Tensor):
        raise errors.y0_not_tensor(y0)
    if y0.is_complex() or not y0.is_floating_point():
        raise errors.bad_y0_dtype(y0.dtype)
    check_device(func, y0)
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
    rtol = check_tolerance("rtol", rtol, y0)
    atol = check_tolerance("atol", atol, y0)
    solver = get_method(method)
    opts = solver.prepare_options(options, y0)
    if not callable(func):
        raise TypeError(f"func must be callable, got {type(func).__name__}")
    if not bool(torch.isfinite(y0).all()):
        raise errors.y0_not_finite()
    return solver, times, rtol, atol, opts


_CALLBACKS = ("callback_step", "callback_accept_step", "callback_reject_step")


def warn_about_callbacks(func) -> None:
    """torchdiffeq calls ``func.callback_step`` & co. during a solve; nodebook does not."""
    found = [name for name in _CALLBACKS if hasattr(func, name)]
    if found:
        warnings.warn(f"func has {', '.join(found)}: torchdiffeq would call them during the "
                      f"solve, nodebook does not (use nodebook.record_stats for step statistics)",
                      UserWarning, stacklevel=3)


# ---------------------------------------------------------------- entry points
def solve(func, y0, t, rtol, atol, method, options, direction: str = "forward"):
    """:func:`odeint` on a tensor state, also returning the solve's :class:`SolveStats`
    (``direction`` is "backward" for the adjoint's solves)."""
    solver, times, rtol, atol, opts = check_inputs(func, y0, t, rtol, atol, method, options)
    stats: SolveStats = start_solve(solver.name, direction)
    ivp = IVP(rhs=RHS(func, y0), y0=y0, t=t.detach(), times=times, rtol=rtol, atol=atol)
    outs = solver.integrate(ivp, opts, stats)
    return torch.stack([y0, *outs]), stats


def odeint(func, y0, t, rtol=1e-7, atol=1e-9, method=None, options=None, *, event_fn=None):
    """Solve dy/dt = func(t, y), y(t[0]) = y0, at the times ``t``; a drop-in for
    torchdiffeq 0.2.5's ``odeint``.

    func: callable (t: 0-d tensor, y) -> dy/dt shaped like y.
    y0: ``(*S)`` real floating tensor, or a tuple of such tensors (func then
    takes and returns tuples, and the result is a tuple). t: (T,) strictly
    increasing or decreasing.
    rtol, atol: error tolerances of the adaptive methods (ignored by fixed
    ones): numbers, 0-d tensors, tensors broadcasting to y0 (per element), or
    for a tuple y0 sequences with one tolerance per tensor.
    method: one of ``SOLVERS`` (euler, midpoint, rk4, rk4_38, bosh3, dopri5);
    None means dopri5.
    options: fixed methods ``step_size`` (the grid t[0], t[0] + step_size,
    ..., t[-1], outputs between grid points interpolated, as torchdiffeq),
    ``grid_constructor``, ``interp`` ("linear" or "cubic"), ``perturb``;
    without any, one step per interval of t. Adaptive methods ``first_step``,
    ``safety``, ``ifactor``, ``dfactor``, ``min_step``, ``max_step``,
    ``norm`` (callable on the scaled error, shaped like y0, returning a
    scalar), ``step_t`` (times that steps must land on, e.g. where func has
    a kink), ``dtype``, and nodebook's ``pcoeff``, ``icoeff`` (PI
    controller). Both: ``max_num_steps``. Unknown options are ignored with
    a warning, as in torchdiffeq.
    Returns ``(T, *S)``, the solution at each time in ``t`` (a tuple for a tuple y0).

    Deliberate differences from torchdiffeq 0.2.5 (the full table with the
    tests that check each: ``docs_compat.md``):

    * ``rk4`` is the classical Runge-Kutta method; torchdiffeq's ``rk4`` is
      Kutta's 3/8 rule, here ``rk4_38``. Methods torchdiffeq has and nodebook
      not (dopri8, fehlberg2, adaptive_heun, heun2, heun3, the Adams methods,
      scipy_solver) raise "unknown method".
    * Adaptive methods clip the last step to land on ``t[-1]`` (and steps
      that would overshoot a ``step_t`` time by less than 1%), where
      torchdiffeq steps past ``t[-1]`` and interpolates: the same steps
      otherwise, so values agree to within the tolerance, not to rounding,
      and NFE can differ by a step or two. bosh3 interpolates between steps
      with a cubic Hermite polynomial (third order); torchdiffeq's bosh3
      interpolant is less accurate.
    * Output times are constants: gradients do not reach ``t`` (use
      :func:`nodebook.odeint_adjoint`); torchdiffeq backpropagates through
      its time arithmetic.
    * Time runs in float64 whatever the state's dtype; the ``dtype`` option
      is accepted and has no further effect.
    * Not supported, with a clear error: ``event_fn`` (event handling) and the
      ``jump_t`` option. func's ``callback_*`` methods are not called (a
      warning says so).
    * Bad input raises ``TypeError``/``ValueError`` (torchdiffeq: mostly
      ``AssertionError``); so do func's parameters on another device than
      y0 (torchdiffeq: PyTorch's error at the first evaluation), while ``t``
      may be anywhere; tolerances must be positive; a failing solve
      raises :class:`~nodebook.solvers.StepSizeError`,
      :class:`~nodebook.solvers.MaxStepsError` or
      :class:`~nodebook.solvers.NonFiniteError` with the time it happened.
    * Options only nodebook has: ``pcoeff``, ``icoeff`` (adaptive) and
      ``max_num_steps`` (fixed).
    * With ``interp="cubic"``, f(t1, y1) is evaluated once per step that
      holds output times (torchdiffeq: once per output time): same values,
      fewer evaluations.
    """
    if event_fn is not None:
        raise errors.unsupported_events()
    warn_about_callbacks(func)
    if isinstance(y0, tuple):
        state, func, y0, rtol, atol, options = flatten_problem(func, y0, rtol, atol, options)
        ys, _ = solve(func, y0, t, rtol, atol, method, options, "forward")
        return state.unflatten(ys, (ys.shape[0],))
    return solve(func, y0, t, rtol, atol, method, options, "forward")[0]
