"""nodebook as a drop-in for torchdiffeq 0.2.5: the same calls through both
libraries, compared (values, and function evaluations where they must agree).

Each test asks for torchdiffeq through a fixture, so without it these tests
skip and nothing else does. docs_compat.md lists every deliberate difference
and the test that checks it.
"""

import warnings

import pytest
import torch
from torch import nn

from nodebook.adjoint import odeint_adjoint
from nodebook.solvers import SOLVERS, odeint

D = torch.float64
ROT = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=D)
Y0 = torch.tensor([1.0, -2.0], dtype=D)

# every registry entry that torchdiffeq computes too, under torchdiffeq's name
TWINS = {name: m.tableau.torchdiffeq for name, m in sorted(SOLVERS.items())
         if getattr(getattr(m, "tableau", None), "torchdiffeq", None)}
FIXED_TWINS = [m for m in TWINS if not SOLVERS[m].adaptive]
ADAPTIVE_TWINS = [m for m in TWINS if SOLVERS[m].adaptive]
# torchdiffeq 0.2.5's bosh3 fits its interpolant through a crude midpoint, so
# its values between steps (and at t[-1], which it interpolates) are off by far
# more than the tolerance: only the cost of its solves is compared
POOR_TORCHDIFFEQ_INTERPOLANT = {"bosh3"}


@pytest.fixture
def torchdiffeq():
    return pytest.importorskip("torchdiffeq")


class Counter:
    """func, counting its calls."""

    def __init__(self, f):
        self.f, self.n = f, 0

    def __call__(self, t, y):
        self.n += 1
        return self.f(t, y)


def both(tdq, func, y0, t, method, **kw):
    """(ours, theirs, our NFE, their NFE) for the same call."""
    ours, theirs = Counter(func), Counter(func)
    a = odeint(ours, y0, t, method=method, **kw)
    b = tdq.odeint(theirs, y0, t, method=tdq_name(method), **kw)
    return a, b, ours.n, theirs.n


def tdq_name(method):
    return None if method is None else TWINS[method]


def xy(t, y):
    return t + y / 5


def rotation(t, y):
    return y @ ROT.T


def max_diff(a, b):
    if isinstance(a, tuple):
        return max(max_diff(x, y) for x, y in zip(a, b))
    assert a.shape == b.shape and a.dtype == b.dtype
    return (a - b).abs().max().item()


# ---------------------------------------------------------------- fixed grid: the same numbers
GRIDS = {
    "one step per interval": dict(t=[0.0, 0.5, 1.2, 2.0], options=None),
    "step divides": dict(t=[0.0, 0.5, 1.0, 2.0], options={"step_size": 0.05}),
    "step does not divide": dict(t=[0.0, 0.25, 0.7, 1.0, 2.0], options={"step_size": 0.3}),
    "backward in time": dict(t=[2.0, 1.3, 0.0], options={"step_size": 0.3}),
    "cubic interpolation": dict(t=[0.0, 0.25, 0.7, 2.0], options={"step_size": 0.3, "interp": "cubic"}),
    "perturb": dict(t=[0.0, 0.25, 2.0], options={"step_size": 0.3, "perturb": True}),
    "perturb backward in time": dict(t=[2.0, 0.25, 0.0], options={"step_size": 0.3, "perturb": True}),
    "grid_constructor": dict(t=[0.0, 0.25, 2.0], options={
        "grid_constructor": lambda f, y0, t: torch.tensor([0.0, 0.1, 0.5, 1.7, 2.0], dtype=t.dtype)}),
}


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("method", FIXED_TWINS)
def test_fixed_grid_methods_give_torchdiffeqs_numbers(method, grid, torchdiffeq):
    spec = GRIDS[grid]
    t = torch.tensor(spec["t"], dtype=D)
    a, b, nfe_a, nfe_b = both(torchdiffeq, xy, Y0, t, method, options=spec["options"])
    assert max_diff(a, b) < 1e-13
    if grid != "cubic interpolation":  # there torchdiffeq evaluates f(t1) once per output, nodebook once per step
        assert nfe_a == nfe_b
    else:
        assert nfe_a <= nfe_b


@pytest.mark.parametrize("method", FIXED_TWINS)
def test_fixed_grid_in_float32(method, torchdiffeq):
    """The grid is built in t's dtype, as torchdiffeq builds it."""
    y0 = Y0.float()
    t = torch.tensor([0.0, 0.33, 1.0])
    a, b, nfe_a, nfe_b = both(torchdiffeq, xy, y0, t, method, options={"step_size": 0.07})
    assert max_diff(a, b) < 1e-5 and nfe_a == nfe_b


def test_rk4_is_classical_and_rk4_38_is_torchdiffeqs_rk4(torchdiffeq):
    def nonlinear(t, y):  # (on linear problems all 4-stage 4th-order methods coincide)
        return -y ** 3 + torch.sin(3 * t)

    t = torch.linspace(0.0, 2.0, 5, dtype=D)
    theirs = torchdiffeq.odeint(nonlinear, Y0, t, method="rk4", options={"step_size": 0.1})
    assert max_diff(odeint(nonlinear, Y0, t, method="rk4_38", options={"step_size": 0.1}), theirs) < 1e-13
    classical = odeint(nonlinear, Y0, t, method="rk4", options={"step_size": 0.1})
    assert 1e-8 < max_diff(classical, theirs) < 1e-2  # both fourth order, different methods


