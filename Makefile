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

# pytest: three workers on two cores, as the tests mostly wait on sockets and processes (the CLI
# runs forked from a preloaded forkserver: tests/cli.py). worksteal, not loadfile: a worker that
# runs dry takes tests from another's file instead of idling behind one long file; a file's
# module-scoped fixtures (a private Postfix, the TLS PKI) are then set up once per worker that
# runs its tests (measured on 2 cores: -n 2 loadfile 134 s, -n 3 loadfile 101 s, -n 3 worksteal
# 84 s, -n 4 worksteal 88 s). Bytecode is cached as after an install, even where the environment
# sets PYTHONDONTWRITEBYTECODE: otherwise each test process and each real start of the CLI compiles
# every module again. compileall does it once, before the workers would each do it at once.
test: $(STAMP)
	$(BIN)/ruff check $(SRC)
	$(BIN)/ruff format --check $(SRC)
	$(BIN)/mypy
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m compileall -q probe tests bench fixtures
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -q -n 3 --dist worksteal

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
