"""Generic training: chunks of optimizer steps, classifier epochs, evaluation, and one ``fit``.

- :func:`chunked_step`: a ``train_step`` of N optimizer steps on a loss that
  draws its own batch, and :func:`fit_chunks`, which builds the optimizer and
  its schedule and trains such steps under a checkpoint key (the sequence
  models and flows of chapters 04–06);
- :func:`train_epoch` / :func:`evaluate`: one pass of a classifier over
  minibatches, logging forward and backward NFE of any ODE block;
- :class:`Recipe` and :func:`fit`: build the optimizer and learning-rate
  schedule from a recipe and train through
  :func:`nodebook.checkpoint.load_or_train` under an explicit checkpoint key
  (a checkpoint every epoch, automatic resume, committed final checkpoints).

The paper's MNIST recipe (Sec. 3; the public ``odenet_mnist.py``) is
``Recipe(num_epochs=160, schedule="step")``: SGD with momentum 0.9, lr 0.1 x
batch/128, x0.1 at epochs 60, 100 and 140 of 160 (scaled to any number of
epochs: the drops happen at the same *fractions* of training).
Chapter drivers (Table 1, Fig. 3) live in ``nodebook.experiments.mnist``.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm.auto import tqdm

from nodebook import record_stats
from nodebook.checkpoint import Run, load_or_train
from nodebook.data.mnist import Batches

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


def chunked_step(loss_fn: Callable[[], torch.Tensor | tuple], optimizer: torch.optim.Optimizer,
                 iterations: int, *, scheduler=None, max_grad_norm: float | None = None,
                 name: str = "loss") -> Callable[[int], dict]:
    """A ``train_step(step)`` for :func:`~nodebook.checkpoint.load_or_train` made of ``iterations`` optimizer steps.

    ``loss_fn()`` draws its own batch (from torch's global generator, so resumes
    are exact) and returns a scalar loss, or ``(loss, extras)`` with a dict of
    floats to log. Gradients are clipped to ``max_grad_norm`` if given; the
    ``scheduler`` steps once per chunk. The step returns the chunk's means:
    ``{name: ..., **extras}``.
    """
    params = [p for group in optimizer.param_groups for p in group["params"]]

    def train_step(step: int) -> dict:
        totals: dict[str, float] = {}
        for _ in range(iterations):
            optimizer.zero_grad()
            out = loss_fn()
            loss, extras = out if isinstance(out, tuple) else (out, {})
            loss.backward()
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            optimizer.step()
            for key, value in {name: loss.item(), **extras}.items():
                totals[key] = totals.get(key, 0.0) + value / iterations
        if scheduler is not None:
            scheduler.step()
        return totals
    return train_step


def with_validation(train_step: Callable[[int], dict], validate: Callable[[], dict]) -> Callable[[int], dict]:
    """``train_step`` followed by ``validate()`` (no gradients; the model in eval mode, then back):
    the step's log gains the validation numbers, e.g. a loss on held-out data, so a run's history
    shows whether it has stopped improving."""
    def step(index: int) -> dict:
        out = train_step(index)
        with torch.no_grad():
            out.update(validate())
        return out
    return step


OPTIMIZERS = {"adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop, "sgd": torch.optim.SGD}


def make_optimizer(params, name: str = "adam", lr: float = 1e-3, lr_decay: float | None = None):
    """The optimizer ``name`` (a key of ``OPTIMIZERS``: adam, rmsprop, sgd) at learning rate ``lr``,
    and an exponential decay of it by ``lr_decay`` per scheduler step (``None``: a constant rate,
    no scheduler). The optimizer uses its ``foreach`` implementation on every device (PyTorch picks
    it only for CUDA tensors): the same arithmetic, without a Python loop over the parameters, which
    made Adam a third of a planar NF's iteration on a CPU.
    Returns ``(optimizer, scheduler)``."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {sorted(OPTIMIZERS)}")
    optimizer = OPTIMIZERS[name](params, lr=lr, foreach=True)
    scheduler = None if lr_decay is None else torch.optim.lr_scheduler.ExponentialLR(optimizer, lr_decay)
    return optimizer, scheduler


