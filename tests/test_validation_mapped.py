"""``validate(..., mapper=...)``: the row-level and day-level jobs run in other processes give
the serial run's report and quarantine; a failing job raises and records nothing.

The mapper here is a ``spawn`` process pool (no DuckDB or GX state is forked), standing in for
the Prefect tasks on Dask workers that ``flows/`` maps the jobs to. Real DuckDB files and real
GX contexts throughout.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tarq.data.demo import generate
from tarq.runtime.parallel import serial_map
from tarq.store.warehouse import RAW_TABLES
from tarq.validation import ValidationBounds, ValidationReport, validate
from tarq.validation.jobs import DayJob, RowJob

DAY0 = dt.date(2026, 10, 1)  # the demo logs: 2026-10-01 .. 2026-10-08
RUN_DATE = dt.date(2026, 10, 9)
N_DAYS = 8
WINDOW = 19  # the daily job's: every day of the logs is validated
# One chunk of rows, and one day job, per day: many jobs for two workers.
BOUNDS = ValidationBounds(max_chunk_rows=0)
RUN_ID = "validation-mapped"
# The rows injected below, by table and check.
EXPECTED = {
    "impressions": {
        "clicked_implies_exposed": 1,
        "position_non_negative": 1,
        "duplicate_impression": 2,
        "request_id_reused": 1,
        "not_null_ts": 1,
    },
    "behaviors": {"action_in_set": 1, "not_null_user_id": 1},
    "items": {"price_valid": 1},
    "users": {},
}


@pytest.fixture(scope="module")
def dirty_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny demo logs with bad rows on several days, an undated one and a bad item."""
    path = tmp_path_factory.mktemp("mapped") / "dirty.duckdb"
    generate(path, preset="tiny", seed=11, start_date=DAY0)
    with duckdb.connect(str(path)) as con:
        ((u, i, no_item),) = con.execute(
            "SELECT min(user_id), min(item_id), max(item_id) + 1 FROM users, items"
        ).fetchall()
        ok = {"user_id": u, "item_id": i, "clicked": False, "exposed": True, "position": 1}
        impressions = [
            (0, {"clicked": True, "exposed": False}),
            (2, {"position": -1}),
            (None, {}),  # ts NULL: belongs to no day, checked with the last chunk
            (1, {"request_id": "twice"}),  # reused on a later day, in another chunk
            (5, {"request_id": "twice"}),
            *[(4, {"request_id": "dup"})] * 3,  # the first copy is kept
        ]
        for k, (offset, change) in enumerate(impressions):
            ts = None if offset is None else _at(offset, 7)
            _insert(con, "impressions", {**ok, "ts": ts, "request_id": f"m{k}", **change})
        beh = {"user_id": u, "item_id": i, "action": "pv"}
        _insert(con, "behaviors", {**beh, "ts": _at(3, 9), "action": "click"})
        _insert(con, "behaviors", {**beh, "ts": _at(6, 9), "user_id": None})
        _insert(con, "items", {"item_id": no_item, "price": float("nan"), "load_id": "fx"})
    return path


def _at(offset: int, hour: int) -> dt.datetime:
    return dt.datetime.combine(DAY0 + dt.timedelta(days=offset), dt.time(hour))


