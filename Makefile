# pocketfleet — `make run` starts the service, `make test` checks it. Both install first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# pytest-xdist workers: whole test files per worker (module-scoped servers are started once),
# the longest first (tests/support/scheduling.py); tests/support/workers.py gives each worker
# its own instance uids and ports
PYTEST_WORKERS ?= 3

.PHONY: install run test lint typecheck pytest bench clean

install: $(STAMP)
	@./scripts/install-system.sh

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: install
	$(BIN)/pocketfleet serve

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

# Compiled modules are kept (__pycache__, ignored by git) even where the environment says not
# to (PYTHONDONTWRITEBYTECODE): every server, CLI call and instance the tests start imports the
# project, and would compile it again each time; pytest keeps its rewritten test modules too.
pytest: install
	$(BIN)/python -m compileall -q control_plane instance_runtime proxy dashboard
	PYTHONDONTWRITEBYTECODE= $(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadfile

test: lint typecheck pytest

bench: install
	$(BIN)/python bench/proxy.py
	$(BIN)/python bench/wake.py
	$(BIN)/python bench/backup.py
	$(BIN)/python bench/deploy.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache tests/js/node_modules
