"""The CNF chapter's runs, evaluations, tables and Hutchinson study (nodebook.experiments.cnf)."""

from functools import partial

import pytest
import torch

from nodebook.data import toy2d
from nodebook.experiments import cnf as ex
from nodebook.train import training_curves
from nodebook.models.cnf import CNF, PlanarDynamics
from nodebook.models.planar import PlanarFlow
from nodebook.profiles import get_profile
from nodebook.utils import REPO_ROOT


def test_slugs_name_targets_and_data_sets():
    assert [ex.slug(t) for t in toy2d.TARGETS] == ["ring", "wave", "two_waves"]
    assert [ex.slug(d) for d in toy2d.SAMPLERS] == ["two_circles", "two_moons"]


def test_run_keys_hold_exactly_what_determines_a_run():
    book = get_profile("cnf", "book")
    nf = ex.run_key({"target": "ring"}, "nf", 32, 50000, 128, book, 0, ("adam", 0.001))
    flat = [ex.FLAT_NATS, ex.FLAT_RELATIVE, book.max_factor]
    assert nf == dict(target="ring", kind="nf", width=32, iterations=50000, batch_size=128, lr=0.001, seed=0,
                      optimizer="adam", anneal_iterations=book.anneal_iterations, until_flat=flat)
    ml = ex.run_key({"data": "two_moons"}, "cnf", 64, 10000, 256, book, 1, ("adam", 0.003))
    assert ml == dict(data="two_moons", kind="cnf", width=64, iterations=10000, batch_size=256, lr=0.003, seed=1,
                      optimizer="adam", until_flat=flat, method="dopri5", tol=1e-05)  # no annealing in ML
    smoke = get_profile("cnf", "smoke")  # a fixed-step training solver: the step size matters, no tolerance
    assert ex.solver_key(smoke) == {"method": "rk4", "step_size": smoke.train_step_size}
    # settings of other runs, of the evaluation or of the Hutchinson study leave the keys alone
    other = dict(book, train_step_size=0.5, eval_tol=0.1, hutch_dims=[3], widths=[1], num_chunks=3,
                 optimizers_nf=[["sgd", 1.0]])
    assert ex.run_key({"target": "ring"}, "nf", 32, 50000, 128, other, 0, ("adam", 0.001)) == nf
    assert ex.run_key({"data": "two_moons"}, "cnf", 64, 10000, 256, other, 1, ("adam", 0.003)) == ml


def test_the_book_profile_trains_as_the_issue_asks():
    """The CNF adaptively at the paper's tolerance, the NF at least as many iterations, three seeds."""
    book = get_profile("cnf", "book")
    assert book.train_method == "dopri5" and book.train_tol == 1e-05
    assert book.match_iterations_nf >= book.match_iterations_cnf and book.ml_iterations_nf >= book.ml_iterations_cnf
    assert book.tune_iterations_nf >= book.match_iterations_cnf
    assert len(book.ml_seeds) >= 3 and len(book.hutch_seeds) >= 3


def test_every_book_run_loads_from_a_committed_checkpoint(monkeypatch):
    """Every run of the chapter at ``book`` loads (no training: NODEBOOK_NO_TRAIN), and no other
    CNF checkpoint is committed."""
    monkeypatch.setenv("NODEBOOK_NO_TRAIN", "1")
    monkeypatch.delenv("NODEBOOK_CHECKPOINTS", raising=False)
    P = get_profile("cnf", "book")
    sweeps, optimizers = [], {}
    for kind in ex.KINDS:
        tuned = ex.tune_optimizer(kind, P)
        assert set(tuned["kl"]) == {tuple(o) for o in P[f"optimizers_{kind}"]}
        optimizers[kind] = tuned["choice"]
        sweeps += list(tuned["runs"].values())
    matched = ex.density_matching_runs(P, optimizers)
    repeats = ex.repeated_matching_runs(P, optimizers, ex.close_pairs(matched, P.close_ratio))
    runs = sweeps + list(matched.values()) + list(repeats.values())
    runs += [ex.annealing_ablation(P, optimizers["nf"])]
    for seed in P.ml_seeds:
        runs += list(ex.max_likelihood_runs(P, optimizers, seed=seed).values())
    runs += list(ex.hutchinson_training_runs(P).values())
    assert all(run.source == "loaded" for _, run in runs)
    used = {run.path.name for _, run in runs}
    committed = {p.name for p in (REPO_ROOT / "checkpoints").glob("cnf-*.pt")}
    assert committed == used


