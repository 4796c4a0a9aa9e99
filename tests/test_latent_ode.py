"""Latent ODE, RNN baselines and the neural vector field: losses, gradients, shapes."""

import math

import pytest
import torch

from nodebook.data.spirals import cubic_spiral, make_spirals, sample_observations
from nodebook.experiments.latent_ode import latent_train_step
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


@pytest.mark.parametrize("use_gaps", [False, True])
def test_rnn_shapes(batch, use_gaps):
    data, obs = batch
    torch.manual_seed(0)
    net = rnn.RNNForecaster(2, 25, use_gaps=use_gaps)
    pred, h = net(obs.y, obs.gaps)
    assert pred.shape == (8, 30, 2) and h.shape == (8, 25)
    future = rnn.forecast(net, obs.y, obs.t, data.t_future)
    assert future.shape == (8, 100, 2) and torch.isfinite(future).all()
    assert rnn.one_step_predictions(net, obs.y, obs.t).shape == (8, 29, 2)
    loss = rnn.rollout_loss(net, obs.y, obs.t, 15)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_only_the_gap_rnn_sees_time(batch):
    _, obs = batch
    torch.manual_seed(0)
    plain, gaps = rnn.RNNForecaster(use_gaps=False), rnn.RNNForecaster(use_gaps=True)
    torch.testing.assert_close(plain(obs.y, obs.gaps)[0], plain(obs.y, 2 * obs.gaps)[0])
    assert not torch.allclose(gaps(obs.y, obs.gaps)[0], gaps(obs.y, 2 * obs.gaps)[0])
    with pytest.raises(ValueError, match="use_gaps=True"):
        gaps(obs.y)


def test_rnn_extrapolate_matches_teacher_forcing_on_its_own_outputs():
    """Rolling out = running the GRU over the sequence of its own predictions."""
    torch.manual_seed(0)
    net = rnn.RNNForecaster(use_gaps=True).eval()
    y, gaps = torch.randn(3, 5, 2), torch.rand(3, 5)
    future_gaps = torch.rand(4)
    with torch.no_grad():
        out = net.extrapolate(y, gaps, future_gaps)
        seq = torch.cat([y, out[:, :-1]], dim=1)
        all_gaps = torch.cat([gaps, future_gaps[1:].expand(3, -1)], dim=1)
        teacher, _ = net(seq, all_gaps)
    torch.testing.assert_close(out, teacher[:, 4:])


def test_gap_rnn_predicts_a_velocity():
    """The gap-aware RNN's step is the gap times its output: a zero gap means no move, and its
    rollout on a finer grid moves by proportionally smaller steps (no runaway on small test gaps)."""
    torch.manual_seed(0)
    net = rnn.RNNForecaster(use_gaps=True).eval()
    y = torch.randn(3, 5, 2)
    with torch.no_grad():
        torch.testing.assert_close(net(y, torch.zeros(3, 5))[0], y)
        out, h = net.rnn(torch.cat([y, torch.full((3, 5, 1), 0.1)], dim=-1))
        torch.testing.assert_close(net(y, torch.full((3, 5), 0.1))[0], y + 0.1 * net.head(out))


def test_rnn_train_step_clips_gradients(batch):
    data, obs = batch
    torch.manual_seed(0)
    net = rnn.RNNForecaster(use_gaps=True)
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    step = rnn_train_step(net, opt, obs.y, obs.t, 15, 4, 1, max_grad_norm=1e-3)
    assert torch.isfinite(torch.tensor(step(0)["loss"]))
    norm = torch.sqrt(sum((p.grad ** 2).sum() for p in net.parameters()))
    assert float(norm) <= 1e-3 * (1 + 1e-4)


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
