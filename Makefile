# Every target creates or updates .venv itself: a fresh clone needs nothing but `make run` / `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint format bench clean-venv

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU wheel of torch lies on this machine's disk; pinning it first keeps pip from pulling a CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	# The SoundFont synthesizer without its PyAudio dependency (live playback only; it needs portaudio to build).
	$(PY) -m pip install -q --no-deps tinysoundfont
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# The web app on http://127.0.0.1:8000 with the shipped models and the embedded SQLite store in var/.
run: $(STAMP)
	$(VENV)/bin/museforge serve --host 127.0.0.1 --port 8000

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadgroup

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