def test_runs_train_then_load_from_their_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("NODEBOOK_CHECKPOINTS", str(tmp_path))
    settings = dict(get_profile("cnf", "smoke"), match_iterations_cnf=4, match_iterations_nf=4,
                    ml_iterations_cnf=4, ml_iterations_nf=4, batch_size=16, ml_batch_size=16, widths=[2])
    model, run = ex.match_density("wave (U2)", "cnf", 2, settings, ("adam", 0.003))
    assert run.source == "trained" and len(run.history) == settings["num_chunks"]
    again, loaded = ex.match_density("wave (U2)", "cnf", 2, settings, ("adam", 0.003))
    assert loaded.source == "loaded" and loaded.history == run.history
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    model, run = ex.fit_max_likelihood("two moons", "nf", settings, ("rmsprop", 0.003))
    assert isinstance(model, PlanarFlow) and "nll" in run.history[0]
    assert sorted(p.name.split("-")[2] for p in tmp_path.glob("*.pt")) == ["two_moons", "wave"]


def test_evaluation_and_tables():
    settings = dict(get_profile("cnf", "smoke"), widths=[2], eval_samples=64, grid_size=6, ml_grid_size=6,
                    test_size=32, num_plot_samples=8, fractions=[0.5, 1.0])
    matched = {("ring (U1)", kind, 2): (ex.build(kind, 2, settings), None) for kind in ex.KINDS}
    kl, learned, targets, extent = ex.evaluate_density_matching(matched, settings)
    assert set(kl) == set(matched) and all(v.shape == (36,) for v in learned.values())
    assert set(targets) == set(toy2d.TARGETS) and extent == (-4.0, 4.0, -4.0, 4.0)
    assert "| ring (U1) |" in ex.kl_table(kl, [2]).data
    ml = {(data, kind): (ex.build(kind, 4, settings), None) for data in toy2d.SAMPLERS for kind in ("cnf", "nf")}
    nll, mass = ex.evaluate_max_likelihood(ml, settings)
    assert set(nll) == set(mass) == set(ml) and all(v > 0 for v in nll.values())
    stages, _ = ex.stage_pictures(ml, settings)
    samples, densities = stages["two moons", "cnf"]
    assert len(samples) == 2 and samples[0].shape == (8, 2) and densities[1].shape == (36,)
    assert "| two moons |" in ex.nll_seed_table(ex.nll_over_seeds({0: nll, 1: nll}), 4, 2).data
    table = ex.summary_table(kl, nll, 2, 4, 3.0, 8).data
    assert "KL, ring (U1), CNF M=2" in table and "3.0×" in table


def test_flow_stages_at_fractions():
    torch.manual_seed(0)
    flow = PlanarFlow(20)
    z0 = torch.randn(6, 2)
    points, _, _ = toy2d.grid(3.0, 5)
    samples, densities = ex.flow_stages(flow, [0.05, 1.0], z0, points)
    assert torch.allclose(samples[1], flow.sample(z0), atol=1e-5)
    assert torch.allclose(samples[0], flow.layers[19].inverse(z0), atol=1e-5)  # 5% of 20 layers: the last one undone
    with torch.no_grad():
        assert torch.allclose(densities[1], flow.log_prob(points).exp())
    cnf = CNF(PlanarDynamics(2, 4), trace="analytic", rtol=1e-6, atol=1e-6)
    samples, densities = ex.flow_stages(cnf, [0.5], z0, points)
    assert torch.allclose(samples[0], cnf.sample(z0, t=0.5))
    assert densities[0].shape == (25,)


