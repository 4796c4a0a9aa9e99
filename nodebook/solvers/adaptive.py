"""Adaptive Runge-Kutta stepping with an embedded error estimate (bosh3, dopri5).

One attempted step of size h from (t, y) computes the stages k_i, the new
state ``y1 = y + h sum b_i k_i`` and the error estimate
``err = h sum e_i k_i`` (``e = b - b_low``); the step is accepted when its
scaled error is at most 1, and the next step size comes from the controller
(:mod:`nodebook.solvers.controller`). Requested output times inside an
accepted step come from the method's dense output
(:mod:`nodebook.solvers.interp`), so they never shorten a step; only the
final time (and the ``step_t`` option's times) clip a step. Time runs in
Python floats and h may be negative (integration backwards in time).

The pieces, in the order a solve uses them: :func:`first_step`,
:func:`step_stops`, the stage workspaces (:class:`BufferStages`,
:class:`GraphStages`), :class:`ErrorRatio`, :class:`DenseOutputs`, and the
loop that ties them together, :func:`integrate_adaptive`; then
:func:`replay_adaptive`, which computes one accepted step again from the same
pieces (checkpointed backpropagation, :mod:`nodebook.checkpointed`).

The state is kept flat, shape (n,), and the stages live in one (s, n) buffer
so that each stage is a single fused ``addmv``; with gradients disabled the
buffer is reused across steps, with gradients enabled each attempted step gets
a fresh one so autograd sees no overwritten values.
"""

from __future__ import annotations

import math
import warnings

import torch

from nodebook.solvers import errors
from nodebook.solvers.controller import Controller, initial_step, norm_dtype, rms_norm
from nodebook.solvers.interp import interpolate
from nodebook.solvers.method import IVP, MAX_NUM_STEPS, Method, Step, positive
from nodebook.solvers.rhs import RHS
from nodebook.solvers.stats import SolveStats
from nodebook.solvers.tableaus import ButcherTableau

__all__ = ["AdaptiveRK", "integrate_adaptive", "replay_adaptive", "rms_norm"]

_EPS = 2.220446049250313e-16  # float64 machine epsilon: time is a Python float


# ---------------------------------------------------------------- the registry entry
class AdaptiveRK(Method):
    """An embedded Runge-Kutta pair with step-size control, given by its tableau.

    Options (torchdiffeq's names and defaults): ``first_step``, ``safety``,
    ``ifactor``, ``dfactor``, ``min_step``, ``max_step``, ``norm`` (callable
    on the scaled error, shape S, returning a scalar), ``step_t`` (times the
    steps must land on, e.g. where func has a kink), ``dtype`` (time dtype;
    nodebook's time is always float64), ``max_num_steps``; and nodebook's
    own ``pcoeff``, ``icoeff`` (PI controller).
    """

    adaptive = True
    checkpointable = True
    defaults = {"first_step": None, "safety": 0.9, "ifactor": 10.0, "dfactor": 0.2,
                "pcoeff": 0.0, "icoeff": 1.0, "min_step": 0.0, "max_step": math.inf,
                "norm": None, "step_t": (), "dtype": torch.float64, "max_num_steps": MAX_NUM_STEPS}
    unsupported = {"jump_t": "steps can land on given times with step_t, but nodebook does not "
                             "re-evaluate func after a jump"}

    def __init__(self, tableau: ButcherTableau):
        if not tableau.adaptive:
            raise ValueError(f"{tableau.name}: an adaptive method needs an embedded pair (b_low)")
        self.tableau = tableau
        self.name = tableau.name
        self.order = tableau.order

    def check_options(self, opts: dict, y0: torch.Tensor) -> dict:
        opts["first_step"] = positive("first_step", opts["first_step"], allow_none=True)
        for name in ("safety", "ifactor", "dfactor"):
            opts[name] = positive(name, opts[name])
        if opts["ifactor"] < 1 or opts["dfactor"] > 1 or opts["safety"] > 1:
            raise errors.bad_option("safety/ifactor/dfactor", (opts["safety"], opts["ifactor"], opts["dfactor"]),
                                    "safety <= 1, ifactor >= 1, dfactor <= 1")
        for name in ("min_step", "max_step"):
            try:
                opts[name] = float(opts[name])
            except (TypeError, ValueError, RuntimeError):
                raise errors.bad_option(name, opts[name], "a number") from None
        if not (0 <= opts["min_step"] <= opts["max_step"]) or math.isnan(opts["max_step"]):
            raise errors.bad_option("min_step/max_step", (opts["min_step"], opts["max_step"]),
                                    "0 <= min_step <= max_step")
        step_t = opts["step_t"]
        if step_t is None:
            step_t = ()
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
        dtype = opts["dtype"]
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise errors.bad_option("dtype", dtype, "a floating-point torch.dtype")
        if torch.promote_types(dtype, y0.dtype) != torch.float64:
            warnings.warn(f"{self.name}: option dtype={dtype} is ignored; nodebook keeps time in "
                          f"float64 (Python floats)", UserWarning, stacklevel=5)
        return opts

    def integrate(self, ivp: IVP, options: dict, stats: SolveStats, record=None) -> list:
        return integrate_adaptive(ivp, self.tableau, options, stats, record)

    def replay(self, ivp: IVP, options: dict, step: Step, prev: Step | None, stats: SolveStats) -> tuple:
        return replay_adaptive(ivp, self.tableau, step, prev, stats)


