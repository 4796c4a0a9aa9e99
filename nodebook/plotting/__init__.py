"""One plotting style for the whole book; chapter figures live in submodules
(``nodebook.plotting.solvers``, ``.mnist``, ...) and every function returns its figure."""

from __future__ import annotations

import matplotlib as mpl

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
