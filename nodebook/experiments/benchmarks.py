"""Solver benchmarks: nodebook against torchdiffeq 0.2.5 and SciPy, in one process
(appendix "How fast is nodebook?", ``book/07_benchmarks.ipynb``; ``make bench``).

(a) :func:`bench_mlp`: wall time and NFE of dopri5 on a small MLP ODE (batch
    256, 2-d state, width 64, t in [0, 10], rtol 1e-5), without gradients and
    with backpropagation through the solver;
(b) :func:`bench_accuracy`: error against NFE at rtol 1e-3 / 1e-5 / 1e-7 on
    exponential decay, a two-body orbit (eccentricity 0.5, exact via Kepler's
    equation) and Van der Pol (mu = 1, reference from SciPy's DOP853 at 1e-12);
(c) :func:`bench_adjoint`: forward + backward time of the adjoint against
    backpropagation.

Repeats are interleaved (A, B, A, B, ...; the order alternates) and medians
reported. :func:`run_all` gathers the three into the dictionary that
``benchmarks/bench_solvers.py`` writes to ``benchmarks/solvers.json`` and the
appendix renders (:func:`load_committed`). torchdiffeq and SciPy are optional:
without them their entries are left out (:data:`HAVE_TORCHDIFFEQ`). Times are
reported, never asserted.
"""

from __future__ import annotations

import math
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nodebook import odeint, odeint_adjoint, record_stats
from nodebook.utils import REPO_ROOT, Timer

try:
    import torchdiffeq
except ImportError:  # pragma: no cover
    torchdiffeq = None
try:
    import scipy
    from scipy.integrate import solve_ivp
except ImportError:  # pragma: no cover
    scipy = None

HAVE_TORCHDIFFEQ = torchdiffeq is not None
COMMITTED = REPO_ROOT / "benchmarks" / "solvers.json"  # what ``make bench`` writes
BENCH_DEVICE = "cpu"  # where ``make bench`` times the solvers, whatever device runs the appendix
D = torch.float64


# ---------------------------------------------------------------- problems
class MLPODE(nn.Module):
    """dz/dt = MLP(z): 2 -> 64 -> 64 -> 2 with tanh, weights N(0, (2/sqrt(fan_in))^2)
    so the flow is non-trivial (about 180 evaluations at rtol 1e-5). Counts its calls in ``nfe``."""

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
    """Two-body problem (GM = 1, a = 1, start at periapsis) with its exact solution:
    ``(func, y0, t1, exact)`` with ``exact(t)`` taking and returning NumPy arrays."""
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
    """Three decoupled exponential decays (rates 0.5, 1, 2): ``(func, y0, t1, exact)``."""
    rates = torch.tensor([0.5, 1.0, 2.0], dtype=D)
    return (lambda t, y: -rates * y, torch.ones(3, dtype=D), 5.0,
            lambda t: np.exp(-np.outer(t, rates.numpy())))


def van_der_pol(mu=1.0):
    """Van der Pol from (2, 0) over [0, 10], the reference by SciPy's DOP853 at 1e-12 (needs SciPy)."""
    def func(t, y):
        return torch.stack([y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]])

    def np_func(t, y):
        return [y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]]

    def exact(t):
        sol = solve_ivp(np_func, (0.0, 10.0), [2.0, 0.0], method="DOP853", rtol=1e-12, atol=1e-12,
                        t_eval=t, dense_output=False)
        return sol.y.T

    return func, torch.tensor([2.0, 0.0], dtype=D), 10.0, exact


def mlp_problem(num_times: int = 2, device="cpu"):
    """The problem of (a) and (c) on ``device``: ``(func, z0, t)``, an :class:`MLPODE`, 256
    initial states (drawn after seeding with 1) and ``num_times`` output times from 0 to 10."""
    func = MLPODE().to(device)
    torch.manual_seed(1)
    z0 = torch.randn(256, 2).to(device)
    return func, z0, torch.linspace(0.0, 10.0, num_times, device=device)


# ---------------------------------------------------------------- helpers
def interleaved(fns: dict, repeats: int) -> dict:
    """Run each fn ``repeats`` times, interleaved with alternating order; seconds per call
    (CUDA work is synchronised, see :class:`nodebook.utils.Timer`)."""
    times = {k: [] for k in fns}
    names = list(fns)
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            with Timer() as timer:
                fns[name]()
            times[name].append(timer.seconds)
    return times