def _insert(con: duckdb.DuckDBPyConnection, table: str, row: dict[str, Any]) -> None:
    marks = ", ".join(f"${c}" for c in row)
    con.execute(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({marks})", row)


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    with ProcessPoolExecutor(
        max_workers=2, mp_context=multiprocessing.get_context("spawn")
    ) as executor:
        yield executor


def _in_worker(
    fn: Callable[[Any], Any], fail: Callable[[Any], bool] | None, job: Any
) -> tuple[int, Any]:
    if fail is not None and fail(job):
        raise RuntimeError(f"worker lost: {job!r}")
    return os.getpid(), fn(job)


class PoolMapper:
    """A :class:`tarq.runtime.parallel.Mapper` on a process pool; ``fail`` picks jobs that raise."""

    def __init__(
        self, pool: ProcessPoolExecutor, fail: Callable[[Any], bool] | None = None
    ) -> None:
        self.pool, self.fail = pool, fail
        self.calls: list[tuple[str, int]] = []
        self.pids: set[int] = set()

    def __call__(self, fn: Callable[[Any], Any], jobs: Sequence[Any], *, name: str) -> list[Any]:
        self.calls.append((name, len(jobs)))
        futures = [self.pool.submit(_in_worker, fn, self.fail, job) for job in jobs]
        # Every job ends before a failure is raised, as a task runner's mapped tasks do: none
        # still reads the warehouse when the caller goes on.
        wait(futures)
        out = [f.result() for f in futures]
        self.pids.update(pid for pid, _ in out)
        return [result for _, result in out]


def _behaviors_chunk(job: Any) -> bool:
    return (
        isinstance(job, RowJob) and job.table == "behaviors" and DAY0 + dt.timedelta(3) in job.days
    )


def _a_day_job(job: Any) -> bool:
    return isinstance(job, DayJob) and DAY0 + dt.timedelta(4) in job.days


def _validate(db: Path, docs_dir: Path, mapper: Any = None) -> ValidationReport:
    return validate(
        db,
        RUN_DATE,
        docs_dir=docs_dir,
        run_id=RUN_ID,
        bounds=BOUNDS,
        window_days=WINDOW,
        mapper=mapper,
    )


def _comparable(report: ValidationReport) -> dict[str, Any]:
    """The report without its timings and Data Docs path."""
    out = report.to_dict()
    for key in ("started_at", "finished_at", "docs_path"):
        del out[key]
    return out


def _rows(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """The quarantine tables and what the run recorded, without their timestamps."""
    with duckdb.connect(str(db), read_only=True) as con:
        out = {
            t: con.execute(
                f"SELECT * EXCLUDE (quarantined_at) FROM quarantine_{t} ORDER BY ALL"
            ).fetchall()
            for t in RAW_TABLES
        }
        out["validated_days"] = con.execute(
            "SELECT * EXCLUDE (validated_at) FROM validated_days ORDER BY ALL"
        ).fetchall()
        out["validation_runs"] = con.execute(
            "SELECT run_id, run_date, check_day, success FROM validation_runs"
        ).fetchall()
    return out


def _results_listed(docs_dir: Path, table: str) -> set[str]:
    """The run names of ``table``'s row-check results in the Data Docs site."""
    site = docs_dir / "uncommitted" / "data_docs" / "local_site" / "validations"
    return {p.name for p in (site / f"tarq_{table}_rows").iterdir()}


def test_jobs_in_other_processes_give_the_serial_report_and_quarantine(
    dirty_db: Path, pool: ProcessPoolExecutor, tmp_path: Path
) -> None:
    dbs = {k: tmp_path / f"{k}.duckdb" for k in ("serial", "parallel")}
    for db in dbs.values():
        shutil.copy(dirty_db, db)
    serial = _validate(dbs["serial"], tmp_path / "gx_serial")
    mapper = PoolMapper(pool)
    parallel = _validate(dbs["parallel"], tmp_path / "gx_parallel", mapper)

    # Every job ran in a worker: one per day of each log table plus the catalog, one per day.
    n_row_jobs = 2 * N_DAYS + 1
    assert mapper.calls == [("validate-rows", n_row_jobs), ("validate-days", N_DAYS)]
    assert mapper.pids and os.getpid() not in mapper.pids

    assert _comparable(parallel) == _comparable(serial)
    assert _rows(dbs["parallel"]) == _rows(dbs["serial"])

    # The scenario is the one meant: bad rows of several chunks, all found and quarantined.
    rows = _rows(dbs["parallel"])
    for table, checks in EXPECTED.items():
        assert parallel.quarantined[table] == sum(checks.values()), table
        assert len(rows[table]) == sum(checks.values())
        for check, n in checks.items():
            result = parallel.check(table, check)
            assert result.observed["flagged"] == n == result.observed["gx_unexpected"]
            assert result.observed["chunks"] == (1 if table == "items" else N_DAYS)
    assert {r[4] for r in rows["items"]} == {"price_valid"}  # check_name
    assert not [c for c in parallel.checks if c.name == "gx_sql_agreement"]
    assert parallel.success, parallel.to_text()
    assert any(f"impressions ran in {N_DAYS} chunks" in n for n in parallel.notes)
    assert len(parallel.days) == N_DAYS and rows["validation_runs"] == [
        (RUN_ID, RUN_DATE, RUN_DATE - dt.timedelta(days=1), True)
    ]
    assert len(rows["validated_days"]) == 2 * N_DAYS

    # The Data Docs of the parallel run list every chunk's result, as the serial run's do.
    assert parallel.docs_path is not None and parallel.docs_path.is_file()
    for table in ("impressions", "behaviors"):
        listed = _results_listed(tmp_path / "gx_parallel", table)
        assert listed == _results_listed(tmp_path / "gx_serial", table)
        assert f"{RUN_ID}.{DAY0}" in listed
        assert f"{RUN_ID}.{DAY0 + dt.timedelta(N_DAYS - 1)}+undated" in listed
    assert RUN_ID in parallel.docs_path.read_text()


@pytest.mark.parametrize("failing", ["row job", "day job"])
def test_a_failing_job_raises_and_records_no_run(
    failing: str, dirty_db: Path, pool: ProcessPoolExecutor, tmp_path: Path
) -> None:
    db = tmp_path / "w.duckdb"
    shutil.copy(dirty_db, db)
    fail = _behaviors_chunk if failing == "row job" else _a_day_job
    with pytest.raises(RuntimeError, match="worker lost"):
        _validate(db, tmp_path / "gx", PoolMapper(pool, fail))
    rows = _rows(db)  # opens: the coordinator left no connection behind
    assert rows["validation_runs"] == [] and rows["validated_days"] == []
    n_quarantined = {t: len(rows[t]) for t in RAW_TABLES}
    if failing == "row job":
        assert n_quarantined == dict.fromkeys(RAW_TABLES, 0)
        # Nothing half done: a rerun validates and quarantines everything.
        report = _validate(db, tmp_path / "gx")
        assert report.quarantined == {t: sum(c.values()) for t, c in EXPECTED.items()}
    else:
        # The quarantine is committed before the day jobs judge the days it changed.
        assert n_quarantined == {t: sum(c.values()) for t, c in EXPECTED.items()}


def test_rows_that_arrive_while_the_jobs_run_are_left_to_the_next_run(
    dirty_db: Path, tmp_path: Path
) -> None:
    """The coordinator holds no connection while jobs run, so a writer may append meanwhile:
    the run records the rows it planned on, and the next run validates the day again."""
    db = tmp_path / "w.duckdb"
    shutil.copy(dirty_db, db)
    late_day = DAY0 + dt.timedelta(days=2)

    def late_rows(fn: Callable[[Any], Any], jobs: Sequence[Any], *, name: str) -> list[Any]:
        if name == "validate-days":  # after the row jobs and the quarantine
            with duckdb.connect(str(db)) as con:
                ((u, i),) = con.execute(
                    "SELECT min(user_id), min(item_id) FROM users, items"
                ).fetchall()
                row = {"user_id": u, "item_id": i, "ts": _at(2, 8), "position": -5}
                _insert(con, "impressions", {**row, "clicked": False, "exposed": True})
        return serial_map(fn, jobs, name=name)

    first = _validate(db, tmp_path / "gx", late_rows)
    assert first.success and first.quarantined["impressions"] == 5 + 1  # the late row: not yet
    again = validate(db, RUN_DATE, docs_dir=tmp_path / "gx", bounds=BOUNDS, window_days=WINDOW)
    assert again.days == [late_day, RUN_DATE - dt.timedelta(days=1)]
    assert again.quarantined == {"items": 0, "users": 0, "impressions": 1, "behaviors": 0}
    assert again.check("impressions", "position_non_negative").observed["quarantined_new"] == 1


def test_jobs_on_threads_of_this_process_give_the_serial_report(
    dirty_db: Path, tmp_path: Path
) -> None:
    """A Dask worker runs tasks on threads: two at once here, beside the coordinator."""
    dbs = {k: tmp_path / f"{k}.duckdb" for k in ("serial", "threads")}
    for db in dbs.values():
        shutil.copy(dirty_db, db)
    serial = _validate(dbs["serial"], tmp_path / "gx_serial")
    with ThreadPoolExecutor(max_workers=2) as threads:

        def on_threads(fn: Callable[[Any], Any], jobs: Sequence[Any], *, name: str) -> list[Any]:
            return list(threads.map(fn, jobs))

        threaded = _validate(dbs["threads"], tmp_path / "gx_threads", on_threads)
    assert _comparable(threaded) == _comparable(serial)
    assert _rows(dbs["threads"]) == _rows(dbs["serial"])