def test_hutchinson_study_shapes_and_unbiasedness():
    cost, spread, zscores = ex.hutchinson_study([2, 3], iterations=1, tol=1e-3, num_points=2, draws=64)
    assert set(cost) == {"exact", "hutchinson"} and all(len(v["seconds"]) == 2 for v in cost.values())
    assert all(n > 0 for v in cost.values() for n in v["nfe"])
    assert all(len(v) == 2 and all(s > 0 for s in v) for v in spread.values())
    assert max(max(v) for v in zscores.values()) < 5
    assert "| 3 |" in ex.hutchinson_table([2, 3], cost, spread, zscores).data


def test_annealing_weight_rises_from_a_hundredth_to_one():
    assert ex.annealing_weight(0, 100) == 0.01
    assert abs(ex.annealing_weight(50, 100) - 0.51) < 1e-12
    assert ex.annealing_weight(99, 100) == 1.0 and ex.annealing_weight(10**6, 100) == 1.0
    assert ex.annealing_weight(0, 0) == 1.0  # no annealing
    with pytest.raises(ValueError, match="anneal_iterations"):
        ex.annealing_weight(0, -1)


def test_annealed_step_resumes_its_schedule_and_logs_the_kl(monkeypatch):
    seen = []
    real = ex.annealing_weight
    monkeypatch.setattr(ex, "annealing_weight", lambda i, n: seen.append(i) or real(i, n))
    torch.manual_seed(0)
    flow = PlanarFlow(2)
    optimizer = torch.optim.Adam(flow.parameters(), 1e-3)
    target = partial(toy2d.log_target, "ring (U1)")
    step = ex.density_matching_step(flow, target, optimizer, 8, 3, anneal_iterations=10, log_Z=1.5)
    row = step(2)  # a resumed run: chunk 2 starts at iteration 6
    assert seen == [6, 7, 8] and set(row) == {"loss", "kl", "nfe"} and row["nfe"] == 0
    # kl = unannealed loss + log Z: with beta = 1 throughout, kl - loss is exactly log Z
    plain = ex.density_matching_step(flow, target, optimizer, 8, 1, anneal_iterations=0, log_Z=1.5)(0)
    assert abs(plain["kl"] - plain["loss"] - 1.5) < 1e-5


def test_tuning_keeps_the_lowest_final_kl(tmp_path, monkeypatch):
    monkeypatch.setenv("NODEBOOK_CHECKPOINTS", str(tmp_path))
    settings = dict(get_profile("cnf", "book"), widths=[2], match_iterations_nf=6, tune_iterations_nf=4,
                    num_chunks=2, batch_size=8,
                    optimizers_nf=[["adam", 1e-3], ["sgd", 1e9]])  # the absurd rate diverges or does worse
    finals = {}
    real = ex.match_density

    def spy(*args, **kwargs):
        model, run = real(*args, **kwargs)
        finals[kwargs["optimizer"]] = ex.final_kl(run)
        return model, run
    monkeypatch.setattr(ex, "match_density", spy)
    tuned = ex.tune_optimizer("nf", settings)
    assert tuned["kl"] == finals and tuned["choice"] == min(finals, key=finals.get)
    assert len(list(tmp_path.glob("cnf-match-two_waves-nf2-*.pt"))) == 2  # one checkpoint per optimizer
    # the sweep trains tune_iterations_nf, not the runs' match_iterations_nf
    keys = [torch.load(path, weights_only=False)["settings"] for path in tmp_path.glob("cnf-match-*.pt")]
    assert [key["iterations"] for key in keys] == [4, 4]


def test_a_curve_still_falls_only_by_more_than_both_margins():
    flat = [1.0] * 8 + [0.995] * 2  # drops 0.005 nats: under FLAT_NATS
    assert not ex.still_falling(flat)
    assert ex.still_falling([1.0] * 8 + [0.9] * 2)  # 0.1 nats and 11%
    assert not ex.still_falling([10.0] * 8 + [9.8] * 2)  # 0.2 nats but 2%: flat at this scale
    assert not ex.still_falling([0.5] * 8 + [0.6] * 2)  # rising is not falling
    with pytest.raises(ValueError, match="too short"):
        ex.still_falling([1.0])


