"""The browser check of the UIs (``scripts/ui_check.py``, ``make ui-check``) on a small store
made here: an MLflow store laid out as the daily job lays it (:mod:`flows.tracking`: the
experiment with its kind tag, two day runs with a child per model, the comparison and ROC
figure, a registered model with ``champion`` and ``challenger``) and a Prefect server holding a
``tarq-daily`` flow run with the job's artifacts (:mod:`flows.artifacts`).

The browser tests skip, saying why, when Chromium or Playwright is absent (``make ui-check``
installs both); the format helpers are checked everywhere.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.scripts import load_script

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "ui_check.py"
WAREHOUSE = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
DAYS = ("2026-10-08", "2026-10-09")
MODELS = {"tarq": (0.7403, 75.4), "tt": (0.7273, 41.0)}  # auc, train seconds


ui = load_script("scripts/ui_check.py", "ui_check")


def test_formats_match_the_mlflow_ui() -> None:
    # Utils.formatMetric / formatDuration of MLflow's JS, which the check matches text with.
    assert [ui.mlflow_metric(v) for v in (0.7403, 0.7569, 0.75, 0, 12.345, 123.45, 1e-4)] == [
        "0.74",
        "0.757",
        "0.75",
        "0",
        "12.35",
        "123.5",
        "1.000e-4",
    ]
    assert [ui.mlflow_duration(ms) for ms in (43, 1700, 75_400, 4_000_000)] == [
        "43ms",
        "1.7s",
        "1.3min",
        "1.1h",
    ]


@pytest.fixture(scope="module")
def chromium() -> str:
    pytest.importorskip(
        "playwright.sync_api", reason="Playwright is not installed (`make ui-check` installs it)"
    )
    try:
        return ui.find_chromium()
    except ui.Missing as exc:
        pytest.skip(str(exc))


def _history(start_ms: int, seconds: float) -> list[Any]:
    """The training loss every 20 steps and one epoch's figures, as training logs them."""
    from mlflow.entities import Metric

    steps = [
        Metric(key, base - 0.01 * i, start_ms + 1000 * i, 20 * i)
        for key, base in (("train_loss", 0.89), ("train_ctr_loss", 0.69))
        for i in range(1, 9)
    ]
    epochs = [
        Metric(k, v, start_ms + int(1000 * seconds), 1)
        for k, v in (("epoch_loss", 0.61), ("epoch_valid_auc", 0.71))
    ]
    return steps + epochs


def make_store(root: Path) -> dict[str, Any]:
    """Two run dates of the daily job's layout, the second one's TARQ champion-less
    (``challenger``), the first one's ``champion``."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from mlflow.entities import Metric, Param

    from flows import tracking

    uri = f"sqlite:///{root / 'mlflow' / 'mlflow.db'}"
    exp = tracking.setup(uri)
    tracking.bind(exp, WAREHOUSE)
    c = tracking.client()
    children: dict[str, dict[str, str]] = {}
    versions = []
    for n, day in enumerate(DAYS):
        parent = tracking.start_day(
            exp, day, {"test_day": day}, "f" * 16, {"models": list(MODELS)}, WAREHOUSE
        )
        kids, preds = {}, {}
        for model, (auc, seconds) in MODELS.items():
            run_id = tracking.open_model_run(parent, model, day, root / "no-samples")
            start = c.get_run(run_id).info.start_time
            figures = {"auc": auc + 0.01 * n, "gauc": auc - 0.03, "logloss": 0.18 + auc / 100}
            c.log_batch(
                run_id,
                metrics=[
                    *(Metric(k, v, start, 0) for k, v in figures.items()),
                    Metric("train_seconds", seconds, start, 0),
                    *_history(start, seconds),
                ],
                params=[Param("model_name", model)],
            )
            c.set_terminated(run_id, end_time=start + int(1000 * seconds) + 300)
            kids[model] = run_id
            p = root / f"{day}-{model}.parquet"
            labels = [0, 1] * 50
            scores = [(i % 10) / 10 + 0.3 * y for i, y in enumerate(labels)]
            pq.write_table(pa.table({"label": labels, "score": scores}), p)
            preds[model] = p
        rows = [
            {"model": m, "role": "model", "auc": auc + 0.01 * n, "train_seconds": s}
            for m, (auc, s) in MODELS.items()
        ]
        tracking.log_comparison(parent, rows, preds, None, None)
        tracking.finish_day(parent, "published")
        children[day] = kids
        versions.append(
            tracking.register(
                str(root / "model"), kids["tarq"], day, {tracking.WAREHOUSE_TAG: WAREHOUSE}
            )
        )
    tracking.promote(versions[0].version)
    return {"uri": uri, "children": children, "versions": [v.version for v in versions]}


def _run_fake_daily(api: str, rows: list[dict[str, Any]]) -> str:
    """A flow run named tarq-daily leaving the job's five artifacts; returns its id."""
    from prefect import flow
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows import artifacts

    day = DAYS[-1]

    @flow(name="tarq-daily", persist_result=False)
    def daily(params: dict[str, Any]) -> None:
        artifacts.validation(day, {"success": True, "checks": [{"name": "volume"}]})
        lineage = SimpleNamespace(
            mode="warm",
            warm=True,
            parent_source="champion",
            parent_run_date=DAYS[0],
            parent_version="1",
            train_start=DAYS[0],
            train_end=DAYS[0],
            reason="warm: one new day",
        )
        trained = {
            m: SimpleNamespace(
                name=m,
                lineage=lineage,
                result=SimpleNamespace(rows_trained=1000, train_seconds=s),
            )
            for m, (_, s) in MODELS.items()
        }
        artifacts.lineage(day, trained)
        artifacts.semantic_ids(day, {"ok": True, "checks": [], "coverage": 1.0})
        artifacts.comparison(rows, "2026-10-08", "f" * 16, "http://127.0.0.1:5000/")
        artifacts.skipped(day, "a test run")

    with temporary_settings({PREFECT_API_URL: api}):
        state = daily({"run_date": day}, return_state=True)
    assert state.is_completed(), state.message
    return str(state.state_details.flow_run_id)


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


