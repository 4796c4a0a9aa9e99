"""The runs of chapter "Scope and limitations, checked" (the paper's Sec. 6, and beyond it).

Each function measures one of the paper's claims, or one thing learners ask:

- **Minibatching** (:func:`minibatch_nfe`): NFE and wall time of one combined
  solve of K samples against K solves of one sample each.
- **Reconstructing forward trajectories** (:func:`reconstruction_error`):
  how far the state recomputed backwards from z(T), as the adjoint does,
  lands from z(0), against tolerance and horizon; :func:`gradient_errors` and
  :func:`gradient_costs` compare the three ways to get gradients
  (backprop through the solver, the adjoint, checkpointed backprop) on one
  problem: error against backprop, seconds and saved bytes.
- **The adjoint state** (:func:`observation_problem`,
  :func:`backprop_state_gradients`, :func:`euler_step_gaps`): a(t) along a
  trajectory with its jumps at the observation times, checked against
  backprop's dL/dz(t_i), and the one-Euler-step derivation of da/dt.

The problems: :class:`VanDerPol` (trajectories attract to a limit cycle, so
running them backwards repels them from it: where reconstruction matters)
and :func:`random_field` (an MLP field, a toy). The chapter also uses the
trained MNIST ODE-Net's block (``nodebook.experiments.mnist``).
"""

from __future__ import annotations

import argparse
import math

import torch
from torch import nn

from nodebook import odeint, odeint_adjoint, record_stats
from nodebook.adjoint_state import adjoint_euler_step
from nodebook.checkpointed import odeint_checkpointed
from nodebook.memory import saved_tensor_bytes
from nodebook.data.topology import crossing_1d, nested_annuli
from nodebook.data.toy2d import sample
from nodebook.models.cnf import CNF, PlanarDynamics
from nodebook.models.regularised import cnf_log_prob_regularised, regularisation_loss
from nodebook.models.augmented import AugmentedNeuralODE, VectorField
from nodebook.train import chunked_step, fit_chunks
from nodebook.solvers.errors import MaxStepsError, NonFiniteError, StepSizeError
from nodebook.utils import Timer

GRADIENT_WAYS = ("backprop", "adjoint", "checkpointed")
DIVERGED = (NonFiniteError, StepSizeError, MaxStepsError)  # a solve that blew up or could not finish
SOLVES = {"backprop": odeint, "adjoint": odeint_adjoint, "checkpointed": odeint_checkpointed}


# ------------------------------------------------------------------ problems

class VanDerPol(nn.Module):
    """dz/dt = (z2, mu (1 - z1^2) z2 - z1) with a learnable ``mu`` (default 1).

    Every trajectory is drawn onto the limit cycle, at a rate of about mu per
    unit time; integrated backwards the cycle repels, so a backward solve
    amplifies its own errors roughly like exp(mu t). z: ``(..., 2)``.
    """

    def __init__(self, mu: float = 1.0):
        super().__init__()
        self.mu = nn.Parameter(torch.tensor(float(mu)))

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        z1, z2 = z[..., 0], z[..., 1]
        return torch.stack([z2, self.mu * (1 - z1 ** 2) * z2 - z1], -1)


def random_field(dim: int, num_hiddens: int = 32, seed: int = 0, device="cpu") -> VectorField:
    """A seeded MLP field f(t, z) on R^dim (two tanh layers, time-dependent): the toy problem."""
    torch.manual_seed(seed)
    return VectorField(dim, num_hiddens, time_dependent=True).to(device)


