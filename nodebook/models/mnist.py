"""The four MNIST classifiers of the paper's Table 1 (Sec. 3, chapter ``03_mnist``).

All share the downsampling stem of the paper's public code (``odenet_mnist.py``)
and the same head; only the middle differs:

- ``odenet``: one :class:`ODEBlock` integrated over t in [0, 1] with the adjoint
  method (``nodebook.odeint_adjoint``), O(1) memory in depth;
- ``rknet``: the same dynamics, but backprop goes straight through the
  solver's operations (``nodebook.odeint``; rk4 in :func:`rknet`, adaptive
  dopri5 in Table 1's runs), O(steps) memory;
- ``resnet``: six residual blocks, O(L) memory;
- ``mlp``: the 1-layer MLP baseline (LeCun et al. 1998) with 300 hidden units.

Shapes: images ``(B, 1, 28, 28)`` in [0, 1] -> logits ``(B, 10)``; the stem
maps to ``(B, 64, 6, 6)`` (conv3x3 valid: 26x26, then two stride-2 4x4
convolutions: 13x13, 6x6).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from nodebook import odeint, odeint_adjoint, record_stats
from nodebook.solvers.odeint import get_method

NUM_CHANNELS = 64


def norm(dim: int) -> nn.GroupNorm:
    """GroupNorm with min(32, dim) groups, as in the paper's code."""
    return nn.GroupNorm(min(32, dim), dim)


def downsampling_stem(channels: int = NUM_CHANNELS) -> nn.Sequential:
    """(B, 1, 28, 28) -> (B, channels, 6, 6): conv3x3, GN/ReLU, conv4x4/2, GN/ReLU, conv4x4/2."""
    return nn.Sequential(
        nn.Conv2d(1, channels, 3, 1),
        norm(channels), nn.ReLU(inplace=True),
        nn.Conv2d(channels, channels, 4, 2, 1),
        norm(channels), nn.ReLU(inplace=True),
        nn.Conv2d(channels, channels, 4, 2, 1),
    )


def classifier_head(channels: int = NUM_CHANNELS, num_classes: int = 10) -> nn.Sequential:
    """GroupNorm, ReLU, global average pooling, linear ``channels -> num_classes``."""
    return nn.Sequential(norm(channels), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(channels, num_classes))


class ConcatConv2d(nn.Module):
    """3x3 convolution of ``[t, x]``: the time t enters as one extra constant channel."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.conv = nn.Conv2d(dim_in + 1, dim_out, 3, 1, 1)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        tt = torch.ones_like(x[:, :1]) * t
        return self.conv(torch.cat([tt, x], dim=1))


class ODEFunc(nn.Module):
    """The dynamics f(z(t), t, theta) of the ODE block (paper Sec. 3):
    GN, ReLU, ConcatConv3x3, GN, ReLU, ConcatConv3x3, GN. ``forward(t, z)`` keeps z's shape."""

    def __init__(self, dim: int = NUM_CHANNELS):
        super().__init__()
        self.norm1, self.conv1 = norm(dim), ConcatConv2d(dim, dim)
        self.norm2, self.conv2 = norm(dim), ConcatConv2d(dim, dim)
        self.norm3 = norm(dim)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        out = self.conv1(t, self.relu(self.norm1(z)))
        out = self.conv2(t, self.relu(self.norm2(out)))
        return self.norm3(out)


class ODEBlock(nn.Module):
    """z(1) = z(0) + int_0^1 f(z(t), t) dt, solved with ``nodebook``'s solvers.

    ``adjoint=True`` (ODE-Net): gradients by the adjoint method, memory O(1) in
    the number of solver steps. ``adjoint=False`` (RK-Net): backprop through
    the solver's operations. ``method``/``rtol``/``atol``/``options`` go to the
    solver and may be changed after training (Fig. 3a sweeps the tolerance).

    After each forward, ``self.stats`` is the :func:`nodebook.record_stats` log
    of that solve and ``self.nfe_forward`` its number of function evaluations;
    the backward NFE of the adjoint is recorded by a ``record_stats`` block
    around ``loss.backward()`` (see :func:`nodebook.train.train_epoch`).
    """

    def __init__(self, func: nn.Module, *, adjoint: bool = True, method: str = "dopri5",
                 rtol: float = 1e-3, atol: float = 1e-3, options: dict | None = None):
        super().__init__()
        self.func, self.adjoint = func, adjoint
        self.method, self.rtol, self.atol, self.options = method, rtol, atol, options
        self.adjoint_options = None  # passed to odeint_adjoint (e.g. a norm shared across processes)
        self.register_buffer("t", torch.tensor([0.0, 1.0]), persistent=False)
        self.stats = None

    def set_solver(self, method: str, rtol: float = 1e-3, atol: float = 1e-3, options: dict | None = None):
        """Change the solver (e.g. to evaluate a fixed-step-trained model adaptively)."""
        self.method, self.rtol, self.atol, self.options = method, rtol, atol, options

    @contextlib.contextmanager
    def using_solver(self, method: str, rtol: float = 1e-3, atol: float = 1e-3, options: dict | None = None):
        """Temporarily solve with another solver, e.g. adaptive dopri5 for a model trained with rk4."""
        saved = (self.method, self.rtol, self.atol, self.options)
        self.set_solver(method, rtol, atol, options)
        try:
            yield self
        finally:
            self.set_solver(*saved)

    @property
    def adaptive(self) -> bool:
        """Whether the block's solver chooses its own steps (e.g. dopri5)."""
        return get_method(self.method).adaptive

    @property
    def nfe_forward(self) -> int:
        return 0 if self.stats is None else self.stats.nfe_forward

    def forward(self, z0: torch.Tensor) -> torch.Tensor:
        extra = {"adjoint_options": self.adjoint_options} if self.adjoint and self.adjoint_options else {}
        solve = odeint_adjoint if self.adjoint else odeint
        with record_stats() as log:
            z = solve(self.func, z0, self.t.to(z0.dtype), rtol=self.rtol, atol=self.atol,
                      method=self.method, options=self.options, **extra)
        self.stats = log
        return z[-1]


