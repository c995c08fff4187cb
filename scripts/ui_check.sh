#!/usr/bin/env bash
# `make ui-check`: the browser check of the MLflow and Prefect UIs on the demo's stores.
#   1. Chromium: Debian's `chromium` package (+ fonts), installed with apt-get when missing
#      and running as root; otherwise it says what to install (or set TARQ_CHROMIUM);
#   2. the `ui` extra of pyproject.toml (Playwright, exact pin) into $BIN's venv when missing;
#      Playwright drives the system Chromium: no browser download;
#   3. scripts/ui_check.py on mlflow/mlflow.db (+ mlflow/artifacts) and the flow runs in
#      .prefect/ (the server of `make prefect-up` when it runs, else a temporary one), which
#      `make demo` must have made first; screenshots to docs/img/ ($UI_OUT).
# Arguments go to scripts/ui_check.py (e.g. --run-date 2026-10-23, --no-prefect).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
BIN="${BIN:-.venv/bin}"
export DO_NOT_TRACK=true PREFECT_SERVER_ANALYTICS_ENABLED=false MLFLOW_DISABLE_TELEMETRY=true \
  GX_ANALYTICS_ENABLED=false

have_chromium() {
  [[ -n "${TARQ_CHROMIUM:-}" ]] || command -v chromium >/dev/null 2>&1 \
    || command -v chromium-browser >/dev/null 2>&1
}
if ! have_chromium; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "ui-check: installing Chromium (apt-get install chromium)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      chromium fonts-liberation fonts-dejavu-core >/dev/null
  else
    echo "ui-check: Chromium is missing: install Debian's package (sudo apt-get install" \
      "chromium) or set TARQ_CHROMIUM to a Chromium/Chrome executable" >&2
    exit 2
  fi
fi

# The ui extra's requirements that the venv does not satisfy (exact pins: compare versions).
missing="$("$BIN/python" - <<'PY'
import tomllib
from importlib.metadata import PackageNotFoundError, version

for req in tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["ui"]:
    name, _, want = req.partition("==")
    try:
        ok = version(name) == want if want else True
    except PackageNotFoundError:
        ok = False
    if not ok:
        print(req)
PY
)"
if [[ -n "$missing" ]]; then
  echo "ui-check: installing the ui extra: $missing"
  # shellcheck disable=SC2086  # one requirement per word
  "$BIN/pip" install -q $missing
fi

if [[ -z "${MLFLOW_TRACKING_URI:-}" && ! -f mlflow/mlflow.db ]]; then
  echo "ui-check: no MLflow store at mlflow/mlflow.db: run \`make demo\` first (it trains" \
    "the models, logs the runs and keeps the flow runs in .prefect/)" >&2
  exit 2
fi
exec "$BIN/python" scripts/ui_check.py --out "${UI_OUT:-docs/img}" "$@"