def test_cost_and_tuning_tables_and_curves():
    from nodebook.checkpoint import Run
    from pathlib import Path
    rows = [dict(step=i, seconds=30.0, kl=1.0 / (i + 1), nfe=20 + i) for i in range(4)]
    runs = {("ring (U1)", "cnf", 2): (None, Run("a", Path("a.pt"), "loaded", rows)),
            ("wave (U2)", "cnf", 2): (None, Run("b", Path("b.pt"), "loaded", rows))}
    table = ex.cost_table(runs, lambda key: f"{key[1]}{key[2]}").data
    assert "| cnf2 | 2 | 2.0 | 20 → 23 |" in table  # 4 chunks of 30 s = 2 minutes per run
    curves = training_curves(runs, "kl", lambda key: key[0], lambda key: key[1], lambda key: 400)
    assert curves["ring (U1)", "cnf"] == ([100, 200, 300, 400], [1.0, 0.5, 1 / 3, 0.25])
    tuned = {"nf": {"choice": ("adam", 0.001), "kl": {("adam", 0.001): 0.1, ("rmsprop", 0.003): 0.2}}}
    assert "| NF | adam | 0.001 | **0.1000** |" in ex.tuning_table(tuned).data
    assert "| NF | rmsprop | 0.003 | 0.2000 |" in ex.tuning_table(tuned).data


def test_nll_over_seeds_and_its_table():
    by_seed = {0: {("two moons", "cnf"): 1.0, ("two moons", "nf"): 2.0},
               1: {("two moons", "cnf"): 3.0, ("two moons", "nf"): 2.0}}
    summary = ex.nll_over_seeds(by_seed)
    assert summary["two moons", "cnf"] == (2.0, pytest.approx(2 ** 0.5)) and summary["two moons", "nf"] == (2.0, 0.0)
    assert "| two moons | 2.000 ± 1.414 | 2.000 ± 0.000 |" in ex.nll_seed_table(summary, 64, 2).data


def test_kl_standard_errors_shrink_with_samples():
    settings = dict(get_profile("cnf", "smoke"), widths=[2], grid_size=4)
    matched = {("ring (U1)", "nf", 2): (ex.build("nf", 2, settings), None)}
    errors = {}
    for samples in (256, 4096):
        se = {}
        kl, *_ = ex.evaluate_density_matching(matched, dict(settings, eval_samples=samples), standard_errors=se)
        errors[samples] = se["ring (U1)", "nf", 2]
    assert 2 < errors[256] / errors[4096] < 8  # about sqrt(16) = 4


def test_gaussian_entropy_is_the_floor_of_the_nll():
    L = ex.gaussian_factor(5, torch.Generator().manual_seed(5))
    exact = torch.distributions.MultivariateNormal(torch.zeros(5), scale_tril=L)
    assert abs(ex.gaussian_entropy(L) - exact.entropy().item()) < 1e-5
    x = ex.correlated_gaussian(5, torch.Generator().manual_seed(5))(200000)
    assert abs(-exact.log_prob(x).mean().item() - ex.gaussian_entropy(L)) < 0.02  # the sampler draws N(0, L L^T)


def test_hutchinson_training_keys_runs_and_exact_evaluation(tmp_path, monkeypatch):
    monkeypatch.setenv("NODEBOOK_CHECKPOINTS", str(tmp_path))
    settings = dict(get_profile("cnf", "smoke"), hutch_train_dim=3, hutch_train_iterations=4, hutch_train_batch=8,
                    hutch_seeds=[0, 1], num_chunks=2, test_size=64)
    assert "noise" not in ex.hutchinson_key("exact", settings, 0)
    assert ex.hutchinson_key("hutchinson", settings, 0)["noise"] == settings["hutch_train_noise"]
    with pytest.raises(ValueError, match="unknown trace"):
        ex.hutchinson_key("analytic", settings, 0)
    runs = ex.hutchinson_training_runs(settings)
    assert set(runs) == {(t, s) for t in ex.HUTCH_TRACES for s in (0, 1)}
    assert runs["hutchinson", 0][0].dynamics.trace == "hutchinson"
    nll, entropy = ex.evaluate_with_exact_trace(runs, settings)
    assert runs["hutchinson", 0][0].dynamics.trace == "hutchinson"  # restored after the exact evaluation
    assert all(value > entropy - 0.5 for value in nll.values())  # no model beats the floor (up to sampling)
    # the exact evaluation of a Hutchinson-trained model does not depend on the probe: two calls agree
    again, _ = ex.evaluate_with_exact_trace({k: runs[k] for k in [("hutchinson", 0)]}, settings)
    assert again["hutchinson", 0] == pytest.approx(nll["hutchinson", 0], abs=1e-6)