def summary(times):
    return {"median_s": statistics.median(times), "times_s": times}


# ---------------------------------------------------------------- (a)
def bench_mlp(repeats: int, device="cpu") -> dict:
    """(a): dopri5 on :class:`MLPODE`, nodebook against torchdiffeq (when installed), without
    gradients and with backprop through the solver; medians, NFE and the ratios nodebook / torchdiffeq."""
    func, z0, t = mlp_problem(2, device)
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


def live_mlp(repeats: int, threads: int | None = None, device="cpu") -> dict | None:
    """:func:`bench_mlp` run now, with torch limited to ``threads`` threads (as in the committed
    run; the previous thread count is restored afterwards). ``None`` without torchdiffeq."""
    if not HAVE_TORCHDIFFEQ:
        return None
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return bench_mlp(repeats, device=device)
    finally:
        torch.set_num_threads(previous)


# ---------------------------------------------------------------- (b)
def bench_accuracy(rtols=(1e-3, 1e-5, 1e-7), n_out=50) -> dict:
    """(b): max error over ``n_out`` output times and NFE at each rtol (atol = rtol / 1000)
    on three problems with exact or reference solutions (needs SciPy for Van der Pol)."""
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
def bench_adjoint(repeats: int, device="cpu") -> dict:
    """(c): forward + backward of the MLP ODE of (a) with a loss on 5 times, by the adjoint and
    by backprop, nodebook and torchdiffeq (when installed); medians and NFE."""
    func, z0, t = mlp_problem(5, device)
    z0.requires_grad_(True)
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


# ---------------------------------------------------------------- all three
def run_all(repeats: int = 11, threads: int = 1, parts=("a", "b", "c")) -> dict:
    """The ``make bench`` run: ``{"meta": ..., "a": ..., "b": ..., "c": ...}`` (the parts asked
    for), with torch limited to ``threads`` threads (restored afterwards)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        data = {"meta": {"torch": torch.__version__,
                         "torchdiffeq": getattr(torchdiffeq, "__version__", None),
                         "scipy": getattr(scipy, "__version__", None),
                         "python": platform.python_version(), "machine": platform.machine(),
                         "processor": platform.processor(), "threads": threads, "repeats": repeats,
                         "date": time.strftime("%Y-%m-%d %H:%M:%S")}}
        runs = {"a": lambda: bench_mlp(repeats), "b": bench_accuracy, "c": lambda: bench_adjoint(repeats)}
        for part in parts:
            data[part] = runs[part]()
        return data
    finally:
        torch.set_num_threads(previous)


def load_committed(path: Path | str = COMMITTED) -> dict:
    """The dictionary of a ``make bench`` run (default: the committed ``benchmarks/solvers.json``)."""
    import json

    return json.loads(Path(path).read_text())


def describe_run(meta: dict) -> str:
    """One line saying when and with what a ``make bench`` run was measured."""
    return (f"measured {meta['date']} with torch {meta['torch']}, torchdiffeq {meta['torchdiffeq']}, "
            f"scipy {meta['scipy']}, {meta['threads']} thread(s), median of {meta['repeats']} interleaved repeats")


# ---------------------------------------------------------------- tables
def mlp_table(a: dict) -> tuple[list, list]:
    """Header and rows of part (a): median times, their ratio and the NFE of both libraries."""
    header = ["(a) MLP ODE", "nodebook (ms)", "torchdiffeq (ms)", "time ratio", "NFE nodebook / torchdiffeq"]
    rows = [[mode, f"{r['nodebook']['median_s'] * 1e3:.1f}", f"{r['torchdiffeq']['median_s'] * 1e3:.1f}",
             f"{r['time_ratio']:.2f}", f"{r['nodebook']['nfe']} / {r['torchdiffeq']['nfe']}"]
            for mode, r in a["modes"].items()]
    return header, rows


def accuracy_table(b: dict) -> tuple[list, list]:
    """Header and rows of part (b): error and NFE of both libraries' dopri5 per problem and rtol."""
    rows = []
    for name, p in b.items():
        ours, theirs = p["solvers"]["nodebook dopri5"], p["solvers"]["torchdiffeq dopri5"]
        for rtol, e1, n1, e2, n2 in zip(p["rtol"], ours["max_error"], ours["nfe"], theirs["max_error"], theirs["nfe"]):
            rows.append([name, f"{rtol:g}", f"{e1:.2e} / {n1}", f"{e2:.2e} / {n2}"])
    return ["(b) problem", "rtol", "nodebook dopri5: error / NFE", "torchdiffeq dopri5: error / NFE"], rows