# ---------------------------------------------------------------- before the first step
def first_step(rhs: RHS, t0: float, y0: torch.Tensor, f0: torch.Tensor, tab: ButcherTableau,
               rtol, atol, options: dict, direction: float) -> tuple[float, int]:
    """The signed first step and the evaluations it cost (Hairer's choice: 1; given: 0)."""
    if options["first_step"] is not None:
        return direction * abs(float(options["first_step"])), 0
    norm = options["norm"] if options["norm"] is not None else rms_norm
    return initial_step(rhs, t0, y0, f0, tab.embedded_order + 1, rtol, atol, norm, direction), 1


def step_stops(step_t: list, t0: float, t_end: float, direction: float) -> list:
    """The times steps must land on, in the order of integration, ending with t_end."""
    inside = (x for x in step_t if (x - t0) * direction > 0 and (t_end - x) * direction > 0)
    return sorted(inside, key=lambda x: x * direction) + [t_end]


# ---------------------------------------------------------------- stages
class BufferStages:
    """Stages in one reused (s, n) buffer: for solves without autograd.

    Row views (state-shaped) receive func's output, column blocks feed the
    fused stage combinations; nothing is allocated per step but the stage
    inputs themselves.
    """

    def __init__(self, tab: ButcherTableau, y0: torch.Tensor):
        s, n, shape = tab.stages, y0.numel(), y0.shape
        self.K = torch.empty(s, n, dtype=y0.dtype, device=y0.device)
        self.rows = [self.K[i].view(shape) for i in range(s)]
        self.cols = [None] + [self.K[:i].t() for i in range(1, s)]
        self.Kt = self.K.t()
        self.A, self.b, _ = tab.coefficients(y0.dtype, y0.device)
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


class GraphStages:
    """Stages as a list of fresh tensors: for solves that autograd records
    (backpropagation through the solver), where nothing may be overwritten."""

    def __init__(self, tab: ButcherTableau, y0: torch.Tensor):
        self.A, self.b, _ = tab.coefficients(y0.dtype, y0.device)
        self.c, self.fsal, self.shape = tab.c_float, tab.fsal, y0.shape
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


