"""Every chapter in _toc.yml, executed with papermill at the smoke profile.

The executed copies land in ``_build/smoke/``; ``make test`` then runs nbval
(lax) over them. Chapters assert their own claims in cells, so a wrong result
fails here. One test class per chapter lets pytest-xdist (``--dist loadscope``)
run chapters in parallel.
"""

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import papermill
import pytest

from nodebook.book import run_notebook, toc_chapters
from nodebook.profiles import SETTINGS
from nodebook.utils import REPO_ROOT

SMOKE_DIR = REPO_ROOT / "_build" / "smoke"
BROKEN = Path(__file__).parent / "fixtures" / "broken.ipynb"
COLAB_CELL = REPO_ROOT / "scripts" / "colab_cell.py"


def _chapter_test(notebook: Path):
    def test_executes_at_smoke(self):
        out = SMOKE_DIR / notebook.name
        run_notebook(notebook, out, profile="smoke")
        executed = nbformat.read(out, as_version=4)
        errors = [o for c in executed.cells if c.cell_type == "code"
                  for o in c.get("outputs", []) if o.output_type == "error"]
        assert not errors

    def test_parameters_cell_has_literals_only(self):
        nb = nbformat.read(notebook, as_version=4)
        cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(cells) == 1, "exactly one cell tagged 'parameters'"
        import ast
        for node in ast.parse(cells[0].source).body:
            assert isinstance(node, ast.Assign), ast.dump(node)
            ast.literal_eval(node.value)  # raises on anything but a literal
        assert "profile" in cells[0].source

    def test_colab_cell_first_and_hidden(self):
        nb = nbformat.read(notebook, as_version=4)
        first = nb.cells[0]
        assert first.cell_type == "code"
        assert first.source.strip() == COLAB_CELL.read_text().strip(), "first cell must be scripts/colab_cell.py"
        assert "remove-cell" in first.metadata.get("tags", [])

    def test_one_identity(self):
        """book/NN_<name>.ipynb opens Chapter("<name>"), has a profile <name>, an experiments module
        nodebook/experiments/<name>.py, and writes its results through ch.save_results() (<name>.json)."""
        name = chapter_name(notebook)
        code = _code(notebook)
        assert f'Chapter("{name}", profile' in code
        assert name in SETTINGS, f"no profile entry {name!r}"
        assert (REPO_ROOT / "nodebook" / "experiments" / f"{name}.py").exists()
        assert "ch.save_results()" in code and "ch.row(" not in code

    def test_cells_call_the_package(self):
        """No class or function defined in a cell; no profile flag decides whether to assert;
        results are stated through ch.claim, not bare asserts."""
        for cell in _code_cells(notebook):
            assert not re.search(r"^\s*(def|class) ", cell, re.M), cell[:200]
            assert not re.search(r"\bif\s+P\.|check_targets|min_accuracy|is_subset\s+or\b", cell), cell[:200]
            assert not re.search(r"^\s*assert ", cell, re.M), cell[:200]

    return {"test_executes_at_smoke": test_executes_at_smoke,
            "test_parameters_cell_has_literals_only": test_parameters_cell_has_literals_only,
            "test_colab_cell_first_and_hidden": test_colab_cell_first_and_hidden,
            "test_one_identity": test_one_identity,
            "test_cells_call_the_package": test_cells_call_the_package}


def chapter_name(notebook: Path) -> str:
    """``book/03_mnist.ipynb`` -> ``mnist``."""
    match = re.fullmatch(r"\d\d_([a-z0-9_]+)", notebook.stem)
    assert match, f"{notebook.name}: chapters are named book/NN_<name>.ipynb"
    return match.group(1)


def _code_cells(notebook: Path) -> list[str]:
    """The code cells after the Colab cell."""
    return [c.source for c in nbformat.read(notebook, as_version=4).cells if c.cell_type == "code"][1:]


def _code(notebook: Path) -> str:
    return "\n".join(_code_cells(notebook))


for _nb in toc_chapters():
    _name = "TestChapter_" + _nb.stem
    globals()[_name] = type(_name, (), _chapter_test(_nb))


