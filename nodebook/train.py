"""Classification training shared by the chapters (first used in ``03_mnist``).

The paper's MNIST recipe (Sec. 3; the public ``odenet_mnist.py``): SGD with
momentum 0.9, lr 0.1 x batch/128, lr x0.1 at epochs 60, 100 and 140 of 160.
:func:`fit` scales the milestones to any number of epochs (the drops happen
at the same *fractions* of training, counted in iterations), trains through
:func:`nodebook.checkpoint.load_or_train` (a checkpoint every epoch, automatic
resume, committed final checkpoints), and logs per epoch: loss, forward NFE,
backward NFE, train and test accuracy and seconds.
"""

from __future__ import annotations

import time
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from nodebook import record_stats
from nodebook.checkpoint import Run, load_or_train
from nodebook.data.mnist import Batches
from nodebook.memory import saved_tensor_bytes

PAPER_EPOCHS = 160
PAPER_MILESTONES = (60, 100, 140)


def scaled_lr(lr: float, batch_size: int) -> float:
    """The recipe's linear scaling: ``lr x batch_size / 128``."""
    return lr * batch_size / 128


def step_schedule(optimizer: torch.optim.Optimizer, total_iterations: int,
                  milestones=PAPER_MILESTONES, num_epochs: int = PAPER_EPOCHS, gamma: float = 0.1):
    """LambdaLR (stepped every iteration) multiplying lr by ``gamma`` after each of
    ``milestones/num_epochs`` of ``total_iterations``."""
    bounds = [round(total_iterations * m / num_epochs) for m in milestones]
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: gamma ** sum(it >= b for b in bounds))


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> dict:
    """Accuracy and mean forward NFE (of the ODE block, 0 without one) over ``(x, y)``."""
    was_training = model.training
    model.eval()
    correct, nfe, batches = 0, 0, 0
    for xb, yb in Batches(x, y, batch_size):
        correct += (model(xb).argmax(1) == yb).sum().item()
        block = getattr(model, "ode_block", None)
        nfe += block.nfe_forward if block is not None else 0
        batches += 1
    model.train(was_training)
    return {"accuracy": correct / len(y), "nfe_forward": nfe / max(batches, 1)}


def train_epoch(model, batches: Batches, optimizer, scheduler=None,
                on_batch: Callable[[int], None] | None = None) -> dict:
    """One pass over ``batches``: mean loss, train accuracy, mean forward / backward NFE per batch.

    The forward NFE comes from the ODE block's own record (``block.stats``);
    the backward NFE (the adjoint's solves; 0 for backprop) from a
    :func:`nodebook.record_stats` block around ``loss.backward()``.
    ``on_batch(i)`` is called after each batch (tests raise from it to
    simulate a killed run).
    """
    model.train()
    block = getattr(model, "ode_block", None)
    loss_sum = correct = seen = nfe_f = nfe_b = 0
    for i, (xb, yb) in enumerate(batches):
        logits = model(xb)
        loss = F.cross_entropy(logits, yb)
        optimizer.zero_grad(set_to_none=True)
        with record_stats() as log:
            loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        loss_sum += loss.item() * len(yb)
        correct += (logits.argmax(1) == yb).sum().item()
        seen += len(yb)
        nfe_f += block.nfe_forward if block is not None else 0
        nfe_b += log.nfe_backward
        if on_batch is not None:
            on_batch(i)
    n = len(batches)
    return {"loss": loss_sum / seen, "train_accuracy": correct / seen,
            "nfe_forward": nfe_f / n, "nfe_backward": nfe_b / n}


