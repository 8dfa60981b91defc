# Agora: `make run` starts the platform, `make test` installs what the tests need and runs them.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run install test test-deps deepaas-venv lint bench bench-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Third-party browser code (Markdown, sanitiser, highlighting, charts, Swagger UI) comes from
# the npm registry at install time, into src/agora/web/static/vendor/ (not committed).
install: $(STAMP)
	scripts/web-assets.sh

run: install
	$(BIN)/agora up

# Debian packages for the real servers the tests start: installed only when missing.
test-deps:
	@scripts/install-test-deps.sh

test: install test-deps deepaas-venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The real DEEPaaS (deepaas-run) with Agora beside it, to check that modules written for
# DEEPaaS run unchanged under Agora. A virtual environment of its own: DEEPaaS 2.6 pins
# Werkzeug < 3, which the test tools' Flask cannot share.
DEEPAAS_VENV := .venv-deepaas
deepaas-venv: $(DEEPAAS_VENV)/.installed
$(DEEPAAS_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(DEEPAAS_VENV)
	$(DEEPAAS_VENV)/bin/pip install --quiet --upgrade pip
	$(DEEPAAS_VENV)/bin/pip install --quiet 'deepaas==2.6.0' -e '.[examples]'
	touch $@

# Benchmarks compare Agora with the direct path in one run; figures go to docs/benchmarks.md.
# The other files in benchmarks/ are their helpers (an upstream, a load generator).
BENCHMARKS ?= benchmarks/deploy_latency.py benchmarks/gateway_latency.py benchmarks/modelserver_latency.py
bench: install test-deps bench-deps deepaas-venv
	for b in $(BENCHMARKS); do $(BIN)/python $$b || exit 1; done
	$(BIN)/python benchmarks/gateway_latency.py --upstream fastapi

# What the gateway benchmark needs besides Agora: wrk (Debian's package) for maximum
# requests per second, and LiteLLM's proxy in a virtual environment of its own.
LITELLM_VENV := benchmarks/.venv-litellm
bench-deps: $(LITELLM_VENV)/.installed
	@command -v wrk >/dev/null || { \
	  SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO="sudo"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq wrk; }

$(LITELLM_VENV)/.installed: benchmarks/requirements-litellm.txt
	$(PYTHON) -m venv $(LITELLM_VENV)
	printf '*\n' > $(LITELLM_VENV)/.gitignore
	$(LITELLM_VENV)/bin/pip install --quiet --upgrade pip
	$(LITELLM_VENV)/bin/pip install --quiet -r benchmarks/requirements-litellm.txt
	touch $@

lint: install
	$(BIN)/ruff check src tests
	$(BIN)/mypy src/agora

clean:
	rm -rf $(VENV) .agora .pytest_cache
