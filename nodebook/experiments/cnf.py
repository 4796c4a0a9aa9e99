"""Figures 4-6 of the paper and the Hutchinson study: the runs of chapter ``06_cnf``.

Density matching (Fig. 4): a planar CNF and a planar NF fitted by the annealed
reverse KL to the unnormalised targets of :mod:`nodebook.data.toy2d`, one run
per (target, family, width), each family with the optimizer and rate its sweep
chose (:func:`tune_optimizer`). Maximum likelihood (Fig. 5/6): both families
fitted to *two circles* and *two moons*. Every run goes through
:func:`nodebook.checkpoint.load_or_train`, keyed by :func:`run_key`: exactly the
settings that determine it (for the NF the solver plays no part; for the CNF
a fixed-step solver ignores the tolerance and an adaptive one the step size).

Beyond the paper: :func:`hutchinson_study` trains an MLP CNF on a synthetic
D-dimensional Gaussian with the exact trace and with Hutchinson's estimator,
timing both and measuring the estimator's spread.

Settings are the chapter's profile (:func:`nodebook.profiles.get_profile`):
``settings`` below is that dict. Result ids use :func:`slug` of the targets'
and data sets' names (``"two waves (U3)"`` -> ``"two_waves"``).
"""

from __future__ import annotations

import argparse
import math
from functools import partial
from itertools import product

import torch
from torch import nn

from nodebook import record_stats
from nodebook.stats import format_mean_spread, mean_spread, separated
from nodebook.tables import markdown_table
from nodebook.checkpoint import TrainingDisabled, training_disabled
from nodebook.data.toy2d import SAMPLERS, TARGETS, grid, log_normaliser, log_target, sample
from nodebook.models.cnf import (CNF, NOISES, MLPDynamics, PlanarDynamics, negative_log_likelihood,
                                 reverse_kl, reverse_kl_terms)
from nodebook.models.planar import PlanarFlow
from nodebook.solvers import SOLVERS
from nodebook.train import chunked_step, fit_chunks, make_optimizer
from nodebook.utils import Timer

KINDS = ("nf", "cnf")


def slug(name: str) -> str:
    """The id of a target or data set: ``"two waves (U3)"`` -> ``"two_waves"``, ``"two moons"`` -> ``"two_moons"``."""
    return name.split(" (")[0].replace(" ", "_")


# ------------------------------------------------------------------ evaluation helpers

