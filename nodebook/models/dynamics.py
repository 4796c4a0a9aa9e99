"""A neural vector field fitted to one trajectory: chapter "Learning dynamics from a
trajectory" (``book/04_trajectory.ipynb``), the paper's Sec. 5 idea on the classic
cubic-spiral demo of torchdiffeq.

The model is ``dy/dt = f_θ(y)``, an MLP; fitting it means solving the ODE from
the first point of short windows of the data and matching the rest of each
window (backpropagating through the solver). The training runs are in
``nodebook.experiments.trajectory``.
"""

from __future__ import annotations

import torch
from torch import nn

from nodebook import odeint
from nodebook.data.spirals import sample_windows


class NeuralVectorField(nn.Module):
    """``f(t, y) = W2 tanh(W1 φ(y) + b1) + b2`` with ``φ(y) = y**3`` (``cubic=True``) or ``y``.

    ``y`` (..., dim) -> (..., dim). The cubic feature is the torchdiffeq demo's
    choice: it tells the network *which* nonlinearity to use, not the matrix A.
    The field does not depend on t (the data come from an autonomous ODE).
    """

    def __init__(self, dim: int = 2, num_hiddens: int = 50, cubic: bool = True):
        super().__init__()
        self.cubic = cubic
        self.net = nn.Sequential(nn.Linear(dim, num_hiddens), nn.Tanh(), nn.Linear(num_hiddens, dim))
        for layer in self.net:
            if isinstance(layer, nn.Linear):
                nn.init.normal_(layer.weight, std=0.1)
                nn.init.zeros_(layer.bias)

    def forward(self, t, y):
        return self.net(y ** 3 if self.cubic else y)


def window_loss(func: nn.Module, t: torch.Tensor, y: torch.Tensor, batch_size: int, window: int,
                last_start: int | None = None, **solver) -> torch.Tensor:
    """Mean absolute error of ``func`` on a minibatch of windows of the trajectory ``y`` (T, d).

    Each of ``batch_size`` windows of ``window`` points starts at its first
    (noisy) observation; the solution at the window's times (relative to its
    start, ``t[:window]``; the field is autonomous) is compared with the data.
    ``solver`` goes to :func:`nodebook.odeint` (``method``, ``rtol``, ``atol``, ``options``).
    """
    _, batch = sample_windows(y, batch_size, window, last_start)
    prediction = odeint(func, batch[0], t[:window] - t[0], **solver)
    return torch.mean(torch.abs(prediction - batch))


def vector_field_grid(func: nn.Module, lim: float = 2.0, num: int = 21):
    """The field on a ``num`` x ``num`` grid of ``[-lim, lim]^2``: ``(X, Y, U, V)`` as tensors
    (on the device of ``func``'s parameters)."""
    device = next(func.parameters()).device
    axis = torch.linspace(-lim, lim, num, device=device)
    X, Y = torch.meshgrid(axis, axis, indexing="xy")
    with torch.no_grad():
        uv = func(torch.tensor(0.0, device=device), torch.stack([X, Y], dim=-1))
    return X, Y, uv[..., 0], uv[..., 1]


@torch.no_grad()
def trajectory(func: nn.Module, y0: torch.Tensor, t: torch.Tensor, **solver) -> torch.Tensor:
    """The model's trajectory from ``y0`` (d,) at ``t[0]`` over ``t`` (T,): (T, d)."""
    return odeint(func, y0, t - t[0], **solver)
