PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Two threads by default: the reference machine has 2 cores; override with THREADS=n.
THREADS ?= 2
export OMP_NUM_THREADS ?= $(THREADS)

.PHONY: setup lint test test-fast run bench clean

setup: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ".[dev]"
	@# Debian's chromium lets the tests open report.html in a real browser: installed only when asked
	@# (CHROMIUM=1, or CI=true where its absence fails the test), never as root unasked
	-@command -v chromium >/dev/null 2>&1 || { { [ "$${CHROMIUM:-0}" = 1 ] || [ "$${CI:-}" = true ]; } \
		&& [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
		|| echo "chromium not installed: the report's browser test will be skipped (CHROMIUM=1 make setup installs it as root)"
	touch $@

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: setup lint
	@# one worker per core, one thread each (two 2-thread processes on 2 cores run many times slower);
	@# a test file stays on one worker, so its module fixtures are built once
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(THREADS) --dist loadfile

test-fast: setup
	@# the unit tests only, without those marked slow (a training run, a CLI end to end): about a minute
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(THREADS) --dist loadfile -m "not slow" tests/unit

run: setup
	$(BIN)/python train.py

bench: setup
	$(BIN)/python -m protocell.bench

clean:
	rm -rf outputs/* .pytest_cache build *.egg-info
	touch outputs/.gitkeep
