"""Bad input ends in a clear exception naming the problem, quickly (few
function evaluations, counted, not timed)."""

import pytest
import torch
from torch import nn

from nodebook.solvers import SOLVERS, MaxStepsError, NonFiniteError, StepSizeError, odeint, record_stats
from nodebook.adjoint import odeint_adjoint
from nodebook.solvers import errors

D = torch.float64
Y0 = torch.tensor([1.0, 2.0], dtype=D)
T = torch.tensor([0.0, 1.0], dtype=D)


def decay(t, y):
    return -y


@pytest.mark.parametrize("t", [[0.0, 1.0, 0.5], [0.0, 1.0, 1.0], [1.0, 0.0, 0.5]])
def test_t_not_strictly_monotonic(t):
    with pytest.raises(ValueError, match="strictly increasing or decreasing"):
        odeint(decay, Y0, torch.tensor(t, dtype=D))


def test_t_too_short():
    with pytest.raises(ValueError, match="at least 2 time points"):
        odeint(decay, Y0, torch.tensor([0.0], dtype=D))


def test_t_not_1d():
    with pytest.raises(ValueError, match=r"t must be 1-D.*\(2, 2\)"):
        odeint(decay, Y0, torch.zeros(2, 2, dtype=D))


def test_t_not_a_float_tensor():
    with pytest.raises(TypeError, match="int64"):
        odeint(decay, Y0, torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="torch.Tensor"):
        odeint(decay, Y0, [0.0, 1.0])


def test_t_not_finite():
    with pytest.raises(ValueError, match="non-finite"):
        odeint(decay, Y0, torch.tensor([0.0, float("nan")], dtype=D))


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.complex64, torch.bool])
def test_y0_bad_dtype(dtype):
    with pytest.raises(TypeError, match=str(dtype).replace("torch.", "")):
        odeint(decay, torch.ones(2, dtype=dtype), T)


@pytest.mark.parametrize("name, value", [("rtol", 0.0), ("rtol", -1e-3), ("atol", 0.0),
                                         ("atol", -1.0), ("rtol", float("nan"))])
def test_bad_tolerance(name, value):
    with pytest.raises(ValueError, match=f"{name} must be a positive"):
        odeint(decay, Y0, T, **{name: value})


def test_unknown_method_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown method 'rk45'.*" + ", ".join(sorted(SOLVERS))):
        odeint(decay, Y0, T, method="rk45")


def test_unknown_option_warns_and_is_ignored_as_in_torchdiffeq():
    with pytest.warns(UserWarning, match=r"rk4: unknown option.*'stepsize'.*ignored.*step_size"):
        ys = odeint(decay, Y0, T, method="rk4", options={"stepsize": 0.1})
    assert torch.equal(ys, odeint(decay, Y0, T, method="rk4"))
    with pytest.warns(UserWarning, match="unknown option.*'foo'"):
        odeint(decay, Y0, T, options={"foo": 1})


def test_bad_option_values():
    with pytest.raises(ValueError, match="step_size"):
        odeint(decay, Y0, T, method="rk4", options={"step_size": -0.1})
    with pytest.raises(ValueError, match="max_num_steps"):
        odeint(decay, Y0, T, options={"max_num_steps": 0})
    with pytest.raises(ValueError, match="interp"):
        odeint(decay, Y0, T, method="rk4", options={"interp": "quadratic"})
    with pytest.raises(ValueError, match="min_step"):
        odeint(decay, Y0, T, options={"min_step": 1.0, "max_step": 0.5})
    with pytest.raises(ValueError, match="mutually exclusive"):
        odeint(decay, Y0, T, method="euler", options={"step_size": 0.1, "grid_constructor": lambda f, y, t: t})


def test_bad_grid_from_grid_constructor():
    with pytest.raises(ValueError, match="grid_constructor.*end at t\\[-1\\]"):
        odeint(decay, Y0, T, method="euler", options={"grid_constructor": lambda f, y, t: t[:1].repeat(3)})


def test_unsupported_torchdiffeq_features_raise():
    with pytest.raises(errors.UnsupportedFeature, match="jump_t"):
        odeint(decay, Y0, T, options={"jump_t": torch.tensor([0.5])})
    with pytest.raises(errors.UnsupportedFeature, match="event_fn"):
        odeint(decay, Y0, T, event_fn=lambda t, y: y[0])


def test_callbacks_on_func_are_reported():
    class WithCallback(nn.Module):
        def forward(self, t, y):
            return -y

        def callback_step(self, t0, y0, dt):
            raise AssertionError("not called")

    with pytest.warns(UserWarning, match="callback_step.*does not"):
        odeint(WithCallback(), Y0, T)


def test_bad_tuple_state_and_tolerances():
    with pytest.raises(TypeError, match="tuple of tensors"):
        odeint(decay, [Y0], T)
    with pytest.raises(TypeError, match="element 1"):
        odeint(lambda t, y: y, (Y0, 1.0), T)
    with pytest.raises(TypeError, match="must return a tuple of 2"):
        odeint(lambda t, y: -y[0], (Y0, Y0), T)
    with pytest.raises(ValueError, match="rtol.*sequence of 2.*got a sequence of 3"):
        odeint(lambda t, y: (-y[0], -y[1]), (Y0, Y0), T, rtol=(1e-3, 1e-3, 1e-3))
    with pytest.raises(ValueError, match=r"rtol of shape \(3,\) does not broadcast.*\(2,\)"):
        odeint(decay, Y0, T, rtol=torch.ones(3) * 1e-3)
    with pytest.raises(ValueError, match="atol must be a positive"):
        odeint(decay, Y0, T, atol=torch.tensor([1e-3, -1.0]))