# ---------------------------------------------------------------- adaptive: the same steps, but the last
@pytest.mark.parametrize("tol", [1e-5, 1e-8])
@pytest.mark.parametrize("func", [xy, rotation, lambda t, y: -0.7 * y], ids=["xy", "rotation", "decay"])
@pytest.mark.parametrize("method", ADAPTIVE_TWINS + [None])
def test_adaptive_methods_agree_with_torchdiffeq(method, func, tol, torchdiffeq):
    t = torch.linspace(0.0, 5.0, 6, dtype=D)
    a, b, nfe_a, nfe_b = both(torchdiffeq, func, Y0, t, method, rtol=tol, atol=tol)
    # nodebook clips the last step onto t[-1], torchdiffeq steps past it: a step or two apart
    stages = SOLVERS[method or "dopri5"].tableau.stages
    assert abs(nfe_a - nfe_b) <= 2 * (stages - 1)
    if method not in POOR_TORCHDIFFEQ_INTERPOLANT:
        assert max_diff(a, b) < 50 * tol * (1 + b.abs().max().item())


@pytest.mark.parametrize("options", [{"first_step": 0.01}, {"max_step": 0.2}, {"min_step": 0.05},
                                     {"safety": 0.8, "ifactor": 5.0, "dfactor": 0.3},
                                     {"step_t": torch.tensor([1.5, 2.5], dtype=D)},
                                     {"norm": lambda x: x.abs().max()}, {"dtype": torch.float64}],
                         ids=lambda o: ",".join(o))
def test_adaptive_options_agree_with_torchdiffeq(options, torchdiffeq):
    t = torch.linspace(0.0, 5.0, 6, dtype=D)
    a, b, nfe_a, nfe_b = both(torchdiffeq, rotation, Y0, t, "dopri5", rtol=1e-7, atol=1e-7, options=options)
    assert abs(nfe_a - nfe_b) <= 2 * 6 * (1 + ("step_t" in options))
    assert max_diff(a, b) < 1e-5


# ---------------------------------------------------------------- tuple states, tensor tolerances
def pair(t, y):
    a, b = y
    return a @ ROT.T, -0.3 * b + a.sum()


TUPLE_Y0 = (Y0, torch.tensor([[0.5, 1.0]], dtype=D))


@pytest.mark.parametrize("method", FIXED_TWINS)
def test_tuple_state_fixed(method, torchdiffeq):
    t = torch.tensor([0.0, 0.25, 1.0], dtype=D)
    a, b, nfe_a, nfe_b = both(torchdiffeq, pair, TUPLE_Y0, t, method, options={"step_size": 0.1})
    assert isinstance(a, tuple) and [x.shape for x in a] == [x.shape for x in b]
    assert max_diff(a, b) < 1e-13 and nfe_a == nfe_b


@pytest.mark.parametrize("kw", [{}, {"rtol": (1e-4, 1e-9), "atol": [1e-9, torch.tensor([1e-9, 1e-6])]},
                                {"options": {"norm": lambda ys: max(y.abs().max() for y in ys)}}],
                         ids=["mixed norm", "per-tensor tolerances", "user norm on tuples"])
def test_tuple_state_adaptive(kw, torchdiffeq):
    kw = {"rtol": 1e-6, "atol": 1e-8, **kw}
    t = torch.linspace(0.0, 3.0, 4, dtype=D)
    a, b, nfe_a, nfe_b = both(torchdiffeq, pair, TUPLE_Y0, t, "dopri5", **kw)
    assert [x.shape for x in a] == [(4, 2), (4, 1, 2)]
    assert abs(nfe_a - nfe_b) <= 12 and max_diff(a, b) < 1e-4


@pytest.mark.parametrize("rtol, atol", [(torch.tensor(1e-6, dtype=D), torch.tensor(1e-8, dtype=D)),
                                        (torch.tensor([1e-4, 1e-9], dtype=D), 1e-9)],
                         ids=["0-d tensors", "per element"])
def test_tensor_tolerances(rtol, atol, torchdiffeq):
    y0 = torch.stack([Y0, 2 * Y0])  # (2, 2): per-element tolerances broadcast over the rows
    t = torch.linspace(0.0, 4.0, 5, dtype=D)
    a, b, nfe_a, nfe_b = both(torchdiffeq, rotation, y0, t, "dopri5", rtol=rtol, atol=atol)
    assert abs(nfe_a - nfe_b) <= 12 and max_diff(a, b) < 1e-3


# ---------------------------------------------------------------- options that either library does not know
def test_unknown_options_warn_in_both(torchdiffeq):
    for lib in (odeint, torchdiffeq.odeint):
        with pytest.warns(UserWarning, match="(?i)unknown|unexpected"):
            ys = lib(xy, Y0, torch.tensor([0.0, 1.0], dtype=D), method="rk4", options={"stepsize": 0.1})
        assert ys.shape == (2, 2)


