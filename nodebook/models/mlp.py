"""A small time-dependent MLP vector field: chapter "The adjoint method, checked"
(``book/02_adjoint.ipynb``) checks gradients, memory and NFE on it."""

from __future__ import annotations

import torch
from torch import nn


class TimeMLP(nn.Module):
    """``f(t, z) = W2 tanh(W1 [z, t] + b1) + b2``: ``z`` (..., dim) -> (..., dim).

    The time enters as one extra input, so the field is non-autonomous, as the
    paper's ``f(z(t), t, θ)``.
    """

    def __init__(self, dim: int, num_hiddens: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim + 1, num_hiddens), nn.Tanh(), nn.Linear(num_hiddens, dim))

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z, t.expand(*z.shape[:-1], 1)], dim=-1))
