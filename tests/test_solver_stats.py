"""record_stats / SolveStats: exact NFE and step counts, forward and backward."""

import pytest
import torch
from torch import nn

from nodebook.adjoint import odeint_adjoint
from nodebook.solvers import SOLVERS, SolveStats, odeint, record_stats

D = torch.float64


@pytest.fixture
def torchdiffeq():
    """The reference implementation; only the comparisons skip without it."""
    return pytest.importorskip("torchdiffeq")


class Counted(nn.Module):
    """A small MLP ODE that counts its own calls."""

    def __init__(self, dim=2, width=16):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(dim, width), nn.Tanh(), nn.Linear(width, dim)).double()
        self.calls = 0

    def forward(self, t, y):
        self.calls += 1
        return self.net(y) * torch.cos(t)


def van_der_pol(t, y, mu=5.0):  # forces rejected steps
    return torch.stack([y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]])


Y0 = torch.tensor([[0.5, -1.0], [1.0, 0.3]], dtype=D)
T = torch.tensor([0.0, 0.7, 2.0], dtype=D)


@pytest.mark.parametrize("method, options", [(m, None) for m in sorted(SOLVERS)] + [
    ("midpoint", {"step_size": 0.1}), ("rk4", {"step_size": 0.3}), ("rk4_38", {"step_size": 0.3}),
    ("dopri5", {"first_step": 0.01})])
def test_counts_match_a_counting_wrapper(method, options):
    func = Counted()
    with record_stats() as log:
        odeint(func, Y0, T, rtol=1e-6, atol=1e-8, method=method, options=options)
    (stats,) = log.solves
    assert isinstance(stats, SolveStats)
    assert (stats.method, stats.direction) == (method, "forward")
    assert stats.nfe == func.calls == log.nfe_forward
    s = SOLVERS[method].tableau.stages
    if SOLVERS[method].adaptive:  # FSAL: s - 1 new stages per step, +1 for f(t0),
        start = 1 if options else 2     # +1 for Hairer's initial step selection
        assert stats.nfe == start + (s - 1) * stats.n_steps
    else:
        assert stats.nfe == s * stats.n_accepted and stats.n_rejected == 0


@pytest.mark.parametrize("method", ["bosh3", "dopri5"])
def test_rejections_are_counted(method):
    calls = []

    def func(t, y):
        calls.append(1)
        return van_der_pol(t, y)

    with record_stats() as log:
        odeint(func, torch.tensor([2.0, 0.0], dtype=D), torch.tensor([0.0, 6.0], dtype=D),
               rtol=1e-6, atol=1e-6, method=method)
    (stats,) = log.solves
    assert stats.n_rejected > 0
    new_stages = 6 if method == "dopri5" else 3
    assert stats.nfe == len(calls) == 2 + new_stages * stats.n_steps
    assert log.n_accepted == stats.n_accepted and log.n_rejected == stats.n_rejected


@pytest.mark.parametrize("method", ["bosh3", "dopri5"])
def test_nfe_matches_torchdiffeq(method, torchdiffeq):
    ours, theirs = Counted(), Counted()
    with record_stats() as log:
        odeint(ours, Y0, T, rtol=1e-7, atol=1e-9, method=method)
    torchdiffeq.odeint(theirs, Y0, T, rtol=1e-7, atol=1e-9, method=method)
    # the same controller; nodebook clips the last step to land on t[-1] (a step or two apart)
    assert abs(log.nfe - theirs.calls) <= 2 * (SOLVERS[method].tableau.stages - 1)


def test_nested_blocks_both_record_and_outside_is_not_recorded():
    func = Counted()
    odeint(func, Y0, T)  # outside any block
    with record_stats() as outer:
        odeint(func, Y0, T, method="rk4")
        with record_stats() as inner:
            odeint(func, Y0, T, method="euler")
    odeint(func, Y0, T)
    assert [s.method for s in outer.solves] == ["rk4", "euler"]
    assert [s.method for s in inner.solves] == ["euler"]
    assert outer.nfe_forward == 2 * 4 + 2 and outer.nfe_backward == 0


def test_options_unaffected_and_stats_object_is_independent():
    opts = {"step_size": 0.5}
    with record_stats() as log:
        odeint(Counted(), Y0, T, method="rk4", options=opts)
    assert opts == {"step_size": 0.5}
    assert log.solves[0].n_accepted == 4  # the grid 0, 0.5, ..., 2.0, as torchdiffeq


@pytest.mark.parametrize("t_grad", [False, True])
def test_adjoint_backward_solves_are_recorded(t_grad):
    func = Counted()
    t = T.clone().requires_grad_(t_grad)
    y0 = Y0.clone().requires_grad_(True)
    with record_stats() as log:
        ys = odeint_adjoint(func, y0, t, rtol=1e-6, atol=1e-8)
        forward_calls = func.calls
        (ys ** 2).sum().backward()
    backward_calls = func.calls - forward_calls
    directions = [s.direction for s in log.solves]
    assert directions == ["forward"] + ["backward"] * (len(T) - 1)
    assert log.nfe_forward == forward_calls
    assert log.nfe_backward == backward_calls > 0
    assert log.nfe == log.nfe_forward + log.nfe_backward


@pytest.mark.parametrize("method", ["rk4", "dopri5"])
def test_step_times_record_the_accepted_steps(method):
    func = lambda t, y: -y  # noqa: E731
    y0 = torch.tensor([1.0], dtype=torch.float64)
    options = {"step_size": 0.1} if method == "rk4" else None
    with record_stats() as few:
        odeint(func, y0, torch.tensor([0.0, 2.0], dtype=torch.float64), method=method, options=options)
    with record_stats() as many:
        odeint(func, y0, torch.linspace(0.0, 2.0, 50, dtype=torch.float64), method="dopri5")
    steps = few.solves[0].step_times
    assert len(steps) == few.n_accepted + 1
    assert steps[0] == 0.0 and steps[-1] == pytest.approx(2.0)
    assert all(b > a for a, b in zip(steps, steps[1:]))
    if method == "dopri5":  # dense output: requested times do not add steps
        assert many.solves[0].step_times == steps


def test_nested_blocks_both_record():
    func = lambda t, y: -y  # noqa: E731
    y0, t = torch.ones(1, dtype=D), torch.tensor([0.0, 1.0], dtype=D)
    with record_stats() as outer:
        with record_stats() as inner:  # equal (empty) logs on entry: removal must be by identity
            pass
        odeint(func, y0, t)
        with record_stats() as inner:
            odeint(func, y0, t)
    assert len(outer.solves) == 2 and len(inner.solves) == 1
    with record_stats() as after:
        pass
    assert after.solves == []
