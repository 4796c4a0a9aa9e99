"""The benchmarks (nodebook.experiments.benchmarks, the ``make bench`` script, the appendix's
tables) and their figure. The timings are not tested."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nodebook.experiments import benchmarks as bench

ROOT = Path(__file__).resolve().parents[1]


def test_kepler_exact_solution_solves_the_ode():
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


def _load_cli():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_solvers", ROOT / "benchmarks" / "bench_solvers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_writes_the_format_the_appendix_reads(tmp_path):
    out = tmp_path / "solvers.json"
    _load_cli().main(["--repeats", "1", "--parts", "a", "--out", str(out)])
    data = json.loads(out.read_text())
    assert set(data) == {"meta", "a"} and data["meta"]["repeats"] == 1
    committed = bench.load_committed()
    assert set(data["meta"]) == set(committed["meta"])
    assert set(data["a"]["modes"]) == set(committed["a"]["modes"])
    for mode, res in data["a"]["modes"].items():
        assert set(res) == set(committed["a"]["modes"][mode])


def test_cli_rejects_unknown_parts():
    with pytest.raises(SystemExit):
        _load_cli().main(["--parts", "ax"])


def test_live_mlp_restores_the_thread_count():
    before = torch.get_num_threads()
    live = bench.live_mlp(1, threads=1)
    assert torch.get_num_threads() == before
    if bench.HAVE_TORCHDIFFEQ:
        assert all(abs(r["nfe_ratio"] - 1) <= 0.05 for r in live["modes"].values())
    else:
        assert live is None


def test_tables_of_the_committed_run():
    data = bench.load_committed()
    for table, part in [(bench.mlp_table, "a"), (bench.accuracy_table, "b"), (bench.adjoint_table, "c")]:
        header, rows = table(data[part])
        assert rows and all(len(row) == len(header) for row in rows)
    header, rows = bench.ratio_table(data, None)
    assert [row[2] for row in rows] == ["not run"] * 3
    agreement = bench.dopri5_agreement(data["b"])
    assert agreement["max_nfe_ratio"] <= 1 and agreement["max_error_difference"] < 0.01
