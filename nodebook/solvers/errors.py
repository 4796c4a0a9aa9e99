"""Every exception message the solvers raise, in one place.

Each helper returns a ready-to-raise exception, so that the text a user sees
for a given mistake is written once and tested once
(``tests/test_solver_errors.py``).
"""

from __future__ import annotations


class StepSizeError(RuntimeError):
    """The adaptive step size fell below what the time variable can resolve."""


class MaxStepsError(RuntimeError):
    """An integration needed more steps than ``options["max_num_steps"]``."""


class NonFiniteError(FloatingPointError):
    """The state or its derivative became NaN or infinite."""


class UnsupportedFeature(ValueError):
    """A feature of torchdiffeq, or a combination of method and gradient, that nodebook does not
    offer: the message names it and what to use instead (see ``docs_compat.md``)."""


def t_not_tensor(t) -> TypeError:
    return TypeError(f"t must be a torch.Tensor, got {type(t).__name__}")


def y0_not_tensor(y0) -> TypeError:
    return TypeError(f"y0 must be a torch.Tensor or a tuple of tensors, got {type(y0).__name__}")


def bad_tuple_y0(reason: str) -> TypeError:
    return TypeError(f"a tuple y0 must hold at least one floating-point tensor; {reason}")


def func_not_tuple(got, expected: int) -> TypeError:
    return TypeError(
        f"y0 is a tuple of {expected} tensors, so func must return a tuple of {expected} "
        f"tensors (dy/dt for each), got {type(got).__name__}")


def func_tuple_length(got: int, expected: int) -> ValueError:
    return ValueError(f"func returned a tuple of {got} tensors, but y0 is a tuple of {expected}")


def bad_y0_dtype(dtype) -> TypeError:
    return TypeError(
        f"y0 must have a real floating-point dtype (float16, bfloat16, float32, "
        f"float64), got {dtype}")


def bad_t_dtype(dtype) -> TypeError:
    return TypeError(f"t must have a real floating-point dtype, got {dtype}")


def t_not_1d(shape) -> ValueError:
    return ValueError(f"t must be 1-D, got a tensor of shape {tuple(shape)}")


def t_too_short(n: int) -> ValueError:
    return ValueError(f"t must hold at least 2 time points, got {n}")


def t_not_monotonic() -> ValueError:
    return ValueError("t must be strictly increasing or decreasing")


def t_not_finite() -> ValueError:
    return ValueError("t contains non-finite values (NaN or inf)")


def y0_not_finite() -> ValueError:
    return ValueError("y0 contains non-finite values (NaN or inf)")


def device_mismatch(what: str, device, y0_device) -> ValueError:
    return ValueError(
        f"{what} are on {device} but y0 is on {y0_device}; put both on one device "
        f"(e.g. func.to(y0.device), or create y0 with device=...) before solving")


def bad_tolerance(name: str, value) -> ValueError:
    return ValueError(f"{name} must be a positive finite number, got {value}")


def bad_tolerance_shape(name: str, shape, state_shape) -> ValueError:
    return ValueError(
        f"{name} of shape {tuple(shape)} does not broadcast to the state's shape "
        f"{tuple(state_shape)}; pass a number, a 0-d tensor or a tensor that broadcasts "
        f"to y0 (per-element tolerances)")


def tuple_tolerance_length(name: str, got: int, expected: int) -> ValueError:
    return ValueError(
        f"a tuple y0 of {expected} tensors needs {name} as one number, or as a sequence of "
        f"{expected} (one per tensor, as torchdiffeq), got a sequence of {got}")


def adjoint_tolerance_not_scalar(name: str, value) -> ValueError:
    return ValueError(
        f"odeint_adjoint: {name} must be a single number for the backward solve (the "
        f"augmented state has no per-element tolerances; torchdiffeq cannot do this either), "
        f"got {type(value).__name__}; pass a number as adjoint_{name.removeprefix('adjoint_')}")


def unknown_method(method, valid) -> ValueError:
    return ValueError(
        f"unknown method {method!r}; valid methods are: {', '.join(sorted(valid))}")


