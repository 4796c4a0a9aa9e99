"""The runs of chapter "Latent ODEs for irregularly sampled time series" (``book/05_latent_ode.ipynb``):
the paper's Sec. 5.1, Table 2 and Fig. 8.

Three models (:data:`KINDS`) are trained at each number ``n`` of observations per
spiral: the latent ODE (:class:`nodebook.models.latent_ode.LatentODE`), an RNN
and an RNN that also reads the time gaps (:class:`nodebook.models.rnn.RNNForecaster`),
all by :func:`train`. Each checkpoint is keyed by the settings that determine
that run (:func:`run_key`). :func:`evaluate` gives every model's extrapolation
and the latent ODE's reconstruction on the test spirals.
"""

from __future__ import annotations

import torch

from nodebook.checkpoint import Run
from nodebook.data.spirals import (Observations, SpiralData, make_spirals, rmse, sample_observations, split,
                                   to_device)
from nodebook.experiments.common import rnn_train_step, solver_options
from nodebook.models import latent_ode, rnn
from nodebook.train import chunked_step, fit_chunks

KINDS = {"latent ODE": "latent", "RNN": "rnn", "RNN + gaps": "rnn_gaps"}  # label -> name in ids and files
RNN_KINDS = ("RNN", "RNN + gaps")
MAX_GRAD_NORM = 1.0  # the RNNs' gradient clipping
# The paper's Table 2: predictive RMSE on the extrapolation, by model and observations per spiral.
# Its spirals' noise and size are not given, so these are for reference, not comparison.
PAPER_TABLE2 = {("RNN", 30): 0.3937, ("RNN", 50): 0.3202, ("RNN", 100): 0.1813,
                ("latent ODE", 30): 0.1642, ("latent ODE", 50): 0.1502, ("latent ODE", 100): 0.1346}

DATA_KEYS = ("num_spirals", "num_train", "noise_std")
TRAIN_KEYS = ("batch_size", "lr", "lr_decay", "iterations_per_step")
LATENT_KEYS = ("latent_dim", "encoder_hiddens", "dynamics_hiddens", "decoder_hiddens", "method", "rtol", "atol",
               "adjoint")


def make_data(settings: dict, seed: int = 0, device="cpu") -> tuple[SpiralData, SpiralData]:
    """The spirals (seeded by ``seed``), split into ``(train, test)``, on ``device``."""
    data = make_spirals(settings["num_spirals"], noise_std=settings["noise_std"], seed=seed)
    train, test = split(data, settings["num_train"], seed=seed)
    return to_device(train, device), to_device(test, device)


def observations(data: SpiralData, n: int, seed: int = 0) -> Observations:
    """``n`` observation times per spiral (:func:`nodebook.data.spirals.sample_observations`), on the data's device."""
    return to_device(sample_observations(data, n, seed=seed), data.y.device)


def build(kind: str, settings: dict, device="cpu") -> torch.nn.Module:
    """Model ``kind`` (a key of :data:`KINDS`) at the chapter's sizes, on ``device``."""
    if kind == "latent ODE":
        return latent_ode.LatentODE(2, settings["latent_dim"], settings["encoder_hiddens"],
                                    settings["dynamics_hiddens"], settings["decoder_hiddens"],
                                    adjoint=settings["adjoint"], **solver_options(settings)).to(device)
    if kind not in KINDS:
        raise ValueError(f"unknown model {kind!r}; choose one of {list(KINDS)}")
    return rnn.RNNForecaster(2, settings["rnn_hiddens"], use_gaps=kind == "RNN + gaps").to(device)


def parameter_counts(settings: dict) -> dict[str, int]:
    """Number of parameters of each model."""
    return {kind: sum(p.numel() for p in build(kind, settings).parameters()) for kind in KINDS}


