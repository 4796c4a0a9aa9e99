"""odeint: exact solutions, orders of convergence, dense output, backward time,
the fixed-step grid, options, gradients by backpropagation through the solver.

Every test of a method runs over the whole registry, so a new tableau gets
them without edits. Comparisons with torchdiffeq: tests/test_torchdiffeq_compat.py.
"""

import math
from fractions import Fraction as F

import numpy as np
import pytest
import torch

from nodebook.solvers import SOLVERS, Method, odeint, record_stats, register
from nodebook.solvers import tableaus
from nodebook.solvers.adaptive import rms_norm
from nodebook.solvers.fixed import rk_step
from nodebook.solvers.interp import interpolate
from nodebook.solvers.rhs import RHS
from nodebook.solvers.tableaus import ButcherTableau

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
METHODS = sorted(SOLVERS)
ADAPTIVE = [m for m in METHODS if SOLVERS[m].adaptive]
FIXED = [m for m in METHODS if not SOLVERS[m].adaptive]
TABLEAUS = [m for m in METHODS if hasattr(SOLVERS[m], "tableau")]
DENSE = [m for m in TABLEAUS if SOLVERS[m].tableau.dense is not None]
# orders from the literature, as a check on the declared ones
KNOWN_ORDER = {"euler": 1, "midpoint": 2, "rk4": 4, "rk4_38": 4, "bosh3": 3, "dopri5": 5}


def max_err(ys, t, name):
    return (ys - PROBLEMS[name][1](t, Y0)).abs().max().item()


def fixed_tolerance(method, h):
    """What a method of order p reaches with steps h on the problems above."""
    return max(50 * h ** SOLVERS[method].order, 1e-11)


# ---------------------------------------------------------------- tableaus
@pytest.mark.parametrize("tab", tableaus.ALL, ids=lambda t: t.name)
def test_tableau_is_registered_and_cited(tab):
    assert SOLVERS[tab.name].tableau is tab
    assert SOLVERS[tab.name].adaptive == tab.adaptive
    assert tab.citation and tab.order == KNOWN_ORDER.get(tab.name, tab.order)


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


def test_float_coefficients_are_derived_and_cached_by_the_tableau():
    tab = tableaus.DOPRI5
    assert tab.e_float == tuple(float(b - bl) for b, bl in zip(tab.b, tab.b_low))
    assert tab.c_float is tab.c_float  # computed once
    rows, b, e = tab.coefficients(D, "cpu")
    assert tab.coefficients(D, torch.device("cpu"))[2] is e
    assert tab.coefficients(torch.float32, "cpu")[2].dtype == torch.float32
    assert torch.equal(b, torch.tensor(tab.b_float, dtype=D)) and rows[0] is None
    assert tableaus.RK4.e is None and tableaus.RK4.coefficients(D, "cpu")[2] is None


def test_rk4_is_classical_and_rk4_38_is_the_three_eighths_rule():
    assert tableaus.RK4.b == (F(1, 6), F(1, 3), F(1, 3), F(1, 6))
    assert tableaus.RK4_38.b == (F(1, 8), F(3, 8), F(3, 8), F(1, 8))
    assert tableaus.RK4.torchdiffeq is None and tableaus.RK4_38.torchdiffeq == "rk4"


# ---------------------------------------------------------------- exact solutions
@pytest.mark.parametrize("name", PROBLEMS)
@pytest.mark.parametrize("method", ADAPTIVE)
def test_adaptive_matches_exact_solution(name, method):
    t = torch.linspace(0.0, 4.0, 9, dtype=D)
    ys = odeint(PROBLEMS[name][0], Y0, t, rtol=1e-9, atol=1e-9, method=method)
    assert ys.shape == (9, 2) and ys.dtype == D
    assert torch.equal(ys[0], Y0)
    assert max_err(ys, t, name) < (1e-6 if SOLVERS[method].order < 5 else 1e-7)


@pytest.mark.parametrize("name", PROBLEMS)
@pytest.mark.parametrize("method", FIXED)
def test_fixed_matches_exact_solution(name, method):
    t = torch.linspace(0.0, 2.0, 5, dtype=D)
    ys = odeint(PROBLEMS[name][0], Y0, t, method=method, options={"step_size": 1e-3})
    assert max_err(ys, t, name) < fixed_tolerance(method, 1e-3)


def test_method_none_is_dopri5():
    t = torch.linspace(0.0, 2.0, 5, dtype=D)
    with record_stats() as log:
        a = odeint(PROBLEMS["rotation"][0], Y0, t, method=None)
        b = odeint(PROBLEMS["rotation"][0], Y0, t, method="dopri5")
    assert torch.equal(a, b) and log.solves[0].method == "dopri5"


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