class ResBlock(nn.Module):
    """Pre-activation residual block: z + conv(ReLU(GN(conv(ReLU(GN(z)))))), 3x3, no bias."""

    def __init__(self, dim: int = NUM_CHANNELS):
        super().__init__()
        self.norm1, self.conv1 = norm(dim), nn.Conv2d(dim, dim, 3, 1, 1, bias=False)
        self.norm2, self.conv2 = norm(dim), nn.Conv2d(dim, dim, 3, 1, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.relu(self.norm1(z)))
        out = self.conv2(self.relu(self.norm2(out)))
        return z + out


class ConvClassifier(nn.Module):
    """stem -> middle -> head. ``middle`` is an ODEBlock, a stack of ResBlocks, or empty."""

    def __init__(self, middle: nn.Module):
        super().__init__()
        self.stem, self.middle, self.head = downsampling_stem(), middle, classifier_head()

    @property
    def ode_block(self) -> ODEBlock | None:
        return self.middle if isinstance(self.middle, ODEBlock) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.middle(self.stem(x)))


class MLP(nn.Module):
    """784 -> 300 (ReLU) -> 10: the paper's 1-layer MLP baseline."""

    def __init__(self, num_hiddens: int = 300):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, num_hiddens), nn.ReLU(),
                                 nn.Linear(num_hiddens, 10))
        self.ode_block = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def odenet(method: str = "dopri5", rtol: float = 1e-3, atol: float = 1e-3,
           options: dict | None = None) -> ConvClassifier:
    """ODE-Net: one ODE block, gradients by the adjoint method (208,266 parameters)."""
    return ConvClassifier(ODEBlock(ODEFunc(), adjoint=True, method=method, rtol=rtol, atol=atol,
                                   options=options))


def rknet(num_steps: int = 4) -> ConvClassifier:
    """RK-Net: the ODE-Net's dynamics, backprop through ``num_steps`` rk4 steps over [0, 1]."""
    return ConvClassifier(ODEBlock(ODEFunc(), adjoint=False, method="rk4",
                                   options={"step_size": 1.0 / num_steps}))


def resnet(num_blocks: int = 6) -> ConvClassifier:
    """ResNet: ``num_blocks`` residual blocks (6 in the paper: 576,778 parameters)."""
    return ConvClassifier(nn.Sequential(*[ResBlock() for _ in range(num_blocks)]))


def stem_only() -> ConvClassifier:
    """Stem and head with nothing between: the critique's baseline."""
    return ConvClassifier(nn.Identity())


def mlp(num_hiddens: int = 300) -> MLP:
    return MLP(num_hiddens)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# The paper's Table 1 (test error in %, parameters) and parameter counts of public reruns.
PAPER_TABLE1 = {
    "mlp": {"label": "1-layer MLP", "error": 1.60, "params": 0.24e6, "memory": "–", "time": "–"},
    "resnet": {"label": "ResNet", "error": 0.41, "params": 0.60e6, "memory": "O(L)", "time": "O(L)"},
    "rknet": {"label": "RK-Net", "error": 0.47, "params": 0.22e6, "memory": "O(L̃)", "time": "O(L̃)"},
    "odenet": {"label": "ODE-Net", "error": 0.42, "params": 0.22e6, "memory": "O(1)", "time": "O(L̃)"},
}
PUBLIC_RERUN_PARAMS = {"odenet": 208266, "resnet": 576778}
