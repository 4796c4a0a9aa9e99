"""Augmented Neural ODEs (nodebook.models.augmented) and their toy data
(nodebook.data.topology): shapes, augment_dim=0 is a plain Neural ODE, a 1-d
flow preserves order (so cannot swap -1 and 1) while one extra dimension can."""

import math

import pytest
import torch
from torch import nn

from nodebook import odeint
from nodebook.data.topology import annulus_label, crossing_1d, nested_annuli
from nodebook.models.augmented import AugmentedNeuralODE, AugmentedODEBlock, VectorField

D = torch.float64


@pytest.mark.parametrize("dim, augment_dim, out_features, expected", [
    (1, 0, None, (5, 1)), (1, 1, None, (5, 1)), (2, 0, 1, (5, 1)), (2, 3, 1, (5, 1)), (2, 2, 3, (5, 3)),
    (2, 2, None, (5, 2)),
])
def test_shapes(dim, augment_dim, out_features, expected):
    torch.manual_seed(0)
    model = AugmentedNeuralODE(dim, augment_dim, out_features, num_hiddens=8)
    assert model(torch.randn(5, dim)).shape == expected
    traj = model.block.trajectory(torch.randn(5, dim), [0.0, 0.5, 1.0])
    assert traj.shape == (3, 5, dim + augment_dim)


def test_block_appends_zeros_and_drops_them():
    seen = []

    class Recording(nn.Module):
        def forward(self, t, z):
            seen.append(z.clone())
            return torch.ones_like(z)          # z(T) = z(0) + T

    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=D)
    block = AugmentedODEBlock(Recording(), dim=2, augment_dim=3, T=0.5, method="euler")
    out = block(x)
    assert torch.equal(seen[0], torch.cat([x, torch.zeros(2, 3, dtype=D)], 1))
    assert torch.allclose(out, x + 0.5) and out.shape == (2, 2)
    kept = AugmentedODEBlock(Recording(), dim=2, augment_dim=3, T=0.5, keep_augmented=True, method="euler")(x)
    assert torch.allclose(kept, torch.cat([x, torch.zeros(2, 3, dtype=D)], 1) + 0.5)


@pytest.mark.parametrize("out_features", [None, 1])
def test_augment_dim_zero_is_a_plain_neural_ode(out_features):
    torch.manual_seed(1)
    model = AugmentedNeuralODE(2, 0, out_features, num_hiddens=8, T=0.7, rtol=1e-6, atol=1e-6).double()
    x = torch.randn(6, 2, dtype=D)
    z = odeint(model.block.func, x, torch.tensor([0.0, 0.7], dtype=D), method="dopri5", rtol=1e-6, atol=1e-6)[-1]
    expected = z if out_features is None else model.readout(z)
    assert torch.equal(model(x), expected)