def _times(t_end: float, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor([0.0, float(t_end)], dtype=like.dtype, device=like.device)


# ------------------------------------------------------------------ 1. minibatching

@torch.no_grad()
def minibatch_nfe(func, states: torch.Tensor, batch_sizes, *, t_end: float = 1.0, rtol: float = 1e-3,
                  atol: float = 1e-3, method: str = "dopri5") -> list[dict]:
    """One combined solve of the first K of ``states`` (B, ...) against their K one-sample solves.

    ``func`` must treat the samples independently (per-sample normalisation,
    no batch statistics). For each K of ``batch_sizes`` (each at most B): the
    forward NFE of the combined solve, the mean and largest NFE of the K
    single solves, ``nfe_ratio`` = combined / mean single, and the seconds of
    the combined solve and of the K single ones. Wall time is the machine's.
    """
    batch_sizes = list(batch_sizes)
    if not batch_sizes or min(batch_sizes) < 1 or max(batch_sizes) > len(states):
        raise ValueError(f"batch sizes must lie in 1..{len(states)} (the states given), got {batch_sizes}")
    t = _times(t_end, states)
    solver = dict(rtol=rtol, atol=atol, method=method)
    single_nfe, single_seconds = [], []
    for i in range(max(batch_sizes)):
        with record_stats() as log, Timer() as timer:
            odeint(func, states[i:i + 1], t, **solver)
        single_nfe.append(log.nfe_forward)
        single_seconds.append(timer.seconds)
    rows = []
    for k in batch_sizes:
        with record_stats() as log, Timer() as timer:
            odeint(func, states[:k], t, **solver)
        mean_single = sum(single_nfe[:k]) / k
        rows.append({"k": k, "nfe_combined": log.nfe_forward, "nfe_single_mean": mean_single,
                     "nfe_single_max": max(single_nfe[:k]), "nfe_ratio": log.nfe_forward / mean_single,
                     "seconds_combined": timer.seconds, "seconds_single": sum(single_seconds[:k])})
    return rows


# ------------------------------------------------------------------ 2. what an ODE cannot do

MAP_TASKS = ("crossing", "annuli")


def map_data(task: str, settings: dict, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """The data of a map task: ``"crossing"`` (g(x) = -x on {-1, 1}) or ``"annuli"`` (the disk inside
    the annulus, ``annuli_inner`` and ``annuli_outer`` points, drawn with ``annuli_seed``)."""
    if task == "crossing":
        return crossing_1d(device=device)
    if task == "annuli":
        return nested_annuli(settings["annuli_inner"], settings["annuli_outer"], seed=settings["annuli_seed"],
                             device=device)
    raise ValueError(f"unknown map task {task!r}; choose one of {MAP_TASKS}")


def map_key(task: str, augment_dim: int, settings: dict, seed: int) -> dict:
    """The checkpoint key of one :func:`fit_map` run: exactly the settings that determine it."""
    key = dict(study="augmented", task=task, augment_dim=augment_dim, iterations=settings["map_iterations"],
               lr=settings["map_lr"], num_hiddens=settings["map_hiddens"], tol=settings["map_tol"], seed=seed)
    if task == "annuli":
        key.update(inner=settings["annuli_inner"], outer=settings["annuli_outer"], data_seed=settings["annuli_seed"])
    return key


def fit_map(task: str, augment_dim: int, settings: dict, *, seed: int = 0, device="cpu", retrain: bool = False,
            progress: bool = False):
    """A Neural ODE (``augment_dim = 0``) or an augmented one fitted by mean squared error to
    :func:`map_data` (full batch, Adam, dopri5 at ``map_tol``), or the committed run. For the crossing
    the flow itself is the map; for the annuli a linear read-out of the whole state classifies.
    Logs the chunk's mean ``loss`` and forward ``nfe`` per iteration. Returns ``(model, run)``."""
    x, y = map_data(task, settings, device)
    torch.manual_seed(seed)
    model = AugmentedNeuralODE(x.shape[1], augment_dim, None if task == "crossing" else 1,
                               num_hiddens=settings["map_hiddens"], method="dopri5", rtol=settings["map_tol"],
                               atol=settings["map_tol"]).to(device)
    chunks = settings["num_chunks"]

    def loss_fn():
        with record_stats() as log:
            loss = ((model(x) - y) ** 2).mean()
        return loss, {"nfe": log.nfe_forward}
    run = fit_chunks(f"limits-{task}-aug{augment_dim}", map_key(task, augment_dim, settings, seed), model,
                     lambda opt, _: chunked_step(loss_fn, opt, settings["map_iterations"] // chunks), chunks,
                     optimizer="adam", lr=settings["map_lr"], retrain=retrain, progress=progress)
    return model, run


def map_runs(settings: dict, *, device="cpu", retrain: bool = False, progress: bool = False) -> dict:
    """Every run of the comparison: ``{(task, augment_dim, seed): (model, run)}`` over
    :data:`MAP_TASKS`, 0 and ``augment_dim``, and ``map_seeds``."""
    return {(task, p, seed): fit_map(task, p, settings, seed=seed, device=device, retrain=retrain,
                                     progress=progress)
            for task in MAP_TASKS for p in (0, settings["augment_dim"]) for seed in settings["map_seeds"]}


@torch.no_grad()
def map_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """The fraction of points whose output has the sign of their +-1 target."""
    return float(((model(x) > 0) == (y > 0)).float().mean())


# ------------------------------------------------------------------ 3 and 6: a CNF's tolerance and regularised dynamics

def density_key(settings: dict, tol: float, lam: float, seed: int) -> dict:
    """The checkpoint key of one :func:`fit_density` run."""
    return dict(study="density", data=settings["density_data"], width=settings["density_width"],
                iterations=settings["density_iterations"], batch_size=settings["density_batch"],
                lr=settings["density_lr"], tol=tol, lambda_kinetic=lam, lambda_jacobian=lam, seed=seed)


def fit_density(settings: dict, *, tol: float, lam: float = 0.0, seed: int = 0, device="cpu",
                retrain: bool = False, progress: bool = False):
    """A planar CNF (``density_width`` units, analytic trace) fitted by maximum likelihood to
    ``density_data`` with dopri5 at rtol = atol = ``tol``, and Finlay et al.'s kinetic and Jacobian
    penalties weighted ``lam`` each (0: none; :func:`nodebook.models.regularised.cnf_log_prob_regularised`),
    or the committed run. Logs the chunk's mean ``nll`` and forward ``nfe`` per iteration.
    Returns ``(model, run)``."""
    torch.manual_seed(seed)
    model = CNF(PlanarDynamics(2, settings["density_width"]), trace="analytic", method="dopri5",
                rtol=tol, atol=tol).to(device)
    chunks, batch = settings["num_chunks"], settings["density_batch"]

    def loss_fn():
        x = sample(settings["density_data"], batch).to(device)
        with record_stats() as log:
            if lam > 0:
                logp, kinetic, jacobian = cnf_log_prob_regularised(model, x)
            else:
                logp = model.log_prob(x)
        nll = -logp.mean()
        loss = nll + regularisation_loss(kinetic, jacobian, lam, lam) if lam > 0 else nll
        return loss, {"nll": nll.item(), "nfe": log.nfe_forward}
    run = fit_chunks(f"limits-density-tol{tol:g}-lam{lam:g}", density_key(settings, tol, lam, seed), model,
                     lambda opt, _: chunked_step(loss_fn, opt, settings["density_iterations"] // chunks), chunks,
                     optimizer="adam", lr=settings["density_lr"], retrain=retrain, progress=progress)
    return model, run


def density_runs(settings: dict, *, device="cpu", retrain: bool = False, progress: bool = False) -> dict:
    """Both studies' runs, ``{(tol, lam, seed): (model, run)}``: every training tolerance of
    ``density_tols`` without penalties, and every weight of ``lambdas`` at ``density_tol``, for each
    seed of ``density_seeds`` (the run at ``density_tol`` without penalties serves both)."""
    keys = [(tol, 0.0) for tol in settings["density_tols"]]
    keys += [(settings["density_tol"], float(lam)) for lam in settings["lambdas"] if (settings["density_tol"], lam) not in keys]
    return {(tol, lam, seed): fit_density(settings, tol=tol, lam=lam, seed=seed, device=device, retrain=retrain,
                                          progress=progress)
            for seed in settings["density_seeds"] for tol, lam in keys}


def evaluate_density(runs: dict, settings: dict, *, device="cpu") -> dict:
    """Per run: ``nll`` (test NLL on ``test_size`` fresh points at ``eval_tol``), and at the run's own
    training tolerance the forward ``nfe`` of that test solve and the mean ``kinetic`` and ``jacobian``
    energies of the flow (the penalties' integrals, whether or not the run was penalised)."""
    x = sample(settings["density_data"], settings["test_size"],
               generator=torch.Generator().manual_seed(settings["density_seeds"][0] + 1)).to(device)
    out = {}
    for key, (model, _) in runs.items():
        tol = key[0]
        with torch.no_grad():
            model.use_solver("dopri5", settings["eval_tol"], settings["eval_tol"])
            nll = -model.log_prob(x).mean().item()
            model.use_solver("dopri5", tol, tol)
            with record_stats() as log:
                _, kinetic, jacobian = cnf_log_prob_regularised(model, x)
        out[key] = {"nll": nll, "nfe": log.nfe_forward, "kinetic": kinetic.mean().item(),
                    "jacobian": jacobian.mean().item()}
    return out


# ------------------------------------------------------------------ 4. reconstruction and the three gradients

@torch.no_grad()
def reconstruction_error(func, z0: torch.Tensor, t_end: float, tol: float, method: str = "dopri5") -> float:
    """Solve z(0) -> z(T) forward, then back from z(T) alone, as the adjoint's backward pass
    recomputes the trajectory, both at rtol = atol = ``tol``; return
    ||z_back(0) - z(0)|| / ||z(0)|| (norms over the whole tensor), or ``inf`` where the
    backward solve blows up (:data:`DIVERGED`): the reconstruction then does not exist."""
    t = _times(t_end, z0)
    z_end = odeint(func, z0, t, rtol=tol, atol=tol, method=method)[-1]
    try:
        z_back = odeint(func, z_end, t.flip(0), rtol=tol, atol=tol, method=method)[-1]
    except DIVERGED:
        return math.inf
    error = float((z_back - z0).norm() / z0.norm())
    return error if math.isfinite(error) else math.inf


def _gradient(way: str, func: nn.Module, z0: torch.Tensor, t: torch.Tensor, loss_fn, tol: float, method: str):
    """Gradients of ``loss_fn(z(T))`` with respect to z0 and func's parameters, by ``way``."""
    z0 = z0.detach().requires_grad_(True)
    params = [p for p in func.parameters() if p.requires_grad]
    z = SOLVES[way](func, z0, t, rtol=tol, atol=tol, method=method)[-1]
    grads = torch.autograd.grad(loss_fn(z), [z0, *params])
    return torch.cat([g.reshape(-1) for g in grads])


def gradient_errors(func: nn.Module, z0: torch.Tensor, t_end: float, tol: float, loss_fn=None,
                    method: str = "dopri5") -> dict:
    """Relative error of the adjoint's and of checkpointed backprop's gradient (with respect to z0
    and func's parameters, loss ``loss_fn(z(T))``, by default the sum of squares) against
    backprop's at the same tolerance: ``{"adjoint": ..., "checkpointed": ...}``; ``inf`` where
    a backward solve blows up (:data:`DIVERGED`)."""
    loss_fn = loss_fn or (lambda z: (z ** 2).sum())
    t = _times(t_end, z0)
    exact = _gradient("backprop", func, z0, t, loss_fn, tol, method)
    errors = {}
    for way in ("adjoint", "checkpointed"):
        try:
            error = float((_gradient(way, func, z0, t, loss_fn, tol, method) - exact).norm() / exact.norm())
        except DIVERGED:
            error = math.inf
        errors[way] = error if math.isfinite(error) else math.inf
    return errors


def gradient_costs(func: nn.Module, z0: torch.Tensor, t_end: float, tol: float, method: str = "dopri5",
                   repeats: int = 3) -> dict:
    """The three ways on one problem (loss: sum of squares of z(T)): for each of :data:`GRADIENT_WAYS`,
    ``saved_bytes`` (what autograd keeps for the backward pass, :func:`nodebook.memory.saved_tensor_bytes`),
    ``seconds`` (forward and backward, the best of ``repeats``), ``nfe_forward`` and ``nfe_backward``."""
    t = _times(t_end, z0)
    out = {}
    for way in GRADIENT_WAYS:
        z_start = z0.detach().requires_grad_(True)
        box = {}
        saved = saved_tensor_bytes(lambda: box.setdefault(
            "loss", (SOLVES[way](func, z_start, t, rtol=tol, atol=tol, method=method)[-1] ** 2).sum()))
        box["loss"].backward()
        best = math.inf
        for _ in range(repeats):
            z_start = z0.detach().requires_grad_(True)
            with record_stats() as log, Timer() as timer:
                (SOLVES[way](func, z_start, t, rtol=tol, atol=tol, method=method)[-1] ** 2).sum().backward()
            best = min(best, timer.seconds)
        out[way] = {"saved_bytes": saved, "seconds": best, "nfe_forward": log.nfe_forward,
                    "nfe_backward": log.nfe_backward}
    func.zero_grad(set_to_none=True)
    return out


# ------------------------------------------------------------------ 5. the adjoint state

def observation_problem(num_observations: int = 4, t_end: float = 6.0, seed: int = 0, device="cpu",
                        dtype=torch.float64):
    """A loss with several observation times for the adjoint-state figure: the Van der Pol state
    from z0 = (2, 0) observed at ``num_observations`` equally spaced times after 0 up to ``t_end``,
    L = sum_i ||z(t_i) - y_i||^2 / 2 against noisy targets y_i (seeded).
    Returns ``(func, z0, t, loss_fn)`` with t (num_observations + 1,) starting at 0, in ``dtype``."""
    func = VanDerPol().to(dtype=dtype)
    z0 = torch.tensor([2.0, 0.0], dtype=dtype)
    t = torch.linspace(0.0, t_end, num_observations + 1, dtype=dtype)
    with torch.no_grad():  # the targets are data: made on the CPU, then moved with everything else
        clean = odeint(func, z0, t, rtol=1e-8, atol=1e-8)
    targets = (clean + 0.3 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed),
                                         dtype=dtype)).to(device)
    func, z0, t = func.to(device), z0.to(device), t.to(device)

    def loss_fn(zs: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((zs[1:] - targets[1:]) ** 2).sum()  # t_0 is the start, not an observation
    return func, z0, t, loss_fn


def backprop_state_gradients(func, z0: torch.Tensor, t: torch.Tensor, loss_fn, tol: float = 1e-8) -> torch.Tensor:
    """dL/dz(t_i) for every observation time by backprop: for each i, the states before t_i are
    held fixed and the solve restarts from z(t_i) (a leaf), so the gradient is the total
    derivative through every later observation. Returns ``(N + 1, *S)``."""
    with torch.no_grad():
        forward = odeint(func, z0, t, rtol=tol, atol=tol)
    grads = []
    for i in range(len(t)):
        zi = forward[i].clone().requires_grad_(True)
        later = odeint(func, zi, t[i:], rtol=tol, atol=tol) if i < len(t) - 1 else zi[None]
        (g,) = torch.autograd.grad(loss_fn(torch.cat([forward[:i], later])), zi)
        grads.append(g)
    return torch.stack(grads)


def euler_step_gaps(func, z: torch.Tensor, a_next: torch.Tensor, steps) -> list[float]:
    """For each Euler step size h: the largest gap between (a(t+h) - a(t)) / h from the chain rule
    and -a^T df/dz (:func:`nodebook.adjoint_state.adjoint_euler_step`); it shrinks like h."""
    return [float((lambda r: (r.chain_rule - r.ode).abs().max())(adjoint_euler_step(func, z, a_next, h)))
            for h in steps]


__all__ = ["VanDerPol", "random_field", "minibatch_nfe", "map_data", "map_key", "fit_map", "map_runs",
           "map_accuracy", "MAP_TASKS", "density_key", "fit_density", "density_runs", "evaluate_density", "reconstruction_error", "gradient_errors",
           "gradient_costs", "observation_problem", "backprop_state_gradients", "euler_step_gaps",
           "GRADIENT_WAYS"]


def main(argv=None) -> None:
    """Train the chapter's runs at a profile in the background (resumable): the augmented-ODE maps
    and the CNF tolerance and regularisation runs. (The MNIST ODE-Net at the tighter tolerance trains
    with ``python -m nodebook.experiments.mnist --model odenet --tol 1e-4``.)"""
    from nodebook.profiles import get_profile

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="book")
    parser.add_argument("--parts", nargs="*", choices=("maps", "density"), default=["maps", "density"])
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = get_profile("limits", args.profile)
    if "maps" in args.parts:
        for key, (_, run) in map_runs(settings, progress=True).items():
            print(key, f"final MSE {run.history[-1]['loss']:.4f}", flush=True)
    if "density" in args.parts:
        for key, (_, run) in density_runs(settings, progress=True).items():
            print(key, f"final training NLL {run.history[-1]['nll']:.4f}", flush=True)


if __name__ == "__main__":
    main()
