"""Recurrent baselines for the time-series chapters (``book/04_trajectory.ipynb``,
``book/05_latent_ode.ipynb``; the RNN rows of the paper's Table 2).

An RNN is a discrete-time model: it maps one observation to a prediction of the
next, so it knows about elapsed time only if we feed it the time gaps
(``use_gaps=True``). Extrapolating means feeding its own predictions back in,
one step at a time. Their training steps are in ``nodebook.experiments.trajectory``.
"""

from __future__ import annotations

import torch
from torch import nn


class RNNForecaster(nn.Module):
    """A GRU with ``num_hiddens`` units that predicts the next observation.

    Input at step i: ``y_i`` (and, with ``use_gaps``, the time gap ``Δ_i`` from
    ``t_i`` to the time to predict). Output: the prediction at ``t_i + Δ_i``,
    ``y_i + head(h_i)`` for the plain RNN (predicting the increment keeps a fresh
    model near "stay where you are") and ``y_i + Δ_i · head(h_i)`` with
    ``use_gaps``: that RNN predicts a *velocity*, so its step shrinks with the
    gap. Without the scaling it learns the step for the gaps it was trained on
    (about ``π / n`` here) and, rolled out on the test grid's smaller gaps, runs
    far ahead of the spiral.
    """

    def __init__(self, obs_dim: int = 2, num_hiddens: int = 25, use_gaps: bool = False):
        super().__init__()
        self.use_gaps = use_gaps
        self.rnn = nn.GRU(obs_dim + int(use_gaps), num_hiddens, batch_first=True)
        self.head = nn.Linear(num_hiddens, obs_dim)

    def _inputs(self, y, gaps):
        if not self.use_gaps:
            return y
        if gaps is None:
            raise ValueError("this RNN was built with use_gaps=True: pass the time gaps")
        return torch.cat([y, gaps[..., None]], dim=-1)

    def forward(self, y: torch.Tensor, gaps: torch.Tensor | None = None, h: torch.Tensor | None = None):
        """Teacher-forced one-step predictions.

        ``y`` (B, n, d), ``gaps`` (B, n) (ignored unless ``use_gaps``), ``h`` (B, H) or None.
        Returns ``(prediction (B, n, d), h (B, H))``: ``prediction[:, i]`` is the
        forecast for the time ``t_i + gaps[:, i]``.
        """
        out, h = self.rnn(self._inputs(y, gaps), None if h is None else h[None])
        return self._step(y, self.head(out), gaps), h[0]

    def _step(self, y, increment, gaps):
        """``y + increment`` (plain) or ``y + gap * increment`` (``use_gaps``: a velocity)."""
        return y + (increment * gaps[..., None] if self.use_gaps else increment)

    def extrapolate(self, y: torch.Tensor, gaps: torch.Tensor | None, future_gaps: torch.Tensor) -> torch.Tensor:
        """Read the observations ``y`` (B, n, d), then roll out ``len(future_gaps)`` predictions.

        ``gaps`` (B, n): gaps from each observation to the next, the last one to
        the first future time; ``future_gaps`` (m,) or (B, m): the gaps between
        consecutive future times (``future_gaps[..., 0]`` is unused: the last
        observation's gap already points at the first future time). Returns (B, m, d).
        """
        prediction, h = self(y, gaps)
        current = prediction[:, -1]
        outputs = [current]
        future_gaps = future_gaps.expand(y.shape[0], -1)
        for k in range(1, future_gaps.shape[1]):
            gap = future_gaps[:, k]
            inputs = current if not self.use_gaps else torch.cat([current, gap[:, None]], dim=-1)
            _, h = self.rnn(inputs[:, None], h[None])
            h = h[0]
            current = self._step(current, self.head(h), gap)
            outputs.append(current)
        return torch.stack(outputs, dim=1)


def rollout_loss(model: RNNForecaster, y: torch.Tensor, t: torch.Tensor, num_context: int) -> torch.Tensor:
    """Teacher-forced next-step error on the first ``num_context`` observations plus the
    error of a free-running rollout over the rest (trains the RNN for extrapolation).

    ``y`` (B, n, d) at times ``t`` (B, n) or (n,). The RNN reads ``y[:, :num_context]``
    and then feeds back its own predictions for the remaining ``n - num_context``
    times, as :meth:`RNNForecaster.extrapolate` does at test time.
    """
    if not 1 <= num_context < y.shape[1]:
        raise ValueError(f"num_context must be between 1 and {y.shape[1] - 1}, got {num_context}")
    t = t.expand(y.shape[0], -1) if t.dim() == 1 else t
    gaps = torch.diff(t, dim=1)  # (B, n-1): gap from i to i+1
    teacher, _ = model(y[:, :num_context - 1], gaps[:, :num_context - 1]) if num_context > 1 else (None, None)
    future_gaps = torch.cat([torch.zeros_like(gaps[:, :1]), gaps[:, num_context:]], dim=1)
    rollout = model.extrapolate(y[:, :num_context], gaps[:, :num_context], future_gaps)
    errors = [(rollout - y[:, num_context:]) ** 2]
    if teacher is not None:
        errors.append((teacher - y[:, 1:num_context]) ** 2)
    return torch.cat([e.flatten() for e in errors]).mean()


@torch.no_grad()
def forecast(model: RNNForecaster, y: torch.Tensor, t_obs: torch.Tensor, t_future: torch.Tensor) -> torch.Tensor:
    """Read observations ``y`` (B, n, d) at times ``t_obs`` (B, n) or (n,), then predict at
    every time of ``t_future`` (m,) by feeding back its own predictions: returns (B, m, d)."""
    model.eval()
    t_obs = t_obs.expand(y.shape[0], -1) if t_obs.dim() == 1 else t_obs
    gaps = torch.diff(t_obs, dim=1, append=t_future[0].expand(y.shape[0], 1))
    future_gaps = torch.diff(t_future, prepend=t_future[:1])
    return model.extrapolate(y, gaps, future_gaps)


@torch.no_grad()
def one_step_predictions(model: RNNForecaster, y: torch.Tensor, t_obs: torch.Tensor) -> torch.Tensor:
    """Teacher-forced predictions of observations 2..n from the ones before: (B, n-1, d)
    (the RNN's "reconstruction" of the observed part)."""
    model.eval()
    t_obs = t_obs.expand(y.shape[0], -1) if t_obs.dim() == 1 else t_obs
    prediction, _ = model(y[:, :-1], torch.diff(t_obs, dim=1))
    return prediction
