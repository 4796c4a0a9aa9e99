"""The adjoint state you can see: a(t) = dL/dz(t) along a whole trajectory.

:func:`nodebook.odeint_adjoint` runs the paper's backward solve (Sec. 2,
Algorithm 1) and keeps only its end, dL/dz(t_0). :func:`adjoint_trajectory`
runs the same solve, written for reading, and keeps every point of it on a
fine time grid, so the adjoint can be plotted. For a loss L(z(t_0), ...,
z(t_N)) it goes from t_N back to t_0 with, on each interval between two
observation times, the augmented system::

    dz/dt =  f(t, z)
    da/dt = -a^T df/dz(t, z)        (one vector-Jacobian product per call)

solved with :func:`nodebook.odeint`, and at each observation time t_i the
jump ``a += dL/dz(t_i)`` (the loss's own dependence on z(t_i); paper,
Fig. 2). After the jump, a(t_i) is the *total* derivative of L with respect
to the state at t_i, every later observation included. The state z is
reconstructed backwards from z(t_N) alone, as Algorithm 1 does, and the
forward solution on the same grid is returned beside it: the two differ where
running the dynamics backwards loses accuracy (paper, Sec. 6, "Reconstructing
forward trajectories").

:func:`adjoint_euler_step` answers where da/dt = -a^T df/dz comes from: the
chain rule through one Euler step z(t+h) = z(t) + h f(t, z(t)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from nodebook.solvers import odeint


@dataclass
class AdjointTrajectory:
    """What :func:`adjoint_trajectory` returns (S is the state's shape, N + 1 the
    number of observation times, K the grid steps per interval, M = N K + 1).

    - ``t`` ``(M,)``: the increasing fine grid; ``t[i * K]`` is observation time t_i.
    - ``z`` ``(M, *S)``: the state reconstructed by the backward solve;
      ``z_forward`` ``(M, *S)``: the forward solution on the same grid.
    - ``a`` ``(M, *S)``: the adjoint dL/dz(t); at an observation time, its value
      after that observation's jump (the limit from earlier times).
    - ``obs_index`` ``(N + 1,)``: the grid indices of the observation times.
    - ``jumps`` ``(N + 1, *S)``: dL/dz(t_i) of the loss's own dependence on z(t_i).
    - ``a_before_jump`` ``(N + 1, *S)``: the adjoint arriving at t_i from later
      times (zero at t_N); ``a_after_jump`` = ``a_before_jump + jumps``: the
      total derivative of L with respect to z(t_i), every later observation
      included (``a_after_jump[0]`` is the gradient
      :func:`nodebook.odeint_adjoint` gives z0).
    - ``loss``: the loss's value.
    """

    t: torch.Tensor
    z: torch.Tensor
    z_forward: torch.Tensor
    a: torch.Tensor
    obs_index: torch.Tensor
    jumps: torch.Tensor
    a_before_jump: torch.Tensor
    a_after_jump: torch.Tensor
    loss: float


class BackwardDynamics:
    """The augmented right-hand side (t, (z, a)) -> (f(t, z), -a^T df/dz(t, z))."""

    def __init__(self, func):
        self.func = func

    def __call__(self, t: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        z, a = state
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            f = self.func(t, z)
            (a_dfdz,) = torch.autograd.grad(f, z, a, allow_unused=True)
        if a_dfdz is None:  # f does not depend on z
            a_dfdz = torch.zeros_like(a)
        return f.detach(), -a_dfdz


def fine_grid(t: torch.Tensor, steps_per_interval: int) -> torch.Tensor:
    """``steps_per_interval`` equal steps on every interval of ``t`` (N + 1,):
    ``(N K + 1,)``, holding each ``t_i`` exactly at index ``i K``."""
    pieces = [torch.linspace(float(t[i - 1]), float(t[i]), steps_per_interval + 1,
                             dtype=t.dtype, device=t.device)[:-1] for i in range(1, len(t))]
    grid = torch.cat([*pieces, t[-1:].detach()])
    grid[::steps_per_interval] = t.detach()
    return grid


def _check(t, loss_fn, steps_per_interval):
    if not isinstance(t, torch.Tensor) or t.dim() != 1 or t.numel() < 2:
        raise ValueError("t must be a 1-D tensor of at least 2 observation times, "
                         f"got {t!r:.80}")
    if not bool((t[1:] > t[:-1]).all()):
        raise ValueError("t must be strictly increasing: the forward solve runs from t[0] to "
                         "t[-1] and the adjoint comes back; sort the observation times")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable (states at t -> scalar), got {type(loss_fn).__name__}")
    if not isinstance(steps_per_interval, int) or steps_per_interval < 1:
        raise ValueError(f"steps_per_interval must be a positive integer, got {steps_per_interval!r}")


def adjoint_trajectory(func, z0: torch.Tensor, t: torch.Tensor, loss_fn, steps_per_interval: int = 50,
                       restart_state: bool = False, rtol=1e-7, atol=1e-9, method=None,
                       options=None) -> AdjointTrajectory:
    """The adjoint a(t) = dL/dz(t) of Algorithm 1 on a fine grid (see the module docstring).

    func: ``(t, z) -> dz/dt`` as for :func:`nodebook.odeint`. z0: ``(*S)``.
    t: ``(N + 1,)`` strictly increasing observation times, ``t[0]`` the start.
    loss_fn: ``zs (N + 1, *S) -> scalar``, the loss of the states at ``t``
    (the same function one would apply to ``odeint(func, z0, t)``).
    steps_per_interval: grid points per interval between observations.
    restart_state: False (default) reconstructs z backwards from z(t_N) alone,
    as Algorithm 1; True restarts it from the forward solution at each t_i,
    as :func:`nodebook.odeint_adjoint` and torchdiffeq do.
    rtol, atol, method, options: for every solve, forward and backward.
    Nothing is differentiable: the result is for looking at.
    """
    _check(t, loss_fn, steps_per_interval)
    solver = dict(rtol=rtol, atol=atol, method=method, options=options)
    K = steps_per_interval
    grid = fine_grid(t, K)
    with torch.no_grad():
        z_forward = odeint(func, z0.detach(), grid, **solver)
    observed = z_forward[::K].clone().requires_grad_(True)
    with torch.enable_grad():
        loss = loss_fn(observed)
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise ValueError("loss_fn must return a scalar tensor (one loss for the states at t), "
                         f"got {type(loss).__name__} of shape {tuple(getattr(loss, 'shape', ()))}")
    (jumps,) = torch.autograd.grad(loss, observed, allow_unused=True)
    jumps = torch.zeros_like(observed) if jumps is None else jumps.detach()
    observed = observed.detach()

    backward = BackwardDynamics(func)
    z_all, a_all = torch.empty_like(z_forward), torch.empty_like(z_forward)
    before, after = torch.empty_like(jumps), torch.empty_like(jumps)
    z, a = observed[-1], torch.zeros_like(observed[-1])
    with torch.no_grad():
        for i in range(len(t) - 1, -1, -1):
            before[i] = a
            a = a + jumps[i]                       # the adjoint's jump at t_i
            after[i] = a
            if restart_state:
                z = observed[i]
            if i == 0:
                break
            span = grid[(i - 1) * K:i * K + 1].flip(0)   # t_i back to t_(i-1)
            zs, as_ = odeint(backward, (z, a), span, **solver)
            z_all[(i - 1) * K + 1:i * K + 1] = zs[:-1].flip(0)
            a_all[(i - 1) * K + 1:i * K + 1] = as_[:-1].flip(0)
            z, a = zs[-1], as_[-1]
        z_all[0], a_all[0] = z, a
    return AdjointTrajectory(t=grid, z=z_all, z_forward=z_forward, a=a_all,
                             obs_index=torch.arange(0, len(grid), K), jumps=jumps,
                             a_before_jump=before, a_after_jump=after, loss=float(loss.detach()))


class EulerStepAdjoint(NamedTuple):
    """Both sides of da/dt = -a^T df/dz at one Euler step (see :func:`adjoint_euler_step`)."""

    chain_rule: torch.Tensor  #: (a(t+h) - a(t)) / h with a(t) from the chain rule
    ode: torch.Tensor         #: -a(t)^T df/dz(t, z(t)), the adjoint ODE's right-hand side


def adjoint_euler_step(func, z: torch.Tensor, a_next: torch.Tensor, h: float, t: float = 0.0) -> EulerStepAdjoint:
    """Where the adjoint ODE comes from, in one Euler step.

    One step z(t+h) = z(t) + h f(t, z(t)) gives, by the chain rule,
    a(t) = dL/dz(t) = a(t+h)^T dz(t+h)/dz(t) = a(t+h) + h a(t+h)^T df/dz, so::

        (a(t+h) - a(t)) / h = -a(t+h)^T df/dz(t, z(t)),

    which tends to the paper's da/dt = -a(t)^T df/dz (eq. 4) as h -> 0; the
    two differ by O(h). z, a_next (= a(t+h)): ``(*S)``; func: ``(t, z) -> dz/dt``.
    Returns both sides, each shaped like z.
    """
    if not isinstance(h, (int, float)) or not h > 0:
        raise ValueError(f"h must be a positive step size, got {h!r}")
    if a_next.shape != z.shape:
        raise ValueError(f"a_next must have z's shape {tuple(z.shape)} (the adjoint is dL/dz), "
                         f"got {tuple(a_next.shape)}")
    tt = torch.tensor(float(t), dtype=z.dtype, device=z.device)
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        z_next = z + h * func(tt, z)                                   # one Euler step
        (a_now,) = torch.autograd.grad(z_next, z, a_next)              # a(t) by the chain rule
    chain_rule = (a_next - a_now) / h
    ode = BackwardDynamics(func)(tt, (z.detach(), a_now))[1]           # -a(t)^T df/dz
    return EulerStepAdjoint(chain_rule=chain_rule.detach(), ode=ode)


__all__ = ["adjoint_trajectory", "AdjointTrajectory", "adjoint_euler_step", "EulerStepAdjoint",
           "BackwardDynamics", "fine_grid"]