def fit_chunks(name: str, key: dict, model: torch.nn.Module, make_step: Callable, num_steps: int, *,
               optimizer: str = "adam", lr: float = 1e-3, lr_decay: float | None = None, retrain: bool = False,
               directory=None, progress: bool = False, done: Callable | None = None) -> Run:
    """Train ``model`` for ``num_steps`` chunks of optimizer steps under checkpoint ``key``, or load it.

    Builds the optimizer and its schedule (:func:`make_optimizer`), makes the
    chunk's ``train_step = make_step(optimizer, scheduler)`` (e.g. with
    :func:`chunked_step`) and runs :func:`nodebook.checkpoint.load_or_train`:
    the iteration-based sibling of :func:`fit` (chapters 04–06). ``done(history)``
    may end the run before ``num_steps`` (see :func:`~nodebook.checkpoint.load_or_train`).
    """
    opt, scheduler = make_optimizer(model.parameters(), optimizer, lr, lr_decay)
    return load_or_train(name, key, model, make_step(opt, scheduler), num_steps, optimizer=opt,
                         scheduler=scheduler, retrain=retrain, directory=directory, progress=progress, done=done)


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


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of ``model``'s first parameter."""
    return next(model.parameters()).device


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process: ``(0, 1)`` unless ``torch.distributed`` is initialised
    (e.g. under ``torchrun``)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def distributed_rms_norm(tensor: torch.Tensor) -> torch.Tensor:
    """The RMS norm of the state summed over every process of ``torch.distributed``.

    Given as an adaptive solver's ``norm`` option under data parallelism, every
    process measures the error of the *global* batch, so all take the same
    steps as one process solving the whole batch would (up to rounding).
    """
    sums = torch.stack([tensor.detach().double().pow(2).sum(),
                        torch.tensor(float(tensor.numel()), dtype=torch.float64, device=tensor.device)])
    dist.all_reduce(sums)
    return (sums[0] / sums[1]).sqrt().to(tensor.dtype)


def distributed_max_norm(parts) -> torch.Tensor:
    """The adjoint's backward error norm under data parallelism: the largest RMS norm among the
    parts ``(dL/dt, z, a, *param_grads)`` of this process, maximised over all processes, so every
    process accepts and rejects the same backward steps (the parameter-gradient channels are
    per-process partial sums, so no norm of them is the one-process run's)."""
    local = max((p.detach().double().pow(2).mean().sqrt() for p in parts if p.numel()),
                default=torch.zeros((), dtype=torch.float64))
    local = local.reshape(1).to(parts[1].device)
    dist.all_reduce(local, op=dist.ReduceOp.MAX)
    return local[0].to(parts[1].dtype)


def train_epoch(model, batches: Batches, optimizer, scheduler=None,
                on_batch: Callable[[int], None] | None = None, block=None) -> dict:
    """One pass over ``batches``: mean loss, train accuracy, mean forward / backward NFE per batch.

    The forward NFE comes from the ODE block's own record (``block.stats``;
    ``block`` defaults to ``model.ode_block``); the backward NFE (the adjoint's
    solves; 0 for backprop) from a :func:`nodebook.record_stats` block around
    ``loss.backward()``. ``on_batch(i)`` is called after each batch (tests raise
    from it to simulate a killed run).

    Under ``torch.distributed`` with ``model`` wrapped in
    ``DistributedDataParallel``, every process draws the same global batch
    (same generator, same augmentation) and trains on its contiguous share;
    its loss is its share of the global batch's mean (so the adjoint's
    a(t) is the one-process run's for its images), and the averaged gradients
    are scaled back to the global mean's. Loss and accuracy are summed over processes; NFE
    are this process's.
    """
    model.train()
    rank, size = world()
    if block is None:
        block = getattr(model, "ode_block", None)
    loss_sum = correct = seen = nfe_b = 0
    trace = []
    for i, (xb, yb) in enumerate(batches):
        if size > 1:
            total = len(yb)
            xb, yb = torch.tensor_split(xb, size)[rank], torch.tensor_split(yb, size)[rank]
        logits = model(xb)
        if size > 1:  # this process's share of the global batch's mean loss
            loss = F.cross_entropy(logits, yb, reduction="sum") / total
        else:
            loss = F.cross_entropy(logits, yb)
        optimizer.zero_grad(set_to_none=True)
        with record_stats() as log:
            loss.backward()
        if size > 1:  # DistributedDataParallel averaged the shares: the global mean's gradient is their sum
            for p in model.parameters():
                if p.grad is not None:
                    p.grad.mul_(size)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        loss_sum += loss.item() * (total if size > 1 else len(yb))
        correct += (logits.argmax(1) == yb).sum().item()
        seen += len(yb)
        trace.append(block.nfe_forward if block is not None else 0)
        nfe_b += log.nfe_backward
        if on_batch is not None:
            on_batch(i)
    if size > 1:
        sums = torch.tensor([loss_sum, correct, seen], dtype=torch.float64, device=logits.device)
        dist.all_reduce(sums)
        loss_sum, correct, seen = sums.tolist()
    n = len(batches)
    return {"loss": loss_sum / seen, "train_accuracy": correct / seen,
            "nfe_forward": sum(trace) / n, "nfe_backward": nfe_b / n, "nfe_trace": trace}