def test_models_never_import_training():
    """Layers point one way: nodebook/models/* export modules and losses only."""
    for path in (REPO_ROOT / "nodebook" / "models").glob("*.py"):
        text = path.read_text()
        imports = re.findall(r"^\s*(?:from|import)\s+([\w.]+)(?:\s+import\s+([\w, ()]+))?", text, re.M)
        for module, names in imports:
            assert not re.match(r"nodebook\.(train|checkpoint|experiments)", module), (path.name, module)
            if module == "nodebook":
                assert not re.search(r"\b(train|checkpoint|experiments)\b", names), (path.name, names)


def test_template_has_every_mandatory_cell():
    """book/_template.ipynb (CONTRIBUTING's "add a chapter") starts as every chapter must."""
    template = REPO_ROOT / "book" / "_template.ipynb"
    nb = nbformat.read(template, as_version=4)
    assert nb.cells[0].source.strip() == COLAB_CELL.read_text().strip()
    assert "remove-cell" in nb.cells[0].metadata.get("tags", [])
    assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells)
    code = _code(template)
    for needed in ('Chapter("<name>", profile, seed, capped=capped)', "ch.result(", "ch.claim(", "ch.save_results()",
                   "ch.wall_time()"):
        assert needed in code, needed


def test_every_profile_is_a_chapter():
    names = {chapter_name(nb) for nb in toc_chapters() if nb.stem[:2].isdigit()}
    drafts = {"limits"}  # drafts/08_limits.ipynb: its profile lands before the chapter (drafts/README.md)
    assert names | drafts == set(SETTINGS), (names, set(SETTINGS))