@torch.no_grad()
def batched(fn, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """fn applied to x in chunks along dim 0 (grid densities and test sets), concatenated."""
    return torch.cat([fn(chunk) for chunk in x.split(batch_size)])


def log_density(model: nn.Module, points: torch.Tensor, generative: bool = True) -> torch.Tensor:
    """log q at points [N, 2] -> [N] for a CNF or a PlanarFlow, batched and without gradients.

    ``generative``: a PlanarFlow trained by density matching maps base to
    target (its density needs the inverse); one trained by maximum
    likelihood maps data to base.
    """
    if isinstance(model, PlanarFlow):
        return batched(model.model_log_prob if generative else model.log_prob, points)
    return batched(model.log_prob, points)


def grid_mass(log_density: torch.Tensor, cell_area: float) -> float:
    """Integral of exp(log_density) over grid cells of area ``cell_area`` (should be ~1)."""
    return float(torch.logsumexp(log_density.double(), 0).exp() * cell_area)


def flow_stages(model: nn.Module, fractions, z0: torch.Tensor, points: torch.Tensor):
    """Samples and densities at fractions of the flow from the base (paper, Fig. 5/6).

    For a CNF, fraction s is time t0 + s (t1 - t0); for a K-layer PlanarFlow
    fitted by maximum likelihood (data -> base), the generative direction
    undoes round(s K) layers. Returns (list of samples [N, 2], list of
    densities [len(points)]), one per fraction.
    """
    samples, densities = [], []
    for s in fractions:
        if isinstance(model, PlanarFlow):
            start = len(model.layers) - round(s * len(model.layers))
            samples.append(model.sample(z0, start=start))
            densities.append(batched(lambda x: model.log_prob(x, start=start), points).exp())
        else:
            t = model.t0 + s * (model.t1 - model.t0)
            samples.append(model.sample(z0, t=t))
            densities.append(batched(lambda x: model.log_prob(x, t=t), points).exp())
    return samples, densities


def jacobian_traces(func: nn.Module, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The trace of the full Jacobian of ``func(t, .)`` at each row of z [N, D] -> [N] (the reference)."""
    return torch.stack([torch.autograd.functional.jacobian(lambda v: func(t, v[None])[0], row).trace()
                        for row in z])


# ------------------------------------------------------------------ runs

def train_solver(settings: dict) -> dict:
    """The CNF's training solver from the profile: ``CNF(..., **train_solver(settings))``."""
    step = settings["train_step_size"]
    return dict(method=settings["train_method"], rtol=settings["train_tol"], atol=settings["train_tol"],
                options=None if step is None else {"step_size": step})


def solver_key(settings: dict) -> dict:
    """The training-solver settings that determine a CNF run: a fixed-step method ignores the
    tolerance, an adaptive one the step size."""
    method = settings["train_method"]
    if SOLVERS[method].adaptive:
        return {"method": method, "tol": settings["train_tol"]}
    return {"method": method, "step_size": settings["train_step_size"]}


def training_solver_text(settings: dict) -> str:
    """The CNF's training solver in words: ``"dopri5 at tolerance 1e-05"`` or ``"rk4 with step 0.25"``."""
    key = solver_key(settings)
    return f"{key['method']} at tolerance {key['tol']}" if "tol" in key else f"{key['method']} with step {key['step_size']}"


def annealing_weight(iteration: int, anneal_iterations: int) -> float:
    """The weight beta of the target in the annealed reverse KL at ``iteration`` (counted from 0):
    rising linearly from 0.01 to 1 over ``anneal_iterations`` (Rezende & Mohamed 2015, Sec. 6.1),
    then 1. ``anneal_iterations = 0``: 1 throughout."""
    if anneal_iterations < 0:
        raise ValueError(f"anneal_iterations must be >= 0, got {anneal_iterations}")
    return 1.0 if anneal_iterations == 0 else min(1.0, 0.01 + iteration / anneal_iterations)


def run_key(task: dict, kind: str, width: int, iterations: int, batch_size: int, settings: dict,
            seed: int, optimizer: tuple[str, float]) -> dict:
    """The checkpoint key of one run: ``task`` (``{"target": ...}`` or ``{"data": ...}``), the
    family, width, iterations, batch, the optimizer's (name, rate) and seed, for density matching
    ``anneal_iterations``, the until-flat rule (:func:`training_budget`) when the settings have a
    ``max_factor``, and for the CNF its training solver.
    (:func:`load_or_train` adds ``num_steps``, the number of chunks.)"""
    if kind not in KINDS:
        raise ValueError(f"unknown flow {kind!r}; choose one of {KINDS}")
    name, lr = optimizer
    key = dict(task, kind=kind, width=width, iterations=iterations, batch_size=batch_size, lr=lr, seed=seed,
               optimizer=name)
    if "target" in task:
        key["anneal_iterations"] = settings["anneal_iterations"]
    if settings.get("max_factor"):
        key["until_flat"] = [FLAT_NATS, FLAT_RELATIVE, settings["max_factor"]]
    if kind == "cnf":
        key.update(solver_key(settings))
    return key


def build(kind: str, width: int, settings: dict, *, seed: int = 0, device="cpu"):
    """A planar CNF with M = ``width`` hidden units (analytic trace, the profile's training solver)
    or a planar NF with K = ``width`` layers, seeded."""
    torch.manual_seed(seed)
    if kind == "cnf":
        return CNF(PlanarDynamics(2, width), trace="analytic", **train_solver(settings)).to(device)
    if kind == "nf":
        return PlanarFlow(width).to(device)
    raise ValueError(f"unknown flow {kind!r}; choose one of {KINDS}")


def training_budget(settings: dict, metric: str):
    """``(num_steps, done)`` for :func:`nodebook.train.fit_chunks`: with ``max_factor`` in the settings,
    a run trains at least ``num_chunks`` chunks and then goes on while its ``metric`` curve is
    :func:`still_falling`, up to ``max_factor * num_chunks`` chunks; without it, exactly
    ``num_chunks`` (``done`` is None)."""
    chunks, factor = settings["num_chunks"], settings.get("max_factor")
    if not factor:
        return chunks, None
    if factor < 1:
        raise ValueError(f"max_factor must be >= 1, got {factor}")
    return chunks * factor, lambda history: (len(history) >= chunks
                                             and not still_falling([row[metric] for row in history]))


def density_matching_step(model: nn.Module, log_target, optimizer, batch_size: int, iterations: int, *,
                          anneal_iterations: int = 0, log_Z: float = 0.0):
    """A ``train_step(step)`` for load_or_train: ``iterations`` updates of the reverse KL annealed
    over the first ``anneal_iterations`` of the run (:func:`annealing_weight`). Logs the chunk's
    mean ``loss`` (annealed) and ``kl``, the unannealed reverse KL plus ``log_Z`` of the same
    samples: the KL divergence in nats when ``log_Z`` is the target's, and the forward ``nfe`` per
    iteration (0 for an NF)."""
    counter = {"iteration": 0}

    def loss_fn():
        beta = annealing_weight(counter["iteration"], anneal_iterations)
        counter["iteration"] += 1
        with record_stats() as log:
            logq, logp = reverse_kl_terms(model, log_target, batch_size)
        return (logq - beta * logp).mean(), {"kl": (logq - logp).mean().item() + log_Z, "nfe": log.nfe_forward}

    chunk = chunked_step(loss_fn, optimizer, iterations)

    def train_step(step: int) -> dict:
        counter["iteration"] = step * iterations  # the schedule resumes where the run stopped
        return chunk(step)
    return train_step


def max_likelihood_step(model: nn.Module, sampler, optimizer, batch_size: int, iterations: int):
    """A ``train_step(step)``: ``iterations`` updates of -mean log p(x) on fresh batches ``sampler(n)``;
    logs the chunk's mean ``nll`` and forward ``nfe`` per iteration (0 for an NF)."""
    def loss_fn():
        with record_stats() as log:
            loss = negative_log_likelihood(model, sampler(batch_size))
        return loss, {"nfe": log.nfe_forward}
    return chunked_step(loss_fn, optimizer, iterations, name="nll")


def match_density(target: str, kind: str, width: int, settings: dict, optimizer: tuple[str, float], *,
                  seed: int = 0, device="cpu", retrain: bool = False, progress: bool = False):
    """Fit ``kind`` of ``width`` to ``target`` (a name of :data:`TARGETS`) by the annealed reverse KL
    with ``optimizer`` (name, rate), or load the committed run. Returns ``(model, run)``."""
    iterations = settings["match_iterations_cnf" if kind == "cnf" else "match_iterations_nf"]
    model = build(kind, width, settings, seed=seed, device=device)
    chunks = settings["num_chunks"]
    name, lr = optimizer
    key = run_key({"target": slug(target)}, kind, width, iterations, settings["batch_size"], settings, seed,
                  optimizer)
    steps, done = training_budget(settings, "kl")
    run = fit_chunks(f"cnf-match-{slug(target)}-{kind}{width}", key, model,
                     lambda opt, _: density_matching_step(model, partial(log_target, target), opt,
                                                          settings["batch_size"], iterations // chunks,
                                                          anneal_iterations=settings["anneal_iterations"],
                                                          log_Z=log_normaliser(target)),
                     steps, optimizer=name, lr=lr, retrain=retrain, progress=progress, done=done)
    return model, run


def fit_max_likelihood(data: str, kind: str, settings: dict, optimizer: tuple[str, float], *, seed: int = 0,
                       device="cpu", retrain: bool = False, progress: bool = False):
    """Fit ``kind`` of width ``ml_width`` to data set ``data`` (a name of :data:`SAMPLERS`) by maximum
    likelihood on fresh batches with ``optimizer`` (name, rate), or load the committed run.
    Returns ``(model, run)``."""
    iterations = settings["ml_iterations_cnf" if kind == "cnf" else "ml_iterations_nf"]
    width, batch_size, chunks = settings["ml_width"], settings["ml_batch_size"], settings["num_chunks"]
    model = build(kind, width, settings, seed=seed, device=device)
    name, lr = optimizer
    key = run_key({"data": slug(data)}, kind, width, iterations, batch_size, settings, seed, optimizer)
    steps, done = training_budget(settings, "nll")
    run = fit_chunks(f"cnf-ml-{slug(data)}-{kind}{width}", key, model,
                     lambda opt, _: max_likelihood_step(model, lambda n: sample(data, n).to(device), opt,
                                                        batch_size, iterations // chunks),
                     steps, optimizer=name, lr=lr, retrain=retrain, progress=progress, done=done)
    return model, run


def final_kl(run) -> float:
    """The KL a density-matching run reached: its last chunk's mean ``kl`` (inf if not finite)."""
    value = run.history[-1]["kl"]
    return value if math.isfinite(value) else math.inf


def tune_optimizer(kind: str, settings: dict, *, device="cpu", retrain: bool = False,
                   progress: bool = False) -> dict:
    """Choose ``kind``'s optimizer and rate: fit the widest flow to ``tune_target`` for
    ``tune_iterations_<kind>`` iterations (then on until flat) with each (name, rate) of
    ``optimizers_<kind>`` (first seed) and keep the lowest final KL (:func:`final_kl`). Returns
    ``{"choice": (name, rate), "kl": {(name, rate): KL}, "runs": {(name, rate): (model, run)}}``; where ``tune_iterations_<kind>`` equals
    ``match_iterations_<kind>``, the chosen run is also that target's run in :func:`density_matching_runs`."""
    scores, runs = {}, {}
    sweep = dict(settings, **{f"match_iterations_{kind}": settings[f"tune_iterations_{kind}"]})
    for name, lr in settings[f"optimizers_{kind}"]:
        runs[name, lr] = match_density(settings["tune_target"], kind, max(settings["widths"]), sweep,
                                       device=device, optimizer=(name, lr), retrain=retrain, progress=progress)
        scores[name, lr] = final_kl(runs[name, lr][1])
    finite = {choice: v for choice, v in scores.items() if math.isfinite(v)}
    if not finite:
        raise RuntimeError(f"every optimizer of {settings[f'optimizers_{kind}']} diverged for the {kind}")
    return {"choice": min(finite, key=finite.get), "kl": scores, "runs": runs}


ABLATION_TARGET = "ring (U1)"  # two symmetric lobes: a flow on one of them has KL log 2


def annealing_ablation(settings: dict, optimizer: tuple[str, float], *, device="cpu", retrain: bool = False,
                       progress: bool = False):
    """The widest NF fitted to :data:`ABLATION_TARGET` exactly as in :func:`density_matching_runs` but
    without annealing (``anneal_iterations = 0``): what annealing is for. Returns ``(model, run)``."""
    return match_density(ABLATION_TARGET, "nf", max(settings["widths"]), dict(settings, anneal_iterations=0),
                         device=device, optimizer=optimizer, retrain=retrain, progress=progress)


FLAT_NATS, FLAT_RELATIVE = 0.01, 0.05  # a curve still falls if its last fifth drops by more than both


def still_falling(values, fraction: float = 0.2) -> bool:
    """Whether a training curve (KL or NLL per chunk) has not flattened: the mean of its last
    ``fraction`` of chunks lies below the mean of the ``fraction`` before it by more than
    :data:`FLAT_NATS` nats *and* more than :data:`FLAT_RELATIVE` of its value."""
    values = [float(v) for v in values]
    window = max(1, round(fraction * len(values)))
    if len(values) < 2 * window:
        raise ValueError(f"a curve of {len(values)} values is too short for two windows of {window}")
    before, last = sum(values[-2 * window:-window]) / window, sum(values[-window:]) / window
    return before - last > FLAT_NATS and before - last > FLAT_RELATIVE * abs(last)


def tuning_table(tuned: dict):
    """The optimizer sweeps: per family, the final KL of each (optimizer, rate), the chosen one in bold."""
    rows = []
    for kind, result in tuned.items():
        for choice, value in result["kl"].items():
            mark = "**" if tuple(choice) == tuple(result["choice"]) else ""
            rows.append([kind.upper(), f"{choice[0]}", f"{choice[1]:g}", f"{mark}{value:.4f}{mark}"])
    return markdown_table(["family", "optimizer", "learning rate", "final KL [nats]"], rows)


def cost_table(runs: dict, key_of=lambda k: k):
    """Training cost per run group: ``runs`` maps keys to ``(model, run)``; ``key_of(key)`` names the
    row a run belongs to (e.g. family and width). Mean minutes of training per run and, for CNFs, the
    forward NFE per iteration in the first and last chunk."""
    groups: dict = {}
    for key, (_, run) in runs.items():
        groups.setdefault(key_of(key), []).append(run)
    rows = []
    for name, group in groups.items():
        minutes = sum(r.train_seconds for r in group) / len(group) / 60
        first = sum(r.history[0].get("nfe", 0) for r in group) / len(group)
        last = sum(r.history[-1].get("nfe", 0) for r in group) / len(group)
        rows.append([name, len(group), f"{minutes:.1f}", f"{first:.0f} → {last:.0f}" if last else "–"])
    return markdown_table(["runs", "count", "minutes each (mean)", "forward NFE per iteration"], rows)


def paper_cost(runs: dict, settings: dict, paper: dict, part: str = "match"):
    """What the ``paper`` profile's iteration counts would cost on this machine, projected from the
    committed runs: per family, the measured seconds per training iteration of ``runs`` (``part``
    ``"match"``: Fig. 4 runs keyed ``(target, kind, width)``; ``"ml"``: Fig. 5/6 runs keyed
    ``(data, kind, ...)``) times the paper profile's minimum iterations for every run, and times
    ``max_factor`` of them (a run that never flattens). Returns ``{kind: {"seconds_per_iteration",
    "iterations", "hours_min", "hours_max"}}``. A CPU projection: the GPU time is not measured."""
    if part not in ("match", "ml"):
        raise ValueError(f"part must be 'match' or 'ml', got {part!r}")
    out = {}
    for kind in KINDS:
        group = [run for key, (_, run) in runs.items() if key[1] == kind]
        if not group:
            continue
        per_chunk = settings[f"{part}_iterations_{kind}"] // settings["num_chunks"]
        seconds = sum(run.train_seconds for run in group) / sum(len(run.history) * per_chunk for run in group)
        iterations = paper[f"{part}_iterations_{kind}"]
        factor = paper.get("max_factor") or 1
        hours = seconds * iterations * len(group) / 3600
        out[kind] = {"seconds_per_iteration": seconds, "iterations": iterations, "hours_min": hours,
                     "hours_max": hours * factor}
    return out


def close_pairs(matched: dict, ratio: float) -> list:
    """The ``(target, width)`` pairs of ``matched`` (Fig. 4 runs keyed ``(target, kind, width)``, one
    seed) whose CNF and NF final training KLs (:func:`final_kl`) lie within a factor ``ratio`` of each
    other: the comparisons one seed cannot rank, in ``matched``'s order."""
    if ratio < 1:
        raise ValueError(f"close_ratio must be >= 1, got {ratio}")
    pairs = []
    for target, kind, width in matched:
        if kind == "cnf" and (target, "nf", width) in matched:
            a, b = final_kl(matched[target, "cnf", width][1]), final_kl(matched[target, "nf", width][1])
            if math.isfinite(a) and math.isfinite(b) and max(a, b) <= ratio * min(a, b):
                pairs.append((target, width))
    return pairs


def repeated_matching_runs(settings: dict, optimizers: dict, pairs, *, seed: int = 0, kinds=KINDS, seeds=None,
                           device="cpu", retrain: bool = False, progress: bool = False) -> dict:
    """The Fig. 4 runs of ``pairs`` (:func:`close_pairs`) again, for each family of ``kinds``, with every
    seed of ``match_seeds`` other than ``seed`` (only those in ``seeds``, if given):
    ``{(target, kind, width, seed): (model, run)}``."""
    return {(target, kind, width, s): match_density(target, kind, width, settings, optimizers[kind], seed=s,
                                                    device=device, retrain=retrain, progress=progress)
            for target, width in pairs for kind in kinds for s in settings["match_seeds"]
            if s != seed and (seeds is None or s in seeds)}


def density_matching_runs(settings: dict, optimizers: dict, *, seed: int = 0, device="cpu",
                          retrain: bool = False, progress: bool = False) -> dict:
    """All Fig. 4 runs: ``{(target, kind, width): (model, run)}`` over targets, NF then CNF, widths;
    ``optimizers`` maps a family to its (name, rate) (:func:`tune_optimizer`'s choice)."""
    return {(target, kind, width): match_density(target, kind, width, settings, optimizers[kind], seed=seed,
                                                 device=device, retrain=retrain, progress=progress)
            for target in TARGETS for kind, width in product(KINDS, settings["widths"])}


def max_likelihood_runs(settings: dict, optimizers: dict, *, seed: int = 0, device="cpu",
                        retrain: bool = False, progress: bool = False) -> dict:
    """All Fig. 5/6 runs of one seed: ``{(data, kind): (model, run)}``, CNF then NF per data set;
    ``optimizers`` as in :func:`density_matching_runs`."""
    return {(data, kind): fit_max_likelihood(data, kind, settings, optimizers[kind], seed=seed, device=device,
                                             retrain=retrain, progress=progress)
            for data in SAMPLERS for kind in ("cnf", "nf")}


def seconds_per_iteration(adjoint: bool, settings: dict, optimizer: tuple[str, float], *, seed: int = 0,
                          device="cpu", target: str = "ring (U1)", iterations: int = 5) -> float:
    """Seconds per reverse-KL iteration of the widest CNF with ``optimizer`` (name, rate),
    backpropagating through ``odeint`` (``adjoint=False``) or through ``odeint_adjoint``.
    Wall time: reported, never asserted."""
    model = build("cnf", max(settings["widths"]), settings, seed=seed, device=device)
    optimizer, _ = make_optimizer(model.parameters(), *optimizer)
    model.adjoint = adjoint
    step = density_matching_step(model, partial(log_target, target), optimizer, settings["batch_size"],
                                 iterations)
    with Timer() as timer:
        step(0)
    return timer.seconds / iterations


# ------------------------------------------------------------------ evaluation

def kl_estimates(runs: dict, settings: dict, *, seed: int = 0, device="cpu") -> dict:
    """KL(q || p) in nats of each fit of ``runs`` (keyed ``(target, kind, width, ...)``, values
    ``(model, run)``) from ``eval_samples`` fresh samples, the CNF integrated by ``eval_method`` at
    ``eval_tol``, with its Monte Carlo standard error (the standard deviation of log q - log p over the
    samples / sqrt(samples)): ``{key: (kl, standard_error)}``."""
    log_Z = {target: log_normaliser(target) for target in TARGETS}
    torch.manual_seed(seed)  # the same evaluation samples whether the runs were loaded or trained
    out = {}
    for key, (model, _) in runs.items():
        target, kind = key[0], key[1]
        if kind == "cnf":
            model.use_solver(settings["eval_method"], settings["eval_tol"], settings["eval_tol"])
        with torch.no_grad():
            logq, logp = reverse_kl_terms(model, partial(log_target, target), settings["eval_samples"])
        gap = (logq - logp).double()
        out[key] = (gap.mean().item() + log_Z[target], gap.std().item() / math.sqrt(len(gap)))
    return out


def evaluate_density_matching(matched: dict, settings: dict, *, seed: int = 0, device="cpu",
                              standard_errors: dict | None = None):
    """KL(q || p) in nats of each fit (:func:`kl_estimates`) and the densities on the [-4, 4]^2 grid.

    Returns ``(kl, learned, targets, extent)``: ``kl[target, kind, width]`` (float),
    ``learned[target, kind, width]`` and ``targets[target]`` (densities on the grid, on the CPU).
    A dict passed as ``standard_errors`` receives each KL's Monte Carlo standard error.
    """
    estimates = kl_estimates(matched, settings, seed=seed, device=device)
    kl = {key: value for key, (value, _) in estimates.items()}
    if standard_errors is not None:
        standard_errors.update({key: se for key, (_, se) in estimates.items()})
    points, _, extent = grid(4.0, settings["grid_size"])
    points = points.to(device)
    learned = {key: log_density(model, points).exp().cpu() for key, (model, _) in matched.items()}
    log_Z = {target: log_normaliser(target) for target in TARGETS}
    targets = {target: (log_target(target, points) - log_Z[target]).exp().cpu() for target in TARGETS}
    return kl, learned, targets, extent


def kl_over_seeds(kl: dict, standard_errors: dict, repeated: dict) -> dict:
    """Each Fig. 4 fit's KL as ``(mean, spread, seeds)``: over the first seed's ``kl[target, kind,
    width]`` and the repeats' ``repeated[target, kind, width, seed]`` (``(kl, standard error)``, from
    :func:`kl_estimates`) where it was repeated, the spread being the standard deviation over the
    seeds; otherwise the one seed's value with its Monte Carlo standard error as the spread."""
    out = {}
    for key, value in kl.items():
        values = [value] + [v for (t, k, w, _), (v, _) in repeated.items() if (t, k, w) == key]
        out[key] = (*mean_spread(values), len(values)) if len(values) > 1 else (value, standard_errors[key], 1)
    return out


def kl_lower(summary: dict, a, b) -> bool:
    """Whether fit ``a``'s KL lies below fit ``b``'s beyond the noise (keys of ``summary``, from
    :func:`kl_over_seeds`): over several seeds each, ``a``'s mean ± spread wholly below ``b``'s
    (:func:`nodebook.stats.separated`); otherwise (one of them from one seed) by more than twice the two
    spreads combined (``hypot``: a one-seed fit's spread is its Monte Carlo standard error)."""
    (ma, sa, na), (mb, sb, nb) = summary[a], summary[b]
    if na > 1 and nb > 1:
        return separated((ma, sa), (mb, sb))
    return ma + 2 * math.hypot(sa, sb) < mb


def equal_width_verdicts(summary: dict) -> dict:
    """The CNF against the NF at each (target, width) of ``summary`` (:func:`kl_over_seeds`):
    ``"CNF lower"``, ``"NF lower"`` or ``"tie"`` (neither :func:`kl_lower` than the other)."""
    verdicts = {}
    for target, kind, width in summary:
        if kind == "cnf" and (target, "nf", width) in summary:
            cnf, nf = (target, "cnf", width), (target, "nf", width)
            verdicts[target, width] = ("CNF lower" if kl_lower(summary, cnf, nf)
                                       else "NF lower" if kl_lower(summary, nf, cnf) else "tie")
    return verdicts


def equal_width_table(summary: dict, verdicts: dict):
    """Fig. 4 at equal width: both families' KL (mean ± spread over the seeds, or the one seed's value
    ± its standard error), the number of seeds and the verdict (:func:`equal_width_verdicts`)."""
    def cell(key):
        mean, spread, seeds = summary[key]
        return f"{format_mean_spread(mean, spread, digits=3)} ({seeds} seed{'s' if seeds > 1 else ''})"
    return markdown_table(["target", "width", "NF KL [nats]", "CNF KL [nats]", "verdict"],
                          [[t, w, cell((t, "nf", w)), cell((t, "cnf", w)), verdict]
                           for (t, w), verdict in verdicts.items()])


def evaluate_max_likelihood(ml: dict, settings: dict, *, seed: int = 0, device="cpu"):
    """Test NLL (nats per point, on ``test_size`` fresh points) and the mass of each learned density
    over the grid [-7, 7]^2. Returns ``(nll, mass)``, both ``{(data, kind): float}``."""
    test_sets = {data: sample(data, settings["test_size"], generator=torch.Generator().manual_seed(seed + 1))
                 for data in SAMPLERS}
    wide, area, _ = grid(7.0, settings["ml_grid_size"])
    wide = wide.to(device)
    nll, mass = {}, {}
    for (data, kind), (model, _) in ml.items():
        if kind == "cnf":
            model.use_solver(settings["eval_method"], settings["eval_tol"], settings["eval_tol"])
        nll[data, kind] = -log_density(model, test_sets[data].to(device), generative=False).mean().item()
        mass[data, kind] = grid_mass(log_density(model, wide, generative=False), area)
    return nll, mass


def stage_pictures(ml: dict, settings: dict, *, seed: int = 0, device="cpu"):
    """Fig. 5/6 panels: ``num_plot_samples`` base points and the grid densities at each of
    ``fractions`` of every flow (the CNF integrated by ``eval_method`` at ``eval_tol``). Returns ``(stages, extent)`` with ``stages[data, kind] = (samples,
    densities)`` on the CPU."""
    torch.manual_seed(seed)
    z0 = torch.randn(settings["num_plot_samples"], 2).to(device)
    points, _, extent = grid(4.5, settings["ml_grid_size"])
    stages = {}
    for (data, kind), (model, _) in ml.items():
        if kind == "cnf":
            model.use_solver(settings["eval_method"], settings["eval_tol"], settings["eval_tol"])
        samples, densities = flow_stages(model, settings["fractions"], z0, points.to(device))
        stages[data, kind] = ([s.cpu() for s in samples], [d.cpu() for d in densities])
    return stages, extent


# ------------------------------------------------------------------ tables

def kl_table(kl: dict, widths):
    """KL(q || p) in nats: one row per target, NF then CNF columns per width."""
    header = ["target"] + [f"NF K={w}" for w in widths] + [f"CNF M={w}" for w in widths]
    targets = list(dict.fromkeys(key[0] for key in kl))
    return markdown_table(header, [[t] + [f"{kl[t, kind, w]:.3f}" for kind in KINDS for w in widths]
                                   for t in targets])


def nll_over_seeds(nll_by_seed: dict) -> dict:
    """``{seed: {(data, kind): nll}}`` -> ``{(data, kind): (mean, spread)}`` over the seeds
    (:func:`nodebook.stats.mean_spread`)."""
    keys = list(next(iter(nll_by_seed.values())))
    return {key: mean_spread([nll[key] for nll in nll_by_seed.values()]) for key in keys}


def nll_seed_table(summary: dict, width: int, seeds: int):
    """Test NLL in nats per point, mean ± standard deviation over ``seeds`` seeds: one row per data set."""
    data_sets = list(dict.fromkeys(key[0] for key in summary))
    return markdown_table(["data", f"CNF (M = {width})", f"NF (K = {width})"],
                          [[d] + [format_mean_spread(*summary[d, kind], digits=3) for kind in ("cnf", "nf")]
                           for d in data_sets] + [["seeds", seeds, seeds]])


def hutchinson_table(dims, cost: dict, spread: dict, zscores: dict):
    """Per dimension: seconds per iteration of both traces, their ratio, the spread of the estimate
    per noise and the largest |z| of its mean against the exact value."""
    rows = []
    for i, dim in enumerate(dims):
        exact, hutch = cost["exact"]["seconds"][i], cost["hutchinson"]["seconds"][i]
        rows.append([dim, f"{exact:.3f}", f"{hutch:.3f}", f"{exact / hutch:.1f}×", f"{spread['gaussian'][i]:.3f}",
                     f"{spread['rademacher'][i]:.3f}", f"{max(z[i] for z in zscores.values()):.1f}"])
    return markdown_table(["D", "exact s/iter", "Hutchinson s/iter", "speed-up", "std (Gaussian)",
                           "std (Rademacher)", "max \\|z\\| of mean"], rows)


def summary_table(kl: dict, nll: dict, widest: int, ml_width: int, speedup: float, dim: int):
    """The chapter's headline numbers (``kl`` and ``nll`` values: floats, or (mean, spread[, seeds]) over
    seeds, e.g. from :func:`kl_over_seeds` and :func:`nll_over_seeds`). The paper
    shows Figs. 4-6 as pictures only: no paper column values."""
    none = "figure only (no number)"
    rows = [[f"test NLL, {data}, {kind.upper()} (width {ml_width})",
             f"{format_mean_spread(*value, digits=3) if isinstance(value, tuple) else f'{value:.3f}'} nats", none]
            for (data, kind), value in nll.items()]
    targets = list(dict.fromkeys(key[0] for key in kl))
    def nats(value):  # a float, or (mean, spread[, seeds]) over seeds
        return format_mean_spread(*value[:2], digits=3) if isinstance(value, tuple) else f"{value:.3f}"
    rows += [[f"KL, {t}, {kind.upper()} {'M' if kind == 'cnf' else 'K'}={widest}", f"{nats(kl[t, kind, widest])} nats",
              none] for t in targets for kind in KINDS]
    rows.append([f"exact / Hutchinson time per iteration at D = {dim} (this machine)", f"{speedup:.1f}×",
                 "– (beyond the paper)"])
    return markdown_table(["quantity", "ours", "paper"], rows)


# ------------------------------------------------------------------ beyond the paper: Hutchinson

def gaussian_factor(dim: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """The random lower-triangular L [D, D] of the synthetic density N(0, L L^T)."""
    return torch.randn(dim, dim, generator=generator).tril() / dim ** 0.5 + torch.eye(dim)


def correlated_gaussian(dim: int, generator: torch.Generator | None = None, device="cpu"):
    """A synthetic D-dimensional density: a sampler of N(0, L L^T) with L from :func:`gaussian_factor`."""
    L = gaussian_factor(dim, generator).to(device)
    return lambda num: torch.randn(num, dim, device=device) @ L.T


def gaussian_entropy(L: torch.Tensor) -> float:
    """The entropy in nats of N(0, L L^T): the lowest expected NLL any model of it can reach."""
    dim = L.shape[0]
    return 0.5 * dim * math.log(2 * math.pi * math.e) + float(L.diagonal().abs().log().sum())


def mlp_cnf(dim: int, trace: str, *, tol: float = 1e-3, num_hiddens: int = 64, noise: str = "gaussian",
            device="cpu") -> CNF:
    """The Hutchinson study's CNF on ``device``: an MLP field on dimension ``dim`` with ``trace``
    ("exact" or "hutchinson"), dopri5 at rtol = atol = ``tol``."""
    return CNF(MLPDynamics(dim, num_hiddens), trace=trace, noise=noise, rtol=tol, atol=tol).to(device)


def trace_cost(dim: int, trace: str, iterations: int, batch_size: int = 128, tol: float = 1e-3,
               num_hiddens: int = 64, noise: str = "gaussian", device="cpu"):
    """Train an MLP CNF on :func:`correlated_gaussian` for ``iterations`` steps with ``trace``.

    Backpropagates through dopri5 at rtol = atol = ``tol``. Returns (model,
    mean seconds per iteration, mean forward NFE per iteration, last NLL).
    """
    sampler = correlated_gaussian(dim, torch.Generator().manual_seed(dim), device)
    model = mlp_cnf(dim, trace, tol=tol, num_hiddens=num_hiddens, noise=noise, device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    seconds, nfe = 0.0, 0
    for _ in range(iterations):
        x = sampler(batch_size)
        with Timer() as timer:
            with record_stats() as log:
                loss = negative_log_likelihood(model, x)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        seconds += timer.seconds
        nfe += log.nfe_forward
    return model, seconds / iterations, nfe / iterations, loss.item()


@torch.no_grad()
def hutchinson_spread(model: CNF, x: torch.Tensor, draws: int, noise: str = "gaussian"):
    """Spread of the Hutchinson log-density over ``draws`` probes, at each point of x [N, D].

    Each point is repeated ``draws`` times in one solve (one probe per row).
    Returns (exact log p [N], mean estimate [N], std of the estimate [N]).
    """
    trace, model.dynamics.trace, model.noise = model.dynamics.trace, "exact", noise
    try:
        exact = model.log_prob(x)
        model.dynamics.trace = "hutchinson"
        estimates = model.log_prob(x.repeat_interleave(draws, 0)).reshape(len(x), draws)
    finally:
        model.dynamics.trace = trace
    return exact, estimates.mean(1), estimates.std(1)


def hutchinson_study(dims, iterations: int, tol: float, num_points: int, draws: int, seed: int = 0,
                     device="cpu"):
    """Exact trace against Hutchinson's as the dimension grows (chapter 06_cnf, "Beyond the paper").

    For each D in ``dims``: seconds per training iteration and forward NFE of
    :func:`trace_cost` with each trace, then, on the Hutchinson-trained model,
    the spread of the log-density estimate at ``num_points`` points over
    ``draws`` Gaussian and Rademacher probes, and the z-score of its mean
    against the exact value (|z| of a few at most if unbiased).
    Returns (cost: {trace: {"seconds", "nfe"}}, spread: {noise: [mean std]},
    zscores: {noise: [largest |z| over the points]}).
    """
    cost = {name: {"seconds": [], "nfe": []} for name in ("exact", "hutchinson")}
    spread = {noise: [] for noise in NOISES}
    zscores = {noise: [] for noise in NOISES}
    for dim in dims:
        for name in cost:
            torch.manual_seed(seed)
            model, seconds, nfe, _ = trace_cost(dim, name, iterations, tol=tol, device=device)
            cost[name]["seconds"].append(seconds)
            cost[name]["nfe"].append(nfe)
        x = correlated_gaussian(dim, torch.Generator().manual_seed(dim), device)(num_points)
        for noise in NOISES:
            exact, mean, std = hutchinson_spread(model, x, draws, noise)
            spread[noise].append(std.mean().item())
            zscores[noise].append(((mean - exact) / (std / draws ** 0.5)).abs().max().item())
    return cost, spread, zscores


# ------------------------------------------------------------------ beyond the paper: training with Hutchinson

HUTCH_TRACES = ("exact", "hutchinson")


def hutchinson_key(trace: str, settings: dict, seed: int) -> dict:
    """The checkpoint key of one run of :func:`fit_with_trace`: the probe distribution only for
    Hutchinson's estimator (the exact trace has none)."""
    if trace not in HUTCH_TRACES:
        raise ValueError(f"unknown trace {trace!r}; choose one of {HUTCH_TRACES}")
    key = dict(study="hutchinson_training", dim=settings["hutch_train_dim"], trace=trace,
               iterations=settings["hutch_train_iterations"], batch_size=settings["hutch_train_batch"],
               lr=settings["hutch_train_lr"], tol=settings["hutch_train_tol"], seed=seed)
    if trace == "hutchinson":
        key["noise"] = settings["hutch_train_noise"]
    return key


def fit_with_trace(trace: str, settings: dict, *, seed: int = 0, device="cpu", retrain: bool = False,
                   progress: bool = False):
    """An MLP CNF (:func:`mlp_cnf`) fitted by maximum likelihood to the ``hutch_train_dim``-dimensional
    :func:`correlated_gaussian` with the ``"exact"`` trace or Hutchinson's estimator (probes
    ``hutch_train_noise``), Adam, dopri5 at ``hutch_train_tol``; or the committed run.
    Returns ``(model, run)``."""
    dim, iterations, chunks = settings["hutch_train_dim"], settings["hutch_train_iterations"], settings["num_chunks"]
    key = hutchinson_key(trace, settings, seed)
    sampler = correlated_gaussian(dim, torch.Generator().manual_seed(dim), device)
    torch.manual_seed(seed)
    model = mlp_cnf(dim, trace, tol=settings["hutch_train_tol"], noise=settings["hutch_train_noise"], device=device)
    run = fit_chunks(f"cnf-hutch-d{dim}-{trace}", key, model,
                     lambda opt, _: max_likelihood_step(model, sampler, opt, settings["hutch_train_batch"],
                                                        iterations // chunks),
                     chunks, optimizer="adam", lr=settings["hutch_train_lr"], retrain=retrain, progress=progress)
    return model, run


def hutchinson_training_runs(settings: dict, *, device="cpu", retrain: bool = False, progress: bool = False) -> dict:
    """Every run of the comparison: ``{(trace, seed): (model, run)}`` over :data:`HUTCH_TRACES` and
    ``hutch_seeds``."""
    return {(trace, seed): fit_with_trace(trace, settings, seed=seed, device=device, retrain=retrain,
                                          progress=progress)
            for seed in settings["hutch_seeds"] for trace in HUTCH_TRACES}


@torch.no_grad()
def evaluate_with_exact_trace(runs: dict, settings: dict, *, device="cpu") -> tuple[dict, float]:
    """Test NLL in nats per point of each run of :func:`hutchinson_training_runs` on ``test_size``
    fresh points, every model evaluated with the exact trace and ``eval_method`` at ``eval_tol``.
    Returns ``({(trace, seed): nll}, entropy)``; the entropy of the density is the lowest NLL reachable."""
    dim = settings["hutch_train_dim"]
    L = gaussian_factor(dim, torch.Generator().manual_seed(dim))
    x = (torch.randn(settings["test_size"], dim, generator=torch.Generator().manual_seed(dim + 1)) @ L.T).to(device)
    nll = {}
    for key, (model, _) in runs.items():
        trace = model.dynamics.trace
        model.dynamics.trace = "exact"
        model.use_solver(settings["eval_method"], settings["eval_tol"], settings["eval_tol"])
        try:
            nll[key] = -batched(model.log_prob, x, 1024).mean().item()
        finally:
            model.dynamics.trace = trace
    return nll, gaussian_entropy(L)


def trained_trace_table(runs: dict, trained: dict, entropy: float):
    """Per trace used in training: test NLL mean ± spread (``trained[trace]``), its excess over the
    entropy, minutes of training per run and the forward NFE per iteration in the last chunk (means
    over the seeds of ``runs``, as from :func:`hutchinson_training_runs`)."""
    rows = []
    for trace in HUTCH_TRACES:
        group = [run for (t, _), (_, run) in runs.items() if t == trace]
        rows.append([trace, format_mean_spread(*trained[trace], digits=3), f"{trained[trace][0] - entropy:.3f}",
                     f"{sum(r.train_seconds for r in group) / len(group) / 60:.1f}",
                     f"{sum(r.history[-1]['nfe'] for r in group) / len(group):.0f}"])
    return markdown_table(["trace in training", "test NLL [nats]", "above the entropy [nats]", "minutes per run",
                           "forward NFE per iteration (last chunk)"], rows)


# ------------------------------------------------------------------ command line

PARTS = ("match", "repeats", "ml", "hutch")


def main(argv=None) -> None:
    """Train the chapter's book-profile runs in the background (resumable): for
    each family asked for, its optimizer sweep on ``tune_target``, then every Fig. 4 run with the
    chosen optimizer, then the repeats of the Fig. 4 pairs one seed leaves close (:func:`close_pairs`, over
    the other ``match_seeds``), then the Fig. 5/6 runs over ``ml_seeds``; then the Hutchinson training runs."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kinds", nargs="*", choices=KINDS, default=list(KINDS), help="flow families")
    parser.add_argument("--parts", nargs="*", choices=PARTS, default=list(PARTS),
                        help="match: the sweep and Fig. 4; repeats: the Fig. 4 runs one seed leaves close, "
                             "over the other match_seeds (needs both families' Fig. 4 runs); ml: Fig. 5/6 "
                             "(needs the sweep); hutch: training with Hutchinson's estimator against the exact trace")
    parser.add_argument("--seeds", nargs="*", type=int, default=None,
                        help="only these of the profile's ml_seeds (ml) and match_seeds (repeats), to share "
                             "the runs between processes")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from nodebook.profiles import get_profile
    settings = get_profile("cnf", "book")
    known = {"ml": "ml_seeds", "repeats": "match_seeds"}
    for part, key in known.items():
        unknown = sorted(set(args.seeds or ()) - set(settings[key]))
        if part in args.parts and unknown:
            parser.error(f"--seeds {unknown} are not among the profile's {key} {settings[key]}")
    seeds = settings["ml_seeds"] if args.seeds is None else args.seeds

    def first_seed():  # both families' tuned choices and the pairs their seed-0 Fig. 4 runs leave close
        try:
            with training_disabled():  # the seed-0 runs of both families come first (--parts match)
                chosen = {k: tune_optimizer(k, settings)["choice"] for k in KINDS}
                matched = density_matching_runs(settings, chosen, seed=0)
        except TrainingDisabled as missing:
            parser.error(f"--parts repeats needs every Fig. 4 run of both families first "
                         f"(--parts match for each): {missing}")
        return chosen, close_pairs(matched, settings["close_ratio"])
    # without --parts match, check before anything trains
    repeats = first_seed() if "repeats" in args.parts and "match" not in args.parts else None
    for kind in args.kinds if set(args.parts) & {"match", "ml", "repeats"} else ():
        tuned = tune_optimizer(kind, settings, progress=True)
        print(f"{kind}: optimizer chosen on {settings['tune_target']}:", tuned["choice"], "final KLs:",
              tuned["kl"], flush=True)
        optimizers = {kind: tuned["choice"]}
        if "match" in args.parts:
            for target, width in product(TARGETS, settings["widths"]):
                _, run = match_density(target, kind, width, settings, optimizer=tuned["choice"], progress=True)
                print(f"{kind} {width} {target}: final KL {final_kl(run):.4f}", flush=True)
            if kind == "nf":
                _, run = annealing_ablation(settings, tuned["choice"], progress=True)
                print(f"nf without annealing on {ABLATION_TARGET}: final KL {final_kl(run):.4f}", flush=True)
        if "repeats" in args.parts:
            chosen, pairs = repeats or first_seed()
            print(f"close after one seed (within {settings['close_ratio']}x):", pairs, flush=True)
            for key, (_, run) in repeated_matching_runs(settings, chosen, pairs, kinds=[kind], seeds=args.seeds,
                                                        progress=True).items():
                print(f"{key}: final KL {final_kl(run):.4f}", flush=True)
        if "ml" in args.parts:
            for seed in seeds:
                for data in SAMPLERS:
                    _, run = fit_max_likelihood(data, kind, settings, seed=seed, optimizer=optimizers[kind],
                                                progress=True)
                    print(f"{kind} {data} seed {seed}: final NLL {run.history[-1]['nll']:.4f}", flush=True)
    if "hutch" in args.parts:
        for (trace, seed), (_, run) in hutchinson_training_runs(settings, progress=True).items():
            print(f"{trace} trace, seed {seed}: final training NLL {run.history[-1]['nll']:.4f}", flush=True)


if __name__ == "__main__":
    main()
