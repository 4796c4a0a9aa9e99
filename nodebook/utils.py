"""Small helpers every chapter uses: seeding, device choice, timing, paths."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
REPOSITORY_URL = "https://github.com/nodebook/nodebook"
"""Where the book's source lives, declared once: scripts/colab_cell.py (so every chapter's first
cell), _config.yml and README.md repeat it, and tests/test_product.py checks that they agree."""


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so a chapter reruns identically."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def choose_device(prefer: str | None = None) -> torch.device:
    """The GPU when there is one (e.g. on Colab), else the CPU; ``prefer`` overrides."""
    if prefer is not None:
        return torch.device(prefer)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_name(device: torch.device | str) -> str:
    """A short human name for result rows: ``cpu`` or ``cuda (NVIDIA H100 ...)``."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


def env_path(variable: str, default: Path) -> Path:
    """``$variable`` as a path when set, else ``default``; created if missing."""
    path = Path(os.environ.get(variable) or default)
    path.mkdir(parents=True, exist_ok=True)
    return path


def format_seconds(seconds: float) -> str:
    """``75.3`` -> ``'1 min 15 s'``."""
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


class Timer:
    """Context manager measuring wall time: ``with Timer() as tm: ...; tm.seconds``.

    Synchronises CUDA at both ends so GPU work is counted.
    """

    def __enter__(self):
        _sync()
        self.start = time.perf_counter()
        self.seconds = float("nan")
        return self

    def __exit__(self, *exc):
        _sync()
        self.seconds = time.perf_counter() - self.start
        return False


def _sync():
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
