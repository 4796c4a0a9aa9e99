"""nodebook.experiments.mnist: Fig. 3a's numerical error, the dynamics' FLOP count, the speed table."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from nodebook.checkpoint import Run
from nodebook.experiments import mnist as experiments
from nodebook.models import mnist as models


def test_numerical_error_shrinks_with_the_tolerance():
    torch.manual_seed(0)
    net = models.odenet()
    rows = experiments.numerical_error(net, torch.rand(8, 1, 28, 28), [1e-1, 1e-3, 1e-5, 1e-7])
    errors = [r["rms_error"] for r in rows]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert [r["nfe"] for r in rows] == sorted(r["nfe"] for r in rows) and rows[0]["nfe"] < rows[-1]["nfe"]
    assert rows[-1]["relative_error"] < 1e-4  # a tight float32 solve is close to the float64 reference
    assert net.ode_block.method == "dopri5" and net.ode_block.rtol == 1e-3  # the training solver is restored


def test_dynamics_flops_match_torchs_count():
    func = models.ODEFunc()
    z = torch.randn(4, models.NUM_CHANNELS, 6, 6)
    with FlopCounterMode(display=False) as counter:
        func(torch.tensor(0.5), z)
    assert experiments.dynamics_flops(4) == counter.get_total_flops()


def test_conv_throughput_reports_every_kernel():
    result = experiments.conv_throughput(batch_size=2, channels=8, repeats=2)
    assert set(result) == {"conv", "conv_large", "dynamics", "dynamics_vjp"}
    assert all(r["seconds"] > 0 and r["gflops"] > 0 for r in result.values())


def test_convolution_share_of_the_dynamics():
    threads = torch.get_num_threads()
    result = experiments.convolution_share(batch_size=8, repeats=2)
    assert torch.get_num_threads() == threads  # measured on one thread, the setting restored
    assert set(result) == {"forward", "vjp"}
    assert all(0 < r["share"] < 1 and r["ms_per_evaluation"] > 0 for r in result.values())
    # the classification, without a stopwatch: a lone convolution is all convolution, a ReLU none
    x, w = torch.randn(2, 3, 5, 5), torch.randn(4, 3, 3, 3)
    shares = experiments._profile_shares({"conv": lambda: torch.nn.functional.conv2d(x, w),
                                          "relu": lambda: torch.relu(x)}, repeats=2, cuda=False)
    assert shares["conv"]["share"] == 1.0 and shares["relu"]["share"] == 0.0


def test_epoch_speed_reads_the_training_log(tmp_path):
    history = [{"train_seconds": s, "nfe_forward": f, "nfe_backward": b, "seconds": s + 1, "step": i}
               for i, (s, f, b) in enumerate([(100.0, 26, 20), (120.0, 32, 26), (110.0, 38, 32)])]
    rows = experiments.epoch_speed({"odenet": Run("mnist-odenet", tmp_path / "x.pt", "loaded", history)})
    assert rows == [{"model": "odenet", "epochs": 3, "seconds_per_epoch": 110.0, "nfe_forward": 32,
                     "nfe_backward": 26, "hours": pytest.approx(330 / 3600)}]


def test_fig3_adaptive_draws_four_panels_from_the_logs():
    from nodebook.plotting.mnist import fig3_adaptive

    errors = [{"tol": t, "nfe": n, "relative_error": e} for t, n, e in [(1e-1, 20, 1e-1), (1e-3, 32, 5e-3)]]
    sweep = [{"tol": t, "nfe": n, "error": 0.005, "seconds": n * 1e-3} for t, n in [(1e-1, 20), (1e-3, 32)]]
    adjoint = [{"tol": 1e-3, "nfe_forward": 32, "nfe_backward": 26}]
    history = [{"nfe_trace": [20 + epoch] * 10} for epoch in range(3)]
    fig = fig3_adaptive(errors, sweep, adjoint, history, train_solver="dopri5, tol 0.001", window=4)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title()[:3] for ax in panels] == ["(a)", "(b)", "(c)", "(d)"]
    smooth = panels[3].get_lines()[1].get_ydata()
    assert len(smooth) == 30 and smooth[0] == 20 and smooth[-1] == 22  # every batch, averaged


def test_recipe_sweep_reads_the_validation_runs(tmp_path):
    from dataclasses import asdict

    from nodebook.train import Recipe

    for lr, accuracy in [(0.2, 0.99), (0.1, 0.995)]:
        settings = {"model": "resnet", "seed": 0, "recipe": asdict(Recipe(num_epochs=2, lr=lr, augment="affine")),
                    "num_train": 55000, "data": "MNIST (original idx files), validation split of 5000 (seed 0)",
                    "num_steps": 2}
        history = [{"test_accuracy": 0.98, "seconds": 1800.0}, {"test_accuracy": accuracy, "seconds": 1800.0}]
        torch.save({"settings": settings, "history": history, "model": {}}, tmp_path / f"mnist-resnet-val-{lr}.pt")
    torch.save({}, tmp_path / "mnist-resnet-val-x.last.pt")  # an unfinished run is not listed
    rows = experiments.recipe_sweep(tmp_path)
    assert [(r["lr"], r["epochs"], r["num_val"]) for r in rows] == [(0.1, 2, 5000), (0.2, 2, 5000)]
    assert rows[0]["val_error"] == pytest.approx(0.005) and rows[0]["hours"] == pytest.approx(1.0)
    low, high = rows[0]["val_interval"]
    assert low < 0.005 < high and high - low > 0.003  # 25 errors in 5,000: a wide interval


def test_forward_flops_are_linear_in_nfe():
    torch.manual_seed(0)
    net = models.odenet()
    x = torch.rand(4, 1, 28, 28)
    rows = experiments.forward_flops(net, x, [1e-1, 1e-4])
    assert rows[0]["nfe"] < rows[1]["nfe"]
    fixed = {r["flops"] - r["nfe"] * experiments.dynamics_flops(4) for r in rows}
    assert len(fixed) == 1 and fixed.pop() > 0  # the same stem and head at every tolerance


def test_command_line_runs_written_as_a_profile_give_the_same_checkpoints():
    """When the chapter's book profile holds command_line_settings(), the chapter loads exactly the runs
    that `python -m nodebook.experiments.mnist` trained (recipe, solver and checkpoint key)."""
    settings = experiments.command_line_settings()
    for kind in experiments.KINDS:
        cli_recipe = experiments.MLP_RECIPE if kind == "mlp" else experiments.CONV_RECIPE
        assert experiments.recipe_from(settings, kind) == cli_recipe, kind
        assert experiments.solver_from(settings, kind) == experiments.ADAPTIVE.get(kind), kind
        cli_probe = experiments.PROBE_SIZE if kind == "odenet" else 0  # as main() probes
        chapter_probe = settings["probe_size"] if kind == "odenet" else 0  # as train_table1 probes
        assert experiments.run_key(kind, 0, experiments.ADAPTIVE.get(kind), cli_probe) == \
            experiments.run_key(kind, 0, experiments.solver_from(settings, kind), chapter_probe,
                                settings["probe_every"] if chapter_probe else 0), kind


def test_the_book_profile_is_the_command_line_recipe_and_its_runs_are_committed():
    """The chapter's book profile holds command_line_settings(), and for every model of Table 1 (and the
    stem) a finished checkpoint trained with exactly the book profile's recipe and solver is committed."""
    import dataclasses

    from nodebook.profiles import get_profile
    from nodebook.utils import REPO_ROOT

    book = get_profile("mnist", "book")
    assert {k: book[k] for k in experiments.command_line_settings()} == experiments.command_line_settings()
    for kind in experiments.KINDS:
        solver = experiments.solver_from(book, kind)
        want = dict(experiments.run_key(kind, 0, solver, book.probe_size if kind == "odenet" else 0,
                                        book.probe_every if kind == "odenet" else 0),
                    recipe=dataclasses.asdict(experiments.recipe_from(book, kind)), num_train=60000,
                    data="MNIST (original idx files, MD5-verified)")
        found = []
        for path in (REPO_ROOT / "checkpoints").glob(f"mnist-{kind}-*.pt"):
            if path.name.endswith(".last.pt"):
                continue
            saved = torch.load(path, map_location="cpu", weights_only=True)["settings"]
            if {k: saved.get(k) for k in want} == want and saved["num_steps"] == want["recipe"]["num_epochs"]:
                found.append(path.name)
        assert len(found) == 1, (kind, found)
