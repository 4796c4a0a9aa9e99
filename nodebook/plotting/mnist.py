"""Figures of chapter ``03_mnist``: the paper's Fig. 3 and memory against depth. Each returns its Figure."""

from __future__ import annotations

import matplotlib.pyplot as plt

from nodebook.plotting import COLORS


def _time_against_nfe(ax, sweep: list[dict]) -> None:
    """Fig. 3b: forward time per batch against forward NFE, each point labelled with its tolerance."""
    ax.plot([r["nfe"] for r in sweep], [1000 * r["seconds"] for r in sweep], "o-", color=COLORS["ode"])
    for r in sweep:
        ax.annotate(f"{r['tol']:g}", (r["nfe"], 1000 * r["seconds"]), textcoords="offset points",
                    xytext=(4, -10), fontsize=8)
    ax.set(xlabel="forward NFE", ylabel="forward time per batch (ms)", title="(b) time grows with NFE")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)


def _backward_against_forward(c, adjoint: list[dict]) -> None:
    """Fig. 3c: backward (adjoint) NFE against forward NFE, with the paper's "half" line."""
    f = [r["nfe_forward"] for r in adjoint]
    bw = [r["nfe_backward"] for r in adjoint]
    top = 1.1 * max(f + bw)
    c.plot([0, top], [0, top], ":", color="grey", label="backward = forward")
    c.plot([0, top], [0, top / 2], "--", color="grey", label="backward = forward / 2 (paper)")
    c.plot(f, bw, "o", color=COLORS["adjoint"], label="measured (tolerances)")
    labels: dict = {}  # tolerances landing on the same point share one label
    for r in adjoint:
        labels.setdefault((r["nfe_forward"], r["nfe_backward"]), []).append(f"{r['tol']:g}")
    for point, tols in labels.items():
        c.annotate("tol " + ", ".join(tols), point, textcoords="offset points", xytext=(5, -10), fontsize=7)
    c.set(xlabel="forward NFE", ylabel="backward NFE (adjoint)", title="(c) backward vs forward NFE",
          xlim=(0, top), ylim=(0, top))
    c.legend(loc="upper left", fontsize=8)


def fig3(sweep: list[dict], adjoint: list[dict], probes: list[dict], iterations_per_epoch: int,
         sweep_size: int, probe_tol: float):
    """The paper's Fig. 3 from a trained ODE-Net, four panels.

    sweep: rows of :func:`nodebook.experiments.mnist.tolerance_sweep` (a: NFE and test error
    against tolerance; b: forward time against NFE); adjoint: rows of
    :func:`nodebook.experiments.mnist.adjoint_nfe` (c: backward against forward NFE);
    probes: ``{"iteration", "nfe_adaptive"}`` logged during training (d).
    """
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.2))
    (a, b), (c, d) = axes
    tols = [r["tol"] for r in sweep]
    nfe = [r["nfe"] for r in sweep]
    a.semilogx(tols, nfe, "o-", color=COLORS["ode"], label="NFE")
    a.set(xlabel="solver tolerance (rtol = atol)", ylabel="forward NFE", title="(a) tolerance sweep")
    a.invert_xaxis()
    err = a.twinx()
    err.semilogx(tols, [100 * r["error"] for r in sweep], "s--", color=COLORS["resnet"], label="test error")
    err.set_ylabel(f"test error (%) on {sweep_size} images", color=COLORS["resnet"])
    err.set_ylim(0, 1.5 * max(100 * r["error"] for r in sweep) + 0.5)
    err.grid(False)
    a.legend(handles=a.get_lines() + err.get_lines(), loc="upper left")

    _time_against_nfe(b, sweep)

    _backward_against_forward(c, adjoint)

    d.plot([p["iteration"] / iterations_per_epoch for p in probes], [p["nfe_adaptive"] for p in probes],
           ".-", color=COLORS["ode"])
    d.set(xlabel="training epoch", ylabel=f"forward NFE (dopri5, tol {probe_tol:g})",
          title="(d) NFE during training")
    d.set_ylim(0, 1.2 * max(p["nfe_adaptive"] for p in probes))
    fig.tight_layout()
    return fig


