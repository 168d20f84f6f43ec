# The two commands of the README: `make demo` and `make test`.
# Everything they need is installed here, into .venv (Python) and target/ (Rust).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# One interpreter for every pyo3 build (maturin, cargo test, clippy), so
# cargo doesn't rebuild pyo3 each time it sees a different Python.
export PYO3_PYTHON := $(abspath $(PY))

.PHONY: demo test build lint rust-test py-test bench clean-venv

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt

$(VENV)/.deps: requirements-dev.txt | $(PY)
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

# Builds the extension and installs the package (editable) into .venv.
build: $(VENV)/.deps
	$(VENV)/bin/maturin develop --release -q

# Serves the bundled hello app on http://127.0.0.1:8000 with 2 workers.
demo: build
	cd examples && ../$(VENV)/bin/tandem hello:app -w 2 -b 127.0.0.1:8000

lint: $(VENV)/.deps
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	$(VENV)/bin/ruff check python tests bench examples

rust-test:
	cargo test

py-test: build
	$(PY) -m pytest -q tests

# Everything CI runs.
test: lint rust-test py-test

bench:
	bash bench/setup.sh
	bench/.venv/bin/python bench/run.py

clean-venv:
	rm -rf $(VENV)
