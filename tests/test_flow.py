"""The daily flow on the tiny demo preset, under ``prefect_test_harness`` (no server).

The tiny logs span 2026-10-01 .. 2026-10-08; run date D validates and tests on D − 1.
A module-scoped *baseline* runs the first run date once (:data:`BASE_DAY`: cold, published,
promoted). Every test gets its own copy of the baseline's warehouse, MLflow store and work
dir (:func:`copy_flow_env`; the MLflow artifacts stay shared: the experiment's artifact
location is absolute and run ids are unique), so the tests run in any order and alone.
The backfill and the forced rerun start from their own fresh warehouse instead.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

TINY_MODEL = {
    "emb_dim": 8,
    "d_model": 16,
    "n_heads": 2,
    "codebook_size": 4,
    "n_codebooks": 2,
    "tower_hidden": [32],
    "ae_hidden": 32,
    "kmeans_iters": 5,
}
BASE_DAY = "2026-10-08"  # the baseline's run date: test day 2026-10-07, trained cold
NEXT_DAY = "2026-10-09"  # 'latest': test day 2026-10-08, the last logged day; warm
NO_LOGS_DAY = "2026-10-10"  # its check day 2026-10-09 holds no logs


def tiny_params(db: Path, work: Path, tracking_uri: str, **over: Any) -> dict[str, Any]:
    """DailyParams (as a dict) that train TT and TARQ for a few steps on the tiny preset.

    ``min_gain_over_tt`` = −1 makes the gate's TT check pass regardless of a few steps'
    noise, so the promotion path is deterministic; tests of rejection raise it. The tiny
    model has 4 × 4 = 16 ID tuples for the whole catalog, so the collision check
    (``max_collision_rate``) cannot pass, and a few steps move IDs more than ``max_churn``
    allows: both are off (None) here; a test about them sets them.
    """
    p = {
        "run_date": "latest",
        "db": str(db),
        "work_dir": str(work),
        "preset": "tiny",
        "models": ["tarq", "tt"],
        "epochs": 1,
        "max_steps_per_epoch": 6,
        "batch_size": 128,
        "seq_len": 10,
        "threads": 1,
        "model_overrides": TINY_MODEL,
        "min_gain_over_tt": -1.0,
        "tracking_uri": tracking_uri,
        "max_collision_rate": None,
        "max_churn": None,
    }
    p.update(over)
    return p


def copy_flow_env(base: dict[str, Any], root: Path) -> dict[str, Any]:
    """A private copy of a flow environment (``root``/w.duckdb, published/, work/,
    mlflow/mlflow.db) under ``root``; the MLflow artifact store stays ``base``'s."""
    root.mkdir(parents=True, exist_ok=True)
    db = root / base["db"].name
    shutil.copy2(base["db"], db)
    wal = base["db"].with_name(base["db"].name + ".wal")
    if wal.exists():
        shutil.copy2(wal, db.with_name(db.name + ".wal"))
    for sub in ("published", "work"):
        if (base["root"] / sub).exists():
            shutil.copytree(base["root"] / sub, root / sub)
    src = base["store"].removeprefix("sqlite:///")
    (root / "mlflow").mkdir()
    dst = root / "mlflow" / "mlflow.db"
    a, b = sqlite3.connect(src), sqlite3.connect(dst)
    try:
        a.backup(b)  # a consistent copy, whatever the journal mode
    finally:
        a.close()
        b.close()
    return {**base, "root": root, "db": db, "store": f"sqlite:///{dst}", "work": root / "work"}


def _run(env: dict[str, Any], **over: Any):
    from flows.tarq_daily import DailyParams, tarq_daily

    p = DailyParams(**tiny_params(env["db"], env["work"], env["store"], **over))
    return tarq_daily(p, return_state=True)


def daily_cli_args(params: dict[str, Any], run_date: str) -> list[str]:
    """``python -m flows.tarq_daily`` arguments for a full params dict: the warehouse, work
    folder and store as flags, the rest as ``--params`` JSON."""
    rest = {
        k: v
        for k, v in params.items()
        if k not in ("db", "run_date", "work_dir", "tracking_uri", "force")
    }
    return [
        "--db",
        str(params["db"]),
        "--run-date",
        run_date,
        "--work-dir",
        str(params["work_dir"]),
        "--tracking-uri",
        str(params["tracking_uri"]),
        "--params",
        json.dumps(rest),
    ]


def _cli_args(env: dict[str, Any], run_date: str, **over: Any) -> list[str]:
    """``python -m flows.tarq_daily`` arguments for ``env`` (the rest of tiny_params as JSON)."""
    return daily_cli_args(tiny_params(env["db"], env["work"], env["store"], **over), run_date)


def _client(store: str):
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(store)
    mlflow.set_registry_uri(store)
    return MlflowClient(store, store)


def _fresh_env(tiny_db: Path, tmp_path: Path) -> dict[str, Any]:
    """A warehouse copied from the tiny logs with its own work dir and MLflow store."""
    root = tmp_path / "env"
    root.mkdir()
    shutil.copy(tiny_db, root / "w.duckdb")
    return {
        "root": root,
        "db": root / "w.duckdb",
        "work": root / "work",
        "store": f"sqlite:///{root / 'mlflow' / 'mlflow.db'}",
    }


def _summary(env: dict[str, Any], day: str) -> dict[str, Any]:
    return json.loads((env["work"] / day / "summary.json").read_text(encoding="utf-8"))


