"""Latent ODE, RNN baselines and the neural vector field: losses, gradients, shapes."""

import math

import pytest
import torch

from nodebook.data.spirals import cubic_spiral, make_spirals, sample_observations, to_device
from nodebook.experiments import latent_ode as experiments
from nodebook.experiments.latent_ode import latent_train_step
from nodebook.train import with_validation
from nodebook.experiments.common import rnn_train_step
from nodebook.models import dynamics, latent_ode, rnn


@pytest.fixture(scope="module")
def batch():
    data = make_spirals(num_spirals=8, seed=0)
    return data, sample_observations(data, 30, seed=0)


def _model():
    torch.manual_seed(0)
    return latent_ode.LatentODE(method="dopri5", rtol=1e-3, atol=1e-4)


def test_kl_and_likelihood_exact():
    assert float(latent_ode.kl_standard_normal(torch.zeros(3, 4), torch.zeros(3, 4)).abs().max()) == 0.0
    # KL(N(1, 1) || N(0, 1)) = 1/2 per dimension; KL(N(0, e) || N(0, 1)) = (e - 2) / 2
    torch.testing.assert_close(latent_ode.kl_standard_normal(torch.ones(2, 4), torch.zeros(2, 4)),
                               torch.full((2,), 2.0))
    torch.testing.assert_close(latent_ode.kl_standard_normal(torch.zeros(1, 1), torch.ones(1, 1)),
                               torch.tensor([(math.e - 2) / 2]))
    x, mean = torch.randn(5), torch.randn(5)
    torch.testing.assert_close(latent_ode.gaussian_log_likelihood(x, mean, 0.3),
                               torch.distributions.Normal(mean, 0.3).log_prob(x))


def test_elbo_finite_and_gradients_reach_every_part(batch):
    data, obs = batch
    model = _model()
    loss, parts = latent_ode.elbo(model, obs.y, obs.index, obs.gaps, data.t_observed, 0.3)
    assert torch.isfinite(loss) and math.isfinite(parts["kl"]) and parts["kl"] >= 0
    assert loss.item() == pytest.approx(-(parts["log_likelihood"] - parts["kl"]), rel=1e-5)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"no gradient reaches {name}"


def test_predict_shapes_and_posterior_mean_is_deterministic(batch):
    data, obs = batch
    model = _model()
    x, z = latent_ode.predict(model, obs.y, obs.gaps, data.t)
    assert x.shape == (8, 200, 2) and z.shape == (8, 200, 4)
    x2, _ = latent_ode.predict(model, obs.y, obs.gaps, data.t)
    torch.testing.assert_close(x, x2)
    mean, _ = model.encoder(obs.y, obs.gaps)
    torch.testing.assert_close(z[:, 0], mean)  # z(t0) is the posterior mean


def test_encoder_reads_the_times(batch):
    _, obs = batch
    model = _model()
    m1, _ = model.encoder(obs.y, obs.gaps)
    m2, _ = model.encoder(obs.y, 2 * obs.gaps)
    assert not torch.allclose(m1, m2)


def test_latent_ode_train_step_lowers_loss(batch):
    data, obs = batch
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    torch.manual_seed(1)
    step = latent_train_step(model, opt, obs.y, obs.index, obs.gaps, data.t_observed, 0.3, 8, 15)
    first, second = step(0), step(1)
    assert set(first) == {"loss", "log_likelihood", "kl"}
    assert second["loss"] < first["loss"]


def test_latent_ode_train_step_clips_the_gradient_norm(batch):
    data, obs = batch
    model = _model()
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    latent_train_step(model, opt, obs.y, obs.index, obs.gaps, data.t_observed, 0.1, 8, 1, max_grad_norm=1e-3)(0)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert 0 < float((after - before).norm()) <= 1e-3 * (1 + 1e-5)  # one SGD step of lr 1: the clipped gradient


