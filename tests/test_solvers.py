"""odeint: exact solutions, orders of convergence, dense output, backward time,
agreement with torchdiffeq, gradients by backpropagation through the solver."""

import math
from fractions import Fraction as F

import numpy as np
import pytest
import torch

from nodebook.solvers import SOLVERS, odeint, record_stats
from nodebook.solvers import tableaus
from nodebook.solvers.adaptive import _coefficients, rms_norm
from nodebook.solvers.fixed import rk_step
from nodebook.solvers.interp import interpolate
from nodebook.solvers.rhs import RHS
from nodebook.solvers.tableaus import ButcherTableau

torchdiffeq = pytest.importorskip("torchdiffeq")

D = torch.float64
ROT = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=D)
Y0 = torch.tensor([1.0, -2.0], dtype=D)


def _exact_xy(t, y0):
    return -5 * t[:, None] - 25 + (y0 + 25) * torch.exp(t / 5)[:, None]


# name -> (func, exact(t, y0))
PROBLEMS = {
    "decay": (lambda t, y: -0.7 * y, lambda t, y0: y0 * torch.exp(-0.7 * t)[:, None]),
    "rotation": (lambda t, y: y @ ROT.T,
                 lambda t, y0: torch.stack([y0[0] * torch.cos(t) + y0[1] * torch.sin(t),
                                            -y0[0] * torch.sin(t) + y0[1] * torch.cos(t)], 1)),
    "polynomial": (lambda t, y: t * torch.ones_like(y), lambda t, y0: y0 + (t ** 2 / 2)[:, None]),
    "x_plus_y_over_5": (lambda t, y: t + y / 5, _exact_xy),
}
ADAPTIVE = ["bosh3", "dopri5"]
FIXED = ["euler", "midpoint", "rk4"]
ORDER = {"euler": 1, "midpoint": 2, "rk4": 4, "bosh3": 3, "dopri5": 5}


def max_err(ys, t, name):
    return (ys - PROBLEMS[name][1](t, Y0)).abs().max().item()


class Counter:
    def __init__(self, f):
        self.f, self.n = f, 0

    def __call__(self, t, y):
        self.n += 1
        return self.f(t, y)


# ---------------------------------------------------------------- tableaus
@pytest.mark.parametrize("tab", tableaus.ALL, ids=lambda t: t.name)
def test_tableau_is_registered_and_cited(tab):
    assert SOLVERS[tab.name].tableau is tab
    assert tab.citation and tab.order == ORDER[tab.name]


@pytest.mark.parametrize("change, match", [
    (dict(a=((), (F(1, 3),))), "row 1 of A"),
    (dict(b=(F(1, 3), F(1, 3))), "b sums"),
    (dict(b_low=(F(1, 3), F(1, 3)), embedded_order=1), "error weights"),
])
def test_broken_tableau_is_refused(change, match):
    good = dict(name="x", citation="-", c=(F(0), F(1, 2)), a=((), (F(1, 2),)),
                b=(F(0), F(1)), order=2)
    ButcherTableau(**good)
    with pytest.raises(ValueError, match=match):
        ButcherTableau(**{**good, **change})


# ---------------------------------------------------------------- exact solutions
@pytest.mark.parametrize("name", PROBLEMS)
@pytest.mark.parametrize("method", ADAPTIVE)
def test_adaptive_matches_exact_solution(name, method):
    t = torch.linspace(0.0, 4.0, 9, dtype=D)
    ys = odeint(PROBLEMS[name][0], Y0, t, rtol=1e-9, atol=1e-9, method=method)
    assert ys.shape == (9, 2) and ys.dtype == D
    assert torch.equal(ys[0], Y0)
    assert max_err(ys, t, name) < (1e-6 if method == "bosh3" else 1e-7)


@pytest.mark.parametrize("name", PROBLEMS)
@pytest.mark.parametrize("method", FIXED)
def test_fixed_matches_exact_solution(name, method):
    t = torch.linspace(0.0, 2.0, 5, dtype=D)
    ys = odeint(PROBLEMS[name][0], Y0, t, method=method, options={"step_size": 1e-3})
    assert max_err(ys, t, name) < {"euler": 5e-2, "midpoint": 1e-5, "rk4": 1e-11}[method]


