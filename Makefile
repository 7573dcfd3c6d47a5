# Two commands for a newcomer: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SRC    := $(wildcard probe tests fixtures bench)
STAMP  := $(VENV)/.installed

.PHONY: demo test soak lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/notifyprobe demo

test: $(STAMP)
	$(BIN)/ruff check $(SRC)
	$(BIN)/ruff format --check $(SRC)
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

# Not part of `make test`: `watch` for about 3-4 minutes, stopped and restarted during runs
# (tests/monitor/soak_watch.py says what must hold).
soak: $(STAMP)
	$(BIN)/python -m pytest -q -s tests/monitor/soak_watch.py

# Not part of `make test`: the figures of docs/performance.md, each beside its reference.
bench: $(STAMP)
	bash .ci/system-packages bench
	$(BIN)/python -m bench.bench

lint: $(STAMP)
	$(BIN)/ruff check $(SRC)

format: $(STAMP)
	$(BIN)/ruff format $(SRC)
	$(BIN)/ruff check --fix $(SRC)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache
