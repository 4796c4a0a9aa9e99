"""nodebook.experiments.trajectory: run keys, the models compared, and the roughness measure."""

import pytest
import torch

from nodebook.experiments import trajectory as experiments
from nodebook.profiles import get_profile


@pytest.fixture(scope="module")
def settings():
    return get_profile("trajectory", "smoke")


def test_run_keys_separate_cells_rates_and_inputs(settings):
    base = experiments.run_key("rnn", settings, 0, cell="gru", lr=0.01)
    assert base != experiments.run_key("rnn", settings, 0, cell="relu", lr=0.01)
    assert base != experiments.run_key("rnn", settings, 0, cell="gru", lr=0.03)
    # the RNN's key does not depend on the ODE's input feature, the ODE's does
    assert base == experiments.run_key("rnn", dict(settings, cubic=not settings.cubic), 0, cell="gru", lr=0.01)
    assert experiments.run_key("ode", settings, 0) != experiments.run_key("ode", dict(settings, cubic=not settings.cubic), 0)
    with pytest.raises(ValueError, match="learning rate"):
        experiments.run_key("rnn", settings, 0)


def test_the_comparison_has_the_ode_with_both_inputs_and_every_cell(settings):
    models = experiments.extrapolation_models(settings)
    assert models["ODE"] == ("ode", "gru", False) and models["ODE (y³)"] == ("ode", "gru", True)
    assert [label for label in models if label.startswith("RNN")] == [f"RNN {c}" for c in settings.rnn_cells]


def test_rnn_gets_at_least_the_odes_iterations(settings):
    data = experiments.make_data(settings, 0)
    with pytest.raises(ValueError, match="at least"):
        experiments.train("rnn", data, dict(settings, rnn_steps=settings.split_steps - 1), lr=0.01)


def test_roughness_is_one_for_the_truth_and_large_for_a_zigzag():
    t = torch.linspace(0, 6, 200)
    truth = torch.stack([torch.cos(t), torch.sin(t)], dim=1)
    assert experiments.roughness(truth, truth) == pytest.approx(1.0)
    zigzag = truth + 0.05 * torch.tensor([1.0, -1.0]).repeat(100)[:, None]
    assert experiments.roughness(zigzag, truth) > 10
    with pytest.raises(ValueError, match="same shape"):
        experiments.roughness(truth[:2], truth[:2])
