"""Figures of the time-series chapters (``book/04_trajectory.ipynb``,
``book/05_latent_ode.ipynb``). Every function returns its matplotlib Figure."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from nodebook.plotting import COLORS

LATENT_COLOR = COLORS["ode"]
RNN_COLORS = {"RNN": COLORS["rnn"], "RNN + gaps": "#8c564b"}


def _np(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def plot_snapshots(t, y_obs, y_true, snapshots: list[dict]):
    """Training at a few points: one row per snapshot, three panels each.

    ``snapshots``: dicts with ``iteration``, ``y_pred`` (T, 2) (the learned
    trajectory from y(0)), and ``field`` = (X, Y, U, V) of the learned vector field.
    Left: x and y against t; middle: phase portrait; right: the learned field.
    """
    t, y_obs, y_true = _np(t), _np(y_obs), _np(y_true)
    thin = slice(None, None, max(1, len(t) // 250))  # fewer dots keep the PNG small
    rows = len(snapshots)
    fig, axes = plt.subplots(rows, 3, figsize=(10, 2.4 * rows), squeeze=False)
    for row, snap in zip(axes, snapshots):
        pred = _np(snap["y_pred"])
        ax = row[0]
        for k, name in enumerate("xy"):
            ax.plot(t[thin], y_obs[thin, k], ".", ms=1.5, color="0.6")
            ax.plot(t, y_true[:, k], color=COLORS["exact"], lw=1)
            ax.plot(t, pred[:, k], "--", color=LATENT_COLOR, lw=1.2)
        ax.set_ylabel(f"iteration {snap['iteration']}")
        ax = row[1]
        ax.plot(y_obs[thin, 0], y_obs[thin, 1], ".", ms=1.5, color="0.6", label="data")
        ax.plot(y_true[:, 0], y_true[:, 1], color=COLORS["exact"], lw=1, label="true")
        ax.plot(pred[:, 0], pred[:, 1], "--", color=LATENT_COLOR, lw=1.2, label="learned")
        ax.set_xlim(-2.2, 2.2), ax.set_ylim(-2.2, 2.2), ax.set_aspect("equal")
        X, Y, U, V = (_np(a) for a in snap["field"])
        ax = row[2]
        speed = np.hypot(U, V)
        ax.streamplot(X, Y, U, V, color=speed, cmap="Blues", density=0.9, linewidth=0.8)
        ax.set_xlim(X.min(), X.max()), ax.set_ylim(Y.min(), Y.max()), ax.set_aspect("equal")
    axes[0, 0].set_title("x(t), y(t)")
    axes[0, 1].set_title("phase portrait")
    axes[0, 2].set_title("learned vector field")
    axes[0, 1].legend(loc="upper right", fontsize=7)
    axes[-1, 0].set_xlabel("t")
    fig.tight_layout()
    return fig


def plot_extrapolation(t, y_obs, y_true, num_train: int, predictions: dict):
    """Models trained on the first ``num_train`` points, extrapolating the rest.

    ``predictions``: name -> (T - num_train, 2) predictions at ``t[num_train:]``.
    Left: x(t) (observed part shaded); right: the phase portrait.
    """
    t, y_obs, y_true = _np(t), _np(y_obs), _np(y_true)
    colors = {"ODE": LATENT_COLOR, "RNN": COLORS["rnn"]}
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [1.6, 1]})
    ax0.axvspan(t[0], t[num_train - 1], color="0.92", label="training part")
    ax0.plot(t, y_obs[:, 0], ".", ms=1.5, color="0.6")
    ax0.plot(t, y_true[:, 0], color=COLORS["exact"], lw=1, label="true")
    ax1.plot(y_true[:, 0], y_true[:, 1], color=COLORS["exact"], lw=1, label="true")
    ax1.plot(y_obs[:num_train, 0], y_obs[:num_train, 1], ".", ms=1.5, color="0.6", label="training data")
    for name, pred in predictions.items():
        pred = _np(pred)
        color = colors.get(name, COLORS["rnn"] if name.startswith("RNN") else None)
        ax0.plot(t[num_train:], pred[:, 0], color=color, lw=1.2, label=name)
        ax1.plot(pred[:, 0], pred[:, 1], color=color, lw=1.2, label=name)
    ax0.set_xlabel("t"), ax0.set_ylabel("x(t)")
    ax0.legend(loc="upper right", fontsize=8, ncol=2)
    ax1.set_aspect("equal"), ax1.set_xlabel("x"), ax1.set_ylabel("y")
    fig.tight_layout()
    return fig


def plot_spiral_data(data, obs, num: int = 4):
    """A few spirals of the data set: truth over the whole grid, noisy observed part, the sampled observations."""
    fig, axes = plt.subplots(1, num, figsize=(2.6 * num, 2.8))
    picks = np.linspace(0, len(data) - 1, num).astype(int)
    for ax, i in zip(axes, picks):
        truth, y = _np(data.y_true[i]), _np(data.y[i])
        T = data.num_observed
        ax.plot(truth[:T, 0], truth[:T, 1], color=COLORS["exact"], lw=1)
        ax.plot(truth[T:, 0], truth[T:, 1], ":", color=COLORS["exact"], lw=1)
        ax.plot(y[:T, 0], y[:T, 1], ".", ms=2, color="0.75")
        ob = _np(obs.y[i])
        ax.plot(ob[:, 0], ob[:, 1], "o", ms=3, mfc="none", color=COLORS["rnn"])
        ax.set_title("clockwise" if bool(data.clockwise[i]) else "counter-clockwise", fontsize=9)
        ax.set_aspect("equal"), ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    return fig


def plot_reconstructions(data, obs, reconstructions: dict, extrapolations: dict, picks, n: int):
    """The paper's Fig. 8: for a few test spirals, each model's reconstruction and extrapolation.

    ``reconstructions``: model name -> (N, k, 2) points on the observed part
    (solid line), ``extrapolations``: name -> (N, m, 2) predictions on the
    extrapolation part (dashed); ``picks``: spiral indices. One row per model,
    one column per spiral; the truth is grey, the observations black dots.
    """
    names = list(extrapolations)
    fig, axes = plt.subplots(len(names), len(picks), figsize=(2.4 * len(picks), 2.4 * len(names)),
                             squeeze=False)
    for r, name in enumerate(names):
        color = RNN_COLORS.get(name, LATENT_COLOR)
        for c, i in enumerate(picks):
            ax = axes[r, c]
            truth, ob = _np(data.y_true[i]), _np(obs.y[i])
            rec, ext = _np(reconstructions[name][i]), _np(extrapolations[name][i])
            ax.plot(truth[:, 0], truth[:, 1], color="0.6", lw=1)
            ax.plot(ob[:, 0], ob[:, 1], ".", ms=3, color=COLORS["exact"])
            ax.plot(rec[:, 0], rec[:, 1], color=color, lw=1.2)
            ax.plot(ext[:, 0], ext[:, 1], "--", color=color, lw=1.2)
            ax.set_aspect("equal"), ax.set_xticks([]), ax.set_yticks([])
            lim = 1.2 * np.abs(truth).max()
            ax.set_xlim(-lim, lim), ax.set_ylim(-lim, lim)
            if c == 0:
                ax.set_ylabel(name)
    fig.suptitle(f"n = {n}: reconstruction (solid), extrapolation (dashed), truth (grey), observations (dots)",
                 fontsize=9)
    fig.tight_layout()
    return fig


def plot_latent_paths(z, clockwise, num_observed: int):
    """Latent trajectories (N, T, latent) projected on their first two principal components,
    coloured by direction; the observed part solid, the extrapolation dashed."""
    z = _np(z)
    flat = z.reshape(-1, z.shape[-1])
    mean = flat.mean(0)
    _, _, vt = np.linalg.svd(flat - mean, full_matrices=False)
    proj = (z - mean) @ vt[:2].T
    fig, ax = plt.subplots(figsize=(5, 4))
    for i in range(z.shape[0]):
        color = COLORS["rnn"] if bool(clockwise[i]) else LATENT_COLOR
        ax.plot(proj[i, :num_observed, 0], proj[i, :num_observed, 1], color=color, lw=0.8, alpha=0.7)
        ax.plot(proj[i, num_observed:, 0], proj[i, num_observed:, 1], "--", color=color, lw=0.8, alpha=0.7)
        ax.plot(proj[i, 0, 0], proj[i, 0, 1], "o", ms=3, color=color)
    ax.plot([], [], color=LATENT_COLOR, label="counter-clockwise")
    ax.plot([], [], color=COLORS["rnn"], label="clockwise")
    ax.set_xlabel("latent PC 1"), ax.set_ylabel("latent PC 2")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_histories(histories: dict, key: str = "loss", ylabel: str = "training loss", logy: bool = False):
    """Training curves: ``histories`` maps a label to a list of history rows (dicts with ``step`` and ``key``)."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for label, history in histories.items():
        ax.plot([row["step"] + 1 for row in history], [row[key] for row in history], label=label)
    ax.set_xlabel("training step (chunk of iterations)"), ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_rmse_table(ns, ours: dict, paper: dict, paper_label: str = "paper", spreads: dict | None = None):
    """Table 2 as a bar chart: RMSE against n for each model, ours (bars, with ``spreads`` as error
    bars where given) and the paper's (white diamonds on the bar named by ``paper``'s key,
    labelled ``paper_label`` once)."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    width = 0.8 / len(ours)
    x = np.arange(len(ns))
    for k, (name, values) in enumerate(ours.items()):
        color = RNN_COLORS.get(name, LATENT_COLOR)
        ax.bar(x + (k - (len(ours) - 1) / 2) * width, values, width, color=color, label=f"{name} (ours)",
               yerr=None if spreads is None else spreads[name], capsize=3)
    names = list(ours)
    for j, (name, values) in enumerate(paper.items()):
        k = names.index(name) if name in names else 0
        ax.plot(x + (k - (len(ours) - 1) / 2) * width, values, linestyle="none", marker="D", ms=6,
                markerfacecolor="white", markeredgecolor="black", markeredgewidth=1.5,
                label=paper_label if j == 0 else None)
    ax.set_xticks(x, [f"{n}/100" for n in ns]), ax.set_ylabel("extrapolation RMSE")
    ax.set_yscale("log")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def plot_rmse_by_time(t, curves: dict, ns, title: str = ""):
    """The extrapolation RMSE at each future time: one panel per ``n`` in ``ns``, one line per model.
    ``curves`` maps ``(model, n)`` to an (m,) curve on the times ``t`` (m,)."""
    fig, axes = plt.subplots(1, len(ns), figsize=(3.2 * len(ns), 3), sharey=True, squeeze=False)
    for ax, n in zip(axes[0], ns):
        for (name, m), curve in curves.items():
            if m == n:
                ax.plot(_np(t), _np(curve), color=RNN_COLORS.get(name, LATENT_COLOR), label=name)
        ax.set_title(f"n = {n}", fontsize=9), ax.set_xlabel("t (extrapolation)")
    axes[0, 0].set_ylabel("RMSE at time t"), axes[0, 0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