def fit(name: str, model: torch.nn.Module, data, settings: dict, *, num_epochs: int, batch_size: int,
        lr: float = 0.1, momentum: float = 0.9, augment: bool = True, retrain: bool = False,
        probe: Callable[[torch.nn.Module], dict] | None = None, probe_every: int = 0,
        on_batch: Callable[[int, int], None] | None = None, directory=None, progress: bool = True) -> Run:
    """Train ``model`` on ``data`` (:class:`nodebook.data.mnist.MNIST`) with the paper's recipe, or load it.

    ``settings`` (with ``num_epochs``, ``batch_size``, ``lr``, ``augment``
    added) names the checkpoint, see :func:`nodebook.checkpoint.load_or_train`.
    Every epoch logs ``loss``, ``train_accuracy``, ``test_accuracy``,
    ``nfe_forward``, ``nfe_backward``, ``lr`` and whatever ``probe(model)``
    returns at the end of the epoch (e.g. the NFE of an adaptive solve), then
    ``step`` and ``seconds``. With ``probe_every=k`` the probe also runs
    before every k-th iteration and the epoch's row gets ``probes``: a list of
    ``dict(iteration=..., **probe(model))`` (Fig. 3d: NFE during training).
    ``train_seconds`` is the epoch's training time without evaluation and probes.
    ``on_batch(epoch, i)`` is called after every batch.
    """
    optimizer = torch.optim.SGD(model.parameters(), lr=scaled_lr(lr, batch_size), momentum=momentum)
    batches = Batches(data.train_x, data.train_y, batch_size, shuffle=True, augment=augment)
    scheduler = step_schedule(optimizer, num_epochs * len(batches))
    bars = []  # the batch bar opens with the first epoch trained (none when the run is loaded)

    def train_step(epoch: int) -> dict:
        if not bars:
            bars.append(tqdm(total=len(batches), desc=f"{name} batches", leave=False, disable=not progress))
        bar = bars[0]
        bar.reset()
        probes, probe_seconds = [], 0.0

        def run_probe(iteration):
            nonlocal probe_seconds
            tic = time.perf_counter()
            probes.append(dict(iteration=iteration, **probe(model)))
            model.train()
            probe_seconds += time.perf_counter() - tic

        def callback(i):
            bar.update()
            if on_batch is not None:
                on_batch(epoch, i)
            iteration = epoch * len(batches) + i + 1
            if probe is not None and probe_every and iteration % probe_every == 0 and i + 1 < len(batches):
                run_probe(iteration)

        start = time.perf_counter()
        if probe is not None and probe_every and epoch == 0:
            run_probe(0)
        row = train_epoch(model, batches, optimizer, scheduler, on_batch=callback)
        row["train_seconds"] = time.perf_counter() - start - probe_seconds
        row["lr"] = optimizer.param_groups[0]["lr"]
        row["test_accuracy"] = evaluate(model, data.test_x, data.test_y)["accuracy"]
        if probe is not None:
            run_probe((epoch + 1) * len(batches))
            row.update({k: v for k, v in probes[-1].items() if k != "iteration"})
            if probe_every:
                row["probes"] = probes
        model.train()
        print(f"{name} epoch {epoch + 1}/{num_epochs}: loss {row['loss']:.4f}, train acc "
              f"{row['train_accuracy']:.4f}, test acc {row['test_accuracy']:.4f}, NFE forward "
              f"{row['nfe_forward']:.1f} backward {row['nfe_backward']:.1f}, {row['train_seconds']:.0f} s")
        return row

    settings = dict(settings, num_epochs=num_epochs, batch_size=batch_size, lr=lr, momentum=momentum,
                    augment=augment, num_train=len(data.train_y), data=data.name)
    try:
        return load_or_train(name, settings, model, train_step, num_epochs, optimizer=optimizer,
                             scheduler=scheduler, retrain=retrain, directory=directory, progress=progress)
    finally:
        for bar in bars:
            bar.close()


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
    from nodebook.utils import Timer

    model.train()
    times = []
    for _ in range(repeats + 1):
        with Timer() as tm:
            F.cross_entropy(model(x), y).backward()
        times.append(tm.seconds)
    model.zero_grad(set_to_none=True)
    return sorted(times[1:])[len(times[1:]) // 2]


def adaptive_nfe_probe(x: torch.Tensor, method: str = "dopri5", tol: float = 1e-3) -> Callable:
    """A ``probe`` for :func:`fit`: the ODE block's forward NFE with an adaptive solver on batch ``x``
    (no gradients), whatever solver the model trains with. Returns ``{"nfe_adaptive": ...}``."""

    @torch.no_grad()
    def probe(model):
        model.eval()
        with model.ode_block.using_solver(method, tol, tol):
            model(x)
            return {"nfe_adaptive": model.ode_block.nfe_forward}

    return probe


def train_mnist_model(kind: str, data, settings: dict, *, seed: int, device, retrain: bool = False,
                      progress: bool = True):
    """Build model ``kind`` (see :func:`nodebook.models.mnist.build`) and train it with :func:`fit` at the
    chapter's ``settings``, or load the committed run. Returns ``(model, run)``.

    The ODE-Net also logs ``nfe_adaptive``: the NFE of an adaptive ``dopri5`` solve at
    ``settings["tol"]`` on the first ``probe_size`` test images, every ``probe_every`` iterations.
    """
    from nodebook.models.mnist import build

    torch.manual_seed(seed)
    model = build(kind, settings).to(device)
    keys = {"odenet": ("ode_method", "ode_step_size", "tol"), "rknet": ("rk_step_size",)}.get(kind, ())
    run_settings = dict(model=kind, seed=seed, **{k: settings[k] for k in keys})
    probe = None
    if kind == "odenet":
        probe = adaptive_nfe_probe(data.test_x[:settings["probe_size"]], "dopri5", settings["tol"])
        run_settings.update(probe_size=settings["probe_size"], probe_every=settings["probe_every"])
    run = fit(f"mnist-{kind}", model, data, run_settings, num_epochs=settings["num_epochs"],
              batch_size=settings["batch_size"], augment=settings["augment"], retrain=retrain, probe=probe,
              probe_every=settings["probe_every"] if probe else 0, progress=progress)
    return model, run


@torch.no_grad()
def tolerance_sweep(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, tolerances,
                    method: str = "dopri5", batch_size: int = 500) -> list[dict]:
    """Fig. 3a/b: evaluate the trained ODE-Net with an adaptive solver at each tolerance (rtol = atol).

    Returns one dict per tolerance: ``tol``, ``nfe`` (mean forward NFE per batch),
    ``error`` (test error, fraction), ``seconds`` (mean wall time of one batch's forward pass).
    """
    from nodebook.utils import Timer

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
    from nodebook.models import mnist as models

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
