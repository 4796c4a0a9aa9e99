"""ODE solvers: explicit Runge-Kutta methods, fixed and adaptive (chapter
"From ResNets to ODE solvers"); a drop-in for torchdiffeq 0.2.5's ``odeint``.

Public surface: :func:`odeint`, the registry ``SOLVERS`` of :class:`Method`
entries (add one with :func:`register`), and solver statistics
(:func:`record_stats`, :class:`SolveStats`).

Modules, in reading order: ``tableaus`` (methods as data), ``rhs`` (how
func is called), ``method`` (what a registry entry provides), ``fixed`` and
``adaptive`` (the two families of stepping loops), ``controller`` (step-size
control), ``interp`` (dense output), ``tuples`` (tuple states), ``odeint``
(entry point, registry, input checks), ``stats``, ``errors``.
"""

from nodebook.solvers.errors import MaxStepsError, NonFiniteError, StepSizeError, UnsupportedFeature
from nodebook.solvers.method import IVP, Method
from nodebook.solvers.odeint import SOLVERS, odeint, register
from nodebook.solvers.stats import SolveStats, StatsLog, record_stats

__all__ = ["odeint", "SOLVERS", "register", "Method", "IVP", "record_stats", "SolveStats", "StatsLog",
           "StepSizeError", "MaxStepsError", "NonFiniteError", "UnsupportedFeature"]
