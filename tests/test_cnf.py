"""Continuous normalizing flows and the planar NF baseline (nodebook.models.cnf, .planar).

The chapter's runs, evaluations and the Hutchinson study are tested in test_experiments_cnf.py.
"""

import math

import pytest
import torch
from torch import nn

from nodebook.data import toy2d
from nodebook.experiments.cnf import batched, grid_mass, jacobian_traces, max_likelihood_step
from nodebook.models.cnf import (CNF, AugmentedDynamics, MLPDynamics, PlanarDynamics, hutchinson_noise,
                                 negative_log_likelihood, reverse_kl, trace_exact, trace_hutchinson)
from nodebook.models.planar import PlanarFlow, PlanarLayer, standard_normal_logprob


@pytest.fixture
def mlp64():
    torch.manual_seed(0)
    return MLPDynamics(5, num_hiddens=16).double()


def test_exact_trace_equals_jacobian_trace(mlp64):
    t = torch.tensor(0.3, dtype=torch.float64)
    z = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    f = mlp64(t, z)
    assert torch.allclose(trace_exact(f, z), jacobian_traces(mlp64, t, z.detach()), atol=1e-12)


def test_planar_analytic_trace_equals_exact():
    torch.manual_seed(1)
    func = PlanarDynamics(dim=3, width=6).double()
    t = torch.tensor(0.7, dtype=torch.float64)
    z = torch.randn(9, 3, dtype=torch.float64, requires_grad=True)
    f, tr = func.forward_with_trace(t, z)
    assert torch.allclose(f, func(t, z))
    assert torch.allclose(tr, trace_exact(func(t, z), z), atol=1e-12)
    assert torch.allclose(tr, jacobian_traces(func, t, z.detach()), atol=1e-12)


@pytest.mark.parametrize("kind", ["gaussian", "rademacher"])
def test_hutchinson_is_unbiased(mlp64, kind):
    torch.manual_seed(2)
    t = torch.tensor(0.0, dtype=torch.float64)
    point = torch.randn(1, 5, dtype=torch.float64)
    draws = 20000
    z = point.repeat(draws, 1).requires_grad_(True)
    f = mlp64(t, z)
    e = hutchinson_noise(z.shape, kind, dtype=torch.float64)
    estimates = trace_hutchinson(f, z, e)
    exact = jacobian_traces(mlp64, t, point)[0]
    se = estimates.std() / math.sqrt(draws)
    assert abs(estimates.mean() - exact) < 4 * se, (estimates.mean().item(), exact.item(), se.item())
    # and its variance is the known one: 2 ||J_sym||_F^2 (Gaussian), minus 2 sum J_ii^2 (Rademacher)
    J = torch.autograd.functional.jacobian(lambda x: mlp64(t, x[None])[0], point[0])
    sym = 0.5 * (J + J.T)
    var = 2 * (sym ** 2).sum() - (2 * (J.diagonal() ** 2).sum() if kind == "rademacher" else 0)
    assert estimates.var().item() == pytest.approx(var.item(), rel=0.1)


def test_noise_has_identity_covariance():
    torch.manual_seed(0)
    r = hutchinson_noise((50000, 3), "rademacher")
    assert set(r.unique().tolist()) == {-1.0, 1.0}
    for e in (r, hutchinson_noise((50000, 3), "gaussian")):
        assert torch.allclose(e.T @ e / len(e), torch.eye(3), atol=0.03)
    with pytest.raises(ValueError, match="unknown Hutchinson noise 'uniform'"):
        hutchinson_noise((2, 2), "uniform")


class Linear(nn.Module):
    """f(z) = A z: z(1) = exp(A) z(0) and log p changes by -tr(A) exactly."""

    def __init__(self, A):
        super().__init__()
        self.A = nn.Parameter(A)

    def forward(self, t, z):
        return z @ self.A.T


@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_cnf_matches_linear_flow_closed_form(trace):
    torch.manual_seed(0)
    A = torch.tensor([[0.3, -0.8], [0.5, -0.1]], dtype=torch.float64)
    cnf = CNF(Linear(A), trace=trace, rtol=1e-9, atol=1e-9)
    z0 = torch.randn(6, 2, dtype=torch.float64)
    z1, logq = cnf.sample_with_log_prob(z0)
    assert torch.allclose(z1, z0 @ torch.linalg.matrix_exp(A).T, atol=1e-7)
    if trace == "exact":  # Hutchinson is exact in expectation only
        assert torch.allclose(logq, standard_normal_logprob(z0) - A.trace(), atol=1e-7)
        assert torch.allclose(cnf.log_prob(z1), logq, atol=1e-7)


def test_cnf_log_prob_inverts_sampling_and_fractions():
    torch.manual_seed(0)
    cnf = CNF(PlanarDynamics(2, 8).double(), trace="analytic", rtol=1e-9, atol=1e-9)
    z0 = torch.randn(5, 2, dtype=torch.float64)
    zs, logqs = cnf.sample_with_log_prob(z0, times=[0.0, 0.4, 1.0])
    assert zs.shape == (3, 5, 2) and logqs.shape == (3, 5)
    assert torch.allclose(cnf.log_prob(zs[1], t=0.4), logqs[1], atol=1e-7)
    assert torch.allclose(cnf.sample(z0, t=0.4), zs[1], atol=1e-7)
    assert torch.allclose(cnf.log_prob(zs[0], t=0.0), logqs[0])