def _day_runs(c: Any, day: str) -> list[Any]:
    exp = c.get_experiment_by_name("tarq-daily").experiment_id
    return c.search_runs(
        [exp],
        f"tags.`tarq.kind` = 'daily' AND tags.`tarq.run_date` = '{day}'",
        order_by=["attributes.start_time ASC"],
    )


def _artifacts(flow_run_id: Any) -> dict[str, Any]:
    """The artifacts of ONE flow run (newest per key), whatever ran before or after it."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )
    from prefect.client.schemas.sorting import ArtifactSort

    out: dict[str, Any] = {}
    with get_client(sync_client=True) as client:
        for key in ("validation-summary", "model-comparison", "semantic-id-health", "publication"):
            found = client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    key=ArtifactFilterKey(any_=[key]),
                    flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
                ),
                sort=ArtifactSort.CREATED_DESC,
                limit=1,
            )
            out[key] = found[0] if found else None
    return out


@pytest.fixture(scope="module")
def harness(prefect_api: str) -> str:
    """The session's Prefect test harness (tests/conftest.py)."""
    return prefect_api


@pytest.fixture(scope="module")
def baseline(
    harness: Any, tmp_path_factory: pytest.TempPathFactory, tiny_db: Path
) -> dict[str, Any]:
    """The first run date, run once: published (table version 1) and promoted. Read only:
    tests take a copy (:func:`env`)."""
    root = tmp_path_factory.mktemp("flow_baseline")
    db = root / "w.duckdb"
    shutil.copy(tiny_db, db)
    env = {
        "root": root,
        "db": db,
        "store": f"sqlite:///{root / 'mlflow' / 'mlflow.db'}",
        "work": root / "work",
        "artifacts": root / "mlflow" / "artifacts",
        "api_url": harness,
    }
    state = _run(env, run_date=BASE_DAY)
    assert state.is_completed(), state.message
    env["result"] = state.result()
    env["flow_run_id"] = state.state_details.flow_run_id
    return env


