"""Augmented Neural ODEs (Dupont, Doucet & Teh, "Augmented Neural ODEs", NeurIPS 2019).

A Neural ODE maps an input x to the solution z(T) of dz/dt = f(t, z) from
z(0) = x. Two trajectories never cross, so the flow x -> z(T) is a
homeomorphism: in 1-d it is increasing (x1 < x2 gives z1(T) < z2(T)), so it
cannot map -1 -> 1 and 1 -> -1 (g(x) = -x); in 2-d it cannot pull a disk out
of the annulus around it, so no linear read-out separates nested annuli
(data: :mod:`nodebook.data.topology`). Dupont et al. append p zeros to the
state and solve in R^(d+p), where trajectories can go around each other.

- :class:`VectorField`: an MLP f(t, z) on R^(d+p);
- :class:`AugmentedODEBlock`: x (B, d) -> [x, 0] (B, d + p) -> z(T), dropping
  the p extra channels afterwards unless asked to keep them;
- :class:`AugmentedNeuralODE`: the block and an optional linear read-out of
  the whole augmented state (as Dupont et al.'s classifier), or none (the
  flow itself is the map). ``augment_dim=0`` is a plain Neural ODE.
"""

from __future__ import annotations

import torch
from torch import nn

from nodebook import odeint, odeint_adjoint


class VectorField(nn.Module):
    """``f(t, z)``: an MLP with ``num_layers`` tanh hidden layers of ``num_hiddens`` units.

    z: (B, dim) -> (B, dim). With ``time_dependent=True`` the time enters as
    one extra input; otherwise the field is autonomous, as Dupont et al.'s.
    """

    def __init__(self, dim: int, num_hiddens: int = 32, num_layers: int = 2, time_dependent: bool = False):
        super().__init__()
        if dim < 1 or num_layers < 1 or num_hiddens < 1:
            raise ValueError(f"dim, num_hiddens and num_layers must be positive, got {dim}, "
                             f"{num_hiddens}, {num_layers}")
        self.time_dependent = time_dependent
        layers, width = [], dim + int(time_dependent)
        for _ in range(num_layers):
            layers += [nn.Linear(width, num_hiddens), nn.Tanh()]
            width = num_hiddens
        self.net = nn.Sequential(*layers, nn.Linear(width, dim))

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        if self.time_dependent:
            z = torch.cat([z, t.to(z.dtype).expand(z.shape[0], 1)], 1)
        return self.net(z)


class AugmentedODEBlock(nn.Module):
    """Solve dz/dt = func(t, z) from z(0) = [x, 0] over [0, T].

    Args:
        func: the field on R^(dim + augment_dim), (B, dim + augment_dim) -> same.
        dim: the input's width d; x is (B, d).
        augment_dim: p, the zeros appended to x (0: a plain Neural ODE block).
        T: the end time.
        keep_augmented: return all d + p channels of z(T) (True) or the first d.
        method, rtol, atol, options: for the solver (dopri5 at 1e-3, Dupont
            et al.'s setting, by default).
        adjoint: solve with :func:`nodebook.odeint_adjoint` instead of
            backpropagating through :func:`nodebook.odeint`.
    """

    def __init__(self, func: nn.Module, dim: int, augment_dim: int = 0, T: float = 1.0,
                 keep_augmented: bool = False, method: str = "dopri5", rtol: float = 1e-3,
                 atol: float = 1e-3, options: dict | None = None, adjoint: bool = False):
        super().__init__()
        if not isinstance(augment_dim, int) or augment_dim < 0:
            raise ValueError(f"augment_dim must be a non-negative integer (0: no augmentation), got {augment_dim!r}")
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer (the input's width), got {dim!r}")
        if not T > 0:
            raise ValueError(f"T must be positive (the flow runs over [0, T]), got {T!r}")
        self.func, self.dim, self.augment_dim, self.T = func, dim, augment_dim, float(T)
        self.keep_augmented, self.adjoint = keep_augmented, adjoint
        self.solver = dict(method=method, rtol=rtol, atol=atol, options=options)

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """[x, 0]: (B, d) -> (B, d + p)."""
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (batch, {self.dim}), got {tuple(x.shape)}; "
                             f"reshape inputs to (batch, features)")
        if self.augment_dim == 0:
            return x
        return torch.cat([x, x.new_zeros(x.shape[0], self.augment_dim)], 1)

    def trajectory(self, x: torch.Tensor, times) -> torch.Tensor:
        """The augmented state at ``times`` (increasing, from 0): (len(times), B, d + p)."""
        z0 = self.augment(x)
        t = torch.as_tensor(times, dtype=z0.dtype, device=z0.device)
        solve = odeint_adjoint if self.adjoint else odeint
        return solve(self.func, z0, t, **self.solver)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, d) -> z(T): (B, d), or (B, d + p) with ``keep_augmented``."""
        z = self.trajectory(x, [0.0, self.T])[-1]
        return z if self.keep_augmented else z[:, :self.dim]


class AugmentedNeuralODE(nn.Module):
    """A (augmented) Neural ODE for vector data: x (B, d) -> flow over [0, T] -> read-out.

    With ``out_features`` None the output is the flow's first d channels,
    (B, d): the flow itself must be the map (the 1-d problem g(x) = -x).
    Otherwise a linear layer reads all d + p channels of z(T) out to
    (B, out_features) (the annuli classifier). ``augment_dim=0`` gives a
    plain Neural ODE; ``solver`` goes to :class:`AugmentedODEBlock`
    (``method``, ``rtol``, ``atol``, ``options``, ``adjoint``).
    """

    def __init__(self, dim: int, augment_dim: int = 0, out_features: int | None = None,
                 num_hiddens: int = 32, num_layers: int = 2, T: float = 1.0,
                 time_dependent: bool = False, **solver):
        super().__init__()
        if out_features is not None and (not isinstance(out_features, int) or out_features < 1):
            raise ValueError(f"out_features must be a positive integer, or None for no read-out, "
                             f"got {out_features!r}")
        width = dim + augment_dim
        self.block = AugmentedODEBlock(VectorField(width, num_hiddens, num_layers, time_dependent), dim,
                                       augment_dim, T, keep_augmented=out_features is not None, **solver)
        self.readout = None if out_features is None else nn.Linear(width, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.block(x)
        return z if self.readout is None else self.readout(z)


__all__ = ["VectorField", "AugmentedODEBlock", "AugmentedNeuralODE"]