def test_trained_cnf_density_integrates_to_one():
    torch.manual_seed(0)
    cnf = CNF(PlanarDynamics(2, 16), trace="analytic", method="rk4", options={"step_size": 0.25})
    opt = torch.optim.Adam(cnf.parameters(), 1e-2)
    history = [max_likelihood_step(cnf, toy2d.sample_two_moons, opt, 128, 10)(s)["nll"] for s in range(3)]
    assert history[-1] < history[0]
    cnf.use_solver("dopri5", 1e-5, 1e-5)
    points, area, _ = toy2d.grid(7.0, 120)
    assert grid_mass(batched(cnf.log_prob, points), area) == pytest.approx(1.0, abs=0.02)


def test_training_through_the_adjoint_matches_backprop():
    torch.manual_seed(0)
    func = MLPDynamics(2, num_hiddens=8).double()
    x = torch.randn(4, 2, dtype=torch.float64)
    grads = []
    for adjoint in (False, True):
        cnf = CNF(func, trace="exact", rtol=1e-10, atol=1e-10, adjoint=adjoint)
        func.zero_grad()
        (-cnf.log_prob(x).mean()).backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in func.parameters()]))
    assert grads[0].abs().max() > 1e-3
    assert torch.allclose(grads[0], grads[1], rtol=1e-5, atol=1e-7)


def test_bad_options_name_the_problem():
    with pytest.raises(ValueError, match="unknown trace 'fast'"):
        CNF(MLPDynamics(2), trace="fast")
    with pytest.raises(ValueError, match="needs dynamics with a closed-form trace"):
        CNF(MLPDynamics(2), trace="analytic")
    dyn = AugmentedDynamics(MLPDynamics(2), trace="hutchinson")
    with pytest.raises(RuntimeError, match="Hutchinson trace without a probe"):
        dyn(torch.tensor(0.0), torch.zeros(3, 3))


def test_planar_layer_logdet_and_inverse():
    torch.manual_seed(0)
    layer = PlanarLayer(2).double()
    with torch.no_grad():  # a u that violates w.u >= -1 before projection
        layer.w.copy_(torch.tensor([1.0, 0.5]))
        layer.u.copy_(torch.tensor([-3.0, 0.2]))
    assert (layer.u_hat() @ layer.w).item() > -1
    z = torch.randn(6, 2, dtype=torch.float64)
    y, logdet = layer(z)
    jac = torch.stack([torch.autograd.functional.jacobian(lambda v: layer(v[None])[0][0], row) for row in z])
    assert torch.allclose(logdet, torch.linalg.slogdet(jac)[1], atol=1e-10)
    assert torch.allclose(layer.inverse(y), z, atol=1e-10)


def test_planar_flow_densities_integrate_to_one():
    torch.manual_seed(0)
    flow = PlanarFlow(8).double()
    points, area, _ = toy2d.grid(7.0, 120, dtype=torch.float64)
    assert grid_mass(flow.model_log_prob(points), area) == pytest.approx(1.0, abs=1e-3)
    with torch.no_grad():
        assert grid_mass(flow.log_prob(points), area) == pytest.approx(1.0, abs=1e-3)
        assert grid_mass(flow.log_prob(points, start=5), area) == pytest.approx(1.0, abs=1e-3)
    z = torch.randn(4, 2, dtype=torch.float64)
    x = flow.sample(z, start=5)
    assert torch.allclose(flow(x, start=5)[0], z, atol=1e-10)


def test_planar_flow_equals_its_layers_in_turn():
    """The vectorised forward is the composition of the layers, values and gradients, for any start/stop."""
    torch.manual_seed(0)
    flow = PlanarFlow(6).double()
    z = torch.randn(5, 2, dtype=torch.float64)
    for start, stop in ((0, None), (2, 5), (3, 3)):
        y, logdet = z, torch.zeros(5, dtype=torch.float64)
        for layer in flow.layers[start:stop]:
            y, ld = layer(y)
            logdet = logdet + ld
        fy, flogdet = flow(z, start=start, stop=stop)
        assert torch.allclose(fy, y, atol=1e-12) and torch.allclose(flogdet, logdet, atol=1e-12)
    loss = flow(z)[1].sum() + flow(z)[0].pow(2).sum()
    grads = torch.autograd.grad(loss, list(flow.parameters()))
    y, logdet = z, 0
    for layer in flow.layers:
        y, ld = layer(y)
        logdet = logdet + ld
    reference = torch.autograd.grad(logdet.sum() + y.pow(2).sum(), list(flow.parameters()))
    assert all(torch.allclose(g, r, atol=1e-12) for g, r in zip(grads, reference))


def test_reverse_kl_falls_for_both_families():
    target = lambda z: toy2d.log_target("ring (U1)", z)
    for model, opt_cls in ((PlanarFlow(4), torch.optim.RMSprop),
                           (CNF(PlanarDynamics(2, 4), trace="analytic", method="rk4",
                                options={"step_size": 0.25}), torch.optim.Adam)):
        torch.manual_seed(0)
        opt = opt_cls(model.parameters(), 1e-2)
        losses = []
        for _ in range(40):
            loss = reverse_kl(model, target, 128)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert sum(losses[-10:]) < sum(losses[:10]), type(model).__name__


def test_negative_log_likelihood_is_minus_mean_log_prob():
    torch.manual_seed(0)
    x = torch.randn(5, 2)
    for model in (PlanarFlow(3), CNF(PlanarDynamics(2, 4), trace="analytic", method="rk4",
                                     options={"step_size": 0.25})):
        assert torch.allclose(negative_log_likelihood(model, x), -model.log_prob(x).mean())
