"""The daily flow on the tiny demo preset, under ``prefect_test_harness`` (no server).

One warehouse and one MLflow store are shared by the tests of this module, in order:
a first run publishes and promotes; a re-run of the same date is a no-op; a rejected gate
publishes nothing and keeps the champion; a failed validation stops before training.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

TINY_MODEL = {"emb_dim": 8, "d_model": 16, "n_heads": 2, "codebook_size": 4, "n_codebooks": 2,
              "tower_hidden": [32], "ae_hidden": 32, "kmeans_iters": 5}


def tiny_params(db: Path, work: Path, tracking_uri: str, **over: Any) -> dict[str, Any]:
    """DailyParams (as a dict) that train TT and TARQ for a few steps on the tiny preset.

    ``min_gain_over_tt`` = −1 makes the gate's TT check pass regardless of a few steps'
    noise, so the promotion path is deterministic; tests of rejection raise it.
    """
    p = {"run_date": "latest", "db": str(db), "work_dir": str(work), "preset": "tiny",
         "models": ["tarq", "tt"], "epochs": 1, "max_steps_per_epoch": 6, "batch_size": 128,
         "seq_len": 10, "threads": 1, "model_overrides": TINY_MODEL,
         "min_gain_over_tt": -1.0, "tracking_uri": tracking_uri}
    p.update(over)
    return p


@pytest.fixture(scope="module")
def tiny_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tarq.data.demo import generate

    path = tmp_path_factory.mktemp("tinydb") / "tiny.duckdb"
    generate(path, preset="tiny", seed=7)
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, tiny_db: Path) -> dict[str, Any]:
    from prefect.testing.utilities import prefect_test_harness

    from tarq.telemetry import disable_telemetry

    disable_telemetry()
    root = tmp_path_factory.mktemp("flow")
    db = root / "w.duckdb"
    shutil.copy(tiny_db, db)
    store = f"sqlite:///{root / 'mlflow' / 'mlflow.db'}"
    with prefect_test_harness():
        yield {"root": root, "db": db, "store": store, "work": root / "work"}


def _run(env: dict[str, Any], **over: Any):
    from flows.tarq_daily import DailyParams, tarq_daily

    p = DailyParams(**tiny_params(env["db"], env["work"], env["store"], **over))
    return tarq_daily(p, return_state=True)


def _client(store: str):
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(store)
    return MlflowClient(store, store)


def _artifacts(state) -> dict[str, Any]:
    from prefect.artifacts import Artifact

    del state
    return {k: Artifact.get(k) for k in ("validation-summary", "model-comparison",
                                         "semantic-id-health", "publication")}


def test_first_run_registers_promotes_and_publishes(env: dict[str, Any]) -> None:
    from flows.tracking import METRIC_KEYS
    from tarq.publish import served_version

    state = _run(env)
    assert state.is_completed(), state.message
    res = state.result()
    assert res["gate"]["promote"] and res["version"] is not None
    assert res["publication"]["created"] and served_version(env["db"]) == 1
    for stage in ("validate", "samples", "train:tarq", "train:tt", "semantic_ids", "mlflow",
                  "gate", "publish"):
        assert stage in res["timings"]

    c = _client(env["store"])
    mv = c.get_model_version_by_alias("tarq", "champion")
    assert str(mv.version) == str(res["version"])
    assert c.get_model_version_by_alias("tarq", "challenger").version == mv.version
    assert mv.tags["gate.decision"] == "promote" and mv.tags["gate.reason"].startswith("promoted")
    assert mv.tags["tarq.run_date"] == res["run_date"]

    parent = c.get_run(res["parent_run_id"])
    assert parent.data.tags["tarq.status"] == "published"
    assert parent.data.tags["tarq.fingerprint"] and parent.data.tags["tarq.test_day"]
    exp = parent.info.experiment_id
    assert c.get_experiment(exp).artifact_location.startswith(
        (env["root"] / "mlflow" / "artifacts").as_uri())
    kids = c.search_runs([exp], f"tags.`mlflow.parentRunId` = '{res['parent_run_id']}'")
    assert sorted(r.data.tags["tarq.model"] for r in kids) == ["tarq", "tt"]
    for r in kids:  # the same metric keys for every model (TT has no codebook figures)
        assert {"auc", "gauc", "logloss", "train_seconds", "samples_per_s"} <= set(r.data.metrics)
        assert set(r.data.metrics) <= {*METRIC_KEYS, "valid_auc", "valid_gauc", "valid_logloss"}
        assert "model.d_model" in r.data.params and "train.epochs" in r.data.params
    names = {a.path for a in c.list_artifacts(res["parent_run_id"])}
    assert {"comparison.csv", "comparison.md", "plots"} <= names
    plots = {a.path for a in c.list_artifacts(res["parent_run_id"], "plots")}
    assert plots == {"plots/roc.png", "plots/codebook_usage.png"}

    import mlflow
    import pandas as pd

    from flows.tracking import request_example

    model = mlflow.pyfunc.load_model("models:/tarq@champion")
    assert model.metadata.signature is not None
    samples = env["work"] / res["run_date"] / "samples"
    assert json.loads((samples / "meta.json").read_text())["test_day"] == res["test_day"]
    req = request_example(samples)
    out = model.predict(pd.DataFrame([req]))
    assert len(out["scores"][0]) == len(req["candidate_item_ids"])

    arts = _artifacts(state)
    assert all(a is not None for a in arts.values()), arts
    assert "published table version **1**" in arts["publication"].data


def test_rerun_of_the_same_date_is_a_no_op(env: dict[str, Any]) -> None:
    from tarq.publish import list_versions

    c = _client(env["store"])
    before = len(c.search_model_versions("name = 'tarq'"))
    pubs = len(list_versions(env["db"]))
    state = _run(env)
    assert state.is_completed() and "already finished" in state.message
    assert state.result()["status"] == "skipped"
    assert len(c.search_model_versions("name = 'tarq'")) == before
    assert len(list_versions(env["db"])) == pubs


def test_rejected_gate_publishes_nothing_and_keeps_the_champion(env: dict[str, Any]) -> None:
    from tarq.dates import latest_run_date
    from tarq.publish import served_version
    from tarq.warehouse import open_db

    c = _client(env["store"])
    champ = c.get_model_version_by_alias("tarq", "champion").version
    with open_db(env["db"], read_only=True) as con:
        day = latest_run_date(con) - dt.timedelta(days=1)
    # TARQ would have to beat TT by a full AUC point: impossible, so the gate must reject.
    state = _run(env, run_date=str(day), min_gain_over_tt=1.0)
    assert state.is_failed() and state.name == "GateRejected"
    assert "beats_tt" in state.message and "nothing published" in state.message
    assert served_version(env["db"]) == 1
    assert c.get_model_version_by_alias("tarq", "champion").version == champ
    new = c.get_model_version_by_alias("tarq", "challenger")
    assert new.version != champ and new.tags["gate.decision"] == "reject"
    assert "beats_tt" in new.tags["gate.reason"]
    assert "champion and served table unchanged" in _artifacts(state)["publication"].data


def test_failed_validation_stops_before_training(env: dict[str, Any]) -> None:
    from flows.tarq_daily import main
    from tarq.dates import latest_run_date
    from tarq.publish import served_version
    from tarq.warehouse import open_db

    with open_db(env["db"], read_only=True) as con:
        day = latest_run_date(con) + dt.timedelta(days=1)  # its check day holds no logs
    state = _run(env, run_date=str(day))
    assert state.is_failed() and state.name == "ValidationFailed"
    assert "nothing published" in state.message
    assert not (env["work"] / str(day) / "models").exists()
    assert served_version(env["db"]) == 1
    c = _client(env["store"])
    assert not c.search_runs([c.get_experiment_by_name("tarq-daily").experiment_id],
                             f"tags.`tarq.run_date` = '{day}'")
    args = ["--db", str(env["db"]), "--run-date", str(day), "--work-dir", str(env["work"]),
            "--tracking-uri", env["store"], "--models", "tarq,tt"]
    assert main(args) == 1
