"""Continuous normalizing flows (paper, Sec. 4; chapter book/06_cnf).

The instantaneous change of variables (paper, Theorem 1): for dz/dt = f(z, t),

    d log p(z(t)) / dt = -tr(df/dz),

so a CNF integrates the state ``y = [z, log p]`` (shape ``[N, D + 1]``) with
``odeint`` or ``odeint_adjoint``. The trace comes three ways:

- ``"exact"``: D vector-Jacobian products, one per dimension
  (:func:`trace_exact`);
- ``"hutchinson"``: tr(A) = E[e^T A e] with one vector-Jacobian product and
  Gaussian or Rademacher noise ``e`` drawn once per solve, as in FFJORD
  (Grathwohl et al. 2019; :func:`trace_hutchinson`);
- ``"analytic"``: for the planar dynamics only, the closed form
  sum_m (1 - h_m^2) u_m . w_m, which is why the paper calls the trace of a
  planar CNF cheap.

Dynamics: :class:`PlanarDynamics` (the paper's planar CNF, eq. 10: M planar
units whose parameters come from a hypernetwork of t, with a sigmoid gate, as
in the authors' torchdiffeq example) and :class:`MLPDynamics` (a general MLP
of (z, t)). Losses: :func:`reverse_kl` (density matching) and
:func:`negative_log_likelihood` (maximum likelihood). The chapter's training
runs, evaluations and the Hutchinson study are in ``nodebook.experiments.cnf``.
"""

from __future__ import annotations

import torch
from torch import nn

from nodebook import odeint, odeint_adjoint
from nodebook.models.planar import standard_normal_logprob

TRACES = ("exact", "hutchinson", "analytic")
NOISES = ("gaussian", "rademacher")


def trace_exact(f: torch.Tensor, z: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """tr(df/dz) per sample with one vector-Jacobian product per dimension.

    f, z: [N, D] with f computed from z (row i of f depends on row i of z
    only). Returns [N]. ``create_graph`` keeps the graph so the trace can be
    differentiated (needed for training).
    """
    trace = torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)
    for i in range(z.shape[1]):
        (row,) = torch.autograd.grad(f[:, i].sum(), z, create_graph=create_graph, retain_graph=True)
        trace = trace + row[:, i]
    return trace


def trace_hutchinson(f: torch.Tensor, z: torch.Tensor, e: torch.Tensor,
                     create_graph: bool = False) -> torch.Tensor:
    """Hutchinson's estimate e^T (df/dz) e per sample with one vector-Jacobian product.

    f, z, e: [N, D]; e has E[e e^T] = I (see :func:`hutchinson_noise`).
    Returns [N]; unbiased: its mean over draws of e is the exact trace.
    """
    (e_dfdz,) = torch.autograd.grad(f, z, e, create_graph=create_graph, retain_graph=True)
    return (e_dfdz * e).sum(1)


def hutchinson_noise(shape, kind: str = "gaussian", dtype=torch.float32, device=None) -> torch.Tensor:
    """Noise with zero mean and identity covariance: standard normal or Rademacher (+-1)."""
    if kind == "gaussian":
        return torch.randn(shape, dtype=dtype, device=device)
    if kind == "rademacher":
        return torch.randint(0, 2, shape, device=device).to(dtype) * 2 - 1
    raise ValueError(f"unknown Hutchinson noise {kind!r}; choose one of {NOISES}")


class HyperNetwork(nn.Module):
    """t -> parameters of M planar units (W [M, D], B [M], U [M, D]), U gated by sigmoid(G).

    Two tanh layers of ``num_hiddens`` units, as in the authors' torchdiffeq
    example (examples/cnf.py).
    """

    def __init__(self, dim: int, width: int, num_hiddens: int = 32):
        super().__init__()
        self.dim, self.width = dim, width
        self.net = nn.Sequential(nn.Linear(1, num_hiddens), nn.Tanh(),
                                 nn.Linear(num_hiddens, num_hiddens), nn.Tanh(),
                                 nn.Linear(num_hiddens, 3 * width * dim + width))

    def forward(self, t: torch.Tensor):
        params = self.net(t.reshape(1, 1).to(self.net[0].weight.dtype)).reshape(-1)
        block = self.width * self.dim
        W = params[:block].reshape(self.width, self.dim)
        U = params[block:2 * block].reshape(self.width, self.dim)
        G = params[2 * block:3 * block].reshape(self.width, self.dim)
        B = params[3 * block:]
        return W, B, U * torch.sigmoid(G)


