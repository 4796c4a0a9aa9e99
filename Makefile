# nodebook: two commands do all set-up on a fresh machine.
#   make book   execute every chapter at its default profile and render the HTML book
#   make test   install everything and run the unit and notebook tests
# Everything else is optional: make env | reproduce PROFILE=paper | bench | lab | test-book | clean

PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
PROFILE ?= book
BIN := $(VENV)/bin
PY := $(BIN)/python
# Two pytest workers on two cores: one thread each avoids oversubscription.
TEST_ENV := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONHASHSEED=0 MPLBACKEND=Agg
BOOK_FLAGS := -W -n --keep-going
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Where the original MNIST files are (NODEBOOK_DATA/mnist/raw); on dev and CI machines beside the repo.
ifneq ($(wildcard ../shared/data/mnist/raw),)
export NODEBOOK_DATA ?= $(abspath ../shared/data)
endif

.PHONY: env test test-unit book test-book reproduce bench lab clean

env: $(VENV)/.installed

# torch goes in first (2.13.0 installs offline here); the constraint file keeps
# every later install from replacing it with a CUDA build.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==$(TORCH_VERSION)"
	echo "torch==$(TORCH_VERSION)" > $(VENV)/constraints.txt
	$(PY) -m pip install -q -c $(VENV)/constraints.txt -e ".[book,test]"
	$(PY) -c "import torch, nodebook; assert torch.__version__.startswith('$(TORCH_VERSION)'), torch.__version__"
	touch $@

test: env
	rm -rf _build/smoke
	$(TEST_ENV) $(PY) -m pytest -n 2 --dist loadscope tests
	$(TEST_ENV) $(PY) -m pytest -n 2 --dist loadscope --nbval-lax _build/smoke

test-unit: env
	$(TEST_ENV) $(PY) -m pytest -n 2 --dist loadscope tests --ignore=tests/test_notebooks.py

# MathJax is served with the book (_config.yml: mathjax_path, html_extra_path), so equations
# render with no network: its files come from PyPI's django-static-mathjax (MathJax 3.2.2).
MATHJAX := _build/mathjax/_static/mathjax
$(MATHJAX)/tex-mml-chtml.js: | env
	rm -rf _build/mathjax && mkdir -p _build/mathjax
	$(PY) -m pip download -q --no-deps -d _build/mathjax "django-static-mathjax==3.2.2.1"
	$(PY) -c "import pathlib, shutil, zipfile; root = pathlib.Path('_build/mathjax'); \
	  whl = next(root.glob('*.whl')); zipfile.ZipFile(whl).extractall(root / 'wheel'); \
	  src = root / 'wheel/mathjax/static/mathjax'; shutil.copytree(src / 'es5', root / 'tmp'); \
	  shutil.copy(src / 'LICENSE', root / 'tmp'); shutil.rmtree(root / 'wheel'); whl.unlink(); \
	  (root / '_static').mkdir(); (root / 'tmp').rename('$(MATHJAX)')"

# Evaluates the committed checkpoints only (NODEBOOK_NO_TRAIN) and writes results under _build/:
# the checkout stays clean.
book: env $(MATHJAX)/tex-mml-chtml.js
	NODEBOOK_NO_TRAIN=1 NODEBOOK_RESULTS_DIR=$(abspath _build/results) $(BIN)/jupyter-book build . $(BOOK_FLAGS)

# Builds the book, then loads every chapter in headless Chromium (Debian's).
test-book: book
	(command -v chromium || command -v google-chrome) >/dev/null && command -v chromedriver >/dev/null || \
	  ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium chromium-driver)
	$(PY) -m pip install -q -c $(VENV)/constraints.txt -e ".[browser]"
	$(PY) -m pytest -p no:xdist browser_tests

reproduce: env
	$(PY) scripts/reproduce.py --profile $(PROFILE)

bench: env
	$(PY) benchmarks/bench_solvers.py
	$(PY) benchmarks/bench_mnist.py

lab: env
	$(BIN)/jupyter lab book

clean:
	rm -rf _build build .pytest_cache
	find . -name __pycache__ -not -path "./$(VENV)/*" -prune -exec rm -rf {} +