def test_trained_trace_table():
    from nodebook.checkpoint import Run
    from pathlib import Path
    run = Run("a", Path("a.pt"), "loaded", [dict(step=0, seconds=120.0, nll=20.0, nfe=30.0)])
    runs = {(trace, seed): (None, run) for trace in ex.HUTCH_TRACES for seed in (0, 1)}
    table = ex.trained_trace_table(runs, {"exact": (20.0, 0.1), "hutchinson": (20.2, 0.2)}, 19.5).data
    assert "| exact | 20.000 ± 0.100 | 0.500 | 2.0 | 30 |" in table
    assert "| hutchinson | 20.200 ± 0.200 | 0.700 | 2.0 | 30 |" in table


def test_the_annealing_ablation_differs_from_its_run_only_in_the_annealing(tmp_path, monkeypatch):
    monkeypatch.setenv("NODEBOOK_CHECKPOINTS", str(tmp_path))
    settings = dict(get_profile("cnf", "book"), widths=[2, 3], match_iterations_nf=4, num_chunks=2, batch_size=8)
    _, ablation = ex.annealing_ablation(settings, ("adam", 0.001))
    _, annealed = ex.match_density(ex.ABLATION_TARGET, "nf", 3, settings, optimizer=("adam", 0.001))
    keys = [torch.load(run.path, weights_only=False)["settings"] for run in (ablation, annealed)]
    assert {k: v for k, v in keys[0].items() if keys[1][k] != v} == {"anneal_iterations": 0}


def test_a_run_trains_on_until_its_curve_is_flat(tmp_path, monkeypatch):
    """With ``max_factor``, a run trains its iterations, then goes on while its curve still falls, at most
    ``max_factor`` times as long; the rule is part of the key."""
    monkeypatch.setenv("NODEBOOK_CHECKPOINTS", str(tmp_path))
    settings = dict(get_profile("cnf", "book"), widths=[2], match_iterations_nf=4, num_chunks=2, batch_size=8,
                    max_factor=3)
    steps, done = ex.training_budget(settings, "kl")
    assert steps == 6 and not done([{"kl": 1.0}]) and done([{"kl": 1.0}, {"kl": 1.0}])
    assert not done([{"kl": 9.0}, {"kl": 1.0}])  # still falling: go on
    falling = iter([5.0, 4.0, 3.0, 2.0, 1.0, 0.5, 0.25])
    monkeypatch.setattr(ex, "density_matching_step", lambda *a, **k: lambda step: {"kl": next(falling)})
    _, run = ex.match_density("wave (U2)", "nf", 2, settings, optimizer=("adam", 0.001))
    assert len(run.history) == 6  # never flat: stopped at max_factor x num_chunks
    key = ex.run_key({"target": "wave"}, "nf", 2, 4, 8, settings, 0, ("adam", 0.001))
    assert key["until_flat"] == [ex.FLAT_NATS, ex.FLAT_RELATIVE, 3]
    with pytest.raises(ValueError, match="max_factor"):
        ex.training_budget(dict(settings, max_factor=0.5), "kl")


