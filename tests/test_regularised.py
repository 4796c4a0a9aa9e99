"""Kinetic and Jacobian penalties (nodebook.models.regularised, Finlay et al. 2020):
the integrands on a linear field, Hutchinson's estimate of ||A||_F^2, closed-form
integrals, lambda = 0 leaves the dynamics alone, adjoint gradients, the CNF."""

import math

import pytest
import torch
from torch import nn

from nodebook import odeint
from nodebook.models.cnf import CNF, MLPDynamics
from nodebook.models.mlp import TimeMLP
from nodebook.models.regularised import (RegularisedDynamics, cnf_log_prob_regularised, regularisation_loss,
                                         solve_regularised)

D = torch.float64
TIGHT = dict(rtol=1e-10, atol=1e-10)
RK4 = dict(method="rk4", options={"step_size": 0.05})


class Linear(nn.Module):
    """f(t, z) = z A^T, i.e. A z for each row z."""

    def __init__(self, A):
        super().__init__()
        self.A = nn.Parameter(A)

    def forward(self, t, z):
        return z @ self.A.T


def MLP(dim=2, width=16, seed=0):
    """A small time-dependent MLP ODE (float64): dz/dt = W2 tanh(W1 [z, t] + b1) + b2."""
    torch.manual_seed(seed)
    return TimeMLP(dim, width).double()


def integrands(func, z, probe, dim=None):
    dynamics = RegularisedDynamics(func, dim)
    dynamics.probe = probe
    zeros = z.new_zeros(z.shape[0])
    with torch.no_grad():                  # the values only (the penalties come back detached)
        return dynamics(torch.tensor(0.0, dtype=z.dtype), (z, zeros, zeros))


def test_kinetic_integrand_of_a_linear_field_is_the_squared_velocity():
    torch.manual_seed(0)
    A = torch.randn(3, 3, dtype=D)
    z = torch.randn(7, 3, dtype=D)
    dz, kinetic, jacobian = integrands(Linear(A), z, torch.randn(7, 3, dtype=D))
    assert torch.allclose(dz, z @ A.T, rtol=1e-14, atol=0)
    assert torch.allclose(kinetic, (z @ A.T).pow(2).sum(1), rtol=1e-13, atol=0)
    # the basis vectors as probes give the Frobenius norm exactly: sum_k ||e_k^T A||^2 = ||A||_F^2
    basis = torch.eye(3, dtype=D)
    exact = sum(integrands(Linear(A), z[:3], basis)[2].tolist())
    assert exact == pytest.approx(float(A.pow(2).sum()), rel=1e-13)


def test_hutchinson_mean_is_the_frobenius_norm():
    torch.manual_seed(1)
    A = torch.randn(4, 4, dtype=D)
    n = 20000
    _, _, estimates = integrands(Linear(A), torch.randn(n, 4, dtype=D), torch.randn(n, 4, dtype=D))
    frobenius = float(A.pow(2).sum())
    stderr = float(estimates.std()) / math.sqrt(n)
    assert abs(float(estimates.mean()) - frobenius) < 4 * stderr
    # for Gaussian probes the variance is 2 ||A A^T||_F^2: the spread is the one expected
    expected_std = math.sqrt(2 * float((A @ A.T).pow(2).sum()))
    assert float(estimates.std()) == pytest.approx(expected_std, rel=0.05)


@pytest.mark.parametrize("backwards", [False, True])
def test_penalties_of_a_decay_integrate_in_closed_form(backwards):
    """f = -k z: z(t) = e^-kt z0, so E_kin(T) = k/2 (1 - e^-2kT) |z0|^2 and E_jac(T) = T k^2 |e|^2."""
    k, T = 1.5, 0.8
    torch.manual_seed(2)
    z0, probe = torch.randn(5, 2, dtype=D), torch.randn(5, 2, dtype=D)
    func = Linear(-k * torch.eye(2, dtype=D))
    start = z0 * math.exp(-k * T) if backwards else z0
    t = torch.tensor([T, 0.0] if backwards else [0.0, T], dtype=D)
    sol = solve_regularised(func, start, t, probe=probe, **TIGHT)
    kinetic = k / 2 * (1 - math.exp(-2 * k * T)) * z0.pow(2).sum(1)
    assert torch.allclose(sol.kinetic[-1], kinetic, rtol=1e-8, atol=0)
    assert torch.allclose(sol.jacobian[-1], T * k ** 2 * probe.pow(2).sum(1), rtol=1e-8, atol=0)
    assert sol.states.shape == (2, 5, 2) and sol.kinetic.shape == sol.jacobian.shape == (2, 5)
    assert torch.equal(sol.kinetic[0], torch.zeros(5, dtype=D))


