"""Small numerical checks the chapters and tests share: orders of convergence,
relative errors, finite-difference gradients."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch


def fit_order(step_sizes: Sequence[float], errors: Sequence[float]) -> float:
    """Slope of log(error) against log(step size): a method of order p gives ~p."""
    slope, _ = np.polyfit(np.log(np.asarray(step_sizes, float)), np.log(np.asarray(errors, float)), 1)
    return float(slope)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """``|a - b| / |b|`` in the 2-norm over all entries."""
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def finite_difference_grad(loss: Callable[[], torch.Tensor], params: Sequence[torch.Tensor],
                           eps: float = 1e-6) -> list[torch.Tensor]:
    """Central differences ``(L(p + eps e_i) - L(p - eps e_i)) / 2 eps`` for every entry of
    every tensor in ``params`` (modified in place and restored). Use float64."""
    grads = []
    with torch.no_grad():
        for p in params:
            g = torch.zeros_like(p)
            flat, gflat = p.view(-1), g.view(-1)
            for i in range(flat.numel()):
                old = flat[i].item()
                flat[i] = old + eps
                up = loss().item()
                flat[i] = old - eps
                down = loss().item()
                flat[i] = old
                gflat[i] = (up - down) / (2 * eps)
            grads.append(g)
    return grads
