"""The demo feed: flow ``demo-feed`` (deployment ``demo-feed/demo-feed``, ``prefect.yaml``).

It keeps the demo warehouse alive: each run appends the demo logs' next simulated days, one
load per day, through ``through`` (default yesterday, UTC), continuing the same world
(:func:`tarq.data.demo.append_days`; ``tarq demo-data --next-day --through DAY`` without
Prefect). Scheduled at 02:00 UTC, half an hour before ``tarq-daily`` (02:30, ``run_date:
today``), so every morning the daily job finds the day that just ended, validates and tests on
it, and continues yesterday's models on it. A feed that missed days catches up in order; a run
when the logs already reach ``through`` appends nothing.

Like every writer it holds the warehouse's run lock (waiting up to ``lock_wait_s`` for a daily
run to finish). A warehouse without demo logs (or no warehouse yet) is left alone: the run
completes with a warning. A day the warehouse already holds from another load is refused
(Failed, nothing written).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import Completed, Failed, State

from flows.tasks import daily_task
from tarq import defaults
from tarq.runtime.telemetry import disable_telemetry

disable_telemetry()


@daily_task("append-demo-days", retries=0)
def append_demo_days(db: Path, through: str) -> list[dict[str, Any]]:
    """:func:`tarq.data.demo.append_days` as a task: the appended days' load reports."""
    from tarq.data.demo import append_days

    return append_days(db, through)


def _artifact(db: Path, through: str, reports: list[dict[str, Any]], note: str) -> None:
    lines = [f"# demo-feed through {through}", "", note]
    if reports:
        lines += [
            "",
            "| day | impressions | behaviours | CTR (exposed) | items launched | load |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['first_day']} | {r['rows']['impressions']:,} | {r['rows']['behaviors']:,} | "
            f"{r['ctr']:.2%} | {r['items_launched']} | `{r['load_id']}` |"
            for r in reports
        ]
    create_markdown_artifact(
        key="demo-feed", markdown="\n".join(lines), description=f"demo logs of {db}"
    )


@flow(
    name="demo-feed",
    description="Append the demo logs' next simulated days through yesterday (UTC).",
    validate_parameters=True,
)
def demo_feed(
    db: str = defaults.DEFAULT_DB, through: str = "yesterday", lock_wait_s: float = 900.0
) -> dict[str, Any] | State:
    """Append the demo logs' days after their last one through ``through`` (``yesterday``,
    ``today`` or YYYY-MM-DD, UTC); returns the appended days, or a Failed state."""
    from tarq.data.demo import NoDemoLogs, parse_day
    from tarq.store.locking import LockBusyError, exclusive_lock, warehouse_lock_path
    from tarq.store.warehouse import WarehouseBusyError

    log = get_run_logger()
    path = Path(db).resolve()
    try:
        day = str(parse_day(through))
        with exclusive_lock(
            warehouse_lock_path(path), wait_s=lock_wait_s, info={"flow": "demo-feed", "day": day}
        ):
            reports = append_demo_days(path, day)
    except LockBusyError as exc:
        msg = f"warehouse {path} is busy: {exc}; nothing appended"
        log.warning(msg)
        return Failed(name="AlreadyRunning", message=msg)
    except WarehouseBusyError as exc:
        log.error(str(exc))
        return Failed(name="WarehouseBusy", message=str(exc))
    except NoDemoLogs as exc:
        msg = f"{exc}; the demo feed appends nothing"
        log.warning(msg)
        _artifact(path, day, [], msg)
        return Completed(message=msg, data={"db": str(path), "through": day, "appended": []})
    except ValueError as exc:  # a day the warehouse already holds, bad parameters
        log.error(str(exc))
        return Failed(name="Refused", message=str(exc))
    appended = [r["first_day"] for r in reports]
    note = (
        f"appended {', '.join(appended)} to `{path}`"
        if appended
        else f"the demo logs of `{path}` already reach {day}: nothing appended"
    )
    log.info(note)
    _artifact(path, day, reports, note)
    return {
        "db": str(path),
        "through": day,
        "appended": appended,
        "impressions": {r["first_day"]: r["rows"]["impressions"] for r in reports},
    }
