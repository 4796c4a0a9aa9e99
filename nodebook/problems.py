"""Initial value problems with exact solutions, used by the solver chapter and tests.

Each problem has ``func(t, y)`` in torchdiffeq's convention, an initial state
``y0``, a time span and ``exact(t)``, so the error of any solve is known.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

import torch


@dataclass
class Problem:
    """An ODE dy/dt = func(t, y), y(t0) = y0, with its exact solution."""

    name: str
    func: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    y0: torch.Tensor
    t0: float
    t1: float
    exact: Callable[[torch.Tensor], torch.Tensor] | None = None

    def times(self, n: int = 2, dtype=torch.float64) -> torch.Tensor:
        """``n`` equally spaced times from ``t0`` to ``t1``, on the device of ``y0``."""
        return torch.linspace(self.t0, self.t1, n, dtype=dtype, device=self.y0.device)

    def to(self, device) -> "Problem":
        """The same problem with its initial state (and so its times) on ``device``."""
        return replace(self, y0=self.y0.to(device))


def linear_growth(y0: float = -3.0, t1: float = 4.0) -> Problem:
    """dy/dx = x + y/5 (the seeds' example): y = -5x - 25 + (y0 + 25) e^{x/5}."""
    c = y0 + 25.0
    return Problem("dy/dx = x + y/5", lambda t, y: t + y / 5, torch.tensor([y0], dtype=torch.float64),
                   0.0, t1, lambda t: (-5 * t - 25 + c * torch.exp(t / 5)).unsqueeze(-1))


def marble(height: float = 10.0, v0: float = 8.0, g: float = 9.81, drag: float = 0.5,
           t1: float = 2.0) -> Problem:
    """A marble thrown upwards with linear air drag; state (position, velocity).

    dx/dt = v, dv/dt = -g - drag v. Exact: v(t) = (v0 + g/drag) e^{-drag t} - g/drag,
    x(t) = height + (v0 + g/drag)(1 - e^{-drag t})/drag - g t/drag.
    """
    k, w = drag, v0 + g / drag

    def func(t, y):
        return torch.stack([y[..., 1], -g - k * y[..., 1]], dim=-1)

    def exact(t):
        e = torch.exp(-k * t)
        return torch.stack([height + w * (1 - e) / k - g * t / k, w * e - g / k], dim=-1)

    return Problem("marble with drag", func, torch.tensor([height, v0], dtype=torch.float64), 0.0, t1, exact)


def harmonic(omega: float = 2 * math.pi, t1: float = 3.0) -> Problem:
    """An undamped oscillator, (x, v)' = (v, -omega^2 x): x = cos(omega t), v = -omega sin(omega t)."""
    def func(t, y):
        return torch.stack([y[..., 1], -omega ** 2 * y[..., 0]], dim=-1)

    def exact(t):
        return torch.stack([torch.cos(omega * t), -omega * torch.sin(omega * t)], dim=-1)

    return Problem("harmonic oscillator", func, torch.tensor([1.0, 0.0], dtype=torch.float64), 0.0, t1, exact)


def van_der_pol(mu: float = 5.0, t1: float = 12.0) -> Problem:
    """x'' = mu (1 - x^2) x' - x as (x, v): slow drifts and fast jumps, so an adaptive
    solver's steps vary by orders of magnitude. No closed-form solution."""
    def func(t, y):
        x, v = y[..., 0], y[..., 1]
        return torch.stack([v, mu * (1 - x ** 2) * v - x], dim=-1)

    return Problem(f"Van der Pol, mu = {mu:g}", func, torch.tensor([2.0, 0.0], dtype=torch.float64), 0.0, t1)
