"""nodebook: Neural Ordinary Differential Equations (Chen et al., NeurIPS 2018), reproduced.

The public surface mirrors torchdiffeq, so readers can swap either way::

    from nodebook import odeint, odeint_adjoint

plus a third way to differentiate a solve that torchdiffeq does not have,
``odeint_checkpointed`` (exact gradients, one stored state per step).
"""

from nodebook.adjoint import odeint_adjoint
from nodebook.checkpointed import odeint_checkpointed
from nodebook.solvers import SolveStats, odeint, record_stats

__all__ = ["odeint", "odeint_adjoint", "odeint_checkpointed", "record_stats", "SolveStats"]
__version__ = "0.1.0"
