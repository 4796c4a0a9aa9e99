"""odeint_adjoint: gradients (y0, parameters, t) against backpropagation
through the solver, finite differences and torchdiffeq; O(1) memory; seminorm;
tuple states and the backward solve's norm."""

import pytest
import torch
from torch import nn

from nodebook.adjoint import odeint_adjoint
from nodebook.memory import saved_tensor_bytes
from nodebook.solvers import odeint, record_stats
from nodebook.models.mlp import TimeMLP

D = torch.float64
TIGHT = dict(rtol=1e-11, atol=1e-11)


def MLP(dim=2, width=16, seed=0):
    """A small time-dependent MLP ODE (float64): dz/dt = W2 tanh(W1 [z, t] + b1) + b2."""
    torch.manual_seed(seed)
    return TimeMLP(dim, width).double()


def loss_fn(ys):
    """Depends on several time points, not only the last."""
    return (ys[1:] ** 2).sum() + torch.sin(ys[1]).sum() - ys[-1, :, 0].sum()


def grads(solver, func, y0, t, **kw):
    inputs = [y0, t, *func.parameters()]
    out = torch.autograd.grad(loss_fn(solver(func, y0, t, **kw)), inputs, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, out)]


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture
def torchdiffeq():
    """The reference implementation; only the comparisons skip without it."""
    return pytest.importorskip("torchdiffeq")


@pytest.fixture
def problem():
    func = MLP()
    torch.manual_seed(1)
    y0 = torch.randn(3, 2, dtype=D, requires_grad=True)
    t = torch.tensor([0.0, 0.4, 1.1, 1.5], dtype=D, requires_grad=True)
    return func, y0, t


def test_gradcheck_odeint_adjoint():
    torch.manual_seed(0)
    W = torch.randn(2, 2, dtype=D, requires_grad=True)
    y0 = torch.randn(3, 2, dtype=D, requires_grad=True)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=D, requires_grad=True)

    def f(y0, t, W):
        return odeint_adjoint(lambda s, y: torch.tanh(y @ W) * (1 + s), y0, t,
                              adjoint_params=(W,), **TIGHT)

    assert torch.autograd.gradcheck(f, (y0, t, W))


def test_adjoint_matches_backprop_and_finite_differences(problem):
    func, y0, t = problem
    g_adj = grads(odeint_adjoint, func, y0, t, **TIGHT)
    g_bp = grads(odeint, func, y0, t, **TIGHT)
    for a, b in zip(g_adj[:1] + g_adj[2:], g_bp[:1] + g_bp[2:]):  # odeint treats t as constant
        assert rel_err(a, b) < 1e-6
    # central differences along a random direction in (y0, parameters)
    params = [y0, *func.parameters()]
    torch.manual_seed(2)
    v = [torch.randn_like(p) for p in params]
    eps = 1e-4

    def loss_at(s):
        with torch.no_grad():
            for p, vi in zip(params, v):
                p.add_(s * vi)
            value = loss_fn(odeint(func, y0, t, **TIGHT)).item()
            for p, vi in zip(params, v):
                p.sub_(s * vi)
        return value

    fd = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
    directional = sum((g * vi).sum() for g, vi in zip(g_adj[:1] + g_adj[2:], v)).item()
    assert abs(fd - directional) < 1e-6 * abs(directional)


def test_gradient_wrt_t(problem, torchdiffeq):
    func, y0, t = problem
    g_t = grads(odeint_adjoint, func, y0, t, **TIGHT)[1]
    theirs = grads(torchdiffeq.odeint_adjoint, func, y0, t, **TIGHT)[1]
    assert rel_err(g_t, theirs) < 1e-6
    eps = 1e-5
    for i in range(len(t)):
        dt = torch.zeros_like(t)
        dt[i] = eps
        with torch.no_grad():
            fd = (loss_fn(odeint(func, y0, t + dt, **TIGHT)) - loss_fn(odeint(func, y0, t - dt, **TIGHT))) / (2 * eps)
        assert abs(fd.item() - g_t[i].item()) < 1e-6 * g_t.abs().max().item()


def test_backward_in_time_t(problem, torchdiffeq):
    func, y0, _ = problem
    t = torch.tensor([1.5, 0.9, 0.0], dtype=D, requires_grad=True)
    g_adj = grads(odeint_adjoint, func, y0, t, **TIGHT)
    g_bp = grads(odeint, func, y0, t, **TIGHT)
    theirs = grads(torchdiffeq.odeint_adjoint, func, y0, t, **TIGHT)
    assert rel_err(g_adj[0], g_bp[0]) < 1e-6
    assert rel_err(g_adj[2], g_bp[2]) < 1e-6
    assert rel_err(g_adj[1], theirs[1]) < 1e-6


def test_adjoint_params_with_plain_callable_and_unused_parameter():
    torch.manual_seed(0)
    W = torch.randn(2, 2, dtype=D, requires_grad=True)
    unused = torch.randn(3, dtype=D, requires_grad=True)
    y0 = torch.randn(2, dtype=D, requires_grad=True)
    t = torch.tensor([0.0, 1.0], dtype=D)
    ys = odeint_adjoint(lambda s, y: torch.tanh(W @ y), y0, t, adjoint_params=[W, unused], **TIGHT)
    gW, gu, gy = torch.autograd.grad(ys[-1].sum(), [W, unused, y0])
    ys_bp = odeint(lambda s, y: torch.tanh(W @ y), y0, t, **TIGHT)
    gW_bp, gy_bp = torch.autograd.grad(ys_bp[-1].sum(), [W, y0])
    assert rel_err(gW, gW_bp) < 1e-7 and rel_err(gy, gy_bp) < 1e-7
    assert torch.equal(gu, torch.zeros_like(unused))