# ---------------------------------------------------------------- error ratio
class ErrorRatio:
    """``ratio = norm(h * err / (atol + rtol * max(|y|, |y1|)))`` of one attempted step.

    The default RMS norm costs one reduction and one host sync; a custom
    ``norm`` receives the scaled error in the state's shape.
    """

    def __init__(self, tab: ButcherTableau, y0: torch.Tensor, rtol, atol, norm):
        self.e = tab.coefficients(y0.dtype, y0.device)[2]
        self.rtol = rtol.reshape(-1) if isinstance(rtol, torch.Tensor) else rtol
        self.atol = atol.reshape(-1) if isinstance(atol, torch.Tensor) else atol
        self.norm = norm
        self.shape, self.dtype, self.ndtype = y0.shape, y0.dtype, norm_dtype(y0.dtype)
        self.inv_sqrt_n = 1.0 / math.sqrt(max(y0.numel(), 1))

    def __call__(self, Kt: torch.Tensor, y_abs: torch.Tensor, y1: torch.Tensor, h: float):
        """Returns (ratio as a float, |y1|) for stages Kt (n, s) and states (n,)."""
        with torch.no_grad():
            err = torch.mv(Kt, self.e)
            y1_abs = y1.abs()
            scale = torch.maximum(y_abs, y1_abs)
            if self.ndtype != self.dtype:
                err, scale = err.to(self.ndtype), scale.to(self.ndtype)
            scale.mul_(self.rtol).add_(self.atol)
            err.div_(scale)
            if self.norm is None:
                ratio = float(torch.linalg.vector_norm(err)) * abs(h) * self.inv_sqrt_n
            else:
                ratio = float(self.norm(err.mul_(abs(h)).view(self.shape)))
        return ratio, y1_abs


# ---------------------------------------------------------------- outputs
class DenseOutputs:
    """The requested times, filled in from each accepted step as it comes."""

    def __init__(self, times: list, direction: float, tab: ButcherTableau, shape):
        self.times, self.direction, self.dense, self.shape = times, direction, tab.dense_float, shape
        self.i = 1          # index of the next requested time
        self.values = []

    @property
    def done(self) -> bool:
        return self.i >= len(self.times)

    def fill(self, t: float, t_new: float, h: float, y: torch.Tensor, y1: torch.Tensor,
             Kt: torch.Tensor) -> None:
        """Every requested time in the accepted step [t, t_new]: y1 at its end,
        dense output inside."""
        times, i, direction = self.times, self.i, self.direction
        while i < len(times) and (times[i] - t_new) * direction <= 0:
            t_req = times[i]
            if t_req == t_new:
                self.values.append(y1.view(self.shape))
            else:
                self.values.append(interpolate(y, Kt, h, self.dense, (t_req - t) / h).view(self.shape))
            i += 1
        self.i = i


