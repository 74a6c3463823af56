# Two commands matter on a fresh clone (README): `make run` and `make test`.
# Each creates .venv and installs what it needs on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test lint soak bench proto clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

## make run: a local cluster on loopback, the cache workloads through the SDK, the stats.
run: $(STAMP)
	$(BIN)/grid demo -n 3

## make test: lint, then the whole default test suite (what CI runs).
test: $(STAMP) lint
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## make soak: the long chaos/soak runs excluded from the default suite.
soak: $(STAMP)
	$(BIN)/pytest -m soak

## make bench: grid against a real Redis on loopback (installs redis-server if it can).
bench: $(STAMP)
	@command -v redis-server >/dev/null || (apt-get update -qq && apt-get install -y -qq redis-server) \
		|| echo "redis-server not available: the Redis columns will be skipped"
	$(BIN)/grid bench

## make proto: regenerate the committed protobuf modules.
proto: $(STAMP)
	$(BIN)/python -m proto.generate

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
