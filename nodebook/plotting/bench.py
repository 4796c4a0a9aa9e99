"""Figure for the solver benchmarks (:mod:`nodebook.experiments.benchmarks`, ``make bench``).

``plot_benchmarks(data)`` takes the dictionary written to
``benchmarks/solvers.json`` and returns one figure: the top row is error
against NFE for each test problem (part b), the bottom row the wall times of
dopri5 on the MLP ODE (part a) and of the adjoint against backpropagation
(part c).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.ticker import NullFormatter

from nodebook.plotting import COLORS, use_style

_SOLVER_STYLE = {
    "nodebook dopri5": dict(color=COLORS["ode"], marker="o"),
    "nodebook bosh3": dict(color=COLORS["nf"], marker="s"),
    "torchdiffeq dopri5": dict(color=COLORS["rnn"], marker="x", linestyle="--"),
    "scipy RK45": dict(color=COLORS["exact"], marker="^", linestyle=":"),
}


def _bars(ax, labels, values, colors, annotations, ylabel, title):
    xs = range(len(labels))
    ax.bar(xs, values, color=colors)
    ax.set_xticks(list(xs), labels, fontsize=8)
    for x, v, note in zip(xs, values, annotations):
        ax.annotate(note, (x, v), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)


def plot_benchmarks(data: dict):
    """data: the JSON dict of the benchmark script (keys "a", "b", "c").
    Returns a matplotlib Figure with 2 x max(3, #problems) panels."""
    use_style()
    problems = data["b"]
    ncols = max(3, len(problems))
    fig, axes = plt.subplots(2, ncols, figsize=(4.0 * ncols, 7.5))
    for ax, (pname, p) in zip(axes[0], problems.items()):
        for sname, r in p["solvers"].items():
            ax.loglog(r["nfe"], r["max_error"], label=sname, **_SOLVER_STYLE.get(sname, {}))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("function evaluations (NFE)")
        ax.set_ylabel("max error")
        ax.set_title(f"(b) {pname}, rtol " + ", ".join(f"{x:g}" for x in p["rtol"]), fontsize=10)
    axes[0][0].legend(fontsize=8)
    for ax in axes[0][len(problems):]:
        ax.axis("off")

    # (a) dopri5 wall time on the MLP ODE
    labels, values, colors, notes = [], [], [], []
    for mode, res in data["a"]["modes"].items():
        for lib in ("nodebook", "torchdiffeq"):
            if lib in res:
                labels.append(f"{lib}\n" + {"no_grad": "no grad"}.get(mode, "fwd+bwd"))
                values.append(res[lib]["median_s"] * 1e3)
                colors.append(COLORS["ode"] if lib == "nodebook" else COLORS["rnn"])
                notes.append(f"nfe {res[lib]['nfe']}")
    _bars(axes[1][0], labels, values, colors, notes, "median wall time (ms)", "(a) dopri5, MLP ODE")

    # (c) adjoint vs backprop
    c = {k: v for k, v in data["c"].items() if isinstance(v, dict)}
    keys = list(c)
    labels = [k.replace(" ", "\n") for k in keys]
    values = [c[k]["median_s"] * 1e3 for k in keys]
    colors = [COLORS["adjoint"] if "adjoint" in k else COLORS["backprop"] for k in keys]
    notes = [f"{c[k]['nfe_total']} calls" for k in keys]
    _bars(axes[1][1], labels, values, colors, notes, "forward + backward (ms)", "(c) adjoint vs backprop")
    for ax in axes[1][2:]:
        ax.axis("off")
    fig.tight_layout()
    return fig