def test_fixed_methods_ignore_norm_silently(torchdiffeq):
    for lib in (odeint, torchdiffeq.odeint):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            lib(xy, Y0, torch.tensor([0.0, 1.0], dtype=D), method="euler", options={"norm": max})


# ---------------------------------------------------------------- adjoint
class MLP(nn.Module):
    def __init__(self, seed=0, time_dependent=False):
        super().__init__()
        torch.manual_seed(seed)
        self.time_dependent = time_dependent
        self.net = nn.Sequential(nn.Linear(3 if time_dependent else 2, 16), nn.Tanh(), nn.Linear(16, 2)).double()

    def forward(self, t, z):
        if self.time_dependent:
            z = torch.cat([z, t.expand(*z.shape[:-1], 1)], -1)
        return self.net(z)


def test_adjoint_options_inference_raises_in_both(torchdiffeq):
    for lib in (odeint_adjoint, torchdiffeq.odeint_adjoint):
        with pytest.raises(ValueError, match="cannot infer|cannot be inferred"):
            lib(MLP(), Y0, torch.tensor([0.0, 1.0], dtype=D), method="dopri5", options={"first_step": 0.1},
                adjoint_method="rk4")


@pytest.mark.parametrize("time_dependent", [False, True], ids=["f(z)", "f(t, z)"])
@pytest.mark.parametrize("t_grad", [False, True], ids=["t constant", "dL/dt"])
@pytest.mark.parametrize("norm", ["default", "seminorm"])
def test_adjoint_gradients_agree_with_torchdiffeq(norm, t_grad, time_dependent, torchdiffeq):
    grads, nfes = [], []
    for lib in (odeint_adjoint, torchdiffeq.odeint_adjoint):
        func = MLP(time_dependent=time_dependent)
        calls = []
        func.register_forward_hook(lambda *a: calls.append(1))
        torch.manual_seed(1)
        y0 = torch.randn(3, 2, dtype=D, requires_grad=True)
        t = torch.tensor([0.0, 0.5, 1.5], dtype=D, requires_grad=t_grad)
        ys = lib(func, y0, t, rtol=1e-9, atol=1e-9, adjoint_options=None if norm == "default" else {"norm": norm})
        (ys ** 2).sum().backward()
        grads.append([y0.grad, *(p.grad for p in func.parameters())] + ([t.grad] if t_grad else []))
        nfes.append(len(calls))
    for a, b in zip(*grads):
        assert ((a - b).norm() / b.norm()).item() < 1e-6
    if time_dependent and not t_grad:
        # torchdiffeq integrates (and error-controls) dL/dt even here; nodebook does not
        assert nfes[0] <= nfes[1]
    else:  # the same backward system and norm: apart only by the clipped last steps
        assert abs(nfes[0] - nfes[1]) <= 0.15 * nfes[1]


@pytest.mark.parametrize("method, options", [("dopri5", None), ("rk4_38", {"step_size": 0.1})])
def test_adjoint_tuple_state_agrees_with_torchdiffeq(method, options, torchdiffeq):
    W = torch.tensor([[0.3, -1.0], [1.0, 0.2]], dtype=D, requires_grad=True)

    def f(t, y):
        a, b = y
        return torch.tanh(a @ W) * b, -b * a.sum(-1, keepdim=True)

    grads = []
    for lib in (odeint_adjoint, torchdiffeq.odeint_adjoint):
        a0 = torch.tensor([[1.0, -0.5], [0.2, 0.3]], dtype=D, requires_grad=True)
        b0 = torch.tensor([[0.7], [-0.4]], dtype=D, requires_grad=True)
        a, b = lib(f, (a0, b0), torch.tensor([0.0, 0.6, 1.0], dtype=D), rtol=1e-10, atol=1e-10,
                   method=tdq_name(method) if lib is not odeint_adjoint else method, options=options,
                   adjoint_params=(W,))
        grads.append(torch.autograd.grad((a ** 2).sum() + b.sum(), [a0, b0, W]))
    for x, y in zip(*grads):
        assert ((x - y).norm() / y.norm()).item() < 1e-7


def test_output_times_are_constants_in_odeint(torchdiffeq):
    """torchdiffeq backpropagates into t through its time arithmetic; nodebook's
    odeint treats t as constant (odeint_adjoint gives dL/dt)."""
    t = torch.tensor([0.0, 1.0], dtype=D, requires_grad=True)
    assert torchdiffeq.odeint(xy, Y0, t)[-1].sum().requires_grad
    assert not odeint(xy, Y0, t)[-1].sum().requires_grad
    func = MLP()
    (g_t,) = torch.autograd.grad(odeint_adjoint(func, Y0, t)[-1].sum(), [t])
    (g_ref,) = torch.autograd.grad(torchdiffeq.odeint_adjoint(func, Y0, t)[-1].sum(), [t])
    assert ((g_t - g_ref).norm() / g_ref.norm()).item() < 1e-5
