"""The benchmark's reference solutions and its figure (the timings are not tested)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_solvers", ROOT / "benchmarks" / "bench_solvers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_kepler_exact_solution_solves_the_ode(bench):
    func, y0, t1, exact = bench.kepler_orbit(e=0.5)
    t = np.linspace(0.0, t1, 7)
    y = exact(t)
    h = 1e-6
    dy = (exact(t + h) - exact(t - h)) / (2 * h)
    f = np.stack([func(torch.tensor(s), torch.tensor(row)).numpy() for s, row in zip(t, y)])
    assert np.abs(dy - f).max() < 1e-6
    assert np.allclose(y[-1], y[0], atol=1e-12)  # t1 is two full periods


def test_plot_benchmarks_on_synthetic_data():
    from nodebook.plotting.bench import plot_benchmarks

    run = {"median_s": 0.01, "times_s": [0.01], "nfe": 10}
    solver = {"nfe": [10, 20, 40], "max_error": [1e-2, 1e-4, 1e-6]}
    data = {
        "a": {"problem": "x", "modes": {"no_grad": {"nodebook": run, "torchdiffeq": run}}},
        "b": {"p1": {"rtol": [1e-3, 1e-5, 1e-7], "solvers": {"nodebook dopri5": solver, "scipy RK45": solver}}},
        "c": {"nodebook adjoint": {**run, "nfe_total": 30}, "nodebook backprop": {**run, "nfe_total": 10},
              "nodebook_adjoint_over_backprop": 1.0},
    }
    fig = plot_benchmarks(data)
    assert len(fig.axes) == 6
