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
z(t_i))`` (paper, Appendix B). ``adjoint_options={"norm": "seminorm"}``
measures the backward step error on z and a only (Kidger, Chen & Lyons,
"Hey, that's not an ODE", ICML 2021), which usually needs fewer steps.
Chapter "The adjoint method" walks through this file.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from nodebook.solvers import errors
from nodebook.solvers.adaptive import rms_norm
from nodebook.solvers.odeint import SOLVERS, check_inputs, solve


class _Config:
    """Everything but tensors that the autograd Function needs."""

    __slots__ = ("func", "rtol", "atol", "method", "options", "params",
                 "adjoint_rtol", "adjoint_atol", "adjoint_method", "adjoint_options")

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


def block_norm(bounds):
    """Max over blocks ``[start, end)`` of the RMS norm (a mixed norm; with
    only the z and a blocks, the seminorm of Kidger et al. 2021)."""
    def norm(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([rms_norm(x[s:e]) for s, e in bounds]).max()
    return norm


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
        if SOLVERS[cfg.adjoint_method].tableau.adaptive:
            edges = [0, n, 2 * n]
            for size in sizes:
                edges.append(edges[-1] + size)
            if need_t:
                edges.append(m)
            blocks = [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]
            norm = options.get("norm")
            if norm == "seminorm":
                options["norm"] = block_norm(blocks[:2])
            elif norm in (None, "mixed"):
                options["norm"] = block_norm(blocks)
        aug_func = AugmentedDynamics(cfg.func, shape, params, dtype, need_t)

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
            sol, stats = solve(aug_func, torch.cat(parts), span, cfg.adjoint_rtol,
                               cfg.adjoint_atol, cfg.adjoint_method, options, "backward")
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


def odeint_adjoint(func, y0, t, rtol=1e-7, atol=1e-9, method="dopri5", options=None,
                   adjoint_params=None, adjoint_rtol=None, adjoint_atol=None,
                   adjoint_method=None, adjoint_options=None):
    """:func:`nodebook.odeint` with gradients from the adjoint method (Algorithm 1).

    func: an ``nn.Module`` (its parameters get gradients), or any callable when
    ``adjoint_params`` (an iterable of tensors) is given. y0: (*S); t: (T,);
    returns (T, *S). Gradients flow to y0, to the adjoint parameters and to t.
    adjoint_rtol / adjoint_atol / adjoint_method default to the forward ones;
    adjoint_options default to ``options`` (without ``norm``) when the methods
    agree; ``adjoint_options["norm"]`` may be ``"seminorm"``, ``"mixed"`` (the
    default: max of the RMS norms of z, a and each parameter's gradient) or a
    callable on the flat augmented state. Gradients are first order only
    (the backward pass is not itself differentiable).
    """
    if adjoint_params is None:
        if not isinstance(func, nn.Module):
            raise errors.adjoint_func_not_module(func)
        adjoint_params = func.parameters()
    params = tuple(p for p in adjoint_params if p.requires_grad)
    check_inputs(func, y0, t, rtol, atol, method, options)
    adjoint_method = method if adjoint_method is None else adjoint_method
    if adjoint_options is None:
        adjoint_options = ({k: v for k, v in (options or {}).items() if k != "norm"}
                           if adjoint_method == method else {})
    adjoint_options = dict(adjoint_options)
    norm = adjoint_options.get("norm")
    if norm is not None and norm not in ("seminorm", "mixed") and not callable(norm):
        raise errors.adjoint_bad_norm(norm)
    if adjoint_method in SOLVERS and not SOLVERS[adjoint_method].tableau.adaptive:
        adjoint_options.pop("norm", None)
    cfg = _Config(func=func, rtol=rtol, atol=atol, method=method, options=options, params=params,
                  adjoint_rtol=rtol if adjoint_rtol is None else adjoint_rtol,
                  adjoint_atol=atol if adjoint_atol is None else adjoint_atol,
                  adjoint_method=adjoint_method, adjoint_options=adjoint_options)
    if adjoint_method not in SOLVERS:
        raise errors.unknown_method(adjoint_method, SOLVERS)
    return _OdeintAdjoint.apply(cfg, y0, t, *params)
