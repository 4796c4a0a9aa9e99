"""Figures of the limits chapter (Sec. 6 of the paper, and beyond it); every function returns its figure."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import torch

from nodebook.plotting import COLORS


def _np(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def plot_minibatch(rows_by_model: dict):
    """NFE of one combined solve against the mean and largest single-sample NFE (left), and the
    ratio of seconds, K single solves over one combined (right), against K: one line style per model.
    ``rows_by_model`` maps a label to the rows of :func:`nodebook.experiments.limits.minibatch_nfe`."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    for (label, rows), color in zip(rows_by_model.items(), ["#1f77b4", "#ff7f0e", "#2ca02c"]):
        k = [r["k"] for r in rows]
        left.plot(k, [r["nfe_combined"] for r in rows], "-o", color=color, ms=3, label=f"{label}: one combined solve")
        left.plot(k, [r["nfe_single_mean"] for r in rows], "--", color=color, label=f"{label}: single, mean")
        left.plot(k, [r["nfe_single_max"] for r in rows], ":", color=color, label=f"{label}: single, largest")
        right.plot(k, [r["seconds_single"] / r["seconds_combined"] for r in rows], "-o", color=color, ms=3,
                   label=label)
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("samples K")
    left.set_ylabel("forward NFE")
    left.legend(fontsize=6)
    right.set_yscale("log")
    right.set_ylabel("seconds: K single solves / one combined")
    right.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_crossing(trajectories: dict, t):
    """g(x) = -x: the first coordinate of z(t) from x = -1 and x = 1, one panel per model.
    ``trajectories`` maps a label to a tensor (T, 2, d + p) on times ``t`` (T,)."""
    fig, axes = plt.subplots(1, len(trajectories), figsize=(3.4 * len(trajectories), 2.8), squeeze=False)
    for ax, (label, z) in zip(axes[0], trajectories.items()):
        for i, (start, color) in enumerate(((-1, "#1f77b4"), (1, "#d62728"))):
            ax.plot(_np(t), _np(z[:, i, 0]), color=color, label=f"x = {start}")
        ax.axhline(0, color="#888", lw=0.8)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("t")
    axes[0, 0].set_ylabel("z(t), first coordinate")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_annuli(features: dict, y):
    """The annuli after the flow: the first two coordinates of z(T), coloured by label, one panel
    per model. ``features`` maps a label to (N, >= 2) states; ``y`` (N, 1) the +-1 labels."""
    fig, axes = plt.subplots(1, len(features), figsize=(3.2 * len(features), 3.0), squeeze=False)
    colors = np.where(_np(y)[:, 0] > 0, "#d62728", "#1f77b4")
    for ax, (label, z) in zip(axes[0], features.items()):
        z = _np(z)
        ax.scatter(z[:, 0], z[:, 1], c=colors, s=2)
        ax.set_title(label, fontsize=9)
        ax.set_aspect("equal", adjustable="datalim")
    fig.tight_layout()
    return fig


def plot_reconstruction(errors: dict, horizons, tolerances):
    """Relative error of z(0) reconstructed backwards from z(T), against the horizon T, one line per
    tolerance; a backward solve that blew up is marked with an x at the top. ``errors[tol]`` lists one
    value per horizon (``inf`` for a blow-up)."""
    fig, ax = plt.subplots(figsize=(5.2, 3.2))
    finite = [e for row in errors.values() for e in row if math.isfinite(e)]
    top = 10 * max(finite) if finite else 1.0
    for tol in tolerances:
        values = errors[tol]
        line, = ax.plot(horizons, [e if math.isfinite(e) else np.nan for e in values], "-o", ms=3,
                        label=f"tol {tol:g}")
        blown = [h for h, e in zip(horizons, values) if not math.isfinite(e)]
        ax.plot(blown, [top] * len(blown), "x", color=line.get_color(), ms=8)
    ax.set_yscale("log")
    ax.set_xlabel("horizon T")
    ax.set_ylabel("|z_back(0) - z(0)| / |z(0)|")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_adjoint_state(traj, backprop=None):
    """a(t) = dL/dz(t) from the backward solve (lines, one per coordinate), with the jumps at the
    observation times (dotted verticals) and, if given, backprop's dL/dz(t_i) (black circles); the
    lower panel shows the state, forward (solid) and reconstructed backwards (dashed)."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.4, 4.6), sharex=True)
    t = _np(traj.t)
    for j, color in zip(range(traj.a.shape[-1]), ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]):
        top.plot(t, _np(traj.a[:, j]), color=color, label=f"a_{j + 1}(t)")
        bottom.plot(t, _np(traj.z_forward[:, j]), color=color, label=f"z_{j + 1}(t)")
        bottom.plot(t, _np(traj.z[:, j]), "--", color=color)
        if backprop is not None:
            top.plot(t[_np(traj.obs_index)], _np(backprop[:, j]), "o", mfc="none", color="black", ms=6)
    for ti in t[_np(traj.obs_index)]:
        top.axvline(ti, color="#888", lw=0.8, ls=":")
    top.set_ylabel("adjoint a(t) = dL/dz(t)")
    top.legend(fontsize=7)
    bottom.set_xlabel("t")
    bottom.set_ylabel("state z(t)")
    bottom.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_gradient_costs(costs: dict):
    """Saved bytes (left) and seconds (right) of the three ways to a gradient, bars."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 2.8))
    names = list(costs)
    colors = [COLORS.get(name, "#9467bd") for name in names]
    left.bar(names, [costs[n]["saved_bytes"] / 2 ** 10 for n in names], color=colors)
    left.set_yscale("log")
    left.set_ylabel("saved for backward [KiB]")
    right.bar(names, [costs[n]["seconds"] * 1e3 for n in names], color=colors)
    right.set_ylabel("forward + backward [ms]")
    fig.tight_layout()
    return fig
