# Two entry points for a fresh clone: `make demo` and `make test`.
# Each creates .venv on first use and installs the project into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export OPENBLAS_NUM_THREADS := 1
DEMO_DIR ?= demo-data

.PHONY: demo test venv bench clean

$(BIN)/shoprec: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(BIN)/shoprec

venv: $(BIN)/shoprec

demo: venv
	$(BIN)/shoprec demo --out $(DEMO_DIR)

test: venv
	$(BIN)/python -m pytest -q

bench: venv
	$(BIN)/python benchmarks/bench_data.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
