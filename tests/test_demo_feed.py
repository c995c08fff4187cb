"""The demo feed (``flows/demo_feed.py``, deployment ``demo-feed``) under the session's Prefect
test harness: it appends the demo logs' missing days, appends nothing when they are there, and
the daily job's own defaults (``run_date: today``) then find their test day.

The tiny warehouse of tests/conftest.py spans 2026-10-01 .. 2026-10-08; tests copy it.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tarq.store.warehouse import RAW_TABLES, open_db, table_fingerprint

REPO = Path(__file__).resolve().parents[1]


def _fingerprints(db: Path) -> dict[str, tuple[int, str]]:
    with open_db(db, read_only=True) as con:
        return {t: table_fingerprint(con, t) for t in RAW_TABLES}


def _feed(db: Path, **params: Any) -> Any:
    from flows.demo_feed import demo_feed

    return demo_feed(db=str(db), **params, return_state=True)


def test_the_demo_feed_deployment_runs_before_tarq_daily_with_valid_defaults() -> None:
    """``prefect deploy --all`` deploys both; the feed's schedule comes first each day and
    its parameters are the flow's."""
    from flows.demo_feed import demo_feed

    spec = yaml.safe_load((REPO / "prefect.yaml").read_text(encoding="utf-8"))
    deps = {d["name"]: d for d in spec["deployments"]}
    feed, daily = deps["demo-feed"], deps["tarq-daily"]
    assert feed["entrypoint"] == "flows/demo_feed.py:demo_feed"
    assert feed["work_pool"] == daily["work_pool"] and feed["concurrency_limit"] == 1
    demo_feed.validate_parameters(feed["parameters"])
    assert feed["parameters"]["db"] == daily["parameters"]["params"]["db"]
    assert feed["parameters"]["through"] == "yesterday"
    assert daily["parameters"]["params"]["run_date"] == "today"

    def minute_of_day(dep: dict[str, Any]) -> int:
        (sched,) = dep["schedules"]
        assert sched["timezone"] == "UTC" and sched["active"]
        minute, hour, *rest = sched["cron"].split()
        assert rest == ["*", "*", "*"]
        return int(hour) * 60 + int(minute)

    assert minute_of_day(feed) < minute_of_day(daily)


def test_demo_feed_appends_the_missing_days_then_nothing(
    prefect_api: str, tiny_db: Path, tmp_path: Path
) -> None:
    db = tmp_path / "w.duckdb"
    shutil.copy(tiny_db, db)
    state = _feed(db, through="2026-10-10")
    assert state.is_completed(), state.message
    res = state.result()
    assert res["appended"] == ["2026-10-09", "2026-10-10"] and res["through"] == "2026-10-10"
    assert all(n > 2_000 for n in res["impressions"].values())
    with open_db(db, read_only=True) as con:
        loads = [
            r[0]
            for r in con.execute(
                "SELECT load_id FROM loads WHERE source_kind = 'demo' ORDER BY load_id"
            ).fetchall()
        ]
        last = con.execute("SELECT max(ts)::DATE FROM impressions").fetchone()[0]
    base = "demo-tiny-seed7-20261001"
    assert loads == [base, f"{base}-20261009", f"{base}-20261010"]
    assert last == dt.date(2026, 10, 10)
    # Triggered again (by hand, or a schedule after a manual run): nothing to do.
    before = _fingerprints(db)
    again = _feed(db, through="2026-10-10")
    assert again.is_completed() and again.result()["appended"] == []
    assert _fingerprints(db) == before


def test_demo_feed_leaves_a_warehouse_without_demo_logs_alone_and_refuses_a_held_day(
    prefect_api: str, tiny_db: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "none.duckdb"
    state = _feed(missing)
    assert state.is_completed() and "appends nothing" in state.message
    assert not missing.exists()

    db = tmp_path / "w.duckdb"
    shutil.copy(tiny_db, db)
    with open_db(db) as con:  # 2026-10-09 already holds a row of another load
        con.execute(
            "INSERT INTO behaviors (user_id, ts, item_id, category_id, brand_id, action, "
            "load_id) SELECT user_id, ts + INTERVAL 1 DAY, item_id, category_id, brand_id, "
            "action, 'other' FROM behaviors ORDER BY ts DESC LIMIT 1"
        )
    before = _fingerprints(db)
    state = _feed(db, through="2026-10-09")
    assert state.is_failed() and state.name == "Refused"
    assert "2026-10-09 already exists" in state.message
    assert _fingerprints(db) == before


@pytest.mark.slow
def test_tarq_daily_with_its_deployment_defaults_runs_on_the_fed_demo_logs(
    prefect_api: str, tmp_path: Path
) -> None:
    """The living demo, one morning of it: logs that ended the day before yesterday, the
    feed appends yesterday, and ``tarq-daily`` with ``run_date: today`` (the deployment's
    default) validates and tests on that day and completes."""
    from flows.tarq_daily import DailyParams, tarq_daily
    from tarq.data.demo import generate
    from tests.test_flow import tiny_params

    today = dt.datetime.now(dt.UTC).date()
    yesterday = today - dt.timedelta(days=1)
    db = tmp_path / "w.duckdb"
    generate(db, preset="tiny", seed=7, end_date=yesterday - dt.timedelta(days=1))
    fed = _feed(db)  # the deployment's defaults: through yesterday
    assert fed.is_completed() and fed.result()["appended"] == [str(yesterday)], fed.message

    store = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    params = tiny_params(db, tmp_path / "work", store, run_date="today", preset=None)
    state = tarq_daily(DailyParams(**params), return_state=True)
    if dt.datetime.now(dt.UTC).date() != today:
        pytest.skip("the UTC date changed during the test")
    assert state.is_completed(), (state.name, state.message)
    res = state.result()
    assert (res["run_date"], res["test_day"]) == (str(today), str(yesterday))
    summary = json.loads((tmp_path / "work" / str(today) / "summary.json").read_text())
    assert summary["status"] == "published"