def fig3_adaptive(errors: list[dict], sweep: list[dict], adjoint: list[dict], history: list[dict],
                  train_solver: str, window: int = 50):
    """The paper's Fig. 3 from an ODE-Net trained with an adaptive solver, four panels.

    errors: rows of :func:`nodebook.experiments.mnist.numerical_error` (a: the
    ODE block's numerical error and NFE against the tolerance); sweep: rows of
    :func:`nodebook.experiments.mnist.tolerance_sweep` (a: test error beside;
    b: forward time against NFE); adjoint: rows of
    :func:`nodebook.experiments.mnist.adjoint_nfe` (c); history: the training
    log, whose ``nfe_trace`` holds every batch's forward NFE (d, a moving
    average over ``window`` batches; ``train_solver`` names the training solve, e.g. "dopri5, tol 0.001").
    """
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.2))
    (a, b), (c, d) = axes
    tols = [r["tol"] for r in errors]
    a.loglog(tols, [r["relative_error"] for r in errors], "o-", color=COLORS["ode"], label="numerical error of z(1)")
    a.set(xlabel="solver tolerance (rtol = atol)", ylabel="relative error against a float64 solve",
          title="(a) the tolerance controls the error")
    a.invert_xaxis()
    nfe_axis = a.twinx()
    nfe_axis.semilogx(tols, [r["nfe"] for r in errors], "s--", color=COLORS["resnet"], label="forward NFE")
    nfe_axis.set_ylabel("forward NFE", color=COLORS["resnet"])
    nfe_axis.grid(False)
    error_at = {e["tol"]: e["relative_error"] for e in errors}
    for r in sweep:
        if r["tol"] in error_at:
            a.annotate(f"{100 * r['error']:.2f}%", (r["tol"], error_at[r["tol"]]), textcoords="offset points",
                       xytext=(4, 6), fontsize=7)
    a.legend(handles=a.get_lines() + nfe_axis.get_lines(), loc="upper left", fontsize=8,
             title="labels: test error", title_fontsize=7)

    _time_against_nfe(b, sweep)

    _backward_against_forward(c, adjoint)

    trace = [n for row in history for n in row["nfe_trace"]]
    per_epoch = len(history[0]["nfe_trace"])
    smooth = [sum(trace[max(0, i - window + 1):i + 1]) / len(trace[max(0, i - window + 1):i + 1])
              for i in range(len(trace))]
    epochs = [(i + 1) / per_epoch for i in range(len(trace))]
    d.plot(epochs, trace, ",", color=COLORS["ode"], alpha=0.3)
    d.plot(epochs, smooth, "-", color=COLORS["ode"], label=f"mean over {window} batches")
    d.set(xlabel="training epoch", ylabel=f"forward NFE per batch ({train_solver})",
          title="(d) NFE during training")
    d.set_ylim(0, 1.2 * max(trace))
    d.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def training_curves(runs: dict):
    """Training loss and test error per epoch of every model (``runs`` maps a name to its
    :class:`nodebook.checkpoint.Run`): are the runs converged?"""
    fig, (loss, error) = plt.subplots(1, 2, figsize=(10, 3.8))
    colors = {"odenet": COLORS["ode"], "resnet": COLORS["resnet"], "rknet": COLORS["rnn"],
              "mlp": COLORS["exact"], "stem": COLORS["nf"]}
    for name, run in runs.items():
        epochs = [r["step"] + 1 for r in run.history]
        loss.semilogy(epochs, [r["loss"] for r in run.history], "o-", ms=3, label=name, color=colors.get(name))
        error.semilogy(epochs, [100 * (1 - r["test_accuracy"]) for r in run.history], "o-", ms=3, label=name,
                       color=colors.get(name))
    loss.set(xlabel="epoch", ylabel="training loss (cross-entropy)", title="training loss")
    error.set(xlabel="epoch", ylabel="test error (%)", title="test error after each epoch")
    error.legend(fontsize=8)
    fig.tight_layout()
    return fig


def memory_vs_depth(rows: list[dict]):
    """Training memory (MB) against depth: ResNet blocks vs ODE-Net / RK-Net rk4 steps."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    depth = [r["depth"] for r in rows]
    for key, label, color in [("resnet", "ResNet: residual blocks", COLORS["resnet"]),
                              ("rknet", "RK-Net: rk4 steps (backprop)", COLORS["rnn"]),
                              ("odenet", "ODE-Net: rk4 steps (adjoint)", COLORS["ode"])]:
        ax.plot(depth, [r[key] / 2**20 for r in rows], "o-", color=color, label=label)
    ax.set(xlabel="depth (blocks or solver steps)", ylabel=f"training memory (MB, {rows[0]['kind']})",
           title="Memory as depth grows")
    ax.set_ylim(bottom=0)
    ax.legend()
    fig.tight_layout()
    return fig
