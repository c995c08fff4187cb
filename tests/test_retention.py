"""Retention (``tarq gc``): what it deletes and what it never deletes.

A real SQLite MLflow store and a real DuckDB warehouse hold six run dates D0..D5 of TARQ and
TT made by hand (child runs with a ``model_dir/``, a logged TARQ model and a registered
version each), with all three protections set: the champion alias on D2's version, the
challenger on D3's, the served publication on D1's model; D5 is still running, so each
model's warm-start parent is its D4 run. ``tests/test_flow.py``'s retention test runs it
inside the daily flow.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

DAYS = [str(dt.date(2026, 10, 10) + dt.timedelta(days=i)) for i in range(6)]  # D0..D5


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _write(path: Path, nbytes: int = 1000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * nbytes)


@pytest.fixture()
def store(tmp_path: Path) -> dict[str, Any]:
    from mlflow.tracking import MlflowClient

    from flows import tracking
    from tarq.release import publish
    from tarq.store import sqlfiles
    from tarq.store.warehouse import open_db, warehouse_id

    db = tmp_path / "w.duckdb"
    with open_db(db):
        pass
    wh = warehouse_id(db)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.use_store(uri)
    c = MlflowClient(uri)
    exp = c.create_experiment(tracking.DEFAULT_EXPERIMENT, str(tmp_path / "artifacts"))
    c.create_registered_model("tarq", tags={tracking.WAREHOUSE_TAG: wh})
    work = tmp_path / "work"
    runs: dict[tuple[str, str], str] = {}
    versions: dict[str, str] = {}
    logged: dict[str, str] = {}
    for day in DAYS:
        status = "running" if day == DAYS[-1] else "published"
        scope = {tracking.DATE_TAG: day, tracking.WAREHOUSE_TAG: wh}
        parent = c.create_run(
            exp, tags={tracking.KIND_TAG: "daily", tracking.STATUS_TAG: status, **scope}
        )
        for name in ("tarq", "tt"):
            sha = f"{name}-{day}"
            run = c.create_run(
                exp,
                tags={
                    tracking.KIND_TAG: "model",
                    tracking.MODEL_TAG: name,
                    tracking.SHA_TAG: sha,
                    "mlflow.parentRunId": parent.info.run_id,
                    **scope,
                },
            )
            src = tmp_path / "src" / day / name
            _write(src / "model.pt", 5000)
            c.log_artifacts(run.info.run_id, str(src), "model_dir")
            c.log_text(run.info.run_id, "{}", "metrics.json")
            runs[(day, name)] = run.info.run_id
            _write(work / day / "models" / name / "model.pt")
            if name == "tarq":
                m = c.create_logged_model(exp, source_run_id=run.info.run_id)
                c.log_model_artifacts(m.model_id, str(src))
                c.finalize_logged_model(m.model_id, "READY")
                mv = c.create_model_version(
                    "tarq",
                    f"models:/{m.model_id}",
                    run_id=run.info.run_id,
                    tags={tracking.SHA_TAG: sha, **scope},
                    model_id=m.model_id,
                )
                versions[day], logged[day] = str(mv.version), m.model_id
        for sub in ("summary.json", "ids/ids.parquet", "samples/part-0.parquet", "gx/index.html"):
            _write(work / day / sub)
    c.set_registered_model_alias("tarq", "champion", versions[DAYS[2]])
    c.set_registered_model_alias("tarq", "challenger", versions[DAYS[3]])
    with open_db(db) as con:
        publish._ensure_tables(con)
        sqlfiles.run(
            con,
            "publish/register",
            {
                "version": 1,
                "table_name": "semantic_ids_v1",
                "model_name": "tarq",
                "model_version": versions[DAYS[1]],
                "run_date": DAYS[1],
                "model_uri": f"models:/{logged[DAYS[1]]}",
                "model_sha256": f"tarq-{DAYS[1]}",
                "ids_sha256": "ab",
                "n_items": 1,
                "m": 2,
                "k": 4,
                "dim": 8,
                "created_at": dt.datetime(2026, 10, 12),
            },
        )
        sqlfiles.run(con, "publish/set_status", {"version": 1, "status": "published", "note": ""})
        sqlfiles.run(
            con, "publish/set_served", {"version": 1, "switched_at": dt.datetime(2026, 10, 12)}
        )
    return {
        "db": db,
        "work": work,
        "uri": uri,
        "client": c,
        "runs": runs,
        "versions": versions,
        "logged": logged,
        "artifacts": tmp_path / "artifacts",
    }


def _model_dir_files(s: dict[str, Any], day: str, name: str) -> list[str]:
    repo_files = s["client"].list_artifacts(s["runs"][(day, name)], "model_dir")
    return [f.path for f in repo_files]


def test_dry_run_plans_the_unprotected_and_deletes_nothing(store: dict[str, Any]) -> None:
    from flows import retention

    before = _files(store["artifacts"]) + _files(store["work"])
    plan, result = retention.collect(store["db"], store["work"], keep_days=2, dry_run=True)
    assert result["dry_run"] and plan.cutoff == DAYS[4]
    assert _files(store["artifacts"]) + _files(store["work"]) == before
    assert [v.version for v in store["client"].search_model_versions("name = 'tarq'")]
    gone = {(i.kind, i.run_date, i.what.split()[1]) for i in plan.delete if i.kind != "work"}
    # D0's TARQ (no alias, no publication, not a parent) and TT of D0..D3 (D4 is TT's parent)
    assert gone == {
        ("run-artifacts", DAYS[0], "tarq"),
        ("model-version", DAYS[0], "tarq"),
        ("logged-model", DAYS[0], "pyfunc"),
        *{("run-artifacts", d, "tt") for d in DAYS[:4]},
    }
    assert plan.protected == {
        f"{DAYS[1]}/tarq": "model of publication v1 (served)",
        f"{DAYS[2]}/tarq": f"registered v{store['versions'][DAYS[2]]}, alias champion",
        f"{DAYS[3]}/tarq": f"registered v{store['versions'][DAYS[3]]}, alias challenger",
    }
    assert plan.nbytes > 0 and plan.bytes_before > plan.nbytes


def test_gc_never_deletes_the_champion_challenger_served_or_parents(
    store: dict[str, Any],
) -> None:
    from flows import retention, tracking

    c = store["client"]
    plan, result = retention.collect(store["db"], store["work"], keep_days=1)
    assert plan.cutoff == DAYS[5] and result["bytes_freed"] == plan.nbytes > 0
    # kept: the served (D1), champion (D2), challenger (D3) TARQ and both D4 parents, whole
    for day, name in [(DAYS[1], "tarq"), (DAYS[2], "tarq"), (DAYS[3], "tarq"), (DAYS[4], "tt")]:
        assert _model_dir_files(store, day, name) == ["model_dir/model.pt"], (day, name)
        assert not c.get_run(store["runs"][(day, name)]).data.tags.get(retention.GC_TAG)
    for day in DAYS[1:4]:
        mv = c.get_model_version("tarq", store["versions"][day])
        assert mv.source == f"models:/{store['logged'][day]}"
        assert c.get_logged_model(store["logged"][day]).status == "READY"
        assert _files(store["artifacts"] / "models" / store["logged"][day])
    assert _model_dir_files(store, DAYS[4], "tarq") == ["model_dir/model.pt"]
    # deleted: D0's TARQ (model_dir, version, pyfunc files) and TT of D0..D3
    for day, name in [(DAYS[0], "tarq"), *((d, "tt") for d in DAYS[:4])]:
        assert _model_dir_files(store, day, name) == [], (day, name)
        run = c.get_run(store["runs"][(day, name)])
        assert "retention" in run.data.tags[retention.GC_TAG]
        assert [a.path for a in c.list_artifacts(run.info.run_id)] == ["metrics.json"]
    live = {str(v.version) for v in c.search_model_versions("name = 'tarq'")}
    assert store["versions"][DAYS[0]] not in live and store["versions"][DAYS[2]] in live
    assert _files(store["artifacts"] / "models" / store["logged"][DAYS[0]]) == []
    # work folders: D0 whole; protected dates keep summary, ids and the protected model
    work = store["work"]
    assert not (work / DAYS[0]).exists()
    assert _files(work / DAYS[1]) == ["ids/ids.parquet", "models/tarq/model.pt", "summary.json"]
    assert _files(work / DAYS[3]) == ["ids/ids.parquet", "models/tarq/model.pt", "summary.json"]
    parents = ["models/tarq/model.pt", "models/tt/model.pt"]
    assert _files(work / DAYS[4]) == ["ids/ids.parquet", *parents, "summary.json"]
    assert (work / DAYS[5] / "samples").exists()  # the running date
    # a deleted run is never a parent again, and a second gc has nothing left to do
    exp = c.get_experiment_by_name(tracking.DEFAULT_EXPERIMENT).experiment_id
    wh = c.get_run(store["runs"][(DAYS[0], "tt")]).data.tags[tracking.WAREHOUSE_TAG]
    found = tracking.find_parent_run("tt", DAYS[4], exp, False, wh)
    assert found is None  # D0..D3's TT lost their model_dir
    again, _ = retention.collect(store["db"], store["work"], keep_days=1)
    assert again.delete == []


def test_tarq_gc_command_line(store: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    from flows.cli import main
    from tarq.store.locking import exclusive_lock, warehouse_lock_path

    args = ["gc", "--db", str(store["db"]), "--work-dir", str(store["work"])]
    args += ["--tracking-uri", store["uri"]]
    before = _files(store["artifacts"]) + _files(store["work"])
    assert main([*args, "--keep-days", "2", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"keep the 2 run dates {DAYS[4]}..{DAYS[5]}" in out and "dry run: nothing deleted" in out
    assert f"keep   {DAYS[2]}/tarq: registered v" in out
    assert main([*args, "--keep-days", "0"]) == 2
    assert "keep_days must be >= 1" in capsys.readouterr().err
    with exclusive_lock(warehouse_lock_path(store["db"]), info={"run_date": DAYS[5]}):
        assert main([*args, "--keep-days", "1"]) == 4
    assert "nothing deleted" in capsys.readouterr().err
    assert _files(store["artifacts"]) + _files(store["work"]) == before
    assert main([*args, "--keep-days", "1"]) == 0
    assert "MB freed" in capsys.readouterr().out
    assert not (store["work"] / DAYS[0]).exists()


def test_cold_tried_finds_the_newest_finished_cold_run_of_a_model(store: dict[str, Any]) -> None:
    """What the lineage's periodic retrain counts from after a rejected full retrain."""
    from flows import tracking

    c = store["client"]
    for day, name in [(DAYS[1], "tarq"), (DAYS[3], "tarq"), (DAYS[2], "tt"), (DAYS[5], "tarq")]:
        c.set_tag(store["runs"][(day, name)], "lineage.mode", "cold")
    exp = c.get_experiment_by_name(tracking.DEFAULT_EXPERIMENT).experiment_id
    wh = c.get_run(store["runs"][(DAYS[0], "tt")]).data.tags[tracking.WAREHOUSE_TAG]
    after = DAYS[1]  # the lineage's own cold run: not "tried" again
    assert tracking.cold_tried("tarq", after, "2026-12-01", exp, wh) == DAYS[3]  # D5 runs still
    assert tracking.cold_tried("tarq", after, DAYS[3], exp, wh) is None
    assert tracking.cold_tried("tt", DAYS[0], "2026-12-01", exp, wh) == DAYS[2]
    other = "00000000-0000-0000-0000-000000000000"
    assert tracking.cold_tried("tarq", after, "2026-12-01", exp, other) is None
