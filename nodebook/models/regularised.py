"""Regularised dynamics (Finlay, Jacobsen, Nurbekyan & Oberman, "How to train
your neural ODE: the world of Jacobian and kinetic regularization", ICML 2020).

A Neural ODE can fit its data with a field that is needlessly hard to
integrate, so the adaptive solver takes many steps (the paper's Fig. 3d: the
number of evaluations grows during training). Finlay et al. add two
penalties, integrated alongside the state::

    E_kin(T) = int_0^T ||f(t, z)||^2 dt          kinetic energy
    E_jac(T) = int_0^T ||df/dz||_F^2 dt          Jacobian Frobenius norm

and train on ``loss + lambda_k E_kin(T) + lambda_j E_jac(T)``
(:func:`regularisation_loss`). The Frobenius norm is estimated with
Hutchinson's trick, ||A||_F^2 = E ||e^T A||^2 for e ~ N(0, I): one
vector-Jacobian product per evaluation, the probe e drawn once per solve.
(Finlay et al. share that product with a CNF's trace estimate; here it is a
separate one, which costs one more backward pass and reads more simply.)

:class:`RegularisedDynamics` wraps a field ``func(t, y)`` on ``y`` (N, K)
into the tuple system ``(y, E_kin, E_jac)`` of shapes ((N, K), (N,), (N,)),
penalising the first ``dim`` channels of y (all by default).
:func:`solve_regularised` solves it with :func:`nodebook.odeint` or
:func:`nodebook.odeint_adjoint`. It composes with the CNF of
:mod:`nodebook.models.cnf`: there y = [z, log p] and ``dim`` = D, so the
penalties see dz/dt only; :func:`cnf_log_prob_regularised` is
``CNF.log_prob`` with both penalties.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from nodebook import odeint, odeint_adjoint
from nodebook.models.cnf import CNF, hutchinson_noise
from nodebook.models.planar import standard_normal_logprob
from nodebook.solvers.controller import rms_norm


class RegularisedDynamics(nn.Module):
    """``d/dt (y, E_kin, E_jac) = (func(t, y), ||f||^2, ||e^T df/dz||^2)`` with ``f = func(t, y)[:, :dim]``.

    y: (N, K); the penalties' derivatives: (N,) each. ``probe`` is the
    Hutchinson probe e, (N, dim), fixed for a solve (:func:`solve_regularised`
    draws it). The penalties stay differentiable (for training) whenever
    autograd is recording.
    """

    def __init__(self, func, dim: int | None = None):
        super().__init__()
        self.func, self.dim = func, dim
        self.probe: torch.Tensor | None = None

    def forward(self, t: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor, torch.Tensor]):
        y = state[0]
        dim = y.shape[1] if self.dim is None else self.dim
        keep_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            s = y if y.requires_grad else y.detach().requires_grad_(True)
            dy = self.func(t, s)
            f = dy[:, :dim]
            if self.probe is None or self.probe.shape != f.shape:
                raise RuntimeError(f"the Jacobian penalty needs a probe of shape {tuple(f.shape)}: "
                                   "integrate through solve_regularised, which draws one per solve")
            (e_dfdy,) = torch.autograd.grad(f, s, self.probe, create_graph=keep_graph, allow_unused=True)
        kinetic = f.pow(2).sum(1)
        jacobian = torch.zeros_like(kinetic) if e_dfdy is None else e_dfdy[:, :dim].pow(2).sum(1)
        if not keep_graph:
            dy, kinetic, jacobian = dy.detach(), kinetic.detach(), jacobian.detach()
        return dy, kinetic, jacobian


class RegularisedSolution(NamedTuple):
    """What :func:`solve_regularised` returns (T output times, N samples)."""

    states: torch.Tensor    #: (T, N, K) the solution y
    kinetic: torch.Tensor   #: (T, N) kinetic energy from t[0] to each time (>= 0 either way in time)
    jacobian: torch.Tensor  #: (T, N) the Jacobian penalty likewise (Hutchinson estimate)


def state_only_norm(errors: tuple) -> torch.Tensor:
    """The adaptive step's error norm on (y, E_kin, E_jac): the RMS norm of y's error alone."""
    return rms_norm(errors[0])


def solve_regularised(func, y0: torch.Tensor, t: torch.Tensor, dim: int | None = None,
                      probe: torch.Tensor | None = None, adjoint: bool = False,
                      control_penalties: bool = False, method=None, rtol=1e-7, atol=1e-9,
                      options=None) -> RegularisedSolution:
    """Solve y' = func(t, y) from y0 (N, K) over t (T,) with both penalties beside it.

    dim: penalise the first ``dim`` channels (None: all K). probe: the
    Hutchinson probe (N, dim); None draws e ~ N(0, I) from torch's generator.
    adjoint: :func:`nodebook.odeint_adjoint` (func must then be an
    ``nn.Module`` for its parameters to get gradients) instead of
    :func:`nodebook.odeint`. control_penalties: whether the adaptive step
    controls the penalties' error too; by default only y's (a ``norm`` in
    ``options`` overrides this), so the steps, and y, are those of the
    unregularised solve up to rounding. The penalties are returned as
    magnitudes: for decreasing t they are the integrals from t[-1] up to t[0].
    """
    if not isinstance(y0, torch.Tensor) or y0.dim() != 2:
        raise ValueError(f"y0 must be a (samples, channels) tensor, got shape {tuple(getattr(y0, 'shape', ()))}")
    dim = y0.shape[1] if dim is None else dim
    if not isinstance(dim, int) or not 1 <= dim <= y0.shape[1]:
        raise ValueError(f"dim must be an integer in [1, {y0.shape[1]}] (the channels to penalise), got {dim!r}")
    if probe is None:
        probe = torch.randn(y0.shape[0], dim, dtype=y0.dtype, device=y0.device)
    elif probe.shape != (y0.shape[0], dim):
        raise ValueError(f"probe must have shape {(y0.shape[0], dim)} (samples, penalised channels), "
                         f"got {tuple(probe.shape)}")
    dynamics = RegularisedDynamics(func, dim)
    dynamics.probe = probe
    options = dict(options or {})
    if not control_penalties:
        options.setdefault("norm", state_only_norm)
    zeros = y0.new_zeros(y0.shape[0])
    solve = odeint_adjoint if adjoint else odeint
    states, kinetic, jacobian = solve(dynamics, (y0, zeros, zeros), t, rtol=rtol, atol=atol,
                                      method=method, options=options)
    sign = 1.0 if float(t[-1]) > float(t[0]) else -1.0
    return RegularisedSolution(states, sign * kinetic, sign * jacobian)


def regularisation_loss(kinetic: torch.Tensor, jacobian: torch.Tensor, lambda_kinetic: float,
                        lambda_jacobian: float) -> torch.Tensor:
    """``lambda_kinetic * mean(E_kin) + lambda_jacobian * mean(E_jac)`` over samples (N,): a scalar to add to a loss."""
    return lambda_kinetic * kinetic.mean() + lambda_jacobian * jacobian.mean()


def cnf_log_prob_regularised(cnf: CNF, x: torch.Tensor, probe: torch.Tensor | None = None):
    """:meth:`~nodebook.models.cnf.CNF.log_prob` of x (N, D) at t1, with the penalties of the flow between t0 and t1.

    Integrates [z, log p] (N, D + 1) from t1 back to t0 through the CNF's
    own dynamics, trace, solver and adjoint setting, penalising dz/dt only.
    Returns (log p(x) (N,), E_kin (N,), E_jac (N,)); maximum likelihood with
    Finlay et al.'s regularisers minimises ``-log p(x).mean() +``
    :func:`regularisation_loss`.
    """
    if cnf.dynamics.trace == "hutchinson":
        cnf.dynamics.noise = hutchinson_noise(x.shape, cnf.noise, x.dtype, x.device)
    y0 = torch.cat([x, x.new_zeros(x.shape[0], 1)], 1)
    t = torch.tensor([cnf.t1, cnf.t0], dtype=x.dtype, device=x.device)
    sol = solve_regularised(cnf.dynamics, y0, t, dim=x.shape[1], probe=probe, adjoint=cnf.adjoint, **cnf.solver)
    z, dlogp = sol.states[-1, :, :-1], sol.states[-1, :, -1]
    return standard_normal_logprob(z) - dlogp, sol.kinetic[-1], sol.jacobian[-1]


__all__ = ["RegularisedDynamics", "RegularisedSolution", "solve_regularised", "regularisation_loss",
           "cnf_log_prob_regularised", "state_only_norm"]