@dataclass(frozen=True)
class Recipe:
    """How a classifier is trained: optimizer, learning-rate schedule, batch and augmentation.

    ``lr`` is the peak learning rate at batch 128, scaled linearly with
    ``batch_size`` (:func:`scaled_lr`). ``schedule`` is ``"step"`` (the paper's
    x0.1 drops at epochs 60, 100 and 140 of 160, scaled to ``num_epochs``) or
    ``"cosine"`` (linear warm-up over ``warmup_epochs``, then a cosine decay
    to zero). ``augment`` names an entry of
    :data:`nodebook.data.mnist.AUGMENTATIONS`, or ``None``.
    """

    num_epochs: int
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: str = "step"
    warmup_epochs: float = 0.0
    augment: str | None = "crop"

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose one of {SCHEDULES}")
        if self.num_epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"num_epochs, batch_size and lr must be positive: {self}")

    def optimizer(self, params) -> torch.optim.SGD:
        """SGD on ``params`` with the recipe's momentum, weight decay and scaled learning rate."""
        return torch.optim.SGD(params, lr=scaled_lr(self.lr, self.batch_size), momentum=self.momentum,
                               nesterov=self.nesterov, weight_decay=self.weight_decay)

    def scheduler(self, optimizer, iterations_per_epoch: int):
        """The learning-rate schedule over the whole run, stepped once per iteration."""
        total = self.num_epochs * iterations_per_epoch
        if self.schedule == "step":
            return step_schedule(optimizer, total)
        return warmup_cosine(optimizer, total, round(self.warmup_epochs * iterations_per_epoch))


SCHEDULES = ("step", "cosine")


