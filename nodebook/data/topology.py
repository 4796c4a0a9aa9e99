"""Maps that a Neural ODE cannot represent (Dupont, Doucet & Teh, "Augmented
Neural ODEs", NeurIPS 2019, Sec. 3), for :mod:`nodebook.models.augmented`.

- :func:`crossing_1d`: g(x) = -x on x in {-1, 1}. A 1-d flow is increasing,
  so it cannot swap the two points.
- :func:`nested_annuli`: points with ``|x| < r1`` labelled -1 and points with
  ``r2 < |x| < r3`` labelled +1 (Dupont et al.'s g_d with r1, r2, r3 = 0.5, 1,
  1.5). A 2-d flow keeps the disk inside the annulus, so no line separates
  their images.

Inputs are ``(N, d)`` tensors and targets ``(N, 1)`` tensors of +-1 (Dupont
et al. fit them by mean squared error). All randomness comes from a
``torch.Generator`` seeded by the ``seed`` argument.
"""

from __future__ import annotations

import torch


def crossing_1d(dtype: torch.dtype = torch.float32, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """g(x) = -x on {-1, 1}: x ``[[-1], [1]]`` and y ``[[1], [-1]]``, each (2, 1)."""
    x = torch.tensor([[-1.0], [1.0]], dtype=dtype, device=device)
    return x, -x


def annulus_label(x: torch.Tensor, r1: float = 0.5, r2: float = 1.0, r3: float = 1.5) -> torch.Tensor:
    """Dupont et al.'s g(x): -1 where ``|x| <= r1``, +1 where ``r2 <= |x| <= r3``, 0 elsewhere. x (N, d) -> (N, 1)."""
    radius = x.norm(dim=1, keepdim=True)
    inner = (radius <= r1).to(x.dtype)
    outer = ((radius >= r2) & (radius <= r3)).to(x.dtype)
    return outer - inner


def _uniform_in_shell(num: int, dim: int, r_in: float, r_out: float, generator, dtype) -> torch.Tensor:
    """``num`` points uniform (in volume) in ``r_in <= |x| < r_out`` of R^dim: (num, dim)."""
    direction = torch.randn(num, dim, generator=generator, dtype=torch.float64)
    direction = direction / direction.norm(dim=1, keepdim=True)
    u = torch.rand(num, 1, generator=generator, dtype=torch.float64)
    radius = (r_in ** dim + u * (r_out ** dim - r_in ** dim)) ** (1.0 / dim)
    return (direction * radius).to(dtype)


def nested_annuli(num_inner: int = 500, num_outer: int = 1000, r1: float = 0.5, r2: float = 1.0,
                  r3: float = 1.5, dim: int = 2, seed: int = 0,
                  dtype: torch.dtype = torch.float32, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """A disk ``|x| < r1`` labelled -1 inside an annulus ``r2 < |x| < r3`` labelled +1.

    Points are uniform in area (in volume for ``dim`` > 2) in each region,
    shuffled. Returns x (num_inner + num_outer, dim) and y (N, 1), the label
    of the region each point was drawn from (:func:`annulus_label` of x, but
    for rounding within an ulp of a boundary), on ``device``.
    """
    if not 0 < r1 < r2 < r3:
        raise ValueError(f"the radii must satisfy 0 < r1 < r2 < r3 (a gap between the disk and the "
                         f"annulus), got r1={r1}, r2={r2}, r3={r3}")
    if num_inner < 1 or num_outer < 1 or dim < 1:
        raise ValueError(f"num_inner, num_outer and dim must be positive, got {num_inner}, {num_outer}, {dim}")
    generator = torch.Generator().manual_seed(seed)
    inner = _uniform_in_shell(num_inner, dim, 0.0, r1, generator, dtype)
    outer = _uniform_in_shell(num_outer, dim, r2, r3, generator, dtype)
    x = torch.cat([inner, outer])
    y = torch.cat([-torch.ones(num_inner, 1, dtype=dtype), torch.ones(num_outer, 1, dtype=dtype)])
    order = torch.randperm(len(x), generator=generator)
    return x[order].to(device), y[order].to(device)


__all__ = ["crossing_1d", "nested_annuli", "annulus_label"]
