"""Load or train: the one way every chapter runs its long training.

``load_or_train(name, settings, ...)`` looks for a finished run saved under
exactly these settings (the file name carries a hash of them) and loads it;
otherwise it trains step by step, saving a resumable checkpoint after every
step, so a run that is killed continues from its last step when the same
command is given again, and ends with the same result. A *step* is whatever
unit the chapter chooses: an epoch, or a chunk of iterations.

The finished checkpoint holds the model's weights and the training history
(small: these are committed for the book profile); the resumable one also
holds the optimizer, the scheduler and the torch random state.
All files load with ``torch.load(..., weights_only=True)``; a file that cannot
be used (corrupt, truncated, not written here, or weights that do not fit the
model) raises :class:`CheckpointError` naming the file and the remedy.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from nodebook.utils import REPO_ROOT, env_path


class TrainingDisabled(RuntimeError):
    """A run would have to train, but ``$NODEBOOK_NO_TRAIN`` forbids it (``make book``)."""


@contextlib.contextmanager
def training_disabled():
    """Within this block :func:`load_or_train` only loads (as with ``$NODEBOOK_NO_TRAIN``): a run that
    has no finished checkpoint raises :class:`TrainingDisabled` instead of training."""
    before = os.environ.get("NODEBOOK_NO_TRAIN")
    os.environ["NODEBOOK_NO_TRAIN"] = "1"
    try:
        yield
    finally:
        if before is None:
            del os.environ["NODEBOOK_NO_TRAIN"]
        else:
            os.environ["NODEBOOK_NO_TRAIN"] = before


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used: corrupt, truncated, not written by
    :func:`load_or_train`, or holding a state that does not fit the model."""


_FINAL_KEYS = ("settings", "history", "model")
_RESUMABLE_KEYS = _FINAL_KEYS + ("optimizer", "scheduler", "rng")


def _remedy(path: Path, resumable: bool) -> str:
    if resumable:  # retrain=True resumes an interrupted retraining, so only deleting helps
        return f"Delete {path} to train this run from its start."
    return f"Pass retrain=True to train this run again, or delete {path}."


def _read_checkpoint(path: Path, device, settings: dict, resumable: bool) -> dict:
    """``torch.load`` one checkpoint and check that it is this run's, or raise :class:`CheckpointError`."""
    what = "resumable checkpoint" if resumable else "checkpoint"
    remedy = _remedy(path, resumable)
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # torch raises many types for a damaged file (RuntimeError, EOFError, pickle's)
        if "Weights only load failed" in str(error):
            raise CheckpointError(f"{path}: cannot read this {what}: it holds Python objects other than tensors "
                                  f"and plain data, which torch.load(weights_only=True) refuses, so it was not "
                                  f"written by load_or_train. {remedy}") from error
        reason = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip().split(". ")[0][:200]
        raise CheckpointError(f"{path}: cannot read this {what}: the file is corrupt, truncated or not a "
                              f"torch file ({type(error).__name__}: {reason}). {remedy}") from error
    keys = _RESUMABLE_KEYS if resumable else _FINAL_KEYS
    missing = [key for key in keys if not isinstance(ckpt, dict) or key not in ckpt]
    if missing:
        found = sorted(map(str, ckpt)) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path}: not a nodebook {what}: it lacks {missing} (found {found}). {remedy}")
    if not isinstance(ckpt["history"], list):
        raise CheckpointError(f"{path}: not a nodebook {what}: 'history' is a "
                              f"{type(ckpt['history']).__name__}, not a list. {remedy}")
    if ckpt["settings"] != settings:
        raise CheckpointError(f"{path}: saved settings {ckpt['settings']} differ from {settings}. {remedy}")
    return ckpt


def _restore(path: Path, part: str, load: Callable, state, resumable: bool) -> None:
    """``load(state)``, turning a state that does not fit into a :class:`CheckpointError`."""
    try:
        load(state)
    except Exception as error:
        reason = " ".join(str(error).split())[:500]
        raise CheckpointError(f"{path}: its saved {part} state does not fit this run "
                              f"({type(error).__name__}: {reason}). {_remedy(path, resumable)}") from error


def checkpoint_dir() -> Path:
    """``$NODEBOOK_CHECKPOINTS`` or the repository's ``checkpoints/``."""
    return env_path("NODEBOOK_CHECKPOINTS", REPO_ROOT / "checkpoints")


