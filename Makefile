PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Two threads by default: the reference machine has 2 cores; override with THREADS=n.
THREADS ?= 2
export OMP_NUM_THREADS ?= $(THREADS)

.PHONY: setup test run bench clean

setup: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ".[dev]"
	touch $@

test: setup
	$(BIN)/python -m pytest -q

run: setup
	$(BIN)/python train.py

bench: setup
	$(BIN)/python -m protocell.bench

clean:
	rm -rf outputs/* .pytest_cache build *.egg-info
	touch outputs/.gitkeep
