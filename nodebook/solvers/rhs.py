"""The right-hand side ``func(t, y)`` as the steppers call it.

Steppers keep time as Python floats (float64 whatever the state's dtype, and
no device round trips to compare times); ``func`` still receives ``t`` as a
0-d tensor of the state's dtype and device, as in torchdiffeq. The first
evaluation is checked: a tensor of the state's shape and dtype, finite.
"""

from __future__ import annotations

import torch

from nodebook.solvers import errors


class RHS:
    """Wraps ``func`` for a state shaped like ``y0`` (any shape ``S``)."""

    __slots__ = ("func", "shape", "dtype", "device")

    def __init__(self, func, y0: torch.Tensor):
        self.func = func
        self.shape = y0.shape
        self.dtype = y0.dtype
        self.device = y0.device

    def __call__(self, t: float, y: torch.Tensor) -> torch.Tensor:
        """dy/dt at time ``t`` (float) for ``y`` of shape S; returns shape S."""
        return self.func(torch.scalar_tensor(t, dtype=self.dtype, device=self.device), y)

    def nudged(self, t: float, y: torch.Tensor, toward: float) -> torch.Tensor:
        """dy/dt at the floating-point number next to ``t`` (in the state's
        dtype) in the direction of ``toward`` (+1.0 later, -1.0 earlier).

        This is torchdiffeq's ``perturb``: at a discontinuity of func in time,
        a step that starts there sees the value after it, a step that ends
        there the value before it.
        """
        tt = torch.scalar_tensor(t, dtype=self.dtype, device=self.device)
        return self.func(torch.nextafter(tt, tt + toward), y)

    def checked(self, t: float, y: torch.Tensor, toward: float | None = None) -> torch.Tensor:
        """Like ``__call__`` (or :meth:`nudged`), but validates the result
        (used on the first call)."""
        f = self(t, y) if toward is None else self.nudged(t, y, toward)
        if not isinstance(f, torch.Tensor):
            raise errors.func_not_tensor(f)
        if f.shape != self.shape:
            raise errors.bad_func_shape(f.shape, self.shape)
        if f.dtype != self.dtype:
            raise errors.bad_func_dtype(f.dtype, self.dtype)
        if not bool(torch.isfinite(f).all()):
            raise errors.non_finite_derivative(t)
        return f
