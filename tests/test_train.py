"""nodebook.train and nodebook.experiments.mnist: recipes and schedules, interrupt-and-resume, NFE logs,
memory and Fig. 3 helpers, the checkpoint keys of Table 1's runs."""

import math

import pytest
import torch

from nodebook.data.mnist import MNIST
from nodebook.experiments import mnist as experiments
from nodebook.experiments.mnist import adjoint_nfe, memory_vs_depth, time_per_batch, tolerance_sweep, training_memory
from nodebook.models import mnist as models
from nodebook.train import Recipe, evaluate, fit, scaled_lr, step_schedule, warmup_cosine


def _tiny_data(n=96, seed=0):
    """Images with a learnable signal: the label's row of pixels is bright."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    x = 0.2 * torch.rand(n, 1, 28, 28, generator=g)
    x[torch.arange(n), 0, 2 + 2 * y, :] = 1.0
    return MNIST(x[:64], y[:64], x[64:], y[64:], "tiny synthetic")


def test_schedule_scales_the_recipe():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=scaled_lr(0.1, 256))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2)
    sched = step_schedule(opt, total_iterations=320)  # 160 epochs of 2 iterations
    lrs = []
    for _ in range(320):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[119] == pytest.approx(0.2) and lrs[120] == pytest.approx(0.02)  # epoch 60
    assert lrs[199] == pytest.approx(0.02) and lrs[200] == pytest.approx(0.002)  # epoch 100
    assert lrs[279] == pytest.approx(0.002) and lrs[280] == pytest.approx(0.0002)  # epoch 140


def _run(tmp_path, on_batch=None, augment="crop"):
    torch.manual_seed(0)
    net = models.odenet("rk4", options={"step_size": 1.0})
    data = _tiny_data()
    run = fit("t-ode", {"test": 1}, net, data, Recipe(num_epochs=3, batch_size=16, augment=augment),
              on_batch=on_batch, directory=tmp_path, progress=False)
    return net, run


def test_interrupt_and_resume_gives_the_same_weights(tmp_path):
    reference, ref_run = _run(tmp_path / "straight")
    assert ref_run.source == "trained" and len(ref_run.history) == 3

    def killer(epoch, i):
        if epoch == 1 and i == 2:
            raise KeyboardInterrupt("killed mid-epoch")

    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "killed", on_batch=killer)
    partial = list((tmp_path / "killed").glob("*.last.pt"))
    assert len(partial) == 1 and torch.load(partial[0], weights_only=True)["history"][-1]["step"] == 0
    resumed, run = _run(tmp_path / "killed")
    assert run.source == "resumed" and [r["step"] for r in run.history] == [0, 1, 2]
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert run.history[-1]["test_accuracy"] == ref_run.history[-1]["test_accuracy"]
    loaded, again = _run(tmp_path / "killed")
    assert again.source == "loaded" and torch.load(again.path, weights_only=True)["history"] == run.history


def test_history_logs_nfe_accuracy_and_loss(tmp_path):
    torch.manual_seed(0)
    net = models.odenet("rk4", options={"step_size": 0.5})
    data = _tiny_data()
    calls = []
    run = fit("t-log", {}, net, data, Recipe(num_epochs=2, batch_size=16, lr=0.1, augment=None), directory=tmp_path,
              progress=False, probe=lambda m: (calls.append(1), {"probe_value": 7})[1], probe_every=3)
    first, last = run.history
    assert set(first) >= {"loss", "train_accuracy", "test_accuracy", "nfe_forward", "nfe_backward", "lr",
                          "train_seconds", "seconds", "step", "probe_value", "probes"}
    assert first["nfe_forward"] == 8 and first["nfe_backward"] == 8  # 2 rk4 steps, forward and adjoint
    assert first["nfe_trace"] == [8] * 4  # one entry per batch: 64 images in batches of 16
    assert last["loss"] < first["loss"]
    assert [p["iteration"] for p in first["probes"] + last["probes"]] == [0, 3, 4, 6, 8]
    assert len(calls) == 5


def test_rknet_has_no_backward_solve_and_evaluate_counts(tmp_path):
    torch.manual_seed(0)
    net = models.rknet(2)
    data = _tiny_data()
    run = fit("t-rk", {}, net, data, Recipe(num_epochs=1, batch_size=32), directory=tmp_path, progress=False)
    assert run.history[0]["nfe_forward"] == 8 and run.history[0]["nfe_backward"] == 0
    result = evaluate(net, data.test_x, data.test_y)
    assert result["nfe_forward"] == 8 and 0 <= result["accuracy"] <= 1
    assert result["accuracy"] == run.history[0]["test_accuracy"]


def test_memory_flat_for_adjoint_linear_for_resnet():
    torch.manual_seed(0)
    x, y = torch.rand(4, 1, 28, 28), torch.randint(0, 10, (4,))
    rows = memory_vs_depth([1, 2, 4], x, y)
    assert rows[0]["kind"] == "saved tensors"
    assert rows[0]["odenet"] == rows[1]["odenet"] == rows[2]["odenet"]
    res = [r["resnet"] for r in rows]
    rk = [r["rknet"] for r in rows]
    assert res[0] < res[1] < res[2] and rk[0] < rk[1] < rk[2]
    assert (res[2] - res[1]) == pytest.approx(2 * (res[1] - res[0]), rel=0.01)  # linear in blocks
    assert training_memory(models.resnet(1), x, y)["bytes"] == rows[0]["resnet"]
    assert time_per_batch(models.mlp(), x, y, repeats=1) > 0


def test_tolerance_sweep_and_adjoint_nfe():
    torch.manual_seed(0)
    net = models.odenet("rk4", options={"step_size": 0.5})
    data = _tiny_data()
    sweep = tolerance_sweep(net, data.test_x, data.test_y, [1e-1, 1e-4], batch_size=16)
    assert [r["tol"] for r in sweep] == [1e-1, 1e-4]
    assert sweep[0]["nfe"] < sweep[1]["nfe"] and all(0 <= r["error"] <= 1 for r in sweep)
    assert net.ode_block.method == "rk4"  # restored
    rows = adjoint_nfe(net, data.train_x[:8], data.train_y[:8], [1e-1, 1e-4])
    assert all(r["nfe_backward"] > 0 for r in rows) and rows[0]["nfe_forward"] < rows[1]["nfe_forward"]
    with pytest.raises(ValueError, match="adjoint"):
        adjoint_nfe(models.rknet(1), data.train_x[:8], data.train_y[:8], [1e-1])


def test_memory_of_a_slice_counts_only_the_batch():
    big_x, big_y = torch.rand(1000, 1, 28, 28), torch.randint(0, 10, (1000,))
    net = models.mlp()
    assert training_memory(net, big_x[:4], big_y[:4]) == training_memory(net, big_x[:4].clone(), big_y[:4].clone())
    assert training_memory(net, big_x[:4], big_y[:4])["bytes"] < 2e6  # not the 3 MB of the whole tensor


def test_warmup_cosine_schedule():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = warmup_cosine(opt, total_iterations=10, warmup_iterations=2)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:3] == pytest.approx([0.5, 1.0, 1.0])  # linear warm-up, then the peak
    assert lrs[6] == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 8)))
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:])) and lrs[-1] < 0.05


def test_recipe_builds_optimizer_and_rejects_bad_settings():
    recipe = Recipe(num_epochs=2, batch_size=256, lr=0.1, nesterov=True, weight_decay=5e-4, schedule="cosine",
                    warmup_epochs=1.0)
    opt = recipe.optimizer([torch.zeros(1, requires_grad=True)])
    group = opt.param_groups[0]
    assert group["lr"] == pytest.approx(0.2) and group["nesterov"] and group["weight_decay"] == 5e-4
    with pytest.raises(ValueError, match="unknown schedule 'onecycle'"):
        Recipe(num_epochs=1, schedule="onecycle")
    with pytest.raises(ValueError, match="positive"):
        Recipe(num_epochs=0)
    with pytest.raises(ValueError, match="unknown augmentation 'flip'"):
        fit("t-bad", {}, models.mlp(), _tiny_data(), Recipe(num_epochs=1, augment="flip"), progress=False)


def test_table1_run_keys_hold_exactly_what_determines_the_run():
    solver = experiments.Solver("dopri5", 1e-3, None, adjoint=True)
    assert experiments.run_key("resnet", 0, None) == {"model": "resnet", "seed": 0}
    key = experiments.run_key("odenet", 1, solver, probe_size=256)
    assert key == {"model": "odenet", "seed": 1, "method": "dopri5", "tol": 1e-3, "step_size": None,
                   "adjoint": True, "probe_size": 256, "probe_every": 0}
    assert experiments.build("rknet", experiments.ADAPTIVE["rknet"]).ode_block.adjoint is False
    assert experiments.build("odenet", experiments.ADAPTIVE["odenet"]).ode_block.method == "dopri5"
    with pytest.raises(ValueError, match="needs a Solver"):
        experiments.build("odenet")
    with pytest.raises(ValueError, match="unknown model 'vgg'"):
        experiments.build("vgg")


def test_train_model_trains_then_loads_under_its_key(tmp_path, monkeypatch):
    monkeypatch.setenv("NODEBOOK_CHECKPOINTS", str(tmp_path))
    data = _tiny_data()
    recipe = Recipe(num_epochs=1, batch_size=32, schedule="cosine", warmup_epochs=0.5, augment="affine")
    solver = experiments.Solver("rk4", 1e-3, 0.5, adjoint=True)
    net, run = experiments.train_model("odenet", data, recipe, solver=solver, probe_size=8, progress=False)
    assert run.source == "trained" and run.history[0]["nfe_adaptive"] > 0
    again, loaded = experiments.train_model("odenet", data, recipe, solver=solver, probe_size=8, progress=False)
    assert loaded.source == "loaded" and loaded.path == run.path
    for a, b in zip(net.parameters(), again.parameters()):
        assert torch.equal(a, b)
    monkeypatch.setenv("NODEBOOK_NO_TRAIN", "1")
    from nodebook.checkpoint import TrainingDisabled
    with pytest.raises(TrainingDisabled, match="make reproduce"):
        experiments.train_model("odenet", data, recipe, solver=solver, seed=1, progress=False)


def test_fit_chunks_builds_optimizer_and_schedule_then_loads(tmp_path):
    from nodebook.train import chunked_step, fit_chunks, make_optimizer

    def run(retrain=False):
        torch.manual_seed(0)
        model = torch.nn.Linear(2, 1)

        def make_step(optimizer, scheduler):
            assert isinstance(optimizer, torch.optim.RMSprop) and scheduler is not None
            x = torch.randn(32, 2)
            return chunked_step(lambda: ((model(x) - x.sum(1, keepdim=True)) ** 2).mean(), optimizer, 5,
                                scheduler=scheduler)

        result = fit_chunks("t-chunks", {"a": 1}, model, make_step, 3, optimizer="rmsprop", lr=0.01, lr_decay=0.5,
                            directory=tmp_path, retrain=retrain)
        return model, result

    model, first = run()
    assert first.source == "trained" and len(first.history) == 3
    assert first.history[-1]["loss"] < first.history[0]["loss"]
    again, second = run()
    assert second.source == "loaded" and torch.equal(model.weight, again.weight)
    with pytest.raises(ValueError, match="unknown optimizer 'adamw'"):
        make_optimizer([torch.zeros(1, requires_grad=True)], "adamw")
    optimizer, scheduler = make_optimizer([torch.zeros(1, requires_grad=True)], "sgd", 1.0, lr_decay=0.5)
    optimizer.step()
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == 0.5
    assert make_optimizer([torch.zeros(1, requires_grad=True)], "adam", 1e-3)[1] is None


def test_a_run_ends_when_done_says_so_and_resumes_to_the_same_stop(tmp_path):
    """``done(history)`` ends a run before ``num_steps``; an interrupted run resumes and stops at the same step."""
    from nodebook.checkpoint import load_or_train

    def make(kill_at=None):
        torch.manual_seed(0)
        model = torch.nn.Linear(2, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)

        def step(i):
            if i == kill_at:
                raise KeyboardInterrupt("killed")
            loss = model(torch.randn(8, 2)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            return {"loss": loss.item()}
        return model, step, opt

    done = lambda history: len(history) >= 4  # noqa: E731
    model, step, opt = make()
    run = load_or_train("t-done", {"a": 1}, model, step, 10, optimizer=opt, directory=tmp_path / "straight",
                        progress=False, done=done)
    assert [r["step"] for r in run.history] == [0, 1, 2, 3] and run.path.exists()
    killed, step, opt = make(kill_at=2)
    with pytest.raises(KeyboardInterrupt):
        load_or_train("t-done", {"a": 1}, killed, step, 10, optimizer=opt, directory=tmp_path / "killed",
                      progress=False, done=done)
    resumed, step, opt = make()
    again = load_or_train("t-done", {"a": 1}, resumed, step, 10, optimizer=opt, directory=tmp_path / "killed",
                          progress=False, done=done)
    assert again.source == "resumed" and [r["step"] for r in again.history] == [0, 1, 2, 3]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), resumed.state_dict().values()))


@pytest.mark.parametrize("name", ["adam", "rmsprop", "sgd"])
def test_make_optimizer_uses_foreach_with_the_same_arithmetic(name):
    from nodebook.train import OPTIMIZERS, make_optimizer

    def train(make):
        torch.manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(3)) for _ in range(5)]
        opt = make(params)
        for _ in range(4):
            loss = sum((p ** 2).sum() for p in params)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return opt, params

    ours, fast = train(lambda params: make_optimizer(params, name, 0.01)[0])
    _, plain = train(lambda params: OPTIMIZERS[name](params, lr=0.01, foreach=False))
    assert ours.defaults["foreach"] is True
    assert all(torch.allclose(a, b, rtol=0, atol=1e-7) for a, b in zip(fast, plain))
