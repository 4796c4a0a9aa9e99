"""Two-dimensional densities for the continuous-normalizing-flow chapter (book/06_cnf).

Two kinds of data:

- *Unnormalised targets* for density matching by reverse KL (paper, Fig. 4):
  the potential functions ``U1``, ``U2``, ``U3`` of Rezende & Mohamed (2015,
  "Variational inference with normalizing flows", Table 1), with
  ``p~(z) = exp(-U(z))``. ``U2`` and ``U3`` are sine waves that extend
  forever along ``z1``, so they are not normalisable as published (their
  figures simply crop to [-4, 4]^2); we confine them with a smooth box
  ``exp(-(z1/4)^8)`` (~1 inside ``|z1| < 3``, e^-1 at ``|z1| = 4``), which keeps the
  picture and makes the reverse KL well defined.
- *Samplers* for maximum likelihood (Fig. 5/6): "two circles" and "two
  moons", generated as in FFJORD's toy data (sklearn's ``make_circles``
  with factor 0.5 scaled by 3, and ``make_moons`` scaled by 2), drawing all
  randomness from torch's global generator (or ``generator``).

Shapes: points are ``[N, 2]`` tensors; log densities are ``[N]``.
"""

from __future__ import annotations

import math

import torch

BOX = 4.0  # half-width of the smooth box confining U2 and U3 along z1


def _w1(z: torch.Tensor) -> torch.Tensor:
    return torch.sin(2 * math.pi * z[:, 0] / 4)


def _w2(z: torch.Tensor) -> torch.Tensor:
    return 3 * torch.exp(-0.5 * ((z[:, 0] - 1) / 0.6) ** 2)


def _box(z: torch.Tensor) -> torch.Tensor:
    return (z[:, 0] / BOX) ** 8


def potential_ring(z: torch.Tensor) -> torch.Tensor:
    """U1 of Rezende & Mohamed (2015): a ring of radius 2 with two lobes on the z1 axis."""
    radius = z.norm(dim=1)
    lobes = torch.logsumexp(torch.stack([-0.5 * ((z[:, 0] - 2) / 0.6) ** 2,
                                         -0.5 * ((z[:, 0] + 2) / 0.6) ** 2]), dim=0)
    return 0.5 * ((radius - 2) / 0.4) ** 2 - lobes


def potential_wave(z: torch.Tensor) -> torch.Tensor:
    """U2 of Rezende & Mohamed (2015): a sine wave z2 = sin(pi z1 / 2), width 0.4 (boxed)."""
    return 0.5 * ((z[:, 1] - _w1(z)) / 0.4) ** 2 + _box(z)


def potential_two_waves(z: torch.Tensor) -> torch.Tensor:
    """U3 of Rezende & Mohamed (2015): the wave and a copy shifted by a bump near z1 = 1 (boxed)."""
    w1, w2 = _w1(z), _w2(z)
    waves = torch.logsumexp(torch.stack([-0.5 * ((z[:, 1] - w1) / 0.35) ** 2,
                                         -0.5 * ((z[:, 1] - w1 + w2) / 0.35) ** 2]), dim=0)
    return -waves + _box(z)


#: The three density-matching targets (paper Fig. 4), by the names the chapter uses.
TARGETS = {"ring (U1)": potential_ring, "wave (U2)": potential_wave,
           "two waves (U3)": potential_two_waves}


def _target(name: str):
    try:
        return TARGETS[name]
    except KeyError:
        raise ValueError(f"unknown target {name!r}; the targets are {list(TARGETS)}") from None


def log_target(name: str, z: torch.Tensor) -> torch.Tensor:
    """Unnormalised log density ``-U(z)`` of target ``name`` at points ``z`` [N, 2] -> [N]."""
    if z.dim() != 2 or z.shape[1] != 2:
        raise ValueError(f"targets are 2-D: expected points of shape [N, 2], got {tuple(z.shape)}")
    return -_target(name)(z)


def grid(lim: float = 4.0, num: int = 100, dtype=torch.float32):
    """A ``num`` x ``num`` grid over [-lim, lim]^2: (points [num*num, 2], cell area, extent).

    Points run over z1 fastest (row-major image with z2 increasing by row), so
    ``values.reshape(num, num)`` is an image for ``imshow(origin="lower", extent=extent)``.
    """
    axis = torch.linspace(-lim, lim, num, dtype=dtype)
    z2, z1 = torch.meshgrid(axis, axis, indexing="ij")
    points = torch.stack([z1.reshape(-1), z2.reshape(-1)], dim=1)
    area = float(axis[1] - axis[0]) ** 2
    return points, area, (-lim, lim, -lim, lim)


def log_normaliser(name: str, lim: float = 7.0, num: int = 701) -> float:
    """log Z = log of the integral of exp(-U) over the plane, by the midpoint rule in float64.

    The targets have negligible mass beyond ``|z| = 7``, so the reverse KL
    ``E_q[log q - log p~] + log Z`` is the true KL divergence in nats.
    """
    points, area, _ = grid(lim, num, dtype=torch.float64)
    return float(torch.logsumexp(log_target(name, points), 0) + math.log(area))


def sample_two_moons(num: int, noise: float = 0.1, generator: torch.Generator | None = None) -> torch.Tensor:
    """``num`` points [num, 2] of "two moons": sklearn's make_moons(noise) * 2 + (-1, -0.2), as in FFJORD.

    Half the points (the first ``num // 2``) lie on the upper moon.
    """
    upper = num // 2
    theta = math.pi * torch.rand(num, generator=generator, dtype=torch.float64)
    x = torch.where(torch.arange(num) < upper, torch.cos(theta), 1 - torch.cos(theta))
    y = torch.where(torch.arange(num) < upper, torch.sin(theta), 0.5 - torch.sin(theta))
    points = torch.stack([x, y], 1) + noise * torch.randn(num, 2, generator=generator, dtype=torch.float64)
    return (points * 2 + torch.tensor([-1.0, -0.2], dtype=torch.float64)).float()


def sample_two_circles(num: int, noise: float = 0.08, factor: float = 0.5,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """``num`` points [num, 2] of "two circles": sklearn's make_circles(factor, noise) * 3, as in FFJORD.

    The first ``num // 2`` points lie on the outer circle (radius 3), the
    rest on the inner one (radius ``3 * factor``), before noise.
    """
    outer = num // 2
    theta = 2 * math.pi * torch.rand(num, generator=generator, dtype=torch.float64)
    radius = torch.where(torch.arange(num) < outer, 1.0, factor).to(torch.float64)
    points = radius[:, None] * torch.stack([torch.cos(theta), torch.sin(theta)], 1)
    points = points + noise * torch.randn(num, 2, generator=generator, dtype=torch.float64)
    return (3 * points).float()


#: The two maximum-likelihood data sets (paper Fig. 5/6).
SAMPLERS = {"two circles": sample_two_circles, "two moons": sample_two_moons}


def sample(name: str, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``num`` points of data set ``name`` ("two circles" or "two moons")."""
    try:
        sampler = SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown data set {name!r}; the data sets are {list(SAMPLERS)}") from None
    return sampler(num, generator=generator)
