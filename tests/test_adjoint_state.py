"""nodebook.adjoint_state: the adjoint a(t) along the trajectory against
backpropagation through the solver and odeint_adjoint; the adjoint ODE from
the chain rule through one Euler step."""

import pytest
import torch
from torch import nn

from nodebook import odeint, odeint_adjoint
from nodebook.adjoint_state import adjoint_euler_step, adjoint_trajectory, fine_grid
from nodebook.models.mlp import TimeMLP

D = torch.float64
TIGHT = dict(rtol=1e-12, atol=1e-12)


def loss_fn(zs):
    """Depends on every observation, t_0 included, nonlinearly."""
    return (zs ** 2).sum() + torch.sin(zs[1]).sum() - zs[-1, :, 0].sum() + 0.3 * zs[0, :, 1].sum()


@pytest.fixture
def problem():
    torch.manual_seed(0)
    func = TimeMLP(2, 16).double()
    z0 = torch.randn(3, 2, dtype=D)
    t = torch.tensor([0.0, 0.4, 1.1, 1.5], dtype=D)
    return func, z0, t


def total_derivative_by_backprop(func, z0, t, i):
    """dL/dz(t_i) for the flow map: z(t_i) a leaf, the solve restarted from it at t_i,
    every later observation depending on it."""
    with torch.no_grad():
        ys = odeint(func, z0, t, **TIGHT)
    zi = ys[i].clone().requires_grad_(True)
    tail = odeint(func, zi, t[i:], **TIGHT) if i < len(t) - 1 else zi[None]
    (grad,) = torch.autograd.grad(loss_fn(torch.cat([ys[:i], tail])), zi)
    return grad


@pytest.mark.parametrize("restart_state", [False, True])
def test_adjoint_at_each_observation_is_the_total_derivative(problem, restart_state):
    func, z0, t = problem
    traj = adjoint_trajectory(func, z0, t, loss_fn, steps_per_interval=10, restart_state=restart_state, **TIGHT)
    for i in range(len(t)):
        expected = total_derivative_by_backprop(func, z0, t, i)
        assert torch.allclose(traj.a_after_jump[i], expected, rtol=0, atol=1e-8), i
        assert torch.equal(traj.a[traj.obs_index[i]], traj.a_after_jump[i])


def test_adjoint_at_t0_matches_odeint_adjoint(problem):
    func, z0, t = problem
    y0 = z0.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(loss_fn(odeint_adjoint(func, y0, t, **TIGHT)), y0)
    traj = adjoint_trajectory(func, z0, t, loss_fn, steps_per_interval=5, **TIGHT)
    assert torch.allclose(traj.a_after_jump[0], expected, rtol=0, atol=1e-8)
    assert torch.allclose(traj.a[0], expected, rtol=0, atol=1e-8)


def test_jumps_are_the_loss_partials_and_nothing_arrives_at_t_N(problem):
    func, z0, t = problem
    traj = adjoint_trajectory(func, z0, t, loss_fn, steps_per_interval=4, **TIGHT)
    ys = odeint(func, z0, t, **TIGHT).detach().requires_grad_(True)
    (partials,) = torch.autograd.grad(loss_fn(ys), ys)
    assert torch.allclose(traj.jumps, partials, rtol=0, atol=1e-10)
    assert torch.equal(traj.a_before_jump[-1], torch.zeros_like(z0))
    assert torch.allclose(traj.a_after_jump, traj.a_before_jump + traj.jumps, rtol=0, atol=1e-15)
    assert traj.loss == pytest.approx(float(loss_fn(ys.detach())), rel=1e-10)


def test_between_observations_the_adjoint_solves_its_ode(problem):
    """a(t) on the grid equals backprop's dL/dz(t) at a grid time that is no observation."""
    func, z0, t = problem
    K = 4
    traj = adjoint_trajectory(func, z0, t, loss_fn, steps_per_interval=K, **TIGHT)
    j = K + 2                                     # inside (t_1, t_2)
    t_extra = torch.cat([t[:2], traj.t[j:j + 1], t[2:]])
    with torch.no_grad():
        zj = odeint(func, z0, traj.t[:j + 1], **TIGHT)[-1]
    leaf = zj.clone().requires_grad_(True)
    later = odeint(func, leaf, t_extra[2:], **TIGHT)[1:]
    with torch.no_grad():
        early = odeint(func, z0, t[:2], **TIGHT)
    (expected,) = torch.autograd.grad(loss_fn(torch.cat([early, later])), leaf)
    assert torch.allclose(traj.a[j], expected, rtol=0, atol=1e-8)


