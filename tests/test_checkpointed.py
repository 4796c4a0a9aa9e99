"""odeint_checkpointed: the same values and gradients as backpropagation through
the solver (odeint), one stored state per accepted step, the recomputation's
cost, tuple states and the input checks."""

import re

import pytest
import torch

from nodebook import odeint, odeint_checkpointed, record_stats
from nodebook.memory import saved_tensor_bytes
from nodebook.solvers import SOLVERS, Method, register
from nodebook.models.mlp import TimeMLP
from nodebook.solvers import errors

D = torch.float64


def MLP(dim=2, width=16, seed=0):
    """A small time-dependent MLP ODE (float64): dz/dt = W2 tanh(W1 [z, t] + b1) + b2."""
    torch.manual_seed(seed)
    return TimeMLP(dim, width).double()


def loss_fn(ys):
    """Depends on several output times, not only the last."""
    return (ys[1:] ** 2).sum() + torch.sin(ys[1]).sum() - ys[-1, :, 0].sum()


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


T_UP = [0.0, 0.4, 1.1, 1.5]
CASES = {  # (method, options, output times): fixed grids with outputs between grid points, adaptive ones
    "rk4": ("rk4", None, T_UP),
    "rk4-step_size": ("rk4", {"step_size": 0.07}, T_UP),
    "rk4-cubic": ("rk4", {"step_size": 0.07, "interp": "cubic"}, T_UP),
    "euler-perturb": ("euler", {"step_size": 0.05, "perturb": True}, T_UP),
    "dopri5": ("dopri5", None, T_UP),
    "dopri5-backwards": ("dopri5", None, [1.5, 1.1, 0.4, 0.0]),
    "dopri5-step_t": ("dopri5", {"step_t": [0.77]}, T_UP),
    "bosh3": ("bosh3", None, T_UP),
}


@pytest.mark.parametrize("case", list(CASES))
def test_values_and_gradients_equal_backprop(case):
    method, options, times = CASES[case]
    func = MLP()
    torch.manual_seed(1)
    y0 = torch.randn(3, 2, dtype=D, requires_grad=True)
    t = torch.tensor(times, dtype=D)
    kw = dict(rtol=1e-6, atol=1e-8, method=method, options=options)
    inputs = [y0, *func.parameters()]

    ys = odeint_checkpointed(func, y0, t, **kw)
    with torch.no_grad():
        assert torch.equal(ys, odeint(func, y0, t, **kw))  # the very same forward solve
    g_ckpt = torch.autograd.grad(loss_fn(ys), inputs)
    g_bp = torch.autograd.grad(loss_fn(odeint(func, y0, t, **kw)), inputs)
    for a, b in zip(g_ckpt, g_bp):
        assert rel_err(a, b) < 1e-10


def test_tuple_state_and_explicit_params():
    torch.manual_seed(0)
    W = torch.randn(3, 3, dtype=D, requires_grad=True)
    a0 = torch.randn(2, dtype=D, requires_grad=True)
    b0 = torch.randn(1, 1, dtype=D, requires_grad=True)
    t = torch.tensor([0.0, 0.3, 1.0], dtype=D)

    def pair(s, y):
        a, b = y
        f = torch.tanh(torch.cat([a, b.reshape(-1)]) @ W) * (1 + s)
        return f[:2], f[2:].view(1, 1)

    def loss(ys):
        return (ys[0] ** 2).sum() + ys[1][-1].sum()

    kw = dict(rtol=(1e-7, 1e-6), atol=1e-9, method="dopri5")
    ys = odeint_checkpointed(pair, (a0, b0), t, params=(W,), **kw)
    assert isinstance(ys, tuple) and ys[0].shape == (3, 2) and ys[1].shape == (3, 1, 1)
    g_ckpt = torch.autograd.grad(loss(ys), [a0, b0, W])
    g_bp = torch.autograd.grad(loss(odeint(pair, (a0, b0), t, **kw)), [a0, b0, W])
    for a, b in zip(g_ckpt, g_bp):
        assert rel_err(a, b) < 1e-10


@pytest.mark.parametrize("method,kw", [("rk4", {"options": {"step_size": 0.1}}),
                                       ("dopri5", {"rtol": 1e-10, "atol": 1e-10})])
def test_gradcheck(method, kw):
    torch.manual_seed(0)
    W = torch.randn(2, 2, dtype=D, requires_grad=True)
    y0 = torch.randn(3, 2, dtype=D, requires_grad=True)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=D)

    def f(y0, W):
        return odeint_checkpointed(lambda s, y: torch.tanh(y @ W) * (1 + s), y0, t, method=method,
                                   params=(W,), **kw)

    assert torch.autograd.gradcheck(f, (y0, W))


