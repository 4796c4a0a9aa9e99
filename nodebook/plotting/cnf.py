"""Figures of the CNF chapter (book/06_cnf); every function returns its figure.

Density images are ``[num, num]`` arrays over ``extent`` as made by
:func:`nodebook.data.toy2d.grid` (z1 along x, z2 along y).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from nodebook.plotting import COLORS

TARGET_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]


def _image(ax, density, extent, title=None):
    density = np.asarray(density)
    if density.ndim == 1:  # flat values over a square grid
        side = int(round(len(density) ** 0.5))
        density = density.reshape(side, side)
    ax.imshow(density, origin="lower", extent=extent, cmap="magma", interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    if title:
        ax.set_title(title, fontsize=9)


def plot_density_matching(targets: dict, learned: dict, widths, extent):
    """Fig. 4 (a-c): per target (row), the target and the learned densities of NF (K) and CNF (M).

    targets: name -> image; learned: (name, "nf" | "cnf", width) -> image.
    """
    names = list(targets)
    cols = 1 + 2 * len(widths)
    fig, axes = plt.subplots(len(names), cols, figsize=(1.6 * cols, 1.7 * len(names)), squeeze=False)
    for r, name in enumerate(names):
        _image(axes[r, 0], targets[name], extent, "target" if r == 0 else None)
        axes[r, 0].set_ylabel(name, fontsize=9)
        for c, (kind, width) in enumerate([("nf", w) for w in widths] + [("cnf", w) for w in widths]):
            label = f"NF K={width}" if kind == "nf" else f"CNF M={width}"
            _image(axes[r, 1 + c], learned[name, kind, width], extent, label if r == 0 else None)
    fig.tight_layout(pad=0.3)
    return fig


def plot_kl_vs_width(kl: dict, widths, spread: dict | None = None):
    """Fig. 4 (d): KL(q || p) in nats against K (NF layers) or M (CNF hidden units), per target.

    kl: (name, "nf" | "cnf", width) -> float; spread: the same keys -> the half-width of an error bar
    (e.g. the standard deviation over seeds), drawn where given (cut at the axis on the log scale).
    """
    names = list(dict.fromkeys(key[0] for key in kl))
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    for name, color in zip(names, TARGET_COLORS):
        for kind, style in (("nf", "--"), ("cnf", "-")):
            values = [kl[name, kind, w] for w in widths]
            errors = [(spread or {}).get((name, kind, w), 0.0) for w in widths]
            below = [min(e, 0.95 * v) for e, v in zip(errors, values)]  # a log axis has no zero
            ax.errorbar(widths, values, yerr=[below, errors], fmt=style, marker="o", color=color, capsize=2,
                        label=f"{kind.upper()}, {name}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(widths, [str(w) for w in widths])
    ax.set_xlabel("K (NF layers) or M (CNF hidden units)")
    ax.set_ylabel("KL(q || p) [nats]")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def plot_flow_stages(data, fractions, stages: dict, extent, title: str = ""):
    """Fig. 5/6: samples and density at fractions of the flow, one pair of rows per model.

    data: [N, 2] training points; stages: model label -> (list of sample
    arrays [N, 2], list of density images), one per fraction.
    """
    rows = 2 * len(stages)
    cols = len(fractions) + 1
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.6 * rows), squeeze=False)
    lim = extent[1]
    for r, (label, (samples, densities)) in enumerate(stages.items()):
        ax_s, ax_d = axes[2 * r], axes[2 * r + 1]
        for c, (frac, pts, dens) in enumerate(zip(fractions, samples, densities)):
            pts = np.asarray(pts)
            ax_s[c + 1].scatter(pts[:, 0], pts[:, 1], s=0.5, alpha=0.5, color=COLORS["ode"] if label == "CNF" else COLORS["nf"])
            ax_s[c + 1].set_xlim(-lim, lim)
            ax_s[c + 1].set_ylim(-lim, lim)
            ax_s[c + 1].set_xticks([])
            ax_s[c + 1].set_yticks([])
            if r == 0:
                ax_s[c + 1].set_title(f"{frac:.0%} of the flow", fontsize=9)
            _image(ax_d[c + 1], dens, extent)
        data_np = np.asarray(data)
        ax_s[0].scatter(data_np[:, 0], data_np[:, 1], s=0.5, alpha=0.5, color="k")
        ax_s[0].set_xlim(-lim, lim)
        ax_s[0].set_ylim(-lim, lim)
        ax_s[0].set_xticks([])
        ax_s[0].set_yticks([])
        ax_s[0].set_ylabel(f"{label}\nsamples", fontsize=9)
        if r == 0:
            ax_s[0].set_title("data", fontsize=9)
        ax_d[0].axis("off")
        ax_d[0].text(0.9, 0.5, f"{label}\ndensity", ha="right", va="center", fontsize=9,
                     transform=ax_d[0].transAxes)
    for ax in axes.flat:
        ax.set_aspect("equal")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(pad=0.3, rect=(0, 0, 1, 0.97) if title else None)
    return fig


def plot_trace_cost(dims, cost: dict):
    """Exact trace against Hutchinson's: seconds per training iteration and forward NFE vs dimension.

    cost: trace name -> {"seconds": [...], "nfe": [...]} aligned with dims.
    """
    fig, (ax_t, ax_n) = plt.subplots(1, 2, figsize=(8.4, 3.2))
    for (name, values), color in zip(cost.items(), [COLORS["exact"], COLORS["ode"], COLORS["rnn"]]):
        ax_t.plot(dims, values["seconds"], marker="o", color=color, label=name.replace("hutchinson", "Hutchinson"))
        ax_n.plot(dims, values["nfe"], marker="o", color=color, label=name)
    for ax in (ax_t, ax_n):
        ax.set_xscale("log", base=2)
        ax.set_xticks(dims, [str(d) for d in dims])
        ax.set_xlabel("dimension D")
    ax_t.set_yscale("log")
    ax_t.set_ylabel("seconds per iteration")
    ax_n.set_ylabel("NFE per forward solve")
    ax_t.legend()
    fig.tight_layout()
    return fig


def plot_estimator_spread(dims, spread: dict):
    """Standard deviation of the Hutchinson log-density estimate (nats) against dimension, per noise."""
    fig, ax = plt.subplots(figsize=(5.0, 3.2))
    for (name, values), color in zip(spread.items(), [COLORS["ode"], COLORS["rnn"]]):
        ax.plot(dims, values, marker="o", color=color, label=name)
    ax.set_xscale("log", base=2)
    ax.set_xticks(dims, [str(d) for d in dims])
    ax.set_yscale("log")
    ax.set_xlabel("dimension D")
    ax.set_ylabel("std of log p estimate [nats]")
    ax.legend()
    fig.tight_layout()
    return fig
