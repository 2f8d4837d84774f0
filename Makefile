# On a fresh machine: `make play` opens the shipped CoinRun world, `make demo` records and
# prepares data, `make test` runs the suite. Each installs what it needs into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install play demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: 2.13.0 is the local CPU wheel; an unpinned torch pulls CUDA builds.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[games,dev]"
	touch $(STAMP)

install: $(STAMP)

# Play the world shipped with genie (without a display it says how to run headless; the
# command it suggests needs the venv on PATH, hence the second line).
play: $(STAMP)
	@$(BIN)/genie play || { echo "(genie is installed in $(VENV): 'source $(BIN)/activate' puts it on PATH)"; exit 1; }

# Record CoinRun gameplay, prepare it into a dataset and describe it.
demo: $(STAMP)
	$(BIN)/genie data record coinrun --out demo/raw --episodes 50 --overwrite
	$(BIN)/genie data prepare demo/raw --out demo/dataset --overwrite
	$(BIN)/genie data info demo/dataset

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 tests

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf demo benchmarks/results .pytest_cache
