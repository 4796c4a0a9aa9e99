"""Run every chapter of the book at one profile: ``make reproduce PROFILE=paper``.

Each chapter in ``_toc.yml`` is executed with papermill into
``_build/reproduce/<profile>/`` (the executed notebooks are kept) and
refreshes its entries in the tracked ``results/`` (at ``smoke``, in the
build folder instead; ``make book`` writes to ``_build/results`` only). At the ``book`` profile the chapters
retrain from scratch (``retrain=True``) and overwrite the committed
checkpoints; at ``paper`` they resume any interrupted run.
"""

import argparse
import os
import sys
import time

from nodebook.book import run_notebook, toc_chapters
from nodebook.profiles import PROFILES
from nodebook.results import TRACKED_RESULTS, results_dir
from nodebook.utils import REPO_ROOT, format_seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="book", choices=list(PROFILES))
    parser.add_argument("--only", nargs="*", default=None, help="chapter file stems to run (default: all)")
    parser.add_argument("--no-retrain", action="store_true", help="reuse finished checkpoints")
    args = parser.parse_args(argv)

    retrain = args.profile == "book" and not args.no_retrain
    out_dir = REPO_ROOT / "_build" / "reproduce" / args.profile
    if args.profile == "smoke":  # smoke runs never touch the committed results and checkpoints
        os.environ["NODEBOOK_RESULTS_DIR"] = str(out_dir / "results")
        os.environ["NODEBOOK_CHECKPOINTS"] = str(out_dir / "checkpoints")
    else:
        os.environ["NODEBOOK_RESULTS_DIR"] = str(TRACKED_RESULTS)
    os.environ.pop("NODEBOOK_NO_TRAIN", None)
    chapters = [nb for nb in toc_chapters() if args.only is None or nb.stem in args.only]
    for notebook in chapters:
        start = time.perf_counter()
        print(f"[{args.profile}] {notebook.name} (retrain={retrain}) ...", flush=True)
        run_notebook(notebook, out_dir / notebook.name, profile=args.profile, retrain=retrain)
        print(f"[{args.profile}] {notebook.name} done in {format_seconds(time.perf_counter() - start)}",
              flush=True)
    print(f"Executed notebooks: {out_dir}\nResults: {results_dir()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
