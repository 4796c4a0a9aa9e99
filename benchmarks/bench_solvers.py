"""Solver benchmarks: nodebook against torchdiffeq 0.2.5 and scipy, in one process.

(a) wall time and NFE of dopri5 on a small MLP ODE (batch 256, 2-d state,
    width 64, t in [0, 10], rtol 1e-5), without gradients and with
    backpropagation through the solver;
(b) error against NFE at rtol 1e-3 / 1e-5 / 1e-7 on exponential decay, a
    two-body orbit (eccentricity 0.5, exact via Kepler's equation) and Van der
    Pol (mu = 1, reference from scipy's DOP853 at 1e-12);
(c) forward + backward time of the adjoint against backpropagation.

Repeats are interleaved (A, B, A, B, ...; the order alternates) and medians
reported. Writes ``benchmarks/solvers.json`` (the appendix chapter renders it)::

    python benchmarks/bench_solvers.py [--repeats 11] [--out PATH] [--figure PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nodebook.adjoint import odeint_adjoint  # noqa: E402
from nodebook.solvers import odeint, record_stats  # noqa: E402

try:
    import torchdiffeq
except ImportError:  # pragma: no cover
    torchdiffeq = None
try:
    import scipy
    from scipy.integrate import solve_ivp
except ImportError:  # pragma: no cover
    scipy = None

D = torch.float64


# ---------------------------------------------------------------- problems
class MLPODE(nn.Module):
    """dz/dt = MLP(z): 2 -> 64 -> 64 -> 2 with tanh, weights N(0, (2/sqrt(fan_in))^2)
    so the flow is non-trivial (about 180 evaluations at rtol 1e-5)."""

    def __init__(self, width=64, gain=2.0, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(2, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(),
                                 nn.Linear(width, 2))
        for m in self.net:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=gain / m.in_features ** 0.5)
        self.nfe = 0

    def forward(self, t, z):
        self.nfe += 1
        return self.net(z)


def kepler_orbit(e=0.5):
    """Two-body problem (GM = 1, a = 1, start at periapsis) with its exact solution."""
    def func(t, y):
        r3 = (y[0] ** 2 + y[1] ** 2) ** 1.5
        return torch.stack([y[2], y[3], -y[0] / r3, -y[1] / r3])

    def exact(t):
        M = np.asarray(t, dtype=float)
        E = M.copy()
        for _ in range(50):  # Newton on Kepler's equation E - e sin E = M
            E -= (E - e * np.sin(E) - M) / (1 - e * np.cos(E))
        dE = 1 / (1 - e * np.cos(E))
        b = math.sqrt(1 - e * e)
        return np.stack([np.cos(E) - e, b * np.sin(E), -np.sin(E) * dE, b * np.cos(E) * dE], 1)

    y0 = torch.tensor(exact([0.0])[0], dtype=D)
    return func, y0, 4 * math.pi, exact


def decay():
    rates = torch.tensor([0.5, 1.0, 2.0], dtype=D)
    return (lambda t, y: -rates * y, torch.ones(3, dtype=D), 5.0,
            lambda t: np.exp(-np.outer(t, rates.numpy())))


def van_der_pol(mu=1.0):
    def func(t, y):
        return torch.stack([y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]])

    def np_func(t, y):
        return [y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]]

    def exact(t):
        sol = solve_ivp(np_func, (0.0, 10.0), [2.0, 0.0], method="DOP853", rtol=1e-12, atol=1e-12,
                        t_eval=t, dense_output=False)
        return sol.y.T

    return func, torch.tensor([2.0, 0.0], dtype=D), 10.0, exact


# ---------------------------------------------------------------- helpers
def interleaved(fns: dict, repeats: int) -> dict:
    """Run each fn `repeats` times, interleaved with alternating order; seconds per call."""
    times = {k: [] for k in fns}
    names = list(fns)
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return times


def summary(times):
    return {"median_s": statistics.median(times), "times_s": times}


# ---------------------------------------------------------------- (a)
def bench_mlp(repeats: int) -> dict:
    func = MLPODE()
    torch.manual_seed(1)
    z0 = torch.randn(256, 2)
    t = torch.tensor([0.0, 10.0])
    tol = dict(rtol=1e-5, atol=1e-6, method="dopri5")
    libs = {"nodebook": odeint}
    if torchdiffeq is not None:
        libs["torchdiffeq"] = torchdiffeq.odeint
    out = {"problem": "MLP ODE 2-64-64-2 (tanh), batch 256, t in [0, 10], dopri5, rtol 1e-5, atol 1e-6",
           "modes": {}}
    for mode in ["no_grad", "backprop_forward_backward"]:
        def make(solver):
            def run():
                if mode == "no_grad":
                    with torch.no_grad():
                        solver(func, z0, t, **tol)
                else:
                    func.zero_grad(set_to_none=True)
                    solver(func, z0, t, **tol)[-1].square().sum().backward()
            return run
        fns = {name: make(s) for name, s in libs.items()}
        nfe = {}
        for name, fn in fns.items():  # warm-up + NFE
            func.nfe = 0
            fn()
            nfe[name] = func.nfe
        times = interleaved(fns, repeats)
        res = {name: {**summary(times[name]), "nfe": nfe[name]} for name in fns}
        if "torchdiffeq" in res:
            res["time_ratio"] = res["nodebook"]["median_s"] / res["torchdiffeq"]["median_s"]
            res["nfe_ratio"] = nfe["nodebook"] / nfe["torchdiffeq"]
        out["modes"][mode] = res
    return out


# ---------------------------------------------------------------- (b)
def bench_accuracy(rtols=(1e-3, 1e-5, 1e-7), n_out=50) -> dict:
    problems = {"exponential_decay": decay(), "two_body_e0.5": kepler_orbit(),
                "van_der_pol_mu1": van_der_pol()}
    out = {}
    for pname, (func, y0, t1, exact) in problems.items():
        t = torch.linspace(0.0, t1, n_out, dtype=D)
        ref = exact(t.numpy())
        solvers = {}

        def torch_solver(lib, method):
            def run(rtol):
                calls = [0]

                def f(s, y):
                    calls[0] += 1
                    return func(s, y)
                ys = lib(f, y0, t, rtol=rtol, atol=rtol * 1e-3, method=method)
                return calls[0], float(np.abs(ys.numpy() - ref).max())
            return run

        solvers["nodebook dopri5"] = torch_solver(odeint, "dopri5")
        solvers["nodebook bosh3"] = torch_solver(odeint, "bosh3")
        if torchdiffeq is not None:
            solvers["torchdiffeq dopri5"] = torch_solver(torchdiffeq.odeint, "dopri5")
        if scipy is not None:
            def scipy_rk45(rtol):
                def f(s, y):
                    return func(torch.tensor(s, dtype=D), torch.as_tensor(y, dtype=D)).numpy()
                sol = solve_ivp(f, (0.0, t1), y0.numpy(), method="RK45", rtol=rtol, atol=rtol * 1e-3,
                                t_eval=t.numpy())
                return int(sol.nfev), float(np.abs(sol.y.T - ref).max())
            solvers["scipy RK45"] = scipy_rk45
        res = {}
        for sname, run in solvers.items():
            nfe, err = zip(*(run(r) for r in rtols))
            res[sname] = {"nfe": list(nfe), "max_error": list(err)}
        out[pname] = {"rtol": list(rtols), "atol_over_rtol": 1e-3, "n_out": n_out, "solvers": res}
    return out


# ---------------------------------------------------------------- (c)
def bench_adjoint(repeats: int) -> dict:
    func = MLPODE()
    torch.manual_seed(1)
    z0 = torch.randn(256, 2, requires_grad=True)
    t = torch.linspace(0.0, 10.0, 5)
    tol = dict(rtol=1e-5, atol=1e-6, method="dopri5")
    libs = {"nodebook adjoint": odeint_adjoint, "nodebook backprop": odeint}
    if torchdiffeq is not None:
        libs["torchdiffeq adjoint"] = torchdiffeq.odeint_adjoint
        libs["torchdiffeq backprop"] = torchdiffeq.odeint

    def make(solver):
        def run():
            func.zero_grad(set_to_none=True)
            z0.grad = None
            solver(func, z0, t, **tol).square().sum().backward()
        return run

    fns = {name: make(s) for name, s in libs.items()}
    res = {}
    for name, fn in fns.items():
        with record_stats() as log:
            func.nfe = 0
            fn()
        ours = name.startswith("nodebook")  # record_stats only sees nodebook's solves
        res[name] = {"nfe_total": func.nfe,
                     "nfe_forward": log.nfe_forward if ours else None,
                     "nfe_backward": log.nfe_backward if ours else None}
    times = interleaved(fns, repeats)
    for name in fns:
        res[name].update(summary(times[name]))
    res["problem"] = "MLP ODE of (a), loss on 5 time points, forward + backward"
    res["nodebook_adjoint_over_backprop"] = (res["nodebook adjoint"]["median_s"]
                                             / res["nodebook backprop"]["median_s"])
    if torchdiffeq is not None:
        res["adjoint_time_ratio_nodebook_over_torchdiffeq"] = (
            res["nodebook adjoint"]["median_s"] / res["torchdiffeq adjoint"]["median_s"])
        res["backprop_time_ratio_nodebook_over_torchdiffeq"] = (
            res["nodebook backprop"]["median_s"] / res["torchdiffeq backprop"]["median_s"])
    return res


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--figure", type=Path, default=None, help="also save the figure (png/pdf)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = {
        "meta": {"torch": torch.__version__,
                 "torchdiffeq": getattr(torchdiffeq, "__version__", None),
                 "scipy": getattr(scipy, "__version__", None),
                 "python": platform.python_version(), "machine": platform.machine(),
                 "processor": platform.processor(), "threads": args.threads, "repeats": args.repeats,
                 "date": time.strftime("%Y-%m-%d %H:%M:%S")},
        "a": bench_mlp(args.repeats),
        "b": bench_accuracy(),
        "c": bench_adjoint(args.repeats),
    }
    if args.out is None:
        args.out = Path(__file__).resolve().parent / "solvers.json"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    print(report(data))
    print(f"wrote {args.out}")
    if args.figure is not None:
        from nodebook.plotting.bench import plot_benchmarks
        plot_benchmarks(data).savefig(args.figure, dpi=150, bbox_inches="tight")
        print(f"wrote {args.figure}")
    return data


def report(data) -> str:
    lines = ["(a) " + data["a"]["problem"]]
    for mode, res in data["a"]["modes"].items():
        parts = [f"{name} {r['median_s'] * 1e3:.2f} ms (nfe {r['nfe']})"
                 for name, r in res.items() if isinstance(r, dict)]
        ratio = f"; time ratio {res['time_ratio']:.3f}, nfe ratio {res['nfe_ratio']:.3f}" if "time_ratio" in res else ""
        lines.append(f"  {mode}: " + ", ".join(parts) + ratio)
    lines.append("(b) max error / nfe at rtol " + ", ".join(f"{r:g}" for r in
                                                           next(iter(data["b"].values()))["rtol"]))
    for pname, p in data["b"].items():
        lines.append(f"  {pname}")
        for sname, r in p["solvers"].items():
            lines.append(f"    {sname:20s} " + "  ".join(f"{e:.2e}/{n}" for e, n in zip(r["max_error"], r["nfe"])))
    lines.append("(c) " + data["c"]["problem"])
    for name, r in data["c"].items():
        if isinstance(r, dict):
            split = (f"nfe fwd {r['nfe_forward']} bwd {r['nfe_backward']}, "
                     if r["nfe_forward"] is not None else "")
            lines.append(f"  {name:22s} {r['median_s'] * 1e3:8.2f} ms  ({split}func calls {r['nfe_total']})")
    for k, v in data["c"].items():
        if isinstance(v, float):
            lines.append(f"  {k}: {v:.3f}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
