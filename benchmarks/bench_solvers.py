"""Solver benchmarks: nodebook against torchdiffeq 0.2.5 and scipy, in one process (``make bench``).

The benchmarks themselves live in :mod:`nodebook.experiments.benchmarks`; this
script runs them and writes ``benchmarks/solvers.json``, which the appendix
"How fast is nodebook?" renders::

    python benchmarks/bench_solvers.py [--repeats 11] [--threads 1] [--out PATH] [--figure PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nodebook.experiments.benchmarks import COMMITTED, report, run_all  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--parts", default="abc", help="which benchmarks to run (default: abc, all three)")
    parser.add_argument("--out", type=Path, default=COMMITTED)
    parser.add_argument("--figure", type=Path, default=None, help="also save the figure (png/pdf)")
    args = parser.parse_args(argv)
    if not args.parts or set(args.parts) - set("abc"):
        parser.error(f"--parts takes letters of 'abc', got {args.parts!r}")
    data = run_all(args.repeats, args.threads, parts=tuple(args.parts))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    print(report(data))
    print(f"wrote {args.out}")
    if args.figure is not None:
        from nodebook.plotting.bench import plot_benchmarks
        plot_benchmarks(data).savefig(args.figure, dpi=150, bbox_inches="tight")
        print(f"wrote {args.figure}")
    return data


if __name__ == "__main__":
    main()