def run_key(kind: str, n: int, settings: dict, seed: int) -> dict:
    """The settings that determine the run of model ``kind`` at ``n`` observations per spiral:
    the data (size, split, noise, seed), ``n``, the training's settings and the model's own
    (the latent ODE's sizes and solver; the RNNs' width). The number of steps is added by
    :func:`nodebook.checkpoint.load_or_train`."""
    key = {k: settings[k] for k in DATA_KEYS + TRAIN_KEYS}
    key.update(seed=seed, n=n)
    key.update({k: settings[k] for k in (LATENT_KEYS if kind == "latent ODE" else ("rnn_hiddens",))})
    return key


def latent_train_step(model: latent_ode.LatentODE, optimizer: torch.optim.Optimizer, y: torch.Tensor,
                      index: torch.Tensor, gaps: torch.Tensor, t_grid: torch.Tensor, noise_std: float,
                      batch_size: int, iterations: int, scheduler=None):
    """A ``train_step(step)`` for :func:`nodebook.checkpoint.load_or_train`: ``iterations``
    optimizer steps on the negative ELBO (:func:`nodebook.models.latent_ode.elbo`), each on
    ``batch_size`` spirals drawn with torch's global CPU generator, then one ``scheduler``
    step if given. Returns the chunk's mean loss, log-likelihood and KL.
    """
    def loss_fn():
        batch = torch.randint(0, y.shape[0], (batch_size,)).to(y.device)
        return latent_ode.elbo(model, y[batch], index[batch], gaps[batch], t_grid, noise_std)
    return chunked_step(loss_fn, optimizer, iterations, scheduler=scheduler)


def train(kind: str, n: int, data: SpiralData, settings: dict, *, seed: int = 0, device="cpu",
          retrain: bool = False, progress: bool = False) -> tuple[torch.nn.Module, Run]:
    """Seed, build model ``kind``, train it on ``n`` observations of each training spiral
    (Adam, learning rate ``lr`` decayed by ``lr_decay`` per step of ``iterations_per_step``
    iterations; ``num_steps`` steps for the latent ODE, ``rnn_steps`` for the RNNs), or
    load its committed checkpoint. Returns ``(model, run)``.

    The RNNs read the first half of each spiral's observations and roll out the rest
    (:func:`nodebook.models.rnn.rollout_loss`), with the gradient's norm clipped at
    :data:`MAX_GRAD_NORM`.
    """
    S = settings
    obs = observations(data, n, seed=seed)
    torch.manual_seed(seed)
    model = build(kind, S, device)
    if kind == "latent ODE":
        def make_step(optimizer, scheduler):
            return latent_train_step(model, optimizer, obs.y, obs.index, obs.gaps, data.t_observed, S["noise_std"],
                                     S["batch_size"], S["iterations_per_step"], scheduler)
        num_steps = S["num_steps"]
    else:
        def make_step(optimizer, scheduler):
            return rnn_train_step(model, optimizer, obs.y, obs.t, obs.y.shape[1] // 2, S["batch_size"],
                                  S["iterations_per_step"], scheduler=scheduler, max_grad_norm=MAX_GRAD_NORM)
        num_steps = S["rnn_steps"]
    run = fit_chunks(f"latent_ode-{KINDS[kind]}-n{n}", run_key(kind, n, S, seed), model, make_step, num_steps,
                     optimizer="adam", lr=S["lr"], lr_decay=S["lr_decay"], retrain=retrain, progress=progress)
    return model, run


def train_all(data: SpiralData, settings: dict, *, seed: int = 0, device="cpu", retrain: bool = False,
              progress: bool = False, verbose: bool = True):
    """:func:`train` every model at every ``n`` of ``settings["ns"]``. Returns ``(models, runs)``,
    dicts keyed by ``(kind, n)``."""
    models, runs = {}, {}
    for n in settings["ns"]:
        for kind in KINDS:
            models[kind, n], runs[kind, n] = train(kind, n, data, settings, seed=seed, device=device,
                                                   retrain=retrain, progress=progress)
            if verbose:
                print(runs[kind, n].describe())
    return models, runs


