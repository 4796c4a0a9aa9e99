"""The reproduction scorecard: each chapter's results and claims as JSON entries.

A chapter writes ``<results dir>/<chapter>.json``: a list of entries, each with
a stable ``id`` (``<chapter>/.../<quantity>``, e.g. ``mnist/odenet/test_error``)
and a ``kind``:

- ``"result"``: a measured number: ``name``, ``ours``, ``paper`` (``None`` where
  the paper gives no comparable number), ``unit``, optional ``spread`` (standard
  deviation over ``seeds`` runs), ``profile``, ``device``, ``seconds``;
- ``"claim"``: a sentence the page states, checked by a cell
  (:meth:`nodebook.book.Chapter.claim`): ``statement``, ``paper_claim`` (the
  paper's claim it checks, or ``None``), ``verdict`` (``"holds"``,
  ``"does not hold here"``, ``"measured"`` for a statement about our own run,
  or ``"not checked"`` where the run could not check it, with an optional
  ``reason``), ``profile``, ``device``.

Entries of other profiles are kept, so a book-profile run and a paper-scale
GPU run stand side by side. Where results go: ``$NODEBOOK_RESULTS_DIR``, else
``_build/results`` in the repository: executing a chapter (``make book``, a
reader in Jupyter) never modifies the tracked ``results/``; ``make reproduce``
points the variable at ``results/`` (:data:`TRACKED_RESULTS`). The intro page
renders :func:`scorecard_markdown`: this build's entries over the committed ones.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from nodebook.utils import REPO_ROOT, env_path

TRACKED_RESULTS = REPO_ROOT / "results"
RESULT_FIELDS = {"id", "kind", "name", "ours", "paper", "unit", "profile", "device", "seconds"}
RESULT_OPTIONAL = {"spread", "seeds"}
CLAIM_FIELDS = {"id", "kind", "statement", "paper_claim", "verdict", "profile", "device"}
CLAIM_OPTIONAL = {"reason"}
VERDICTS = ("holds", "does not hold here", "measured", "not checked")


def results_dir() -> Path:
    """``$NODEBOOK_RESULTS_DIR``, else ``_build/results`` in the repository (created if missing)."""
    return env_path("NODEBOOK_RESULTS_DIR", REPO_ROOT / "_build" / "results")


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_entry(entry: dict) -> dict:
    """Validate one entry (see the module docstring); raises ``ValueError`` naming what is wrong."""
    kind = entry.get("kind")
    label = entry.get("id", entry.get("name"))
    if kind not in ("result", "claim"):
        raise ValueError(f"result entry {label!r}: 'kind' must be 'result' or 'claim', got {kind!r}")
    required, optional = (RESULT_FIELDS, RESULT_OPTIONAL) if kind == "result" else (CLAIM_FIELDS, CLAIM_OPTIONAL)
    missing, extra = required - set(entry), set(entry) - required - optional
    if missing or extra:
        raise ValueError(f"result entry {label!r}: missing fields {sorted(missing)}, "
                         f"unexpected fields {sorted(extra)}")
    if not isinstance(entry["id"], str) or entry["id"].count("/") < 1 or " " in entry["id"]:
        raise ValueError(f"result entry {label!r}: 'id' must look like '<chapter>/.../<quantity>'")
    if kind == "result":
        if not _finite(entry["ours"]):
            raise ValueError(f"result {label!r}: 'ours' must be a finite number, got {entry['ours']!r}")
        if entry.get("spread") is not None and not (_finite(entry["spread"]) and entry["spread"] >= 0):
            raise ValueError(f"result {label!r}: 'spread' must be a finite number >= 0, got {entry['spread']!r}")
        if "spread" in entry and not (isinstance(entry.get("seeds"), int) and entry["seeds"] >= 2):
            raise ValueError(f"result {label!r}: a 'spread' needs 'seeds' (an int >= 2), got {entry.get('seeds')!r}")
    elif entry["verdict"] not in VERDICTS:
        raise ValueError(f"claim {label!r}: 'verdict' must be one of {VERDICTS}, got {entry['verdict']!r}")
    return entry


def load_entries(path: Path) -> list[dict]:
    entries = json.loads(Path(path).read_text())
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a JSON list of entries")
    return [check_entry(entry) for entry in entries]


def save_entries(file: str, entries: list[dict], directory: Path | None = None) -> Path:
    """Write ``entries`` to ``<directory>/<file>.json``: they replace every earlier entry of the
    same profile (a renamed or dropped claim does not linger) and entries of other profiles are
    kept; ids must be unique within ``entries``."""
    entries = [check_entry(dict(entry)) for entry in entries]
    new_keys = [(entry["id"], entry["profile"]) for entry in entries]
    if len(set(new_keys)) != len(new_keys):
        dupes = sorted({k[0] for k in new_keys if new_keys.count(k) > 1})
        raise ValueError(f"{file}: result ids recorded twice: {dupes}")
    path = Path(directory or results_dir()) / f"{file}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    old = load_entries(path) if path.exists() else []
    profiles = {entry["profile"] for entry in entries}
    kept = [entry for entry in old if entry["profile"] not in profiles]
    path.write_text(json.dumps(kept + entries, indent=1) + "\n")
    return path


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def merged_entries(directories, profiles=("book", "paper")) -> dict[str, list[dict]]:
    """Entries per chapter file over ``directories`` in order: a later directory's entry
    replaces an earlier one with the same id and profile."""
    chapters: dict[str, dict] = {}
    for directory in directories:
        for path in sorted(Path(directory).glob("*.json")):
            table = chapters.setdefault(path.stem, {})
            for entry in load_entries(path):
                if entry["profile"] in profiles:
                    table[(entry["id"], entry["profile"])] = entry
    return {chapter: list(table.values()) for chapter, table in sorted(chapters.items())}


def scorecard_markdown(directories=None, profiles=("book", "paper")) -> str:
    """Two Markdown tables over every chapter: the results (mean ± spread over seeds) and the
    claims with their verdicts. By default the committed ``results/`` overlaid by this build's."""
    if directories is None:
        directories = [TRACKED_RESULTS, results_dir()]
    chapters = merged_entries(directories, profiles)
    results = ["| id | quantity | ours | paper | unit | profile | device |", "|---|---|---|---|---|---|---|"]
    claims = ["| id | the paper says | we measured | verdict | profile |", "|---|---|---|---|---|"]
    for entries in chapters.values():
        for e in entries:
            if e["kind"] == "result":
                ours = _fmt(e["ours"])
                if e.get("spread") is not None:
                    ours += f" ± {_fmt(e['spread'])} ({e['seeds']} seeds)"
                results.append("| " + " | ".join([f"`{e['id']}`", e["name"], ours, _fmt(e["paper"]),
                                                  e["unit"] or "", e["profile"], e["device"]]) + " |")
            else:
                claims.append("| " + " | ".join([f"`{e['id']}`", e["paper_claim"] or "–", e["statement"],
                                                 f"**{e['verdict']}**", e["profile"]]) + " |")
    if len(results) == 2 and len(claims) == 2:
        return "_No results yet: run `make book` or `make reproduce`._"
    return "\n".join(["### Claims", "", *claims, "", "### Results", "", *results])
