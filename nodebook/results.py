"""The reproduction scorecard: each chapter's headline numbers as JSON rows.

Every chapter writes ``results/<file>.json``: a list of rows
``{"name", "ours", "paper", "unit", "profile", "device", "seconds"}``
(``paper`` is ``None`` where the paper gives no number). Rows of other
profiles are kept, so a book-profile run and a paper-scale GPU run stand side
by side. The intro page renders :func:`scorecard_markdown` over all files.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from nodebook.utils import REPO_ROOT, env_path

FIELDS = ("name", "ours", "paper", "unit", "profile", "device", "seconds")


def results_dir() -> Path:
    """``$NODEBOOK_RESULTS_DIR`` or the repository's ``results/`` (tests point it elsewhere)."""
    return env_path("NODEBOOK_RESULTS_DIR", REPO_ROOT / "results")


def check_row(row: dict) -> dict:
    """Validate one row: exactly the fields above, a finite number in ``ours``."""
    missing = set(FIELDS) - set(row)
    extra = set(row) - set(FIELDS)
    if missing or extra:
        raise ValueError(f"result row {row.get('name')!r}: missing fields {sorted(missing)}, "
                         f"unexpected fields {sorted(extra)}")
    if not isinstance(row["ours"], (int, float)) or not math.isfinite(row["ours"]):
        raise ValueError(f"result row {row['name']!r}: 'ours' must be a finite number, got {row['ours']!r}")
    return row


def load_rows(path: Path) -> list[dict]:
    rows = json.loads(Path(path).read_text())
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a JSON list of rows")
    return [check_row(row) for row in rows]


def save_rows(file: str, rows: list[dict], directory: Path | None = None) -> Path:
    """Write ``rows`` to ``<directory>/<file>.json``, replacing earlier rows of the
    same name and profile and keeping the rest."""
    rows = [check_row(dict(row)) for row in rows]
    path = Path(directory or results_dir()) / f"{file}.json"
    new_keys = {(row["name"], row["profile"]) for row in rows}
    old = load_rows(path) if path.exists() else []
    kept = [row for row in old if (row["name"], row["profile"]) not in new_keys]
    path.write_text(json.dumps(kept + rows, indent=1) + "\n")
    return path


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def scorecard_markdown(directory: Path | None = None, profiles=("book", "paper")) -> str:
    """One Markdown table of every result row of the given profiles, file by file."""
    directory = Path(directory or results_dir())
    lines = ["| chapter | quantity | ours | paper | unit | profile | device | seconds |",
             "|---|---|---|---|---|---|---|---|"]
    for path in sorted(directory.glob("*.json")):
        for row in load_rows(path):
            if row["profile"] not in profiles:
                continue
            lines.append("| " + " | ".join([path.stem, row["name"], _fmt(row["ours"]), _fmt(row["paper"]),
                                             row["unit"] or "", row["profile"], row["device"],
                                             _fmt(row["seconds"])]) + " |")
    if len(lines) == 2:
        return "_No results yet: run `make book` or `make reproduce`._"
    return "\n".join(lines)
