"""Chapter 01's sweeps (nodebook.experiments.solvers) on the problems of nodebook.problems,
and the numerical helpers of nodebook.analysis."""

import math

import pytest
import torch

from nodebook.analysis import finite_difference_grad, fit_order, relative_error
from nodebook.experiments import solvers as ex
from nodebook.problems import harmonic, linear_growth, marble, van_der_pol


def test_fit_order_recovers_a_power_law():
    hs = [0.1, 0.05, 0.025]
    assert fit_order(hs, [3 * h ** 4 for h in hs]) == pytest.approx(4.0)


def test_relative_error_and_finite_differences():
    w = torch.tensor([1.0, -2.0], dtype=torch.float64)
    (g,) = finite_difference_grad(lambda: (w ** 3).sum(), [w])
    assert relative_error(g, 3 * w ** 2) < 1e-8
    assert relative_error(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 0.0])) == pytest.approx(1.0)


@pytest.mark.parametrize("make", [linear_growth, marble, harmonic])
def test_exact_solutions_solve_their_odes(make):
    problem = make()
    t = problem.times(9)
    h = 1e-6
    dy = (problem.exact(t + h) - problem.exact(t - h)) / (2 * h)
    f = torch.stack([problem.func(s, y) for s, y in zip(t, problem.exact(t))])
    assert (dy - f).abs().max() < 1e-5


def test_problem_to_device_moves_its_state_and_times():
    problem = van_der_pol().to("meta")
    assert problem.y0.device.type == "meta" and problem.times(3).device.type == "meta"
    assert van_der_pol().y0.device.type == "cpu"


def test_order_sweeps_recover_the_orders():
    sweeps = ex.order_sweeps(linear_growth(), [8, 16, 32, 64], [1e-3, 1e-5, 1e-7])
    orders = ex.fit_orders(sweeps)
    for method in ex.FIXED_STEP:
        assert abs(orders[method] - ex.EXPECTED_ORDERS[method]) < 0.3
    stages = {"euler": 1, "midpoint": 2, "rk4": 4}
    for method, s in stages.items():
        assert sweeps[method]["nfe"] == [n * s for n in [8, 16, 32, 64]]
    rows = ex.nfe_comparison(sweeps)
    assert [r["dopri5"] for r in rows] == sweeps["dopri5"]["nfe"]
    assert all(r[m] is None or r[m] > r["dopri5"] for r in rows for m in ex.FIXED_STEP)


def test_nfe_to_reach():
    sweep = {"error": [1e-2, 1e-4, 1e-6], "nfe": [10, 20, 40]}
    assert ex.nfe_to_reach(sweep, 1e-4) == 20
    assert ex.nfe_to_reach(sweep, 1e-8) is None


def test_dense_output_costs_no_evaluations():
    run = ex.dense_output_nfe(van_der_pol(t1=3.0), 50, tol=1e-5)
    assert run["nfe_dense"] == run["nfe_endpoints"] and run["steps_dense"] == run["steps_endpoints"]
    assert run["y"].shape == (50, 2)
    h_min, h_max = ex.step_size_range(run["stats"].step_times)
    assert 0 < h_min <= h_max


def test_tolerance_sweep_trades_error_for_nfe():
    errors, nfes = ex.tolerance_sweep(harmonic(t1=1.0), [1e-3, 1e-6])
    assert errors[1] < errors[0] and nfes[1] > nfes[0]
    assert all(math.isfinite(e) for e in errors)
