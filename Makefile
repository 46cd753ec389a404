# Every target does its own set-up on a fresh machine: a .venv in the checkout and the npm
# packages the interop tests use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 3000

.PHONY: install run test check format lint typecheck conformance clean fuzz leaks soak

install: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

node_modules/.installed: package.json
	npm install --no-audit --no-fund --loglevel=error
	touch $@

run: install
	$(BIN)/hub serve --demo

test: install
	$(BIN)/pytest

format: install
	$(BIN)/ruff format hub tests bench

lint: install
	$(BIN)/ruff format --check hub tests bench
	$(BIN)/ruff check hub tests bench

typecheck: install
	$(BIN)/mypy

check: lint typecheck test

conformance: install
	PORT=$(PORT) $(BIN)/python -m hub.conformance

clean:
	rm -rf $(VENV) node_modules

# The long fuzzing run (RELIABILITY.md, "Fuzzing"): over a million inputs across every decoder
# (python -m fuzz, from tests/), then the fuzz tests under the long hypothesis profile.
# FUZZ_SCALE multiplies the inputs; FUZZ_SEED draws others.
FUZZ_SCALE ?= 1
FUZZ_SEED ?= hub
fuzz: install
	cd tests && nice -n 10 ../$(BIN)/python -m fuzz --scale $(FUZZ_SCALE) --seed $(FUZZ_SEED)
	HUB_FUZZ_PROFILE=long nice -n 10 $(BIN)/pytest -q --hypothesis-show-statistics tests/test_fuzz_*.py

# The long leak run (RELIABILITY.md, "Leaks"): connect / disconnect cycles on both transports,
# what the server still holds afterwards (one JSON line per transport). LEAK_CYCLES per transport.
LEAK_CYCLES ?= 20000
leaks: install
	nice -n 10 $(BIN)/python tests/support/cycles.py --cycles $(LEAK_CYCLES)

# The soak run (RELIABILITY.md, "Soak"): two hub nodes on a real Redis, SOAK_CLIENTS stock
# socket.io-client tabs with churn for SOAK_MINUTES, emits through both nodes' endpoint, Redis
# killed and started again in the middle. Writes bench/results/soak.json and soak.png.
# SOAK_ARGS takes more options (python -m soak --help), e.g. SOAK_ARGS="--logs /tmp/soak".
SOAK_CLIENTS ?= 2000
SOAK_MINUTES ?= 5
SOAK_ARGS ?=
soak: install
	cd tests && nice -n 10 ../$(BIN)/python -m soak --clients $(SOAK_CLIENTS) --minutes $(SOAK_MINUTES) $(SOAK_ARGS)
