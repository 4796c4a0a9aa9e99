"""Pieces the chapters' experiments share: the ODE solver's arguments from a profile, and the
RNN baselines' training step (chapters ``04_trajectory`` and ``05_latent_ode``)."""

from __future__ import annotations

import torch

from nodebook.models import rnn
from nodebook.train import chunked_step

RNN_MAX_GRAD_NORM = 1.0  # the RNN baselines' gradient clipping: through a long rollout of its own
#                          predictions an RNN's gradient can spike


def solver_options(settings: dict) -> dict:
    """The ODE solver's arguments for :func:`nodebook.odeint` from a profile: ``method``, ``rtol``, ``atol``."""
    return dict(method=settings["method"], rtol=settings["rtol"], atol=settings["atol"])


def rnn_train_step(model: rnn.RNNForecaster, optimizer: torch.optim.Optimizer, y: torch.Tensor,
                   t: torch.Tensor, num_context: int | tuple[int, int], batch_size: int, iterations: int,
                   window: int | None = None, scheduler=None, max_grad_norm: float | None = None):
    """A ``train_step(step)`` for :func:`nodebook.checkpoint.load_or_train`: ``iterations``
    optimizer steps on :func:`nodebook.models.rnn.rollout_loss` (the RNN baselines of
    chapters ``04_trajectory`` and ``05_latent_ode``).

    ``y`` (N, n, d) with times ``t`` (N, n) or (n,): each iteration draws
    ``batch_size`` sequences (torch's global CPU generator, so resumes are
    exact); with ``window`` it also draws a random window of that many
    consecutive points from each (for one long trajectory cut into pieces).
    ``num_context`` observations are read before the rollout; a pair
    ``(low, high)`` draws it uniformly from ``low..high`` at each iteration,
    so the RNN learns rollouts of many lengths.
    ``max_grad_norm`` clips the gradient's global norm before each step
    (backpropagating through a long rollout of its own predictions, an RNN's
    gradient can spike). ``scheduler`` steps once per chunk. Returns the
    chunk's mean loss.
    """
    t = t.expand(y.shape[0], -1) if t.dim() == 1 else t
    low, high = (num_context, num_context) if isinstance(num_context, int) else num_context
    length = window or y.shape[1]
    if not 1 <= low <= high < length:
        raise ValueError(f"num_context must lie between 1 and {length - 1} (the sequence's length - 1), "
                         f"got {num_context}")

    def loss_fn():
        batch = torch.randint(0, y.shape[0], (batch_size,))
        yb, tb = y[batch.to(y.device)], t[batch.to(t.device)]
        if window is not None:
            start = torch.randint(0, y.shape[1] - window + 1, (batch_size,))
            index = (start[:, None] + torch.arange(window)).to(y.device)
            yb = torch.gather(yb, 1, index[..., None].expand(-1, -1, y.shape[-1]))
            tb = torch.gather(tb, 1, index)
        context = low if low == high else int(torch.randint(low, high + 1, ()))
        return rnn.rollout_loss(model, yb, tb, context)
    return chunked_step(loss_fn, optimizer, iterations, scheduler=scheduler, max_grad_norm=max_grad_norm)
