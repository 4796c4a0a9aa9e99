"""Tuple states, as torchdiffeq allows them: ``y0 = (a0, b0, ...)``.

``func(t, (a, b, ...))`` then returns ``(da/dt, db/dt, ...)`` and ``odeint``
returns ``(a(t), b(t), ...)``, each stacked over the output times. The
solvers themselves only ever see one flat tensor: :class:`TupleState`
flattens the state (concatenating, so the tensors' dtypes are promoted to a
common one, as in torchdiffeq), wraps ``func``, the tolerances and the norm,
and cuts the flat solution back into views.

As in torchdiffeq, the default error norm of a tuple state is the largest
RMS norm among its tensors, rtol and atol may be given per tensor (a
sequence with one tolerance per tensor), and a user's ``norm`` receives the
scaled error as a tuple.
"""

from __future__ import annotations

import math

import torch

from nodebook.solvers import errors
from nodebook.solvers.controller import rms_norm


def mixed_norm(bounds):
    """The largest RMS norm among the blocks ``x[start:end]`` of a flat tensor."""
    def norm(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([rms_norm(x[s:e]) for s, e in bounds]).max()
    return norm


def flatten_problem(func, y0, rtol, atol, options):
    """A tuple ``y0`` made one flat tensor, as torchdiffeq does: returns ``(state, func, y0, rtol,
    atol, options)`` for the flat problem, with ``state`` the :class:`TupleState` that unflattens
    the solution (``None``, and everything unchanged, for a tensor ``y0``)."""
    if not isinstance(y0, tuple):
        return None, func, y0, rtol, atol, options
    state = TupleState(y0)
    return (state, state.func(func), state.flatten(y0), state.tolerance("rtol", rtol),
            state.tolerance("atol", atol), state.options(options))


class TupleState:
    """Flattening and unflattening for one tuple ``y0``."""

    def __init__(self, y0: tuple):
        if not y0:
            raise errors.bad_tuple_y0("got an empty tuple")
        for i, y in enumerate(y0):
            if not isinstance(y, torch.Tensor):
                raise errors.bad_tuple_y0(f"element {i} is a {type(y).__name__}")
        self.shapes = [y.shape for y in y0]
        self.numels = [math.prod(s) for s in self.shapes]
        edges = [0]
        for k in self.numels:
            edges.append(edges[-1] + k)
        self.bounds = list(zip(edges[:-1], edges[1:]))
        self.n = edges[-1]

    def flatten(self, ys) -> torch.Tensor:
        """One flat tensor from a tuple shaped like y0."""
        return torch.cat([y.reshape(-1) for y in ys])

    def unflatten(self, flat: torch.Tensor, lead: tuple = ()) -> tuple:
        """Views of ``flat`` (shape (*lead, n)) shaped like y0's tensors."""
        return tuple(flat[..., s:e].view((*lead, *shape)) for (s, e), shape in zip(self.bounds, self.shapes))

    def func(self, func):
        """``func`` on tuples, as a function on the flat state."""
        count = len(self.shapes)

        def flat_func(t, y):
            f = func(t, self.unflatten(y))
            if isinstance(f, torch.Tensor) or not isinstance(f, (tuple, list)):
                raise errors.func_not_tuple(f, count)
            if len(f) != count:
                raise errors.func_tuple_length(len(f), count)
            return torch.cat([fi.reshape(-1) for fi in f])

        flat_func.__wrapped__ = func
        return flat_func

    def tolerance(self, name: str, tol):
        """torchdiffeq's tuple tolerance: a single number stays as it is; a
        sequence gives one tolerance per tensor (each a number, or a tensor
        with one entry per element), concatenated to the flat state."""
        try:
            iter(tol)
        except TypeError:
            return tol
        tol = tuple(tol)
        if len(tol) != len(self.shapes):
            raise errors.tuple_tolerance_length(name, len(tol), len(self.shapes))
        try:
            parts = [torch.as_tensor(x, dtype=torch.float64).reshape(-1).expand(k)
                     for x, k in zip(tol, self.numels)]
        except RuntimeError:
            raise errors.bad_tolerance(name, tol) from None
        return torch.cat(parts)

    def norm(self, norm):
        """The error norm on the flat state: the user's ``norm`` (which takes
        a tuple), or by default the largest RMS norm among the tensors."""
        if norm is None:
            return mixed_norm(self.bounds)
        if not callable(norm):
            return norm  # odeint's option check reports it

        def flat_norm(x):
            return norm(self.unflatten(x))

        return flat_norm

    def options(self, options) -> dict:
        """``options`` with the norm wrapped for the flat state (always set, as torchdiffeq does)."""
        options = dict(options or {})
        options["norm"] = self.norm(options.get("norm"))
        return options
