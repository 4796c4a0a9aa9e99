"""Checkpointed backpropagation through an ODE solve: the third way to get gradients.

nodebook differentiates a solve in three ways; all three run the same
forward solver and take ``(func, y0, t, rtol, atol, method, options)``:

* :func:`nodebook.odeint` backpropagates through the solver's operations.
  The gradient is the exact derivative of the computed solution, and the
  backward pass is one sweep through the recorded graph; but autograd keeps
  every stage's activations of ``func``, so memory grows with the number of
  steps times the stages times the size of ``func``'s activations.
* :func:`nodebook.odeint_adjoint` (Sec. 2 and Algorithm 1 of the paper)
  keeps only the outputs and solves an augmented ODE backwards in time:
  memory independent of the number of steps, but a backward solve of its
  own (each evaluation a call of ``func`` and a vector-Jacobian product,
  with steps chosen anew), and gradients that differ from the exact ones
  by the error of both solves, because the trajectory is recomputed
  backwards rather than remembered.
* :func:`odeint_checkpointed` (this module) stores the state z at the start
  of every accepted step and nothing else. ``backward()`` walks the steps in
  reverse: it recomputes one step from its stored z, with the same step size
  and the same operations, and backpropagates through that step alone. The
  gradient equals :func:`nodebook.odeint`'s to rounding; memory is one state
  per step plus the graph of one step; the cost is the forward's evaluations
  once more (a first-same-as-last method recomputes each step's first stage,
  so dopri5 pays 7 evaluations per step where the forward paid 6).

The paper's Sec. 6 ("Scope and limitations") notes that running the
dynamics backwards "can introduce extra numerical error if the reconstructed
trajectory diverges from the original. This problem can be addressed by
checkpointing": storing states on the forward pass and re-integrating from
them instead of reconstructing them backwards. Here every accepted step is a
checkpoint; storing fewer (every k-th step, or Griewank's binomial schedule)
would trade more recomputation for less memory.

The adaptive methods' step sizes are constants of the computation, as they
are for backpropagation through the solver: the controller works on Python
floats and the error estimate is taken without gradients, so neither path
differentiates the choice of the steps. Rejected steps take no part in the
gradient and are not replayed. Output times between steps come from the
same dense output (or, for the fixed-grid methods, the same interpolation),
recomputed from the replayed step's stages.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from nodebook.solvers import errors
from nodebook.solvers.method import IVP
from nodebook.solvers.odeint import check_inputs, warn_about_callbacks
from nodebook.solvers.rhs import RHS
from nodebook.solvers.stats import start_solve
from nodebook.solvers.tuples import flatten_problem

__all__ = ["odeint_checkpointed"]


@dataclasses.dataclass
class _Config:
    """Everything but the differentiable tensors that the autograd Function needs."""

    func: object            # on the flat state for a tuple y0
    solver: object          # the registry entry (checkpointable)
    options: dict           # filled in and checked by check_inputs
    t: torch.Tensor         # detached output times
    times: list             # the same as floats
    rtol: object
    atol: object
    params: tuple           # the tensors that get gradients besides y0

    def ivp(self, like: torch.Tensor) -> IVP:
        """The problem for a state shaped like ``like`` (its values are used
        only by a solve, not by a replay, which starts from stored states)."""
        return IVP(rhs=RHS(self.func, like), y0=like, t=self.t, times=self.times,
                   rtol=self.rtol, atol=self.atol)


class _OdeintCheckpointed(torch.autograd.Function):

    @staticmethod
    def forward(ctx, cfg: _Config, y0: torch.Tensor, *params):
        # autograd records nothing here: the solver takes its graph-free path
        stats = start_solve(cfg.solver.name, "forward")
        steps = []
        outs = cfg.solver.integrate(cfg.ivp(y0), cfg.options, stats, record=steps.append)
        # the checkpoints travel through save_for_backward, so autograd checks
        # them for in-place changes and memory probes see them
        ctx.save_for_backward(*(step.y for step in steps))
        for step in steps:
            step.y = None
        ctx.cfg, ctx.steps = cfg, steps
        return torch.stack([y0, *outs])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_ys):
        cfg, steps, states = ctx.cfg, ctx.steps, ctx.saved_tensors
        params = cfg.params
        ivp = cfg.ivp(grad_ys[0])   # a template: shape, dtype and device of y0
        stats = start_solve(cfg.solver.name, "backward")
        ends = [step.first for step in steps[1:]] + [len(cfg.times)]
        grad_params = [None] * len(params)
        a = None  # dL/d(the state at the end of the step being replayed), outputs aside
        stats.step_times.append(steps[-1].t1)
        for k in range(len(steps) - 1, -1, -1):
            y = states[k].detach().requires_grad_(True)
            step = dataclasses.replace(steps[k], y=y)
            with torch.enable_grad():
                y1, values = cfg.solver.replay(ivp, cfg.options, step, steps[k - 1] if k else None, stats)
            outputs, vectors = ([y1], [a]) if a is not None else ([], [])
            for i, value in zip(range(step.first, ends[k]), values, strict=True):
                outputs.append(value)
                vectors.append(grad_ys[i].reshape(value.shape))
            grads = torch.autograd.grad(outputs, (y, *params), vectors, allow_unused=True)
            a = grads[0] if grads[0] is not None else torch.zeros_like(y)
            for j, g in enumerate(grads[1:]):
                if g is not None:
                    grad_params[j] = g if grad_params[j] is None else grad_params[j] + g
            stats.n_accepted += 1
            stats.step_times.append(step.t0)
        grad_y0 = grad_ys[0] + a.view(grad_ys[0].shape) if ctx.needs_input_grad[1] else None
        return (None, grad_y0, *grad_params)


def odeint_checkpointed(func, y0, t, rtol=1e-7, atol=1e-9, method=None, options=None, *,
                        params=None, event_fn=None):
    """:func:`nodebook.odeint` with gradients by checkpointed backpropagation:
    the same values, the same gradients (to rounding), one stored state per
    accepted step instead of the solver's whole graph (see the module's
    docstring for the three ways and their costs).

    func, y0 (a tensor or a tuple of tensors), t, rtol, atol, method, options:
    as for :func:`nodebook.odeint` (the Runge-Kutta methods, fixed and
    adaptive, with all their options). params: the tensors besides y0 that
    get gradients; by default the parameters of func, which must then be an
    ``nn.Module`` (give ``params=()`` for a plain function without
    parameters: a tensor that func merely closes over gets no gradient).
    Output times are constants, as for :func:`nodebook.odeint`. Gradients are
    first order (the backward pass is not itself differentiable). With
    :func:`nodebook.record_stats`, the forward solve is logged with direction
    "forward" and the recomputation with direction "backward".
    """
    if event_fn is not None:
        raise errors.unsupported_events()
    warn_about_callbacks(func)
    if params is None:
        if not isinstance(func, nn.Module):
            raise errors.checkpointed_func_not_module(func)
        params = func.parameters()
    if isinstance(params, torch.Tensor):
        params = (params,)
    params = tuple(params)
    for p in params:
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"params must be an iterable of tensors, got a {type(p).__name__} in it")
    params = tuple(p for p in params if p.requires_grad)

    state, func_flat, y0, rtol, atol, options = flatten_problem(func, y0, rtol, atol, options)
    solver, times, rtol, atol, options = check_inputs(func_flat, y0, t, rtol, atol, method, options)
    if not solver.checkpointable:
        raise errors.not_checkpointable(solver.name)
    if params and params[0].device != y0.device:  # a module func was checked above; params here
        raise errors.device_mismatch("params", params[0].device, y0.device)
    cfg = _Config(func=func_flat, solver=solver, options=options, t=t.detach(), times=times,
                  rtol=rtol, atol=atol, params=params)
    ys = _OdeintCheckpointed.apply(cfg, y0, *params)
    return ys if state is None else state.unflatten(ys, (ys.shape[0],))