def settings_key(settings: dict) -> str:
    """A short stable hash of JSON-able settings (key order does not matter)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class Run:
    """What :func:`load_or_train` returns.

    ``source`` is ``"loaded"`` (a finished checkpoint), ``"trained"`` (from
    scratch) or ``"resumed"`` (continued from an interrupted run).
    ``history`` has one dict per step, each with ``step`` and ``seconds``.
    """

    name: str
    path: Path
    source: str
    history: list[dict] = field(default_factory=list)

    @property
    def train_seconds(self) -> float:
        """Training time summed over steps (as measured when the run trained)."""
        return float(sum(row["seconds"] for row in self.history))

    def describe(self) -> str:
        """One line for the page: loaded, trained or resumed, with its steps and training time."""
        how = {"loaded": "loaded the committed checkpoint", "trained": "trained from scratch",
               "resumed": "resumed an interrupted run and finished it"}[self.source]
        return (f"{self.name}: {how} ({len(self.history)} steps, "
                f"{self.train_seconds:.0f} s of training) — {self.path.name}")


def _save_atomic(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _normalise(settings: dict) -> dict:
    return json.loads(json.dumps(settings, sort_keys=True, default=str))


def load_or_train(name: str, settings: dict, model: torch.nn.Module, train_step: Callable[[int], dict],
                  num_steps: int, *, optimizer: torch.optim.Optimizer | None = None,
                  scheduler=None, retrain: bool = False, directory: Path | None = None,
                  progress: bool = True, done: Callable[[list[dict]], bool] | None = None) -> Run:
    """Load the finished run ``name`` trained with ``settings``, or train it.

    Args:
        name: the run's name, e.g. ``"mnist-odenet"``.
        settings: JSON-able dict of everything that determines the result
            (profile, seed, sizes, lr, ...). A checkpoint is reused only for
            exactly these settings.
        model: the module to load into / train in place.
        train_step: ``train_step(step) -> dict`` trains one step (an epoch or
            a chunk of iterations) and returns numbers to log. Draw all
            randomness from torch's global generator so resumes are exact.
        num_steps: how many steps make the run (with ``done``: at most).
        optimizer, scheduler: saved in the resumable checkpoint.
        retrain: ignore a finished checkpoint and train again (still resumes
            an interrupted retraining).
        directory: where checkpoints live (default :func:`checkpoint_dir`).
        progress: show a tqdm bar over steps.
        done: ``done(history) -> bool``, asked after every step: True ends the run there, before
            ``num_steps`` (e.g. once its loss curve is flat). It must be a function of the
            history only, so that a resumed run stops where an uninterrupted one would; put
            what defines it in ``settings``.

    With ``$NODEBOOK_NO_TRAIN`` set (``make book`` sets it), a run that has no
    finished checkpoint raises :class:`TrainingDisabled` instead of training.
    Under ``torch.distributed`` every process trains and resumes from the same
    files, and only rank 0 writes them.
    """
    settings = _normalise(dict(settings, num_steps=num_steps))
    directory = Path(directory or checkpoint_dir())
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"{name}-{settings_key(settings)}"
    final, partial = directory / f"{stem}.pt", directory / f"{stem}.last.pt"
    device = next(model.parameters()).device

    if final.exists() and not retrain:
        ckpt = _read_checkpoint(final, device, settings, resumable=False)
        _restore(final, "model", model.load_state_dict, ckpt["model"], resumable=False)
        model.eval()
        return Run(name, final, "loaded", ckpt["history"])

    if os.environ.get("NODEBOOK_NO_TRAIN"):
        raise TrainingDisabled(
            f"{name}: no finished checkpoint {final.name} in {directory} for these settings, and training "
            f"is disabled here (NODEBOOK_NO_TRAIN is set, as in `make book`, which only evaluates committed "
            f"checkpoints). Train it with `make reproduce PROFILE=<profile>` or unset NODEBOOK_NO_TRAIN. "
            f"Settings: {settings}")
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    main_process = not distributed or torch.distributed.get_rank() == 0
    history: list[dict] = []
    source = "trained"
    if partial.exists():
        ckpt = _read_checkpoint(partial, device, settings, resumable=True)
        _restore(partial, "model", model.load_state_dict, ckpt["model"], resumable=True)
        if optimizer is not None:
            _restore(partial, "optimizer", optimizer.load_state_dict, ckpt["optimizer"], resumable=True)
        if scheduler is not None:
            _restore(partial, "scheduler", scheduler.load_state_dict, ckpt["scheduler"], resumable=True)
        _restore(partial, "random-number generator", lambda rng: torch.set_rng_state(rng.cpu()), ckpt["rng"],
                 resumable=True)
        if torch.cuda.is_available() and ckpt.get("cuda_rng") is not None:
            _restore(partial, "CUDA random-number generator",
                     # a run resumed on fewer GPUs restores the generators it has
                     lambda states: torch.cuda.set_rng_state_all(
                         [s.cpu() for s in states[:torch.cuda.device_count()]]), ckpt["cuda_rng"],
                     resumable=True)
        history = ckpt["history"]
        source = "resumed"

    model.train()
    steps = range(len(history), num_steps)
    for step in tqdm(steps, desc=name, initial=len(history), total=num_steps, disable=not progress):
        if done is not None and history and done(history):
            break
        start = time.perf_counter()
        row = dict(train_step(step))
        row.update(step=step, seconds=time.perf_counter() - start)
        history.append(row)
        if not main_process:
            continue
        _save_atomic({
            "settings": settings, "history": history, "model": model.state_dict(),
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }, partial)

    if main_process:
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        _save_atomic({"settings": settings, "history": history, "model": state}, final)
        partial.unlink(missing_ok=True)
    if distributed:
        torch.distributed.barrier()  # the other processes return once the final checkpoint exists
    model.eval()
    return Run(name, final, source, history)
