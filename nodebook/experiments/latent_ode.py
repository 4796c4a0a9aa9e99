"""The runs of chapter "Latent ODEs for irregularly sampled time series" (``book/05_latent_ode.ipynb``):
the paper's Sec. 5.1, Table 2 and Fig. 8.

Three models (:data:`KINDS`) are trained at each number ``n`` of observations per
spiral, for every seed and noise level of the profile: the latent ODE
(:class:`nodebook.models.latent_ode.LatentODE`), and the paper's two RNN baselines
(:class:`nodebook.models.rnn.RNNForecaster`, a GRU with a Gaussian head, without
and with the time gap to the next observation as input). Every model gets the
same data, the same number of iterations and a validation curve (extrapolation
RMSE on training spirals held out for it); the RNNs' learning rate is chosen on
that validation set (:func:`tune_rnn_lr`). Each checkpoint is keyed by the
settings that determine that run (:func:`run_key`). :func:`run_grid` trains or
loads every run and evaluates it on the test spirals.

Command line (the book profile's runs, resumable; two processes share the grid)::

    python -m nodebook.experiments.latent_ode --noise 0.3 --threads 1
    python -m nodebook.experiments.latent_ode --noise 0.1 --threads 1
"""

from __future__ import annotations

import argparse
import copy
import json
import math

import torch

from nodebook.checkpoint import Run
from nodebook.data.spirals import (Observations, SpiralData, make_spirals, rmse, sample_observations, split,
                                   to_device)
from nodebook.experiments.common import RNN_MAX_GRAD_NORM, rnn_train_step, solver_options
from nodebook.models import latent_ode, rnn
from nodebook.train import chunked_step, fit_chunks, with_validation

KINDS = {"latent ODE": "latent", "RNN": "rnn", "RNN + gaps": "rnn_gaps"}  # label -> name in ids and files
RNN_KINDS = ("RNN", "RNN + gaps")
# The paper's Table 2: predictive RMSE on the extrapolation, by model and observations per spiral.
# Its spirals' noise and size are not given; the chapter says which of its settings these sit beside.
PAPER_TABLE2 = {("RNN", 30): 0.3937, ("RNN", 50): 0.3202, ("RNN", 100): 0.1813,
                ("latent ODE", 30): 0.1642, ("latent ODE", 50): 0.1502, ("latent ODE", 100): 0.1346}

PAPER_TOLERANCE = 1.5e-8  # the paper's rtol and atol for its sequence models

DATA_KEYS = ("num_spirals", "num_train", "num_val")
TRAIN_KEYS = ("batch_size", "lr_decay", "iterations_per_step", "num_steps")
LATENT_KEYS = ("latent_dim", "encoder_hiddens", "dynamics_hiddens", "decoder_hiddens", "method", "rtol", "atol",
               "adjoint")
RNN_KEYS = ("rnn_hiddens", "rnn_context")
# Optional latent-ODE settings (defaults: kl_weight 1, dynamics_layers 1): the weight of the KL term in
# the ELBO and the depth of the latent dynamics, for the experiments on the trend with n (issue 11).
LATENT_VARIANT_KEYS = ("kl_weight", "dynamics_layers")


def make_data(settings: dict, seed: int = 0, noise_std: float | None = None,
              device="cpu") -> tuple[SpiralData, SpiralData, SpiralData]:
    """The spirals drawn with ``seed`` at ``noise_std`` (default: the profile's first noise level),
    split into ``(train, val, test)`` on ``device``: ``num_train`` spirals of which the last
    ``num_val`` are held out for validation, and the rest for testing. The same ``seed``
    draws the same spirals at every noise level; only the noise differs."""
    noise_std = settings["noise_stds"][0] if noise_std is None else noise_std
    data = make_spirals(settings["num_spirals"], noise_std=noise_std, seed=seed)
    train, test = split(data, settings["num_train"], seed=seed)
    if not 0 < settings["num_val"] < len(train):
        raise ValueError(f"num_val must be between 1 and {len(train) - 1}, got {settings['num_val']}")
    cut = len(train) - settings["num_val"]
    return (to_device(train.subset(slice(0, cut)), device), to_device(train.subset(slice(cut, None)), device),
            to_device(test, device))


