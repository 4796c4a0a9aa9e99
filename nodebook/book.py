"""What every chapter does first and last: profile, seed, device, style, results, wall time.

A chapter starts with ``ch = Chapter("mnist", profile, seed)`` (which reads the
profile's settings, seeds everything, picks the GPU when there is one and sets
the plotting style) and ends with ``ch.save_results(rows)`` and ``ch``'s
wall-time line.
"""

from __future__ import annotations

import time

from nodebook.plotting import use_style
from nodebook.profiles import PROFILES, get_profile
from nodebook.results import save_rows
from nodebook.utils import choose_device, device_name, format_seconds, seed_everything


class Chapter:
    """A chapter run at one profile.

    Attributes: ``settings`` (the profile's settings, see
    :mod:`nodebook.profiles`), ``device``, ``profile``, ``seed``.
    """

    def __init__(self, name: str, profile: str, seed: int = 0, device: str | None = None):
        self.settings = get_profile(name, profile)
        self.name, self.profile, self.seed = name, profile, seed
        self.device = choose_device(device)
        seed_everything(seed)
        use_style()
        self._start = time.perf_counter()

    @property
    def seconds(self) -> float:
        """Wall time since the chapter started."""
        return time.perf_counter() - self._start

    def row(self, name: str, ours: float, paper: float | None, unit: str,
            seconds: float | None = None) -> dict:
        """One scorecard row; ``seconds`` defaults to the chapter's wall time so far."""
        return {"name": name, "ours": float(ours), "paper": None if paper is None else float(paper),
                "unit": unit, "profile": self.profile, "device": device_name(self.device),
                "seconds": round(self.seconds if seconds is None else float(seconds), 2)}

    def save_results(self, rows: list[dict], file: str | None = None):
        """Write rows to ``results/<file>.json`` (default: the chapter's name)."""
        return save_rows(file or self.name, rows)

    def _repr_markdown_(self) -> str:
        settings = ", ".join(f"`{k}={v}`" for k, v in self.settings.items())
        return (f"**Profile** `{self.profile}` ({PROFILES[self.profile]}) · **device** "
                f"`{device_name(self.device)}` · **seed** {self.seed}  \n**settings**: {settings}")

    def wall_time(self) -> str:
        """The closing line every chapter prints."""
        return (f"Chapter '{self.name}' ran at profile '{self.profile}' on "
                f"{device_name(self.device)} in {format_seconds(self.seconds)}.")

    def __repr__(self) -> str:
        return f"Chapter({self.name!r}, profile={self.profile!r}, device={device_name(self.device)!r})"


def toc_chapters(root=None) -> list:
    """The executable chapters (``.ipynb``) listed in the book's ``_toc.yml``, in order."""
    import yaml  # comes with jupyter-book

    from nodebook.utils import REPO_ROOT
    from pathlib import Path

    root = Path(root or REPO_ROOT)
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [entry["file"] for entry in part.get("chapters", [])]
    return [root / f"{f}.ipynb" for f in files if (root / f"{f}.ipynb").exists()]


def run_notebook(notebook, output, profile: str, **parameters):
    """Execute a chapter with papermill at ``profile`` (plus extra parameters) into ``output``.

    The kernel runs in the chapter's own folder; a failing cell raises
    ``papermill.PapermillExecutionError`` naming the cell.
    """
    from pathlib import Path

    import papermill

    notebook, output = Path(notebook), Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    return papermill.execute_notebook(
        str(notebook), str(output), parameters=dict(profile=profile, **parameters),
        kernel_name="python3", cwd=str(notebook.parent), progress_bar=False)


def markdown_table(header: list, rows: list):
    """A table for the page from computed values: ``markdown_table(["model", "ours"], [[...], ...])``."""
    from IPython.display import Markdown

    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join("–" if v is None else str(v) for v in row) + " |" for row in rows]
    return Markdown("\n".join(lines))