def test_paper_cost_projects_the_measured_seconds_per_iteration():
    from pathlib import Path

    from nodebook.checkpoint import Run
    settings = dict(get_profile("cnf", "smoke"), match_iterations_nf=8, match_iterations_cnf=4, num_chunks=2)
    paper = dict(settings, match_iterations_nf=800, match_iterations_cnf=40, max_factor=5)
    history = [dict(step=0, seconds=2.0, kl=1.0), dict(step=1, seconds=2.0, kl=1.0)]  # 4 s for 8 NF iterations
    runs = {("ring (U1)", "nf", 2): (None, Run("a", Path("a.pt"), "loaded", history)),
            ("wave (U2)", "nf", 2): (None, Run("b", Path("b.pt"), "loaded", history + history[:1]))}  # 6 s, 12
    cost = ex.paper_cost(runs, settings, paper)
    assert set(cost) == {"nf"} and cost["nf"]["seconds_per_iteration"] == pytest.approx(10 / 20)
    assert cost["nf"]["hours_min"] == pytest.approx(0.5 * 800 * 2 / 3600)
    assert cost["nf"]["hours_max"] == pytest.approx(5 * cost["nf"]["hours_min"])
    with pytest.raises(ValueError, match="part"):
        ex.paper_cost(runs, settings, paper, part="hutch")


def test_command_line_rejects_seeds_outside_the_profile(capsys):
    """``--seeds`` only selects among the profile's ml_seeds, and says which it does not know, before training."""
    with pytest.raises(SystemExit):
        ex.main(["--kinds", "nf", "--parts", "ml", "--seeds", "0", "97"])
    assert "--seeds [97] are not among the profile's ml_seeds" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ex.main(["--kinds", "nf", "--parts", "repeats", "--seeds", "1", "5"])
    assert "--seeds [5] are not among the profile's match_seeds" in capsys.readouterr().err


def test_close_pairs_are_the_comparisons_one_seed_cannot_rank():
    from pathlib import Path

    from nodebook.checkpoint import Run

    def run(kl):
        return None, Run("r", Path("r.pt"), "loaded", [dict(step=0, kl=kl)])
    matched = {("ring", "nf", 2): run(0.7), ("ring", "cnf", 2): run(0.08),     # 8.75x apart: ranked
               ("ring", "nf", 8): run(0.05), ("ring", "cnf", 8): run(0.07),    # 1.4x: close
               ("wave", "nf", 8): run(0.02), ("wave", "cnf", 8): run(0.04),    # exactly 2x: close
               ("wave", "nf", 32): run(float("nan")), ("wave", "cnf", 32): run(0.01)}  # diverged: not close
    assert ex.close_pairs(matched, 2.0) == [("ring", 8), ("wave", 8)]
    assert ex.close_pairs(matched, 1.0) == []
    with pytest.raises(ValueError, match="close_ratio"):
        ex.close_pairs(matched, 0.5)


def test_repeats_train_both_families_of_each_close_pair_with_the_other_seeds(tmp_path, monkeypatch):
    monkeypatch.setenv("NODEBOOK_CHECKPOINTS", str(tmp_path))
    settings = dict(get_profile("cnf", "book"), widths=[2], match_iterations_nf=4, match_iterations_cnf=2,
                    num_chunks=2, batch_size=8, max_factor=1, train_method="rk4", train_step_size=0.5,
                    match_seeds=[0, 1, 2], anneal_iterations=1)
    optimizers = {"nf": ("adam", 1e-3), "cnf": ("adam", 1e-3)}
    runs = ex.repeated_matching_runs(settings, optimizers, [("wave (U2)", 2)], seed=1)
    assert set(runs) == {("wave (U2)", kind, 2, s) for kind in ("cnf", "nf") for s in (0, 2)}
    assert {torch.load(p, weights_only=False)["settings"]["seed"] for p in tmp_path.glob("cnf-match-*.pt")} == {0, 2}
    only = ex.repeated_matching_runs(settings, optimizers, [("wave (U2)", 2)], seed=1, kinds=["nf"], seeds=[2])
    assert set(only) == {("wave (U2)", "nf", 2, 2)}


