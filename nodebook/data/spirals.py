"""Spiral data for the time-series chapters.

- :func:`cubic_spiral` — one noisy trajectory of the cubic spiral
  ``dy/dt = y**3 A`` (the classic torchdiffeq demo), chapter "Learning
  dynamics from a trajectory" (``book/04_trajectory.ipynb``).
- :func:`make_spirals` and :func:`sample_observations` — the data set of
  Sec. 5.1 / Table 2 of the paper: many 2-d Archimedean spirals, half clockwise
  and half counter-clockwise, observed at irregular times; chapter "Latent ODEs
  for irregularly sampled time series" (``book/05_latent_ode.ipynb``).

All randomness comes from a ``torch.Generator`` seeded by the ``seed``
argument, so the data never depend on (or disturb) the global random state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import torch

CUBIC_A = ((-0.1, 2.0), (-2.0, -0.1))


class CubicSpiral(torch.nn.Module):
    """The true vector field ``f(t, y) = y**3 @ A`` with ``A = [[-0.1, 2], [-2, -0.1]]``.

    ``y`` has shape ``(..., 2)`` (a row vector per state, as in the torchdiffeq demo).
    """

    def __init__(self, A=CUBIC_A):
        super().__init__()
        self.register_buffer("A", torch.tensor(A, dtype=torch.get_default_dtype()))

    def forward(self, t, y):
        return (y ** 3) @ self.A


@dataclass
class Trajectory:
    """One sampled trajectory: ``t`` (T,), ``y_true`` (T, 2) noise-free, ``y`` (T, 2) observed."""

    t: torch.Tensor
    y_true: torch.Tensor
    y: torch.Tensor
    noise_std: float


def cubic_spiral(num_points: int = 1000, t_end: float = 25.0, y0=(2.0, 0.0), noise_std: float = 0.02,
                 seed: int = 0) -> Trajectory:
    """Solve the cubic spiral on ``num_points`` equally spaced times in ``[0, t_end]`` and add noise.

    The ground truth comes from :func:`nodebook.odeint` (dopri5, rtol 1e-9, atol 1e-10);
    the observations add i.i.d. Gaussian noise of std ``noise_std``.
    """
    from nodebook import odeint

    if num_points < 2:
        raise ValueError(f"num_points must be at least 2, got {num_points}")
    t = torch.linspace(0.0, t_end, num_points)
    with torch.no_grad():
        y_true = odeint(CubicSpiral(), torch.tensor(y0, dtype=t.dtype), t, rtol=1e-9, atol=1e-10)
    g = torch.Generator().manual_seed(seed)
    y = y_true + noise_std * torch.randn(y_true.shape, generator=g)
    return Trajectory(t, y_true, y, noise_std)


def sample_windows(y: torch.Tensor, batch_size: int, window: int, last_start: int | None = None):
    """Random windows of ``window`` consecutive points of ``y`` (T, d).

    Start indices are drawn uniformly from ``[0, last_start]`` (default: the last
    start at which a full window fits) with torch's global generator (so
    :func:`nodebook.checkpoint.load_or_train` resumes exactly).

    Returns ``(starts, batch)``: ``starts`` (B,) and ``batch`` (window, B, d),
    time first like ``odeint``'s output.
    """
    max_start = y.shape[0] - window
    last_start = max_start if last_start is None else min(last_start, max_start)
    if last_start < 0:
        raise ValueError(f"a window of {window} points does not fit in {y.shape[0]} points")
    starts = torch.randint(0, last_start + 1, (batch_size,))
    index = starts[None, :] + torch.arange(window)[:, None]
    return starts, y[index]


# --- The spiral data set of Table 2 -------------------------------------------------------------

@dataclass
class SpiralData:
    """A set of spirals on a shared time grid.

    - ``t`` (2T,): the time grid; the first ``num_observed`` points (T) are the
      *observed part*, the rest the *extrapolation part* (the test target).
    - ``y_true`` (N, 2T, 2): noise-free positions; ``y`` (N, 2T, 2): with noise.
    - ``clockwise`` (N,) bool; ``theta0`` (N,) the starting angle of each spiral.
    """

    t: torch.Tensor
    y_true: torch.Tensor
    y: torch.Tensor
    clockwise: torch.Tensor
    theta0: torch.Tensor
    num_observed: int
    noise_std: float

    def __len__(self):
        return self.y.shape[0]

    def subset(self, index) -> "SpiralData":
        """The spirals selected by ``index`` (a slice, or an index tensor)."""
        return SpiralData(self.t, self.y_true[index], self.y[index], self.clockwise[index],
                          self.theta0[index], self.num_observed, self.noise_std)

    @property
    def t_observed(self) -> torch.Tensor:
        return self.t[:self.num_observed]

    @property
    def t_future(self) -> torch.Tensor:
        return self.t[self.num_observed:]


def archimedean(theta: torch.Tensor, b: float, clockwise: torch.Tensor) -> torch.Tensor:
    """Points ``r (cos θ, ±sin θ)`` with ``r = b θ``; ``theta`` (N, T), ``clockwise`` (N,) -> (N, T, 2).

    A clockwise spiral is the mirror image (``y -> -y``) of the counter-clockwise one.
    """
    r = b * theta
    sign = 1.0 - 2.0 * clockwise.to(theta.dtype)[:, None]
    return torch.stack([r * torch.cos(theta), sign * r * torch.sin(theta)], dim=-1)


def make_spirals(num_spirals: int = 1000, num_observed: int = 100, num_future: int = 100,
                 angular_speed: float = 1.0, t_observed: float = math.pi, b: float = 0.3,
                 theta_max: float = 6 * math.pi, theta_min: float = 0.5 * math.pi,
                 noise_std: float = 0.3, seed: int = 0) -> SpiralData:
    """The spirals of the paper's Sec. 5.1: Archimedean ``r = b θ`` (``a = 0``), seeded.

    Every spiral runs outwards at ``angular_speed`` radians per unit time, on
    the shared grid of ``num_observed`` equally spaced points in
    ``[0, t_observed)`` followed by ``num_future`` more at the same spacing.
    Its starting angle ``θ0`` is uniform in ``[theta_min, theta_max - span]`` (so
    every spiral stays within ``θ <= theta_max``); the first half are
    counter-clockwise and the second half clockwise. Gaussian noise of std
    ``noise_std`` is added to every coordinate.

    Returns a :class:`SpiralData` with ``y`` of shape
    ``(num_spirals, num_observed + num_future, 2)``.
    """
    if num_spirals < 2 or num_spirals % 2:
        raise ValueError(f"num_spirals must be a positive even number (half each direction), got {num_spirals}")
    dt = t_observed / num_observed
    t = dt * torch.arange(num_observed + num_future, dtype=torch.get_default_dtype())
    span = angular_speed * float(t[-1])
    if theta_min + span > theta_max:
        raise ValueError(f"spirals of {span:.2f} rad do not fit between theta_min={theta_min:.2f} "
                         f"and theta_max={theta_max:.2f}")
    g = torch.Generator().manual_seed(seed)
    theta0 = theta_min + (theta_max - span - theta_min) * torch.rand(num_spirals, generator=g)
    clockwise = torch.arange(num_spirals) >= num_spirals // 2
    y_true = archimedean(theta0[:, None] + angular_speed * t[None, :], b, clockwise)
    y = y_true + noise_std * torch.randn(y_true.shape, generator=g)
    return SpiralData(t, y_true, y, clockwise, theta0, num_observed, noise_std)


def split(data: SpiralData, num_train: int, seed: int = 0) -> tuple[SpiralData, SpiralData]:
    """A seeded random split into ``num_train`` training spirals and the rest for testing."""
    if not 0 < num_train < len(data):
        raise ValueError(f"num_train must be between 1 and {len(data) - 1}, got {num_train}")
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    return data.subset(perm[:num_train]), data.subset(perm[num_train:])


@dataclass
class Observations:
    """``n`` irregular observations per spiral, drawn from the observed part.

    ``index`` (N, n) sorted grid indices, ``t`` (N, n) their times, ``y`` (N, n, 2) the noisy values.
    """

    index: torch.Tensor
    t: torch.Tensor
    y: torch.Tensor

    @property
    def gaps(self) -> torch.Tensor:
        """Time since the previous observation, ``(N, n)``; for the first, since ``t = 0``."""
        return torch.diff(self.t, dim=1, prepend=torch.zeros_like(self.t[:, :1]))


def sample_observations(data: SpiralData, n: int, seed: int = 0) -> Observations:
    """For each spiral, ``n`` distinct time points of its observed part, sorted (seeded)."""
    if not 1 <= n <= data.num_observed:
        raise ValueError(f"n must be between 1 and num_observed={data.num_observed}, got {n}")
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(len(data), data.num_observed, generator=g)
    index = scores.argsort(dim=1)[:, :n].sort(dim=1).values  # without replacement
    t = data.t[index]
    y = torch.gather(data.y, 1, index[..., None].expand(-1, -1, data.y.shape[-1]))
    return Observations(index, t, y)


def rmse(prediction: torch.Tensor, target: torch.Tensor) -> float:
    """Root mean squared error over every element: ``sqrt(mean((prediction - target)**2))``."""
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ in shape")
    return float(torch.sqrt(torch.mean((prediction - target) ** 2)))


def to_device(data, device=None, dtype: torch.dtype | None = None):
    """A copy of a :class:`Trajectory`, :class:`SpiralData` or :class:`Observations` with every
    tensor on ``device`` and, given a ``dtype``, every floating-point tensor in it (integer indices
    keep theirs); the same object's tensors where nothing changes."""
    def move(x: torch.Tensor) -> torch.Tensor:
        return x.to(device=device, dtype=dtype if dtype is not None and x.is_floating_point() else None)
    return replace(data, **{f.name: move(getattr(data, f.name)) for f in fields(data)
                            if isinstance(getattr(data, f.name), torch.Tensor)})