@pytest.mark.parametrize("method", ["rk4", "dopri5"])
def test_func_returns_wrong_shape(method):
    with pytest.raises(ValueError, match=r"shape \(3,\).*shape \(2,\)"):
        odeint(lambda t, y: torch.zeros(3, dtype=D), Y0, T, method=method)


@pytest.mark.parametrize("method", ["euler", "dopri5"])
def test_func_returns_wrong_dtype(method):
    with pytest.raises(TypeError, match="float32.*float64"):
        odeint(lambda t, y: y.float(), Y0, T, method=method)


def test_func_returns_non_tensor():
    with pytest.raises(TypeError, match="func must return a torch.Tensor"):
        odeint(lambda t, y: 1.0, Y0, T)


def test_non_finite_y0():
    with pytest.raises(ValueError, match="non-finite"):
        odeint(decay, torch.tensor([1.0, float("inf")], dtype=D), T)


@pytest.mark.parametrize("method", ["rk4", "dopri5"])
def test_non_finite_derivative_at_start(method):
    with pytest.raises(FloatingPointError, match="non-finite.*t=0"):
        odeint(lambda t, y: y * float("nan"), Y0, T, method=method)


def nan_after_half(t, y):
    return -y if t < 0.5 else y * float("nan")


@pytest.mark.parametrize("method", ["bosh3", "dopri5"])
def test_non_finite_derivative_later_adaptive(method):
    with record_stats() as log, pytest.raises(NonFiniteError, match=r"non-finite.*t=0\.4999"):
        odeint(nan_after_half, Y0, T, method=method)
    # gives up after shrinking the step ~20 times, not after max_num_steps
    assert log.nfe < 1000 and log.n_rejected < 100


def test_non_finite_state_fixed():
    with pytest.raises(NonFiniteError, match=r"non-finite.*t=0\.6"):
        odeint(nan_after_half, Y0, torch.linspace(0, 1, 6, dtype=D), method="rk4",
               options={"step_size": 0.05})


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("method", ["dopri5", "bosh3"])
def test_finite_time_blow_up_is_step_size_underflow(method, dtype):
    """dy/dt = y^2, y(0) = 1 has y = 1/(1 - t): the solver must give up near t = 1."""
    with record_stats() as log, pytest.raises(StepSizeError, match=r"step size.*t=(0\.9999|1\.0000)") as info:
        odeint(lambda t, y: y ** 2, torch.ones(1, dtype=dtype), torch.tensor([0.0, 2.0]), method=method)
    assert isinstance(info.value, RuntimeError)
    # steps shrink geometrically towards the singularity: thousands, not millions, of evaluations
    assert log.nfe < 20_000 and log.n_accepted + log.n_rejected < 5_000


def test_max_num_steps_adaptive():
    with pytest.raises(RuntimeError, match="max_num_steps=10"):
        odeint(lambda t, y: torch.cos(10 * t) * y, Y0, torch.tensor([0.0, 10.0], dtype=D),
               rtol=1e-10, atol=1e-10, options={"max_num_steps": 10})


def test_max_num_steps_fixed_fails_before_stepping():
    calls = []

    def counted(t, y):
        calls.append(t)
        return -y

    with pytest.raises(MaxStepsError, match="max_num_steps"):  # (before building a 10^12-point grid)
        odeint(counted, Y0, T, method="euler", options={"step_size": 1e-12, "max_num_steps": 10 ** 6})
    assert calls == []


def test_adjoint_needs_module_or_params():
    with pytest.raises(TypeError, match="nn.Module"):
        odeint_adjoint(decay, Y0, T)


def test_adjoint_checks_inputs_like_odeint():
    func = nn.Linear(2, 2).double()
    with pytest.raises(ValueError, match="strictly increasing or decreasing"):
        odeint_adjoint(lambda t, y: func(y), Y0, torch.tensor([0.0, 0.0], dtype=D),
                       adjoint_params=func.parameters())
    with pytest.raises(ValueError, match="seminorm"):
        odeint_adjoint(lambda t, y: func(y), Y0, T, adjoint_params=func.parameters(),
                       adjoint_options={"norm": "semi"})
    with pytest.raises(ValueError, match="unknown method"):
        odeint_adjoint(lambda t, y: func(y), Y0, T, adjoint_params=func.parameters(),
                       adjoint_method="rk45")


def test_adjoint_options_that_cannot_be_inferred_raise_as_in_torchdiffeq():
    func = nn.Linear(2, 2).double()
    with pytest.raises(ValueError, match="adjoint_options cannot be inferred"):
        odeint_adjoint(lambda t, y: func(y), Y0, T, adjoint_params=func.parameters(),
                       method="dopri5", options={"first_step": 0.1}, adjoint_method="rk4")
    # no options, or adjoint_options given, or the same method (None is dopri5): fine
    odeint_adjoint(lambda t, y: func(y), Y0, T, adjoint_params=func.parameters(), adjoint_method="rk4")
    odeint_adjoint(lambda t, y: func(y), Y0, T, adjoint_params=func.parameters(), options={"first_step": 0.1},
                   adjoint_method="rk4", adjoint_options={})
    odeint_adjoint(lambda t, y: func(y), Y0, T, adjoint_params=func.parameters(), options={"first_step": 0.1},
                   adjoint_method="dopri5")


def test_adjoint_per_element_tolerance_fails_in_backward_with_a_clear_error():
    func = nn.Linear(2, 2).double()
    y0 = Y0.clone().requires_grad_(True)
    ys = odeint_adjoint(lambda t, y: func(y), y0, T, adjoint_params=func.parameters(),
                        rtol=torch.tensor([1e-6, 1e-7], dtype=D))
    with pytest.raises(ValueError, match="rtol must be a single number.*pass a number as adjoint_rtol"):
        ys.sum().backward()