def test_dopri5_error_shrinks_with_tolerance():
    t = torch.tensor([0.0, 6.0], dtype=D)
    errs, nfes = [], []
    for tol in [1e-3, 1e-5, 1e-7, 1e-9, 1e-11]:
        with record_stats() as log:
            ys = odeint(PROBLEMS["rotation"][0], Y0, t, rtol=tol, atol=tol)
        errs.append(max_err(ys, t, "rotation"))
        nfes.append(log.nfe)
    assert all(e2 < e1 for e1, e2 in zip(errs, errs[1:])), errs
    assert all(n2 > n1 for n1, n2 in zip(nfes, nfes[1:])), nfes
    assert errs[-1] < 1e-9


@pytest.mark.parametrize("method", ["euler", "rk4", "dopri5"])
def test_any_state_shape(method):
    y0 = torch.rand(2, 3, 4, dtype=D)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=D)
    ys = odeint(lambda t, y: -y, y0, t, method=method, options={"step_size": 0.01} if method != "dopri5" else None)
    assert ys.shape == (3, 2, 3, 4)
    scalar = odeint(lambda t, y: -y, torch.tensor(1.0, dtype=D), t, method=method)
    assert scalar.shape == (3,)
    assert abs(scalar[-1].item() - math.exp(-1)) < (1e-7 if method == "dopri5" else 0.5)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 2e-3), (torch.bfloat16, 3e-2), (torch.float16, 3e-3)])
def test_low_precision_state(dtype, tol):
    y0 = torch.tensor([1.0, 2.0], dtype=dtype)
    ys = odeint(lambda t, y: -y, y0, torch.tensor([0.0, 1.0]), rtol=1e-3, atol=1e-4)
    assert ys.dtype == dtype
    expected = torch.tensor([1.0, 2.0]) * math.exp(-1)
    assert torch.allclose(ys[-1].float(), expected, rtol=tol, atol=tol)


# ---------------------------------------------------------------- orders
def fitted_order(method_or_tab, hs, t1=1.0):
    """Slope of log(error at t1) against log(h) for dy/dx = x + y/5 with steps h."""
    func = PROBLEMS["x_plus_y_over_5"][0]
    exact = _exact_xy(torch.tensor([t1], dtype=D), Y0)[0]
    errs = []
    for h in hs:
        if isinstance(method_or_tab, str):
            y = odeint(func, Y0, torch.tensor([0.0, t1], dtype=D), method=method_or_tab,
                       options={"step_size": h})[-1]
        else:  # step a tableau (incl. adaptive ones) with a fixed step
            rhs, y, t = RHS(func, Y0), Y0, 0.0
            for _ in range(round(t1 / h)):
                y = rk_step(rhs, method_or_tab, t, y, h)
                t += h
        errs.append((y - exact).abs().max().item())
    return np.polyfit(np.log(hs), np.log(errs), 1)[0]


@pytest.mark.parametrize("method", FIXED)
def test_fixed_order_of_convergence(method):
    hs = [0.1, 0.05, 0.025, 0.0125] if method != "euler" else [0.02, 0.01, 0.005, 0.0025]
    assert abs(fitted_order(method, hs) - ORDER[method]) < 0.3


@pytest.mark.parametrize("tab", [tableaus.BOSH3, tableaus.DOPRI5], ids=lambda t: t.name)
def test_adaptive_tableau_order_of_convergence(tab):
    hs = [0.5, 0.25, 0.125, 0.0625] if tab.order == 5 else [0.2, 0.1, 0.05, 0.025]
    assert abs(fitted_order(tab, hs, t1=2.0) - tab.order) < 0.3


