# Every target creates or updates .venv itself: a fresh clone needs nothing but `make run` / `make test`.
# Installs come from requirements.lock (the fully resolved set, compiled by `make lock`), so every machine
# gets the versions CI tested.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PIP_VERSION := $(shell sed -n "s/^pip==//p" requirements.lock)
# The SoundFont synthesizer, installed without its PyAudio dependency (live playback only; it needs portaudio
# headers to build), so it cannot sit in the lock with its dependencies: pinned here instead.
TINYSOUNDFONT := tinysoundfont==0.3.7
COMPILE := CUSTOM_COMPILE_COMMAND="make lock" $(VENV)/bin/pip-compile --quiet --extra dev --strip-extras \
	--allow-unsafe --no-emit-find-links --no-emit-index-url --constraint constraints.txt

.PHONY: run test lint format bench lock lock-check clean-venv

$(STAMP): pyproject.toml requirements.lock Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q pip==$(PIP_VERSION)
	# The CPU wheel of torch lies on this machine's disk; installing it first keeps pip from pulling a CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps $(TINYSOUNDFONT)
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

# The web app on http://127.0.0.1:8000 with the shipped models and the embedded SQLite store in var/.
run: $(STAMP)
	$(VENV)/bin/museforge serve --host 127.0.0.1 --port 8000

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadgroup

# Re-resolve requirements.lock from pyproject.toml, keeping every pin that still fits; `make lock
# UPGRADE=1` moves everything to the newest versions allowed.
lock: $(STAMP)
	$(COMPILE) $(if $(UPGRADE),--upgrade) --output-file requirements.lock pyproject.toml

# Fails when requirements.lock no longer matches pyproject.toml (a dependency added, removed or re-bounded
# without `make lock`). Run by CI.
lock-check: $(STAMP)
	tmp=$$(mktemp -d) && cp requirements.lock $$tmp/requirements.lock && \
	$(COMPILE) --output-file $$tmp/requirements.lock pyproject.toml && \
	diff -u requirements.lock $$tmp/requirements.lock && rm -r $$tmp && echo "requirements.lock matches pyproject.toml"

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

format: $(STAMP)
	$(VENV)/bin/ruff check --fix src tests benchmarks
	$(VENV)/bin/ruff format src tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/bench_data.py

clean-venv:
	rm -rf $(VENV)
