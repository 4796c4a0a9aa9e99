"""Figures of the chapters "From ResNets to ODE solvers" and "The adjoint method, checked"."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from nodebook.plotting import COLORS

METHOD_COLORS = {"euler": "#d62728", "midpoint": "#ff7f0e", "rk4": "#2ca02c", "bosh3": "#9467bd",
                 "dopri5": "#1f77b4"}


def _np(x):
    return np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=float)


def plot_solutions(t_exact, y_exact, solves: dict, xlabel="x", ylabel="y", title=None):
    """The exact curve and each method's points: ``solves[label] = (t, y)``."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(_np(t_exact), _np(y_exact), color=COLORS["exact"], lw=2, label="exact")
    for label, (t, y) in solves.items():
        ax.plot(_np(t), _np(y), "o--", ms=4, lw=1, color=METHOD_COLORS.get(label.split()[0]), label=label)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend()
    return fig


def plot_marble(t, y_exact, y_solved):
    """Height and velocity of the marble: exact curves and the solver's points."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for i, (ax, name) in enumerate(zip(axes, ["height x(t)", "velocity v(t)"])):
        ax.plot(_np(t), _np(y_exact)[:, i], color=COLORS["exact"], lw=2, label="exact")
        ax.plot(_np(t), _np(y_solved)[:, i], "o", ms=4, color=COLORS["ode"], label="odeint (dopri5)")
        ax.set(xlabel="t", title=name)
    axes[0].legend()
    fig.tight_layout()
    return fig


def plot_convergence(sweeps: dict, orders: dict, xlabel="step size h"):
    """Log-log error against step size, slopes in the legend. ``sweeps[method]`` is
    ``(h, error)`` or a dict with keys ``"h"`` and ``"error"`` (as
    :func:`nodebook.experiments.solvers.order_sweeps` returns)."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for method, sweep in sweeps.items():
        h, err = (sweep["h"], sweep["error"]) if isinstance(sweep, dict) else sweep
        ax.loglog(_np(h), _np(err), "o-", color=METHOD_COLORS.get(method), label=f"{method}: slope {orders[method]:.2f}")
    ax.set(xlabel=xlabel, ylabel="max error at the final time", title="Error against step size")
    ax.legend()
    return fig


def plot_adaptive_steps(t_dense, y_dense, step_times, labels=("x", "v")):
    """A solution with the accepted steps marked (top) and the step size along it (bottom)."""
    t_dense, y_dense, step_times = _np(t_dense), _np(y_dense), _np(step_times)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.5, 4.5), sharex=True,
                                      gridspec_kw={"height_ratios": [2, 1]})
    for i, label in enumerate(labels):
        top.plot(t_dense, y_dense[:, i], lw=1.5, label=label)
        top.plot(step_times, np.interp(step_times, t_dense, y_dense[:, i]), "k|", ms=5, alpha=0.6)
    top.set(ylabel="state", title=f"dopri5: {len(step_times) - 1} accepted steps (ticks)")
    top.legend()
    bottom.step(step_times[1:], np.diff(step_times), where="pre", color=COLORS["ode"])
    bottom.set(xlabel="t", ylabel="step size h", yscale="log")
    fig.tight_layout()
    return fig


def plot_tolerance_tradeoff(tolerances, errors, nfes):
    """Fig. 3a-style: error and NFE against the solver tolerance."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(8.5, 3.4))
    left.loglog(_np(tolerances), _np(errors), "o-", color=COLORS["ode"])
    left.loglog(_np(tolerances), _np(tolerances), ":", color="grey", label="error = tolerance")
    left.set(xlabel="tolerance (rtol = atol)", ylabel="error at the final time", title="Precision")
    left.legend()
    right.semilogx(_np(tolerances), _np(nfes), "o-", color=COLORS["resnet"])
    right.set(xlabel="tolerance (rtol = atol)", ylabel="NFE", title="Cost")
    for ax in (left, right):
        ax.invert_xaxis()
    fig.tight_layout()
    return fig


def plot_memory(num_steps, adjoint_bytes, backprop_bytes):
    """Bytes saved for the backward pass against the number of solver steps."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.loglog(_np(num_steps), _np(backprop_bytes), "o-", color=COLORS["backprop"], label="backprop through the solver")
    ax.loglog(_np(num_steps), _np(adjoint_bytes), "s-", color=COLORS["adjoint"], label="adjoint")
    ax.set(xlabel="rk4 steps", ylabel="bytes saved by autograd", title="Memory against depth")
    ax.legend()
    return fig


def plot_nfe_pairs(tolerances, nfe_forward, nfe_backward, nfe_backward_seminorm=None):
    """Backward against forward NFE (Fig. 3c style), one point per tolerance."""
    fig, ax = plt.subplots(figsize=(5, 4))
    f, b = _np(nfe_forward), _np(nfe_backward)
    ax.plot(f, b, "o-", color=COLORS["adjoint"], label="adjoint (default norm)")
    if nfe_backward_seminorm is not None:
        ax.plot(f, _np(nfe_backward_seminorm), "s-", color=COLORS["nf"], label="adjoint (seminorm)")
    top = max(f.max(), b.max()) * 1.1
    ax.plot([0, top], [0, top], ":", color="grey", label="backward = forward")
    ax.plot([0, top], [0, top / 2], "--", color="grey", lw=0.8, label="backward = forward / 2")
    for tol, x, y in zip(tolerances, f, b):
        ax.annotate(f"{tol:g}", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=8)
    ax.set(xlabel="forward NFE", ylabel="backward NFE", title="Cost of the backward solve")
    ax.legend()
    return fig