def adjoint_table(c: dict) -> tuple[list, list]:
    """Header and rows of part (c): median forward + backward time and NFE of nodebook's runs."""
    rows = [[name, f"{r['median_s'] * 1e3:.1f}", r["nfe_forward"], r["nfe_backward"]]
            for name, r in c.items() if isinstance(r, dict) and r["nfe_forward"] is not None]
    return ["(c) forward + backward", "median (ms)", "NFE forward", "NFE backward"], rows


def live_table(live: dict) -> tuple[list, list]:
    """Header and rows of a live :func:`bench_mlp` run."""
    rows = [[mode, f"{r['nodebook']['median_s'] * 1e3:.1f}", f"{r['torchdiffeq']['median_s'] * 1e3:.1f}",
             f"{r['time_ratio']:.2f}", f"{r['nfe_ratio']:.2f}"] for mode, r in live["modes"].items()]
    return ["mode", "nodebook (ms)", "torchdiffeq (ms)", "time ratio", "NFE ratio"], rows


def ratio_table(data: dict, live: dict | None) -> tuple[list, list]:
    """Header and rows of the wall-time ratios of a ``make bench`` run and of a live
    :func:`bench_mlp` run (``None``: not run)."""
    def ratio(run, mode):
        return "not run" if run is None else f"{run['modes'][mode]['time_ratio']:.2f}"

    rows = [["nodebook / torchdiffeq, dopri5, no grad", ratio(data["a"], "no_grad"), ratio(live, "no_grad")],
            ["nodebook / torchdiffeq, dopri5, backprop", ratio(data["a"], "backprop_forward_backward"),
             ratio(live, "backprop_forward_backward")],
            ["nodebook adjoint / nodebook backprop, forward + backward (c)",
             f"{data['c']['nodebook_adjoint_over_backprop']:.1f}", "not run"]]
    return ["wall-time ratio", "make bench", "live"], rows


def dopri5_agreement(b: dict) -> dict:
    """Part (b), nodebook's dopri5 against torchdiffeq's over every problem and rtol: the
    largest and smallest NFE ratio and the largest relative difference of the errors."""
    nfe_ratios, error_diffs = [], []
    for p in b.values():
        ours, theirs = p["solvers"]["nodebook dopri5"], p["solvers"]["torchdiffeq dopri5"]
        nfe_ratios += [n1 / n2 for n1, n2 in zip(ours["nfe"], theirs["nfe"])]
        error_diffs += [abs(e1 / e2 - 1) for e1, e2 in zip(ours["max_error"], theirs["max_error"])]
    return {"max_nfe_ratio": max(nfe_ratios), "min_nfe_ratio": min(nfe_ratios),
            "max_error_difference": max(error_diffs)}


# ---------------------------------------------------------------- report
def report(data) -> str:
    """The text summary ``make bench`` prints."""
    lines = []
    if "a" in data:
        lines.append("(a) " + data["a"]["problem"])
        for mode, res in data["a"]["modes"].items():
            parts = [f"{name} {r['median_s'] * 1e3:.2f} ms (nfe {r['nfe']})"
                     for name, r in res.items() if isinstance(r, dict)]
            ratio = (f"; time ratio {res['time_ratio']:.3f}, nfe ratio {res['nfe_ratio']:.3f}"
                     if "time_ratio" in res else "")
            lines.append(f"  {mode}: " + ", ".join(parts) + ratio)
    if "b" in data:
        lines.append("(b) max error / nfe at rtol " + ", ".join(f"{r:g}" for r in
                                                               next(iter(data["b"].values()))["rtol"]))
        for pname, p in data["b"].items():
            lines.append(f"  {pname}")
            for sname, r in p["solvers"].items():
                lines.append(f"    {sname:20s} " + "  ".join(f"{e:.2e}/{n}" for e, n in zip(r["max_error"], r["nfe"])))
    if "c" in data:
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