def warmup_cosine(optimizer: torch.optim.Optimizer, total_iterations: int, warmup_iterations: int):
    """LambdaLR (stepped every iteration): linear warm-up from 0 over ``warmup_iterations``,
    then a cosine decay from the optimizer's lr to 0 at ``total_iterations``."""
    def factor(it: int) -> float:
        if it < warmup_iterations:
            return (it + 1) / warmup_iterations
        progress = (it - warmup_iterations) / max(total_iterations - warmup_iterations, 1)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def fit(name: str, key: dict, model: torch.nn.Module, data, recipe: Recipe, *, retrain: bool = False,
        probe: Callable[[torch.nn.Module], dict] | None = None, probe_every: int = 0,
        on_batch: Callable[[int, int], None] | None = None, directory=None, progress: bool = True) -> Run:
    """Train the classifier ``model`` on ``data`` (:class:`nodebook.data.mnist.MNIST`) with ``recipe``, or load it.

    ``key`` holds the settings that determine the model (its kind, seed,
    solver...); the checkpoint is keyed by ``key`` plus the recipe's fields and
    the data's name and size, see :func:`nodebook.checkpoint.load_or_train`.
    Every epoch logs ``loss``, ``train_accuracy``, ``test_accuracy`` (on
    ``data.test_x``, which :func:`nodebook.data.mnist.split_validation` makes a
    validation set), ``nfe_forward``, ``nfe_backward``, ``nfe_trace`` (forward NFE of
    every batch), ``lr`` (the rate after the epoch's last scheduler step, which the next epoch starts
    with) and whatever ``probe(model)`` returns at the end of the
    epoch, then ``step`` and ``seconds``. With ``probe_every=k`` the probe also
    runs before every k-th iteration and the epoch's row gets ``probes``: a
    list of ``dict(iteration=..., **probe(model))``. ``train_seconds`` is the
    epoch's training time without evaluation and probes. ``on_batch(epoch, i)``
    is called after every batch.

    Under ``torchrun`` (``torch.distributed`` initialised) the model is wrapped
    in ``DistributedDataParallel``: each global batch of ``recipe.batch_size``
    is split across the processes (see :func:`train_epoch`); an adaptive
    ODE block measures its forward error over the global batch
    (:func:`distributed_rms_norm`), so every process takes the one-process
    run's forward steps, and the adjoint's backward error is maximised over the
    processes (:func:`distributed_max_norm`), so all take the same backward
    steps (within the solver's tolerance of the one-process run's); only
    rank 0 writes checkpoints and prints.
    """
    rank, size = world()
    block = getattr(model, "ode_block", None)
    net = model
    if size > 1:
        device_ids = [model_device(model).index] if model_device(model).type == "cuda" else None
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
        if block is not None and getattr(block, "adaptive", False):
            block.options = {**(block.options or {}), "norm": distributed_rms_norm}
            if block.adjoint:
                block.adjoint_options = {"norm": distributed_max_norm}
    optimizer = recipe.optimizer(model.parameters())
    batches = Batches(data.train_x, data.train_y, recipe.batch_size, shuffle=True, augment=recipe.augment)
    scheduler = recipe.scheduler(optimizer, len(batches))
    bars = []  # the batch bar opens with the first epoch trained (none when the run is loaded)

    def train_step(epoch: int) -> dict:
        if not bars:
            bars.append(tqdm(total=len(batches), desc=f"{name} batches", leave=False,
                             disable=not progress or rank > 0))
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
        row = train_epoch(net, batches, optimizer, scheduler, on_batch=callback, block=block)
        row["train_seconds"] = time.perf_counter() - start - probe_seconds
        row["lr"] = optimizer.param_groups[0]["lr"]
        row["test_accuracy"] = evaluate(model, data.test_x, data.test_y)["accuracy"]
        if probe is not None:
            run_probe((epoch + 1) * len(batches))
            row.update({k: v for k, v in probes[-1].items() if k != "iteration"})
            if probe_every:
                row["probes"] = probes
        model.train()
        if rank == 0:
            print(f"{name} epoch {epoch + 1}/{recipe.num_epochs}: loss {row['loss']:.4f}, train acc "
                  f"{row['train_accuracy']:.4f}, test acc {row['test_accuracy']:.4f}, NFE forward "
                  f"{row['nfe_forward']:.1f} backward {row['nfe_backward']:.1f}, {row['train_seconds']:.0f} s",
                  flush=True)
        return row

    settings = dict(key, recipe=asdict(recipe), num_train=len(data.train_y), data=data.name)
    try:
        return load_or_train(name, settings, model, train_step, recipe.num_epochs, optimizer=optimizer,
                             scheduler=scheduler, retrain=retrain, directory=directory,
                             progress=progress and rank == 0)
    finally:
        for bar in bars:
            bar.close()


def training_curves(runs: dict, key: str, panel_of, label_of, iterations_of) -> dict:
    """``{(panel, label): (iterations, values)}`` of history column ``key`` for
    :func:`nodebook.plotting.plot_curves`: ``runs`` maps keys to ``(model, run)``; a run of
    ``iterations_of(key)`` iterations logs one row per equal chunk, placed at the iteration it ends on."""
    curves = {}
    for name, (_, run) in runs.items():
        per_chunk = iterations_of(name) / len(run.history)
        curves[panel_of(name), label_of(name)] = ([(row["step"] + 1) * per_chunk for row in run.history],
                                                  [row[key] for row in run.history])
    return curves
