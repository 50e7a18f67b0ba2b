# Every target documents itself: `make help`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.DEFAULT_GOAL := help
.PHONY: help install run test test-fast bench bench-rounds bench-realtime bench-scale profile lint format clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP) ## Create .venv and install the SDK, the server and the test tools

# For local development only: the documentation's placeholder key is accepted, so its
# examples run as written. Set AIRIA_BOOTSTRAP_API_KEY yourself (or to nothing) to change it.
AIRIA_BOOTSTRAP_API_KEY ?= your_api_key

run: $(STAMP) ## Serve on http://127.0.0.1:8000 with SQLite under ./var/ (dev key: your_api_key)
	@if [ -n "$(AIRIA_BOOTSTRAP_API_KEY)" ]; then echo "make run: development server; the API key '$(AIRIA_BOOTSTRAP_API_KEY)' is accepted (AIRIA_BOOTSTRAP_API_KEY)"; else echo "make run: development server; no bootstrap key (create one with .venv/bin/airia-server keys create)"; fi
	AIRIA_BOOTSTRAP_API_KEY="$(AIRIA_BOOTSTRAP_API_KEY)" $(BIN)/airia-server serve

test: $(STAMP) ## Run the whole test suite
	$(BIN)/python -m pytest

test-fast: $(STAMP) ## Run the tests that need no server process
	$(BIN)/python -m pytest -m "not e2e"

# The oldest Python the README promises. Its own environment, beside .venv.
PYTHON_OLDEST ?= python3.10
OLDEST_VENV := .venv-oldest

.PHONY: test-oldest
test-oldest: ## The whole test suite again, on Python 3.10 (PYTHON_OLDEST) in .venv-oldest
	test -x $(OLDEST_VENV)/bin/python || $(PYTHON_OLDEST) -m venv $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/python -m pip install --quiet -e ".[test]"
	$(OLDEST_VENV)/bin/python -m pytest -p no:cacheprovider

# The newest Python the suite is run on (.ci/run passes 3.13, or 3.12 where that is the
# newest here). Its own environment, made again when PYTHON_NEWEST is another version.
PYTHON_NEWEST ?= python3.13
NEWEST_VENV := .venv-newest

.PHONY: test-newest
test-newest: ## The whole test suite again, on Python 3.13 (PYTHON_NEWEST) in .venv-newest
	test -x $(NEWEST_VENV)/bin/python \
		&& [ "$$($(NEWEST_VENV)/bin/python -V)" = "$$($(PYTHON_NEWEST) -V)" ] \
		|| $(PYTHON_NEWEST) -m venv --clear $(NEWEST_VENV)
	$(NEWEST_VENV)/bin/python -m pip install --quiet -e ".[test]"
	$(NEWEST_VENV)/bin/python -m pytest -p no:cacheprovider

bench: $(STAMP) ## Load-test the server against a plain Starlette hello (needs wrk)
	$(BIN)/python bench/run.py

bench-rounds: $(STAMP) ## make bench three times; each row judged by its median over the runs
	$(BIN)/python bench/rounds.py

bench-realtime: $(STAMP) ## WebSocket delivery latency (1, 100, 1,000 sockets) and idle-socket memory
	$(BIN)/python bench/realtime.py

bench-scale: $(STAMP) ## Cost against data size (builds large SQLite files under bench/results/data/)
	$(BIN)/python bench/scale.py

ROW ?= append
profile: $(STAMP) ## Where the server's CPU goes under one bench row (ROW=append; perf, py-spy)
	$(BIN)/python bench/cpu_profile.py $(ROW)

lint: $(STAMP) ## Check style and common bugs with ruff
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

format: $(STAMP) ## Format the code with ruff
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

clean: ## Remove the virtualenv, caches and local data
	rm -rf $(VENV) $(OLDEST_VENV) $(NEWEST_VENV) var .pytest_cache .ruff_cache

.PHONY: fuzz
fuzz: $(STAMP) ## Fuzz every API operation long (AIRIA_FUZZ_EXAMPLES, default 1000 per operation)
	AIRIA_FUZZ_EXAMPLES=$${AIRIA_FUZZ_EXAMPLES:-1000} $(BIN)/python -m pytest tests/e2e/test_fuzz.py -s -p no:cacheprovider

.PHONY: docs
docs: $(STAMP) ## Build the documentation site into site/ (warnings are errors)
	@test -x $(BIN)/mkdocs || $(BIN)/python -m pip install --quiet -e ".[docs]"
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict
