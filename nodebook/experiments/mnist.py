"""Table 1 and Fig. 3 of the paper: the MNIST classifiers' runs and probes (chapter ``03_mnist``).

Models (see :mod:`nodebook.models.mnist`): ``odenet`` (one ODE block, gradients
by the adjoint), ``rknet`` (the same dynamics, backprop through the solver's
operations), ``resnet`` (6 residual blocks), ``mlp`` (300 hidden units),
``stem`` (the downsampling layers alone). Each ODE model trains with a
:class:`Solver`; each model with a :class:`nodebook.train.Recipe`.

:data:`CONV_RECIPE`, :data:`MLP_RECIPE` and :data:`ADAPTIVE` are the long
CPU runs' configuration: one recipe for the convolutional models (SGD with
Nesterov momentum, weight decay, linear warm-up then cosine decay, random
rotations, zooms and shifts), chosen on a validation split of the training
set (:func:`nodebook.data.mnist.split_validation`), never on the test set;
the MLP without augmentation (it has no translation invariance to exploit);
the ODE-Net and RK-Net with adaptive dopri5 at tolerance 1e-3, as in the
paper. Run one from the command line (resumable: give the same command again
after an interrupt), on one process or several (DistributedDataParallel; the
global batch stays ``batch_size``, split across the processes)::

    python -m nodebook.experiments.mnist --model odenet --threads 2
    torchrun --nproc_per_node=4 -m nodebook.experiments.mnist --model odenet   # e.g. 4 GPUs
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from pathlib import Path
from dataclasses import dataclass, replace
from typing import Callable

import torch
import torch.nn.functional as F

from nodebook import odeint, record_stats
from nodebook.data.mnist import Batches, load_mnist, split_validation
from nodebook.memory import saved_tensor_bytes
from nodebook.models import mnist as models
from nodebook.train import Recipe, fit, world
from nodebook.utils import REPO_ROOT, Timer

KINDS = ("odenet", "rknet", "resnet", "mlp", "stem")
ODE_KINDS = ("odenet", "rknet")


@dataclass(frozen=True)
class Solver:
    """How an ODE block is solved while training: ``method`` with ``tol`` (adaptive)
    or a fixed ``step_size``; gradients by the adjoint or by backprop."""

    method: str = "dopri5"
    tol: float = 1e-3
    step_size: float | None = None
    adjoint: bool = True

    def block(self) -> models.ODEBlock:
        options = None if self.step_size is None else {"step_size": self.step_size}
        return models.ODEBlock(models.ODEFunc(), adjoint=self.adjoint, method=self.method, rtol=self.tol,
                               atol=self.tol, options=options)


CONV_RECIPE = Recipe(num_epochs=20, batch_size=128, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
                     schedule="cosine", warmup_epochs=1.0, augment="affine")
MLP_RECIPE = replace(CONV_RECIPE, num_epochs=30, augment=None)
ADAPTIVE = {"odenet": Solver("dopri5", 1e-3, None, adjoint=True),
            "rknet": Solver("dopri5", 1e-3, None, adjoint=False)}
COMMITTED_DEVICE = "cpu"  # where the committed Table 1 runs trained (results of loaded runs name it)
PROBE_SIZE = 256  # test images whose forward NFE the command-line runs log after every epoch


def command_line_settings() -> dict:
    """The command line's Table 1 runs (:data:`CONV_RECIPE`, :data:`MLP_RECIPE`, :data:`ADAPTIVE`,
    :data:`PROBE_SIZE`) written as chapter-profile settings: a profile holding these values makes
    :func:`train_table1` load exactly the checkpoints the command line trained."""
    conv, mlp, ode, rk = CONV_RECIPE, MLP_RECIPE, ADAPTIVE["odenet"], ADAPTIVE["rknet"]
    if ode.tol != rk.tol or any(getattr(conv, f) != getattr(mlp, f) for f in
                                ("batch_size", "lr", "momentum", "nesterov", "weight_decay", "schedule",
                                 "warmup_epochs")):
        raise ValueError("a chapter profile has one tolerance and one optimizer setting for all models")
    return dict(num_epochs=conv.num_epochs, mlp_num_epochs=mlp.num_epochs, batch_size=conv.batch_size, lr=conv.lr,
                momentum=conv.momentum, nesterov=conv.nesterov, weight_decay=conv.weight_decay,
                schedule=conv.schedule, warmup_epochs=conv.warmup_epochs, augment=conv.augment,
                mlp_augment=mlp.augment, odenet_method=ode.method, odenet_step_size=ode.step_size,
                rknet_method=rk.method, rknet_step_size=rk.step_size, tol=ode.tol, probe_size=PROBE_SIZE,
                probe_every=0)


def recipe_from(settings, kind: str) -> Recipe:
    """The recipe model ``kind`` trains with at a chapter profile's ``settings``."""
    mlp = kind == "mlp"
    return Recipe(num_epochs=settings["mlp_num_epochs" if mlp else "num_epochs"], batch_size=settings["batch_size"],
                  lr=settings["lr"], momentum=settings["momentum"], nesterov=settings["nesterov"],
                  weight_decay=settings["weight_decay"], schedule=settings["schedule"],
                  warmup_epochs=settings["warmup_epochs"], augment=settings["mlp_augment" if mlp else "augment"])


