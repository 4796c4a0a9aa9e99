"""The adjoint sensitivity method (Sec. 2 and Algorithm 1 of the paper).

``odeint_adjoint`` solves the ODE forward without recording a graph and saves
only ``t`` and the outputs ``z(t_0..t_N)`` (``z(t_0) = z0``), so its memory
does not grow with the number of solver steps. ``loss.backward()`` then
solves one augmented system backwards in time, interval by interval from
``t_N`` to ``t_0``::

    dz/dt   =  f(t, z, θ)
    da/dt   = -a ∂f/∂z          a(t) = dL/dz(t), the adjoint
    dg/dt   = -a ∂f/∂θ          g(t_0) = dL/dθ
    dc/dt   = -a ∂f/∂t          c(t_0) = dL/dt_0   (only when t needs a gradient)

every right-hand side costing one call of ``func`` and one vector-Jacobian
product. At each observation ``t_i`` the adjoint jumps by ``dL/dz(t_i)``, the
state restarts from the saved ``z(t_i)``, and ``dL/dt_i = dL/dz(t_i) · f(t_i,
z(t_i))`` (paper, Appendix B). The backward step error is measured, as in
torchdiffeq, by the largest of the norms of z, a, each parameter's gradient
and c; ``adjoint_options={"norm": "seminorm"}`` leaves out the parameters'
gradients (Kidger, Chen & Lyons, "Hey, that's not an ODE", ICML 2021), which
usually needs fewer steps. Chapter "The adjoint method, checked" walks
through this file.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from nodebook.solvers import errors
from nodebook.solvers.odeint import (DEFAULT_METHOD, check_inputs, get_method, solve,
                                     warn_about_callbacks)
from nodebook.solvers.tuples import TupleState, flatten_problem, mixed_norm


class _Config:
    """Everything but tensors that the autograd Function needs."""

    __slots__ = ("func", "rtol", "atol", "method", "options", "params", "adjoint_rtol",
                 "adjoint_atol", "adjoint_method", "adjoint_options", "adjoint_norm", "state",
                 "state_norm")

    def __init__(self, **kw):
        for k, v in kw.items():
            setattr(self, k, v)


class AugmentedDynamics:
    """Right-hand side of the augmented system on the flat state
    ``[z (n) | a (n) | g (sum of parameter sizes) | c (1, if need_t)]``."""

    def __init__(self, func, shape, params, dtype, need_t: bool):
        self.func = func
        self.shape = shape
        self.n = math.prod(shape)
        self.params = params
        self.dtype = dtype
        self.need_t = need_t

    def __call__(self, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        n, shape = self.n, self.shape
        z = s[:n].view(shape)
        minus_a = -s[n:2 * n].view(shape)
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            tt = t.detach().requires_grad_(True) if self.need_t else t
            f = self.func(tt, z)
            inputs = (z, *self.params, tt) if self.need_t else (z, *self.params)
            if f.requires_grad:
                vjps = torch.autograd.grad(f, inputs, minus_a, allow_unused=True)
            else:
                vjps = (None,) * len(inputs)
        parts = [f.detach().reshape(-1)]
        for x, v in zip(inputs, vjps):
            if v is None:
                parts.append(torch.zeros(x.numel(), dtype=self.dtype, device=s.device))
            else:
                parts.append(v.reshape(-1).to(self.dtype))
        return torch.cat(parts)


def adjoint_norm(kind, n: int, shape, params, need_t: bool, state_norm=None, state: TupleState | None = None):
    """The error norm of the backward solve on the flat augmented state.

    kind: "mixed" (the default: the largest of the norms of z, a, each
    parameter's gradient and c), "seminorm" (the same without the
    parameters), or a callable, which receives the scaled error as
    torchdiffeq passes it: ``(c, z, a, *param_grads)`` shaped like t[0], y0
    and the parameters (for a tuple y0, z and a are unpacked: ``(c, *z, *a,
    *param_grads)``; c is 0 when t needs no gradient). state_norm: the
    forward solve's norm (a function on z's flat shape), used on z and a;
    None for the RMS norm (of each tensor, for a tuple state).
    """
    sizes = [p.numel() for p in params]
    edges = [2 * n]
    for size in sizes:
        edges.append(edges[-1] + size)
    param_bounds = [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]
    c_bounds = [(edges[-1], edges[-1] + 1)] if need_t else []

    if callable(kind):
        def custom(x):
            c = x[edges[-1]] if need_t else x.new_zeros(())
            z, a = x[:n].view(shape), x[n:2 * n].view(shape)
            grads = [x[s:e].view_as(p) for (s, e), p in zip(zip(edges[:-1], edges[1:]), params)]
            if state is not None:
                return kind((c, *state.unflatten(z), *state.unflatten(a), *grads))
            return kind((c, z, a, *grads))
        return custom

    kept = param_bounds if kind == "mixed" else []
    if state_norm is None:  # all blocks are RMS-normed: one stacked reduction
        state_bounds = state.bounds if state is not None else [(0, n)]
        za = state_bounds + [(s + n, e + n) for s, e in state_bounds]
        return mixed_norm(za + kept + c_bounds)
    rest = mixed_norm(kept + c_bounds) if kept or c_bounds else None

    def with_state_norm(x):
        parts = [torch.as_tensor(state_norm(x[:n].view(shape))), torch.as_tensor(state_norm(x[n:2 * n].view(shape)))]
        if rest is not None:
            parts.append(rest(x))
        return torch.stack([p.to(parts[-1].dtype) for p in parts]).max()
    return with_state_norm


class _OdeintAdjoint(torch.autograd.Function):

    @staticmethod
    def forward(ctx, cfg, y0, t, *params):
        ys, _ = solve(cfg.func, y0, t, cfg.rtol, cfg.atol, cfg.method, cfg.options, "forward")
        ctx.cfg = cfg
        ctx.save_for_backward(t, ys)
        return ys

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_ys):
        cfg = ctx.cfg
        t, ys = ctx.saved_tensors
        need_t = ctx.needs_input_grad[2]
        params = cfg.params
        shape, dtype, device = ys.shape[1:], ys.dtype, ys.device
        n = math.prod(shape)
        sizes = [p.numel() for p in params]
        m = 2 * n + sum(sizes) + int(need_t)

        options = dict(cfg.adjoint_options)
        if get_method(cfg.adjoint_method).adaptive:
            options["norm"] = adjoint_norm(cfg.adjoint_norm, n, shape, params, need_t,
                                           cfg.state_norm, cfg.state)
        aug_func = AugmentedDynamics(cfg.func, shape, params, dtype, need_t)
        adjoint_rtol = _scalar_tolerance(*cfg.adjoint_rtol)
        adjoint_atol = _scalar_tolerance(*cfg.adjoint_atol)

        times = t.detach().tolist()
        a = torch.zeros(n, dtype=dtype, device=device)
        g = torch.zeros(m - 2 * n - int(need_t), dtype=dtype, device=device)
        c = torch.zeros(1, dtype=dtype, device=device)
        grad_t = torch.zeros(len(times), dtype=dtype, device=device) if need_t else None
        for i in range(len(times) - 1, 0, -1):
            dl_dz = grad_ys[i].reshape(-1)
            a = a + dl_dz                                   # the adjoint's jump at t_i
            extra_nfe = 0
            if need_t:                                      # dL/dt_i = dL/dz(t_i) · f(t_i, z(t_i))
                f_i = cfg.func(t[i].detach().to(dtype), ys[i])
                extra_nfe = 1
                dl_dt = torch.dot(dl_dz, f_i.reshape(-1).to(dtype))
                grad_t[i] = dl_dt
                c = c - dl_dt
            parts = [ys[i].reshape(-1), a, g] + ([c] if need_t else [])
            span = torch.tensor([times[i], times[i - 1]], dtype=torch.float64)
            sol, stats = solve(aug_func, torch.cat(parts), span, adjoint_rtol,
                               adjoint_atol, cfg.adjoint_method, options, "backward")
            stats.nfe += extra_nfe
            s = sol[-1]
            a = s[n:2 * n]
            g = s[2 * n:m - int(need_t)]
            if need_t:
                c = s[m - 1:]
        grad_y0 = (a + grad_ys[0].reshape(-1)).view(shape)
        if need_t:
            grad_t[0] = c[0]
            grad_t = grad_t.to(t.dtype)
        grad_params, offset = [], 0
        for p, size in zip(params, sizes):
            grad_params.append(g[offset:offset + size].view_as(p).to(p.dtype))
            offset += size
        return (None, grad_y0, grad_t, *grad_params)


def _scalar_tolerance(name: str, value):
    """The backward solve's tolerance: one number (checked when the backward
    pass needs it, as torchdiffeq fails only there)."""
    try:
        float(value)
    except (TypeError, ValueError, RuntimeError):
        raise errors.adjoint_tolerance_not_scalar(name, value) from None
    return value


def odeint_adjoint(func, y0, t, rtol=1e-7, atol=1e-9, method=None, options=None,
                   adjoint_params=None, adjoint_rtol=None, adjoint_atol=None,
                   adjoint_method=None, adjoint_options=None, *, event_fn=None):
    """:func:`nodebook.odeint` with gradients from the adjoint method (Algorithm 1);
    a drop-in for torchdiffeq 0.2.5's ``odeint_adjoint``.

    func: an ``nn.Module`` (its parameters get gradients), or any callable when
    ``adjoint_params`` (an iterable of tensors) is given. y0: ``(*S)``, or a tuple
    of tensors; t: ``(T,)``; returns ``(T, *S)`` (a tuple for a tuple y0). Gradients
    flow to y0, to the adjoint parameters and to t. method None means dopri5.
    adjoint_rtol / adjoint_atol / adjoint_method default to the forward ones
    (the backward tolerances must be single numbers); adjoint_options
    default to ``options`` without ``norm``, and, as in torchdiffeq, must be
    given when adjoint_method differs from method and options is given.
    ``adjoint_options["norm"]`` may be ``"seminorm"``, ``"mixed"`` (the
    default: the largest of the norms of z, a, each parameter's gradient and
    dL/dt) or a callable on the tuple ``(dL/dt, z, a, *param_grads)`` of
    scaled errors, as in torchdiffeq. Gradients are first order only (the
    backward pass is not itself differentiable). Differences from torchdiffeq:
    those of :func:`nodebook.odeint`; func must be an ``nn.Module`` or come
    with adjoint_params (``TypeError``, torchdiffeq: ``ValueError``);
    method=None with adjoint_method="dopri5" counts as the same method; when
    ``t`` needs no gradient, dL/dt is neither integrated nor error-controlled
    (torchdiffeq does both for a time-dependent func, so its backward NFE can
    be higher; the gradients agree); per-element backward tolerances raise
    ``ValueError`` (torchdiffeq: ``AssertionError``); the parameters of a
    ``DataParallel`` replica are not looked up; ``func``'s parameters must
    be on ``y0``'s device (``ValueError``). See ``docs_compat.md``.
    """
    if event_fn is not None:
        raise errors.unsupported_events()
    warn_about_callbacks(func)
    if adjoint_params is None:
        if not isinstance(func, nn.Module):
            raise errors.adjoint_func_not_module(func)
        adjoint_params = func.parameters()
    params = tuple(p for p in adjoint_params if p.requires_grad)

    # what torchdiffeq infers, in its order, before any normalisation of options
    method = DEFAULT_METHOD if method is None else method
    adjoint_method = method if adjoint_method is None else adjoint_method
    if adjoint_method != method and options is not None and adjoint_options is None:
        raise errors.adjoint_options_not_inferred(method, adjoint_method)
    if adjoint_options is None:
        adjoint_options = {k: v for k, v in (options or {}).items() if k != "norm"}
    adjoint_options = dict(adjoint_options)
    adjoint_rtol = ("rtol", rtol) if adjoint_rtol is None else ("adjoint_rtol", adjoint_rtol)
    adjoint_atol = ("atol", atol) if adjoint_atol is None else ("adjoint_atol", adjoint_atol)

    user_norm = (options or {}).get("norm")
    state, func_flat, y0, rtol, atol, options = flatten_problem(func, y0, rtol, atol, options)
    _, _, _, _, options = check_inputs(func_flat, y0, t, rtol, atol, method, options)
    if params and params[0].device != y0.device:  # a module func was checked above; adjoint_params here
        raise errors.device_mismatch("adjoint_params", params[0].device, y0.device)
    # the forward norm, reused on z and a by the backward solve's norm (None: RMS)
    state_norm = options.get("norm") if user_norm is not None else None

    norm = adjoint_options.pop("norm", None)
    if norm is None:
        norm = "mixed"
    if norm not in ("seminorm", "mixed") and not callable(norm):
        raise errors.adjoint_bad_norm(norm)
    adjoint = get_method(adjoint_method)
    adjoint_options = adjoint.prepare_options(adjoint_options, y0)  # warns about unknown ones once

    cfg = _Config(func=func_flat, rtol=rtol, atol=atol, method=method, options=options, params=params,
                  adjoint_rtol=adjoint_rtol, adjoint_atol=adjoint_atol, adjoint_method=adjoint_method,
                  adjoint_options=adjoint_options, adjoint_norm=norm, state=state,
                  state_norm=state_norm)
    ys = _OdeintAdjoint.apply(cfg, y0, t, *params)
    return ys if state is None else state.unflatten(ys, (ys.shape[0],))
