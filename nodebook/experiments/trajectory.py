"""The runs of chapter "Learning dynamics from a trajectory" (``book/04_trajectory.ipynb``).

One noisy trajectory of the cubic spiral (:func:`nodebook.data.spirals.cubic_spiral`)
and three training runs, all made by :func:`train`:

- ``"fit"``: a neural vector field (:class:`nodebook.models.dynamics.NeuralVectorField`)
  fitted on windows of the whole trajectory, in stages (``snapshot_steps``), each
  stage a checkpoint of its own so the chapter can show the model along training;
- ``"ode"``: the same model trained on windows of the first ``train_fraction`` only;
- ``"rnn"``: a recurrent network (:class:`nodebook.models.rnn.RNNForecaster`, a GRU
  unless ``cell`` says otherwise) trained on the same first part to extrapolate by
  feeding back its own predictions.

The RNN reads the raw observations; the ODE's field reads the cube of the state
with the setting ``cubic`` (the torchdiffeq demo's feature), the raw state without.
Each run's checkpoint is keyed by the settings that determine it (:func:`run_key`):
the ODE runs do not depend on the RNN's settings, nor the RNN's on the ODE's.
:func:`extrapolation_grid` runs the ODE with both inputs and the RNN with every
cell of ``rnn_cells``, at every seed.
"""

from __future__ import annotations

import copy
import math

import torch

from nodebook.checkpoint import Run, load_or_train
from nodebook.data.spirals import CubicSpiral, Trajectory, cubic_spiral, rmse, to_device
from nodebook.experiments.common import RNN_MAX_GRAD_NORM, rnn_train_step, solver_options
from nodebook.models import dynamics, rnn
from nodebook.train import chunked_step, make_optimizer

KINDS = ("fit", "ode", "rnn")
DATA_KEYS = ("num_points", "t_end", "noise_std")
ODE_KEYS = ("num_hiddens", "cubic", "batch_size", "window", "lr", "lr_decay", "iterations_per_step",
            "method", "rtol", "atol")
RNN_KEYS = ("rnn_hiddens", "rnn_lr_decay", "rnn_window", "rnn_context", "rnn_batch_size", "iterations_per_step",
            "rnn_steps")


def make_data(settings: dict, seed: int = 0, device="cpu") -> Trajectory:
    """The chapter's noisy cubic-spiral trajectory (seeded by ``seed``), on ``device``."""
    data = cubic_spiral(settings["num_points"], settings["t_end"], noise_std=settings["noise_std"], seed=seed)
    return to_device(data, device)


def num_train(data: Trajectory, settings: dict) -> int:
    """How many observations (the first ones) the extrapolation runs train on."""
    return int(settings["train_fraction"] * len(data.t))


