"""Spiral data (nodebook.data.spirals): shapes, seeding, directions, observation sampling, RMSE."""

import math

import pytest
import torch

from nodebook.data.spirals import (CubicSpiral, cubic_spiral, make_spirals, rmse, sample_observations,
                                   sample_windows, split)


@pytest.fixture(scope="module")
def data():
    return make_spirals(num_spirals=40, seed=3)


def test_shapes_and_grid(data):
    assert data.y.shape == data.y_true.shape == (40, 200, 2)
    assert data.t.shape == (200,) and data.num_observed == 100
    dt = torch.diff(data.t)
    torch.testing.assert_close(dt, torch.full_like(dt, math.pi / 100))
    assert data.t_observed.shape == (100,) and data.t_future.shape == (100,)
    assert data.t_future[0] > data.t_observed[-1]


def test_seeded(data):
    again = make_spirals(num_spirals=40, seed=3)
    other = make_spirals(num_spirals=40, seed=4)
    assert torch.equal(data.y, again.y)
    assert not torch.allclose(data.y, other.y)


def test_archimedean_radius_and_noise(data):
    theta = data.theta0[:, None] + data.t[None, :]
    torch.testing.assert_close(data.y_true.norm(dim=-1), 0.3 * theta)
    assert (theta <= 6 * math.pi + 1e-5).all() and (data.theta0 >= 0.5 * math.pi).all()
    noise = data.y - data.y_true
    assert abs(float(noise.std()) - 0.3) < 0.02  # 16,000 draws of N(0, 0.3^2)


def test_half_clockwise(data):
    assert int(data.clockwise.sum()) == 20 and not data.clockwise[:20].any() and data.clockwise[20:].all()
    y = data.y_true
    v = torch.diff(y, dim=1)
    spin = y[:, :-1, 0] * v[..., 1] - y[:, :-1, 1] * v[..., 0]  # z of r x v: > 0 counter-clockwise
    assert (spin[~data.clockwise] > 0).all() and (spin[data.clockwise] < 0).all()


def test_bad_arguments():
    with pytest.raises(ValueError, match="even"):
        make_spirals(num_spirals=7)
    with pytest.raises(ValueError, match="do not fit"):
        make_spirals(num_spirals=4, t_observed=4 * math.pi)


def test_split_is_a_partition(data):
    train, test = split(data, 30, seed=1)
    assert len(train) == 30 and len(test) == 10
    rows = torch.cat([train.theta0, test.theta0]).sort().values
    assert torch.equal(rows, data.theta0.sort().values)


@pytest.mark.parametrize("n", [1, 30, 100])
def test_observations_without_replacement_in_observed_part(data, n):
    obs = sample_observations(data, n, seed=5)
    assert obs.index.shape == obs.t.shape == (40, n) and obs.y.shape == (40, n, 2)
    assert (obs.index >= 0).all() and (obs.index < data.num_observed).all()
    assert (torch.diff(obs.index, dim=1) > 0).all()  # sorted and distinct
    rows = torch.arange(40)[:, None]
    assert torch.equal(obs.y, data.y[rows, obs.index]) and torch.equal(obs.t, data.t[obs.index])
    torch.testing.assert_close(obs.gaps.cumsum(dim=1), obs.t)
    if n == 100:
        assert torch.equal(obs.index, torch.arange(100).expand(40, -1))
    assert torch.equal(obs.index, sample_observations(data, n, seed=5).index)
    with pytest.raises(ValueError, match="between 1 and num_observed"):
        sample_observations(data, 101)


def test_observations_differ_between_spirals(data):
    obs = sample_observations(data, 30, seed=0)
    assert len({tuple(row.tolist()) for row in obs.index}) == 40


def test_rmse_exact():
    assert rmse(torch.tensor([[3.0, 4.0]]), torch.zeros(1, 2)) == pytest.approx(math.sqrt(12.5))
    assert rmse(torch.full((5, 7, 2), 2.0), torch.ones(5, 7, 2)) == 1.0
    with pytest.raises(ValueError, match="differ in shape"):
        rmse(torch.zeros(3), torch.zeros(4))


def test_cubic_spiral_against_torchdiffeq():
    torchdiffeq = pytest.importorskip("torchdiffeq")
    traj = cubic_spiral(num_points=50, t_end=5.0, noise_std=0.02, seed=1)
    oracle = torchdiffeq.odeint(CubicSpiral(), torch.tensor([2.0, 0.0]), traj.t, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(traj.y_true, oracle, rtol=0, atol=1e-4)  # float32 solves
    assert traj.y.shape == (50, 2) and not torch.equal(traj.y, traj.y_true)
    assert torch.equal(traj.y, cubic_spiral(num_points=50, t_end=5.0, noise_std=0.02, seed=1).y)


def test_sample_windows_are_contiguous():
    y = torch.arange(40.0).reshape(20, 2)
    torch.manual_seed(0)
    starts, batch = sample_windows(y, batch_size=8, window=5, last_start=9)
    assert batch.shape == (5, 8, 2) and (starts <= 9).all()
    torch.testing.assert_close(batch[:, :, 0], 2.0 * (starts[None, :] + torch.arange(5)[:, None]).float())
    with pytest.raises(ValueError, match="does not fit"):
        sample_windows(y, 2, 21)