def solver_from(settings, kind: str) -> Solver | None:
    """The training solver of ODE model ``kind`` at a profile's ``settings`` (``None`` for the others)."""
    if kind not in ODE_KINDS:
        return None
    return Solver(settings[f"{kind}_method"], settings["tol"], settings[f"{kind}_step_size"],
                  adjoint=kind == "odenet")


def build(kind: str, solver: Solver | None = None) -> torch.nn.Module:
    """Model ``kind``; ODE models need their training ``solver``."""
    if kind in ODE_KINDS:
        if solver is None:
            raise ValueError(f"model {kind!r} needs a Solver")
        return models.ConvClassifier(solver.block())
    builders = {"resnet": models.resnet, "mlp": models.mlp, "stem": models.stem_only}
    if kind not in builders:
        raise ValueError(f"unknown model {kind!r}; choose one of {KINDS}")
    return builders[kind]()


def run_key(kind: str, seed: int, solver: Solver | None, probe_size: int = 0, probe_every: int = 0) -> dict:
    """The settings that determine model ``kind``'s run besides its recipe and its data."""
    key = {"model": kind, "seed": seed}
    if solver is not None:
        key.update(method=solver.method, tol=solver.tol, step_size=solver.step_size, adjoint=solver.adjoint)
    if probe_size:
        key.update(probe_size=probe_size, probe_every=probe_every)
    return key


def train_model(kind: str, data, recipe: Recipe, *, solver: Solver | None = None, seed: int = 0,
                probe_size: int = 0, probe_every: int = 0, device="cpu", retrain: bool = False,
                progress: bool = True):
    """Build ``kind``, train it on ``data`` with ``recipe`` (or load the finished run). Returns ``(model, run)``.

    With ``probe_size``, the row of every epoch also has ``nfe_adaptive``: the
    forward NFE of a dopri5 solve at ``solver.tol`` on the first ``probe_size``
    test images (also every ``probe_every`` iterations, if given).
    """
    torch.manual_seed(seed)
    model = build(kind, solver).to(device)
    probe = None
    if probe_size:
        probe = adaptive_nfe_probe(data.test_x[:probe_size], "dopri5", solver.tol)
    name = f"mnist-{kind}" + ("-val" if "validation" in data.name else "")
    run = fit(name, run_key(kind, seed, solver, probe_size, probe_every), model, data, recipe, retrain=retrain,
              probe=probe, probe_every=probe_every, progress=progress)
    return model, run


