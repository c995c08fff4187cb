"""A team's shared tracking server: ``mlflow server`` on loopback (SQLite backend, artifacts
served over HTTP). The daily job runs against ``http://…`` for two dates from two work
folders, as two machines would: the second date warm-starts TARQ from the champion it
downloads through the server; then serving loads ``models:/tarq@champion`` through it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tarq.runtime.telemetry import TELEMETRY_OFF
from tests.test_flow import BASE_DAY, NEXT_DAY, tiny_params

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """``mlflow server`` with its own SQLite store and served artifacts; yields its URL."""
    root = tmp_path / "server"
    root.mkdir()
    port = _free_port()
    env = {**os.environ, **TELEMETRY_OFF, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = open(root / "server.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd="/",  # never import the repo's mlflow/ folder as the library
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        "mlflow server did not start: " + (root / "server.log").read_text()[-3000:]
                    ) from None
                time.sleep(0.5)
        yield {"url": url, "artifacts": root / "artifacts"}
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_two_machines_and_serving_share_one_tracking_server(
    server: dict[str, Any], prefect_api: str, tiny_db: Path, tmp_path: Path
) -> None:
    from flows import tracking
    from flows.tarq_daily import DailyParams, tarq_daily
    from tarq.serving.server import load_scorer

    db = tmp_path / "w.duckdb"
    shutil.copy(tiny_db, db)
    url = server["url"]

    def day(run_date: str, machine: str, **over: Any) -> dict[str, Any]:
        p = DailyParams(**tiny_params(db, tmp_path / machine, url, run_date=run_date, **over))
        state = tarq_daily(p, return_state=True)
        assert state.is_completed(), state.message
        return json.loads((tmp_path / machine / run_date / "summary.json").read_text())

    first = day(BASE_DAY, "machine-a")
    assert first["gate"]["promote"] and first["publication"]["created"]
    c = tracking.client()
    assert tracking.use_store(url) == url
    exp = c.get_experiment_by_name("tarq-daily")
    # The experiment's artifacts go through the server, not to a folder of the job's machine.
    assert exp.artifact_location.startswith("mlflow-artifacts:")
    assert any(server["artifacts"].rglob("model.pt"))
    champ = c.get_model_version_by_alias("tarq", "champion")

    # Another machine (another work folder): its parent is found and downloaded via the server.
    second = day(NEXT_DAY, "machine-b", champion_tolerance=1.0)
    lin = second["lineage"]["tarq"]
    assert lin["mode"] == "warm" and lin["parent_version"] == str(champ.version)
    metrics = json.loads(
        (tmp_path / "machine-b" / NEXT_DAY / "models" / "tarq" / "metrics.json").read_text()
    )
    parent_dir = Path(metrics["warm_start"]["parent_dir"])
    assert tmp_path / "machine-b" in parent_dir.parents  # downloaded, not machine A's folder
    rows = [r for r in second["comparison"] if r["role"] == "champion"]
    assert len(rows) == 1  # the champion re-scored on today's test day, also downloaded
    new = c.get_model_version_by_alias("tarq", "champion")
    assert new.version == second["version"] != champ.version

    # Serving loads the champion through the server: the weights machine B promoted.
    import torch

    from tarq.model.io import load_weights

    scorer = load_scorer("models:/tarq@champion")
    want = load_weights(tmp_path / "machine-b" / NEXT_DAY / "models" / "tarq" / "model.pt")
    got = scorer.model.state_dict()
    assert scorer.n_items > 0 and all(torch.equal(got[k], v) for k, v in want.items())

    # Retention through the server (keep one run date): the first date's TT model is no longer
    # a parent and goes, deleted over HTTP; its TARQ stays (a kept publication), as does the
    # champion's.
    from flows import retention

    plan, result = retention.collect(db, tmp_path / "machine-b", keep_days=1)
    gone = {(i.kind, i.run_date, i.what.split()[1]) for i in plan.delete}
    assert gone == {("run-artifacts", BASE_DAY, "tt")}, plan.text()
    assert plan.protected[f"{BASE_DAY}/tarq"].startswith("model of publication v1")
    assert result["bytes_freed"] == plan.nbytes > 0
    assert c.list_artifacts(plan.delete[0].ref, "model_dir") == []
    assert c.get_run(plan.delete[0].ref).data.tags[retention.GC_TAG]
    assert c.list_artifacts(champ.run_id, "model_dir") and c.list_artifacts(new.run_id, "model_dir")