@pytest.mark.parametrize("use_gaps", [False, True])
def test_rnn_shapes(batch, use_gaps):
    data, obs = batch
    torch.manual_seed(0)
    net = rnn.RNNForecaster(2, 25, use_gaps=use_gaps)
    mean, log_std, h = net(obs.y, obs.gaps)
    assert mean.shape == log_std.shape == (8, 30, 2) and h.shape == (8, 25)
    future = rnn.forecast(net, obs.y, obs.t, data.t_future)
    assert future.shape == (8, 100, 2) and torch.isfinite(future).all()
    assert rnn.one_step_predictions(net, obs.y, obs.t).shape == (8, 29, 2)
    loss = rnn.rollout_loss(net, obs.y, obs.t, 15)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_gaussian_nll_exact():
    y, mean, log_std = torch.randn(5), torch.randn(5), torch.randn(5)
    torch.testing.assert_close(rnn.gaussian_nll(y, mean, log_std),
                               -torch.distributions.Normal(mean, log_std.exp()).log_prob(y))


def test_rollout_loss_is_the_nll_of_teacher_forcing_and_rollout():
    """The loss is the mean NLL over the teacher-forced predictions of observations 2..k and the
    free-running predictions of the rest, computed here by hand from forward() and extrapolate()."""
    torch.manual_seed(0)
    net = rnn.RNNForecaster(use_gaps=True)
    y, t = torch.randn(3, 7, 2), torch.cumsum(torch.rand(3, 7), dim=1)
    gaps = torch.diff(t, dim=1)
    mean_t, log_std_t, _ = net(y[:, :2], gaps[:, :2])
    future_gaps = torch.cat([torch.zeros(3, 1), gaps[:, 3:]], dim=1)
    mean_r, log_std_r = net.extrapolate(y[:, :3], gaps[:, :3], future_gaps, return_std=True)
    nll = torch.cat([rnn.gaussian_nll(y[:, 1:3], mean_t, log_std_t).flatten(),
                     rnn.gaussian_nll(y[:, 3:], mean_r, log_std_r).flatten()])
    torch.testing.assert_close(rnn.rollout_loss(net, y, t, 3), nll.mean())
    with pytest.raises(ValueError, match="num_context"):
        rnn.rollout_loss(net, y, t, 7)


def test_only_the_gap_rnn_sees_time(batch):
    _, obs = batch
    torch.manual_seed(0)
    plain, gaps = rnn.RNNForecaster(use_gaps=False), rnn.RNNForecaster(use_gaps=True)
    torch.testing.assert_close(plain(obs.y, obs.gaps)[0], plain(obs.y, 2 * obs.gaps)[0])
    assert not torch.allclose(gaps(obs.y, obs.gaps)[0], gaps(obs.y, 2 * obs.gaps)[0])
    with pytest.raises(ValueError, match="use_gaps=True"):
        gaps(obs.y)
    with pytest.raises(ValueError, match="shape"):
        gaps(obs.y, obs.gaps[:, :-1])


@pytest.mark.parametrize("use_gaps,cell", [(False, "gru"), (True, "gru"), (False, "tanh"), (True, "relu")])
def test_rnn_extrapolate_matches_teacher_forcing_on_its_own_outputs(use_gaps, cell):
    """Rolling out (one cell call per step) = running the recurrence over the sequence of its own
    predicted means."""
    torch.manual_seed(0)
    net = rnn.RNNForecaster(use_gaps=use_gaps, cell=cell).eval()
    y, gaps = torch.randn(3, 5, 2), torch.rand(3, 5)
    future_gaps = torch.rand(4)
    with torch.no_grad():
        out, log_std = net.extrapolate(y, gaps, future_gaps, return_std=True)
        seq = torch.cat([y, out[:, :-1]], dim=1)
        all_gaps = torch.cat([gaps, future_gaps[1:].expand(3, -1)], dim=1)
        teacher, teacher_std, _ = net(seq, all_gaps)
    torch.testing.assert_close(out, teacher[:, 4:])
    torch.testing.assert_close(log_std, teacher_std[:, 4:])