@pytest.fixture
def env(baseline: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """This test's own copy of the baseline (warehouse, MLflow store, work dir)."""
    return copy_flow_env(baseline, tmp_path / "env")


# ----------------------------------------------------------------------------- first run


def test_first_run_registers_promotes_and_publishes(
    baseline: dict[str, Any], env: dict[str, Any]
) -> None:
    from flows.tracking import METRIC_KEYS
    from tarq.release.publish import served_version

    res = baseline["result"]
    assert res["run_date"] == BASE_DAY and res["test_day"] == "2026-10-07"
    assert res["gate"]["promote"] and res["version"] is not None
    assert res["publication"]["created"] and served_version(env["db"]) == 1
    for stage in (
        "validate",
        "samples",
        "train:tarq",
        "train:tt",
        "champion",
        "semantic_ids",
        "replay",
        "mlflow",
        "gate",
        "publish",
    ):
        assert stage in res["timings"], stage
    # Every stage (and the logs step) has its own peak resident set, at least the process's
    # interpreter + torch (> 100 MB).
    assert set(res["peak_rss_mb"]) == set(res["timings"])
    assert all(v > 100 for v in res["peak_rss_mb"].values()), res["peak_rss_mb"]
    # The first run of every model is cold (nothing to continue), and says so.
    for name in ("tarq", "tt"):
        lin = res["lineage"][name]
        assert lin["mode"] == "cold" and lin["reason"].startswith("cold: no earlier model")
        assert lin["train_end"] == "2026-10-06" and lin["parent_version"] is None
        on_disk = json.loads(
            (env["work"] / BASE_DAY / "models" / name / "lineage.json").read_text()
        )
        assert on_disk == lin
    assert _summary(env, BASE_DAY) == json.loads(json.dumps(res, default=str))
    assert not any(r["role"].startswith("champion") for r in res["comparison"])  # none yet

    c = _client(env["store"])
    mv = c.get_model_version_by_alias("tarq", "champion")
    assert str(mv.version) == str(res["version"])
    assert c.get_model_version_by_alias("tarq", "challenger").version == mv.version
    assert mv.tags["gate.decision"] == "promote" and mv.tags["gate.reason"].startswith("promoted")
    assert mv.tags["tarq.run_date"] == res["run_date"] == BASE_DAY
    assert mv.tags["lineage.mode"] == "cold" and "gate.tarq_minus_tt" in mv.tags

    parent = c.get_run(res["parent_run_id"])
    assert parent.data.tags["tarq.status"] == "published"
    assert parent.data.tags["tarq.fingerprint"] and parent.data.tags["tarq.test_day"]
    exp = parent.info.experiment_id
    assert c.get_experiment(exp).artifact_location.startswith(baseline["artifacts"].as_uri())
    kids = c.search_runs([exp], f"tags.`mlflow.parentRunId` = '{res['parent_run_id']}'")
    assert sorted(r.data.tags["tarq.model"] for r in kids) == ["tarq", "tt"]
    for r in kids:  # the same metric keys for every model (TT has no codebook figures)
        assert {"auc", "gauc", "logloss", "train_seconds", "samples_per_s"} <= set(r.data.metrics)
        align = {k for k in r.data.metrics if k.startswith("align_")}  # TARQ's sharpness
        assert bool(align) == (r.data.tags["tarq.model"] == "tarq")
        valid = {f"{s}_{k}" for s in ("valid", "valid_random") for k in ("auc", "gauc", "logloss")}
        assert "valid_auc" in r.data.metrics  # the hash slice (valid_split "hash", the default)
        # Learning curves: the loss, its terms and the validation AUCs per epoch (step).
        curves = {k for k in r.data.metrics if k.startswith("epoch_")}
        assert {"epoch_loss", "epoch_valid_auc", "epoch_loss_ctr"} <= curves
        # A demo warehouse: the open-loop replay of the test day against the world's truth.
        replay = {k for k in r.data.metrics if k.startswith("replay_")}
        assert {"replay_clicks_at10", "replay_recall_at50", "replay_requests"} <= replay
        assert 0 < r.data.metrics["replay_clicks_at10"] <= 1
        is_tarq = r.data.tags["tarq.model"] == "tarq"
        assert ("replay_clicks_at10_minus_tt_low" in replay) == is_tarq
        assert set(r.data.metrics) - align - curves - replay <= {
            *METRIC_KEYS,
            *valid,
            "rows_trained",
            "warm_start",
            "train_loss",
            "train_ctr_loss",
        }
        assert r.data.metrics["warm_start"] == 0.0
        assert "model.d_model" in r.data.params and "train.epochs" in r.data.params
        model_dir = env["work"] / BASE_DAY / "models" / r.data.tags["tarq.model"]
        history = json.loads((model_dir / "metrics.json").read_text())["history"]
        loss = c.get_metric_history(r.info.run_id, "epoch_loss")
        assert [(m.step, m.value) for m in loss] == [(h["epoch"], h["loss"]) for h in history]
        # The training loss every few steps, logged live and once more at registration: kept
        # once, at the times training recorded; the run spans the training.
        steps = c.get_metric_history(r.info.run_id, "train_loss")
        want = [tuple(e[:3]) for h in history for e in h["step_losses"]]
        assert sorted((m.step, m.value, m.timestamp) for m in steps) == want and want
        # Beside each model's total, its CTR log-loss term: the curve comparable across models.
        ctr = c.get_metric_history(r.info.run_id, "train_ctr_loss")
        assert sorted((m.step, m.value) for m in ctr) == [
            (e[0], e[3]) for h in history for e in h["step_losses"]
        ]
        result = json.loads((model_dir / "metrics.json").read_text())
        assert r.info.start_time <= result["started_ms"] and r.info.status == "FINISHED"
        assert r.info.end_time == result["finished_ms"] > history[-1]["ended_ms"]
        # The samples are the run's dataset input, digest = their fingerprint.
        (inp,) = r.inputs.dataset_inputs
        assert inp.dataset.digest == parent.data.tags["tarq.fingerprint"][:36]
        assert {t.key: t.value for t in inp.tags}["mlflow.data.context"] == "training"
    assert c.get_experiment(exp).tags["mlflow.experimentKind"] == "custom_model_development"
    names = {a.path for a in c.list_artifacts(res["parent_run_id"])}
    assert {"comparison.csv", "comparison.md", "plots"} <= names
    # A demo warehouse: the world's truth beside the models, on the parent run and in the table.
    truth = {k: v for k, v in parent.data.metrics.items() if k.startswith("demo_")}
    assert {"demo_oracle_auc", "demo_user_level_auc", "demo_headroom"} <= set(truth)
    assert truth["demo_oracle_auc"] > truth["demo_user_level_auc"] > 0.5
    assert {"tarq_auc_exposed", "tt_auc_exposed"} <= set(parent.data.metrics)
    oracle_rows = [r for r in res["comparison"] if r["role"] == "oracle"]
    assert [r["auc_exposed"] for r in oracle_rows][:2] == [
        truth["demo_oracle_auc"],
        truth["demo_user_level_auc"],
    ]
    for r in res["comparison"]:
        if r["role"] == "model":
            assert r["auc_exposed"] == parent.data.metrics[f"{r['model']}_auc_exposed"]
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

    arts = _artifacts(baseline["flow_run_id"])
    assert all(a is not None for a in arts.values()), arts
    assert "published table version **1**" in arts["publication"].data


def test_rerun_of_the_same_date_is_a_no_op(env: dict[str, Any]) -> None:
    from tarq.release.publish import list_versions

    c = _client(env["store"])
    before = len(c.search_model_versions("name = 'tarq'"))
    pubs = len(list_versions(env["db"]))
    state = _run(env, run_date=BASE_DAY)
    assert state.is_completed() and "already finished" in state.message
    assert state.result()["status"] == "skipped"
    assert len(c.search_model_versions("name = 'tarq'")) == before
    assert len(list_versions(env["db"])) == pubs
    assert len(_day_runs(c, BASE_DAY)) == 1


# ----------------------------------------------------------------------------- the next day


def test_second_run_date_rescores_the_champion_and_warm_starts_tarq_from_it(
    env: dict[str, Any],
) -> None:
    from tarq.release.publish import served_version
    from tarq.training.evaluation import evaluate_model_dir

    c = _client(env["store"])
    champ = c.get_model_version_by_alias("tarq", "champion")
    champ_dir = env["work"] / BASE_DAY / "models" / "tarq"
    # A wide tolerance: whether a few steps beat the champion is not what this test is about.
    state = _run(env, run_date=NEXT_DAY, champion_tolerance=1.0)
    assert state.is_completed(), state.message
    summary = _summary(env, NEXT_DAY)
    assert summary["run_date"] == NEXT_DAY and summary["test_day"] == "2026-10-08"

    # The champion re-scored on today's test day: exactly what evaluating its model dir on
    # today's samples gives (not its figures recorded on its own day, not missing).
    rows = [r for r in summary["comparison"] if r["role"].startswith("champion")]
    assert len(rows) == 1, summary["comparison"]
    (row,) = rows
    assert row["role"] == "champion"
    assert row["model"] == f"champion v{champ.version} ({BASE_DAY})"
    today = evaluate_model_dir(champ_dir, env["work"] / NEXT_DAY / "samples")
    assert row["auc"] == pytest.approx(today["auc"], abs=1e-9)
    assert row["gauc"] == pytest.approx(today["gauc"], abs=1e-9)
    recorded = float(champ.tags["tarq.test_auc"])  # its own test day (2026-10-07)
    assert row["auc"] != pytest.approx(recorded, abs=1e-9)
    assert summary["gate"]["challenger_minus_champion"] is not None

    # TARQ continues the champion on the one new day; TT continues its own last model.
    lin = summary["lineage"]["tarq"]
    assert lin["mode"] == "warm", lin["reason"]
    assert lin["parent_version"] == str(champ.version) and lin["parent_source"] == "champion"
    assert lin["parent_run_date"] == BASE_DAY and lin["generation"] == 1
    assert lin["train_start"] == lin["train_end"] == "2026-10-07"
    assert lin["cold_run_date"] == BASE_DAY and lin["rows_trained"] > 0
    tt = summary["lineage"]["tt"]
    assert tt["mode"] == "warm" and tt["parent_source"] == "latest"
    assert tt["train_start"] == tt["train_end"] == "2026-10-07"
    assert (
        json.loads((env["work"] / NEXT_DAY / "models" / "tarq" / "lineage.json").read_text()) == lin
    )
    metrics = json.loads((env["work"] / NEXT_DAY / "models" / "tarq" / "metrics.json").read_text())
    assert metrics["warm_start"]["mode"] == "warm"
    assert metrics["warm_start"]["parent_dir"] == str(champ_dir)

    # A warm day's IDs stick to the served table, and TARQ is compared with the codes it is
    # published with (equal to its nearest entries' figures when no item was held).
    from tarq.defaults import STICKY_MARGIN
    from tarq.ids.churn import ItemCodes
    from tarq.ids.semantic_ids import read_ids

    ids_dir = env["work"] / NEXT_DAY / "ids"
    st = json.loads((ids_dir / "health.json").read_text())["sticky"]
    assert st["margin"] == STICKY_MARGIN and st["against_version"] == 1
    assert st["items_with_served_code"] > 0
    _, ids, codes, _ = read_ids(ids_dir / "ids.parquet")
    published = evaluate_model_dir(
        env["work"] / NEXT_DAY / "models" / "tarq",
        env["work"] / NEXT_DAY / "samples",
        item_codes=ItemCodes.of(ids, codes),
    )
    (tarq_row,) = [r for r in summary["comparison"] if r["model"] == "tarq"]
    assert tarq_row["auc"] == pytest.approx(published["auc"], abs=1e-9)
    health = json.loads((ids_dir / "health.json").read_text())
    moved = (health.get("resolution") or {}).get("items_moved", 0)
    assert ("score_published" in summary["timings"]) == (st["items_held"] + moved > 0)

    mv = c.get_model_version("tarq", summary["version"])
    assert mv.version != champ.version and mv.tags["tarq.run_date"] == NEXT_DAY
    assert mv.tags["lineage.mode"] == "warm"
    assert mv.tags["lineage.parent_version"] == str(champ.version)
    assert "gate.tarq_minus_tt" in mv.tags and "gate.challenger_minus_champion" in mv.tags
    assert served_version(env["db"]) == summary["publication"]["version"] == 2
    assert str(c.get_model_version_by_alias("tarq", "champion").version) == summary["version"]


def test_rejected_gate_publishes_nothing_and_keeps_the_champion(env: dict[str, Any]) -> None:
    from tarq.release.publish import served_version

    c = _client(env["store"])
    champ = c.get_model_version_by_alias("tarq", "champion").version
    # TARQ would have to beat TT by a full AUC point: impossible, so the gate must reject.
    state = _run(env, run_date=NEXT_DAY, min_gain_over_tt=1.0)
    assert state.is_failed() and state.name == "GateRejected"
    assert "beats_tt" in state.message and "nothing published" in state.message
    assert served_version(env["db"]) == 1
    assert c.get_model_version_by_alias("tarq", "champion").version == champ
    new = c.get_model_version_by_alias("tarq", "challenger")
    assert new.version != champ and new.tags["gate.decision"] == "reject"
    assert "beats_tt" in new.tags["gate.reason"]
    (run,) = _day_runs(c, NEXT_DAY)
    assert run.data.tags["tarq.status"] == "rejected"
    summary = _summary(env, NEXT_DAY)
    assert not summary["gate"]["promote"] and summary["publication"] is None
    arts = _artifacts(state.state_details.flow_run_id)
    assert "champion and served table unchanged" in arts["publication"].data


def test_main_exits_3_when_the_gate_rejects_and_cold_trains_every_model_cold(
    env: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """``tarq daily --cold`` (warm_start=false) with a gate that cannot pass: exit code 3,
    every model trained from scratch on the whole window although a parent exists."""
    from flows.cli import main as tarq_command
    from flows.tarq_daily import EXIT_REJECTED, _parser, params_from_args
    from tarq.release.publish import served_version

    args = [*_cli_args(env, NEXT_DAY, min_gain_over_tt=1.0), "--cold"]
    assert params_from_args(_parser().parse_args(args)).warm_start is False
    assert tarq_command(["daily", *args]) == EXIT_REJECTED == 3
    err = capsys.readouterr().err
    assert "GateRejected" in err and "beats_tt" in err
    assert served_version(env["db"]) == 1
    summary = _summary(env, NEXT_DAY)
    assert set(summary["lineage"]) == {"tarq", "tt"}
    for name, lin in summary["lineage"].items():
        assert lin["mode"] == "cold" and lin["reason"] == "cold: warm_start is off", name
        assert (lin["train_start"], lin["train_end"]) == ("2026-10-01", "2026-10-07")
        assert lin["parent_version"] is None and lin["generation"] == 0
        metrics = json.loads(
            (env["work"] / NEXT_DAY / "models" / name / "metrics.json").read_text()
        )
        assert metrics["warm_start"] == {"mode": "cold"}
    c = _client(env["store"])
    mv = c.get_model_version("tarq", summary["version"])
    assert mv.tags["lineage.mode"] == "cold" and mv.tags["gate.decision"] == "reject"


# ----------------------------------------------------------------------------- force, dates


def test_force_reruns_a_finished_date_in_a_new_parent_run_without_a_second_version(
    tiny_db: Path, harness: Any, tmp_path: Path
) -> None:
    """``force`` reruns a published date: a new parent run (the old one stays as it was), and
    the date keeps its one registered version and publication (``tracking.version_for_day``
    is the registry's idempotency key; the publication's is model version + date + IDs file).

    With unchanged inputs the samples and the models come from the Prefect task cache (the
    same weights a retrain with the same seed gives); changed settings: the test below.
    Its own warehouse and work dir, not a copy of the baseline: the IDs file records the model
    dir's path, so the same IDs from a copied work dir would not be "the same" to publish.
    """
    from tarq.release.publish import list_versions, served_version

    env = _fresh_env(tiny_db, tmp_path)
    first = _run(env, run_date=BASE_DAY)
    assert first.is_completed(), first.message
    first_res = first.result()
    c = _client(env["store"])
    versions = sorted(v.version for v in c.search_model_versions("name = 'tarq'"))

    state = _run(env, run_date=BASE_DAY, force=True)
    assert state.is_completed(), state.message
    res = state.result()
    assert res.get("status") != "skipped" and res["run_date"] == BASE_DAY
    assert "validate" in res["timings"] and "publish" in res["timings"]

    runs = _day_runs(c, BASE_DAY)
    assert [r.info.run_id for r in runs] == [first_res["parent_run_id"], res["parent_run_id"]]
    assert runs[0].data.tags["tarq.status"] == "published"  # the first run is left as it was
    assert runs[1].data.tags["tarq.status"] == "published"
    assert runs[1].data.tags["tarq.model_version"] == str(first_res["version"])
    # One registered version for the date: the forced run reuses it, and it is the model the
    # forced run trained (the same weights: same samples, settings and seed).
    assert sorted(v.version for v in c.search_model_versions("name = 'tarq'")) == versions
    mine = [
        v
        for v in c.search_model_versions("name = 'tarq'")
        if v.tags.get("tarq.run_date") == BASE_DAY
    ]
    assert len(mine) == 1 and str(res["version"]) == str(first_res["version"])
    kids = c.search_runs(
        [runs[1].info.experiment_id],
        f"tags.`mlflow.parentRunId` = '{res['parent_run_id']}' AND tags.`tarq.model` = 'tarq'",
    )
    assert len(kids) == 1
    registered = c.get_run(mine[0].run_id).data.tags["tarq.model_sha256"]
    assert kids[0].data.tags["tarq.model_sha256"] == registered
    assert str(c.get_model_version_by_alias("tarq", "champion").version) == str(res["version"])
    assert res["publication"]["version"] == 1 and not res["publication"]["created"]
    assert served_version(env["db"]) == 1
    assert len([v for v in list_versions(env["db"]) if str(v["run_date"]) == BASE_DAY]) == 1


def test_force_with_changed_settings_publishes_the_retrained_model(env: dict[str, Any]) -> None:
    from tarq.release.publish import served_version

    c = _client(env["store"])
    state = _run(env, run_date=BASE_DAY, force=True, max_steps_per_epoch=7)
    assert state.is_completed(), state.message
    res = state.result()
    kid = c.search_runs(
        [c.get_experiment_by_name("tarq-daily").experiment_id],
        f"tags.`mlflow.parentRunId` = '{res['parent_run_id']}' AND tags.`tarq.model` = 'tarq'",
    )[0]
    mv = c.get_model_version("tarq", res["version"])
    assert (
        c.get_run(mv.run_id).data.tags["tarq.model_sha256"] == kid.data.tags["tarq.model_sha256"]
    )  # the version serves the retrained weights
    assert served_version(env["db"]) == res["publication"]["version"]
    assert str(c.get_model_version_by_alias("tarq", "champion").version) == str(res["version"])


def test_run_date_today_resolves_to_the_utc_date_and_fails_validation_on_past_logs(
    env: dict[str, Any],
) -> None:
    from tarq.release.publish import served_version

    before = dt.datetime.now(dt.UTC).date()
    state = _run(env, run_date="today")
    after = dt.datetime.now(dt.UTC).date()
    assert state.is_failed() and state.name == "ValidationFailed", (state.name, state.message)
    day = next((d for d in {before, after} if f"validation of {d} failed" in state.message), None)
    assert day is not None, state.message
    assert "nothing published" in state.message
    assert (env["work"] / str(day) / "gx").exists()
    assert not (env["work"] / str(day) / "models").exists()
    assert served_version(env["db"]) == 1
    c = _client(env["store"])
    assert _day_runs(c, str(day)) == []


def _other_date_zone(now: dt.datetime) -> str:
    """A POSIX TZ whose local date differs from the UTC date at ``now``."""
    return "TARQ-14" if now.hour >= 10 else "TARQ+12"  # UTC+14 / UTC−12


def test_today_is_the_utc_date_whatever_the_hosts_time_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tarq.dates import resolve_run_date

    now = dt.datetime.now(dt.UTC)
    monkeypatch.setenv("TZ", _other_date_zone(now))
    time.tzset()
    try:
        moved = dt.date.today() != now.date()
        got = resolve_run_date("today", None)  # type: ignore[arg-type]
    finally:
        monkeypatch.undo()
        time.tzset()
    if not moved:  # a zone that does not move the date proves nothing
        pytest.skip("TZ did not change the local date on this host")
    assert got in {now.date(), dt.datetime.now(dt.UTC).date()}


def test_failed_validation_stops_before_training(env: dict[str, Any]) -> None:
    from flows.tarq_daily import main
    from tarq.release.publish import served_version

    state = _run(env, run_date=NO_LOGS_DAY)
    assert state.is_failed() and state.name == "ValidationFailed"
    assert "nothing published" in state.message
    assert not (env["work"] / NO_LOGS_DAY / "models").exists()
    assert served_version(env["db"]) == 1
    c = _client(env["store"])
    assert _day_runs(c, NO_LOGS_DAY) == []
    args = [
        "--db",
        str(env["db"]),
        "--run-date",
        NO_LOGS_DAY,
        "--work-dir",
        str(env["work"]),
        "--tracking-uri",
        env["store"],
        "--models",
        "tarq,tt",
    ]
    assert main(args) == 1


# ----------------------------------------------------------------------------- backfill


def test_backfill_of_two_days_before_latest_through_main(
    tiny_db: Path, harness: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What ``make demo`` runs on a fresh warehouse: ``--run-date latest --backfill-days 2``,
    three run dates in order (cold, then warm from the champion day after day), exit 0, a
    summary per date and one publication each. With ``valid_split = "time"`` the cold run
    holds out its window's last day, and its warm child trains that day too."""
    from flows.tarq_daily import main
    from tarq.release.publish import list_versions, served_version

    env = _fresh_env(tiny_db, tmp_path)
    args = _cli_args(env, "latest", champion_tolerance=1.0, valid_split="time")
    assert main([*args, "--backfill-days", "2"]) == 0
    out = capsys.readouterr().out
    days = ["2026-10-07", BASE_DAY, NEXT_DAY]
    assert [out.index(f"{d}: Completed") for d in days] == sorted(
        out.index(f"{d}: Completed") for d in days
    )  # in order, each completed
    c = _client(env["store"])
    versions = []
    for k, day in enumerate(days):
        s = _summary(env, day)
        assert s["run_date"] == day
        assert s["test_day"] == str(dt.date.fromisoformat(day) - dt.timedelta(days=1))
        assert f"run date {day} (test day {s['test_day']})" in out  # the digest of each run
        assert s["gate"]["promote"] and s["publication"]["version"] == k + 1
        assert len(_day_runs(c, day)) == 1, day
        lin = s["lineage"]["tarq"]
        if k == 0:
            assert lin["mode"] == "cold"
            assert not any(r["role"].startswith("champion") for r in s["comparison"])
        else:  # each day continues the previous day's champion on its one new day (after
            # the cold run, also on the day the cold run held out for validation)
            assert lin["mode"] == "warm" and lin["generation"] == k, lin["reason"]
            assert lin["parent_run_date"] == days[k - 1]
            assert lin["parent_version"] == versions[-1]
            new_day = dt.date.fromisoformat(s["test_day"]) - dt.timedelta(days=1)
            first = new_day - dt.timedelta(days=1 if k == 1 else 0)
            assert (lin["train_start"], lin["train_end"]) == (str(first), str(new_day))
            assert [r["role"] for r in s["comparison"]].count("champion") == 1
        versions.append(s["version"])
    assert len(set(versions)) == 3
    assert served_version(env["db"]) == 3
    assert sorted(str(v["run_date"]) for v in list_versions(env["db"])) == days
    assert str(c.get_model_version_by_alias("tarq", "champion").version) == versions[-1]


def test_retention_in_the_job_keeps_what_the_next_run_date_continues(
    tiny_db: Path, harness: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three run dates with ``keep_days`` 1 and one kept publication: after each publication
    the older dates' work folders, model artifacts and registered versions go, yet every date
    warm-starts from the one before it (its champion and TT's parent are never deleted) and
    the champion, the served table and the newest date stay whole."""
    from flows.retention import GC_TAG
    from flows.tarq_daily import main
    from tarq.release.publish import served_version

    env = _fresh_env(tiny_db, tmp_path)
    args = _cli_args(env, "latest", champion_tolerance=1.0, keep_versions=1)
    assert main([*args, "--backfill-days", "2", "--keep-days", "1"]) == 0
    assert "  retention (keep 1 run dates): " in capsys.readouterr().out
    days = ["2026-10-07", BASE_DAY, NEXT_DAY]
    assert sorted(p.name for p in env["work"].iterdir()) == [NEXT_DAY]
    s = _summary(env, NEXT_DAY)
    assert s["lineage"]["tarq"]["mode"] == "warm" and s["lineage"]["tarq"]["generation"] == 2
    assert s["lineage"]["tarq"]["parent_run_date"] == BASE_DAY
    assert s["lineage"]["tt"]["mode"] == "warm"
    assert s["retention"]["keep_days"] == 1 and s["retention"]["bytes_freed"] > 0
    assert "retention" in s["timings"]
    c = _client(env["store"])
    champ = c.get_model_version_by_alias("tarq", "champion")
    assert str(champ.version) == s["version"] and served_version(env["db"]) == 3
    assert [str(v.version) for v in c.search_model_versions("name = 'tarq'")] == [s["version"]]
    exp = c.get_experiment_by_name("tarq-daily").experiment_id
    for day in days:
        for run in c.search_runs(
            [exp], f"tags.`tarq.kind` = 'model' AND tags.`tarq.run_date` = '{day}'"
        ):
            kept = [a.path for a in c.list_artifacts(run.info.run_id, "model_dir")]
            assert bool(kept) == (day == NEXT_DAY), (day, run.data.tags["tarq.model"])
            assert bool(run.data.tags.get(GC_TAG)) == (day != NEXT_DAY)
            assert run.data.metrics["auc"] > 0  # the record stays


def test_tarq_daily_is_the_flows_command_line_and_tarq_stays_prefect_free(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``tarq daily`` takes python -m flows.tarq_daily's flags (one entry point); the other
    commands are the library's, and ``tarq --help`` lists daily. (A run through ``tarq daily``:
    test_main_exits_3_when_the_gate_rejects_and_cold_trains_every_model_cold.)"""
    import tomllib

    from flows.cli import main as tarq_command
    from flows.tarq_daily import _parser

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["tarq"] == "flows.cli:main"
    with pytest.raises(SystemExit) as done:
        tarq_command(["daily", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: tarq daily")
    flags = {o for a in _parser()._actions for o in a.option_strings}
    assert flags >= {"--run-date", "--backfill-days", "--cold", "--params"}
    assert all(flag in out for flag in flags)
    with pytest.raises(SystemExit):
        tarq_command(["--help"])
    assert "daily" in capsys.readouterr().out
    # The library's command line (every command but daily) never imports Prefect.
    probe = (
        "import sys; from tarq.cli import build_parser; build_parser().parse_args(['daily']); "
        "print(any(m == 'prefect' or m.startswith('prefect.') for m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    assert out.strip() == "False"


def test_a_child_run_follows_its_training_live(tmp_path: Path) -> None:
    import logging

    from flows import tracking
    from tarq.training.train import TrainResult

    tracking.use_store(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = tracking.setup(f"sqlite:///{tmp_path / 'mlflow.db'}", "live")
    parent = tracking.start_day(exp, "2026-10-08", {}, "f" * 64, {}, "0123abcd-0000")
    samples = tmp_path / "samples"
    samples.mkdir()
    (samples / "meta.json").write_text(json.dumps({"fingerprint": "f" * 64, "run_date": "x"}))
    run_id = tracking.open_model_run(parent, "tt", "2026-10-08", samples)
    c = tracking.client()
    assert c.get_run(run_id).info.status == "RUNNING"
    assert tracking.open_model_run(parent, "tt", "2026-10-08", samples) == run_id  # a retry
    live = tracking.LiveRun(run_id, logging.getLogger("test"))
    record = {"epoch": 0, "loss": 0.5, "loss_terms": {"ctr": 0.5}, "valid_auc": 0.6}
    record |= {"ended_ms": 1_700_000_002_000, "seconds": 2.0, "step_losses": []}
    record["step_losses"] = [[20, 0.7, 1_700_000_001_000, 0.5], [40, 0.6, 1_700_000_001_500]]
    for step, loss, t, *ctr in record["step_losses"]:  # the second as recorded before ctr was
        live(
            {
                "kind": "step",
                "step": step,
                "loss": loss,
                "time_ms": t,
                "ctr_loss": next(iter(ctr), None),
            }
        )
    live({"kind": "epoch", "record": record})
    # Followed while training: the curves are there before the run is registered.
    assert [m.value for m in c.get_metric_history(run_id, "train_loss")] == [0.7, 0.6]
    assert [m.value for m in c.get_metric_history(run_id, "train_ctr_loss")] == [0.5]
    assert c.get_run(run_id).info.status == "RUNNING"
    # The registration logs the whole history again (kept once) and ends the run at the
    # training's end.
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for f, body in (("model.pt", "w"), ("config.json", '{"model": {}, "train": {}}')):
        (model_dir / f).write_text(body)
    (model_dir / "layout.json").write_text("{}")
    (model_dir / "metrics.json").write_text(json.dumps({"history": [record]}))
    result = TrainResult(
        "tt", {"auc": 0.6}, {}, None, None, 0, 1, 2.0, 10.0, 1, 1, 5, str(samples), 9,
        {"mode": "cold"}, [], started_ms=1_700_000_000_000, finished_ms=1_700_000_003_000,
    )  # fmt: skip
    assert tracking.log_model_run(parent, "tt", result, model_dir, "2026-10-08") == run_id
    run = c.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.end_time == 1_700_000_003_000
    steps = c.get_metric_history(run_id, "train_loss")
    assert sorted((m.step, m.value, m.timestamp) for m in steps) == [
        tuple(s[:3]) for s in record["step_losses"]
    ]
    assert len(c.get_metric_history(run_id, "train_ctr_loss")) == 1
    assert len(c.get_metric_history(run_id, "epoch_valid_auc")) == 1
    assert len(run.inputs.dataset_inputs) == 1
    # A store that fails mid-training ends the live logging, not the training.
    broken = tracking.LiveRun("no-such-run", logging.getLogger("test"))
    broken({"kind": "step", "step": 1, "loss": 0.1, "time_ms": 1})
    assert broken.failed


def test_data_steps_on_dask_give_the_same_samples_models_and_ids(
    baseline: dict[str, Any], tiny_db: Path, tmp_path: Path
) -> None:
    """The baseline's run date again with ``dask`` (a local cluster of 2 worker processes) on
    a fresh warehouse and store: validation, samples and IDs run as Prefect tasks on Dask
    (subflows validate-on-dask, samples-on-dask, assign-on-dask), and the results are the
    single-process run's: the same samples, models, IDs and validation verdicts."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter

    root = tmp_path / "dask"
    root.mkdir()
    db = root / "w.duckdb"
    shutil.copy(tiny_db, db)
    env = {
        "db": db,
        "store": f"sqlite:///{root / 'mlflow' / 'mlflow.db'}",
        "work": root / "work",
    }
    state = _run(env, run_date=BASE_DAY, dask=True, dask_workers=2)
    assert state.is_completed(), state.message
    res, base = state.result(), baseline["result"]
    assert res["gate"]["promote"] == base["gate"]["promote"] and res["status"] == base["status"]

    def files(work: Path, sub: str) -> dict[str, str]:
        folder = work / BASE_DAY / sub
        return {
            str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))
            # Training checkpoints carry wall-clock state; the weights are model.pt.
            if p.is_file() and p.suffix in (".parquet", ".pt") and "checkpoints" not in p.parts
        }

    for sub in ("samples", "ids", "models/tarq"):
        assert files(env["work"], sub) == files(baseline["work"], sub), sub
    assert (
        files(env["work"], "ids")["ids.parquet"] and files(env["work"], "models/tarq")["model.pt"]
    )
    assert _validation_checks(db) == _validation_checks(baseline["db"])

    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        for name, job_names in (
            ("validate-on-dask", ("validate-rows: impressions", "validate-days: days 2026-")),
            ("samples-on-dask", ("sample-bucket: bucket 1/1",)),
            ("assign-on-dask", ("assign-chunk: items ",)),
        ):
            runs = [
                r
                for r in client.read_flow_runs(
                    flow_filter=FlowFilter(name=FlowFilterName(any_=[name]))
                )
                if r.state and r.state.is_completed()
            ]
            ours = [r for r in runs if _in_run(client, r, flow_run_id)]
            assert len(ours) == 1, name
            jobs = client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [ours[0].id]}))
            assert jobs and all(j.state.is_completed() for j in jobs), name
            for prefix in job_names:  # each task run is named after its job
                assert any(j.name.startswith(prefix) for j in jobs), (
                    prefix,
                    [j.name for j in jobs],
                )


def _in_run(client: Any, run: Any, flow_run_id: Any) -> bool:
    """Whether ``run`` is a subflow run (at any depth) of the flow run ``flow_run_id``."""
    while run.parent_task_run_id is not None:
        parent = client.read_task_run(run.parent_task_run_id)
        run = client.read_flow_run(parent.flow_run_id)
        if run.id == flow_run_id:
            return True
    return False


def _validation_checks(db: Path) -> list[tuple[Any, ...]]:
    """(day, check, table, status, observed) of every check of the warehouse's validations."""
    from tarq.store.warehouse import open_db

    with open_db(db, read_only=True) as con:
        rows = con.execute("SELECT summary FROM validation_runs ORDER BY check_day").fetchall()
    return [
        (c.get("day"), c["name"], c["table"], c["status"], json.dumps(c["observed"], default=str))
        for (summary,) in rows
        for c in json.loads(summary)["checks"]
    ]


def test_digest_prints_the_demo_truths_figures() -> None:
    """The terminal digest shows each comparison row's figures, the demo truth's rows (which
    have only ``auc_exposed``) included."""
    from flows.tarq_daily import digest

    summary = {
        "run_date": "2026-12-04",
        "test_day": "2026-12-03",
        "comparison": [
            {"model": "tarq", "auc": 0.8, "gauc": 0.77, "logloss": 0.18, "auc_exposed": 0.78},
            {"model": "demo truth: full logit", "role": "oracle", "auc_exposed": 0.8535},
        ],
        "gate": {"promote": True, "reason": "ok"},
    }
    text = digest(summary)
    assert "tarq       auc 0.8000  gauc 0.7700  logloss 0.1800  auc_exposed 0.7800" in text
    assert "demo truth: full logit auc_exposed 0.8535" in text