def observations(data: SpiralData, n: int, seed: int = 0) -> Observations:
    """``n`` observation times per spiral (:func:`nodebook.data.spirals.sample_observations`), on the data's device."""
    return to_device(sample_observations(data, n, seed=seed), data.y.device)


def build(kind: str, settings: dict, device="cpu") -> torch.nn.Module:
    """Model ``kind`` (a key of :data:`KINDS`) at the chapter's sizes, on ``device``."""
    if kind == "latent ODE":
        return latent_ode.LatentODE(2, settings["latent_dim"], settings["encoder_hiddens"],
                                    settings["dynamics_hiddens"], settings["decoder_hiddens"],
                                    adjoint=settings["adjoint"], dynamics_layers=settings.get("dynamics_layers", 1),
                                    **solver_options(settings)).to(device)
    if kind not in KINDS:
        raise ValueError(f"unknown model {kind!r}; choose one of {list(KINDS)}")
    return rnn.RNNForecaster(2, settings["rnn_hiddens"], use_gaps=kind == "RNN + gaps").to(device)


def parameter_counts(settings: dict) -> dict[str, int]:
    """Number of parameters of each model."""
    return {kind: sum(p.numel() for p in build(kind, settings).parameters()) for kind in KINDS}


def run_key(kind: str, n: int, settings: dict, seed: int, noise_std: float, lr: float) -> dict:
    """The settings that determine the run of model ``kind`` at ``n`` observations per spiral:
    the data (size, split, noise, seed), ``n``, the training's settings and learning rate, and
    the model's own (the latent ODE's sizes and solver; the RNNs' width and context lengths)."""
    if kind not in KINDS:
        raise ValueError(f"unknown model {kind!r}; choose one of {list(KINDS)}")
    key = {k: settings[k] for k in DATA_KEYS + TRAIN_KEYS}
    key["batch_size"], key["num_steps"] = budget(kind, settings)
    if kind == "latent ODE" and settings.get("latent_max_grad_norm") is not None:
        key["max_grad_norm"] = settings["latent_max_grad_norm"]
    key.update(seed=seed, n=n, noise_std=noise_std, lr=lr, model=KINDS[kind])
    key.update({k: settings[k] for k in (LATENT_KEYS if kind == "latent ODE" else RNN_KEYS)})
    if kind == "latent ODE":  # variants of the recipe (issue 11), in the key only when set
        key.update({k: settings[k] for k in LATENT_VARIANT_KEYS if k in settings})
    return key


def budget(kind: str, settings: dict) -> tuple[int, int]:
    """``(batch_size, num_steps)`` of model ``kind``: the latent ODE's ``latent_batch_size`` and
    ``latent_num_steps`` (it trains on batches the size of the training set, drawn with
    replacement, as the public code trains on all its spirals), the RNNs' ``batch_size`` and
    ``num_steps``; each step is ``iterations_per_step`` iterations."""
    if kind not in KINDS:
        raise ValueError(f"unknown model {kind!r}; choose one of {list(KINDS)}")
    if kind == "latent ODE":
        return settings["latent_batch_size"], settings["latent_num_steps"]
    return settings["batch_size"], settings["num_steps"]


def train_spacing(obs: Observations) -> float:
    """The mean gap between consecutive observations: the time one step of the plain RNN
    stands for (it is trained on these gaps without being told them)."""
    return float(torch.diff(obs.t, dim=1).mean())


def context_range(n: int, fractions) -> tuple[int, int]:
    """How many of ``n`` observations an RNN reads before its training rollout: ``fractions``
    ``(low, high)`` of ``n``, at least 1 and at most ``n - 1``."""
    low, high = (min(max(1, round(f * n)), n - 1) for f in fractions)
    return low, max(low, high)


@torch.no_grad()
def predict(kind: str, model: torch.nn.Module, obs: Observations, data: SpiralData,
            spacing: float | None = None) -> torch.Tensor:
    """Model ``kind``'s prediction at the grid's extrapolation times (N, 100, 2) from observations
    ``obs``. The latent ODE uses the posterior mean of z(t0) and solves over the whole grid;
    the RNN with gaps steps once per future time; the plain RNN steps at ``spacing`` (its
    training data's mean gap, :func:`train_spacing`) and is interpolated onto the grid."""
    if kind == "latent ODE":
        return latent_ode.predict(model, obs.y, obs.gaps, data.t)[0][:, data.num_observed:]
    if kind == "RNN":
        if spacing is None:
            raise ValueError("the plain RNN needs the spacing of its training data (train_spacing)")
        return rnn.forecast_at_spacing(model, obs.y, obs.t, data.t_future, spacing)
    return rnn.forecast(model, obs.y, obs.t, data.t_future)