def unknown_options(method: str, unknown, valid) -> str:
    """A warning's text: torchdiffeq warns about unexpected options and ignores them."""
    return (f"{method}: unknown option(s) {sorted(unknown)} are ignored; "
            f"valid options are: {', '.join(sorted(valid))}")


def unsupported_option(method: str, name: str, reason: str) -> UnsupportedFeature:
    return UnsupportedFeature(
        f"{method}: option {name!r} of torchdiffeq is not supported by nodebook: {reason}")


def unsupported_events() -> UnsupportedFeature:
    return UnsupportedFeature(
        "event_fn (torchdiffeq's event handling) is not supported by nodebook; "
        "solve to a fixed end time instead")


def exclusive_grid_options() -> ValueError:
    return ValueError("step_size and grid_constructor are mutually exclusive arguments")


def bad_grid(reason: str) -> ValueError:
    return ValueError(f"grid_constructor returned a bad time grid: {reason}")


def bad_option(name: str, value, requirement: str) -> ValueError:
    return ValueError(f"option {name!r} must be {requirement}, got {value!r}")


def bad_func_shape(got, expected) -> ValueError:
    return ValueError(
        f"func returned a tensor of shape {tuple(got)}, but y0 has shape "
        f"{tuple(expected)}; dy/dt must have the shape of the state")


def bad_func_dtype(got, expected) -> TypeError:
    return TypeError(
        f"func returned dtype {got}, but y0 has dtype {expected}; "
        f"dy/dt must have the dtype of the state")


def func_not_tensor(got) -> TypeError:
    return TypeError(f"func must return a torch.Tensor, got {type(got).__name__}")


def non_finite_derivative(t: float) -> NonFiniteError:
    return NonFiniteError(f"func returned non-finite values (NaN or inf) at t={t!r}")


def non_finite_state(t: float) -> NonFiniteError:
    return NonFiniteError(
        f"the solution became non-finite (NaN or inf) at t={t!r}")


def non_finite_step(t: float) -> NonFiniteError:
    return NonFiniteError(
        f"non-finite values (NaN or inf) in every attempted step from t={t!r}, "
        f"even after shrinking the step size")


def step_size_underflow(t: float, h: float) -> StepSizeError:
    return StepSizeError(
        f"step size underflow: the step size fell to {abs(h):.3g} at t={t!r}, "
        f"below what the time variable can resolve; the solution may blow up "
        f"(finite-time singularity) or the problem is too stiff for this method")


def max_steps_exceeded(max_num_steps: int, t: float) -> MaxStepsError:
    return MaxStepsError(
        f"max_num_steps={max_num_steps} exceeded at t={t!r}; raise "
        f"options['max_num_steps'] or loosen rtol/atol")


def adjoint_func_not_module(func) -> TypeError:
    return TypeError(
        f"odeint_adjoint needs func to be a torch.nn.Module (to find its "
        f"parameters) unless adjoint_params is given; got {type(func).__name__}")


def adjoint_options_not_inferred(method: str, adjoint_method: str) -> ValueError:
    return ValueError(
        f"adjoint_method {adjoint_method!r} differs from method {method!r}, so adjoint_options "
        f"cannot be inferred from options: as options has been passed, adjoint_options must "
        f"be passed as well (as in torchdiffeq)")


def adjoint_bad_norm(value) -> ValueError:
    return ValueError(
        f"adjoint_options['norm'] must be 'seminorm', 'mixed' or a callable, got {value!r}")


def not_checkpointable(method: str) -> UnsupportedFeature:
    return UnsupportedFeature(
        f"method {method!r} cannot replay its steps, which odeint_checkpointed needs; use one "
        f"of the Runge-Kutta methods (euler, midpoint, rk4, rk4_38, bosh3, dopri5), or "
        f"odeint / odeint_adjoint")


def checkpointed_func_not_module(func) -> TypeError:
    return TypeError(
        f"odeint_checkpointed needs func to be a torch.nn.Module (to find its parameters) "
        f"unless params is given (params=() for a func without parameters); got "
        f"{type(func).__name__}")
