"""The checks behind chapter 02, "The adjoint method, checked" (``book/02_adjoint.ipynb``).

All runs use the small time-dependent MLP vector field
:class:`nodebook.models.mlp.TimeMLP` and draw their random numbers from
torch's global generator (the chapter seeds it once), in the order the
chapter calls them:

- :func:`gradient_problem` and :func:`gradient_errors`: a loss on the state at
  three times, its parameter gradients by the adjoint and by backprop through
  the solver at several tolerances, against central finite differences;
- :func:`memory_vs_steps`: bytes autograd saves against the number of rk4
  steps, adjoint against backprop (the paper's Table 1 memory claim);
- :func:`train_ring` and :func:`adjoint_nfe`: a short training run that makes
  the flow non-trivial, then forward and backward NFE of the adjoint at several
  tolerances, with the default error norm and with the seminorm (Fig. 3c).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nodebook import odeint, odeint_adjoint, record_stats
from nodebook.analysis import finite_difference_grad, relative_error
from nodebook.memory import saved_tensor_bytes
from nodebook.models.mlp import TimeMLP
from nodebook.train import chunked_step


@dataclass
class GradientProblem:
    """A float64 vector field, a batch of initial states, output times and the loss weights.

    The loss is ``sum(weights * z(t_i))`` over the states at every output time
    after the first: it depends on the solution at several times, so the
    adjoint receives a jump at each of them.
    """

    func: torch.nn.Module
    z0: torch.Tensor
    t: torch.Tensor
    weights: torch.Tensor

    def loss(self, solve, tol: float) -> torch.Tensor:
        """The loss with ``solve`` (``odeint`` or ``odeint_adjoint``) at rtol = atol = ``tol``."""
        return (self.weights * solve(self.func, self.z0, self.t, rtol=tol, atol=tol)[1:]).sum()

    def gradients(self, solve, tol: float) -> torch.Tensor:
        """The loss's gradient with respect to every parameter of ``func``, flattened into one vector."""
        params = list(self.func.parameters())
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(self.loss(solve, tol), params)])

    def initial_state_gradients(self, tol: float) -> tuple[torch.Tensor, torch.Tensor]:
        """dL/dz(t0) by the adjoint and by backprop through the solver, at rtol = atol = ``tol``."""
        self.z0.requires_grad_(True)
        try:
            g_adjoint, = torch.autograd.grad(self.loss(odeint_adjoint, tol), self.z0)
            g_backprop, = torch.autograd.grad(self.loss(odeint, tol), self.z0)
        finally:
            self.z0.requires_grad_(False)
        return g_adjoint, g_backprop


def gradient_problem(num_hiddens: int, device="cpu", dim: int = 2, batch: int = 16) -> GradientProblem:
    """The chapter's gradient check: ``TimeMLP(dim, num_hiddens)`` in float64, a batch of
    initial states, output times 0, 0.5, 1, 1.5 and random loss weights."""
    func = TimeMLP(dim, num_hiddens).double().to(device)
    z0 = torch.randn(batch, dim, dtype=torch.float64, device=device)
    t = torch.tensor([0.0, 0.5, 1.0, 1.5], dtype=torch.float64, device=device)
    weights = torch.randn(len(t) - 1, batch, dim, dtype=torch.float64, device=device)
    return GradientProblem(func, z0, t, weights)


def finite_difference_reference(problem: GradientProblem, tol: float = 1e-12, eps: float = 1e-6) -> torch.Tensor:
    """Central finite differences of the loss (backprop solve at ``tol``) for every parameter, flattened."""
    grads = finite_difference_grad(lambda: problem.loss(odeint, tol), list(problem.func.parameters()), eps=eps)
    return torch.cat([g.reshape(-1) for g in grads])


def gradient_errors(problem: GradientProblem, reference: torch.Tensor, tolerances: list) -> list[dict]:
    """For each tolerance: relative errors of the adjoint and backprop gradients against
    ``reference`` and against each other (keys ``tol``, ``adjoint_vs_fd``, ``backprop_vs_fd``,
    ``adjoint_vs_backprop``)."""
    rows = []
    for tol in tolerances:
        adjoint, backprop = problem.gradients(odeint_adjoint, tol), problem.gradients(odeint, tol)
        rows.append({"tol": tol, "adjoint_vs_fd": relative_error(adjoint, reference),
                     "backprop_vs_fd": relative_error(backprop, reference),
                     "adjoint_vs_backprop": relative_error(adjoint, backprop)})
    return rows