def run_key(kind: str, settings: dict, seed: int, stage: int = 0, cell: str = "gru", lr: float | None = None) -> dict:
    """The settings that determine run ``kind`` (and, for ``"fit"``, its stage ``stage``).

    The data (size, span, noise, seed) and the model's and training's own
    settings; the RNN adds its ``cell`` and learning rate ``lr``; the
    extrapolation runs add the training fraction; stage ``k`` of the fit adds
    the cumulative step counts of stages ``0..k`` (its starting weights are
    those of stage ``k - 1``). The number of steps of the run itself is added
    by :func:`nodebook.checkpoint.load_or_train`.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown run {kind!r}; choose one of {KINDS}")
    key = {k: settings[k] for k in DATA_KEYS}
    key["seed"] = seed
    key.update({k: settings[k] for k in (RNN_KEYS if kind == "rnn" else ODE_KEYS)})
    if kind == "rnn":
        if lr is None:
            raise ValueError("an RNN run needs its learning rate (tune_rnn_lr chooses it)")
        key.update(rnn_cell=cell, rnn_lr=lr)
    if kind == "fit":
        key["snapshot_steps"] = list(settings["snapshot_steps"][:stage + 1])
    else:
        key["train_fraction"] = settings["train_fraction"]
    return key


def ode_train_step(func: torch.nn.Module, optimizer: torch.optim.Optimizer, t: torch.Tensor, y: torch.Tensor,
                   batch_size: int, window: int, iterations: int, last_start: int | None = None,
                   scheduler=None, **solver):
    """A ``train_step(step)`` for :func:`nodebook.checkpoint.load_or_train`: ``iterations``
    optimizer steps on :func:`nodebook.models.dynamics.window_loss` (windows drawn with
    torch's global generator, starting at most at ``last_start``), then one ``scheduler``
    step if given. Returns the chunk's mean loss."""
    return chunked_step(lambda: dynamics.window_loss(func, t, y, batch_size, window, last_start, **solver),
                        optimizer, iterations, scheduler=scheduler)




def build(kind: str, settings: dict, device="cpu", cell: str = "gru") -> torch.nn.Module:
    """The untrained model of run ``kind`` on ``device``: the recurrent network with ``cell`` for
    ``"rnn"``, the neural vector field for the others (the current global seed draws its weights)."""
    if kind not in KINDS:
        raise ValueError(f"unknown run {kind!r}; choose one of {KINDS}")
    if kind == "rnn":
        return rnn.RNNForecaster(num_hiddens=settings["rnn_hiddens"], cell=cell).to(device)
    return dynamics.NeuralVectorField(num_hiddens=settings["num_hiddens"], cubic=settings["cubic"]).to(device)


def train(kind: str, data: Trajectory, settings: dict, *, seed: int = 0, device="cpu", cell: str = "gru",
          lr: float | None = None, retrain: bool = False, progress: bool = False) -> tuple[torch.nn.Module, list[Run]]:
    """Seed, build the model of run ``kind`` (see :data:`KINDS`), train it with Adam and an
    exponential learning-rate decay (one decay per step of ``iterations_per_step``
    iterations), or load its committed checkpoints. Returns ``(model, runs)``: one
    :class:`nodebook.checkpoint.Run` per stage (``"fit"``: one per entry of
    ``snapshot_steps``, each continuing the previous one; the others: one).
    The RNN (recurrence ``cell``) trains at learning rate ``lr`` (from
    :func:`tune_rnn_lr`) for ``rnn_steps`` steps, at least the ODE's ``split_steps``."""
    if kind not in KINDS:
        raise ValueError(f"unknown run {kind!r}; choose one of {KINDS}")
    S = settings
    last = num_train(data, S)
    if kind == "rnn" and S["rnn_steps"] < S["split_steps"]:
        raise ValueError(f"rnn_steps ({S['rnn_steps']}) must be at least the ODE's split_steps ({S['split_steps']}): "
                         "the baseline gets at least the same number of iterations")
    key = run_key(kind, S, seed, cell=cell, lr=lr) if kind == "rnn" else None
    torch.manual_seed(seed)
    model = build(kind, S, device, cell=cell)
    if kind == "rnn":
        lr_decay, stages = S["rnn_lr_decay"], [S["rnn_steps"]]
    else:
        lr, lr_decay = S["lr"], S["lr_decay"]
        stages = list(S["snapshot_steps"]) if kind == "fit" else [S["split_steps"]]
    optimizer, scheduler = make_optimizer(model.parameters(), "adam", lr, lr_decay)
    if kind == "rnn":
        step = rnn_train_step(model, optimizer, data.y[None, :last], data.t[:last], S["rnn_context"],
                              S["rnn_batch_size"], S["iterations_per_step"], window=S["rnn_window"],
                              scheduler=scheduler, max_grad_norm=RNN_MAX_GRAD_NORM)
    else:
        step = ode_train_step(model, optimizer, data.t, data.y, S["batch_size"], S["window"],
                              S["iterations_per_step"], last_start=None if kind == "fit" else last - S["window"],
                              scheduler=scheduler, **solver_options(S))
    runs, done = [], 0
    for stage, steps in enumerate(stages):
        name = f"trajectory-fit{stage}" if kind == "fit" else f"trajectory-{kind}-half"
        if kind == "rnn" and cell != "gru":
            name = f"trajectory-rnn_{cell}-half"
        runs.append(load_or_train(name, key or run_key(kind, S, seed, stage), model, step, steps - done,
                                  optimizer=optimizer, scheduler=scheduler, retrain=retrain, progress=progress))
        done = steps
    return model, runs


def snapshots(model: torch.nn.Module, runs: list[Run], data: Trajectory, settings: dict) -> list[dict]:
    """The fit at the end of each stage (weights read back from each stage's checkpoint):
    dicts with ``iteration``, ``history`` (the stage's log), ``y_pred`` (the model's
    trajectory from the first observation over the whole grid), ``field`` (the learned
    vector field on a grid, :func:`nodebook.models.dynamics.vector_field_grid`),
    ``window_loss`` (the stage's last logged training loss), ``rmse`` (of ``y_pred``
    against the noise-free truth) and ``field_cosine`` (:func:`field_alignment`)."""
    device = next(model.parameters()).device
    func = copy.deepcopy(model)
    out = []
    for run, steps in zip(runs, settings["snapshot_steps"]):
        func.load_state_dict(torch.load(run.path, map_location=device, weights_only=True)["model"])
        y_pred = dynamics.trajectory(func, data.y[0], data.t, **solver_options(settings))
        out.append(dict(iteration=steps * settings["iterations_per_step"], history=run.history, y_pred=y_pred,
                        field=dynamics.vector_field_grid(func), window_loss=run.history[-1]["loss"],
                        rmse=rmse(y_pred, data.y_true), field_cosine=field_alignment(func, data)))
    return out


def extrapolate(kind: str, model: torch.nn.Module, data: Trajectory, settings: dict) -> torch.Tensor:
    """Model ``kind``'s prediction on the part it did not see, (T - num_train, 2). The ODE is solved
    from the last observation it saw; the RNN reads every observation it saw and then runs on its
    own predictions, one step per time."""
    last = num_train(data, settings)
    if kind == "rnn":
        return rnn.forecast(model, data.y[None, :last], data.t[:last], data.t[last:])[0]
    return dynamics.trajectory(model, data.y[last - 1], data.t[last - 1:], **solver_options(settings))[1:]


def extrapolations(ode: torch.nn.Module, net: rnn.RNNForecaster, data: Trajectory,
                   settings: dict) -> dict[str, torch.Tensor]:
    """Both models' predictions on the part they did not see: ``{"ODE": ..., "RNN": ...}``, each
    (T - num_train, 2) (:func:`extrapolate`)."""
    return {"ODE": extrapolate("ode", ode, data, settings), "RNN": extrapolate("rnn", net, data, settings)}


def roughness(path: torch.Tensor, truth: torch.Tensor) -> float:
    """How jagged a predicted path (T, d) is next to the truth (T, d) on the same times: the mean
    norm of its second differences divided by the truth's (1: as smooth as the truth; a path that
    zigzags from step to step scores far above 1)."""
    if path.shape != truth.shape or path.shape[0] < 3:
        raise ValueError(f"need two paths of the same shape with at least 3 points, got {tuple(path.shape)} "
                         f"and {tuple(truth.shape)}")
    second = lambda y: torch.diff(y, n=2, dim=0).norm(dim=-1).mean()  # noqa: E731
    return float(second(path) / second(truth))


def tune_rnn_lr(data: Trajectory, settings: dict, *, cell: str = "gru", seed: int = 0, device="cpu",
                retrain: bool = False) -> dict:
    """Choose the RNN's learning rate among ``rnn_lr_grid``: train it at each on the first part
    (seed ``seed``) and keep the one with the lowest training loss over its last
    ``max(1, rnn_steps // 10)`` steps. The loss includes free-running rollouts, so it measures
    extrapolation inside the training part; the unseen part is never looked at.
    Returns ``{"lr": best, "loss": {lr: final loss}}``."""
    S = settings
    losses = {}
    for lr in S["rnn_lr_grid"]:
        _, (run,) = train("rnn", data, S, seed=seed, device=device, cell=cell, lr=lr, retrain=retrain)
        tail = [row["loss"] for row in run.history[-max(1, S["rnn_steps"] // 10):]]
        losses[lr] = sum(tail) / len(tail)
    finite = {lr: v for lr, v in losses.items() if math.isfinite(v)}
    if not finite:
        raise RuntimeError(f"every learning rate of {S['rnn_lr_grid']} diverged for the {cell} RNN")
    return {"lr": min(finite, key=finite.get), "loss": losses}


def extrapolation_models(settings: dict) -> dict[str, tuple[str, str, bool]]:
    """The models of :func:`extrapolation_grid`: ``{label: (kind, cell, cubic)}``. ``"ODE"`` reads the
    raw state, as the RNNs do; ``"ODE (y³)"`` the cube of it (the torchdiffeq demo's feature,
    which hands the model the true nonlinearity); ``"RNN <cell>"`` for every cell of ``rnn_cells``."""
    return ({"ODE": ("ode", "gru", False), "ODE (y³)": ("ode", "gru", True)}
            | {f"RNN {cell}": ("rnn", cell, settings["cubic"]) for cell in settings["rnn_cells"]})


def extrapolation_grid(settings: dict, *, device="cpu", retrain: bool = False) -> dict:
    """The ODE with raw and with cubed inputs and the RNN (every cell of ``rnn_cells``, each at the
    learning rate :func:`tune_rnn_lr` chose for it on the first seed's data) at every seed of
    ``seeds``, each seed with its own noise draw and initial weights.

    Returns ``{"lrs": {cell: tuned}, "metrics": {(model, seed): {"rmse", "roughness"}},
    "runs": {(model, seed): Run}, "kept": {"data", "models", "predictions"}}`` where a model is
    a label of :func:`extrapolation_models`, RMSE and roughness (:func:`roughness`) are measured on the
    unseen part against the noise-free truth, and ``kept`` holds the first seed's.
    """
    S = settings
    seeds = S["seeds"]
    first = make_data(S, seeds[0], device)
    lrs = {cell: tune_rnn_lr(first, S, cell=cell, seed=seeds[0], device=device, retrain=retrain)
           for cell in S["rnn_cells"]}
    metrics, runs, kept = {}, {}, {}
    for seed in seeds:
        data = first if seed == seeds[0] else make_data(S, seed, device)
        truth = data.y_true[num_train(data, S):]
        for label, (kind, cell, cubic) in extrapolation_models(S).items():
            model, (run,) = train(kind, data, dict(S, cubic=cubic), seed=seed, device=device, cell=cell,
                                  lr=lrs[cell]["lr"] if kind == "rnn" else None, retrain=retrain)
            prediction = extrapolate(kind, model, data, S)
            metrics[label, seed] = {"rmse": rmse(prediction, truth), "roughness": roughness(prediction, truth)}
            runs[label, seed] = run
            if seed == seeds[0]:
                kept.setdefault("models", {})[label] = model
                kept.setdefault("predictions", {})[label] = prediction
        if seed == seeds[0]:
            kept["data"] = data
    return {"lrs": lrs, "metrics": metrics, "runs": runs, "kept": kept}


def field_alignment(func: torch.nn.Module, data: Trajectory) -> float:
    """Mean cosine between the learned field and the true one (:class:`nodebook.data.spirals.CubicSpiral`)
    at the noise-free points of the trajectory: 1 when the learned field points the true way everywhere."""
    truth = CubicSpiral().to(data.y_true.device)
    with torch.no_grad():
        learned, true = func(None, data.y_true), truth(None, data.y_true)
    return float(torch.nn.functional.cosine_similarity(learned, true, dim=-1).mean())