class TestHarnessBites:
    """A deliberately broken notebook must fail every path a chapter goes through."""

    def test_papermill_fails(self, tmp_path):
        with pytest.raises(papermill.PapermillExecutionError, match="deliberately broken"):
            run_notebook(BROKEN, tmp_path / "broken.ipynb", profile="smoke")

    def test_nbval_fails(self, tmp_path):
        copy = tmp_path / "broken.ipynb"
        copy.write_text(BROKEN.read_text())
        proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:xdist", "-p", "no:cacheprovider",
                               "--nbval-lax", str(copy), "--rootdir", str(tmp_path), "-q"],
                              capture_output=True, text=True, cwd=tmp_path)
        assert proc.returncode == 1, proc.stdout[-2000:]
        assert "deliberately broken" in proc.stdout

    def test_book_build_fails(self, tmp_path):
        (tmp_path / "broken.ipynb").write_text(BROKEN.read_text())
        (tmp_path / "intro.md").write_text("# Broken book\n")
        (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n  - file: broken\n")
        (tmp_path / "_config.yml").write_text(textwrap.dedent("""\
            title: broken
            only_build_toc_files: true
            execute:
              execute_notebooks: force
              allow_errors: false
            """))
        jb = Path(sys.executable).parent / "jupyter-book"
        proc = subprocess.run([str(jb), "build", str(tmp_path), "-W", "-n", "--keep-going"],
                              capture_output=True, text=True)
        assert proc.returncode != 0, proc.stdout[-2000:]
        assert "broken" in (proc.stdout + proc.stderr)


# ---------------------------------------------------------------- the paper path, capped
# Every chapter executed at the ``paper`` profile (what a Colab GPU reader runs) with the sizes of
# nodebook.profiles.CAPS, so that path cannot rot although CI has no GPU: ``capped = True`` is a
# papermill parameter of every chapter, passed to ``Chapter(..., capped=capped)``.
CAPPED_DIR = REPO_ROOT / "_build" / "capped"
# What a cap must leave as the profile sets it: the models' sizes and the batches of the recipe
# (a cap is an int or a list of ints, so solvers, tolerances, learning rates and switches are out too).
NEVER_CAPPED = {"num_hiddens", "widths", "ml_width", "latent_dim", "encoder_hiddens", "dynamics_hiddens",
                "decoder_hiddens", "rnn_hiddens", "batch_size", "latent_batch_size", "ml_batch_size", "rnn_batch_size", "window",
                "rnn_window", "rnn_context"}


def _capped_test(notebook: Path):
    def test_executes_at_paper_capped(self, tmp_path, monkeypatch):
        """The chapter runs end to end at the paper's settings with its sizes capped; it records its
        results and claims at profile paper and asserts none of them."""
        from nodebook.results import load_entries

        monkeypatch.setenv("NODEBOOK_RESULTS_DIR", str(tmp_path / "results"))
        monkeypatch.setenv("NODEBOOK_CHECKPOINTS", str(tmp_path / "checkpoints"))
        monkeypatch.delenv("NODEBOOK_NO_TRAIN", raising=False)
        out = CAPPED_DIR / notebook.name
        run_notebook(notebook, out, profile="paper", capped=True)
        printed = "".join(o.get("text", "") for c in nbformat.read(out, as_version=4).cells
                          if c.cell_type == "code" for o in c.get("outputs", []))
        assert f"Chapter '{chapter_name(notebook)}' ran at profile 'paper' (capped)" in printed
        entries = load_entries(tmp_path / "results" / f"{chapter_name(notebook)}.json")
        assert {e["profile"] for e in entries} == {"paper-capped"}  # never mistaken for paper results
        assert {e["verdict"] for e in entries if e["kind"] == "claim"} == {"not checked"}
        assert any(e["kind"] == "result" for e in entries)

    def test_parameters_cell_has_capped_off(self):
        nb = nbformat.read(notebook, as_version=4)
        parameters = next(c.source for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        assert re.search(r"^capped = False\b", parameters, re.M), parameters
        assert f'Chapter("{chapter_name(notebook)}", profile, seed, capped=capped)' in _code(notebook)

    return {"test_executes_at_paper_capped": test_executes_at_paper_capped,
            "test_parameters_cell_has_capped_off": test_parameters_cell_has_capped_off}


for _nb in toc_chapters():
    if re.fullmatch(r"\d\d_[a-z0-9_]+", _nb.stem):
        _name = "TestCappedPaper_" + _nb.stem
        globals()[_name] = type(_name, (), _capped_test(_nb))


def test_caps_cut_sizes_only():
    """Every chapter has caps; each caps a known setting with an int (or a list of ints) no larger
    than the paper's, and none touches a model's size or a batch of the recipe."""
    from nodebook.profiles import CAPS, get_profile

    assert set(CAPS) == set(SETTINGS), "every chapter needs an entry in nodebook.profiles.CAPS"
    for chapter, caps in CAPS.items():
        paper = get_profile(chapter, "paper")
        assert set(caps) <= set(paper), (chapter, sorted(set(caps) - set(paper)))
        assert not set(caps) & NEVER_CAPPED, (chapter, sorted(set(caps) & NEVER_CAPPED))
        for key, value in caps.items():
            values = value if isinstance(value, list) else [value]
            assert values and all(type(v) is int for v in values), (chapter, key, value)
            if paper[key] is not None:  # None: all of the data
                original = paper[key] if isinstance(paper[key], list) else [paper[key]]
                assert len(values) <= len(original) and max(values) <= max(original), (chapter, key, value)


def test_capped_chapter_takes_its_caps(monkeypatch):
    from nodebook.book import Chapter
    from nodebook.profiles import CAPS, get_profile

    paper = get_profile("cnf", "paper")
    ch = Chapter("cnf", "paper", capped=True)
    assert ch.settings == {**paper, **CAPS["cnf"]} and ch.settings.train_method == paper.train_method
    assert ch.settings != paper and Chapter("cnf", "paper").settings == paper
    monkeypatch.setitem(CAPS, "cnf", {"no_such_setting": 1})
    with pytest.raises(ValueError, match=r"caps \['no_such_setting'\], which are not settings of chapter 'cnf'"):
        Chapter("cnf", "paper", capped=True)
    monkeypatch.delitem(CAPS, "cnf")
    with pytest.raises(ValueError, match="'cnf' has no entry in nodebook.profiles.CAPS"):
        Chapter("cnf", "paper", capped=True)
