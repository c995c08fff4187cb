#!/usr/bin/env bash
# Open the daily job's MLflow store in the browser UI (no Python lives in mlflow/: a package
# named mlflow at the repo root would shadow the library).
#
#   mlflow/ui.sh            mlflow ui on http://127.0.0.1:5000 (Ctrl-C stops it)
#   mlflow/ui.sh server     mlflow server (tracking + registry + artifacts served over HTTP:
#                           a team's shared store; clients set MLFLOW_TRACKING_URI=http://…)
#
# Environment: MLFLOW_TRACKING_URI (default sqlite:///<repo>/mlflow/mlflow.db),
# TARQ_MLFLOW_PORT (5000), TARQ_MLFLOW_HOST (127.0.0.1; 0.0.0.0 for other machines),
# TARQ_MLFLOW_ARTIFACTS (the server's artifact folder or URL; <repo>/mlflow/artifacts).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${TARQ_BIN:-$REPO/.venv/bin}"
URI="${MLFLOW_TRACKING_URI:-sqlite:///$REPO/mlflow/mlflow.db}"
PORT="${TARQ_MLFLOW_PORT:-5000}"
export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true
# MLflow 3.17 starts a job runner with seven task-queue workers by default; the daily job uses
# none of its jobs, and on a small machine they cost more than the UI (set it to true to keep).
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"
# Run from outside the repo so that `import mlflow` can never pick up this folder.
cd /
case "${1:-ui}" in
  ui) exec "$BIN/mlflow" ui --backend-store-uri "$URI" --host 127.0.0.1 --port "$PORT" ;;
  server) exec "$BIN/mlflow" server --backend-store-uri "$URI" \
            --artifacts-destination "${TARQ_MLFLOW_ARTIFACTS:-$REPO/mlflow/artifacts}" \
            --host "${TARQ_MLFLOW_HOST:-127.0.0.1}" --port "$PORT" ;;
  *) sed -n '2,9p' "$0"; exit 2 ;;
esac
