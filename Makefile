# Entry points: `make demo` (the full FineShapes pipeline), `make app` (the web demo, after `make demo`)
# and `make test`.
# All bootstrap a virtual environment in .venv on first use.
#   TORCH_SPEC   torch requirement installed in the same pip command as the rest
#                (CUDA users: e.g. TORCH_SPEC="torch==2.13.0" with --index-url via PIP_INDEX_URL).
#   FORCE=1      re-run demo stages whose outputs already exist.
#   SEEDS=N      train MLE and the four SCST runs with N seeds and report mean ± sd (default 1).
#   APP_FLAGS    options of tools/app.py for `make app` (e.g. APP_FLAGS="--port 8080 --ckpt my.ckpt").
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SEEDS ?= 1
DEMO_FLAGS := $(if $(filter 1,$(FORCE)),--force,) --seeds $(SEEDS)

.PHONY: demo test test-fast lint app venv clean-demo

venv: $(STAMP)

$(STAMP): requirements.txt requirements-test.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install "$(TORCH_SPEC)" -r requirements.txt -r requirements-test.txt
	$(PY) -m pip install --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(PY) tools/demo.py $(DEMO_FLAGS)

app: $(STAMP)
	$(PY) tools/app.py $(APP_FLAGS)

# Lint first (ruff, and import-linter's floor contracts in pyproject.toml), then every test.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

test: lint
	$(PY) -m pytest -q

# The edit-run loop: everything but the tests marked slow (make test, and CI, run them all).
test-fast: lint
	@start=$$(date +%s); $(PY) -m pytest -q -m "not slow"; status=$$?; \
	echo "make test-fast: $$(( $$(date +%s) - start )) s (slow tests skipped; make test runs everything)"; exit $$status

clean-demo:
	rm -rf datasets/FineShapes data/fineshapes* data/dataset_fineshapes.json data/FineShapesEval.* demo