@pytest.mark.parametrize("method", METHODS)
def test_any_state_shape(method):
    y0 = torch.rand(2, 3, 4, dtype=D)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=D)
    options = {"step_size": 0.01} if method in FIXED else None
    ys = odeint(lambda t, y: -y, y0, t, method=method, options=options)
    assert ys.shape == (3, 2, 3, 4)
    scalar = odeint(lambda t, y: -y, torch.tensor(1.0, dtype=D), t, method=method)
    assert scalar.shape == (3,)
    assert abs(scalar[-1].item() - math.exp(-1)) < (1e-6 if method in ADAPTIVE else 0.5)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 2e-3), (torch.bfloat16, 3e-2), (torch.float16, 3e-3)])
def test_low_precision_state(dtype, tol):
    y0 = torch.tensor([1.0, 2.0], dtype=dtype)
    ys = odeint(lambda t, y: -y, y0, torch.tensor([0.0, 1.0]), rtol=1e-3, atol=1e-4)
    assert ys.dtype == dtype
    expected = torch.tensor([1.0, 2.0]) * math.exp(-1)
    assert torch.allclose(ys[-1].float(), expected, rtol=tol, atol=tol)


class AdamsBashforth2(Method):
    """A two-step method, not a Runge-Kutta one: y_(n+1) = y_n + h (3/2 f_n - 1/2 f_(n-1)),
    started by an Euler step; one step per interval of t (which must be equally spaced)."""

    name, order, adaptive = "ab2_test", 2, False

    def integrate(self, ivp, options, stats):
        y, f_prev, out = ivp.y0, None, []
        for t0, t1 in zip(ivp.times[:-1], ivp.times[1:]):
            f = ivp.rhs(t0, y)
            y = y + (t1 - t0) * (f if f_prev is None else 1.5 * f - 0.5 * f_prev)
            f_prev = f
            stats.nfe += 1
            stats.n_accepted += 1
            out.append(y)
        return out


def test_a_method_that_is_not_runge_kutta_can_register():
    method = register(AdamsBashforth2())
    try:
        errs = []
        for n in [50, 100, 200]:
            t = torch.linspace(0.0, 1.0, n + 1, dtype=D)
            with record_stats() as log:
                ys = odeint(PROBLEMS["rotation"][0], Y0, t, method="ab2_test")
            assert log.nfe == n and log.solves[0].method == "ab2_test"
            errs.append(max_err(ys, t, "rotation"))
        assert abs(np.log2(errs[0] / errs[1]) - method.order) < 0.2
        with pytest.warns(UserWarning, match="step_size"):  # its only option is max_num_steps
            odeint(PROBLEMS["rotation"][0], Y0, t, method="ab2_test", options={"step_size": 0.1})
    finally:
        del SOLVERS["ab2_test"]


# ---------------------------------------------------------------- tuple states and tensor tolerances
def test_tuple_state_matches_the_concatenated_state():
    """A tuple state is the concatenated state with a per-tensor (mixed) norm."""
    a0, b0 = torch.tensor([1.0, -2.0], dtype=D), torch.tensor([[0.5]], dtype=D)
    t = torch.linspace(0.0, 3.0, 7, dtype=D)

    def pair(t, y):
        a, b = y
        return a @ ROT.T, -0.3 * b + a.sum()

    ya, yb = odeint(pair, (a0, b0), t, rtol=1e-10, atol=1e-10)
    assert ya.shape == (7, 2) and yb.shape == (7, 1, 1)
    assert (ya - PROBLEMS["rotation"][1](t, a0)).abs().max() < 1e-8

    def flat(t, y):
        return torch.cat([y[:2] @ ROT.T, -0.3 * y[2:] + y[:2].sum()])

    ref = odeint(flat, torch.cat([a0, b0.reshape(-1)]), t, rtol=1e-10, atol=1e-10)
    assert (torch.cat([ya, yb.reshape(7, 1)], 1) - ref).abs().max() < 1e-8


def test_tuple_state_gradients_reach_each_tensor():
    a0 = torch.tensor([1.0, -2.0], dtype=D, requires_grad=True)
    b0 = torch.tensor(0.5, dtype=D, requires_grad=True)
    ya, yb = odeint(lambda t, y: (-y[0], -2 * y[1]), (a0, b0), torch.tensor([0.0, 1.0], dtype=D),
                    rtol=1e-10, atol=1e-10)
    ga, gb = torch.autograd.grad(ya[-1].sum() + yb[-1], [a0, b0])
    assert torch.allclose(ga, torch.full((2,), math.exp(-1), dtype=D), atol=1e-8)
    assert abs(gb.item() - math.exp(-2)) < 1e-8


