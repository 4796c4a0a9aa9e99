"""Chapters run on the chapter's device (``ch.device``), and the solvers say so when devices disagree.

No machine that runs these tests has a GPU, so the proof uses PyTorch's
``meta`` device (tensors with a shape and a dtype but no data): every model
builder and data maker of every chapter's experiments module, called with
``device="meta"``, must put every parameter, buffer and tensor there. A
builder that pinned the CPU (a ``torch.tensor(...)`` without ``device``, a
stray ``.cpu()``) fails here. Each chapter must also pass ``ch.device`` to
every nodebook function it calls that takes a ``device``.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import re

import nbformat
import pytest
import torch
from torch import nn

from nodebook import odeint, odeint_adjoint
from nodebook.book import Chapter, toc_chapters
from nodebook.profiles import SETTINGS, get_profile

odeint_module = importlib.import_module("nodebook.solvers.odeint")  # the module, not the function
META = torch.device("meta")


# ---------------------------------------------------------------- finding every tensor
def tensors_in(obj, name: str = "x", seen=None):
    """``(name, tensor)`` for every tensor reachable from ``obj``: a module's parameters, buffers
    and plain tensor attributes (which ``.to()`` would not move), dataclass fields, optimizer
    parameters, and the items of tuples, lists and dicts."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        yield name, obj
    elif isinstance(obj, nn.Module):
        for sub_name, module in obj.named_modules(prefix=name):
            yield from ((f"{sub_name}.{k}", p) for k, p in module.named_parameters(recurse=False))
            yield from ((f"{sub_name}.{k}", b) for k, b in module.named_buffers(recurse=False))
            for k, v in vars(module).items():
                if isinstance(v, torch.Tensor) and not k.startswith("_"):
                    yield f"{sub_name}.{k}", v
    elif isinstance(obj, torch.optim.Optimizer):
        for i, group in enumerate(obj.param_groups):
            yield from ((f"{name}.param_groups[{i}][{j}]", p) for j, p in enumerate(group["params"]))
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for field in dataclasses.fields(obj):
            yield from tensors_in(getattr(obj, field.name), f"{name}.{field.name}", seen)
    elif isinstance(obj, (tuple, list)):
        for i, item in enumerate(obj):
            yield from tensors_in(item, f"{name}[{i}]", seen)
    elif isinstance(obj, dict):
        for key, item in obj.items():
            yield from tensors_in(item, f"{name}[{key!r}]", seen)


def assert_all_on(device: torch.device, **objects):
    """Every tensor reachable from each object lies on ``device`` (and each object holds some)."""
    for label, obj in objects.items():
        found = list(tensors_in(obj, label))
        assert found, f"{label}: no tensor found to check"
        elsewhere = [f"{n} on {t.device}" for n, t in found if t.device != device]
        assert not elsewhere, f"not on {device}: {elsewhere}"


