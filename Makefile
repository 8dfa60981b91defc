# Agora: `make run` starts the platform, `make test` installs what the tests need and runs them.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run install test test-deps lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/agora up

# Debian packages for the real servers the tests start: installed only when missing.
test-deps:
	@scripts/install-test-deps.sh

test: install test-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Benchmarks compare Agora with the direct path in one run; figures go to docs/benchmarks.md.
bench: install test-deps
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

lint: install
	$(BIN)/ruff check src tests
	$(BIN)/mypy src/agora

clean:
	rm -rf $(VENV) .agora .pytest_cache
