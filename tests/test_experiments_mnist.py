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


def test_epoch_speed_reads_the_training_log(tmp_path):
    history = [{"train_seconds": s, "nfe_forward": f, "nfe_backward": b, "seconds": s + 1, "step": i}
               for i, (s, f, b) in enumerate([(100.0, 26, 20), (120.0, 32, 26), (110.0, 38, 32)])]
    rows = experiments.epoch_speed({"odenet": Run("mnist-odenet", tmp_path / "x.pt", "loaded", history)})
    assert rows == [{"model": "odenet", "epochs": 3, "seconds_per_epoch": 110.0, "nfe_forward": 32,
                     "nfe_backward": 26, "hours": pytest.approx(330 / 3600)}]