def test_saved_memory_is_one_state_per_step():
    """Backprop saves every stage's activations; checkpointing one state per step."""
    func = MLP(width=32).float()
    y0 = torch.randn(16, 2, requires_grad=True)
    state_bytes = y0.numel() * y0.element_size()
    t = torch.tensor([0.0, 1.0])
    ckpt, bp = [], []
    ns = [10, 100, 1000]
    for n in ns:
        opts = dict(method="rk4", options={"step_size": 1.0 / n})
        ckpt.append(saved_tensor_bytes(lambda: odeint_checkpointed(func, y0, t, **opts)))
        bp.append(saved_tensor_bytes(lambda: odeint(func, y0, t, **opts)))
    assert ckpt == [n * state_bytes for n in ns]
    assert 9 < bp[1] / bp[0] < 11 and 9 < bp[2] / bp[1] < 11
    # both grow linearly, backprop here 70 times faster (rk4's 4 stages of a 32-wide MLP)
    assert (bp[2] - bp[1]) / (ckpt[2] - ckpt[1]) > 20

    with record_stats() as log:  # adaptive: one state per accepted step (a too long first step is rejected)
        saved = saved_tensor_bytes(lambda: odeint_checkpointed(func, y0, t, rtol=1e-8, atol=1e-8,
                                                               options={"first_step": 0.9}))
    assert log.n_rejected > 0 and saved == log.n_accepted * state_bytes


@pytest.mark.parametrize("method,options", [("rk4", {"step_size": 0.05}),
                                            ("rk4", {"step_size": 0.05, "interp": "cubic"}),
                                            ("dopri5", None), ("bosh3", None)])
def test_recomputation_costs_one_forward(method, options):
    func = MLP()
    y0 = torch.randn(3, 2, dtype=D, requires_grad=True)
    t = torch.tensor(T_UP, dtype=D)
    with record_stats() as ref:
        odeint(func, y0, t, rtol=1e-7, atol=1e-9, method=method, options=options)
    with record_stats() as log:
        ys = odeint_checkpointed(func, y0, t, rtol=1e-7, atol=1e-9, method=method, options=options)
        loss_fn(ys).backward()
    forward, backward = log.solves
    assert (forward.direction, backward.direction) == ("forward", "backward")
    assert log.nfe_forward == ref.nfe and forward.n_accepted == backward.n_accepted
    assert backward.step_times == forward.step_times[::-1]
    stages = SOLVERS[method].tableau.stages
    if method == "rk4":  # every step is recomputed as it was computed
        assert log.nfe_backward == log.nfe_forward
    else:  # each accepted step once more, its first-same-as-last stage included
        assert log.nfe_backward == stages * forward.n_accepted
        assert log.nfe_backward <= stages / (stages - 1) * log.nfe_forward


class _OneStep(Method):
    name, order, adaptive = "one_step_test", 1, False

    def integrate(self, ivp, options, stats):
        return [ivp.y0 + (b - a) * ivp.rhs(a, ivp.y0) for a, b in zip(ivp.times[:-1], ivp.times[1:])]


def _f(t, y):
    return -y


Y0 = torch.ones(2, dtype=D)
T = torch.tensor([0.0, 1.0], dtype=D)


@pytest.mark.parametrize("bad", [
    dict(y0=[1.0, 2.0]),
    dict(y0=torch.tensor([1, 2])),
    dict(t=torch.tensor([[0.0, 1.0]], dtype=D)),
    dict(t=torch.tensor([0.0, 1.0, 0.5], dtype=D)),
    dict(rtol=-1.0),
    dict(atol=torch.ones(3, dtype=D)),
    dict(method="dopri8"),
    dict(method="rk4", options={"step_size": -0.1}),
    dict(options={"jump_t": [0.5]}),
    dict(func=lambda t, y: y[:1]),
])
def test_bad_input_gets_odeint_errors(bad):
    kw = {"func": _f, "y0": Y0, "t": T, **bad}
    with pytest.raises(Exception) as expected:
        odeint(**kw)
    with pytest.raises(expected.type, match=re.escape(str(expected.value))):
        odeint_checkpointed(**kw, params=())


def test_bad_input_of_its_own():
    with pytest.raises(TypeError, match="nn.Module .* unless params is given"):
        odeint_checkpointed(_f, Y0, T)
    with pytest.raises(TypeError, match="params must be an iterable of tensors"):
        odeint_checkpointed(_f, Y0, T, params=[1.0])
    with pytest.raises(errors.UnsupportedFeature, match="event"):
        odeint_checkpointed(_f, Y0, T, params=(), event_fn=lambda t, y: y[0])
    register(_OneStep())
    try:
        assert torch.allclose(odeint(_f, Y0, T, method="one_step_test")[-1], torch.zeros(2, dtype=D))
        with pytest.raises(errors.UnsupportedFeature, match="'one_step_test' cannot replay its steps"):
            odeint_checkpointed(_f, Y0, T, method="one_step_test", params=())
    finally:
        del SOLVERS["one_step_test"]