def vector_field(num_hiddens: int, dim: int = 2, device="cpu") -> TimeMLP:
    """The float32 field ``TimeMLP(dim, num_hiddens)`` of the memory and NFE runs, on ``device``."""
    return TimeMLP(dim, num_hiddens).to(device)


def initial_states(batch: int, dim: int = 2, device="cpu") -> torch.Tensor:
    """``batch`` standard normal initial states of dimension ``dim``, drawn on ``device``."""
    return torch.randn(batch, dim, device=device)


def unit_interval(device="cpu") -> torch.Tensor:
    """The output times 0 and 1 of the memory and NFE solves, on ``device``."""
    return torch.tensor([0.0, 1.0], device=device)


def memory_vs_steps(num_hiddens: int, num_steps: list, device="cpu", dim: int = 2, batch: int = 256) -> dict:
    """Bytes autograd saves for the backward pass of one rk4 solve over [0, 1] with each
    number of steps: ``{"adjoint": [...], "backprop": [...]}`` (see :func:`nodebook.memory.saved_tensor_bytes`)."""
    func = vector_field(num_hiddens, dim, device)
    z0 = initial_states(batch, dim, device)
    t_span = unit_interval(device)
    memory = {"adjoint": [], "backprop": []}
    for n in num_steps:
        options = {"step_size": 1.0 / n}
        memory["adjoint"].append(saved_tensor_bytes(
            lambda: odeint_adjoint(func, z0, t_span, method="rk4", options=options)))
        memory["backprop"].append(saved_tensor_bytes(
            lambda: odeint(func, z0, t_span, method="rk4", options=options)))
    return memory


def train_ring(num_hiddens: int, iterations: int, device="cpu", dim: int = 2, batch: int = 256,
               lr: float = 1e-2, radius: float = 2.0, tol: float = 1e-5) -> tuple[torch.nn.Module, list]:
    """Train ``TimeMLP(dim, num_hiddens)`` with Adam to carry a Gaussian blob onto the circle
    of radius ``radius`` at t = 1 (gradients by the adjoint, dopri5 at ``tol``), a fresh batch
    each step. Returns the field and the loss of every step."""
    func = vector_field(num_hiddens, dim, device)
    optimizer = torch.optim.Adam(func.parameters(), lr=lr)
    t_span = unit_interval(device)

    def loss_fn():
        z = initial_states(batch, dim, device)
        z1 = odeint_adjoint(func, z, t_span, rtol=tol, atol=tol)[-1]
        return ((z1.norm(dim=-1) - radius) ** 2).mean()  # push every point onto the circle

    train_step = chunked_step(loss_fn, optimizer, 1)
    losses = [train_step(step)["loss"] for step in range(iterations)]
    return func, losses


def adjoint_nfe(func: torch.nn.Module, tolerances: list, device="cpu", dim: int = 2, batch: int = 256) -> dict:
    """Forward NFE, backward NFE (default norm) and backward NFE with the seminorm of one
    adjoint solve over [0, 1] plus its backward pass, at rtol = atol = each tolerance, on
    one batch: ``{"forward": [...], "backward": [...], "seminorm": [...]}``."""
    z = initial_states(batch, dim, device)
    t_span = unit_interval(device)
    nfe = {"forward": [], "backward": [], "seminorm": []}
    for tol in tolerances:
        for key, options in [("backward", None), ("seminorm", {"norm": "seminorm"})]:
            with record_stats() as log:
                odeint_adjoint(func, z, t_span, rtol=tol, atol=tol,
                               adjoint_options=options)[-1].pow(2).sum().backward()
            nfe[key].append(log.nfe_backward)
        nfe["forward"].append(log.nfe_forward)
    func.zero_grad(set_to_none=True)
    return nfe


def nfe_summary(nfe: dict) -> dict:
    """``ratios`` (backward / forward NFE per tolerance), their ``mean_ratio``, and
    ``seminorm_saving``: the fraction of all backward NFE the seminorm saves."""
    ratios = [b / f for f, b in zip(nfe["forward"], nfe["backward"])]
    return {"ratios": ratios, "mean_ratio": sum(ratios) / len(ratios),
            "seminorm_saving": 1 - sum(nfe["seminorm"]) / sum(nfe["backward"])}
