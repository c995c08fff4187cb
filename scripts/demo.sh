#!/usr/bin/env bash
# `make demo`: the whole daily job on the demo logs, with no server left running.
#   1. generate the demo logs (preset $PRESET, default small; the preset's days ending
#      yesterday, UTC, or on $END_DATE) unless the warehouse has logs;
#   2. run tarq-daily for the $BACKFILL run dates before the latest one, then the latest,
#      in order (a backfill, so the champion/challenger gate is exercised day after day);
#   3. print where to look.
# Training budget (2 cores, ~8 min): the first run date trains every model cold, $EPOCHS full
# epoch(s) over the 19-day window ($MAX_STEPS caps the steps per epoch when set); the later
# run dates continue each model warm on their one new day ($WARM_EPOCHS epoch).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
BIN="${BIN:-.venv/bin}"
DB="${DB:-data/tarq.duckdb}"
PRESET="${PRESET:-small}"
SEED="${SEED:-7}"
END_DATE="${END_DATE:-}"   # e.g. 2026-10-22: the fixed window of docs/results.md "The demo run"
BACKFILL="${BACKFILL:-2}"
EPOCHS="${EPOCHS:-1}"
MAX_STEPS="${MAX_STEPS:-}"
WARM_EPOCHS="${WARM_EPOCHS:-1}"
MODELS="${MODELS:-tarq,tt,inttower,mvke,ta}"
export DO_NOT_TRACK=true PREFECT_SERVER_ANALYTICS_ENABLED=false MLFLOW_DISABLE_TELEMETRY=true \
  GX_ANALYTICS_ENABLED=false MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false
# The flow runs against Prefect's temporary local API (no server left behind) in this
# checkout's PREFECT_HOME, so its runs and artifacts stay in one place.
export PREFECT_HOME="${PREFECT_HOME:-$REPO/.prefect}"
unset PREFECT_API_URL

"$BIN/tarq" demo-data --db "$DB" --preset "$PRESET" --seed "$SEED" --if-missing \
  ${END_DATE:+--end-date "$END_DATE"}
start=$SECONDS
set +e
"$BIN/python" -m flows.tarq_daily --db "$DB" --run-date latest --backfill-days "$BACKFILL" \
  --models "$MODELS" --epochs "$EPOCHS" ${MAX_STEPS:+--max-steps "$MAX_STEPS"} \
  --warm-epochs "$WARM_EPOCHS"
rc=$?
set -e
echo
echo "tarq-daily: backfill of $((BACKFILL + 1)) run dates finished in $((SECONDS - start)) s (exit $rc)"
cat <<MSG

Where to look:
  MLflow UI        mlflow/ui.sh   (or: make mlflow-ui) → http://127.0.0.1:5000, experiment tarq-daily
                   (MLflow 3.17 opens it in its GenAI view: click "Model training", or add
                   ?workflowType=machine_learning to the experiment's address)
                   store $REPO/mlflow/mlflow.db, artifacts $REPO/mlflow/artifacts
  served table     view serving_item_ids in $DB  (Parquet exports + manifests: $(dirname "$DB")/published/)
                   $BIN/python -c "from tarq.release.publish import served_version; print(served_version('$DB'))"
  run outputs      outputs/daily/<run date>/ (samples, models, semantic IDs, GX Data Docs)
  Prefect UI       make prefect-up, then http://127.0.0.1:4200 (make prefect-down stops it);
                   there demo-feed appends each new day of demo logs (02:00 UTC) and
                   tarq-daily trains on it (02:30 UTC); either runs by hand, e.g.
                   PREFECT_API_URL=http://127.0.0.1:4200/api $BIN/prefect deployment run demo-feed/demo-feed
MSG
exit $rc
