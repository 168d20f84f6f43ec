# The two commands of the README: `make demo` and `make test`.
# Everything they need is installed here, into .venv (Python) and target/ (Rust).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DJANGO_SITE := examples/django_site
# One interpreter for every pyo3 build (maturin, cargo test, clippy), so
# cargo doesn't rebuild pyo3 each time it sees a different Python.
export PYO3_PYTHON := $(abspath $(PY))

.PHONY: demo test build lint rust-test py-test bench clean-venv

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt

$(VENV)/.deps: requirements-dev.txt $(DJANGO_SITE)/requirements.txt | $(PY)
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

# Builds the extension and installs the package (editable) into .venv.
build: $(VENV)/.deps
	$(VENV)/bin/maturin develop --release -q

# Serves the example Django site on http://127.0.0.1:8000 with 4 workers:
# migrates its SQLite database, creates the demo admin user (and prints its
# credentials), collects the static files with hashed names, then runs tandem
# with static routes for /static/ and /media/. Ctrl-C stops it.
demo: build
	cd $(DJANGO_SITE) && ../../$(PY) manage.py demo_setup
	cd $(DJANGO_SITE) && exec ../../$(VENV)/bin/tandem mysite.wsgi -w 4 -b 127.0.0.1:8000 \
		--static /static/=staticfiles --static /media/=media

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