@pytest.mark.parametrize("tab", [tableaus.BOSH3, tableaus.DOPRI5], ids=lambda t: t.name)
def test_dense_output_local_order(tab):
    """The continuous extension is accurate to order 3 (bosh3) / 4 (dopri5):
    its local error inside one step shrinks like h^(p+1)."""
    func = PROBLEMS["x_plus_y_over_5"][0]
    p = 3 if tab.name == "bosh3" else 4
    hs, errs = [0.8, 0.4, 0.2, 0.1], []
    A, _, _ = _coefficients(tab, D, torch.device("cpu"))
    for h in hs:
        rhs = RHS(func, Y0)
        ks = [rhs(0.0, Y0)]
        for i in range(1, tab.stages):
            yi = torch.addmv(Y0, torch.stack(ks, 1), A[i], alpha=h)
            ks.append(rhs(tab.c_float[i] * h, yi))
        theta = 0.37
        y_mid = interpolate(Y0, torch.stack(ks, 1), h, tab.dense_float, theta)
        exact = _exact_xy(torch.tensor([theta * h], dtype=D), Y0)[0]
        errs.append((y_mid - exact).abs().max().item())
    assert abs(np.polyfit(np.log(hs), np.log(errs), 1)[0] - (p + 1)) < 0.3


# ---------------------------------------------------------------- time handling
@pytest.mark.parametrize("method", FIXED + ADAPTIVE)
def test_backward_in_time(method):
    t = torch.linspace(3.0, 0.0, 4, dtype=D)
    func, exact = PROBLEMS["x_plus_y_over_5"]
    y3 = exact(torch.tensor([3.0], dtype=D), Y0)[0]
    ys = odeint(func, y3, t, rtol=1e-9, atol=1e-9, method=method,
                options={"step_size": 1e-3} if method in FIXED else None)
    tol = {"euler": 1e-2, "midpoint": 1e-5}.get(method, 1e-6)
    assert (ys - exact(t, Y0)).abs().max().item() < tol


@pytest.mark.parametrize("method", ADAPTIVE)
def test_dense_output_does_not_shorten_steps(method):
    func = PROBLEMS["rotation"][0]
    ends = torch.tensor([0.0, 10.0], dtype=D)
    many = torch.linspace(0.0, 10.0, 401, dtype=D)
    with record_stats() as log:
        odeint(func, Y0, ends, rtol=1e-8, atol=1e-8, method=method)
        ys = odeint(func, Y0, many, rtol=1e-8, atol=1e-8, method=method)
    coarse, fine = log.solves
    assert (fine.nfe, fine.n_accepted, fine.n_rejected) == (coarse.nfe, coarse.n_accepted, coarse.n_rejected)
    assert max_err(ys, many, "rotation") < (1e-5 if method == "bosh3" else 1e-6)


def test_fixed_step_size_steps_exactly_to_requested_times():
    t = torch.tensor([0.0, 0.25, 1.0], dtype=D)
    with record_stats() as log:
        ys = odeint(lambda t, y: -y, Y0, t, method="euler", options={"step_size": 0.1})
    # ceil(0.25/0.1) + ceil(0.75/0.1) = 3 + 8 steps
    assert log.solves[0].n_accepted == 11
    assert torch.allclose(ys[1], Y0 * (1 - 0.25 / 3) ** 3)


# ---------------------------------------------------------------- options
def test_options_custom_norm_first_step_and_pi_controller():
    func = PROBLEMS["rotation"][0]
    t = torch.tensor([0.0, 5.0], dtype=D)
    calls = []

    def linf(x):
        calls.append(x.shape)
        return x.abs().max()

    for options in [{"norm": linf}, {"first_step": 1e-3}, {"pcoeff": 0.3, "icoeff": 0.4},
                    {"safety": 0.8, "ifactor": 5.0, "dfactor": 0.3}]:
        ys = odeint(func, Y0, t, rtol=1e-8, atol=1e-8, options=options)
        assert max_err(ys, t, "rotation") < 1e-6, options
    assert calls and calls[0] == Y0.shape


def test_rms_norm_is_float32_for_half_inputs():
    x = torch.full((10_000,), 300.0, dtype=torch.float16)  # sum of squares overflows fp16
    assert rms_norm(x).dtype == torch.float32
    assert abs(rms_norm(x).item() - 300.0) < 1e-3


