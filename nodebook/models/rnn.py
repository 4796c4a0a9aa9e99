"""Recurrent baselines for the time-series chapters (``book/04_trajectory.ipynb``,
``book/05_latent_ode.ipynb``; the RNN rows of the paper's Table 2).

The paper's baseline is "a recurrent neural net with 25 hidden units trained to
minimize negative Gaussian log-likelihood", and "a second version of this RNN
whose inputs were concatenated with the time difference to the next
observation". :class:`RNNForecaster` is both: a GRU whose head gives the mean
and standard deviation of a Gaussian over the next observation, reading the
time gap as an extra input when ``use_gaps=True``.

An RNN is a discrete-time model: it maps one observation to a prediction of the
next, so it knows about elapsed time only if it is fed the gaps. Extrapolating
means feeding its own predicted means back in, one step at a time
(:meth:`RNNForecaster.extrapolate`). The plain RNN's step is the typical gap of
its training data, so :func:`forecast_at_spacing` rolls it out at that spacing
and interpolates onto the times asked for; :func:`forecast` steps once per
asked time, which is right for the RNN with gaps and, for the plain RNN, right
only when the asked times have its training spacing. Their training steps are in
``nodebook.experiments.common``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

LOG_STD_RANGE = (-7.0, 3.0)  # the head's log standard deviation is clamped to this range
CELLS = {"gru": "GRU (tanh and sigmoid gates)", "tanh": "Elman RNN, tanh", "relu": "Elman RNN, ReLU"}


class RNNForecaster(nn.Module):
    """A recurrent network with ``num_hiddens`` units that predicts a Gaussian over the next observation.

    Input at step i: ``y_i`` (and, with ``use_gaps``, the gap ``Δ_i`` from ``t_i``
    to the time to predict). Output: the mean and log standard deviation of the
    observation at ``t_i + Δ_i``, both read from the hidden state by one linear
    layer. The mean is the position itself, not an increment added to the
    (noisy) input, so the network can average the noise out over its history.
    ``cell`` is the recurrence (a key of ``CELLS``): a GRU, or a plain
    (Elman) RNN with tanh or ReLU.
    """

    def __init__(self, obs_dim: int = 2, num_hiddens: int = 25, use_gaps: bool = False, cell: str = "gru"):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"unknown cell {cell!r}; choose one of {sorted(CELLS)}")
        self.use_gaps, self.cell_type = use_gaps, cell
        size = obs_dim + int(use_gaps)
        self.rnn = (nn.GRU(size, num_hiddens, batch_first=True) if cell == "gru"
                    else nn.RNN(size, num_hiddens, nonlinearity=cell, batch_first=True))
        self.head = nn.Linear(num_hiddens, 2 * obs_dim)

    def _inputs(self, y, gaps):
        if not self.use_gaps:
            return y
        if gaps is None:
            raise ValueError("this RNN was built with use_gaps=True: pass the time gaps")
        if gaps.shape != y.shape[:-1]:
            raise ValueError(f"gaps {tuple(gaps.shape)} must have the shape of y without its last axis, "
                             f"{tuple(y.shape[:-1])}")
        return torch.cat([y, gaps[..., None]], dim=-1)

    def cell(self, inputs: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """One step of the recurrence: ``inputs`` (B, input size), ``h`` (B, H) -> the next ``h``. The
        same weights as ``self.rnn``, without its per-call overhead (a rollout makes one call per step)."""
        g = self.rnn
        step = {"gru": torch.ops.aten.gru_cell, "tanh": torch.ops.aten.rnn_tanh_cell,
                "relu": torch.ops.aten.rnn_relu_cell}[self.cell_type]
        return step(inputs, h, g.weight_ih_l0, g.weight_hh_l0, g.bias_ih_l0, g.bias_hh_l0)

    def _gaussian(self, hidden):
        mean, log_std = self.head(hidden).chunk(2, dim=-1)
        return mean, log_std.clamp(*LOG_STD_RANGE)

    def forward(self, y: torch.Tensor, gaps: torch.Tensor | None = None, h: torch.Tensor | None = None):
        """Teacher-forced one-step predictions.

        ``y`` (B, n, d), ``gaps`` (B, n) (ignored unless ``use_gaps``), ``h`` (B, H) or None.
        Returns ``(mean (B, n, d), log_std (B, n, d), h (B, H))``: ``mean[:, i]`` is the
        forecast for the time ``t_i + gaps[:, i]``.
        """
        out, h = self.rnn(self._inputs(y, gaps), None if h is None else h[None])
        mean, log_std = self._gaussian(out)
        return mean, log_std, h[0]

    def extrapolate(self, y: torch.Tensor, gaps: torch.Tensor | None, future_gaps: torch.Tensor,
                    return_std: bool = False):
        """Read the observations ``y`` (B, n, d), then roll out ``future_gaps.shape[-1]`` predictions,
        each step fed the previous predicted mean.

        ``gaps`` (B, n): gaps from each observation to the next, the last one to
        the first future time; ``future_gaps`` (m,) or (B, m): the gaps between
        consecutive future times (``future_gaps[..., 0]`` is unused: the last
        observation's gap already points at the first future time). Returns the
        means (B, m, d), and their log standard deviations too with ``return_std``.
        """
        mean, log_std, h = self(y, gaps)
        current, spread = mean[:, -1], log_std[:, -1]
        means, spreads = [current], [spread]
        future_gaps = future_gaps.expand(y.shape[0], -1)
        for k in range(1, future_gaps.shape[1]):
            h = self.cell(self._inputs(current, future_gaps[:, k]), h)
            current, spread = self._gaussian(h)
            means.append(current)
            spreads.append(spread)
        means = torch.stack(means, dim=1)
        return (means, torch.stack(spreads, dim=1)) if return_std else means


def gaussian_nll(y: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """Elementwise negative log-likelihood of ``y`` under ``N(mean, exp(log_std)²)``."""
    return 0.5 * ((y - mean) * torch.exp(-log_std)) ** 2 + log_std + 0.5 * math.log(2 * math.pi)


def rollout_loss(model: RNNForecaster, y: torch.Tensor, t: torch.Tensor, num_context: int) -> torch.Tensor:
    """Mean Gaussian negative log-likelihood of the teacher-forced predictions of observations
    ``2..num_context`` and of a free-running rollout over the rest (trains the RNN to extrapolate).

    ``y`` (B, n, d) at times ``t`` (B, n) or (n,). The RNN reads ``y[:, :num_context]``
    and then feeds back its own predicted means for the remaining ``n - num_context``
    times, as :meth:`RNNForecaster.extrapolate` does at test time.
    """
    if not 1 <= num_context < y.shape[1]:
        raise ValueError(f"num_context must be between 1 and {y.shape[1] - 1}, got {num_context}")
    t = t.expand(y.shape[0], -1) if t.dim() == 1 else t
    gaps = torch.diff(t, dim=1)  # (B, n-1): gap from i to i+1
    future_gaps = torch.cat([torch.zeros_like(gaps[:, :1]), gaps[:, num_context:]], dim=1)
    mean, log_std = model.extrapolate(y[:, :num_context], gaps[:, :num_context], future_gaps, return_std=True)
    errors = [gaussian_nll(y[:, num_context:], mean, log_std)]
    if num_context > 1:
        mean, log_std, _ = model(y[:, :num_context - 1], gaps[:, :num_context - 1])
        errors.append(gaussian_nll(y[:, 1:num_context], mean, log_std))
    return torch.cat([e.flatten() for e in errors]).mean()


def _gaps_to(t_obs: torch.Tensor, first_future: torch.Tensor, batch: int) -> torch.Tensor:
    t_obs = t_obs.expand(batch, -1) if t_obs.dim() == 1 else t_obs
    return torch.diff(t_obs, dim=1, append=first_future.reshape(-1, 1).expand(batch, 1))


@torch.no_grad()
def forecast(model: RNNForecaster, y: torch.Tensor, t_obs: torch.Tensor, t_future: torch.Tensor) -> torch.Tensor:
    """Read observations ``y`` (B, n, d) at times ``t_obs`` (B, n) or (n,), then predict at
    every time of ``t_future`` (m,), one step per time, feeding back its own predicted
    means: returns (B, m, d)."""
    model.eval()
    gaps = _gaps_to(t_obs, t_future[0], y.shape[0])
    future_gaps = torch.diff(t_future, prepend=t_future[:1])
    return model.extrapolate(y, gaps, future_gaps)


@torch.no_grad()
def forecast_at_spacing(model: RNNForecaster, y: torch.Tensor, t_obs: torch.Tensor, t_future: torch.Tensor,
                        spacing: float) -> torch.Tensor:
    """Roll the RNN out in steps of ``spacing`` from each sequence's last observation and
    interpolate linearly onto ``t_future`` (m,): returns (B, m, d).

    This is how a plain RNN, which never sees time, can be asked for values at
    times of our choosing: each of its steps advances by the typical gap of its
    training data (``spacing``), so its ``k``-th prediction belongs to
    ``t_last + k * spacing``. The value at ``t_last`` itself is its prediction of
    the last observation from the ones before (a denoised version of it).
    """
    if spacing <= 0:
        raise ValueError(f"spacing must be positive, got {spacing}")
    if model.use_gaps:
        raise ValueError("this RNN reads the time gaps: ask it for the future times with forecast()")
    model.eval()
    t_obs = t_obs.expand(y.shape[0], -1) if t_obs.dim() == 1 else t_obs
    t_last = t_obs[:, -1]
    if bool((t_future[0] < t_last).any()):
        raise ValueError("every future time must come after the last observation")
    steps = int(math.ceil(float((t_future[-1] - t_last.min()) / spacing))) + 1
    gaps = torch.full(y.shape[:2], spacing, dtype=y.dtype, device=y.device)
    mean = model.extrapolate(y, gaps, gaps.new_full((steps,), spacing))  # times t_last + k * spacing, k >= 1
    anchor = model(y[:, :-1], gaps[:, :-1])[0][:, -1:] if y.shape[1] > 1 else y[:, -1:]
    path = torch.cat([anchor, mean], dim=1)  # (B, steps + 1, d) at t_last + k * spacing, k >= 0
    u = (t_future[None, :] - t_last[:, None]) / spacing  # (B, m), in steps from t_last
    k = u.floor().long().clamp(0, steps - 1)
    frac = (u - k)[..., None]
    index = k[..., None].expand(-1, -1, y.shape[-1])
    return torch.gather(path, 1, index) * (1 - frac) + torch.gather(path, 1, index + 1) * frac


@torch.no_grad()
def one_step_predictions(model: RNNForecaster, y: torch.Tensor, t_obs: torch.Tensor) -> torch.Tensor:
    """Teacher-forced predicted means of observations 2..n from the ones before: (B, n-1, d)
    (the RNN's "reconstruction" of the observed part)."""
    model.eval()
    t_obs = t_obs.expand(y.shape[0], -1) if t_obs.dim() == 1 else t_obs
    return model(y[:, :-1], torch.diff(t_obs, dim=1))[0]
