"""Chapter 02's runs (nodebook.experiments.adjoint) and its vector field (nodebook.models.mlp)."""

import torch

from nodebook import odeint, odeint_adjoint
from nodebook.analysis import relative_error
from nodebook.experiments import adjoint as ex
from nodebook.models.mlp import TimeMLP


def test_time_mlp_depends_on_time_and_keeps_the_shape():
    torch.manual_seed(0)
    f = TimeMLP(3, 8)
    z = torch.randn(5, 3)
    out0, out1 = f(torch.tensor(0.0), z), f(torch.tensor(1.0), z)
    assert out0.shape == (5, 3) and not torch.equal(out0, out1)


def test_adjoint_and_backprop_gradients_agree():
    torch.manual_seed(0)
    problem = ex.gradient_problem(4, batch=3)
    adjoint, backprop = problem.gradients(odeint_adjoint, 1e-9), problem.gradients(odeint, 1e-9)
    assert adjoint.numel() == sum(p.numel() for p in problem.func.parameters())
    assert relative_error(adjoint, backprop) < 1e-6
    g_adjoint, g_backprop = problem.initial_state_gradients(1e-9)
    assert relative_error(g_adjoint, g_backprop) < 1e-6
    assert not problem.z0.requires_grad


def test_gradient_errors_against_a_reference():
    torch.manual_seed(0)
    problem = ex.gradient_problem(2, batch=2)
    reference = ex.finite_difference_reference(problem, tol=1e-10)
    rows = ex.gradient_errors(problem, reference, [1e-4, 1e-9])
    assert [r["tol"] for r in rows] == [1e-4, 1e-9]
    assert rows[-1]["adjoint_vs_fd"] < 1e-5


def test_memory_flat_for_adjoint_and_growing_for_backprop():
    torch.manual_seed(0)
    memory = ex.memory_vs_steps(4, [2, 8], batch=8)
    assert memory["adjoint"][0] == memory["adjoint"][1]
    assert memory["backprop"][1] > 2 * memory["backprop"][0]


def test_train_ring_and_nfe_counts():
    torch.manual_seed(0)
    func, losses = ex.train_ring(4, 2, batch=16)
    assert len(losses) == 2
    nfe = ex.adjoint_nfe(func, [1e-3, 1e-5], batch=16)
    assert all(len(v) == 2 for v in nfe.values())
    assert all(s <= b for s, b in zip(nfe["seminorm"], nfe["backward"]))
    assert all(p.grad is None for p in func.parameters())
    summary = ex.nfe_summary({"forward": [10, 20], "backward": [20, 20], "seminorm": [10, 10]})
    assert summary["ratios"] == [2.0, 1.0] and summary["mean_ratio"] == 1.5 and summary["seminorm_saving"] == 0.5
