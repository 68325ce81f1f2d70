# Two entry points for a fresh clone: `make demo` and `make test`.
# Each creates .venv on first use and installs the project into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export OPENBLAS_NUM_THREADS := 1
DEMO_DIR ?= demo-data

.PHONY: demo test venv bench load clean

$(BIN)/shoprec: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(BIN)/shoprec

venv: $(BIN)/shoprec

demo: venv
	$(BIN)/shoprec demo --out $(DEMO_DIR)

test: venv
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

bench: venv
	$(BIN)/python benchmarks/bench_data.py

# The long load test: LOAD_CLIENTS clients for LOAD_SECONDS s over every endpoint, a champion
# promoted mid-run, zero errors; `make test` runs a short form (tests/serving/test_load.py).
LOAD_CLIENTS ?= 32
LOAD_SECONDS ?= 120
load: venv
	SHOPREC_LOAD_LONG=1 SHOPREC_LOAD_CLIENTS=$(LOAD_CLIENTS) SHOPREC_LOAD_SECONDS=$(LOAD_SECONDS) \
		$(BIN)/python -m pytest tests/serving/test_load.py -m load -q -p no:warnings

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
