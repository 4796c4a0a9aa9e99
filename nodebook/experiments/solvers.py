"""The sweeps behind chapter 01, "From ResNets to ODE solvers" (``book/01_solvers.ipynb``).

Every run here solves a problem of :mod:`nodebook.problems` whose exact
solution is known, so each error is measured, not estimated:

- :func:`order_sweeps`: error at the final time against the step size, for
  the fixed-step methods (a sweep over the number of steps) and for dopri5 (a
  sweep over the tolerance, against its mean accepted step); the slopes of
  :func:`fit_orders` are the orders of convergence, and :func:`nfe_comparison`
  sets dopri5's cost per error beside the fixed-step methods';
- :func:`dense_output_nfe`: an adaptive solve asked for 2 and for many output
  times, to show the extra outputs cost no function evaluation;
- :func:`tolerance_sweep`: error and NFE against the tolerance (the paper's
  Fig. 3a trade-off).
"""

from __future__ import annotations

import torch

from nodebook import odeint, record_stats
from nodebook.analysis import fit_order
from nodebook.problems import Problem

EXPECTED_ORDERS = {"euler": 1, "midpoint": 2, "rk4": 4, "dopri5": 5}
FIXED_STEP = ("euler", "midpoint", "rk4")


def final_error(problem: Problem, y_end: torch.Tensor) -> float:
    """Largest absolute error of ``y_end`` against the exact state at ``problem.t1``."""
    exact_end = problem.exact(problem.times(2))[-1]
    return (y_end - exact_end).abs().max().item()


def order_sweeps(problem: Problem, num_steps: list, tolerances: list,
                 methods=FIXED_STEP) -> dict:
    """``{method: {"h": [...], "error": [...], "nfe": [...]}}`` for ``methods`` and dopri5.

    A fixed-step method runs with ``n`` equal steps for each ``n`` in
    ``num_steps``; dopri5 runs at rtol = atol = each of ``tolerances``, and its
    ``h`` is the mean accepted step ``(t1 - t0) / n_accepted``.
    """
    t_span = problem.times(2)
    length = problem.t1 - problem.t0
    sweeps = {}
    for method in methods:
        hs, errors, nfes = [], [], []
        for n in num_steps:
            h = length / n
            with record_stats() as log:
                y_end = odeint(problem.func, problem.y0, t_span, method=method, options={"step_size": h})[-1]
            hs.append(h)
            errors.append(final_error(problem, y_end))
            nfes.append(log.nfe)
        sweeps[method] = {"h": hs, "error": errors, "nfe": nfes}
    hs, errors, nfes = [], [], []
    for tol in tolerances:
        with record_stats() as log:
            y_end = odeint(problem.func, problem.y0, t_span, rtol=tol, atol=tol, method="dopri5")[-1]
        hs.append(length / log.n_accepted)
        errors.append(final_error(problem, y_end))
        nfes.append(log.nfe)
    sweeps["dopri5"] = {"h": hs, "error": errors, "nfe": nfes}
    return sweeps


def fit_orders(sweeps: dict) -> dict:
    """The fitted slope of log(error) against log(h) of every method in ``sweeps``."""
    return {method: fit_order(s["h"], s["error"]) for method, s in sweeps.items()}


def nfe_to_reach(sweep: dict, error: float) -> int | None:
    """The fewest NFE of a sweep's runs whose error is at most ``error`` (``None``: none is)."""
    reached = [n for n, e in zip(sweep["nfe"], sweep["error"]) if e <= error]
    return min(reached) if reached else None


def nfe_comparison(sweeps: dict, methods=FIXED_STEP) -> list[dict]:
    """For each dopri5 run of ``sweeps``: the error it reached, its NFE, and for each fixed-step
    method the fewest NFE of its runs that reached that error (``None``: none did)."""
    d = sweeps["dopri5"]
    return [{"error": e, "dopri5": n, **{m: nfe_to_reach(sweeps[m], e) for m in methods}}
            for e, n in zip(d["error"], d["nfe"])]


def dense_output_nfe(problem: Problem, num_outputs: int, tol: float) -> dict:
    """dopri5 at rtol = atol = ``tol`` asked for 2 output times and for ``num_outputs``.

    Returns ``{"t", "y"`` (the dense solve), ``"stats"`` (its :class:`~nodebook.solvers.stats.SolveStats`),
    ``"nfe_dense"``, ``"nfe_endpoints"``, ``"steps_dense"``, ``"steps_endpoints"}``.
    """
    t_dense = problem.times(num_outputs)
    with record_stats() as log:
        y_dense = odeint(problem.func, problem.y0, t_dense, rtol=tol, atol=tol)
    with record_stats() as ends:
        odeint(problem.func, problem.y0, problem.times(2), rtol=tol, atol=tol)
    return {"t": t_dense, "y": y_dense, "stats": log.solves[0], "nfe_dense": log.nfe,
            "nfe_endpoints": ends.nfe, "steps_dense": log.n_accepted, "steps_endpoints": ends.n_accepted}


def step_size_range(step_times) -> tuple[float, float]:
    """Smallest and largest accepted step of a solve, from its ``step_times``."""
    steps = torch.tensor([float(s) for s in step_times], dtype=torch.float64).diff()
    return steps.min().item(), steps.max().item()


def tolerance_sweep(problem: Problem, tolerances: list) -> tuple[list, list]:
    """Error at the final time and NFE of the default solver (dopri5) at rtol = atol = each tolerance."""
    t_span = problem.times(2)
    errors, nfes = [], []
    for tol in tolerances:
        with record_stats() as log:
            y_end = odeint(problem.func, problem.y0, t_span, rtol=tol, atol=tol)[-1]
        errors.append(final_error(problem, y_end))
        nfes.append(log.nfe)
    return errors, nfes
