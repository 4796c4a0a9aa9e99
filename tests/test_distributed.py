"""The MNIST training entry point under torchrun: 2 gloo processes on the CPU follow the 1-process run.

Each process draws the same global batch (same generator, same augmentation)
and trains on its half; DistributedDataParallel averages the gradients, so
after training the parameters equal the 1-process run's up to float
rounding (half batches round differently in float32 convolutions). The
adaptive ODE-Net measures its forward error over the global batch
(``nodebook.train.distributed_rms_norm``), so its processes take the forward
steps one process would, and its backward error as the maximum over the
processes (``nodebook.train.distributed_max_norm``), so they never disagree on
a step.
"""

import os
import subprocess
import sys

import pytest
import torch

from nodebook.data.mnist import MNISTNotFound, find_raw_dir
from nodebook.experiments.mnist import Solver, build


def _have_mnist():
    try:
        find_raw_dir(download=False)
        return True
    except MNISTNotFound:
        return False


pytestmark = pytest.mark.skipif(not _have_mnist(), reason="needs the MNIST idx files ($NODEBOOK_DATA)")


def _train(tmp_path, nproc: int, *args) -> dict:
    folder = tmp_path / f"np{nproc}"
    cli = ["-m", "nodebook.experiments.mnist", "--num-train", "128", "--num-test", "64", "--epochs", "1",
           "--batch-size", "64", "--lr", "0.01", "--checkpoints", str(folder), "--device", "cpu", *args]
    if nproc == 1:
        cmd = [sys.executable, *cli]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *cli]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = list(folder.glob("mnist-*.pt"))
    assert len(files) == 1 and not list(folder.glob("*.last.pt")), files
    return torch.load(files[0], weights_only=True)


@pytest.mark.parametrize("args, tolerance", [
    (("--model", "resnet"), 2e-3),
    (("--model", "odenet", "--method", "rk4", "--step-size", "0.5"), 2e-3),
    (("--model", "rknet", "--method", "rk4", "--step-size", "0.5"), 2e-3),
    # adaptive: the forward steps are the one-process run's (global error norm); the adjoint's backward
    # steps are the same on every process (error maximised over them) but not the one-process run's,
    # whose norm sees whole-batch gradient channels: the gradients agree within what the backward
    # solve's tolerance (1e-3) allows, a few percent of an early update; a wrong average is off by ~100%
    (("--model", "odenet"), 0.1),
], ids=["resnet", "odenet-rk4", "rknet-rk4", "odenet-dopri5"])
def test_two_processes_match_one(tmp_path, args, tolerance):
    one, two = _train(tmp_path, 1, *args), _train(tmp_path, 2, *args)
    assert one["settings"] == two["settings"]  # the same run: the checkpoint does not depend on the process count
    kind = one["settings"]["model"]
    solver = Solver(one["settings"]["method"], one["settings"]["tol"], one["settings"]["step_size"]) \
        if kind in ("odenet", "rknet") else None
    torch.manual_seed(0)
    start = build(kind, solver).state_dict()
    # Float32 convolutions on half batches round differently (about 1e-6 relative in the gradient), and
    # the first steps of training amplify it: after two small steps the runs must agree to a small
    # fraction of the distance training moved the weights (a wrong gradient average is off by ~100%).
    names = [k for k, v in one["model"].items() if v.is_floating_point()]
    moved = torch.cat([(one["model"][k] - start[k]).flatten() for k in names]).norm().item()
    apart = torch.cat([(one["model"][k] - two["model"][k]).flatten() for k in names]).norm().item()
    assert moved > 0 and apart <= tolerance * moved, (apart, moved)
    first, second = one["history"][0], two["history"][0]
    assert first["loss"] == pytest.approx(second["loss"], rel=1e-4)
    assert first["test_accuracy"] == second["test_accuracy"]
    assert first["nfe_trace"] == second["nfe_trace"]  # the same solver steps, batch by batch
