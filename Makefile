# `make run` serves Kennel on embedded SQLite; `make test` runs the whole suite.
# Both install first when the environment is missing or out of date.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
JS := tests/js
JS_STAMP := $(JS)/node_modules/.installed

.PHONY: install bwrap run test check lint bench bench-floor clean

install: $(STAMP) bwrap

# The Python sandbox runs code under bubblewrap; without it Kennel leaves the tool out.
bwrap:
	@command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && apt-get update -q && apt-get install -y -q bubblewrap; } \
	  || { echo "Kennel's Python sandbox needs bubblewrap: sudo apt-get install bubblewrap" >&2; exit 1; }

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

# The Vercel AI SDK, which the tests use to check that streams are accepted by AI SDK clients.
$(JS_STAMP): $(JS)/package.json $(JS)/package-lock.json
	cd $(JS) && npm ci --no-audit --no-fund --silent
	touch $(JS_STAMP)

run: $(STAMP)
	$(BIN)/kennel serve

test: $(STAMP) $(JS_STAMP) bwrap
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

check: lint test

bench: $(STAMP)
	$(BIN)/python bench/tasks.py

bench-floor: $(STAMP)
	$(BIN)/python bench/floor.py

clean:
	rm -rf $(VENV) $(JS)/node_modules
