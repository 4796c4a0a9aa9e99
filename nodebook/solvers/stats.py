"""Solver statistics, recorded for every solve without wrapping ``func``.

The paper measures cost in function evaluations (NFE; Sec. 3 and Fig. 3);
:func:`record_stats` collects one :class:`SolveStats` per solve started inside
the ``with`` block, including the adjoint's backward solves that
``loss.backward()`` triggers::

    with record_stats() as log:
        loss = odeint_adjoint(func, z0, t).sum()
        loss.backward()
    log.nfe_forward, log.nfe_backward

NFE counts every call of the user's ``func`` (for the adjoint's backward
solves, every call of the augmented dynamics, each of which calls ``func``
once and takes one vector-Jacobian product), including the two calls of the
initial step-size selection; first-same-as-last stages are counted once.
:func:`nodebook.odeint_checkpointed` logs its forward solve as "forward" and
the recomputation of its steps during ``backward()`` as "backward".
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field


@dataclass
class SolveStats:
    """Counts for one solve.

    method: registry name; direction: "forward", or "backward" for a solve of
    the adjoint system or checkpointed backpropagation's recomputation; nfe:
    calls of func; n_accepted / n_rejected: steps (the recomputation replays
    accepted steps only, last first); step_times: where the accepted steps
    start and end (t0 first; in replay order for the recomputation), so a
    chapter can draw the steps an adaptive solver chose.
    """

    method: str
    direction: str = "forward"
    nfe: int = 0
    n_accepted: int = 0
    n_rejected: int = 0
    step_times: list = field(default_factory=list, repr=False)

    @property
    def n_steps(self) -> int:
        """Steps attempted (accepted plus rejected)."""
        return self.n_accepted + self.n_rejected


@dataclass(eq=False)  # logs are compared by identity (record_stats removes its own)
class StatsLog:
    """What one ``record_stats()`` block saw: ``solves`` in start order."""

    solves: list = field(default_factory=list)

    def _sum(self, name: str, direction: str | None = None) -> int:
        return sum(getattr(s, name) for s in self.solves
                   if direction is None or s.direction == direction)

    @property
    def nfe(self) -> int:
        """Function evaluations of every solve in the block."""
        return self._sum("nfe")

    @property
    def nfe_forward(self) -> int:
        """Function evaluations of the forward solves."""
        return self._sum("nfe", "forward")

    @property
    def nfe_backward(self) -> int:
        """Function evaluations of the backward passes (the adjoint's backward
        solves, checkpointed backpropagation's recomputation)."""
        return self._sum("nfe", "backward")

    @property
    def n_accepted(self) -> int:
        """Accepted steps of every solve."""
        return self._sum("n_accepted")

    @property
    def n_rejected(self) -> int:
        """Rejected steps of every solve."""
        return self._sum("n_rejected")


# Not thread-local on purpose: autograd may run the adjoint's backward solve
# on a worker thread, and that solve belongs to the block that called backward().
_ACTIVE: list = []
_LOCK = threading.Lock()


@contextlib.contextmanager
def record_stats():
    """Context manager yielding a :class:`~nodebook.solvers.StatsLog` of the solves inside it."""
    log = StatsLog()
    with _LOCK:
        _ACTIVE.append(log)
    try:
        yield log
    finally:
        with _LOCK:
            _ACTIVE.remove(log)


def start_solve(method: str, direction: str) -> SolveStats:
    """A new SolveStats, already appended to every active log."""
    stats = SolveStats(method=method, direction=direction)
    if _ACTIVE:
        with _LOCK:
            for log in _ACTIVE:
                log.solves.append(stats)
    return stats
