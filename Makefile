# Developer entry points. Everything runs from the repo's own virtualenv (.venv).
#   make dev [WORKERS=4]        embedded Postgres/Redis/Kafka (for unset URLs) + migrations + all processes
#   make test [PYTEST_ARGS=...] the test suite (embedded services when the URLs are unset)

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements.stamp
DEV_STATE_DIR ?= .dev
PYTEST_ARGS ?=
CHAOS_ARGS ?=

# Variables given on the command line (make dev WORKERS=4) reach the processes through the environment.
ifdef WORKERS
export WORKERS
endif

.PHONY: venv dev test lint bench chaos migrate clean

venv: $(STAMP)

$(VPY):
	$(PYTHON) -m venv $(VENV)

# Re-install only when requirements.txt is newer than the last successful install.
$(STAMP): requirements.txt | $(VPY)
	$(VPY) -m pip install --disable-pip-version-check -r requirements.txt
	touch $@

dev: venv
	$(VPY) -m scripts.devstack --state-dir $(DEV_STATE_DIR) up

test: venv lint
	$(VPY) -m pytest -q $(PYTEST_ARGS)

# ruff with a small rule set (ruff.toml): unused imports and names, likely bugs.
lint: venv
	$(VPY) -m ruff check .

migrate: venv
	$(VPY) -m scripts.devstack --state-dir $(DEV_STATE_DIR) migrate

# make bench [BENCH_ARGS="--duration 60 --memory 100000 --profile"]: own stack in .dev/bench, results in bench-results/
BENCH_ARGS ?=
bench: venv
	$(VPY) -m bench $(BENCH_ARGS)

# make chaos [CHAOS_ARGS="--short | --scenarios worker-kill,redis-restart | --seed N"]: fault-injection bank test,
# own stack in .dev/chaos; prints the table, exits 1 on any violated invariant (docs/reliability.md)
chaos: venv
	$(VPY) -m scripts.chaos --markdown $(DEV_STATE_DIR)/chaos-results.md $(CHAOS_ARGS)

clean:
	@if [ -x $(VPY) ]; then $(VPY) -m scripts.devstack --state-dir $(DEV_STATE_DIR) down || true; fi
	rm -rf $(DEV_STATE_DIR)
