"""Faults of tracking and locks (a section of tests/test_faults.py): trust scoped to the
warehouse, honest publication status, checkpoints of other inputs, writers that ignore the
run lock or meet a DuckDB file lock, and a retried registration."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tarq.cli import main as tarq_main
from tests import test_faults as tf
from tests.test_faults import (
    D1,
    D2,
    TINY_MODEL,
    _day_runs,
    _run,
    _task_attempts,
    _tree_sha,
    snapshot,
)

# The fixtures of tests/test_faults.py, used here by name.
db, samples, flow_baseline, flow_env = tf.db, tf.samples, tf.flow_baseline, tf.flow_env
REPO = Path(__file__).resolve().parents[1]


def _holder(code: str) -> subprocess.Popen:
    """Another process running ``code`` until killed (it prints ``ready`` once set up)."""
    proc = subprocess.Popen([sys.executable, "-c", code + "\nprint('ready', flush=True)\n"
                             "import time\ntime.sleep(600)"],
                            stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def _stop(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait()


# ----------------------------------------------------------------------------- locks


def test_every_writing_command_is_refused_while_another_process_holds_the_run_lock(
        db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An import between a run's validation and its sample build would train on rows nobody
    validated: every command that writes takes the run lock the daily run holds."""
    from tests.test_faults import IMP_HEADER, _csv, _ids

    u, i, ts, clicked, _, pos, _ = _ids(db)["existing"]
    src = _csv(tmp_path / "src" / "impressions.csv", IMP_HEADER,
               [f"{u},{i},{ts},{int(clicked)},1,{pos},r-late"]).parent
    before = snapshot(db)
    holder = _holder("from tarq.locking import exclusive_lock, warehouse_lock_path\n"
                     f"cm = exclusive_lock(warehouse_lock_path({str(db)!r}), "
                     "info={'run_date': '2026-10-09'})\ncm.__enter__()")
    try:
        commands = [["import", "parquet", str(src), "--db", str(db)],
                    ["validate", "--db", str(db), "--run-date", D1],
                    ["build-samples", "--db", str(db), "--run-date", D1,
                     "--out", str(tmp_path / "s")],
                    ["publish", "--db", str(db), "--rollback"],
                    ["demo-data", "--db", str(db), "--preset", "tiny"]]
        for argv in commands:
            rc = tarq_main(argv)
            err = capsys.readouterr().err.strip()
            assert rc == 4, (argv, err)
            assert err.startswith(f"tarq: error: warehouse {db} is in use by another run (pid "
                                  f"{holder.pid}"), err
            assert "run_date 2026-10-09" in err and len(err.splitlines()) == 1
    finally:
        _stop(holder)
    assert snapshot(db) == before and not (tmp_path / "s").exists()