@torch.no_grad()
def predict(kind: str, model: torch.nn.Module, obs: Observations, test: SpiralData) -> torch.Tensor:
    """Model ``kind``'s prediction at the test grid's extrapolation times from observations ``obs``
    (N, m, 2). The latent ODE uses the posterior mean of z(t0) and solves over the whole grid."""
    if kind == "latent ODE":
        return latent_ode.predict(model, obs.y, obs.gaps, test.t)[0][:, test.num_observed:]
    return rnn.forecast(model, obs.y, obs.t, test.t_future)


def reconstructions(models: dict, n: int, obs: Observations, test: SpiralData) -> dict[str, torch.Tensor]:
    """Each model's reconstruction of the observed part at ``n`` observations: the latent ODE's
    decoded posterior-mean path on the observed grid (N, T, 2), the RNNs' teacher-forced
    one-step predictions of observations 2..n (N, n - 1, 2)."""
    out = {"latent ODE": latent_ode.predict(models["latent ODE", n], obs.y, obs.gaps, test.t)[0]
           [:, :test.num_observed]}
    for kind in RNN_KINDS:
        out[kind] = rnn.one_step_predictions(models[kind, n], obs.y, obs.t)
    return out


def evaluate(models: dict, test: SpiralData, settings: dict, seed: int = 0) -> dict:
    """Every model on the test spirals, each with ``n`` observations drawn with ``seed + 1``.

    Returns a dict: ``test_obs`` (n -> observations), ``predictions`` and ``errors``
    ((kind, n) -> extrapolation and its RMSE against the noise-free spirals),
    ``reconstruction`` (n -> the latent ODE's RMSE on the observed part) and
    ``halves`` ((kind, n) -> RMSE over the first and the second half of the extrapolation times).
    """
    T = test.num_observed
    test_obs = {n: observations(test, n, seed=seed + 1) for n in settings["ns"]}
    predictions = {(kind, n): predict(kind, model, test_obs[n], test) for (kind, n), model in models.items()}
    target = test.y_true[:, T:]
    half = target.shape[1] // 2
    errors = {key: rmse(pred, target) for key, pred in predictions.items()}
    halves = {key: (rmse(pred[:, :half], target[:, :half]), rmse(pred[:, half:], target[:, half:]))
              for key, pred in predictions.items()}
    reconstruction = {n: rmse(latent_ode.predict(models["latent ODE", n], test_obs[n].y, test_obs[n].gaps,
                                                 test.t_observed)[0], test.y_true[:, :T])
                      for n in settings["ns"]}
    return dict(test_obs=test_obs, predictions=predictions, errors=errors, reconstruction=reconstruction,
                halves=halves)


def outside_seen_range(train: SpiralData, test: SpiralData) -> torch.Tensor:
    """(N_test,) bool: test spirals whose extrapolation goes beyond the largest angle any training
    spiral shows in its observed part."""
    seen = float(train.theta0.max() + train.t_observed[-1])
    return test.theta0 + float(test.t[-1]) > seen


def split_errors(predictions: dict, test: SpiralData, outside: torch.Tensor) -> dict:
    """(kind, n) -> (RMSE on the spirals that stay in the seen range, RMSE on those that leave it)."""
    target = test.y_true[:, test.num_observed:]
    return {key: (rmse(pred[~outside], target[~outside]), rmse(pred[outside], target[outside]))
            for key, pred in predictions.items()}


@torch.no_grad()
def direction_accuracy(model: latent_ode.LatentODE, obs: Observations, clockwise: torch.Tensor) -> float:
    """How well the posterior mean of z(t0) tells the direction of rotation: the accuracy of the
    nearest class mean (clockwise or not) in latent space, on the spirals given."""
    model.eval()
    z0, _ = model.encoder(obs.y, obs.gaps)
    means = torch.stack([z0[~clockwise].mean(0), z0[clockwise].mean(0)])
    guess = torch.cdist(z0, means).argmin(dim=1).bool()
    return float((guess == clockwise).float().mean())
