# `make run` serves Kennel on embedded SQLite; `make test` runs the whole suite.
# Both install first, from the lock file (uv.lock), when the environment is missing or stale.
PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .uv
UV := $(TOOLS)/bin/uv
UV_STAMP := $(TOOLS)/.uv-$(UV_VERSION)
VENV := .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.runtime
DEV := $(VENV)/.dev
JS := tests/js
JS_STAMP := $(JS)/node_modules/.installed

# uv installs into .venv with this machine's Python, never one it downloads.
export UV_PYTHON := $(PYTHON)
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)
# Installed modules are compiled to bytecode once, as in the container image (Containerfile):
# otherwise, with PYTHONDONTWRITEBYTECODE set, every start compiles them again, which takes
# seconds and, for genai-prices' 1.6 MB price table, ~60 MB of memory for a moment.
export UV_COMPILE_BYTECODE := 1

.PHONY: install bwrap chromium run test check lint upgrade bench bench-floor clean

install: $(DEV) $(JS_STAMP) bwrap chromium

# The Python sandbox runs code under bubblewrap; without it Kennel leaves the tool out.
bwrap:
	@command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && apt-get update -q && apt-get install -y -q bubblewrap; } \
	  || { echo "Kennel's Python sandbox needs bubblewrap: sudo apt-get install bubblewrap" >&2; exit 1; }

# The dashboard's browser tests drive Debian's Chromium through Playwright (never a browser that
# Playwright downloads); installed with apt-get when it is missing and make runs as root.
chromium:
	@test -x /usr/bin/chromium || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && apt-get update -q && apt-get install -y -q chromium; } \
	  || { echo "the dashboard's browser tests need Chromium: sudo apt-get install chromium" >&2; exit 1; }

# uv itself, pinned, in a virtualenv of its own (a current pip first: the system's may be old).
$(UV_STAMP):
	rm -rf $(TOOLS)
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install -q -U pip
	$(TOOLS)/bin/python -m pip install -q uv==$(UV_VERSION)
	touch $(UV_STAMP)

# The runtime only: exactly the locked versions, and nothing of the test tools added.
$(RUNTIME): pyproject.toml uv.lock $(UV_STAMP)
	$(UV) sync --locked --no-dev --inexact
	touch $(RUNTIME)

# The runtime and the tools of the dev group, exactly as locked.
$(DEV): pyproject.toml uv.lock $(UV_STAMP)
	$(UV) sync --locked
	touch $(RUNTIME) $(DEV)

# The Vercel AI SDK, which the tests use to check that streams are accepted by AI SDK clients.
$(JS_STAMP): $(JS)/package.json $(JS)/package-lock.json
	cd $(JS) && npm ci --no-audit --no-fund --silent
	touch $(JS_STAMP)

run: $(RUNTIME)
	$(BIN)/kennel serve

test: $(DEV) $(JS_STAMP) bwrap chromium
	$(BIN)/python -m pytest -q

lint: $(DEV)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

check: lint test

# Newest releases allowed by pyproject.toml into the lock, then the whole check against them.
upgrade: $(UV_STAMP)
	$(UV) lock --upgrade
	$(MAKE) check

bench: $(DEV)
	$(BIN)/python bench/tasks.py

bench-floor: $(DEV)
	$(BIN)/python bench/floor.py

clean:
	rm -rf $(VENV) $(TOOLS) $(JS)/node_modules