def test_publish_while_another_process_has_the_duckdb_file_open_is_one_line(
        flow_env: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    env = flow_env
    before = snapshot(env["db"], env["store"])
    holder = _holder(f"import duckdb\ncon = duckdb.connect({str(env['db'])!r}, read_only=True)")
    try:
        rc = tarq_main(["publish", "--db", str(env["db"]), "--ids", str(env["work"] / D1 / "ids"),
                        "--model-version", "manual", "--run-date", D1])
        err = capsys.readouterr().err.strip()
    finally:
        _stop(holder)
    assert rc == 4 and len(err.splitlines()) == 1, err
    assert err.startswith(f"tarq: error: warehouse {env['db']} is in use by pid {holder.pid}"), err
    assert "Traceback" not in err and snapshot(env["db"], env["store"]) == before


@pytest.mark.slow
def test_the_daily_run_meets_a_duckdb_file_lock_with_one_line(flow_env: dict[str, Any]) -> None:
    env = flow_env
    before = snapshot(env["db"], env["store"])
    holder = _holder(f"import duckdb\ncon = duckdb.connect({str(env['db'])!r})")
    try:
        state = _run(env, run_date=D2)
    finally:
        _stop(holder)
    assert state.is_failed() and state.name == "WarehouseBusy", (state.name, state.message)
    assert state.message.startswith(f"warehouse {env['db']} is in use by pid {holder.pid}")
    assert len(state.message.splitlines()) == 1
    assert snapshot(env["db"], env["store"]) == before and _day_runs(env["store"], D2) == []


# ----------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def other_samples(tiny_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Samples of another run date (other rows, another fingerprint)."""
    import shutil

    from tarq.data.samples import build_samples

    root = tmp_path_factory.mktemp("faults_other_samples")
    shutil.copy(tiny_db, root / "w.duckdb")
    build_samples(root / "w.duckdb", D2, root / "s", seq_len=10)
    return root / "s"


def test_train_refuses_a_checkpoint_of_other_samples_or_settings(
        samples: Path, other_samples: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A checkpoint resumed from other samples or settings kept the old weights while
    config.json and metrics.json named the new run."""
    from tarq.model import ModelConfig
    from tarq.train import CheckpointMismatch, TrainConfig, train

    mcfg = ModelConfig.from_dict(TINY_MODEL)
    tcfg = {"epochs": 1, "batch_size": 64, "max_steps_per_epoch": 3, "threads": 1}
    out = tmp_path / "m"
    train(samples, "tt", out, mcfg, TrainConfig.from_dict(tcfg), progress=False)
    made = _tree_sha(out)

    with pytest.raises(CheckpointMismatch, match=r"train\.lr 0\.002 vs 0\.01.*--fresh"):
        train(samples, "tt", out, mcfg, TrainConfig.from_dict({**tcfg, "lr": 0.01}),
              progress=False)
    with pytest.raises(CheckpointMismatch, match=r"samples "):
        train(other_samples, "tt", out, mcfg, TrainConfig.from_dict(tcfg), progress=False)
    assert _tree_sha(out) == made  # refused before anything was written

    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"model": TINY_MODEL, "train": tcfg}))
    argv = ["train", "--samples", str(other_samples), "--model", "tt", "--out", str(out),
            "--config", str(cfg)]
    assert tarq_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "will not resume" in err and "--fresh" in err
    assert _tree_sha(out) == made

    assert tarq_main([*argv, "--fresh"]) == 0  # explicit: start over in this folder
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["samples"] == str(other_samples.resolve())
    assert _tree_sha(out)["model.pt"] != made["model.pt"]
    # The same inputs again resume (nothing left to train) and keep the weights.
    again = _tree_sha(out)["model.pt"]
    assert tarq_main(argv) == 0 and _tree_sha(out)["model.pt"] == again


# ----------------------------------------------------------------------------- MLflow scope


def _new_warehouse(tiny_db: Path, root: Path) -> Path:
    """Another warehouse with the same logs: a copy made before identities existed, so it
    adopts an identity of its own on first use (a copied file would keep the original's)."""
    import shutil

    from tarq.warehouse import open_db

    root.mkdir(parents=True)
    db = root / "w.duckdb"
    shutil.copy(tiny_db, db)
    with open_db(db) as con:
        con.execute("DROP TABLE IF EXISTS warehouse_meta")
    return db


@pytest.mark.slow
def test_a_second_warehouse_on_the_same_store_never_takes_the_firsts_results(
        flow_env: dict[str, Any], tiny_db: Path, tmp_path: Path) -> None:
    """Warehouse A finished D1 on the store; warehouse B on the same store was told "already
    finished… skipped" and nothing was validated or served on B."""
    from mlflow.tracking import MlflowClient

    a = flow_env
    a_before = snapshot(a["db"], a["store"])
    b_db = _new_warehouse(tiny_db, tmp_path / "b")
    b = {**a, "db": b_db, "work": tmp_path / "b" / "work", "root": tmp_path / "b"}
    b_before = snapshot(b_db)

    state = _run(b, run_date=D1)
    assert state.is_failed() and state.name == "ForeignWarehouse", (state.name, state.message)
    assert "registered model 'tarq'" in state.message and "registered_model" in state.message
    assert snapshot(a["db"], a["store"]) == a_before and snapshot(b_db) == b_before
    assert len(_day_runs(a["store"], D1)) == 1

    # With a registered model of its own, B validates, trains cold and serves its own table.
    state = _run(b, run_date=D1, registered_model="tarq-b")
    assert state.is_completed(), state.message
    res = state.result()
    assert res["status"] == "published" and res["lineage"]["tarq"]["mode"] == "cold"
    assert snapshot(b_db).served == 1 and (b["work"] / D1 / "gx").exists()
    assert snapshot(a["db"], a["store"]) == a_before  # A's champion, versions, table untouched
    c = MlflowClient(a["store"], a["store"])
    b_champ = c.get_model_version_by_alias("tarq-b", "champion")
    a_champ = c.get_model_version_by_alias("tarq", "champion")
    assert b_champ.tags["tarq.warehouse"] != a_champ.tags["tarq.warehouse"]
    runs = _day_runs(a["store"], D1)
    assert len(runs) == 2 and len({r.data.tags["tarq.warehouse"] for r in runs}) == 2

    # Every lookup is scoped: B sees neither A's champion nor A's runs as a parent.
    from flows import tracking

    tracking.use_store(a["store"])
    exp = c.get_experiment_by_name("tarq-daily").experiment_id
    wa, wb = a_champ.tags["tarq.warehouse"], b_champ.tags["tarq.warehouse"]
    later = "2026-10-10"
    assert tracking.find_parent_run("tt", later, exp, False, wb, "tarq-b")[0].data.tags[
        "tarq.warehouse"] == wb
    assert tracking.find_parent_run("tarq", later, exp, True, wa, "tarq")[1] == str(
        a_champ.version)
    assert tracking.champion("tarq", wb) is None
    assert tracking.version_for_day(D1, "tarq", warehouse=wb) is None
    assert tracking.find_day_run(exp, D1, wb).info.run_id != tracking.find_day_run(
        exp, D1, wa).info.run_id


@pytest.mark.slow
def test_a_store_made_before_warehouse_tags_is_adopted_on_first_use(
        flow_env: dict[str, Any]) -> None:
    """Runs, versions and the registered model without tarq.warehouse are adopted by the
    first warehouse that opens the store: its finished date is still finished."""
    from mlflow.tracking import MlflowClient

    from flows import tracking
    from tarq.warehouse import warehouse_id

    env = flow_env
    c = MlflowClient(env["store"], env["store"])
    exp = c.get_experiment_by_name("tarq-daily").experiment_id
    for r in c.search_runs([exp]):
        if "tarq.warehouse" in r.data.tags:
            c.delete_tag(r.info.run_id, "tarq.warehouse")
    for v in c.search_model_versions("name = 'tarq'"):
        c.delete_model_version_tag("tarq", v.version, "tarq.warehouse")
    c.delete_registered_model_tag("tarq", "tarq.warehouse")

    known = tracking.open_day(env["store"], "tarq-daily", D1, warehouse=warehouse_id(env["db"]))
    assert known["status"] == "published" and known["version"] == "1"
    assert c.get_registered_model("tarq").tags["tarq.warehouse"] == warehouse_id(env["db"])
    assert all(r.data.tags.get("tarq.warehouse") for r in c.search_runs([exp]))


# ----------------------------------------------------------------------------- publication


@pytest.mark.slow
def test_republishing_when_another_table_is_served_ends_not_served_not_published(
        flow_env: dict[str, Any]) -> None:
    """The operator served another table (a hotfix; the same after a rollback): the forced
    rerun of D1 finds its table version published but not served. It must not move champion
    and must not call itself published."""
    from mlflow.tracking import MlflowClient

    from tarq.publish import publish

    env = flow_env
    hotfix = publish(env["db"], env["work"] / D1 / "ids", model_version="hotfix", run_date=D1,
                     export_dir=env["root"] / "published")
    assert hotfix["served"] and hotfix["version"] == 2
    before = snapshot(env["db"], env["store"])

    state = _run(env, run_date=D1, force=True)
    assert state.is_completed(), state.message
    res = state.result()
    assert res["status"] == "not-served" and res["publication"]["served"] is False
    after = snapshot(env["db"], env["store"])  # the rerun adds its validation and build records
    assert replace(after, records=before.records) == before  # served v2, champion, versions
    c = MlflowClient(env["store"], env["store"])
    newest = max(_day_runs(env["store"], D1), key=lambda r: r.info.start_time)
    assert newest.data.tags["tarq.status"] == "not-served"
    assert newest.data.tags["tarq.served_version"] == "2"
    assert json.loads((env["work"] / D1 / "summary.json").read_text())["status"] == "not-served"
    from flows.tarq_daily import digest
    from tests.test_flow import _artifacts

    assert "NOT SERVED" in digest(res)
    md = _artifacts(state.state_details.flow_run_id)["publication"].data
    assert "not served" in md and "champion` not moved" in md
    assert str(c.get_model_version_by_alias("tarq", "champion").version) == before.champion


# ----------------------------------------------------------------------------- registration


@pytest.mark.slow
def test_a_registration_retried_after_logging_the_model_logs_it_once(
        flow_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The store failed between logging the pyfunc and registering it; the register task's
    retry reuses the logged model: one logged model, one version."""
    from mlflow.tracking import MlflowClient

    env = flow_env
    monkeypatch.setenv("TARQ_REGISTER_CRASH", "after_log_model")
    state = _run(env, run_date=D2)
    assert state.is_completed(), state.message
    attempts = {k: v for k, v in _task_attempts(state).items() if k.startswith("mlflow-register")}
    assert list(attempts.values()) == [2]  # the injected failure, then the retry
    c = MlflowClient(env["store"], env["store"])
    exp = c.get_experiment_by_name("tarq-daily").experiment_id
    (child,) = c.search_runs([exp], "tags.`tarq.kind` = 'model' AND tags.`tarq.model` = 'tarq' "
                                    f"AND tags.`tarq.run_date` = '{D2}'")
    logged = c.search_logged_models([exp], f"source_run_id = '{child.info.run_id}'")
    assert len(logged) == 1
    versions = [v for v in c.search_model_versions("name = 'tarq'")
                if v.tags.get("tarq.run_date") == D2]
    assert len(versions) == 1 and logged[0].model_id in versions[0].source
