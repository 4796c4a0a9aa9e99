"""One plotting style for the whole book; chapter figures live in submodules
(``nodebook.plotting.solvers``, ``.mnist``, ...) and every function returns its figure."""

from __future__ import annotations

import matplotlib as mpl
import matplotlib.pyplot as plt

COLORS = {"ode": "#1f77b4", "resnet": "#d62728", "rnn": "#ff7f0e", "exact": "#222222",
          "nf": "#9467bd", "adjoint": "#2ca02c", "backprop": "#d62728"}


def use_style() -> None:
    """Small, readable, light figures (PNG at 100 dpi keeps notebooks small)."""
    mpl.rcParams.update({
        "figure.figsize": (6.4, 4.0), "figure.dpi": 100, "savefig.dpi": 100,
        "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
        "axes.spines.right": False, "font.size": 10, "legend.frameon": False,
        "image.cmap": "viridis",
    })


def plot_curves(curves: dict, ylabel: str, logy: bool = True):
    """Training curves, one panel per ``panel``: ``curves`` maps ``(panel, label)`` to
    ``(iterations, values)`` (see :func:`nodebook.train.training_curves`)."""
    panels = list(dict.fromkeys(panel for panel, _ in curves))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3), sharey=True, squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for (p, label), (x, y) in curves.items():
            if p == panel:
                ax.plot(x, y, label=label, lw=1.2)
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel("iteration")
        if logy:
            ax.set_yscale("log")
    axes[0, 0].set_ylabel(ylabel)
    axes[0, -1].legend(fontsize=7)
    fig.tight_layout()
    return fig
