"""Tables for the page from computed values (used by chapters and by experiments' table builders)."""

from __future__ import annotations


def markdown_table(header: list, rows: list):
    """A table for the page from computed values: ``markdown_table(["model", "ours"], [[...], ...])``."""
    from IPython.display import Markdown

    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join("–" if v is None else str(v) for v in row) + " |" for row in rows]
    return Markdown("\n".join(lines))