def test_forecast_at_spacing_interpolates_the_rollout():
    """On a grid with the training spacing the plain RNN's interpolated forecast is its rollout; on a
    grid three times finer, every third point is a rollout point and the others lie on the straight
    lines between them."""
    torch.manual_seed(0)
    net = rnn.RNNForecaster().eval()
    y, t_obs, h = torch.randn(2, 6, 2), 0.3 * torch.arange(6.0), 0.3
    coarse = 1.5 + h * torch.arange(1, 9.0)
    direct = rnn.forecast(net, y, t_obs, coarse)
    torch.testing.assert_close(rnn.forecast_at_spacing(net, y, t_obs, coarse, h), direct)
    fine = 1.5 + (h / 3) * torch.arange(3, 25.0)
    out = rnn.forecast_at_spacing(net, y, t_obs, fine, h)
    torch.testing.assert_close(out[:, ::3], direct)
    torch.testing.assert_close(out[:, 1:-1:3], direct[:, :-1] + (direct[:, 1:] - direct[:, :-1]) / 3)
    with pytest.raises(ValueError, match="forecast"):
        rnn.forecast_at_spacing(rnn.RNNForecaster(use_gaps=True), y, t_obs, coarse, h)
    with pytest.raises(ValueError, match="after the last observation"):
        rnn.forecast_at_spacing(net, y, t_obs, t_obs, h)


def test_rnn_cells():
    assert isinstance(rnn.RNNForecaster(cell="relu").rnn, torch.nn.RNN)
    assert rnn.RNNForecaster(cell="relu").rnn.nonlinearity == "relu"
    with pytest.raises(ValueError, match="unknown cell"):
        rnn.RNNForecaster(cell="lstm")


def test_rnn_head_is_a_position_not_an_increment():
    """The mean is read from the hidden state alone (no residual on the noisy input): the same
    hidden state gives the same mean whatever the last input was."""
    torch.manual_seed(0)
    net = rnn.RNNForecaster().eval()
    with torch.no_grad():
        out, _ = net.rnn(torch.randn(3, 5, 2))
        torch.testing.assert_close(net._gaussian(out)[0], net.head(out)[..., :2])


def test_rnn_train_step_clips_gradients_and_draws_context(batch):
    data, obs = batch
    torch.manual_seed(0)
    net = rnn.RNNForecaster(use_gaps=True)
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    step = rnn_train_step(net, opt, obs.y, obs.t, (6, 15), 4, 1, max_grad_norm=1e-3)
    assert torch.isfinite(torch.tensor(step(0)["loss"]))
    norm = torch.sqrt(sum((p.grad ** 2).sum() for p in net.parameters()))
    assert float(norm) <= 1e-3 * (1 + 1e-4)
    with pytest.raises(ValueError, match="num_context"):
        rnn_train_step(net, opt, obs.y, obs.t, (6, 30), 4, 1)


def test_neural_vector_field_window_loss_has_gradients():
    traj = cubic_spiral(num_points=100, t_end=2.5, seed=0)
    torch.manual_seed(0)
    func = dynamics.NeuralVectorField(num_hiddens=16)
    assert func(torch.tensor(0.0), torch.randn(7, 2)).shape == (7, 2)
    loss = dynamics.window_loss(func, traj.t, traj.y, 4, 10, method="rk4", options={"step_size": 0.05})
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad.abs().sum() > 0 for p in func.parameters())
    path = dynamics.trajectory(func, traj.y[0], traj.t[:20], method="rk4", options={"step_size": 0.05})
    assert path.shape == (20, 2) and torch.equal(path[0], traj.y[0])
    X, Y, U, V = dynamics.vector_field_grid(func, num=5)
    assert X.shape == U.shape == (5, 5)


def test_adjoint_gradients_match_backprop(batch):
    """The paper profile trains with the adjoint: same ELBO gradients as backprop through the solver."""
    data, obs = batch
    grads = []
    for adjoint in (False, True):
        torch.manual_seed(0)
        model = latent_ode.LatentODE(method="dopri5", rtol=1e-7, atol=1e-8, adjoint=adjoint).double()
        torch.manual_seed(1)
        loss, _ = latent_ode.elbo(model, obs.y[:3].double(), obs.index[:3], obs.gaps[:3].double(),
                                  data.t_observed.double(), 0.3)
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    # the adjoint re-solves z(t) backwards, so it agrees to the solver's accuracy, not exactly
    relative = float((grads[1] - grads[0]).norm() / grads[0].norm())
    assert relative < 1e-3, relative


def test_with_validation_logs_after_each_step():
    calls = []
    step = with_validation(lambda i: {"loss": float(i)}, lambda: calls.append(1) or {"val": 2.0})
    assert step(3) == {"loss": 3.0, "val": 2.0} and calls == [1]


