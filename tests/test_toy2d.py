"""The 2-D targets and samplers of the CNF chapter (nodebook.data.toy2d)."""

import math

import pytest
import torch

from nodebook.data import toy2d


def test_targets_are_finite_and_shaped():
    points, area, extent = toy2d.grid(4.0, 50)
    assert points.shape == (2500, 2) and extent == (-4.0, 4.0, -4.0, 4.0)
    assert area == pytest.approx((8 / 49) ** 2)
    for name in toy2d.TARGETS:
        values = toy2d.log_target(name, points)
        assert values.shape == (2500,) and torch.isfinite(values).all(), name


def test_grid_is_row_major_image():
    points, _, _ = toy2d.grid(1.0, 3)
    # z1 runs fastest, z2 increases by row
    assert points[:3, 1].eq(-1).all() and torch.allclose(points[:3, 0], torch.tensor([-1.0, 0.0, 1.0]))
    assert points[-1].tolist() == [1.0, 1.0]


def test_ring_peaks_on_the_ring_lobes():
    # U1 is smallest at radius 2 on the z1 axis and large at the origin.
    lp = toy2d.log_target("ring (U1)", torch.tensor([[2.0, 0.0], [0.0, 2.0], [0.0, 0.0]]))
    assert lp[0] > lp[1] > lp[2]


def test_wave_normalisers_match_closed_form():
    # Along z2 each wave is a Gaussian bump of width s (integral s*sqrt(2 pi)); along z1 the box
    # exp(-(z1/4)^8) integrates to 8 * Gamma(9/8).
    box = 8 * math.gamma(9 / 8)
    wave = math.log(0.4 * math.sqrt(2 * math.pi) * box)
    two_waves = math.log(2 * 0.35 * math.sqrt(2 * math.pi) * box)
    assert toy2d.log_normaliser("wave (U2)") == pytest.approx(wave, abs=1e-4)
    assert toy2d.log_normaliser("two waves (U3)") == pytest.approx(two_waves, abs=1e-4)


def test_ring_normaliser_converges_with_grid():
    coarse = toy2d.log_normaliser("ring (U1)", num=351)
    fine = toy2d.log_normaliser("ring (U1)", num=701)
    assert coarse == pytest.approx(fine, abs=1e-4)


def test_unknown_names_and_bad_shapes_raise():
    with pytest.raises(ValueError, match="unknown target 'banana'"):
        toy2d.log_target("banana", torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"shape \[N, 2\]"):
        toy2d.log_target("ring (U1)", torch.zeros(3, 3))
    with pytest.raises(ValueError, match="unknown data set"):
        toy2d.sample("spirals", 10)


def test_circles_radii_and_balance():
    g = torch.Generator().manual_seed(0)
    x = toy2d.sample("two circles", 4000, generator=g)
    assert x.shape == (4000, 2) and x.dtype == torch.float32
    r = x.norm(dim=1)
    assert r[:2000].mean().item() == pytest.approx(3.0, abs=0.05)
    assert r[2000:].mean().item() == pytest.approx(1.5, abs=0.05)
    assert r[:2000].std().item() == pytest.approx(0.24, abs=0.03)  # noise 0.08 scaled by 3


def test_moons_geometry():
    g = torch.Generator().manual_seed(0)
    x = toy2d.sample("two moons", 4000, generator=g)
    upper, lower = x[:2000], x[2000:]
    # make_moons * 2 + (-1, -0.2): upper moon centred at (-1, -0.2) with radius 2, lower at (1, 0.8).
    assert (upper - torch.tensor([-1.0, -0.2])).norm(dim=1).mean().item() == pytest.approx(2.0, abs=0.05)
    assert (lower - torch.tensor([1.0, 0.8])).norm(dim=1).mean().item() == pytest.approx(2.0, abs=0.05)
    assert upper[:, 1].mean() > lower[:, 1].mean()


def test_samplers_follow_global_seed():
    torch.manual_seed(3)
    a = toy2d.sample_two_moons(10)
    torch.manual_seed(3)
    b = toy2d.sample_two_moons(10)
    assert torch.equal(a, b)