def test_the_repeats_part_needs_the_first_seed_of_both_families(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NODEBOOK_CHECKPOINTS", str(tmp_path))  # nothing committed here: nothing to repeat yet
    monkeypatch.delenv("NODEBOOK_NO_TRAIN", raising=False)
    with pytest.raises(SystemExit):
        ex.main(["--kinds", "cnf", "--parts", "repeats"])
    assert "--parts repeats needs every Fig. 4 run of both families first" in capsys.readouterr().err
    import os
    assert "NODEBOOK_NO_TRAIN" not in os.environ  # training_disabled restored the environment


def test_kl_estimates_key_repeated_runs_and_match_the_evaluation():
    settings = dict(get_profile("cnf", "smoke"), widths=[2], grid_size=4, eval_samples=512)
    model = ex.build("nf", 2, settings)
    se = {}
    kl, *_ = ex.evaluate_density_matching({("ring (U1)", "nf", 2): (model, None)}, settings, seed=3, standard_errors=se)
    repeated = ex.kl_estimates({("ring (U1)", "nf", 2, 1): (model, None)}, settings, seed=3)
    # the same model and evaluation seed: the same estimate, whatever the key's seed says
    assert repeated["ring (U1)", "nf", 2, 1] == pytest.approx((kl["ring (U1)", "nf", 2], se["ring (U1)", "nf", 2]))
    assert kl["ring (U1)", "nf", 2] > 0  # an untrained flow is far from the ring


def test_equal_width_verdicts_rank_only_beyond_the_spread():
    kl = {("ring", "cnf", 2): 0.08, ("ring", "nf", 2): 0.70,       # one seed, far apart: ranked
          ("ring", "cnf", 8): 0.070, ("ring", "nf", 8): 0.075,     # one seed, within 2 SE: tie
          ("wave", "cnf", 8): 0.018, ("wave", "nf", 8): 0.016}     # repeated below
    se = {key: 0.003 for key in kl}
    repeated = {("wave", "cnf", 8, 1): (0.020, 0.001), ("wave", "cnf", 8, 2): (0.019, 0.001),
                ("wave", "nf", 8, 1): (0.010, 0.001), ("wave", "nf", 8, 2): (0.013, 0.001)}
    summary = ex.kl_over_seeds(kl, se, repeated)
    assert summary["ring", "nf", 2] == (0.70, 0.003, 1)
    mean, spread, seeds = summary["wave", "nf", 8]
    assert seeds == 3 and mean == pytest.approx(0.013) and spread == pytest.approx(0.003)
    verdicts = ex.equal_width_verdicts(summary)
    assert verdicts == {("ring", 2): "CNF lower", ("ring", 8): "tie", ("wave", 8): "NF lower"}
    # a wider spread over the seeds turns the ranking into a tie
    wide = {**repeated, ("wave", "nf", 8, 2): (0.025, 0.001)}
    assert ex.equal_width_verdicts(ex.kl_over_seeds(kl, se, wide))["wave", 8] == "tie"
    table = ex.equal_width_table(summary, verdicts).data
    assert "| wave | 8 | 0.013 ± 0.003 (3 seeds) | 0.019 ± 0.001 (3 seeds) | NF lower |" in table
    assert "| ring | 2 | 0.700 ± 0.003 (1 seed) | 0.080 ± 0.003 (1 seed) | CNF lower |" in table


def test_kl_against_width_draws_the_spread_as_error_bars():
    import matplotlib
    matplotlib.use("Agg")
    from nodebook.plotting.cnf import plot_kl_vs_width
    kl = {("ring", kind, w): v for kind in ("nf", "cnf") for w, v in ((2, 0.5), (8, 0.05))}
    fig = plot_kl_vs_width(kl, [2, 8], spread={("ring", "nf", 8): 0.01, ("ring", "cnf", 2): 1.0})
    bars = {c.get_label(): c for c in fig.axes[0].containers}
    nf, cnf = bars["NF, ring"], bars["CNF, ring"]
    nf_segments = nf.lines[2][0].get_segments()
    assert [tuple(seg[:, 1].round(4)) for seg in nf_segments] == [(0.5, 0.5), (0.04, 0.06)]
    # the CNF's spread at width 2 exceeds its value: the bar stops above zero on the log axis
    low, high = cnf.lines[2][0].get_segments()[0][:, 1]
    assert 0 < low < 0.5 and high == pytest.approx(1.5)


def test_training_solver_in_words():
    assert ex.training_solver_text(get_profile("cnf", "book")) == "dopri5 at tolerance 1e-05"
    assert ex.training_solver_text(get_profile("cnf", "smoke")) == "rk4 with step 0.25"
