# kvtune: `make run` (a quick end-to-end run) and `make test` set everything up on a fresh machine.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench clean

install: $(STAMP)

# torch first, from its CPU build: letting stable-baselines3 pull torch in would fetch a CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	# SGLang's own dependency list would replace the CPU torch: its storage modules need only the extra.
	$(BIN)/pip install --quiet --no-deps sglang==0.5.23
	$(BIN)/pip install --quiet -e '.[hf,dev,sglang]'
	touch $(STAMP)

run: install
	$(BIN)/kvtune run --out runs/quick

test: install
	$(BIN)/pytest -q --timeout=900

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: install
	$(BIN)/kvtune bench store --out runs/bench

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