def test_make_data_holds_out_validation_spirals_from_training():
    from nodebook.profiles import get_profile
    S = get_profile("latent_ode", "smoke")
    train, val, test = experiments.make_data(S, seed=0, noise_std=0.1)
    assert (len(train), len(val), len(test)) == (S.num_train - S.num_val, S.num_val, S.num_spirals - S.num_train)
    starts = [set(d.theta0.tolist()) for d in (train, val, test)]
    assert not (starts[0] & starts[1] or starts[0] & starts[2] or starts[1] & starts[2])
    # the same seed draws the same spirals at every noise level; only the noise differs
    other = experiments.make_data(S, seed=0, noise_std=0.3)[0]
    torch.testing.assert_close(other.y_true, train.y_true)
    torch.testing.assert_close(other.y - other.y_true, 3 * (train.y - train.y_true))
    with pytest.raises(ValueError, match="num_val"):
        experiments.make_data(dict(S, num_val=S.num_train), seed=0)


def test_run_keys_separate_what_changes_a_run():
    from nodebook.profiles import get_profile
    S = get_profile("latent_ode", "book")
    base = experiments.run_key("RNN", 30, S, 0, 0.3, 0.01)
    for other in (experiments.run_key("RNN", 30, S, 0, 0.3, 0.03), experiments.run_key("RNN", 30, S, 0, 0.1, 0.01),
                  experiments.run_key("RNN", 30, S, 1, 0.3, 0.01), experiments.run_key("RNN + gaps", 30, S, 0, 0.3, 0.01),
                  experiments.run_key("RNN", 50, S, 0, 0.3, 0.01)):
        assert other != base
    assert "rtol" in experiments.run_key("latent ODE", 30, S, 0, 0.3, 0.01) and "rtol" not in base
    # the latent ODE's batches and chunks are its own; the RNNs' keys do not depend on them
    latent = experiments.run_key("latent ODE", 30, S, 0, 0.3, 0.01)
    assert (latent["batch_size"], latent["num_steps"]) == (S.latent_batch_size, S.latent_num_steps)
    assert experiments.run_key("RNN", 30, dict(S, latent_batch_size=1), 0, 0.3, 0.01) == base
    assert experiments.budget("RNN + gaps", S) == (S.batch_size, S.num_steps)
    # the latent ODE's gradient clipping is part of its key (runs without it keep their old keys)
    assert latent["max_grad_norm"] == S.latent_max_grad_norm
    assert "max_grad_norm" not in experiments.run_key("latent ODE", 30, dict(S, latent_max_grad_norm=None), 0, 0.3, 0.01)
    with pytest.raises(ValueError, match="unknown model"):
        experiments.run_key("GRU", 30, S, 0, 0.3, 0.01)


def test_context_range_and_train_spacing(batch):
    assert experiments.context_range(30, (0.2, 0.5)) == (6, 15)
    assert experiments.context_range(3, (0.0, 1.0)) == (1, 2)
    _, obs = batch
    assert experiments.train_spacing(obs) == pytest.approx(float((obs.t[:, -1] - obs.t[:, 0]).mean() / 29))


def test_summarise_and_mean_by_time():
    metrics = {(0.3, "RNN", 30, s): {"rmse": v, "by_time": torch.full((4,), v)} for s, v in enumerate([1.0, 2.0, 3.0])}
    mean, spread, values = experiments.summarise(metrics)[0.3, "RNN", 30]
    assert (mean, spread, values) == (2.0, 1.0, [1.0, 2.0, 3.0])
    torch.testing.assert_close(experiments.mean_by_time(metrics)[0.3, "RNN", 30], torch.full((4,), 2.0))
    assert experiments.rmse_by_time(torch.zeros(2, 3, 2), torch.ones(2, 3, 2)).tolist() == [1.0, 1.0, 1.0]


def test_rnns_need_their_tuned_learning_rate(batch):
    from nodebook.profiles import get_profile
    S = get_profile("latent_ode", "smoke")
    data = experiments.make_data(S, seed=0)[:2]
    with pytest.raises(ValueError, match="learning rate"):
        experiments.train("RNN", 30, data, S)
    with pytest.raises(ValueError, match="batch size"):
        experiments.train("latent ODE", 30, data, dict(S, latent_batch_size=0))