def test_the_checker_bites():
    """A module holding a CPU tensor attribute (which .to() does not move) is caught."""
    class Pinned(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(2, 2)
            self.scale = torch.ones(2)  # a plain attribute: stays on the CPU

    with pytest.raises(AssertionError, match=r"model\.scale on cpu"):
        assert_all_on(META, model=Pinned().to(META))
    with pytest.raises(AssertionError, match="no tensor found"):
        assert_all_on(META, nothing=[1, 2])


# ---------------------------------------------------------------- every chapter's builders
def paper(chapter: str):
    return get_profile(chapter, "paper")


def build_solvers(device):
    from nodebook import problems
    built = {}
    for make in (problems.linear_growth, problems.marble, problems.harmonic, problems.van_der_pol):
        problem = make().to(device)
        times = problem.times(5)
        built[make.__name__] = [problem.y0, times] + ([problem.exact(times)] if problem.exact else [])
    return built


def build_adjoint(device):
    from nodebook.experiments import adjoint as ex
    P = paper("adjoint")
    return {"gradient_problem": ex.gradient_problem(P.num_hiddens, device=device),
            "vector_field": ex.vector_field(P.num_hiddens, device=device),
            "initial_states": ex.initial_states(8, device=device), "unit_interval": ex.unit_interval(device)}


def build_mnist(device, monkeypatch, tmp_path):
    from nodebook.data.mnist import load_mnist
    from nodebook.experiments import mnist as ex
    from nodebook.models import mnist as models
    monkeypatch.setenv("NODEBOOK_DATA", str(tmp_path))  # no files: the bundled subset, whatever the machine
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    P = paper("mnist")
    with pytest.warns(UserWarning, match="MNIST NOT FOUND"):
        data = load_mnist(num_train=16, num_test=8, device=device, download=False)
    built = {"data": data}
    for kind in ex.KINDS:  # train_model builds each one like this
        built[kind] = ex.build(kind, ex.solver_from(P, kind)).to(device)
    for depth in P.memory_depths[:2]:  # memory_vs_depth's models, moved to its batch's device
        built[f"depth{depth}"] = [models.resnet(depth).to(device), models.rknet(depth).to(device),
                                  models.odenet("rk4", options={"step_size": 1.0 / depth}).to(device)]
    return built


def build_trajectory(device):
    from nodebook.experiments import trajectory as ex
    P = paper("trajectory")
    return {"data": ex.make_data(P, 0, device), **{kind: ex.build(kind, P, device) for kind in ex.KINDS}}


def build_latent_ode(device):
    from nodebook.experiments import latent_ode as ex
    P = paper("latent_ode")
    P = dict(P, num_spirals=40, num_train=30, num_val=5)  # data size only: the models and solver are the paper's
    train, val, test = ex.make_data(P, 0, device=device)
    return {"train": train, "val": val, "test": test, "observations": ex.observations(train, min(P["ns"])),
            **{kind: ex.build(kind, P, device) for kind in ex.KINDS}}


def build_cnf(device):
    from nodebook.experiments import cnf as ex
    P = paper("cnf")
    built = {f"{kind}{width}": ex.build(kind, width, P, device=device) for kind in ex.KINDS for width in P.widths}
    dim = max(P.hutch_dims)
    built["hutchinson_model"] = ex.mlp_cnf(dim, "hutchinson", tol=P.hutch_tol, device=device)
    built["hutchinson_data"] = ex.correlated_gaussian(dim, torch.Generator().manual_seed(dim), device)(4)
    return built


def build_limits(device):
    from nodebook.experiments import limits as ex
    P = paper("limits")
    built = {"toy": ex.random_field(P.toy_dim, P.toy_hiddens, device=device),
             "observation_problem": ex.observation_problem(device=device)[:3]}
    for task in ex.MAP_TASKS:
        built[f"{task}_data"] = ex.map_data(task, P, device)
    return built


def build_benchmarks(device):
    from nodebook.experiments import benchmarks as ex
    return {"mlp_problem": ex.mlp_problem(5, device)}


BUILDERS = {"solvers": build_solvers, "adjoint": build_adjoint, "mnist": build_mnist,
            "trajectory": build_trajectory, "latent_ode": build_latent_ode, "cnf": build_cnf,
            "benchmarks": build_benchmarks, "limits": build_limits}


def test_every_chapter_has_a_device_test():
    assert set(BUILDERS) == set(SETTINGS), "add a builder test for each chapter's experiments module"


@pytest.mark.parametrize("chapter", sorted(SETTINGS))
def test_builders_put_everything_on_the_device(chapter, monkeypatch, tmp_path):
    """Models (parameters, buffers, tensor attributes) and data made for ``meta`` are all on ``meta``."""
    build = BUILDERS[chapter]
    extra = {"monkeypatch": monkeypatch, "tmp_path": tmp_path}
    built = build(META, **{k: v for k, v in extra.items() if k in inspect.signature(build).parameters})
    assert_all_on(META, **built)


# ---------------------------------------------------------------- every chapter passes ch.device
def _imported_names(tree: ast.Module) -> dict:
    """Names bound by the notebook's ``import`` statements, resolved to their objects."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("nodebook"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                obj = getattr(module, alias.name, None)
                if obj is None:
                    obj = importlib.import_module(f"{node.module}.{alias.name}")
                names[alias.asname or alias.name] = obj
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("nodebook"):
                    names[alias.asname or alias.name] = importlib.import_module(alias.name)
    return names


def _resolve(node: ast.expr, names: dict):
    if isinstance(node, ast.Name):
        return names.get(node.id)
    if isinstance(node, ast.Attribute):
        base = _resolve(node.value, names)
        return None if base is None else getattr(base, node.attr, None)
    return None


def device_arguments(source: str) -> list[tuple[str, str | None]]:
    """For each call in ``source`` of a nodebook function or class taking ``device`` (except
    ``Chapter``, which picks the device): ``(call, the device argument's source or None)``."""
    tree = ast.parse(source)
    names = _imported_names(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        target = _resolve(node.func, names)
        if target is None or target is Chapter or not callable(target):
            continue
        if not (getattr(target, "__module__", None) or "").startswith("nodebook"):
            continue
        try:
            signature = inspect.signature(target)
        except (TypeError, ValueError):
            continue
        if "device" not in signature.parameters:
            continue
        bound = signature.bind_partial(*node.args, **{k.arg: k.value for k in node.keywords if k.arg})
        device = bound.arguments.get("device")
        found.append((ast.unparse(node)[:120], None if device is None else ast.unparse(device)))
    return found


def test_device_argument_finder_bites():
    source = ("from nodebook.experiments import adjoint as ex\nfrom nodebook.data.mnist import load_mnist\n"
              "a = ex.gradient_problem(16)\nb = ex.memory_vs_steps(16, [10], ch.device)\n"
              "c = load_mnist(num_train=8, device='cpu')\nd = ex.nfe_summary({})\n")
    assert [d for _, d in device_arguments(source)] == [None, "ch.device", "'cpu'"]


CHAPTERS = [nb for nb in toc_chapters() if re.match(r"\d\d_", nb.stem)]


@pytest.mark.parametrize("notebook", CHAPTERS, ids=[nb.stem for nb in CHAPTERS])
def test_chapter_passes_its_device(notebook):
    """Every call of a nodebook function that takes ``device`` passes ``ch.device``; no cell names the CPU."""
    cells = [c.source for c in nbformat.read(notebook, as_version=4).cells if c.cell_type == "code"][1:]
    source = "\n".join(cells)
    wrong = [(call, device) for call, device in device_arguments(source) if device != "ch.device"]
    assert not wrong, f"{notebook.name}: calls that do not pass device=ch.device: {wrong}"
    assert not re.search(r"""["']cpu["']|\.cpu\(\)\s*\.\s*(to|train)\b""", source), notebook.name


# ---------------------------------------------------------------- solvers: devices must agree
class LinearField(nn.Module):
    """dy/dt = W y + b."""

    def __init__(self, device):
        super().__init__()
        self.f = nn.Linear(2, 2).to(device)

    def forward(self, t, y):
        return self.f(y)


class Tupled(nn.Module):
    """A module on tuple states: (a, b) -> (f(a), f(b))."""

    def __init__(self, device):
        super().__init__()
        self.f = nn.Linear(2, 2).to(device)

    def forward(self, t, state):
        return tuple(self.f(s) for s in state)


T = torch.tensor([0.0, 1.0])


@pytest.mark.parametrize("solve", [odeint, odeint_adjoint], ids=["odeint", "odeint_adjoint"])
def test_parameters_and_y0_on_different_devices_fail_clearly(solve):
    with pytest.raises(ValueError, match=r"func's parameters are on meta but y0 is on cpu; put both on one device"):
        solve(LinearField(META), torch.zeros(3, 2), T)
    # checked before y0's values are read (which a meta tensor does not have)
    with pytest.raises(ValueError, match=r"func's parameters are on cpu but y0 is on meta"):
        solve(LinearField("cpu"), torch.zeros(3, 2, device=META), T)
    with pytest.raises(ValueError, match=r"func's parameters are on meta but y0 is on cpu"):
        solve(Tupled(META), (torch.zeros(3, 2), torch.zeros(1, 2)), T)


def test_adjoint_params_on_another_device_fail_clearly():
    weight = nn.Parameter(torch.ones(2, device=META))
    with pytest.raises(ValueError, match=r"adjoint_params are on meta but y0 is on cpu"):
        odeint_adjoint(lambda t, y: -y, torch.zeros(3, 2), T, adjoint_params=[weight])


class Decay(nn.Module):
    """dy/dt = -y: a module without parameters."""

    def forward(self, t, y):
        return -y


def test_parameterless_modules_and_functions_solve_as_before():
    y0 = torch.ones(3, 2)
    by_function = odeint(lambda t, y: -y, y0, T, method="rk4", options={"step_size": 0.1})
    assert torch.equal(odeint(Decay(), y0, T, method="rk4", options={"step_size": 0.1}), by_function)
    assert torch.allclose(by_function[-1], y0 * torch.exp(torch.tensor(-1.0)), rtol=1e-5)


def test_device_check_runs_once_per_solve(monkeypatch):
    """The check is one look at the first parameter per call, never inside the solver's loop."""
    calls = []
    check = odeint_module.check_device
    monkeypatch.setattr(odeint_module, "check_device", lambda func, y0: calls.append(1) or check(func, y0))
    func = LinearField("cpu")
    odeint(func, torch.ones(3, 2), torch.linspace(0.0, 1.0, 5), method="rk4", options={"step_size": 0.01})
    assert len(calls) == 1
