"""What every chapter does first and last: profile, seed, device, style, results, wall time.

A chapter starts with ``ch = Chapter("mnist", profile, seed, capped=capped)`` (which
reads the profile's settings, seeds everything, picks the GPU when there is one and
sets the plotting style; ``capped`` is the tests' flag, see ``capped_settings``),
records its numbers with ``ch.result(...)``, checks every sentence that states a
result with ``ch.claim(...)``, and ends with ``ch.save_results()`` and ``ch``'s
wall-time line.
"""

from __future__ import annotations

import time

import torch

from nodebook.plotting import use_style
from nodebook.profiles import CAPS, PROFILES, Profile, get_profile
from nodebook.results import save_entries
from nodebook.tables import markdown_table  # noqa: F401  (chapters import it from here)
from nodebook.utils import choose_device, device_name, format_seconds, seed_everything

# The thread policy, decided here once (never in a cell): on the CPU a chapter whose models are tiny
# runs on one thread, since its operations (a planar field of at most 64 units on 2-d points) are too
# small to share between threads, and the other core stays free; every other chapter uses torch's
# default. On a GPU the policy does not apply.
CPU_THREADS = {"cnf": 1}


class ClaimFailed(AssertionError):
    """A sentence the page states is not true of the numbers this run measured."""


class Chapter:
    """A chapter run at one profile.

    Attributes: ``settings`` (the profile's settings, see
    ``nodebook.profiles``), ``device``, ``profile``, ``seed``, ``capped``
    (a run with training and evaluation sizes capped: it asserts no claim),
    ``entries`` (the results and claims recorded so far).

    ``capped=True`` (a papermill parameter of every chapter, set by the test
    that runs each chapter at the ``paper`` profile on a CPU) overrides the
    profile's settings with the chapter's ``nodebook.profiles.CAPS``: data
    sizes, iterations and counts only, so the code path is the profile's.
    """

    def __init__(self, name: str, profile: str, seed: int = 0, device: str | None = None,
                 capped: bool = False):
        self.settings = capped_settings(get_profile(name, profile)) if capped else get_profile(name, profile)
        self.name, self.profile, self.seed, self.capped = name, profile, seed, capped
        # a capped run's entries are labelled apart, so they never stand in for the profile's results
        self.results_profile = f"{profile}-capped" if capped else profile
        self.entries: list[dict] = []
        self.device = choose_device(device)
        if self.device.type == "cpu" and name in CPU_THREADS:
            torch.set_num_threads(CPU_THREADS[name])
        seed_everything(seed)
        use_style()
        self._start = time.perf_counter()

    @property
    def seconds(self) -> float:
        """Wall time since the chapter started."""
        return time.perf_counter() - self._start

    def _check_id(self, id: str) -> str:
        if not id.startswith(f"{self.name}/"):
            raise ValueError(f"result id {id!r} must start with the chapter's name: '{self.name}/...'")
        return id

    def result(self, id: str, name: str, ours: float, unit: str, *, paper: float | None = None,
               spread: float | None = None, seeds: int | None = None, seconds: float | None = None,
               device=None) -> float:
        """Record one measured number for the scorecard; returns ``ours``.

        ``id`` is ``<chapter>/.../<quantity>`` (e.g. ``mnist/odenet/test_error``);
        ``paper`` only where the paper's setting is comparable; ``spread`` is
        the standard deviation over ``seeds`` runs; ``seconds`` defaults to the
        chapter's wall time so far; ``device`` is where the number was measured
        when that is not the chapter's device (e.g. a committed checkpoint's
        training log, or the committed ``make bench`` run).
        """
        entry = {"id": self._check_id(id), "kind": "result", "name": name, "ours": float(ours),
                 "paper": None if paper is None else float(paper), "unit": unit, "profile": self.results_profile,
                 "device": device_name(self.device if device is None else device),
                 "seconds": round(self.seconds if seconds is None else float(seconds), 2)}
        if spread is not None:
            entry.update(spread=float(spread), seeds=int(seeds) if seeds is not None else seeds)
        self._add(entry)
        return float(ours)

    def claim(self, id: str, statement: str, ok: bool, *, paper_claim: str | None = None,
              paper_holds: bool | None = None, smoke: bool = True, not_checked: str | None = None,
              values: dict | None = None) -> str:
        """Assert a sentence the page states and record its verdict; returns the verdict.

        ``statement`` is what *we* measured, in words; ``ok`` the condition that
        makes it true, computed from the measured values (``values`` are shown
        if it fails). ``paper_claim`` is the paper's claim it checks, and
        ``paper_holds`` whether the statement means that claim holds here
        (``False``: the page says it does not, and this asserts that verdict).
        A claim that cannot hold at the ``smoke`` profile says so with
        ``smoke=False``: it is then recorded as ``"not checked"``; so is every
        claim of a capped run (``Chapter(..., capped=True)``), which asserts nothing.
        ``not_checked`` gives the reason why this run's data cannot check the
        claim (e.g. MNIST's offline 5k subset): it is recorded, not asserted.
        """
        if paper_holds is not None and paper_claim is None:
            raise ValueError(f"claim {id!r}: paper_holds needs the paper_claim it refers to")
        checked = not self.capped and (smoke or self.profile != "smoke") and not not_checked
        if checked and not bool(ok):
            shown = "" if not values else " (" + ", ".join(f"{k} = {v!r}" for k, v in values.items()) + ")"
            raise ClaimFailed(f"claim {id!r} does not hold at profile {self.profile!r}: {statement}{shown}")
        verdict = ("not checked" if not checked else "measured" if paper_holds is None
                   else "holds" if paper_holds else "does not hold here")
        entry = {"id": self._check_id(id), "kind": "claim", "statement": statement, "paper_claim": paper_claim,
                 "verdict": verdict, "profile": self.results_profile, "device": device_name(self.device)}
        if not_checked:
            entry["reason"] = not_checked
        self._add(entry)
        return verdict

    def _add(self, entry: dict) -> None:
        if any(e["id"] == entry["id"] for e in self.entries):
            raise ValueError(f"result id {entry['id']!r} recorded twice in chapter {self.name!r}")
        self.entries.append(entry)

    def claims_markdown(self):
        """The chapter's claims and verdicts as a table for its summary."""
        rows = [[f"`{e['id']}`", e["paper_claim"] or "–", e["statement"], f"**{e['verdict']}**"]
                for e in self.entries if e["kind"] == "claim"]
        return markdown_table(["id", "the paper says", "we measured", "verdict"], rows)

    def save_results(self):
        """Write the recorded entries to ``<results dir>/<chapter>.json`` (see ``nodebook.results``)."""
        return save_entries(self.name, self.entries)

    def _repr_markdown_(self) -> str:
        settings = ", ".join(f"`{k}={v}`" for k, v in self.settings.items())
        capped = " · **capped** (sizes and iterations cut for a test; no claim is checked)" if self.capped else ""
        return (f"**Profile** `{self.profile}` ({PROFILES[self.profile]}){capped} · **device** "
                f"`{device_name(self.device)}` · **seed** {self.seed}  \n**settings**: {settings}")

    def wall_time(self) -> str:
        """The closing line every chapter prints."""
        capped = " (capped)" if self.capped else ""
        return (f"Chapter '{self.name}' ran at profile '{self.profile}'{capped} on "
                f"{device_name(self.device)} in {format_seconds(self.seconds)}.")

    def __repr__(self) -> str:
        return f"Chapter({self.name!r}, profile={self.profile!r}, device={device_name(self.device)!r})"


def capped_settings(settings: Profile) -> Profile:
    """``settings`` with its chapter's caps (``nodebook.profiles.CAPS``) in place of those settings."""
    caps = CAPS.get(settings.chapter)
    if caps is None:
        raise ValueError(f"chapter {settings.chapter!r} has no entry in nodebook.profiles.CAPS, so it cannot "
                         f"run capped; add one (data sizes, iterations and counts only)")
    unknown = set(caps) - set(settings)
    if unknown:
        raise ValueError(f"nodebook.profiles.CAPS[{settings.chapter!r}] caps {sorted(unknown)}, which are not "
                         f"settings of chapter {settings.chapter!r}; it has {sorted(settings)}")
    return Profile(settings.chapter, settings.name, {**settings, **caps})


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