def test_tensor_tolerances():
    func, t = PROBLEMS["rotation"][0], torch.tensor([0.0, 5.0], dtype=D)
    with record_stats() as log:
        a = odeint(func, Y0, t, rtol=1e-6, atol=1e-8)
        b = odeint(func, Y0, t, rtol=torch.tensor(1e-6, dtype=D), atol=torch.tensor([1e-8], dtype=D))
        per_element = odeint(func, Y0, t, rtol=torch.tensor([1e-6, 1e-10]), atol=1e-8)
    assert torch.equal(a, b)
    assert log.solves[2].nfe > log.solves[0].nfe  # the tighter component needs more steps
    assert max_err(per_element, t, "rotation") < max_err(a, t, "rotation")


# ---------------------------------------------------------------- orders
def fitted_order(method, hs, t1=1.0):
    """Slope of log(error at t1) against log(h) for dy/dx = x + y/5 with steps h."""
    func = PROBLEMS["x_plus_y_over_5"][0]
    exact = _exact_xy(torch.tensor([t1], dtype=D), Y0)[0]
    errs = []
    for h in hs:
        if not SOLVERS[method].adaptive:
            y = odeint(func, Y0, torch.tensor([0.0, t1], dtype=D), method=method,
                       options={"step_size": h})[-1]
        else:  # step the tableau of an adaptive method with a fixed step
            rhs, y, t = RHS(func, Y0), Y0, 0.0
            for _ in range(round(t1 / h)):
                y = rk_step(rhs, SOLVERS[method].tableau, t, y, h)
                t += h
        errs.append((y - exact).abs().max().item())
    return np.polyfit(np.log(hs), np.log(errs), 1)[0]


@pytest.mark.parametrize("method", TABLEAUS)
def test_order_of_convergence(method):
    order = SOLVERS[method].order
    if order >= 5:
        hs, t1 = [0.5, 0.25, 0.125, 0.0625], 2.0
    elif SOLVERS[method].adaptive:
        hs, t1 = [0.2, 0.1, 0.05, 0.025], 2.0
    else:
        hs, t1 = ([0.02, 0.01, 0.005, 0.0025] if order == 1 else [0.1, 0.05, 0.025, 0.0125]), 1.0
    assert abs(fitted_order(method, hs, t1) - order) < 0.3


@pytest.mark.parametrize("method", DENSE)
def test_dense_output_local_order(method):
    """The continuous extension is accurate to its order p (bosh3: 3, dopri5: 4):
    its local error inside one step shrinks like h^(p+1)."""
    tab = SOLVERS[method].tableau
    func = PROBLEMS["x_plus_y_over_5"][0]
    hs, errs = [0.8, 0.4, 0.2, 0.1], []
    A, _, _ = tab.coefficients(D, torch.device("cpu"))
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
    assert abs(np.polyfit(np.log(hs), np.log(errs), 1)[0] - (tab.dense_order + 1)) < 0.3


# ---------------------------------------------------------------- time handling
@pytest.mark.parametrize("method", METHODS)
def test_backward_in_time(method):
    t = torch.linspace(3.0, 0.0, 4, dtype=D)
    func, exact = PROBLEMS["x_plus_y_over_5"]
    y3 = exact(torch.tensor([3.0], dtype=D), Y0)[0]
    ys = odeint(func, y3, t, rtol=1e-9, atol=1e-9, method=method,
                options={"step_size": 1e-3} if method in FIXED else None)
    tol = 1e-6 if method in ADAPTIVE else max(fixed_tolerance(method, 1e-3), 1e-6)
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
    assert max_err(ys, many, "rotation") < (1e-5 if SOLVERS[method].order < 5 else 1e-6)


def test_fixed_step_size_grid_and_linear_interpolation():
    """As torchdiffeq: the grid is 0, 0.1, ..., 1.0 whatever t holds, and
    t = 0.25 is read off the chord between the steps' ends at 0.2 and 0.3."""
    t = torch.tensor([0.0, 0.25, 1.0], dtype=D)
    with record_stats() as log:
        ys = odeint(lambda t, y: -y, Y0, t, method="euler", options={"step_size": 0.1})
    assert log.solves[0].n_accepted == 10
    y2, y3 = Y0 * 0.9 ** 2, Y0 * 0.9 ** 3
    assert torch.allclose(ys[1], y2 + 0.5 * (y3 - y2), rtol=1e-14, atol=0)
    assert torch.allclose(ys[2], Y0 * 0.9 ** 10, rtol=1e-14, atol=0)


