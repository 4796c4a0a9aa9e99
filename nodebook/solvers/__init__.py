"""ODE solvers: explicit Runge-Kutta methods, fixed and adaptive (chapter "Solvers").

Public surface: :func:`odeint`, the registry ``SOLVERS``, and solver
statistics (:func:`record_stats`, :class:`SolveStats`).
"""

from nodebook.solvers.errors import MaxStepsError, NonFiniteError, StepSizeError
from nodebook.solvers.odeint import SOLVERS, odeint
from nodebook.solvers.stats import SolveStats, StatsLog, record_stats

__all__ = ["odeint", "SOLVERS", "record_stats", "SolveStats", "StatsLog",
           "StepSizeError", "MaxStepsError", "NonFiniteError"]