def test_grid_and_reconstruction(problem):
    func, z0, t = problem
    K = 6
    traj = adjoint_trajectory(func, z0, t, loss_fn, steps_per_interval=K, **TIGHT)
    M = (len(t) - 1) * K + 1
    assert traj.t.shape == (M,) and traj.z.shape == traj.a.shape == traj.z_forward.shape == (M, 3, 2)
    assert torch.equal(traj.t[traj.obs_index], t) and bool((traj.t.diff() > 0).all())
    # this field is tame: running it backwards from z(t_N) reconstructs the forward trajectory
    assert torch.allclose(traj.z, traj.z_forward, rtol=0, atol=1e-9)
    assert torch.equal(traj.z_forward[0], z0)


def test_reconstruction_error_shows_for_a_stiff_contraction():
    """dz/dt = -k z contracts forwards, so backwards it amplifies the solver's error
    (paper, Sec. 6): the reconstructed z(t_0) misses, a restarted one does not."""
    k = 30.0
    func = lambda t, z: -k * z  # noqa: E731
    z0 = torch.ones(1, dtype=D)
    t = torch.tensor([0.0, 1.0], dtype=D)
    loose = dict(rtol=1e-4, atol=1e-6)
    carried = adjoint_trajectory(func, z0, t, lambda zs: zs[-1].sum(), 8, restart_state=False, **loose)
    restarted = adjoint_trajectory(func, z0, t, lambda zs: zs[-1].sum(), 8, restart_state=True, **loose)
    assert (carried.z[0] - z0).abs().item() > 1.0             # here by orders of magnitude
    assert torch.equal(restarted.z[-1], restarted.z_forward[-1])
    # the adjoint itself, da/dt = k a from a(1) = 1, is e^-k at t_0 either way (to the tolerance)
    assert restarted.a[0].item() == pytest.approx(torch.exp(torch.tensor(-k)).item(), rel=1e-2)


def test_fine_grid_holds_observation_times_exactly():
    t = torch.tensor([0.0, 0.1, 0.7, 2.3])
    grid = fine_grid(t, 7)
    assert grid.shape == (22,) and torch.equal(grid[::7], t)


@pytest.mark.parametrize("bad, message", [
    (dict(t=torch.tensor([0.0, 1.0, 0.5], dtype=D)), "strictly increasing"),
    (dict(t=torch.tensor([0.0], dtype=D)), "at least 2"),
    (dict(steps_per_interval=0), "positive integer"),
    (dict(loss_fn=lambda zs: zs), "scalar"),
    (dict(loss_fn=3.0), "callable"),
])
def test_bad_input_is_named(problem, bad, message):
    func, z0, t = problem
    kw = dict(t=t, loss_fn=loss_fn, steps_per_interval=2) | bad
    with pytest.raises((ValueError, TypeError), match=message):
        adjoint_trajectory(func, z0, **kw)


# ---------------------------------------------------------------- one Euler step

class Linear(nn.Module):
    def __init__(self, A):
        super().__init__()
        self.A = A

    def forward(self, t, z):
        return self.A @ z


def test_euler_step_linear_field_differs_by_exactly_h_AT_squared_a():
    torch.manual_seed(1)
    A = torch.randn(3, 3, dtype=D)
    z, a_next = torch.randn(3, dtype=D), torch.randn(3, dtype=D)
    for h in (0.1, 0.01):
        sides = adjoint_euler_step(Linear(A), z, a_next, h)
        assert torch.allclose(sides.chain_rule, -A.T @ a_next, rtol=1e-12, atol=1e-12)
        assert torch.allclose(sides.chain_rule - sides.ode, h * A.T @ A.T @ a_next, rtol=1e-9, atol=1e-12)


def test_euler_step_agrees_with_the_adjoint_ode_to_first_order():
    torch.manual_seed(2)
    func = TimeMLP(2, 16).double()
    z, a_next = torch.randn(5, 2, dtype=D), torch.randn(5, 2, dtype=D)
    errors = []
    for h in (0.1, 0.05, 0.025, 0.0125):
        sides = adjoint_euler_step(func, z, a_next, h, t=0.3)
        errors.append((sides.chain_rule - sides.ode).norm().item())
    ratios = [e1 / e2 for e1, e2 in zip(errors[:-1], errors[1:])]
    assert all(1.8 < r < 2.2 for r in ratios), ratios          # error O(h): halves with h
    assert errors[-1] < 1e-2 * sides.ode.norm().item()


def test_euler_step_bad_input():
    z = torch.zeros(2, dtype=D)
    with pytest.raises(ValueError, match="positive step"):
        adjoint_euler_step(lambda t, z: z, z, z, 0.0)
    with pytest.raises(ValueError, match="shape"):
        adjoint_euler_step(lambda t, z: z, z, torch.zeros(3, dtype=D), 0.1)
