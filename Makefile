# Two entry points: `make demo` (the full FineShapes pipeline) and `make test`.
# Both bootstrap a virtual environment in .venv on first use.
#   TORCH_SPEC   torch requirement installed in the same pip command as the rest
#                (CUDA users: e.g. TORCH_SPEC="torch==2.13.0" with --index-url via PIP_INDEX_URL).
#   FORCE=1      re-run demo stages whose outputs already exist.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_FLAGS := $(if $(filter 1,$(FORCE)),--force,)

.PHONY: demo test test-fast venv clean-demo

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install "$(TORCH_SPEC)" -r requirements.txt "pytest>=7"
	$(PY) -m pip install --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(PY) tools/demo.py $(DEMO_FLAGS)

test: $(STAMP)
	$(PY) -m pytest -q

# The edit-run loop: everything but the tests marked slow (make test, and CI, run them all).
test-fast: $(STAMP)
	@start=$$(date +%s); $(PY) -m pytest -q -m "not slow"; status=$$?; \
	echo "make test-fast: $$(( $$(date +%s) - start )) s (slow tests skipped; make test runs everything)"; exit $$status

clean-demo:
	rm -rf datasets/FineShapes data/fineshapes* data/dataset_fineshapes.json data/FineShapesEval.* demo