def test_rmse_at_a_tight_tolerance_in_float64_leaves_the_model_alone(batch):
    data, _ = batch
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tight = experiments.latent_rmse_at_tolerance(model, 30, data, 0, 1.5e-8, 1.5e-8)
    obs = experiments.observations(data, 30, seed=2)
    # the float32 model at the training tolerance measures the same thing, up to the solver's error
    default = experiments.rmse(experiments.predict("latent ODE", model, obs, data), data.y_true[:, data.num_observed:])
    assert tight == pytest.approx(default, rel=1e-3)
    assert model.solver["rtol"] == 1e-3 and next(model.parameters()).dtype == torch.float32
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    wide = to_device(obs, dtype=torch.float64)
    assert wide.y.dtype == torch.float64 and wide.index.dtype == torch.long
    with pytest.raises(ValueError, match="rtol and atol"):
        experiments.latent_rmse_at_tolerance(model, 30, data, 0, 0.0, 1e-8)


def test_angular_speed_of_a_spiral_is_its_rate_of_turning():
    data = make_spirals(num_spirals=4, seed=0)  # one radian per unit of time, both directions
    dt = float(data.t[1] - data.t[0])
    speed = experiments.angular_speed(data.y_true, dt)
    torch.testing.assert_close(speed, torch.ones_like(speed), rtol=1e-3, atol=1e-3)
    half = experiments.angular_speed(data.y_true[:, ::2], 2 * dt)  # sampled more coarsely: the same speed
    torch.testing.assert_close(half, torch.ones_like(half), rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="shape"):
        experiments.angular_speed(data.y_true[:, :1], dt)


def test_outside_seen_range_marks_the_spirals_that_turn_past_every_training_spiral():
    data = make_spirals(num_spirals=40, seed=1)
    order = data.theta0.argsort()
    train = data.subset(order[:20])  # the 20 spirals that start at the smallest angles
    assert experiments.outside_seen_range(train, data.subset(order[-5:])).all()  # start beyond them all
    assert not experiments.outside_seen_range(train, data.subset(order[:5])).any()  # end within the seen angles


def test_recipe_variants_for_the_trend_with_n(batch, monkeypatch):
    """kl_weight and dynamics_layers (issue 11): in the key only when set, passed to the ELBO and the model."""
    from nodebook.profiles import get_profile
    S = get_profile("latent_ode", "book")
    plain = experiments.run_key("latent ODE", 30, S, 0, 0.3, 0.01)
    assert not set(experiments.LATENT_VARIANT_KEYS) & set(plain)  # committed runs keep their keys
    varied = experiments.run_key("latent ODE", 30, dict(S, kl_weight=3.0, dynamics_layers=2), 0, 0.3, 0.01)
    assert varied == dict(plain, kl_weight=3.0, dynamics_layers=2)
    deep = experiments.build("latent ODE", dict(S, dynamics_layers=2))
    assert [type(m).__name__ for m in deep.func.net] == ["Linear", "ELU", "Linear", "ELU", "Linear"]
    assert list(experiments.build("latent ODE", S).func.state_dict()) == ["net.0.weight", "net.0.bias",
                                                                          "net.2.weight", "net.2.bias"]
    with pytest.raises(ValueError, match="num_layers"):
        latent_ode.LatentDynamics(4, 20, 0)
    seen = []
    real = latent_ode.elbo
    monkeypatch.setattr(latent_ode, "elbo", lambda *args: seen.append(args[-1]) or real(*args))
    data, obs = batch
    model = _model()
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    latent_train_step(model, optimizer, obs.y, obs.index, obs.gaps, data.t_observed, 0.3, 4, 2, kl_weight=0.25)(0)
    assert seen == [0.25, 0.25]


def test_command_line_overrides_are_checked():
    assert experiments.parse_overrides(["ns=[100]", "kl_weight=3.5"], {"ns", "kl_weight"}) == {"ns": [100],
                                                                                               "kl_weight": 3.5}
    with pytest.raises(ValueError, match="unknown setting 'klweight'"):
        experiments.parse_overrides(["klweight=1"], {"kl_weight"})
    with pytest.raises(ValueError, match="not JSON"):
        experiments.parse_overrides(["ns=[100"], {"ns"})
    with pytest.raises(ValueError, match="KEY=VALUE"):
        experiments.parse_overrides(["ns"], {"ns"})
