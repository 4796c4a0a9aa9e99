"""Profiles, the results scorecard, load-or-train with resume, chapter helpers."""

import json

import pytest
import torch

from nodebook.book import Chapter, toc_chapters
from nodebook.checkpoint import load_or_train, settings_key
from nodebook.profiles import PROFILES, SETTINGS, get_profile
from nodebook.results import FIELDS, save_rows, scorecard_markdown


class TestProfiles:
    def test_every_chapter_defines_every_profile(self):
        for chapter, profiles in SETTINGS.items():
            assert set(profiles) == set(PROFILES), chapter
            # the same knobs at every scale: only values change
            keys = {p: set(s) for p, s in profiles.items()}
            assert keys["smoke"] == keys["book"] == keys["paper"], chapter

    def test_unknown_profile_lists_valid_ones(self):
        with pytest.raises(ValueError, match=r"unknown profile 'fast'.*smoke.*book.*paper"):
            get_profile("solvers", "fast")

    def test_unknown_chapter(self):
        with pytest.raises(ValueError, match="unknown chapter"):
            get_profile("nope", "book")

    def test_attribute_access_and_missing_key(self):
        p = get_profile("solvers", "smoke")
        assert p.tolerances == p["tolerances"]
        with pytest.raises(AttributeError, match="no setting 'lr'"):
            p.lr


def _row(name, ours, profile="book"):
    return {"name": name, "ours": ours, "paper": 1.0, "unit": "%", "profile": profile,
            "device": "cpu", "seconds": 1.0}


class TestResults:
    def test_merge_keeps_other_profiles_and_replaces_same(self, tmp_path):
        save_rows("x", [_row("acc", 1.0), _row("acc", 2.0, "paper")], tmp_path)
        save_rows("x", [_row("acc", 3.0)], tmp_path)
        rows = json.loads((tmp_path / "x.json").read_text())
        assert sorted((r["profile"], r["ours"]) for r in rows) == [("book", 3.0), ("paper", 2.0)]
        assert all(set(r) == set(FIELDS) for r in rows)

    def test_rejects_bad_rows(self, tmp_path):
        with pytest.raises(ValueError, match="missing fields"):
            save_rows("x", [{"name": "a", "ours": 1}], tmp_path)
        with pytest.raises(ValueError, match="finite"):
            save_rows("x", [_row("a", float("nan"))], tmp_path)

    def test_scorecard_from_files_skips_smoke(self, tmp_path):
        save_rows("mnist", [_row("ODE-Net test error", 0.61), _row("smoke row", 9.0, "smoke")], tmp_path)
        table = scorecard_markdown(tmp_path)
        assert "| mnist | ODE-Net test error | 0.61 | 1 | % | book | cpu | 1 |" in table
        assert "smoke row" not in table

    def test_empty_scorecard_says_so(self, tmp_path):
        assert "No results yet" in scorecard_markdown(tmp_path)

    def test_committed_results_are_valid(self):
        from nodebook.results import load_rows
        from nodebook.utils import REPO_ROOT
        for path in (REPO_ROOT / "results").glob("*.json"):
            assert load_rows(path), path


class _Interrupt(Exception):
    pass


def _make_run(tmp_path, num_steps=5, interrupt_at=None, retrain=False):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)

    def train_step(step):
        if step == interrupt_at:
            raise _Interrupt
        x = torch.randn(16, 3)  # randomness from torch's generator: restored on resume
        loss = ((model(x) - x.sum(1, keepdim=True)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        return {"loss": loss.item()}

    run = load_or_train("toy", {"lr": 0.1}, model, train_step, num_steps, optimizer=opt,
                        scheduler=sched, directory=tmp_path, progress=False, retrain=retrain)
    return run, model


class TestLoadOrTrain:
    def test_trains_then_loads(self, tmp_path):
        run, model = _make_run(tmp_path)
        assert run.source == "trained" and len(run.history) == 5
        assert [r["step"] for r in run.history] == list(range(5))
        again, model2 = _make_run(tmp_path)
        assert again.source == "loaded" and again.history == run.history
        for a, b in zip(model.parameters(), model2.parameters()):
            assert torch.equal(a, b)
        assert not list(tmp_path.glob("*.last.pt"))
        torch.load(run.path, weights_only=True)

    def test_interrupted_run_resumes_to_the_same_result(self, tmp_path):
        ref, ref_model = _make_run(tmp_path / "ref")
        with pytest.raises(_Interrupt):
            _make_run(tmp_path / "cut", interrupt_at=3)
        assert len(list((tmp_path / "cut").glob("*.last.pt"))) == 1
        resumed, model = _make_run(tmp_path / "cut")
        assert resumed.source == "resumed"
        assert [r["loss"] for r in resumed.history] == [r["loss"] for r in ref.history]
        for a, b in zip(model.parameters(), ref_model.parameters()):
            assert torch.equal(a, b)

    def test_other_settings_do_not_load(self, tmp_path):
        _make_run(tmp_path, num_steps=3)
        run, _ = _make_run(tmp_path, num_steps=4)
        assert run.source == "trained"
        assert settings_key({"a": 1, "b": 2}) == settings_key({"b": 2, "a": 1})

    def test_retrain_ignores_finished_checkpoint(self, tmp_path):
        _make_run(tmp_path)
        run, _ = _make_run(tmp_path, retrain=True)
        assert run.source == "trained"


class TestChapter:
    def test_row_and_banner(self):
        ch = Chapter("solvers", "smoke", seed=3)
        row = ch.row("error", 0.5, None, "abs")
        assert set(row) == set(FIELDS) and row["profile"] == "smoke" and row["paper"] is None
        assert "smoke" in ch._repr_markdown_() and "profile 'smoke'" in ch.wall_time()
        assert torch.initial_seed() == 3

    def test_toc_lists_existing_notebooks(self):
        chapters = toc_chapters()
        assert chapters and all(p.suffix == ".ipynb" and p.exists() for p in chapters)


class TestChunkedStep:
    def test_means_extras_scheduler_and_clipping(self):
        torch.manual_seed(0)
        w = torch.nn.Parameter(torch.tensor([3.0]))
        opt = torch.optim.SGD([w], lr=0.1)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        losses = []

        def loss_fn():
            loss = 100 * (w ** 2).sum()  # gradient 600 at w = 3: clipped to norm 1
            losses.append(loss.item())
            return loss, {"w": w.item()}

        from nodebook.checkpoint import chunked_step
        row = chunked_step(loss_fn, opt, 4, scheduler=sched, max_grad_norm=1.0, name="obj")(0)
        assert set(row) == {"obj", "w"}
        assert row["obj"] == pytest.approx(sum(losses) / 4)
        assert w.item() == pytest.approx(3.0 - 4 * 0.1)  # four clipped steps of lr * 1
        assert opt.param_groups[0]["lr"] == pytest.approx(0.05)  # the scheduler stepped once
