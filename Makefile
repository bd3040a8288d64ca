# The two commands: `make run` brings the whole system up, `make test` checks it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench demo clean-var

# uv installs in a few seconds what pip takes a minute for; it comes from the package index
# itself, and pip does the whole install when uv cannot be had or cannot install.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@if $(BIN)/python -m pip install --disable-pip-version-check --progress-bar on uv \
	    && $(BIN)/uv pip install --python $(BIN)/python -e '.[dev]'; then \
	  echo "installed with uv"; \
	else \
	  echo "uv unavailable: installing with pip"; \
	  $(BIN)/python -m pip install --disable-pip-version-check --progress-bar on -e '.[dev]'; \
	fi
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m deploy.run

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m bench.events

# A synthetic city anchor network, through the API of the system `make run` started.
demo: $(STAMP)
	$(BIN)/seedbed demo load

clean-var:
	rm -rf var
