"""The runs of the limits chapter (nodebook.experiments.limits): minibatching, reconstruction, the three
gradients and the adjoint state."""

import math

import pytest
import torch
from torch import nn

from nodebook import odeint
from nodebook.adjoint_state import adjoint_trajectory
from nodebook.experiments import limits as ex


class Decay(nn.Module):
    """dz/dt = -r z with the rate r carried in the state's second column (dr/dt = 0): every sample
    its own stiffness, the samples independent."""

    def forward(self, t, state):
        z, r = state[:, :1], state[:, 1:]
        return torch.cat([-r * z, torch.zeros_like(r)], 1)


def test_minibatch_rows_compare_one_combined_solve_with_single_ones():
    states = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 30.0], [1.0, 1.0]])
    rows = ex.minibatch_nfe(Decay(), states, [1, 2, 3], rtol=1e-6, atol=1e-6)
    assert [r["k"] for r in rows] == [1, 2, 3]
    assert rows[0]["nfe_ratio"] == 1.0 and rows[1]["nfe_ratio"] == 1.0  # two identical samples cost one's NFE
    # the stiff third sample sets the combined solve's steps: more than the mean single solve needs
    assert rows[2]["nfe_single_max"] > rows[2]["nfe_single_mean"] and rows[2]["nfe_ratio"] > 1.0
    assert rows[2]["nfe_combined"] <= rows[2]["nfe_single_max"] + 6  # but about the hardest sample's, not their sum
    with pytest.raises(ValueError, match="batch sizes"):
        ex.minibatch_nfe(Decay(), states, [5])


def test_reconstruction_error_shrinks_with_tolerance_and_a_blow_up_is_infinite():
    func = ex.VanDerPol().double()
    z0 = torch.tensor([[2.0, 0.0], [0.5, 0.5]], dtype=torch.float64)
    errors = [ex.reconstruction_error(func, z0, 2.0, tol) for tol in (1e-3, 1e-6, 1e-9)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-5
    # a decay reconstructed exactly: forward and back at a tight tolerance returns z0
    decay = torch.tensor([[1.0, 0.5]], dtype=torch.float64)
    assert ex.reconstruction_error(Decay(), decay, 1.0, 1e-10) < 1e-8

    # at a loose tolerance over a long horizon the backward Van der Pol solve leaves the cycle and blows up
    assert ex.reconstruction_error(func, z0, 5.0, 1e-3) == math.inf


def test_gradient_errors_adjoint_small_checkpointed_at_rounding():
    func = ex.VanDerPol().double()
    z0 = torch.tensor([[2.0, 0.0]], dtype=torch.float64)
    errors = ex.gradient_errors(func, z0, 1.0, 1e-8)
    assert errors["checkpointed"] < 1e-10  # the same operations, recomputed: equal to rounding in float64
    assert 0 < errors["adjoint"] < 1e-5  # a different solve of the same ODE: close, not equal


def test_gradient_costs_memory_ordering():
    func = ex.random_field(4, 16, seed=0).double()
    costs = ex.gradient_costs(func, torch.randn(32, 4, dtype=torch.float64), 3.0, 1e-7, repeats=1)
    assert set(costs) == set(ex.GRADIENT_WAYS)
    saved = {way: c["saved_bytes"] for way, c in costs.items()}
    assert saved["adjoint"] < saved["checkpointed"] < saved["backprop"]
    assert costs["backprop"]["nfe_backward"] == 0 and costs["adjoint"]["nfe_backward"] > 0
    assert all(p.grad is None for p in func.parameters())  # leaves the model clean


def test_adjoint_state_matches_backprop_state_gradients():
    func, z0, t, loss_fn = ex.observation_problem(num_observations=3, t_end=3.0)
    traj = adjoint_trajectory(func, z0, t, loss_fn, rtol=1e-10, atol=1e-10)
    exact = ex.backprop_state_gradients(func, z0, t, loss_fn, tol=1e-10)
    assert torch.allclose(traj.a_after_jump, exact, atol=1e-6)
    assert torch.equal(exact[-1], traj.jumps[-1])  # at t_N only the last observation's own term


def test_euler_gaps_are_first_order():
    func, z0, _, _ = ex.observation_problem()
    gaps = ex.euler_step_gaps(func, z0, torch.tensor([1.0, -0.5], dtype=torch.float64), [0.1, 0.05, 0.025])
    assert all(abs(a / b - 2) < 0.1 for a, b in zip(gaps, gaps[1:]))


def test_density_runs_share_the_unpenalised_run_and_evaluate(tmp_path, monkeypatch):
    monkeypatch.setenv("NODEBOOK_CHECKPOINTS", str(tmp_path))
    settings = dict(density_data="two moons", density_width=4, density_iterations=4, density_batch=16,
                    density_lr=1e-3, density_tols=[1e-3, 1e-5], density_tol=1e-5, lambdas=[0.0, 0.1],
                    density_seeds=[0], num_chunks=2, eval_tol=1e-6, test_size=32)
    runs = ex.density_runs(settings)
    assert set(runs) == {(1e-3, 0.0, 0), (1e-5, 0.0, 0), (1e-5, 0.1, 0)}  # (1e-5, 0) serves both studies
    assert len(list(tmp_path.glob("*.pt"))) == 3 and all("nfe" in run.history[0] for _, run in runs.values())
    key = ex.density_key(settings, 1e-5, 0.1, 0)
    assert key["lambda_kinetic"] == key["lambda_jacobian"] == 0.1 and key["tol"] == 1e-5
    scores = ex.evaluate_density(runs, settings)
    assert all(v["nfe"] > 0 and v["kinetic"] >= 0 and v["jacobian"] >= 0 and math.isfinite(v["nll"])
               for v in scores.values())