def test_gradients_reach_every_parameter_through_the_adjoint_too():
    torch.manual_seed(2)
    x = torch.randn(4, 2, dtype=D)
    grads = []
    for adjoint in (False, True):
        torch.manual_seed(3)
        model = AugmentedNeuralODE(2, 1, 1, num_hiddens=8, rtol=1e-9, atol=1e-9, adjoint=adjoint).double()
        model(x).pow(2).sum().backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    assert bool((grads[0] != 0).any())
    assert torch.allclose(grads[0], grads[1], rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("time_dependent", [False, True])
def test_a_1d_flow_preserves_order(seed, time_dependent):
    """Trajectories of a 1-d ODE cannot cross, so x1 < x2 gives phi(x1) < phi(x2),
    for any field: here random MLPs, large weights so that the flow is far from the identity."""
    torch.manual_seed(seed)
    field = VectorField(1, num_hiddens=16, num_layers=2, time_dependent=time_dependent).double()
    with torch.no_grad():
        for p in field.parameters():
            p.mul_(3.0)
    x = torch.linspace(-3, 3, 301, dtype=D)[:, None]
    phi = odeint(field, x, torch.tensor([0.0, 2.0], dtype=D), rtol=1e-8, atol=1e-8)[-1, :, 0]
    assert (phi - x[:, 0]).abs().max() > 0.1       # the flow moves points
    assert bool((phi.diff() > 0).all())
    # hence no plain 1-d Neural ODE maps -1 -> 1 and 1 -> -1: its images stay in order
    model = AugmentedNeuralODE(1, 0, None, num_hiddens=16, time_dependent=time_dependent).double()
    x, _ = crossing_1d(D)
    out = model(x)
    assert out[0, 0] < out[1, 0]


def test_one_extra_dimension_lets_the_flow_swap_the_points():
    """In R^2 the rotation dz/dt = [[0, -1], [1, 0]] z for time pi maps (x, 0) to (-x, 0):
    an augmented block with this field represents g(x) = -x exactly."""

    class Rotation(nn.Module):
        def forward(self, t, z):
            return torch.stack([-z[:, 1], z[:, 0]], 1)

    x, y = crossing_1d(D)
    block = AugmentedODEBlock(Rotation(), dim=1, augment_dim=1, T=math.pi, rtol=1e-10, atol=1e-10)
    assert torch.allclose(block(x), y, atol=1e-8)


def test_crossing_data():
    x, y = crossing_1d()
    assert x.shape == y.shape == (2, 1) and x.dtype == torch.float32
    assert x[:, 0].tolist() == [-1.0, 1.0] and y[:, 0].tolist() == [1.0, -1.0]


@pytest.mark.parametrize("dim", [2, 3])
def test_nested_annuli_labels_and_radii(dim):
    x, y = nested_annuli(300, 600, r1=0.5, r2=1.0, r3=1.5, dim=dim, seed=4, dtype=D)
    assert x.shape == (900, dim) and y.shape == (900, 1)
    radius = x.norm(dim=1)
    inner, outer = y[:, 0] == -1, y[:, 0] == 1
    assert int(inner.sum()) == 300 and int(outer.sum()) == 600
    assert bool((radius[inner] < 0.5).all())
    assert bool(((radius[outer] >= 1.0) & (radius[outer] < 1.5)).all())
    assert torch.equal(annulus_label(x), y)
    # uniform in area/volume: half the inner points lie within r1 / 2^(1/dim)
    half = float((radius[inner] < 0.5 / 2 ** (1 / dim)).double().mean())
    assert abs(half - 0.5) < 4 * math.sqrt(0.25 / 300)
    # shuffled, and the seed decides everything
    assert not bool(inner[:300].all())
    assert torch.equal(nested_annuli(300, 600, dim=dim, seed=4, dtype=D)[0], x)


def test_annulus_label_of_the_gap_and_outside_is_zero():
    x = torch.tensor([[0.2, 0.0], [0.0, 0.75], [1.2, 0.0], [0.0, -2.0]])
    assert annulus_label(x)[:, 0].tolist() == [-1.0, 0.0, 1.0, 0.0]


@pytest.mark.parametrize("make, message", [
    (lambda: AugmentedNeuralODE(2, -1), "augment_dim"),
    (lambda: AugmentedNeuralODE(2, 1, out_features=0), "out_features"),
    (lambda: AugmentedNeuralODE(2, 1, T=0.0), "T must be positive"),
    (lambda: AugmentedNeuralODE(0, 1), "positive"),
    (lambda: AugmentedNeuralODE(2, 1)(torch.zeros(3, 3)), r"shape \(batch, 2\)"),
    (lambda: AugmentedNeuralODE(2, 1)(torch.zeros(2)), r"shape \(batch, 2\)"),
    (lambda: nested_annuli(r1=1.0, r2=0.5), "0 < r1 < r2 < r3"),
    (lambda: nested_annuli(num_inner=0), "positive"),
])
def test_bad_input_is_named(make, message):
    with pytest.raises(ValueError, match=message):
        make()
