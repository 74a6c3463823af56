# Two commands matter on a fresh clone (README): `make run` and `make test`.
# Each creates .venv and installs what it needs on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test lint soak bench proto clean system-packages

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,bench,fast,chaos]'
	touch $(STAMP)

## make run: a local cluster on loopback, the cache workloads through the SDK, the stats.
run: $(STAMP)
	$(BIN)/grid demo -n 3

## make test: lint, then the whole default test suite (what CI runs); first installs the
## Debian packages the tests need when missing and root (docs/testing.md).
test: $(STAMP) system-packages lint
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## make soak: the long chaos/soak runs excluded from the default suite.
soak: $(STAMP)
	$(BIN)/pytest -m soak

## make bench: grid against a real Redis on loopback (installs redis-server if it can).
bench: $(STAMP) system-packages
	$(BIN)/grid bench

## make system-packages: the Debian packages of .ci/system-packages.txt that are missing
## (apt-get, as root; one line and on without root). Silent and offline when all are there.
system-packages:
	@bash .ci/system-packages

## make proto: regenerate the committed protobuf modules.
proto: $(STAMP)
	$(BIN)/python -m proto.generate

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
