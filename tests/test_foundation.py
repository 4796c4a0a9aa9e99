"""Profiles, the results scorecard, load-or-train with resume, chapter helpers."""

import json

import pytest
import torch

from nodebook.book import Chapter, ClaimFailed, toc_chapters
from nodebook.checkpoint import TrainingDisabled, load_or_train, settings_key
from nodebook.profiles import PROFILES, SETTINGS, get_profile
from nodebook.results import load_entries, save_entries, scorecard_markdown


class TestProfiles:
    def test_every_chapter_defines_every_profile_and_no_unknown_keys(self):
        for chapter, profiles in SETTINGS.items():
            assert set(profiles) == set(PROFILES), chapter
            # book declares every knob; smoke and paper change values, never add knobs
            for name in ("smoke", "paper"):
                assert set(profiles[name]) <= set(profiles["book"]), (chapter, name)
                assert set(get_profile(chapter, name)) == set(profiles["book"]), (chapter, name)

    def test_smoke_and_paper_list_only_what_differs(self):
        for chapter, profiles in SETTINGS.items():
            for name in ("smoke", "paper"):
                same = [k for k, v in profiles[name].items() if profiles["book"][k] == v]
                assert not same, (chapter, name, same)

    def test_unknown_key_in_a_profile_is_refused(self, monkeypatch):
        monkeypatch.setitem(SETTINGS, "toy", {"book": {"a": 1}, "smoke": {"b": 2}, "paper": {}})
        with pytest.raises(ValueError, match=r"sets \['b'\], which the book profile does not declare"):
            get_profile("toy", "smoke")
        assert get_profile("toy", "paper") == {"a": 1}

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


def _result(id, ours, profile="book", **extra):
    return {"id": id, "kind": "result", "name": id, "ours": ours, "paper": 1.0, "unit": "%", "profile": profile,
            "device": "cpu", "seconds": 1.0, **extra}