@pytest.mark.slow
def test_ui_check_sees_runs_comparison_aliases_and_artifacts(chromium: str, tmp_path: Path) -> None:
    from tarq.runtime.telemetry import TELEMETRY_OFF

    store = make_store(tmp_path)
    rows = [
        {"model": m, "role": "model", "auc": auc + 0.01, "train_seconds": s}
        for m, (auc, s) in MODELS.items()
    ]
    home = tmp_path / "prefect"
    home.mkdir()
    port = ui.free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, **TELEMETRY_OFF, "PREFECT_HOME": str(home), "PREFECT_API_URL": api}
    env.pop("PYTHONPATH", None)
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--no-services"]
    out, shots = tmp_path / "img", tmp_path / "shots"
    report = tmp_path / "report.json"
    with ui.server("prefect server", cmd, f"{api}/health", env, 180, tmp_path / "prefect.log"):
        flow_run_id = _run_fake_daily(api, rows)
        args = ["--store", store["uri"], "--prefect-api", api, "--out", str(out)]
        args += ["--shots", str(shots), "--report", str(report), "--chromium", chromium]
        check = subprocess.run(
            [sys.executable, str(SCRIPT), *args, "--timeout", "90"],
            capture_output=True,
            text=True,
            timeout=600,
            env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
        )
    assert check.returncode == 0, check.stdout[-6000:] + check.stderr[-3000:]
    seen = json.loads(report.read_text())
    pages = {p["name"]: p for p in seen["pages"]}
    assert list(pages) == [
        "mlflow-experiment-opens",
        "mlflow-runs",
        "mlflow-day-run",
        "mlflow-roc",
        "mlflow-compare",
        "mlflow-compare-metrics",
        "mlflow-learning-curves",
        "mlflow-registry",
        "prefect-flow-run",
        "prefect-comparison",
    ]
    for name, page in pages.items():
        assert page["ok"], page
        assert _png_size(shots / f"{name}.png") == (1400, 900)
    # The README's pictures, and only those, go to --out.
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.png" for n in ui.DOC_PAGES)
    # The newest day: its runs lasting their training, every model's auc, the comparison
    # figure, the learning curves, the aliases, the flow run's artifacts.
    assert seen["mlflow"]["run_date"] == DAYS[-1]
    runs = pages["mlflow-runs"]["seen"]
    assert runs["durations"] == {"tarq": "1.3min", "tt": "41.3s"}
    for model, (auc, _) in MODELS.items():
        assert repr(auc + 0.01) in runs["rows"][model].split("\t")
    assert set(pages["mlflow-day-run"]["seen"]["metrics"]) == {"tarq_auc", "tt_auc"}
    compare = pages["mlflow-compare"]["seen"]
    assert compare["figure_axes"] == ["model_name", "auc", "gauc", "logloss"]
    assert compare["model_axis"] == ["tarq", "tt"]
    assert compare["auc_axis_ends"] == ["0.73730", "0.75030"]
    assert pages["mlflow-compare-metrics"]["seen"]["auc_row"] == {
        f"tarq-{DAYS[-1]}": "0.75",
        f"tt-{DAYS[-1]}": "0.737",
    }
    curves = pages["mlflow-learning-curves"]["seen"]
    assert curves["date"] == DAYS[-1] and curves["curve_points"] == {"tarq": 8, "tt": 8}
    assert "(step=160)" in curves["latest"]["tarq"]
    v1, v2 = store["versions"]
    assert f"Version {v1}" in pages["mlflow-registry"]["seen"]["champion"]
    assert f"Version {v2}" in pages["mlflow-registry"]["seen"]["challenger"]
    assert seen["prefect"]["flow_run_id"] == flow_run_id
    assert seen["prefect"]["run_date"] == DAYS[-1]
    assert pages["prefect-flow-run"]["seen"]["artifacts"] == sorted(ui.PREFECT_ARTIFACTS)
    assert set(pages["prefect-comparison"]["seen"]["rows"]) == set(MODELS)
    assert "127.0.0.1" not in seen["blocked_hosts"]


def test_ui_check_says_what_is_missing(tmp_path: Path) -> None:
    """No store: exit 2 and the command to run (no browser needed)."""
    if shutil.which("chromium") is None and not os.environ.get("TARQ_CHROMIUM"):
        chromium = ["--chromium", sys.executable]  # any executable: it fails before launching
    else:
        chromium = []
    store = f"sqlite:///{tmp_path / 'none.db'}"
    res = subprocess.run(
        [sys.executable, str(SCRIPT), "--store", store, "--out", str(tmp_path / "img"), *chromium],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2, res.stdout + res.stderr
    assert "make demo" in res.stderr
    assert not (tmp_path / "img").exists()