def test_fixed_step_and_mixed_methods(problem):
    func, y0, t = problem
    g_ref = grads(odeint, func, y0, t, **TIGHT)
    rk4 = dict(method="rk4", options={"step_size": 0.01})
    g_rk4 = grads(odeint_adjoint, func, y0, t, **rk4)
    assert rel_err(g_rk4[0], g_ref[0]) < 1e-7
    g_mixed = grads(odeint_adjoint, func, y0, t, **TIGHT, adjoint_method="rk4",
                    adjoint_options={"step_size": 0.01})
    assert rel_err(g_mixed[2], g_ref[2]) < 1e-7


def test_float32_adjoint_runs(problem):
    func, _, _ = problem
    func = func.float()
    y0 = torch.randn(4, 2, requires_grad=True)
    t = torch.tensor([0.0, 1.0])
    ys = odeint_adjoint(func, y0, t, rtol=1e-5, atol=1e-6)
    ys[-1].sum().backward()
    assert y0.grad.dtype == torch.float32 and torch.isfinite(y0.grad).all()
    assert all(p.grad.dtype == torch.float32 for p in func.parameters())


def test_saved_memory_is_flat_for_adjoint_and_linear_for_backprop():
    func = MLP(width=32).float()
    y0 = torch.randn(16, 2, requires_grad=True)
    t = torch.tensor([0.0, 1.0])
    adj, bp = [], []
    for n in [10, 100, 1000]:
        opts = dict(method="rk4", options={"step_size": 1.0 / n})
        adj.append(saved_tensor_bytes(lambda: odeint_adjoint(func, y0, t, **opts)))
        bp.append(saved_tensor_bytes(lambda: odeint(func, y0, t, **opts)))
    assert adj[0] == adj[1] == adj[2] > 0
    assert 9 < bp[1] / bp[0] < 11 and 9 < bp[2] / bp[1] < 11


def test_seminorm_saves_backward_evaluations():
    torch.manual_seed(0)
    func = nn.Sequential(nn.Linear(2, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 2)).double()

    def f(t, z):
        return func(z)

    y0 = torch.randn(8, 2, dtype=D, requires_grad=True)
    t = torch.tensor([0.0, 2.0], dtype=D)
    out = {}
    for norm in ["mixed", "seminorm"]:
        with record_stats() as log:
            ys = odeint_adjoint(f, y0, t, rtol=1e-6, atol=1e-8, adjoint_params=func.parameters(),
                                adjoint_options={"norm": norm})
            g = torch.autograd.grad((ys[-1] ** 2).sum(), [y0, *func.parameters()])
        out[norm] = (log.nfe_backward, g)
    assert out["seminorm"][0] < out["mixed"][0]  # here 26 against 38 evaluations
    for a, b in zip(out["seminorm"][1], out["mixed"][1]):
        assert rel_err(a, b) < 1e-4


def test_tuple_state_gradients_match_backprop():
    torch.manual_seed(0)
    W = torch.randn(2, 2, dtype=D, requires_grad=True)
    a0 = torch.randn(3, 2, dtype=D, requires_grad=True)
    b0 = torch.randn(3, dtype=D, requires_grad=True)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=D, requires_grad=True)

    def f(s, y):
        a, b = y
        return torch.tanh(a @ W) * b[:, None], -b * a.sum(-1) * (1 + s)

    def loss(solver):
        a, b = solver(f, (a0, b0), t, **TIGHT, **({"adjoint_params": (W,)} if solver is odeint_adjoint else {}))
        assert a.shape == (3, 3, 2) and b.shape == (3, 3)
        return (a[1:] ** 2).sum() + b[-1].sum()

    g_adj = torch.autograd.grad(loss(odeint_adjoint), [a0, b0, W, t])
    g_bp = torch.autograd.grad(loss(odeint), [a0, b0, W])
    for x, y in zip(g_adj, g_bp):
        assert rel_err(x, y) < 1e-7
    assert torch.isfinite(g_adj[3]).all() and g_adj[3].abs().sum() > 0


def test_custom_adjoint_norm_sees_torchdiffeqs_tuple():
    func = MLP()
    y0 = torch.randn(3, 2, dtype=D, requires_grad=True)
    seen = []

    def norm(parts):
        seen.append(tuple(p.shape for p in parts))
        return max(p.abs().max() for p in parts if p.numel())

    ys = odeint_adjoint(func, y0, torch.tensor([0.0, 1.0], dtype=D), adjoint_options={"norm": norm})
    ys[-1].sum().backward()
    # (dL/dt, z, a, *parameter gradients), as torchdiffeq passes them
    assert seen[0] == ((), (3, 2), (3, 2), *(p.shape for p in func.parameters()))
    assert torch.isfinite(y0.grad).all()


def test_forward_norm_is_reused_on_z_and_a_by_default():
    func = MLP()
    y0 = torch.randn(3, 2, dtype=D, requires_grad=True)
    shapes = []

    def linf(x):
        shapes.append(tuple(x.shape))
        return x.abs().max()

    ys = odeint_adjoint(func, y0, torch.tensor([0.0, 1.0], dtype=D), options={"norm": linf})
    forward_calls = len(shapes)
    ys[-1].sum().backward()
    assert len(shapes) > forward_calls and set(shapes) == {(3, 2)}
