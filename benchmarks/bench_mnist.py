"""MNIST training speed (``make bench``): this machine's convolution throughput against the ODE-Net's
dynamics, the share of the dynamics' time spent in convolutions (timed per operator), and one training
step of every Table 1 model (the ODE models also with their dynamics under ``torch.compile``), per
thread count. Writes ``benchmarks/mnist.json``
(the MNIST chapter measures the same throughput and reads epoch times from its training logs)::

    python benchmarks/bench_mnist.py [--threads 1 2] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nodebook.experiments.mnist import conv_throughput, convolution_share, training_step_speed  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("mnist.json"))
    args = parser.parse_args(argv)
    data = {"torch": torch.__version__, "runs": []}
    for threads in args.threads:
        torch.set_num_threads(threads)
        run = {"threads": threads, "throughput": conv_throughput(), "convolution_share": convolution_share(),
               "steps": training_step_speed(compile_dynamics=True)}
        data["runs"].append(run)
        print(f"{threads} thread(s):", {k: round(v["gflops"], 1) for k, v in run["throughput"].items()}, "GFLOP/s;",
              {k: f"{v['share']:.0%}" for k, v in run["convolution_share"].items()}, "of the dynamics in convolutions;",
              {r["model"]: round(r["seconds_per_batch"], 3) for r in run["steps"]}, "s per batch", flush=True)
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