def rmse_by_time(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """RMSE at each time (over spirals and coordinates): (N, m, d) -> (m,)."""
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ in shape")
    return ((prediction - target) ** 2).mean(dim=(0, 2)).sqrt()


def latent_train_step(model: latent_ode.LatentODE, optimizer: torch.optim.Optimizer, y: torch.Tensor,
                      index: torch.Tensor, gaps: torch.Tensor, t_grid: torch.Tensor, noise_std: float,
                      batch_size: int, iterations: int, scheduler=None, max_grad_norm: float | None = None,
                      kl_weight: float = 1.0):
    """A ``train_step(step)`` for :func:`nodebook.checkpoint.load_or_train`: ``iterations``
    optimizer steps on the negative ELBO (:func:`nodebook.models.latent_ode.elbo`), each on
    ``batch_size`` spirals drawn with torch's global CPU generator, the gradient's norm
    clipped at ``max_grad_norm`` if given, then one ``scheduler`` step if given; ``kl_weight``
    scales the KL term. Returns the chunk's mean loss, log-likelihood and KL.
    """
    def loss_fn():
        batch = torch.randint(0, y.shape[0], (batch_size,)).to(y.device)
        return latent_ode.elbo(model, y[batch], index[batch], gaps[batch], t_grid, noise_std, kl_weight)
    return chunked_step(loss_fn, optimizer, iterations, scheduler=scheduler, max_grad_norm=max_grad_norm)


def train(kind: str, n: int, data: tuple[SpiralData, SpiralData], settings: dict, *, seed: int = 0,
          noise_std: float | None = None, lr: float | None = None, device="cpu", retrain: bool = False,
          progress: bool = False) -> tuple[torch.nn.Module, Run]:
    """Seed, build model ``kind``, train it on ``n`` observations of each training spiral, or
    load its committed checkpoint. Returns ``(model, run)``.

    ``data`` is ``(train, val)``. Every model trains a number of chunks of
    ``iterations_per_step`` Adam steps on minibatches of training spirals (both
    from :func:`budget`), the learning rate ``lr`` (the latent ODE's default: the profile's
    ``lr``; the RNNs need theirs, from :func:`tune_rnn_lr`) decayed by ``lr_decay`` per chunk.
    After each chunk the run logs ``val_rmse``: the extrapolation RMSE on the
    validation spirals against their noise-free values. The latent ODE
    maximises the ELBO (its gradient's norm clipped at ``latent_max_grad_norm`` when
    the profile sets one); the RNNs minimise the Gaussian negative log-likelihood
    of the observations they read (teacher-forced) and of a rollout over the
    rest (:func:`nodebook.models.rnn.rollout_loss`), reading a number of
    observations drawn from :func:`context_range` each iteration, with the
    gradient's norm clipped at ``RNN_MAX_GRAD_NORM``.
    """
    S = settings
    train_data, val = data
    noise_std = S["noise_stds"][0] if noise_std is None else noise_std
    if lr is None:
        if kind != "latent ODE":
            raise ValueError(f"the {kind} needs its learning rate (chosen on the validation spirals: tune_rnn_lr)")
        lr = S["lr"]
    batch_size, num_steps = budget(kind, S)
    if batch_size < 1:
        raise ValueError(f"the {kind}'s batch size must be at least 1, got {batch_size}")
    obs = observations(train_data, n, seed=seed)
    val_obs = observations(val, n, seed=seed + 1)
    spacing = train_spacing(obs)
    torch.manual_seed(seed)
    model = build(kind, S, device)

    def validate():
        return {"val_rmse": rmse(predict(kind, model, val_obs, val, spacing), val.y_true[:, val.num_observed:])}

    if kind == "latent ODE":
        def make_step(optimizer, scheduler):
            return with_validation(latent_train_step(model, optimizer, obs.y, obs.index, obs.gaps,
                                                     train_data.t_observed, noise_std, batch_size,
                                                     S["iterations_per_step"], scheduler,
                                                     S.get("latent_max_grad_norm"), S.get("kl_weight", 1.0)),
                                   validate)
    else:
        def make_step(optimizer, scheduler):
            return with_validation(rnn_train_step(model, optimizer, obs.y, obs.t, context_range(n, S["rnn_context"]),
                                                  batch_size, S["iterations_per_step"], scheduler=scheduler,
                                                  max_grad_norm=RNN_MAX_GRAD_NORM), validate)
    name = f"latent_ode-{KINDS[kind]}-n{n}"
    run = fit_chunks(name, run_key(kind, n, S, seed, noise_std, lr), model, make_step, num_steps,
                     optimizer="adam", lr=lr, lr_decay=S["lr_decay"], retrain=retrain, progress=progress)
    model.spacing = spacing
    return model, run


def tune_rnn_lr(settings: dict, *, device="cpu", retrain: bool = False, progress: bool = False) -> dict:
    """Choose each RNN's learning rate on the validation spirals: train it with every rate of
    ``rnn_lr_grid`` at ``tune_n`` observations (first seed, first noise level) and keep the
    one with the lowest final ``val_rmse``. Returns ``{kind: {"lr": best, "val_rmse": {lr: rmse}}}``."""
    S = settings
    seed, noise = S["seeds"][0], S["noise_stds"][0]
    data = make_data(S, seed, noise, device)[:2]
    out = {}
    for kind in RNN_KINDS:
        scores = {}
        for lr in S["rnn_lr_grid"]:
            _, run = train(kind, S["tune_n"], data, S, seed=seed, noise_std=noise, lr=lr, device=device,
                           retrain=retrain, progress=progress)
            scores[lr] = run.history[-1]["val_rmse"]
        finite = {lr: v for lr, v in scores.items() if math.isfinite(v)}
        if not finite:
            raise RuntimeError(f"every learning rate of {S['rnn_lr_grid']} diverged for the {kind}")
        out[kind] = {"lr": min(finite, key=finite.get), "val_rmse": scores}
    return out


def test_observations(test: SpiralData, n: int, seed: int) -> Observations:
    """The ``n`` observations of each test spiral that the run of ``seed`` is evaluated on (drawn with ``seed + 2``)."""
    return observations(test, n, seed=seed + 2)


@torch.no_grad()
def predict_test(kind: str, model: torch.nn.Module, n: int, test: SpiralData, seed: int) -> torch.Tensor:
    """Model ``kind``'s extrapolation of the test spirals from :func:`test_observations` (N, 100, 2)."""
    return predict(kind, model, test_observations(test, n, seed), test, getattr(model, "spacing", None))


@torch.no_grad()
def evaluate_run(kind: str, model: torch.nn.Module, n: int, test: SpiralData, seed: int) -> dict:
    """One trained model on the test spirals (``n`` observations each, drawn with ``seed + 2``):
    ``rmse`` over the extrapolation, ``by_time`` (the RMSE at each extrapolation time), and
    ``reconstruction`` (the latent ODE's decoded path on the observed part; the RNNs'
    teacher-forced predictions of observations 2..n), all against the noise-free spirals;
    for the plain RNN also ``rmse_one_step_per_time``, its RMSE when rolled out one step per
    grid time (the unit mismatch: its step is the training data's gap, not the grid's)."""
    obs = test_observations(test, n, seed)
    target = test.y_true[:, test.num_observed:]
    prediction = predict_test(kind, model, n, test, seed)
    out = {"rmse": rmse(prediction, target), "by_time": rmse_by_time(prediction, target).cpu()}
    if kind == "latent ODE":
        path = latent_ode.predict(model, obs.y, obs.gaps, test.t_observed)[0]
        out["reconstruction"] = rmse(path, test.y_true[:, :test.num_observed])
    else:
        truth = torch.gather(test.y_true, 1, obs.index[..., None].expand(-1, -1, 2))[:, 1:]
        out["reconstruction"] = rmse(rnn.one_step_predictions(model, obs.y, obs.t), truth)
    if kind == "RNN":
        out["rmse_one_step_per_time"] = rmse(rnn.forecast(model, obs.y, obs.t, test.t_future), target)
    return out


@torch.no_grad()
def latent_rmse_at_tolerance(model: latent_ode.LatentODE, n: int, test: SpiralData, seed: int, rtol: float,
                             atol: float) -> float:
    """The trained latent ODE's extrapolation RMSE as :func:`evaluate_run` measures it, but with a
    float64 copy of the model and data and the ODE solved at ``rtol``/``atol`` (the paper's 1.5e-8
    is below float32's resolution, about 6e-8). ``model`` itself is left unchanged."""
    if not (rtol > 0 and atol > 0):
        raise ValueError(f"rtol and atol must be positive, got {rtol} and {atol}")
    model64 = copy.deepcopy(model).double()
    model64.solver.update(rtol=rtol, atol=atol)
    test64 = to_device(test, dtype=torch.float64)
    obs = to_device(test_observations(test, n, seed), dtype=torch.float64)
    return rmse(predict("latent ODE", model64, obs, test64), test64.y_true[:, test64.num_observed:])


def run_grid(settings: dict, *, noise_stds=None, seeds=None, kinds=None, ns=None, lrs: dict | None = None, device="cpu",
             retrain: bool = False, progress: bool = False, keep=None, verbose: bool = True) -> dict:
    """Train (or load) and evaluate every model at every ``n``, seed and noise level.

    ``kinds``, ``ns``: the models and numbers of observations to run (default: all of
    :data:`KINDS`, the profile's ``ns``). ``lrs``: the RNNs' learning
    rates, ``{kind: lr}`` (from :func:`tune_rnn_lr`).
    ``keep(noise, seed)`` says for which runs the models and data are returned too.
    Returns ``{"metrics": {(noise, kind, n, seed): evaluate_run(...) + {"seconds"}},
    "runs": {(noise, kind, n, seed): Run}, "kept": {(noise, seed): {"models", "data"}}}``.
    """
    S = settings
    lrs = lrs or {}
    metrics, runs, kept = {}, {}, {}
    for noise in noise_stds or S["noise_stds"]:
        for seed in seeds or S["seeds"]:
            train_data, val, test = make_data(S, seed, noise, device)
            models = {}
            for n in ns or S["ns"]:
                for kind in kinds or KINDS:
                    model, run = train(kind, n, (train_data, val), S, seed=seed, noise_std=noise,
                                       lr=lrs.get(kind), device=device, retrain=retrain, progress=progress)
                    metrics[noise, kind, n, seed] = dict(evaluate_run(kind, model, n, test, seed),
                                                         seconds=run.train_seconds)
                    runs[noise, kind, n, seed] = run
                    models[kind, n] = model
                    if verbose:
                        print(f"noise {noise}, seed {seed}: {run.describe()} | test RMSE "
                              f"{metrics[noise, kind, n, seed]['rmse']:.4f}", flush=True)
            if keep is not None and keep(noise, seed):
                kept[noise, seed] = {"models": models, "data": (train_data, val, test)}
    return {"metrics": metrics, "runs": runs, "kept": kept}


def summarise(metrics: dict, key: str = "rmse") -> dict:
    """``{(noise, kind, n): (mean, spread, values)}`` of ``metrics[...][key]`` over the seeds of
    :func:`run_grid`'s ``metrics`` (spread: the standard deviation, :func:`nodebook.stats.mean_spread`)."""
    from nodebook.stats import mean_spread

    groups: dict = {}
    for (noise, kind, n, _seed), row in metrics.items():
        if key in row:
            groups.setdefault((noise, kind, n), []).append(row[key])
    return {group: (*mean_spread(values), values) for group, values in groups.items()}


def mean_by_time(metrics: dict) -> dict:
    """``{(noise, kind, n): (m,) tensor}``: the per-time RMSE averaged over seeds."""
    groups: dict = {}
    for (noise, kind, n, _seed), row in metrics.items():
        groups.setdefault((noise, kind, n), []).append(row["by_time"])
    return {group: torch.stack(curves).mean(0) for group, curves in groups.items()}


def reconstructions(models: dict, n: int, obs: Observations, test: SpiralData) -> dict[str, torch.Tensor]:
    """Each model's reconstruction of the observed part at ``n`` observations: the latent ODE's
    decoded posterior-mean path on the observed grid (N, T, 2), the RNNs' teacher-forced
    one-step predictions of observations 2..n (N, n - 1, 2)."""
    out = {"latent ODE": latent_ode.predict(models["latent ODE", n], obs.y, obs.gaps, test.t)[0]
           [:, :test.num_observed]}
    for kind in RNN_KINDS:
        out[kind] = rnn.one_step_predictions(models[kind, n], obs.y, obs.t)
    return out


def angular_speed(path: torch.Tensor, dt: float) -> torch.Tensor:
    """Mean absolute angular speed about the origin along ``path`` (N, m, 2) sampled every ``dt``:
    (m - 1,), the mean over spirals of ``|Δφ| / dt`` between consecutive samples (``Δφ`` wrapped
    to ``(-π, π]``). The chapter's spirals turn at one radian per unit of time."""
    if path.dim() != 3 or path.shape[-1] != 2 or path.shape[1] < 2:
        raise ValueError(f"path must have shape (N, m >= 2, 2), got {tuple(path.shape)}")
    phi = torch.atan2(path[..., 1], path[..., 0])
    step = torch.remainder(torch.diff(phi, dim=1) + math.pi, 2 * math.pi) - math.pi
    return step.abs().mean(dim=0) / dt


def outside_seen_range(train: SpiralData, test: SpiralData) -> torch.Tensor:
    """(N_test,) bool: test spirals whose extrapolation goes beyond the largest angle any training
    spiral shows in its observed part."""
    seen = float(train.theta0.max() + train.t_observed[-1])
    return test.theta0 + float(test.t[-1]) > seen


@torch.no_grad()
def direction_accuracy(model: latent_ode.LatentODE, obs: Observations, clockwise: torch.Tensor) -> float:
    """How well the posterior mean of z(t0) tells the direction of rotation: the accuracy of the
    nearest class mean (clockwise or not) in latent space, on the spirals given."""
    model.eval()
    z0, _ = model.encoder(obs.y, obs.gaps)
    means = torch.stack([z0[~clockwise].mean(0), z0[clockwise].mean(0)])
    guess = torch.cdist(z0, means).argmin(dim=1).bool()
    return float((guess == clockwise).float().mean())


def parse_overrides(items, allowed) -> dict:
    """``["key=json", ...]`` -> ``{key: value}``; a key outside ``allowed`` or a value that is not
    JSON raises a ``ValueError`` naming it."""
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--set takes KEY=VALUE, got {item!r}")
        if key not in allowed:
            raise ValueError(f"unknown setting {key!r}; choose from {sorted(allowed)}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            raise ValueError(f"the value of {key!r} is not JSON: {raw!r}") from None
    return out


def main(argv=None) -> None:
    """Train the chapter's runs at a profile in the background (resumable): the RNNs' learning-rate
    sweep (when an RNN is asked for), then every model, ``n`` and seed at the noise levels asked for."""
    from nodebook.profiles import get_profile

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="book")
    parser.add_argument("--noise", type=float, nargs="*", help="noise levels (default: the profile's)")
    parser.add_argument("--seeds", type=int, nargs="*", help="seeds (default: the profile's)")
    parser.add_argument("--kinds", nargs="*", choices=list(KINDS), help="models (default: all)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override settings of the profile, VALUE in JSON (e.g. ns=[100] kl_weight=3.33 "
                             f"dynamics_layers=2); besides the profile's keys: {', '.join(LATENT_VARIANT_KEYS)}")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = get_profile("latent_ode", args.profile)
    try:
        settings = type(settings)(settings.chapter, settings.name, {**settings, **parse_overrides(
            args.set, set(settings) | set(LATENT_VARIANT_KEYS))})
    except ValueError as error:
        parser.error(str(error))
    lrs = {}
    if set(args.kinds or KINDS) & set(RNN_KINDS):
        tuned = tune_rnn_lr(settings, progress=True)
        print("learning rates chosen on the validation spirals:", tuned, flush=True)
        lrs = {kind: v["lr"] for kind, v in tuned.items()}
    run_grid(settings, noise_stds=args.noise, seeds=args.seeds, kinds=args.kinds, lrs=lrs, progress=True)


if __name__ == "__main__":
    main()