# ---------------------------------------------------------------- the loop
def integrate_adaptive(ivp: IVP, tab: ButcherTableau, options: dict, stats: SolveStats,
                       record=None) -> list:
    """Solutions at ``ivp.times[1:]`` (a list of tensors shaped like y0).

    options: as :class:`AdaptiveRK` fills them in. record: None, or a
    callable receiving a :class:`~nodebook.solvers.method.Step` per accepted
    step (for :func:`replay_adaptive`).
    """
    rhs, y0, times = ivp.rhs, ivp.y0, ivp.times
    t0, t_end, direction = times[0], times[-1], ivp.direction
    max_num_steps = options["max_num_steps"]
    ctrl = Controller(k=tab.embedded_order + 1, safety=options["safety"], ifactor=options["ifactor"],
                      dfactor=options["dfactor"], pcoeff=options["pcoeff"], icoeff=options["icoeff"],
                      min_step=options["min_step"], max_step=options["max_step"])
    error_ratio = ErrorRatio(tab, y0, ivp.rtol, ivp.atol, options["norm"])
    outputs = DenseOutputs(times, direction, tab, y0.shape)
    stops = step_stops(options["step_t"], t0, t_end, direction)

    f0 = rhs.checked(t0, y0)
    nfe = 1
    try:
        h, cost = first_step(rhs, t0, y0, f0, tab, ivp.rtol, ivp.atol, options, direction)
        h = ctrl.clamp(h)
        nfe += cost
        stages = (GraphStages if torch.is_grad_enabled() else BufferStages)(tab, y0)
        stages.set_first(f0)
        t, y = t0, y0.reshape(-1)
        with torch.no_grad():
            y_abs = y.abs()
        stats.step_times.append(t0)
        i_stop = 0
        last_nonfinite = False
        while not outputs.done:
            if stats.n_accepted + stats.n_rejected >= max_num_steps:
                raise errors.max_steps_exceeded(max_num_steps, t)
            if abs(h) < 4.0 * _EPS * max(abs(t), abs(t_end)):
                raise (errors.non_finite_step(t) if last_nonfinite else errors.step_size_underflow(t, h))
            # clip the step to the next stop (Hairer's 1% rule)
            stop = stops[i_stop]
            if (t + 1.01 * h - stop) * direction > 0:
                h, t_new = stop - t, stop
            else:
                t_new = t + h

            y1, Kt = stages.step(rhs, t, y, h)
            nfe += tab.stages - 1
            ratio, y1_abs = error_ratio(Kt, y_abs, y1, h)

            accepted = ratio <= 1.0  # False for NaN
            if not accepted and ctrl.min_step and ctrl.forced(h):
                if not math.isfinite(ratio):
                    raise errors.non_finite_step(t)
                accepted = True  # |h| <= min_step: accepted whatever its error
            if accepted:
                stats.n_accepted += 1
                stats.step_times.append(t_new)
                last_nonfinite = False
                if record is not None:
                    record(Step(t, t_new, h, y, outputs.i))
                outputs.fill(t, t_new, h, y, y1, Kt)
                h_next = ctrl.next_step(h, ratio, True)
                t, y, y_abs = t_new, y1, y1_abs
                if t == stop and i_stop < len(stops) - 1:
                    i_stop += 1
                if not outputs.done:
                    if tab.fsal:
                        stages.reuse_last()
                    else:
                        stages.set_first(rhs(t, y.view(y0.shape)))
                        nfe += 1
                h = h_next
            else:  # reject
                stats.n_rejected += 1
                last_nonfinite = not math.isfinite(ratio)
                h = ctrl.next_step(h, ratio, False)
    finally:
        stats.nfe += nfe
    return outputs.values


def replay_adaptive(ivp: IVP, tab: ButcherTableau, step: Step, prev: Step | None,
                    stats: SolveStats) -> tuple:
    """One accepted step of :func:`integrate_adaptive` again, with the
    operations a solve under autograd performs (:class:`GraphStages`, then
    :class:`DenseOutputs`): ``(y1 (n,), outputs filled from the step)`` (see
    :meth:`Method.replay`). The step size is the recorded constant, as it is
    for backpropagation through the solver (the controller works on floats).

    The first stage is evaluated where the solve evaluated it: at the step's
    start, or for a first-same-as-last method at the previous step's last
    stage, ``prev.t0 + c[-1] * prev.h`` (the same state, and the same time
    up to the rounding of a step clipped to a stop).
    """
    rhs, shape = ivp.rhs, ivp.y0.shape
    t_first = step.t0 if prev is None or not tab.fsal else prev.t0 + tab.c_float[-1] * prev.h
    stages = GraphStages(tab, ivp.y0)
    stages.set_first(rhs(t_first, step.y.view(shape)))
    y1, Kt = stages.step(rhs, step.t0, step.y, step.h)
    outputs = DenseOutputs(ivp.times, ivp.direction, tab, shape)
    outputs.i = step.first
    outputs.fill(step.t0, step.t1, step.h, step.y, y1, Kt)
    stats.nfe += tab.stages
    return y1, outputs.values