def train_table1(data, settings, kinds=KINDS, *, seed: int = 0, device="cpu", retrain: bool = False,
                 progress: bool = True):
    """Every model of Table 1 (and the stem) at a chapter profile's ``settings``: ``(nets, runs)`` dicts."""
    nets, runs = {}, {}
    for kind in kinds:
        solver = solver_from(settings, kind)
        probe = settings["probe_size"] if kind == "odenet" else 0
        nets[kind], runs[kind] = train_model(kind, data, recipe_from(settings, kind), solver=solver, seed=seed,
                                             probe_size=probe, probe_every=settings["probe_every"] if probe else 0,
                                             device=device, retrain=retrain, progress=progress)
    return nets, runs


def training_memory(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Memory of one training step (forward + backward) on batch ``(x, y)``.

    On a GPU: ``torch.cuda.max_memory_allocated`` during the step ("peak").
    On the CPU: the bytes autograd saved during the forward pass
    (:func:`nodebook.memory.saved_tensor_bytes`): what the backward pass must keep alive.
    Returns ``{"bytes": ..., "kind": "cuda peak" | "saved tensors"}``.
    """
    model.train()
    x, y = x.clone(), y.clone()  # a slice would count the whole data set's storage as saved

    def forward():
        return F.cross_entropy(model(x), y)

    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
        torch.cuda.reset_peak_memory_stats(x.device)
        forward().backward()
        torch.cuda.synchronize(x.device)
        memory = {"bytes": torch.cuda.max_memory_allocated(x.device), "kind": "cuda peak"}
    else:
        box = {}
        memory = {"bytes": saved_tensor_bytes(lambda: box.setdefault("loss", forward())),
                  "kind": "saved tensors"}
        box["loss"].backward()
    model.zero_grad(set_to_none=True)
    return memory


def time_per_batch(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, repeats: int = 3) -> float:
    """Median seconds of one training step (forward + backward, no optimizer step) on ``(x, y)``."""
    model.train()
    times = []
    for _ in range(repeats + 1):
        with Timer() as tm:
            F.cross_entropy(model(x), y).backward()
        times.append(tm.seconds)
    model.zero_grad(set_to_none=True)
    return sorted(times[1:])[len(times[1:]) // 2]


def adaptive_nfe_probe(x: torch.Tensor, method: str = "dopri5", tol: float = 1e-3) -> Callable:
    """A ``probe`` for :func:`nodebook.train.fit`: the ODE block's forward NFE with an adaptive solver on batch ``x``
    (no gradients), whatever solver the model trains with. Returns ``{"nfe_adaptive": ...}``."""

    @torch.no_grad()
    def probe(model):
        model.eval()
        with model.ode_block.using_solver(method, tol, tol):
            model(x)
            return {"nfe_adaptive": model.ode_block.nfe_forward}

    return probe


@torch.no_grad()
def tolerance_sweep(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, tolerances,
                    method: str = "dopri5", batch_size: int = 500) -> list[dict]:
    """Fig. 3a/b: evaluate the trained ODE-Net with an adaptive solver at each tolerance (rtol = atol).

    Returns one dict per tolerance: ``tol``, ``nfe`` (mean forward NFE per batch),
    ``error`` (test error, fraction), ``seconds`` (mean wall time of one batch's forward pass).
    """
    block = model.ode_block
    model.eval()
    rows = []
    for tol in tolerances:
        wrong, nfe, seconds, batches = 0, 0, 0.0, 0
        with block.using_solver(method, tol, tol):
            for xb, yb in Batches(x, y, batch_size):
                with Timer() as tm:
                    logits = model(xb)
                wrong += (logits.argmax(1) != yb).sum().item()
                nfe += block.nfe_forward
                seconds += tm.seconds
                batches += 1
        rows.append({"tol": tol, "nfe": nfe / batches, "error": wrong / len(y), "seconds": seconds / batches})
    return rows


@torch.no_grad()
def numerical_error(model: torch.nn.Module, x: torch.Tensor, tolerances, *, reference_tol: float = 1e-10,
                    method: str = "dopri5") -> list[dict]:
    """Fig. 3a: how far the ODE block's output z(1) is from the exact one, at each solver tolerance.

    The block's input z(0) = stem(x) is solved with ``method`` at rtol = atol =
    tol (float32, as in training) and compared with a float64 solve of the
    same dynamics at ``reference_tol``. Returns one dict per tolerance: ``tol``,
    ``nfe``, ``max_error`` and ``rms_error`` (absolute, over every component of
    z(1)) and ``relative_error`` (norm of the error over norm of z(1)).
    """
    block = model.ode_block
    model.eval()
    z0 = model.stem(x)
    func64 = copy.deepcopy(block.func).double()
    t = torch.tensor([0.0, 1.0], dtype=torch.float64, device=x.device)
    reference = odeint(func64, z0.double(), t, rtol=reference_tol, atol=reference_tol, method=method)[-1]
    rows = []
    for tol in tolerances:
        with block.using_solver(method, tol, tol):
            error = block(z0).double() - reference
        rows.append({"tol": tol, "nfe": block.nfe_forward, "max_error": error.abs().max().item(),
                     "rms_error": error.pow(2).mean().sqrt().item(),
                     "relative_error": (error.norm() / reference.norm()).item()})
    return rows


@torch.no_grad()
def forward_flops(model: torch.nn.Module, x: torch.Tensor, tolerances, method: str = "dopri5") -> list[dict]:
    """Fig. 3b without a stopwatch: the floating-point operations of one forward pass of the ODE-Net
    on ``x`` at each tolerance (counted by ``torch.utils.flop_counter``), with its NFE. The cost is
    ``stem + head + NFE x`` :func:`dynamics_flops`: exactly linear in NFE."""
    from torch.utils.flop_counter import FlopCounterMode

    block = model.ode_block
    model.eval()
    rows = []
    for tol in tolerances:
        with block.using_solver(method, tol, tol), FlopCounterMode(display=False) as counter:
            model(x)
        rows.append({"tol": tol, "nfe": block.nfe_forward, "flops": counter.get_total_flops()})
    return rows


def dynamics_flops(batch_size: int, channels: int = models.NUM_CHANNELS, size: int = 6) -> float:
    """Floating-point operations of one evaluation of the ODE-Net's dynamics (its two 3x3
    convolutions of ``[t, z]``; the normalisations and ReLUs are a few percent more)."""
    return 2 * (2 * batch_size * size * size * channels * (channels + 1) * 9)


def conv_throughput(batch_size: int = 128, channels: int = models.NUM_CHANNELS, size: int = 6,
                    repeats: int = 20, device="cpu") -> dict:
    """Measured speed of this machine's 3x3 convolutions and of the ODE-Net's dynamics, in GFLOP/s.

    ``conv``: one ``channels -> channels`` 3x3 convolution on ``size x size`` maps
    (the dynamics' own shape) and ``conv_large`` the same on 28x28 maps (what
    the machine reaches when a convolution is big); ``dynamics``: one
    evaluation of :class:`nodebook.models.mnist.ODEFunc` (two such convolutions,
    three GroupNorms, two ReLUs), and ``dynamics_vjp`` one evaluation with its
    vector-Jacobian product (what the adjoint's backward step costs: about 3
    convolutions' work per convolution). Median of ``repeats`` timings.
    """
    def timed(fn) -> float:
        fn()
        times = []
        for _ in range(repeats):
            with Timer() as tm:
                fn()
            times.append(tm.seconds)
        return sorted(times)[len(times) // 2]

    torch.manual_seed(0)
    results = {}
    with torch.no_grad():
        for name, side in (("conv", size), ("conv_large", 28)):
            conv = torch.nn.Conv2d(channels, channels, 3, padding=1).to(device)
            z = torch.randn(batch_size, channels, side, side, device=device)
            seconds = timed(lambda: conv(z))
            results[name] = {"seconds": seconds, "gflops": 2 * batch_size * side * side * channels ** 2 * 9 / seconds / 1e9}
    func = models.ODEFunc(channels).to(device)
    z = torch.randn(batch_size, channels, size, size, device=device, requires_grad=True)
    t = torch.tensor(0.5, device=device)
    flops = dynamics_flops(batch_size, channels, size)
    with torch.no_grad():
        seconds = timed(lambda: func(t, z))
    results["dynamics"] = {"seconds": seconds, "gflops": flops / seconds / 1e9}
    params = [z, *func.parameters()]

    def vjp():
        out = func(t, z)
        torch.autograd.grad(out, params, torch.ones_like(out))

    seconds = timed(vjp)
    results["dynamics_vjp"] = {"seconds": seconds, "gflops": 3 * flops / seconds / 1e9}
    return results


def convolution_share(batch_size: int = 128, channels: int = models.NUM_CHANNELS, size: int = 6,
                      repeats: int = 10, device="cpu", threads: int | None = 1) -> dict:
    """Where the ODE-Net's dynamics spend their time: the share of it inside the convolution kernels.

    Times every aten operator (a ``TorchDispatchMode``, as ``torch.utils.flop_counter`` counts
    them) of ``repeats`` evaluations of :class:`nodebook.models.mnist.ODEFunc` (``forward``, no
    gradients) and of an evaluation with its vector-Jacobian product (``vjp``, what one step of the
    adjoint's backward solve costs), and returns for each the fraction of the operators' time
    spent in convolution operators (forward and backward), with the operators' milliseconds per
    evaluation. The rest (GroupNorm, ReLU, the concatenated time channel) is all that fusing or
    reordering the dynamics could save: with a share near 1, a faster epoch needs a faster
    convolution or fewer evaluations, not tidier code. On a GPU every operator is synchronised,
    so the times are device times. On a CPU the measurement runs on ``threads`` threads (default
    1, as the committed runs trained; ``None``: torch's current setting): a ratio within one run
    on one thread hardly moves when other processes share the machine, whereas several threads
    competing for busy cores spin in the small operations and lower the share.
    """
    device = torch.device(device)
    torch.manual_seed(0)
    func = models.ODEFunc(channels).to(device)
    z = torch.randn(batch_size, channels, size, size, device=device, requires_grad=True)
    t = torch.tensor(0.5, device=device)
    params = [z, *func.parameters()]

    def forward():
        with torch.no_grad():
            func(t, z)

    def vjp():
        out = func(t, z)
        torch.autograd.grad(out, params, torch.ones_like(out))

    cuda = device.type == "cuda"
    previous = torch.get_num_threads()
    if not cuda and threads is not None:
        torch.set_num_threads(threads)
    try:
        results = _profile_shares({"forward": forward, "vjp": vjp}, repeats, cuda)
    finally:
        torch.set_num_threads(previous)
    return results


def _profile_shares(fns: dict, repeats: int, cuda: bool) -> dict:
    """For :func:`convolution_share`: time every aten operator of ``repeats`` calls of each function
    of ``fns`` (backward operators included) and sum the convolution ones."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class OperatorTimes(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.conv = self.total = 0.0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            start = time.perf_counter()
            out = func(*args, **(kwargs or {}))
            if cuda:
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            self.total += seconds
            if "conv" in func.__name__:
                self.conv += seconds
            return out

    results = {}
    for name, fn in fns.items():
        fn()  # warm-up (kernel choice, allocations)
        with OperatorTimes() as times:
            for _ in range(repeats):
                fn()
        results[name] = {"share": times.conv / times.total, "ms_per_evaluation": 1000 * times.total / repeats}
    return results


def training_step_speed(kinds=KINDS, batch_size: int = 128, repeats: int = 3, device="cpu",
                        compile_dynamics: bool = False) -> list[dict]:
    """Seconds of one training step (forward and backward) at initialisation, per model of Table 1,
    with the NFE of its ODE block: the per-batch cost behind the seconds per epoch.
    ``compile_dynamics``: also time each ODE model with its dynamics under ``torch.compile``
    (the same weights; rows named ``<model>+compile``, compilation excluded)."""
    torch.manual_seed(0)
    x = torch.rand(batch_size, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (batch_size,), device=device)
    rows = []
    for kind in kinds:
        net = build(kind, ADAPTIVE.get(kind)).to(device)
        variants = [(kind, net)]
        if compile_dynamics and net.ode_block is not None:
            compiled = copy.deepcopy(net)
            compiled.ode_block.func = torch.compile(compiled.ode_block.func)
            variants.append((f"{kind}+compile", compiled))
        for name, model in variants:
            seconds = time_per_batch(model, x, y, repeats=repeats)
            block = model.ode_block
            rows.append({"model": name, "seconds_per_batch": seconds,
                         "nfe_forward": block.nfe_forward if block is not None else 0})
    return rows


def recipe_sweep(directory=None) -> list[dict]:
    """The recipe's tuning runs (trained with ``--validation``, named ``mnist-<model>-val``): per run, the
    recipe's learning rate, augmentation and epochs, and the final accuracy on the held-out
    validation images with its 95% interval. Read from the finished checkpoints in ``directory``
    (default: the repository's committed ``checkpoints/``), sorted by model, augmentation and lr."""
    from nodebook.stats import wilson_interval

    rows = []
    for path in sorted(Path(directory or REPO_ROOT / "checkpoints").glob("mnist-*-val-*.pt")):
        if path.name.endswith(".last.pt"):
            continue
        saved = torch.load(path, map_location="cpu", weights_only=True)
        settings, history = saved["settings"], saved["history"]
        num_val = int(settings["data"].split("validation split of ")[1].split()[0])
        accuracy = history[-1]["test_accuracy"]
        low, high = wilson_interval(round((1 - accuracy) * num_val), num_val)
        rows.append({"model": settings["model"], "lr": settings["recipe"]["lr"],
                     "augment": settings["recipe"]["augment"], "epochs": len(history),
                     "val_error": 1 - accuracy, "val_interval": (low, high), "num_val": num_val,
                     "hours": sum(r["seconds"] for r in history) / 3600})
    return sorted(rows, key=lambda r: (r["model"], str(r["augment"]), r["lr"]))


def epoch_speed(runs: dict) -> list[dict]:
    """Per model, from the training logs: median seconds per epoch (training only), median forward and
    backward NFE per batch, and epochs trained. ``runs`` maps a model's name to its :class:`Run`."""
    rows = []
    for kind, run in runs.items():
        def median(key):
            values = sorted(r[key] for r in run.history)
            return values[len(values) // 2]
        rows.append({"model": kind, "epochs": len(run.history), "seconds_per_epoch": median("train_seconds"),
                     "nfe_forward": median("nfe_forward"), "nfe_backward": median("nfe_backward"),
                     "hours": sum(r["train_seconds"] for r in run.history) / 3600})
    return rows


def adjoint_nfe(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, tolerances,
                method: str = "dopri5") -> list[dict]:
    """Fig. 3c: forward and backward (adjoint) NFE of one training step on ``(x, y)`` at each tolerance.

    The ODE block is solved with ``odeint_adjoint`` and ``method`` at rtol = atol = tol;
    the backward NFE is what a :func:`nodebook.record_stats` block around
    ``loss.backward()`` counts. Returns dicts ``tol``, ``nfe_forward``, ``nfe_backward``.
    """
    block = model.ode_block
    if not block.adjoint:
        raise ValueError("adjoint_nfe needs an ODE block solved with the adjoint method")
    model.train()
    rows = []
    for tol in tolerances:
        with block.using_solver(method, tol, tol):
            loss = F.cross_entropy(model(x), y)
            with record_stats() as log:
                loss.backward()
        rows.append({"tol": tol, "nfe_forward": block.nfe_forward, "nfe_backward": log.nfe_backward})
    model.zero_grad(set_to_none=True)
    return rows


def memory_vs_depth(depths, x: torch.Tensor, y: torch.Tensor) -> list[dict]:
    """Training memory (see :func:`training_memory`) against depth, fresh untrained models:
    ResNet with ``d`` residual blocks; ODE-Net (adjoint) and RK-Net (backprop) with ``d`` rk4 steps.
    Returns dicts ``depth``, ``resnet``, ``odenet``, ``rknet`` (bytes) and ``kind``."""
    rows = []
    for d in depths:
        nets = {"resnet": models.resnet(d), "odenet": models.odenet("rk4", options={"step_size": 1.0 / d}),
                "rknet": models.rknet(d)}
        row = {"depth": d}
        for name, net in nets.items():
            memory = training_memory(net.to(x.device), x, y)
            row[name], row["kind"] = memory["bytes"], memory["kind"]
        rows.append(row)
    return rows


def _init_distributed(device: str) -> str:
    """Under ``torchrun`` (``WORLD_SIZE`` > 1): join the process group (NCCL on GPUs, gloo on CPUs)
    and return this process's device."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    torch.distributed.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return device


def main(argv=None) -> None:
    """Train one model of Table 1; runs unchanged under ``torchrun --nproc_per_node=N`` (DDP)."""
    parser = argparse.ArgumentParser(description="Train one model of Table 1 (resumable; torchrun-ready).")
    parser.add_argument("--model", choices=KINDS, required=True)
    parser.add_argument("--epochs", type=int, help="override the recipe's number of epochs")
    parser.add_argument("--lr", type=float, help="override the recipe's peak learning rate (at batch 128)")
    parser.add_argument("--batch-size", type=int, help="override the recipe's global batch size")
    parser.add_argument("--augment", help="override the recipe's augmentation ('none', 'crop', 'affine')")
    parser.add_argument("--method", help="ODE models: override the training solver's method (e.g. rk4)")
    parser.add_argument("--step-size", type=float, help="ODE models: a fixed step size for --method")
    parser.add_argument("--tol", type=float, help="ODE models: override the adaptive solver's tolerance "
                        "(e.g. 1e-4 for the limits chapter's tighter ODE-Net)")
    parser.add_argument("--validation", type=int, default=0,
                        help="hold out this many training images and evaluate on them (recipe tuning)")
    parser.add_argument("--num-train", type=int, help="use only the first N training images")
    parser.add_argument("--num-test", type=int, help="use only the first N test images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch.set_num_threads")
    parser.add_argument("--checkpoints", help="checkpoint folder (default $NODEBOOK_CHECKPOINTS or checkpoints/)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.checkpoints:
        os.environ["NODEBOOK_CHECKPOINTS"] = args.checkpoints
    device = _init_distributed(args.device)
    overrides = {k: v for k, v in {"num_epochs": args.epochs, "lr": args.lr,
                                   "batch_size": args.batch_size}.items() if v is not None}
    if args.augment is not None:
        overrides["augment"] = None if args.augment == "none" else args.augment
    data = load_mnist(num_train=args.num_train, num_test=args.num_test, device=device, allow_offline_subset=False)
    if args.validation:
        data = split_validation(data, args.validation)
    recipe = replace(MLP_RECIPE if args.model == "mlp" else CONV_RECIPE, **overrides)
    solver = ADAPTIVE.get(args.model)
    if solver is not None and args.method:
        solver = replace(solver, method=args.method, step_size=args.step_size)
    if solver is not None and args.tol is not None:
        solver = replace(solver, tol=args.tol)
    rank, size = world()
    if rank == 0:
        print(f"{args.model}: {recipe}, {solver} on {data} ({device}, {size} process(es), "
              f"{torch.get_num_threads()} threads each)", flush=True)
    model, run = train_model(args.model, data, recipe, solver=solver, seed=args.seed,
                             probe_size=PROBE_SIZE if args.model == "odenet" else 0, device=device)
    if rank == 0:
        print(run.describe())
        print(f"final test accuracy {run.history[-1]['test_accuracy']:.4f}")
    if size > 1:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