def test_fixed_step_size_that_does_not_divide_the_span():
    """0, 0.3, 0.6, 0.9 and a last, short step to 1.0."""
    with record_stats() as log:
        ys = odeint(lambda t, y: -y, Y0, torch.tensor([0.0, 1.0], dtype=D), method="euler",
                    options={"step_size": 0.3})
    assert log.solves[0].step_times == pytest.approx([0.0, 0.3, 0.6, 0.9, 1.0])
    assert torch.allclose(ys[-1], Y0 * 0.7 ** 3 * 0.9, rtol=1e-14, atol=0)


def test_fixed_grid_constructor_cubic_interp_and_perturb():
    calls = []

    def kink(t, y):  # dy/dt jumps from 1 to 2 at t = 0.5
        calls.append(float(t))
        return torch.ones_like(y) * (1.0 if t < 0.5 else 2.0)

    def grid(func, y0, t):
        return torch.tensor([0.0, 0.5, 1.0], dtype=t.dtype)

    t = torch.tensor([0.0, 1.0], dtype=D)
    plain = odeint(kink, Y0, t, method="rk4", options={"grid_constructor": grid})
    assert 0.5 in calls  # a grid point
    calls.clear()
    nudged = odeint(kink, Y0, t, method="rk4", options={"grid_constructor": grid, "perturb": True})
    assert 0.5 not in calls  # evaluated just before and just after
    assert (nudged[-1] - (Y0 + 1.5)).abs().max() < 1e-14
    assert (plain[-1] - (Y0 + 1.5)).abs().max() > 1e-3
    # cubic Hermite interpolation is exact for y = t^3 / 3 on one step
    tt = torch.tensor([0.0, 0.3, 1.0], dtype=D)
    ys = odeint(lambda t, y: t ** 2 * torch.ones_like(y), Y0, tt, method="rk4", options={"step_size": 1.0,
                                                                                          "interp": "cubic"})
    assert (ys[1] - (Y0 + 0.3 ** 3 / 3)).abs().max() < 1e-14


# ---------------------------------------------------------------- options
def test_options_custom_norm_first_step_and_pi_controller():
    func = PROBLEMS["rotation"][0]
    t = torch.tensor([0.0, 5.0], dtype=D)
    calls = []

    def linf(x):
        calls.append(x.shape)
        return x.abs().max()

    for options in [{"norm": linf}, {"first_step": 1e-3}, {"pcoeff": 0.3, "icoeff": 0.4},
                    {"safety": 0.8, "ifactor": 5.0, "dfactor": 0.3}, {"max_step": 0.05},
                    {"min_step": 1e-3}, {"dtype": torch.float64}]:
        ys = odeint(func, Y0, t, rtol=1e-8, atol=1e-8, options=options)
        assert max_err(ys, t, "rotation") < 1e-6, options
    assert calls and calls[0] == Y0.shape


def test_min_and_max_step_bound_the_steps():
    func = PROBLEMS["rotation"][0]
    t = torch.tensor([0.0, 5.0], dtype=D)
    with record_stats() as log:
        odeint(func, Y0, t, rtol=1e-6, atol=1e-6, options={"max_step": 0.1})
        odeint(func, Y0, t, rtol=1e-12, atol=1e-12, options={"min_step": 0.5})
    small, large = (np.diff(s.step_times) for s in log.solves)
    assert small.max() <= 0.1 + 1e-15 and len(small) >= 50
    assert large[:-1].min() >= 0.5 - 1e-15 and log.solves[1].n_rejected == 0


def test_rms_norm_is_float32_for_half_inputs():
    x = torch.full((10_000,), 300.0, dtype=torch.float16)  # sum of squares overflows fp16
    assert rms_norm(x).dtype == torch.float32
    assert abs(rms_norm(x).item() - 300.0) < 1e-3


# ---------------------------------------------------------------- gradients
@pytest.mark.parametrize("method", METHODS)
def test_gradcheck_through_odeint(method):
    torch.manual_seed(0)
    W = torch.randn(3, 3, dtype=D, requires_grad=True)
    y0 = torch.randn(2, 3, dtype=D, requires_grad=True)
    t = torch.tensor([0.0, 0.4, 1.0], dtype=D)
    options = {"step_size": 0.1} if method in FIXED and method != "midpoint" else None

    def f(y0, W):
        tol = 1e-8 if SOLVERS[method].order < 5 else 1e-10
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