# ---------------------------------------------------------------- torchdiffeq
@pytest.mark.parametrize("name", ["decay", "rotation", "x_plus_y_over_5"])
@pytest.mark.parametrize("tol", [1e-5, 1e-8])
def test_dopri5_agrees_with_torchdiffeq(name, tol):
    func = PROBLEMS[name][0]
    t = torch.linspace(0.0, 5.0, 6, dtype=D)
    ours, theirs = Counter(func), Counter(func)
    a = odeint(ours, Y0, t, rtol=tol, atol=tol)
    b = torchdiffeq.odeint(theirs, Y0, t, rtol=tol, atol=tol, method="dopri5")
    scale = 1 + b.abs().max().item()
    assert (a - b).abs().max().item() < 50 * tol * scale
    assert abs(ours.n - theirs.n) <= 0.1 * theirs.n


@pytest.mark.parametrize("name", ["decay", "rotation", "x_plus_y_over_5"])
def test_bosh3_nfe_agrees_with_torchdiffeq(name):
    """torchdiffeq 0.2.5's bosh3 interpolation is inaccurate between steps,
    so only the cost is compared; accuracy is checked against exact solutions."""
    func = PROBLEMS[name][0]
    t = torch.tensor([0.0, 5.0], dtype=D)
    ours, theirs = Counter(func), Counter(func)
    odeint(ours, Y0, t, rtol=1e-6, atol=1e-6, method="bosh3")
    torchdiffeq.odeint(theirs, Y0, t, rtol=1e-6, atol=1e-6, method="bosh3")
    assert abs(ours.n - theirs.n) <= 0.1 * theirs.n


@pytest.mark.parametrize("method", FIXED)
def test_fixed_agrees_with_torchdiffeq(method):
    func = PROBLEMS["x_plus_y_over_5"][0]
    t = torch.linspace(0.0, 2.0, 5, dtype=D)
    ours, theirs = Counter(func), Counter(func)
    a = odeint(ours, Y0, t, method=method, options={"step_size": 0.05})
    b = torchdiffeq.odeint(theirs, Y0, t, method=method, options={"step_size": 0.05})
    assert ours.n == theirs.n
    # torchdiffeq's rk4 is Kutta's 3/8 rule; ours is the classical method.
    assert (a - b).abs().max().item() < (1e-6 if method == "rk4" else 1e-10)


# ---------------------------------------------------------------- gradients
@pytest.mark.parametrize("method, options", [("dopri5", None), ("bosh3", None),
                                             ("rk4", {"step_size": 0.1}), ("midpoint", None)])
def test_gradcheck_through_odeint(method, options):
    torch.manual_seed(0)
    W = torch.randn(3, 3, dtype=D, requires_grad=True)
    y0 = torch.randn(2, 3, dtype=D, requires_grad=True)
    t = torch.tensor([0.0, 0.4, 1.0], dtype=D)

    def f(y0, W):
        tol = 1e-8 if method == "bosh3" else 1e-10
        return odeint(lambda t, y: torch.tanh(y @ W) + t, y0, t, rtol=tol, atol=tol,
                      method=method, options=options)

    assert torch.autograd.gradcheck(f, (y0, W))


@pytest.mark.parametrize("method", ADAPTIVE)
def test_step_t_makes_steps_land_on_a_kink(method):
    calls = []

    def kinked(t, y):  # dy/dt = |t - 0.5|: exact y = y0 + integral
        calls.append(float(t))
        return torch.abs(t - 0.5) * torch.ones_like(y)

    t = torch.tensor([0.0, 1.0], dtype=D)
    exact = Y0 + 0.25
    with record_stats() as log:
        plain = odeint(kinked, Y0, t, rtol=1e-8, atol=1e-8, method=method)
        calls.clear()
        kink = odeint(kinked, Y0, t, rtol=1e-8, atol=1e-8, method=method, options={"step_t": [0.5, 7.0]})
    assert 0.5 in calls
    assert (kink[-1] - exact).abs().max() < 1e-12
    assert log.solves[1].nfe < log.solves[0].nfe
    assert (plain[-1] - exact).abs().max() < 1e-6
