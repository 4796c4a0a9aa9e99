"""The latent ODE of the paper's Sec. 5 (Fig. 6, Table 2): chapter "Latent ODEs for
irregularly sampled time series" (``book/05_latent_ode.ipynb``).

Generative model (paper, Eq. 11-13)::

    z(t0) ~ N(0, I)
    z(t1), ..., z(tN) = ODESolve(z(t0), f_θ, t0, ..., tN)
    x(ti) ~ N(decoder(z(ti)), σ² I)

Recognition model: an RNN run *backwards* in time over the observations (each
with its time gap) gives the mean and log-variance of the Gaussian posterior
q(z(t0) | x). Training maximises the ELBO (reconstruction log-likelihood minus
KL(q || prior)) with the reparameterisation trick. The training runs are in
``nodebook.experiments.latent_ode``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from nodebook import odeint, odeint_adjoint


class Encoder(nn.Module):
    """GRU with ``num_hiddens`` units over the observations in reverse time order.

    Input per observation: ``(y_i, Δ_i)`` with ``Δ_i = t_i - t_{i-1}`` (``t_0 = 0``
    for the first), so the encoder knows when each point was seen. ``forward(y,
    gaps)`` with ``y`` (B, n, d), ``gaps`` (B, n) returns ``(mean, logvar)``, each (B, latent_dim).
    """

    def __init__(self, obs_dim: int = 2, num_hiddens: int = 25, latent_dim: int = 4):
        super().__init__()
        self.rnn = nn.GRU(obs_dim + 1, num_hiddens, batch_first=True)
        self.out = nn.Linear(num_hiddens, 2 * latent_dim)

    def forward(self, y: torch.Tensor, gaps: torch.Tensor):
        inputs = torch.cat([y, gaps[..., None]], dim=-1).flip(1)  # last observation first
        _, h = self.rnn(inputs)
        mean, logvar = self.out(h[0]).chunk(2, dim=-1)
        return mean, logvar


class LatentDynamics(nn.Module):
    """``dz/dt = f_θ(z)``: ``num_layers`` hidden layers of ``num_hiddens`` ELU units (the paper's text:
    one; the public code's ``LatentODEfunc``: two). ``z`` (..., latent_dim)."""

    def __init__(self, latent_dim: int = 4, num_hiddens: int = 20, num_layers: int = 1):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"the latent dynamics need at least one hidden layer, got num_layers={num_layers}")
        layers, width = [], latent_dim
        for _ in range(num_layers):
            layers += [nn.Linear(width, num_hiddens), nn.ELU()]
            width = num_hiddens
        self.net = nn.Sequential(*layers, nn.Linear(num_hiddens, latent_dim))

    def forward(self, t, z):
        return self.net(z)


class LatentODE(nn.Module):
    """Encoder, latent dynamics and decoder (one hidden layer of ``decoder_hiddens`` ReLU units).

    ``solver`` (``method``, ``rtol``, ``atol``, ``options``) goes to the ODE
    solve; ``adjoint=True`` uses :func:`nodebook.odeint_adjoint` (the paper's
    constant-memory gradients), else backpropagation through the solver steps.
    """

    def __init__(self, obs_dim: int = 2, latent_dim: int = 4, encoder_hiddens: int = 25,
                 dynamics_hiddens: int = 20, decoder_hiddens: int = 20, adjoint: bool = False,
                 dynamics_layers: int = 1, **solver):
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = Encoder(obs_dim, encoder_hiddens, latent_dim)
        self.func = LatentDynamics(latent_dim, dynamics_hiddens, dynamics_layers)
        self.decoder = nn.Sequential(nn.Linear(latent_dim, decoder_hiddens), nn.ReLU(),
                                     nn.Linear(decoder_hiddens, obs_dim))
        self.adjoint = adjoint
        self.solver = dict(solver)

    def latent_path(self, z0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Solve from ``z0`` (B, latent) at ``t[0]`` over ``t`` (T,): returns (B, T, latent)."""
        solve = odeint_adjoint if self.adjoint else odeint
        return solve(self.func, z0, t, **self.solver).transpose(0, 1)

    def forward(self, y: torch.Tensor, gaps: torch.Tensor, t: torch.Tensor, sample: bool = True):
        """Encode observations ``y`` (B, n, d) with ``gaps`` (B, n), decode on the grid ``t`` (T,).

        ``z0`` is drawn from the posterior (``sample=True``) or is its mean.
        Returns ``(x (B, T, d), z (B, T, latent), mean, logvar)``.
        """
        mean, logvar = self.encoder(y, gaps)
        z0 = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean) if sample else mean
        z = self.latent_path(z0, t)
        return self.decoder(z), z, mean, logvar


def gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, std: float) -> torch.Tensor:
    """Elementwise ``log N(x; mean, std²)``."""
    return -0.5 * (((x - mean) / std) ** 2 + 2 * math.log(std) + math.log(2 * math.pi))


def kl_standard_normal(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mean, exp(logvar)) || N(0, I))`` summed over the last dimension."""
    return 0.5 * torch.sum(mean ** 2 + logvar.exp() - 1.0 - logvar, dim=-1)


def elbo(model: LatentODE, y: torch.Tensor, index: torch.Tensor, gaps: torch.Tensor,
         t_grid: torch.Tensor, noise_std: float, kl_weight: float = 1.0):
    """The negative ELBO per spiral, averaged over the batch, and its parts.

    ``y`` (B, n, d) observations at grid positions ``index`` (B, n) of the
    shared grid ``t_grid`` (T,); every spiral's path is solved once on the whole
    grid (the union of all observation times) and read off at its own
    observation times. ``noise_std`` is the observation model's σ.
    Returns ``(loss, {"log_likelihood", "kl"})`` (per-spiral means, as floats).
    """
    x, _, mean, logvar = model(y, gaps, t_grid)
    x_obs = torch.gather(x, 1, index[..., None].expand(-1, -1, x.shape[-1]))
    log_likelihood = gaussian_log_likelihood(y, x_obs, noise_std).sum(dim=(1, 2))
    kl = kl_standard_normal(mean, logvar)
    loss = -(log_likelihood - kl_weight * kl).mean()
    return loss, {"log_likelihood": log_likelihood.mean().item(), "kl": kl.mean().item()}


@torch.no_grad()
def predict(model: LatentODE, y: torch.Tensor, gaps: torch.Tensor, t: torch.Tensor):
    """Posterior-mean path on the grid ``t`` (T,): ``(x (B, T, d), z (B, T, latent))``."""
    model.eval()
    x, z, _, _ = model(y, gaps, t, sample=False)
    return x, z
