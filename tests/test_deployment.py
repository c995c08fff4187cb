"""The real thing: a local Prefect server + process worker, `prefect deploy --all`, and
`prefect deployment run tarq-daily/tarq-daily` on the tiny preset, then
`prefect deployment run demo-feed/demo-feed` appending the next day of its demo logs.

Everything runs on a free 127.0.0.1 port with its own PREFECT_HOME, and is stopped by PID
(``scripts/prefect_local.sh down``) even when the test fails.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from tarq.runtime.telemetry import TELEMETRY_OFF
from tests.test_flow import tiny_params

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "prefect_local.sh"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_deployment_run_on_a_real_server_and_worker(tmp_path: Path) -> None:
    from tarq.release.publish import served_version

    port = _free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        **TELEMETRY_OFF,
        "TARQ_PREFECT_PORT": str(port),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
    }
    env.pop("PREFECT_PROFILE", None)
    store = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    params = tiny_params(tmp_path / "w.duckdb", tmp_path / "work", store)
    prefect = str(REPO / ".venv" / "bin" / "prefect")
    try:
        up = subprocess.run(
            [str(SCRIPT), "up"], env=env, cwd=REPO, capture_output=True, text=True, timeout=300
        )
        assert up.returncode == 0, up.stdout + up.stderr
        run = subprocess.run(
            [
                prefect,
                "deployment",
                "run",
                "tarq-daily/tarq-daily",
                "--params",
                json.dumps({"params": params}),
                "--watch",
                "--watch-timeout",
                "480",
            ],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=540,
        )
        worker_log = tmp_path / "prefect" / "worker.log"
        log = worker_log.read_text() if worker_log.exists() else ""
        assert run.returncode == 0, run.stdout + run.stderr + log[-4000:]
        assert "Completed" in run.stdout
        # The second deployment, by hand, with its defaults: the demo logs were generated
        # ending yesterday, so it completes having appended nothing (appending: test_demo_feed;
        # a day not over yet, `through=today`, is refused).
        feed = subprocess.run(
            [
                prefect,
                "deployment",
                "run",
                "demo-feed/demo-feed",
                "--param",
                f"db={tmp_path / 'w.duckdb'}",
                "--watch",
                "--watch-timeout",
                "240",
            ],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        log = worker_log.read_text() if worker_log.exists() else ""
        assert feed.returncode == 0, feed.stdout + feed.stderr + log[-4000:]
        assert "Completed" in feed.stdout
    finally:
        down = subprocess.run(
            [str(SCRIPT), "down"], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
        )
    assert "server stopped" in down.stdout, down.stdout + down.stderr
    for name in ("server.pid", "worker.pid"):
        assert not (tmp_path / "prefect" / name).exists()

    # The run's results exist: the served ID table and the MLflow run + registered champion.
    assert served_version(tmp_path / "w.duckdb") == 1
    from tarq.store.warehouse import open_db

    with open_db(tmp_path / "w.duckdb", read_only=True) as con:
        fed = con.execute(
            "SELECT report->>'last_day' FROM loads WHERE source_kind = 'demo' "
            "AND report->>'continues' IS NOT NULL"
        ).fetchall()
    # demo-feed ran and appended nothing: the logs already reach yesterday (UTC), the last day
    # that is over (its appending is tests/test_demo_feed.py's).
    assert fed == []
    from mlflow.tracking import MlflowClient

    c = MlflowClient(store, store)
    exp = c.get_experiment_by_name("tarq-daily")
    runs = c.search_runs([exp.experiment_id], "tags.`tarq.kind` = 'daily'")
    assert len(runs) == 1 and runs[0].data.tags["tarq.status"] == "published"
    assert c.get_model_version_by_alias("tarq", "champion").tags["gate.decision"] == "promote"