class PlanarDynamics(nn.Module):
    """The paper's planar CNF dynamics (eq. 10): f(z, t) = (1/M) sum_m u_m(t) tanh(w_m(t) . z + b_m(t)).

    ``width`` is M, the number of planar units ("hidden units" in Fig. 4-6);
    their parameters come from a :class:`HyperNetwork` of t. z: [N, D] -> [N, D].
    """

    def __init__(self, dim: int = 2, width: int = 8, num_hiddens: int = 32):
        super().__init__()
        self.dim, self.width = dim, width
        self.hyper = HyperNetwork(dim, width, num_hiddens)

    def _units(self, t, z):
        W, B, U = self.hyper(t)
        h = torch.tanh(z @ W.T + B)  # [N, M]
        return W, U, h

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        _, U, h = self._units(t, z)
        return h @ U / self.width

    def analytic_trace(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """tr(df/dz) = (1/M) sum_m (1 - h_m^2) u_m . w_m in closed form: [N]."""
        W, U, h = self._units(t, z)
        return (1 - h ** 2) @ (U * W).sum(1) / self.width

    def forward_with_trace(self, t: torch.Tensor, z: torch.Tensor):
        """(f [N, D], tr(df/dz) [N]) sharing one pass through the units."""
        W, U, h = self._units(t, z)
        return h @ U / self.width, (1 - h ** 2) @ (U * W).sum(1) / self.width


class MLPDynamics(nn.Module):
    """A general dynamics f(z, t): an MLP on [z, t] with ``num_layers`` tanh hidden layers. z: [N, D] -> [N, D]."""

    def __init__(self, dim: int, num_hiddens: int = 64, num_layers: int = 2):
        super().__init__()
        layers, width = [], dim + 1
        for _ in range(num_layers):
            layers += [nn.Linear(width, num_hiddens), nn.Tanh()]
            width = num_hiddens
        self.net = nn.Sequential(*layers, nn.Linear(width, dim))

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        tt = t.to(z.dtype).expand(z.shape[0], 1)
        return self.net(torch.cat([z, tt], 1))


class AugmentedDynamics(nn.Module):
    """d/dt [z, log p] = [f(z, t), -tr(df/dz)] on the state y [N, D + 1].

    ``noise`` (set by :class:`CNF` before every solve) is the fixed
    Hutchinson probe e [N, D] of that solve.
    """

    def __init__(self, func: nn.Module, trace: str = "exact"):
        super().__init__()
        if trace not in TRACES:
            raise ValueError(f"unknown trace {trace!r}; choose one of {TRACES}")
        if trace == "analytic" and not hasattr(func, "forward_with_trace"):
            raise ValueError(f"trace='analytic' needs dynamics with a closed-form trace "
                             f"(PlanarDynamics); {type(func).__name__} has none")
        self.func, self.trace = func, trace
        self.noise: torch.Tensor | None = None

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.trace == "analytic":
            f, tr = self.func.forward_with_trace(t, y[:, :-1])
            return torch.cat([f, -tr[:, None]], 1)
        create_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            z = y[:, :-1]
            if not z.requires_grad:
                z = z.detach().requires_grad_(True)
            f = self.func(t, z)
            if self.trace == "exact":
                tr = trace_exact(f, z, create_graph)
            else:
                if self.noise is None or self.noise.shape != z.shape:
                    raise RuntimeError("Hutchinson trace without a probe of the state's shape: "
                                       "integrate through CNF, which draws one per solve")
                tr = trace_hutchinson(f, z, self.noise, create_graph)
        if not create_graph:
            f, tr = f.detach(), tr.detach()
        return torch.cat([f, -tr[:, None]], 1)


class CNF(nn.Module):
    """A continuous normalizing flow: base N(0, I) at time ``t0``, data at ``t1``.

    Args:
        func: dynamics ``func(t, z)`` [N, D] -> [N, D] (PlanarDynamics or MLPDynamics).
        t0, t1: the flow runs from the base (t0) to the data/target side (t1).
        trace: "exact", "hutchinson" or "analytic" (see the module docstring).
        noise: Hutchinson probe distribution, "gaussian" or "rademacher".
        method, rtol, atol, options: passed to the solver (e.g. "rk4" with
            ``options={"step_size": 0.1}``, or "dopri5" with tolerances).
        adjoint: integrate with ``odeint_adjoint`` instead of backpropagating
            through the solver's operations with ``odeint``.
    """

    def __init__(self, func: nn.Module, t0: float = 0.0, t1: float = 1.0, trace: str = "exact",
                 noise: str = "gaussian", method: str = "dopri5", rtol: float = 1e-5,
                 atol: float = 1e-5, options: dict | None = None, adjoint: bool = False):
        super().__init__()
        if noise not in NOISES:
            raise ValueError(f"unknown Hutchinson noise {noise!r}; choose one of {NOISES}")
        self.dynamics = AugmentedDynamics(func, trace)
        self.t0, self.t1, self.noise = float(t0), float(t1), noise
        self.solver = dict(method=method, rtol=rtol, atol=atol, options=options)
        self.adjoint = adjoint

    def use_solver(self, method: str, rtol: float = 1e-5, atol: float = 1e-5, options: dict | None = None):
        """Switch the solver (e.g. train with rk4, evaluate with dopri5 at 1e-5); returns self."""
        self.solver = dict(method=method, rtol=rtol, atol=atol, options=options)
        return self

    def integrate(self, z: torch.Tensor, logp: torch.Tensor, times) -> tuple[torch.Tensor, torch.Tensor]:
        """Solve from (z [N, D], log p [N]) at times[0] through ``times``: ([T, N, D], [T, N])."""
        t = torch.as_tensor(times, dtype=z.dtype, device=z.device)
        y0 = torch.cat([z, logp[:, None]], 1)
        if self.dynamics.trace == "hutchinson":
            self.dynamics.noise = hutchinson_noise(z.shape, self.noise, z.dtype, z.device)
        if self.adjoint:
            ys = odeint_adjoint(self.dynamics, y0, t, **self.solver)
        else:
            ys = odeint(self.dynamics, y0, t, **self.solver)
        return ys[..., :-1], ys[..., -1]

    def sample_with_log_prob(self, z0: torch.Tensor, times=None):
        """Flow base points z0 [N, D] forward: (z(t1) [N, D], log q(z(t1)) [N]).

        With ``times`` (from t0 up), returns every time: ([T, N, D], [T, N]).
        """
        zs, logps = self.integrate(z0, standard_normal_logprob(z0), [self.t0, self.t1] if times is None else times)
        return (zs[-1], logps[-1]) if times is None else (zs, logps)

    def log_prob(self, x: torch.Tensor, t: float | None = None) -> torch.Tensor:
        """log p(x) [N] of points x [N, D] at time t (default t1) by integrating back to t0."""
        t = self.t1 if t is None else float(t)
        if t == self.t0:
            return standard_normal_logprob(x)
        zs, dlogp = self.integrate(x, torch.zeros_like(x[:, 0]), [t, self.t0])
        # dlogp(t0) = +int_{t0}^{t} tr dt, so log p(x) = log N(z(t0)) - dlogp(t0).
        return standard_normal_logprob(zs[-1]) - dlogp[-1]

    @torch.no_grad()
    def sample(self, z0: torch.Tensor, t: float | None = None) -> torch.Tensor:
        """Points at time t (default t1) from base points z0 [N, D] (no log-density work)."""
        t = self.t1 if t is None else float(t)
        if t == self.t0:
            return z0
        zs, _ = self.integrate(z0, torch.zeros_like(z0[:, 0]), [self.t0, t])
        return zs[-1]


# Training objectives (losses; the chapter's training loops live in nodebook.experiments.cnf).

def reverse_kl_terms(model: nn.Module, log_target, num_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(log q(z1) [N], log p~(z1) [N]) for ``num_samples`` base points z0 ~ N(0, I) flowed forward.

    ``model``: a CNF or a generative PlanarFlow (both have
    ``sample_with_log_prob``); ``log_target``: z [N, 2] -> [N], unnormalised.
    """
    ref = next(model.parameters())
    z0 = torch.randn(num_samples, 2, dtype=ref.dtype, device=ref.device)
    z1, logq = model.sample_with_log_prob(z0)
    return logq, log_target(z1)


def reverse_kl(model: nn.Module, log_target, num_samples: int, beta: float = 1.0) -> torch.Tensor:
    """E_q[log q(z1) - beta log p~(z1)] for z0 ~ N(0, I) flowed forward (paper, Fig. 4).

    At ``beta = 1`` this equals KL(q || p) - log Z, so adding log Z gives the
    KL divergence in nats. ``beta < 1`` is the annealed objective of Rezende &
    Mohamed (2015, Sec. 6.1): a flattened target early in training keeps a
    flow from settling on one mode.
    """
    logq, logp = reverse_kl_terms(model, log_target, num_samples)
    return (logq - beta * logp).mean()


def negative_log_likelihood(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """-mean log p(x) over points x [N, D] (paper, Fig. 5/6), for a CNF or a normalising PlanarFlow."""
    return -model.log_prob(x).mean()


__all__ = ["CNF", "PlanarDynamics", "MLPDynamics", "HyperNetwork", "AugmentedDynamics",
           "trace_exact", "trace_hutchinson", "hutchinson_noise", "reverse_kl", "reverse_kl_terms", "negative_log_likelihood",
           "standard_normal_logprob"]
