"""Every pytest run here (unit tests and the nbval pass over executed chapters)
writes results and checkpoints to throw-away folders, never to the committed ones."""

import os
import tempfile


def pytest_configure(config):
    os.environ.setdefault("NODEBOOK_RESULTS_DIR", tempfile.mkdtemp(prefix="nodebook-results-"))
    os.environ.setdefault("NODEBOOK_CHECKPOINTS", tempfile.mkdtemp(prefix="nodebook-checkpoints-"))
    os.environ.setdefault("MPLBACKEND", "Agg")
