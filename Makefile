# The README's two commands: `make demo` and `make test`. Both set everything up on a fresh
# machine (a .venv with the pinned stack) before they run.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DB ?= data/tarq.duckdb
PRESET ?= small
SEED ?= 7
# The demo logs' last day: empty = yesterday (UTC), so the deployment's `run_date: today`
# finds its test day; END_DATE=2026-10-22 is the window of docs/results.md "The demo run".
END_DATE ?=

export DO_NOT_TRACK := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true
export GX_ANALYTICS_ENABLED := false
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install demo test lint format clean-data daily ab prefect-up prefect-down prefect-status mlflow-ui serve \
	serve-lean ui-check

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]' 2>&1 | { grep -v 'is ignored: it is neither' || true; }
	$(BIN)/python -c "import torch, duckdb, faiss, mlflow, prefect, great_expectations, tarq" 
	touch $(STAMP)

install: $(STAMP)

# Demo logs (if missing) → tarq-daily for the latest run date after a 2-day backfill → where to look.
demo: install
	BIN=$(BIN) DB=$(DB) PRESET=$(PRESET) SEED=$(SEED) END_DATE=$(END_DATE) scripts/demo.sh

# One daily run without a server (RUN_DATE=YYYY-MM-DD|latest|today).
RUN_DATE ?= latest
daily: install
	$(BIN)/python -m flows.tarq_daily --db $(DB) --run-date $(RUN_DATE)

# The simulated online A/B (docs/results.md "Simulated online A/B"): arm A pre-ranked by TT, arm B by
# the TARQ champion, AB_DAYS days of the daily loop in a warehouse of its own under AB_OUT.
AB_DAYS ?= 7
AB_OUT ?= outputs/ab
ab: install
	$(BIN)/tarq ab --out $(AB_OUT) --days $(AB_DAYS)

# Local Prefect server (127.0.0.1:4200, SQLite in .prefect/) + pool + deployments (tarq-daily,
# demo-feed) + worker; then `prefect deployment run tarq-daily/tarq-daily`. prefect-down stops
# them by PID.
prefect-up: install
	scripts/prefect_local.sh up

prefect-down:
	scripts/prefect_local.sh down

prefect-status:
	scripts/prefect_local.sh status

mlflow-ui: install
	mlflow/ui.sh

# The browser check of the UIs after `make demo`: installs Chromium (Debian's package, as root)
# and the `ui` extra (Playwright) when missing, opens the MLflow and Prefect UIs headless on
# the demo's stores, asserts what they show and saves screenshots to docs/img/
# (scripts/ui_check.sh; ARGS go to scripts/ui_check.py, e.g. ARGS='--run-date 2026-10-23').
ARGS ?=
ui-check: install
	BIN=$(BIN) scripts/ui_check.sh $(ARGS)

# Serve the registered scorer over HTTP on loopback (docs/operations.md, "Serving"): POST
# http://127.0.0.1:$(PORT)/invocations. The demo's store unless MLFLOW_TRACKING_URI is set;
# .venv/bin on PATH (MLflow starts uvicorn by name); MLflow may not unpickle; one torch thread
# per worker. WORKERS > 1 adds ~40 ms to every keep-alive request with uvicorn 0.54 on Linux
# (benchmarks/README.md, "HTTP serving").
MODEL ?= models:/tarq@champion
PORT ?= 5001
WORKERS ?= 1
LEAN_PORT ?= 5002
# tarq serve: processes on the one port, and following the alias of MODEL (FOLLOW= turns it off)
LEAN_WORKERS ?= 1
FOLLOW ?= --follow
serve: install
	PATH="$(abspath $(BIN)):$$PATH" \
	MLFLOW_TRACKING_URI="$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow/mlflow.db}" \
	MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false OMP_NUM_THREADS="$${OMP_NUM_THREADS:-1}" \
	$(BIN)/mlflow models serve -m "$(MODEL)" --env-manager local --host 127.0.0.1 \
	  --port $(PORT) --workers $(WORKERS)

# The same registered scorer behind the lean endpoint (tarq.serving.server: POST /score),
# following the champion (each promotion or tarq rollback swapped in without a restart).
serve-lean: install
	MLFLOW_TRACKING_URI="$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow/mlflow.db}" \
	MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false OMP_NUM_THREADS="$${OMP_NUM_THREADS:-1}" \
	$(BIN)/tarq serve --model "$(MODEL)" --host 127.0.0.1 --port $(LEAN_PORT) \
	  --workers $(LEAN_WORKERS) $(FOLLOW)

LINTED := tarq flows tests benchmarks scripts

# Lint first (seconds), then the suite.
test: lint
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: install
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

# Apply the formatter and the safe lint fixes.
format: install
	$(BIN)/ruff format $(LINTED)
	$(BIN)/ruff check --fix $(LINTED)

clean-data:
	rm -rf data/ gx/ outputs/