def test_zero_lambda_leaves_the_trajectory_and_the_gradients_alone():
    func = MLP(seed=3)
    torch.manual_seed(4)
    z0 = torch.randn(6, 2, dtype=D)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=D)
    # fixed steps: the state's arithmetic is untouched by the two extra channels
    plain = odeint(func, z0, t, **RK4)
    sol = solve_regularised(func, z0, t, **RK4)
    assert torch.equal(sol.states, plain)
    # adaptive steps control y's error only, so they are the unregularised steps (up to rounding)
    assert torch.allclose(solve_regularised(func, z0, t, **TIGHT).states, odeint(func, z0, t, **TIGHT),
                          rtol=1e-12, atol=1e-14)
    # and lambda = 0 adds nothing to a loss's gradient
    params = list(func.parameters())
    g_plain = torch.autograd.grad(plain[-1].pow(2).sum(), params)
    loss = sol.states[-1].pow(2).sum() + regularisation_loss(sol.kinetic[-1], sol.jacobian[-1], 0.0, 0.0)
    g_reg = torch.autograd.grad(loss, params)
    for a, b in zip(g_reg, g_plain):
        assert torch.allclose(a, b, rtol=1e-13, atol=1e-15)


def test_penalty_gradients_by_adjoint_match_backprop():
    func = MLP(seed=5)
    torch.manual_seed(6)
    z0, probe = torch.randn(4, 2, dtype=D), torch.randn(4, 2, dtype=D)
    t = torch.tensor([0.0, 1.0], dtype=D)
    grads = []
    for adjoint in (False, True):
        sol = solve_regularised(func, z0, t, probe=probe, adjoint=adjoint, **TIGHT)
        loss = regularisation_loss(sol.kinetic[-1], sol.jacobian[-1], 0.3, 0.7)
        grads.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(func.parameters()))]))
    assert grads[0].norm() > 0
    assert torch.allclose(grads[0], grads[1], rtol=1e-6, atol=1e-9)


def test_regularised_cnf_log_prob_is_the_cnfs_and_penalises_dz_dt_only():
    torch.manual_seed(7)
    func = MLPDynamics(2, num_hiddens=8).double()
    cnf = CNF(func, trace="exact", method="rk4", options={"step_size": 0.1})
    x, probe = torch.randn(5, 2, dtype=D), torch.randn(5, 2, dtype=D)
    logp, kinetic, jacobian = cnf_log_prob_regularised(cnf, x, probe)
    assert torch.allclose(logp, cnf.log_prob(x), rtol=1e-12, atol=1e-12)
    # the penalties of the CNF's flow are those of its field alone, over the same interval
    alone = solve_regularised(func, x, torch.tensor([1.0, 0.0], dtype=D), probe=probe, method="rk4",
                              options={"step_size": 0.1})
    assert torch.allclose(kinetic, alone.kinetic[-1], rtol=1e-12, atol=0)
    assert torch.allclose(jacobian, alone.jacobian[-1], rtol=1e-12, atol=0)
    assert bool((kinetic > 0).all() and (jacobian > 0).all())
    # and they train: the gradient of a regularised likelihood reaches the field
    loss = -logp.mean() + regularisation_loss(kinetic, jacobian, 0.1, 0.1)
    assert all(p.grad is None for p in func.parameters())
    loss.backward()
    assert all(p.grad is not None and p.grad.norm() > 0 for p in func.parameters())


def test_regularised_cnf_with_hutchinson_trace_and_adjoint_runs():
    torch.manual_seed(8)
    func = MLPDynamics(2, num_hiddens=8).double()
    cnf = CNF(func, trace="hutchinson", adjoint=True, rtol=1e-6, atol=1e-6)
    x = torch.randn(4, 2, dtype=D)
    logp, kinetic, jacobian = cnf_log_prob_regularised(cnf, x)
    assert logp.shape == kinetic.shape == jacobian.shape == (4,)
    (-logp.mean() + regularisation_loss(kinetic, jacobian, 0.1, 0.1)).backward()
    assert all(p.grad is not None for p in func.parameters())


@pytest.mark.parametrize("kw, message", [
    (dict(probe=torch.zeros(3, 3, dtype=D)), r"probe must have shape \(3, 2\)"),
    (dict(dim=3), r"dim must be an integer in \[1, 2\]"),
    (dict(y0=torch.zeros(2, dtype=D)), "samples, channels"),
])
def test_bad_input_is_named(kw, message):
    args = dict(func=MLP(), y0=torch.zeros(3, 2, dtype=D), t=torch.tensor([0.0, 1.0], dtype=D)) | kw
    with pytest.raises(ValueError, match=message):
        solve_regularised(**args)


def test_dynamics_without_a_probe_says_how_to_get_one():
    dynamics = RegularisedDynamics(MLP())
    zeros = torch.zeros(3, dtype=D)
    with pytest.raises(RuntimeError, match="solve_regularised"):
        dynamics(torch.tensor(0.0, dtype=D), (torch.zeros(3, 2, dtype=D), zeros, zeros))