class TestResults:
    def test_merge_keeps_other_profiles_and_replaces_same(self, tmp_path):
        save_entries("x", [_result("x/acc", 1.0), _result("x/acc", 2.0, "paper")], tmp_path)
        save_entries("x", [_result("x/acc", 3.0)], tmp_path)
        rows = json.loads((tmp_path / "x.json").read_text())
        assert sorted((r["profile"], r["ours"]) for r in rows) == [("book", 3.0), ("paper", 2.0)]

    def test_a_dropped_entry_does_not_linger(self, tmp_path):
        save_entries("x", [_result("x/old", 1.0), _result("x/kept", 2.0, "paper")], tmp_path)
        save_entries("x", [_result("x/new", 3.0)], tmp_path)
        assert sorted(e["id"] for e in load_entries(tmp_path / "x.json")) == ["x/kept", "x/new"]

    def test_values_are_stored_unrounded(self, tmp_path):
        save_entries("x", [_result("x/acc", 0.123456789)], tmp_path)
        assert load_entries(tmp_path / "x.json")[0]["ours"] == 0.123456789

    def test_rejects_bad_entries(self, tmp_path):
        with pytest.raises(ValueError, match="missing fields"):
            save_entries("x", [{"id": "x/a", "kind": "result", "ours": 1}], tmp_path)
        with pytest.raises(ValueError, match="finite"):
            save_entries("x", [_result("x/a", float("nan"))], tmp_path)
        with pytest.raises(ValueError, match="'id' must look like"):
            save_entries("x", [_result("a b", 1.0)], tmp_path)
        with pytest.raises(ValueError, match="needs 'seeds'"):
            save_entries("x", [_result("x/a", 1.0, spread=0.1)], tmp_path)
        with pytest.raises(ValueError, match="recorded twice"):
            save_entries("x", [_result("x/a", 1.0), _result("x/a", 2.0)], tmp_path)

    def test_scorecard_shows_spread_claims_and_skips_smoke(self, tmp_path):
        ch = Chapter("mnist", "book")
        ch.result("mnist/odenet/test_error", "ODE-Net test error", 0.61, "%", spread=0.05, seeds=3)
        ch.claim("mnist/fig3c/half", "backward NFE is 1.8x forward", True, paper_claim="about half",
                 paper_holds=False)
        save_entries("mnist", ch.entries, tmp_path)
        save_entries("smoke", [_result("smoke/row", 9.0, "smoke")], tmp_path)
        table = scorecard_markdown([tmp_path])
        assert "| `mnist/odenet/test_error` | ODE-Net test error | 0.61 ± 0.05 (3 seeds) | – | % | book | cpu |" in table
        assert "| `mnist/fig3c/half` | about half | backward NFE is 1.8x forward | **does not hold here** | book |" in table
        assert "smoke/row" not in table

    def test_a_later_directory_overrides_an_earlier_one(self, tmp_path):
        (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
        save_entries("x", [_result("x/acc", 1.0), _result("x/other", 5.0)], tmp_path / "a")
        save_entries("x", [_result("x/acc", 2.0)], tmp_path / "b")
        table = scorecard_markdown([tmp_path / "a", tmp_path / "b"])
        assert "| `x/acc` | x/acc | 2 |" in table and "| `x/acc` | x/acc | 1 |" not in table and "x/other" in table

    def test_empty_scorecard_says_so(self, tmp_path):
        assert "No results yet" in scorecard_markdown([tmp_path])

    def test_committed_results_are_valid_and_every_entry_has_its_chapters_id(self):
        from nodebook.results import TRACKED_RESULTS
        paths = list(TRACKED_RESULTS.glob("*.json"))
        assert paths
        for path in paths:
            entries = load_entries(path)
            assert entries and all(e["id"].startswith(f"{path.stem}/") for e in entries), path


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

    def test_no_train_refuses_to_train_but_loads(self, tmp_path, monkeypatch):
        _make_run(tmp_path, num_steps=3)
        monkeypatch.setenv("NODEBOOK_NO_TRAIN", "1")
        assert _make_run(tmp_path, num_steps=3)[0].source == "loaded"
        with pytest.raises(TrainingDisabled, match="toy: no finished checkpoint .*make reproduce"):
            _make_run(tmp_path, num_steps=4)
        assert not list(tmp_path.glob("*.last.pt"))

    def test_retrain_ignores_finished_checkpoint(self, tmp_path):
        _make_run(tmp_path)
        run, _ = _make_run(tmp_path, retrain=True)
        assert run.source == "trained"


class TestChapter:
    def test_result_and_banner(self):
        ch = Chapter("solvers", "smoke", seed=3)
        assert ch.result("solvers/euler/error", "error", 0.5, "abs") == 0.5
        entry = ch.entries[0]
        assert entry["profile"] == "smoke" and entry["paper"] is None and entry["kind"] == "result"
        assert "smoke" in ch._repr_markdown_() and "profile 'smoke'" in ch.wall_time()
        assert torch.initial_seed() == 3
        with pytest.raises(ValueError, match="must start with the chapter's name"):
            ch.result("mnist/x", "x", 1.0, "")
        with pytest.raises(ValueError, match="recorded twice"):
            ch.result("solvers/euler/error", "error", 0.4, "abs")

    def test_claims_bite_and_record_their_verdict(self):
        ch = Chapter("mnist", "book")
        assert ch.claim("mnist/a", "it holds", True) == "measured"
        assert ch.claim("mnist/b", "half, not", True, paper_claim="half", paper_holds=False) == "does not hold here"
        assert ch.claim("mnist/c", "as the paper", 1 < 2, paper_claim="p", paper_holds=True) == "holds"
        with pytest.raises(ClaimFailed, match=r"claim 'mnist/d' does not hold at profile 'book': x is small \(x = 3\)"):
            ch.claim("mnist/d", "x is small", False, values={"x": 3})
        with pytest.raises(ValueError, match="needs the paper_claim"):
            ch.claim("mnist/e", "?", True, paper_holds=True)
        assert [e["verdict"] for e in ch.entries] == ["measured", "does not hold here", "holds"]
        assert "does not hold here" in ch.claims_markdown().data

    def test_smoke_and_capped_runs_skip_what_they_cannot_check(self):
        smoke = Chapter("mnist", "smoke")
        assert smoke.claim("mnist/a", "needs book scale", False, smoke=False) == "not checked"
        with pytest.raises(ClaimFailed):
            smoke.claim("mnist/b", "holds at any scale", False)
        capped = Chapter("mnist", "paper", capped=True)
        assert capped.claim("mnist/a", "needs full data", False) == "not checked"
        book = Chapter("mnist", "book")
        assert book.claim("mnist/b", "needs full MNIST", False, not_checked="offline 5k subset") == "not checked"
        assert book.entries[-1]["reason"] == "offline 5k subset"

    def test_save_results_writes_the_chapters_file(self, tmp_path, monkeypatch):
        monkeypatch.setenv("NODEBOOK_RESULTS_DIR", str(tmp_path))
        ch = Chapter("cnf", "smoke")
        ch.result("cnf/x", "x", 1.0, "")
        assert ch.save_results() == tmp_path / "cnf.json"
        assert load_entries(tmp_path / "cnf.json")[0]["id"] == "cnf/x"

    def test_results_default_to_the_build_folder(self, monkeypatch):
        from nodebook.results import TRACKED_RESULTS, results_dir
        monkeypatch.delenv("NODEBOOK_RESULTS_DIR", raising=False)
        assert results_dir() != TRACKED_RESULTS and results_dir().parts[-2:] == ("_build", "results")

    def test_thread_policy_is_applied_on_the_cpu(self):
        from nodebook.book import CPU_THREADS
        before = torch.get_num_threads()
        try:
            Chapter("cnf", "smoke", device="cpu")
            assert torch.get_num_threads() == CPU_THREADS["cnf"] == 1
            torch.set_num_threads(2)
            Chapter("solvers", "smoke", device="cpu")
            assert torch.get_num_threads() == 2  # chapters without a policy keep torch's setting
        finally:
            torch.set_num_threads(before)

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

        from nodebook.train import chunked_step
        row = chunked_step(loss_fn, opt, 4, scheduler=sched, max_grad_norm=1.0, name="obj")(0)
        assert set(row) == {"obj", "w"}
        assert row["obj"] == pytest.approx(sum(losses) / 4)
        assert w.item() == pytest.approx(3.0 - 4 * 0.1)  # four clipped steps of lr * 1
        assert opt.param_groups[0]["lr"] == pytest.approx(0.05)  # the scheduler stepped once
