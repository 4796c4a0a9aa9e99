"""What a registry entry is: one interface for every method ``odeint`` can run.

``odeint`` validates its inputs once, wraps them in an :class:`IVP` (an
initial value problem: right-hand side, start state, output times and
tolerances) and hands it to the :class:`Method` registered under the
requested name, which returns the solution at ``t[1:]``. The explicit
Runge-Kutta methods of the chapter "From ResNets to ODE solvers" are two
implementations (:class:`~nodebook.solvers.fixed.FixedRK` and
:class:`~nodebook.solvers.adaptive.AdaptiveRK`, each driven by a Butcher
tableau); any other method, say a multistep one, subclasses :class:`Method`
and registers with :func:`nodebook.solvers.odeint.register`.

Options follow torchdiffeq 0.2.5: each method declares its options with
their defaults; an option nobody knows is reported with a warning and
ignored, as torchdiffeq does, while an option that torchdiffeq has but
nodebook does not implement raises (it would silently change the result).
"""

from __future__ import annotations

import abc
import math
import warnings
from dataclasses import dataclass
from typing import ClassVar, Mapping

import torch

from nodebook.solvers import errors
from nodebook.solvers.rhs import RHS
from nodebook.solvers.stats import SolveStats

MAX_NUM_STEPS = 2 ** 31 - 1  # torchdiffeq's default: effectively no limit


@dataclass(frozen=True)
class IVP:
    """A validated initial value problem: dy/dt = rhs(t, y), y(times[0]) = y0.

    y0: the state, shape S (a tuple state arrives flattened, S = (n,)).
    t: the output times as a detached 1-D tensor (its dtype matters to the
    fixed-grid methods, which build their grid as torchdiffeq does); times:
    the same as Python floats. rtol, atol: floats, or tensors of shape S in
    the norm's dtype (per-element tolerances; only adaptive methods use them).
    """

    rhs: RHS
    y0: torch.Tensor
    t: torch.Tensor
    times: list
    rtol: float | torch.Tensor
    atol: float | torch.Tensor

    @property
    def direction(self) -> float:
        """+1.0 forward in time, -1.0 backward."""
        return 1.0 if self.times[-1] > self.times[0] else -1.0


class Method(abc.ABC):
    """A registry entry: a name, its options and how it integrates an :class:`IVP`.

    Subclasses set ``name``, ``order``, ``adaptive`` (whether rtol/atol and
    the ``norm`` option steer the steps) and ``defaults`` (every option with
    its default), may set ``ignored`` (options accepted and ignored, as
    torchdiffeq ignores them) and ``unsupported`` (torchdiffeq options that
    nodebook refuses, with the reason), and implement :meth:`integrate` and,
    for option values that need checking, :meth:`check_options`.
    """

    name: str
    order: int
    adaptive: ClassVar[bool]
    defaults: ClassVar[Mapping] = {"max_num_steps": MAX_NUM_STEPS}
    ignored: ClassVar[frozenset] = frozenset()
    unsupported: ClassVar[Mapping] = {}

    def prepare_options(self, options: Mapping | None, y0: torch.Tensor) -> dict:
        """Defaults filled in and values checked; unknown options are dropped
        with a warning (as torchdiffeq does), unsupported ones raise."""
        opts = dict(self.defaults)
        if options:
            for name in options:
                if name in self.unsupported:
                    raise errors.unsupported_option(self.name, name, self.unsupported[name])
            unknown = set(options) - set(opts) - set(self.ignored)
            if unknown:
                warnings.warn(errors.unknown_options(self.name, unknown, opts), UserWarning, stacklevel=4)
            opts.update((k, v) for k, v in options.items() if k in opts)
        m = opts["max_num_steps"]
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise errors.bad_option("max_num_steps", m, "a positive integer")
        return self.check_options(opts, y0)

    def check_options(self, opts: dict, y0: torch.Tensor) -> dict:
        """Check (and normalise) option values; ``opts`` holds every option."""
        return opts

    @abc.abstractmethod
    def integrate(self, ivp: IVP, options: dict, stats: SolveStats) -> list:
        """The solution at ``ivp.times[1:]``: a list of tensors shaped like ``ivp.y0``.

        Record the work in ``stats`` (nfe: calls of ``ivp.rhs``; n_accepted,
        n_rejected; step_times: where accepted steps start and end). A
        checkpointable method also takes ``record=None``: a callable that
        receives a :class:`Step` for every accepted step, in order.
        """

    # ------------------------------------------------ checkpointed backpropagation
    checkpointable: ClassVar[bool] = False
    """Whether :meth:`integrate` takes ``record`` and :meth:`replay` is
    implemented, as :func:`nodebook.odeint_checkpointed` needs."""

    def replay(self, ivp: IVP, options: dict, step: "Step", prev: "Step | None",
               stats: SolveStats) -> tuple:
        """Compute one accepted step of an earlier solve again, exactly as the
        solve computed it, under whatever autograd mode is active.

        ``step`` is what ``integrate(..., record=...)`` recorded for it (its
        ``y`` possibly replaced by a tensor that requires grad), ``prev`` the
        step before it (None for the first). Returns ``(y1, values)``: the
        state at the step's end, in the recorded state's shape, and the
        solution at ``ivp.times[step.first:step.first + len(values)]``, the
        output times the solve filled from this step. Adds the evaluations
        of func to ``stats.nfe``. Checkpointable methods override it.
        """
        raise errors.not_checkpointable(self.name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


@dataclass
class Step:
    """One accepted step as a checkpointable method records it for a replay.

    t0, t1: where it starts and ends; h: its size as the stepper used it
    (signed); y: the state at its start, as the stepper holds it (for the
    adaptive methods, flat); first: index into ``ivp.times`` of the first
    output time the step filled (the step fills none when the next step's
    ``first`` is the same, or when it is the last step and ``first`` equals
    ``len(times)``).
    """

    t0: float
    t1: float
    h: float
    y: torch.Tensor | None
    first: int


def positive(name: str, value, allow_none: bool = False):
    """``value`` as a positive finite float (or None when allowed), else a clear error."""
    if value is None and allow_none:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError, RuntimeError):
        raise errors.bad_option(name, value, "a positive finite number") from None
    if not (v > 0 and math.isfinite(v)):
        raise errors.bad_option(name, value, "a positive finite number")
    return v
