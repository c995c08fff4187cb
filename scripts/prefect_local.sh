#!/usr/bin/env bash
# A local Prefect server + process worker for the deployments of prefect.yaml: `tarq-daily`
# (02:30 UTC) and `demo-feed` (02:00 UTC: appends yesterday's demo logs).
#
#   scripts/prefect_local.sh up        server (127.0.0.1, SQLite) → pool → deploy → worker
#   scripts/prefect_local.sh down      stop the worker, then the server (by PID)
#   scripts/prefect_local.sh status    what is running, and the URLs
#   scripts/prefect_local.sh server|pool|deploy|worker   one step at a time
#
# Then:  export PREFECT_API_URL=http://127.0.0.1:${TARQ_PREFECT_PORT:-4200}/api
#        prefect deployment run tarq-daily/tarq-daily [--param params='{...}'] [--watch]
#        prefect deployment run demo-feed/demo-feed [--watch]
# UI:    http://127.0.0.1:${TARQ_PREFECT_PORT:-4200}
#
# Environment: TARQ_PREFECT_PORT (4200), PREFECT_HOME (<repo>/.prefect; the server's SQLite
# database and the PID/log files live there), TARQ_PREFECT_POOL (tarq). Telemetry is off.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${TARQ_BIN:-$REPO/.venv/bin}"
PORT="${TARQ_PREFECT_PORT:-4200}"
POOL="${TARQ_PREFECT_POOL:-tarq}"
export PREFECT_HOME="${PREFECT_HOME:-$REPO/.prefect}"
export PREFECT_API_URL="http://127.0.0.1:${PORT}/api"
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=true
export PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT=false  # no "Upgrade" banner in the local UI
export MLFLOW_DISABLE_TELEMETRY=true GX_ANALYTICS_ENABLED=false
export PREFECT_WORKER_QUERY_SECONDS="${PREFECT_WORKER_QUERY_SECONDS:-2}"
export TARQ_REPO="$REPO"
mkdir -p "$PREFECT_HOME"
SERVER_PID="$PREFECT_HOME/server.pid"
WORKER_PID="$PREFECT_HOME/worker.pid"

alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_healthy() {
  local deadline=$((SECONDS + ${1:-90}))
  until curl -fsS "http://127.0.0.1:${PORT}/api/health" >/dev/null 2>&1; do
    if ! alive "$SERVER_PID"; then
      echo "prefect server exited; see $PREFECT_HOME/server.log" >&2
      tail -n 30 "$PREFECT_HOME/server.log" >&2 || true
      return 1
    fi
    if ((SECONDS > deadline)); then
      echo "prefect server not healthy after ${1:-90}s; see $PREFECT_HOME/server.log" >&2
      return 1
    fi
    sleep 1
  done
}

start_server() {
  if alive "$SERVER_PID"; then
    echo "server already running (pid $(cat "$SERVER_PID")) on port $PORT"
    return 0
  fi
  # Its own session, so that `down` can stop the server and its children by this one PID.
  setsid "$BIN/prefect" server start --host 127.0.0.1 --port "$PORT" \
    >"$PREFECT_HOME/server.log" 2>&1 </dev/null &
  echo $! >"$SERVER_PID"
  wait_healthy 120
  echo "server up: http://127.0.0.1:${PORT} (pid $(cat "$SERVER_PID"), db $PREFECT_HOME)"
}

create_pool() {
  if "$BIN/prefect" work-pool inspect "$POOL" >/dev/null 2>&1; then
    echo "work pool $POOL exists"
  else
    "$BIN/prefect" work-pool create "$POOL" --type process
  fi
}

deploy() {
  (cd "$REPO" && "$BIN/prefect" --no-prompt deploy --all)
}

start_worker() {
  if alive "$WORKER_PID"; then
    echo "worker already running (pid $(cat "$WORKER_PID"))"
    return 0
  fi
  cd "$REPO"
  setsid "$BIN/prefect" worker start --pool "$POOL" --type process \
    >"$PREFECT_HOME/worker.log" 2>&1 </dev/null &
  echo $! >"$WORKER_PID"
  echo "worker started on pool $POOL (pid $(cat "$WORKER_PID"), log $PREFECT_HOME/worker.log)"
}

# SIGTERM to the process group led by the PID we started; a worker ignores the first
# signal (Prefect's graceful shutdown), so send it again, then SIGKILL if still alive.
stop() {
  local name="$1" file="$2" pid
  if ! alive "$file"; then
    rm -f "$file"
    echo "$name not running"
    return 0
  fi
  pid="$(cat "$file")"
  for sig in TERM TERM KILL; do
    kill -s "$sig" -- "-$pid" 2>/dev/null || kill -s "$sig" "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do
      kill -0 "$pid" 2>/dev/null || break 2
      sleep 0.5
    done
  done
  rm -f "$file"
  echo "$name stopped (pid $pid)"
}

case "${1:-}" in
  up) start_server; create_pool; deploy; start_worker
      echo "run it:  PREFECT_API_URL=$PREFECT_API_URL $BIN/prefect deployment run tarq-daily/tarq-daily"
      echo "feed it: PREFECT_API_URL=$PREFECT_API_URL $BIN/prefect deployment run demo-feed/demo-feed" ;;
  server) start_server ;;
  pool) create_pool ;;
  deploy) deploy ;;
  worker) start_worker ;;
  down) stop worker "$WORKER_PID"; stop server "$SERVER_PID" ;;
  status)
    alive "$SERVER_PID" && echo "server pid $(cat "$SERVER_PID"): http://127.0.0.1:${PORT}" \
      || echo "server not running"
    alive "$WORKER_PID" && echo "worker pid $(cat "$WORKER_PID") on pool $POOL" \
      || echo "worker not running" ;;
  *) sed -n '2,16p' "$0"; exit 2 ;;
esac
