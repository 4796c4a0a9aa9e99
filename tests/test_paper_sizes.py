"""The paper's model sizes, pinned: every profile that claims the paper's models uses them, and the
models' defaults are the paper's (Sec. 3, 4.1, 5.1; see ../shared/REPRODUCTION.md)."""

import inspect

import pytest

from nodebook.experiments import mnist as mnist_experiments
from nodebook.models import latent_ode, mnist, rnn
from nodebook.profiles import get_profile

# Sec. 5.1: recognition RNN with 25 hidden units, 4-d latent space, dynamics and decoder with 20 units;
# the RNN baselines have 25 hidden units.
LATENT_ODE_SIZES = {"latent_dim": 4, "encoder_hiddens": 25, "dynamics_hiddens": 20, "decoder_hiddens": 20,
                    "rnn_hiddens": 25}


@pytest.mark.parametrize("profile", ["book", "paper"])
def test_latent_ode_profiles_use_the_papers_sizes(profile):
    settings = get_profile("latent_ode", profile)
    assert {k: settings[k] for k in LATENT_ODE_SIZES} == LATENT_ODE_SIZES


def _defaults(cls) -> dict:
    return {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty}


def test_model_defaults_are_the_papers():
    assert _defaults(rnn.RNNForecaster)["num_hiddens"] == 25
    model = _defaults(latent_ode.LatentODE)
    assert {k: model[k] for k in ("latent_dim", "encoder_hiddens", "dynamics_hiddens", "decoder_hiddens")} == \
        {k: LATENT_ODE_SIZES[k] for k in ("latent_dim", "encoder_hiddens", "dynamics_hiddens", "decoder_hiddens")}


@pytest.mark.parametrize("profile", ["book", "paper"])
def test_cnf_profiles_use_the_papers_widths(profile):
    settings = get_profile("cnf", profile)
    assert settings["widths"] == [2, 8, 32] and settings["ml_width"] == 64  # Fig. 4 and Fig. 5/6


def test_mnist_models_are_the_papers():
    """64 channels, 6 residual blocks, 300 hidden units: the public code's parameter counts."""
    assert mnist.NUM_CHANNELS == 64
    assert _defaults(mnist.MLP)["num_hiddens"] == 300
    assert mnist.count_parameters(mnist.resnet()) == mnist.PUBLIC_RERUN_PARAMS["resnet"]
    solver = mnist_experiments.ADAPTIVE["odenet"]
    assert mnist.count_parameters(mnist_experiments.build("odenet", solver)) == mnist.PUBLIC_RERUN_PARAMS["odenet"]
    rknet = mnist_experiments.build("rknet", mnist_experiments.ADAPTIVE["rknet"])
    assert mnist.count_parameters(rknet) == mnist.PUBLIC_RERUN_PARAMS["odenet"]  # the same dynamics
    assert rknet.ode_block.method == "dopri5" and not rknet.ode_block.adjoint
    assert (solver.method, solver.tol, solver.adjoint) == ("dopri5", 1e-3, True)  # Sec. 3 and Sec. 6
    assert get_profile("mnist", "paper")["tol"] == 1e-3
