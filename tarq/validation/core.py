"""``tarq validate``: check the logs with Great Expectations, quarantine bad rows.

A run on run date D checks day D − 1 (the test day) and, with ``window_days = N``, each of
the N days before it whose rows changed since it was last validated (``validated_days``
records each (table, day)'s row count and row-id checksum and the verdict; a day never
validated, or whose latest verdict failed, counts as changed):

1. schema: the raw tables' columns and types against ``sql/schema/create_tables.sql``
   (table-level; a drifted table's other checks are skipped);
2. row-level checks of those days' impressions and behaviours and of the item catalog (GX
   verdict + SQL flags on the same temp-table frame), a chunk of whole days at a time
   (``ValidationBounds.max_chunk_rows``) so that memory is bounded by a chunk, not the window;
   flagged rows are copied into ``quarantine_<table>`` — raw rows are never modified or
   deleted;
3. table-level checks of each of those days, day over day against its trailing days:
   volume, CTR, quarantined share, stub-item share, and the cross-log clock check (clicks
   whose item is already in the user's behaviours just before the impression); the test
   day must not be empty.

Row-level failures do not fail the run (their rows are excluded from samples); any
table-level failure does. An operator can accept a failed day (:func:`accept_day`, ``tarq
validate --accept-day``): its table-level checks are then not judged until its rows change,
and every report lists the accepted days of its window with who accepted them and why. Each
run leaves a row in ``validation_runs``, one per (table, day) in ``validated_days``, and Data
Docs pages (one validation result per chunk of rows).

Steps 2 and 3 run as jobs of a :class:`tarq.runtime.parallel.Mapper` (:mod:`tarq.validation.jobs`):
this module plans them, merges their results, quarantines and records the run.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

from tarq.dates import resolve_run_date
from tarq.runtime.parallel import Mapper, group_days, serial_map
from tarq.runtime.telemetry import disable_telemetry
from tarq.store.sqlfiles import run
from tarq.store.warehouse import RAW_TABLES, ensure_schema, new_id, open_db, table_columns
from tarq.validation.bounds import ValidationBounds
from tarq.validation.checks import (
    CATALOG_KEYS,
    LOG_TABLES,
    RowCheck,
    day_expectations,
    row_checks,
    schema_expectations,
)
from tarq.validation.jobs import (
    DayJob,
    DayStats,
    RowChunkResult,
    RowJob,
    check_row_chunk,
    day_stats,
)
from tarq.validation.report import CheckResult, ValidationReport
from tarq.validation.suites import ExpectationOutcome, GxRunner

#: The temp table collecting the flagged rows of every chunk (the quarantine's source).
FLAGGED = {t: f"validation_{t}_flagged" for t in RAW_TABLES}


def validate(
    db_path: Path,
    run_date: str | dt.date,
    docs_dir: Path | None = None,
    run_id: str | None = None,
    bounds: ValidationBounds | None = None,
    window_days: int = 0,
    mapper: Mapper | None = None,
) -> ValidationReport:
    """Validate the logs that run date ``run_date`` tests on (D − 1) and trains on.

    The run is planned with a connection to the warehouse (the schema checks, the chunks),
    which is then closed; the row-level checks of each chunk (whole days of a log table, or a
    catalog table) and the aggregates of each group of checked days are jobs
    (:mod:`tarq.validation.jobs`) that ``mapper`` runs, each opening the warehouse read-only
    and validating its rows with GX in a context of its own. This process then quarantines
    the flagged rows the jobs return (one transaction), judges the days, writes the Data Docs
    from its file context and records the run. The report and the quarantine do not depend on
    the mapper. A failing row job leaves nothing written (no quarantine rows, no run); a
    failing day job leaves the run's quarantine committed but no run recorded (a rerun
    validates the same days and quarantines nothing twice).

    Args:
        db_path: the DuckDB warehouse; it must exist.
        run_date: ``YYYY-MM-DD``, a date, ``"today"`` or ``"latest"`` (the day after the last
            day holding impressions).
        docs_dir: the file-based GX context and its Data Docs; default ``<db dir>/gx``.
        run_id: id of this run in ``validation_runs`` and the quarantine tables (default: a
            new ``validation-…`` id); a repeated id replaces its ``validation_runs`` row.
        bounds: thresholds and domains of the checks (default :class:`ValidationBounds`).
        window_days: the training window: the days D − 1 − window_days .. D − 2 are
            validated too, those whose rows changed since their latest validation.
        mapper: runs the jobs (:class:`tarq.runtime.parallel.Mapper`; default
            :func:`tarq.runtime.parallel.serial_map`, one after the other in this process). A mapper
            that runs them in other processes needs the warehouse file (and this package)
            there; this process holds no connection to it while they run.

    Returns:
        The report; ``report.success`` is False when a table-level check failed.

    Raises:
        FileNotFoundError: the warehouse does not exist.
        ValueError: a malformed run date, ``"latest"`` on a warehouse without impressions, or a
            negative ``window_days``.
    """
    disable_telemetry()
    if window_days < 0:
        raise ValueError(f"window_days must be >= 0, got {window_days}")
    bounds = bounds or ValidationBounds()
    db_path = Path(db_path)
    if not db_path.is_file():
        raise FileNotFoundError(f"warehouse {db_path} does not exist")
    docs_dir = Path(docs_dir) if docs_dir is not None else db_path.parent / "gx"
    started = _utcnow()
    with open_db(db_path) as con:
        day_after = resolve_run_date(run_date, con)
        run(con, "validation/create_tables")
        day = day_after - dt.timedelta(days=1)
        status = [
            _DayStatus(*r)
            for r in run(
                con,
                "validation/day_fingerprints",
                {"first_day": day - dt.timedelta(days=window_days), "last_day": day},
            ).fetchall()
        ]
        days = sorted({day, *(s.day for s in status if s.changed and s.day < day)})
        job = _Run(
            db_path=db_path,
            bounds=bounds,
            run_id=run_id or new_id("validation"),
            run_date=day_after,
            day=day,
            days=days,
            # One "now" for SQL and GX alike, so both judge "in the future" identically.
            now=_utcnow(),
            started=started,
            accepted={s.day: s for s in status if s.accepted_by is not None},
            mapper=mapper or serial_map,
        )
        job.gx = GxRunner(docs_dir, job.run_id, started)
        plan = job.plan(con)
    # No connection is held from here on but while quarantining and recording the run.
    return job.execute(plan)


def accept_day(
    db_path: Path, day: str | dt.date, reason: str, accepted_by: str | None = None
) -> dict[str, Any]:
    """Record an operator's acceptance of a day that failed its table-level checks.

    The day's current rows (count and row-id checksum of impressions and behaviours) get a
    passing record in ``validated_days`` with who, when and why; raw rows are not changed.
    Later runs then leave the day alone (its table-level checks are not judged again) until
    its rows change, when it is validated afresh like any changed day. Only a day whose latest
    validation failed on exactly its current rows can be accepted: new rows must be validated
    (and their bad rows quarantined) first.

    Args:
        db_path: the DuckDB warehouse.
        day: ``YYYY-MM-DD`` or a date: the day whose failed verdict is accepted.
        reason: why the failure is acceptable (required; shown in every later report).
        accepted_by: who accepts (default: the login name of this process).

    Returns:
        The recorded acceptance: day, accepted_by, accepted_at, reason, failed_run_id.

    Raises:
        FileNotFoundError: the warehouse does not exist.
        ValueError: an empty reason, a malformed day, a day without rows, never validated, whose
            rows changed since its last validation, or whose latest verdict is not a failure.
    """
    db_path = Path(db_path)
    if not db_path.is_file():
        raise FileNotFoundError(f"warehouse {db_path} does not exist")
    reason = (reason or "").strip()
    if not reason:
        raise ValueError("accepting a day needs a reason (--reason TEXT)")
    if isinstance(day, str):
        try:
            day = dt.date.fromisoformat(day)
        except ValueError:
            raise ValueError(f"day {day!r} is not YYYY-MM-DD") from None
    who = accepted_by or _login()
    with open_db(db_path) as con:
        run(con, "validation/create_tables")
        rows = run(con, "validation/day_fingerprints", {"first_day": day, "last_day": day})
        found = [_DayStatus(*r) for r in rows.fetchall()]
        if not found:
            raise ValueError(f"{day} holds no impressions or behaviours: nothing to accept")
        (st,) = found
        if st.last_run_id is None:
            raise ValueError(f"{day} was never validated: validate it first")
        if st.rows_changed:
            raise ValueError(
                f"the rows of {day} changed since its last validation (run {st.last_run_id}): "
                "validate them first; only a verdict on the current rows can be accepted"
            )
        if not st.changed:
            how = f"already accepted ({st.text()})" if st.accepted_by else "passed"
            raise ValueError(
                f"{day} {how} in its latest validation (run {st.last_run_id}): nothing to accept"
            )
        now = _utcnow()
        _record_days(
            con,
            _day_rows(con, [day]),
            failed_days=[],
            run_id=st.last_run_id,
            now=now,
            accepted_by=who,
            reason=reason,
        )
    return {
        "day": day.isoformat(),
        "accepted_by": who,
        "accepted_at": now.isoformat(),
        "reason": reason,
        "failed_run_id": st.last_run_id,
    }


def _day_rows(con: duckdb.DuckDBPyConnection, days: list[dt.date]) -> list[tuple[Any, ...]]:
    """(table, day, n_rows, checksum) of impressions and behaviours of each of ``days`` now."""
    return run(con, "validation/day_rows", {"days": days}).fetchall()


def _record_days(
    con: duckdb.DuckDBPyConnection,
    rows: list[tuple[Any, ...]],
    *,
    failed_days: list[dt.date],
    run_id: str,
    now: dt.datetime,
    accepted_by: str | None = None,
    reason: str | None = None,
) -> None:
    """Add a ``validated_days`` record of each (table, day, n_rows, checksum) of ``rows``."""
    tables, days, n_rows, checksums = [list(c) for c in zip(*rows, strict=True)] or [[], [], [], []]
    run(
        con,
        "validation/record_days",
        {
            "tables": tables,
            "days": days,
            "n_rows": n_rows,
            "checksums": checksums,
            "failed_days": failed_days,
            "run_id": run_id,
            "now": now,
            "accepted_by": accepted_by,
            "reason": reason,
        },
    )


def _login() -> str:
    """The login name of this process (``unknown`` where the system has none)."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


class _RowTally:
    """One table's row-check results summed over its chunks."""

    def __init__(self, checks: list[RowCheck]) -> None:
        self.n_rows = 0
        self.n_sql = dict.fromkeys((c.name for c in checks), 0)
        self.n_gx: dict[str, int | None] = dict.fromkeys((c.name for c in checks), 0)
        self.gx_failed: set[str] = set()
        self.shown_ids: dict[str, list[Any]] = {c.name: [] for c in checks}
        self.disagreements: list[str] = []

    def add(self, check: RowCheck, n: int, out: Any, sql_ids: list[Any]) -> None:
        """A chunk's SQL count ``n``, GX outcome ``out`` (None: none) and flagged ids."""
        self.n_sql[check.name] += n
        if out is None or out.unexpected_count is None or self.n_gx[check.name] is None:
            self.n_gx[check.name] = None
        else:
            self.n_gx[check.name] = (self.n_gx[check.name] or 0) + out.unexpected_count
        if out is not None and not out.success:
            self.gx_failed.add(check.name)
        # The lowest flagged ids over all chunks (each chunk gives its lowest), whatever the
        # chunks' order: a day split by user lists what the whole day would.
        shown = self.shown_ids[check.name]
        shown.extend(sql_ids[:100])
        shown.sort()
        del shown[100:]

    def result(self, table: str, check: RowCheck, n_chunks: int) -> CheckResult:
        n, ids = self.n_sql[check.name], self.shown_ids[check.name]
        shown = ", ".join(str(i) for i in ids[:10]) + (" …" if n > 10 else "")
        return CheckResult(
            name=check.name,
            table=table,
            level="row",
            status="failed" if n or check.name in self.gx_failed else "passed",
            observed={
                "rows_checked": self.n_rows,
                "flagged": n,
                "gx_unexpected": self.n_gx[check.name],
                "row_ids": ids[:100],
                "quarantined_new": 0,
                "chunks": n_chunks,
            },
            threshold="no rows",
            message=(
                f"{n:,} of {self.n_rows:,} rows: {check.reason}"
                + (f" (row_id {shown})" if ids else "")
                if n
                else "no bad rows"
            ),
        )


@dataclass
class _Plan:
    """What a run does after planning: the mapped jobs, and what the plan found."""

    drifted: set[str]
    row_jobs: list[RowJob]
    #: None: the day checks are skipped (schema drift in a log table).
    day_jobs: list[DayJob] | None
    not_yet_due: tuple[Any, ...]
    #: (table, day, n_rows, checksum) of the checked days when planned: what the run records
    #: as validated (rows that arrive meanwhile leave their day changed for the next run).
    day_rows: list[tuple[Any, ...]]


@dataclass
class _Run:
    """State of one validation run (internal): the coordinator of its mapped jobs."""

    db_path: Path
    bounds: ValidationBounds
    run_id: str
    run_date: dt.date
    day: dt.date
    days: list[dt.date]
    now: dt.datetime
    started: dt.datetime
    accepted: dict[dt.date, _DayStatus]
    mapper: Mapper = serial_map
    gx: GxRunner | None = None

    def plan(self, con: duckdb.DuckDBPyConnection) -> _Plan:
        """The schema checks, and the jobs of the row-level and day-level checks."""
        self.checks: list[CheckResult] = []
        self.notes: list[str] = []
        self.quarantined = dict.fromkeys(RAW_TABLES, 0)
        self.flagged = dict.fromkeys(RAW_TABLES, 0)
        drifted = self._check_schema(con)
        per_day = {
            t: run(con, "validation/chunk_days", {"days": self.days}, raw=t).fetchall()
            for t in LOG_TABLES
            if t not in drifted
        }
        return _Plan(
            drifted=drifted,
            row_jobs=[
                job for t in RAW_TABLES if t not in drifted for job in self._row_jobs(t, per_day)
            ],
            day_jobs=None if drifted & set(LOG_TABLES) else self._day_jobs(per_day["impressions"]),
            not_yet_due=_one(
                run(con, "validation/not_yet_due", {"now": self.now, "last_day": self.day})
            ),
            day_rows=_day_rows(con, self.days),
        )

    def execute(self, plan: _Plan) -> ValidationReport:
        """Run the planned jobs (no connection held meanwhile), quarantine, record the run."""
        results = (
            self.mapper(check_row_chunk, plan.row_jobs, name="validate-rows")
            if plan.row_jobs
            else []
        )
        pending: list[tuple[str, RowCheck, int]] = []
        flagged_rows: dict[str, pa.Table] = {}
        for table in RAW_TABLES:
            if table in plan.drifted:
                self.notes.append(f"row-level checks of {table} skipped: schema drift")
                continue
            done = [(j, r) for j, r in zip(plan.row_jobs, results, strict=True) if j.table == table]
            if done:
                pending.extend(self._merge_rows(table, done))
                flagged_rows[table] = pa.concat_tables([r.flagged for _, r in done])
        if pending:
            with open_db(self.db_path) as con:
                self._quarantine(con, pending, flagged_rows)
        if plan.day_jobs is None:
            self.notes.append("day checks skipped: schema drift in impressions or behaviors")
        else:
            self._check_days(self.mapper(day_stats, plan.day_jobs, name="validate-days"))
        n_imp, n_beh, latest = plan.not_yet_due
        if n_imp or n_beh:
            self.notes.append(
                f"{n_imp:,} impressions and {n_beh:,} behaviours are dated after now (up to "
                f"{latest}): not yet due, in no sample; they are judged with their day"
            )
        if len(self.days) > 1:
            self.notes.append(
                f"validated {len(self.days)} days: the test day {self.day} and "
                f"{len(self.days) - 1} day(s) of the training window new or changed since "
                "their last validation: " + ", ".join(str(d) for d in self.days[:-1])
            )

        failed = [c for c in self.checks if c.level == "table" and c.status == "failed"]
        if any(c.day is None for c in failed):
            failed_days = list(self.days)
        else:
            failed_days = sorted({c.day for c in failed})
        report = ValidationReport(
            success=not failed,
            run_id=self.run_id,
            run_date=self.run_date,
            check_day=self.day,
            days=list(self.days),
            checks=self.checks,
            quarantined=self.quarantined,
            flagged=self.flagged,
            docs_path=self._gx.build_docs(),
            started_at=self.started,
            finished_at=_utcnow(),
            notes=self.notes,
            accepted=[a.to_dict() for _, a in sorted(self.accepted.items())],
        )
        with open_db(self.db_path) as con:
            run(
                con,
                "validation/record_run",
                {
                    "run_id": report.run_id,
                    "run_date": report.run_date,
                    "check_day": report.check_day,
                    "started_at": report.started_at,
                    "finished_at": report.finished_at,
                    "success": report.success,
                    "summary": json.dumps(report.to_dict(), default=str),
                },
            )
            _record_days(
                con,
                # An accepted day's record stays its latest: the acceptance holds.
                [r for r in plan.day_rows if r[1] not in self.accepted],
                failed_days=failed_days,
                run_id=self.run_id,
                now=report.finished_at,
            )
        return report

    @property
    def _gx(self) -> GxRunner:
        if self.gx is None:
            raise RuntimeError("GX runner not set")
        return self.gx

    # -- schema ---------------------------------------------------------------------------

    def _check_schema(self, con: duckdb.DuckDBPyConnection) -> set[str]:
        """Contract vs. actual columns; returns the tables with schema drift."""
        # A cursor of its own: registering a frame is refused while the connection holds an
        # unfinished result (DuckDB 2.0), and the caller's last fetch may have left one.
        cur = con.cursor()
        try:
            cur.register("validation_contract", _contract_frame())
            frame = run(cur, "validation/schema_columns").df()
        finally:
            cur.close()
        outcomes = _by_check(
            self._gx.validate_frame("schema", frame, schema_expectations(RAW_TABLES, self.bounds))
        )
        allowed = {"ok", "side_feature"} | (
            {"unregistered"} if self.bounds.allow_unregistered_columns else set()
        )
        drifted: set[str] = set()
        for table in RAW_TABLES:
            rows = frame[frame["table_name"] == table]
            bad = rows[~rows["status"].isin(allowed)]
            problems = [_drift_text(r) for r in bad.itertuples()]
            outs = outcomes.get(f"schema:{table}", [])
            gx_ok = bool(outs) and all(o.success for o in outs)
            errors = [o.error for o in outs if o.error]
            ok = gx_ok and not problems
            if not ok:
                drifted.add(table)
            message = (
                "columns and types match the contract"
                if ok
                else f"schema drift in {table}: " + "; ".join(problems or errors or ["GX failed"])
            )
            self.checks.append(
                CheckResult(
                    name="schema",
                    table=table,
                    level="table",
                    status="passed" if ok else "failed",
                    observed={
                        "columns": len(rows),
                        "side_features": int((rows["status"] == "side_feature").sum()),
                        "drift": problems,
                    },
                    threshold="contract columns and types of sql/schema/create_tables.sql; "
                    "extra columns declared in feature_spec",
                    message=message,
                )
            )
        return drifted

    # -- row-level checks -----------------------------------------------------------------

    def _chunks(self, table: str, per_day: dict[str, list[tuple[Any, int]]]) -> list[_Chunk]:
        """The chunks of ``table``'s rows under check: whole days, consecutive, each at most
        ``bounds.max_chunk_rows`` rows; a day holding more is split into as many parts by user
        hash (every check compares rows of one user, or reads the whole table); the last chunk
        also holds the rows that belong to no day. The catalog is one chunk. ``per_day``: the
        rows of each checked day of each log table (``chunk_days.sql``)."""
        if table not in LOG_TABLES:
            return [_Chunk([], False, "all")]
        limit = self.bounds.max_chunk_rows
        dated = [(day, rows) for day, rows in per_day[table] if day is not None]
        n_rows = dict(dated)
        chunks: list[_Chunk] = []
        for days in group_days(dated, limit):
            if limit and n_rows[days[0]] > limit:  # a day alone, too big for one chunk
                parts = math.ceil(n_rows[days[0]] / limit)
                chunks += [_Chunk(days, False, part=k, parts=parts) for k in range(parts)]
            else:
                chunks.append(_Chunk(days, False))
        # The rows of no day go with the last chunk (in one of their own after a split day).
        if chunks and chunks[-1].parts == 1:
            chunks[-1].undated = True
        else:
            chunks.append(_Chunk([], True))
        return chunks

    def _row_jobs(self, table: str, per_day: dict[str, list[tuple[Any, int]]]) -> list[RowJob]:
        """One :class:`RowJob` per chunk of ``table`` (:meth:`_chunks`); none without checks.

        Chunks bound memory: a job holds one chunk in pandas for GX.
        """
        if not row_checks(table, self.bounds):
            return []
        chunks = self._chunks(table, per_day)
        n = len(chunks)
        return [
            RowJob(
                db_path=str(self.db_path),
                table=table,
                days=tuple(c.days),
                undated=c.undated,
                part=c.part,
                parts=c.parts,
                batch_label=None if n == 1 else c.label(n),
                now=self.now,
                run_id=self.run_id,
                run_time=self.started,
                bounds=self.bounds,
            )
            for c in chunks
        ]

    def _merge_rows(
        self, table: str, done: list[tuple[RowJob, RowChunkResult]]
    ) -> list[tuple[str, RowCheck, int]]:
        """Sum the row-level checks of ``table`` over its chunks' results; returns (table,
        check, SQL count) to quarantine.

        Each chunk's GX result is stored in the run's GX context (Data Docs), and GX and SQL
        are compared chunk by chunk.
        """
        checks = row_checks(table, self.bounds)
        specs = [c.expectation for c in checks]
        id_col = "row_id" if table in LOG_TABLES else CATALOG_KEYS[table]
        tally = _RowTally(checks)
        for job, res in done:
            self._gx.attach(
                f"{table}_rows",
                specs,
                res.gx_result,
                index_column=id_col,
                complete=res.complete,
                batch_label=job.batch_label,
            )
            self.flagged[table] += res.n_flagged
            tally.n_rows += res.n_rows
            outcomes = _by_check(res.outcomes)
            for check in checks:
                n = res.counts[check.name]
                (out,) = outcomes.get(check.name) or [None]
                sql_ids = res.sql_ids.get(check.name, [])
                problem = _disagreement(out, n, sql_ids)
                if problem:
                    where = f" ({job.batch_label})" if job.batch_label else ""
                    tally.disagreements.append(f"{check.name}{where}: {problem}")
                tally.add(check, n, out, sql_ids)
        n_chunks = len(done)
        if n_chunks > 1:
            limit = self.bounds.max_chunk_rows
            split = sum(1 for job, _ in done if job.parts > 1 and job.part == 0)
            how = (
                f"whole days of at most {limit:,} rows; {split} day(s) holding more split by "
                "user into parts of about that size"
                if split
                else f"whole days of at most {limit:,} rows"
                if limit
                else "one day each"
            )
            self.notes.append(f"row-level checks of {table} ran in {n_chunks} chunks ({how})")
        pending: list[tuple[str, RowCheck, int]] = []
        for check in checks:
            n = tally.n_sql[check.name]
            if n:
                pending.append((table, check, n))
            self.checks.append(tally.result(table, check, n_chunks))
        if tally.disagreements:
            self.checks.append(
                CheckResult(
                    name="gx_sql_agreement",
                    table=table,
                    level="table",
                    status="failed",
                    observed={"disagreements": tally.disagreements},
                    threshold="GX and the SQL quarantine flags mark the same rows",
                    message="GX and the quarantine disagree: " + "; ".join(tally.disagreements),
                )
            )
        return pending

    def _quarantine(
        self,
        con: duckdb.DuckDBPyConnection,
        pending: list[tuple[str, RowCheck, int]],
        flagged_rows: dict[str, pa.Table],
    ) -> None:
        """Copy the flagged rows into quarantine_<table>, all in one transaction.

        ``flagged_rows``: per table, the flagged rows of all its chunks (ids and flags), which
        become the temp table ``FLAGGED[table]`` the quarantine statements read.
        """
        for table in sorted({t for t, _, _ in pending}):
            source = f"{FLAGGED[table]}_source"
            con.register(source, flagged_rows[table])
            try:
                run(con, "validation/load_flagged", flagged=FLAGGED[table], source=source)
            finally:
                con.unregister(source)
        results = {(c.table, c.name): c for c in self.checks if c.level == "row"}
        con.execute("BEGIN TRANSACTION")
        try:
            for table, check, _ in pending:
                params = {
                    "run_id": self.run_id,
                    "check_name": check.name,
                    "reason": check.reason,
                    "source": f"validation of {self.day}"
                    + (f" and {len(self.days) - 1} window day(s)" if len(self.days) > 1 else ""),
                }
                idents = {"qtable": f"quarantine_{table}", "raw": table}
                if table in LOG_TABLES:
                    cur = run(
                        con,
                        "validation/quarantine_log_rows",
                        params,
                        frame=FLAGGED[table],
                        flag=check.flag,
                        **idents,
                    )
                else:
                    cur = run(
                        con,
                        "validation/quarantine_catalog_rows",
                        params,
                        frame=FLAGGED[table],
                        flag=check.flag,
                        key=CATALOG_KEYS[table],
                        **idents,
                    )
                inserted = int(_one(cur)[0])
                self.quarantined[table] += inserted
                result = results[(table, check.name)]
                result.observed["quarantined_new"] = inserted
                result.message += f"; {inserted:,} newly quarantined"
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    # -- table-level checks of the day ----------------------------------------------------

    def _day_jobs(self, per_day: list[tuple[Any, int]]) -> list[DayJob]:
        """The checked days in consecutive groups of at most ``bounds.max_chunk_rows``
        impressions (a day with more is a group of its own), one :class:`DayJob` each."""
        rows = {d: n for d, n in per_day if d is not None}
        groups = group_days(
            [(day, rows.get(day, 0)) for day in self.days], self.bounds.max_chunk_rows
        )
        return [DayJob(str(self.db_path), tuple(g), self.day, self.bounds) for g in groups]

    def _check_days(self, parts: list[list[DayStats]]) -> None:
        """The table-level checks of each checked day (``parts``: the day jobs' aggregates),
        in one GX run over one row a day."""
        stats = [s for part in parts for s in part]
        frame = pd.DataFrame([s.frame_row() for s in stats])
        outcomes = _by_check(
            self._gx.validate_frame(
                "days", frame, day_expectations(self.bounds), index_column="day", complete=True
            )
        )
        for s in stats:
            self._add_day_results(s, outcomes)

    def _add_day_results(self, s: DayStats, outcomes: dict[str, list[ExpectationOutcome]]) -> None:
        """One CheckResult per day-level check of day ``s.day`` from its GX ``outcomes``."""
        add = partial(self._add_day_check, s.day, outcomes)
        self._add_volume_and_ctr(s, add)
        self._add_shares(s, add)

    def _add_day_check(
        self,
        day: dt.date,
        outcomes: dict[str, list[ExpectationOutcome]],
        name: str,
        table: str,
        judged: bool,
        observed: dict[str, Any],
        threshold: str,
        fail_msg: str,
        ok_msg: str,
        skip_msg: str = "",
    ) -> None:
        """Record one day-level check: skipped (not ``judged``, or the day was accepted by an
        operator), passed (GX did not flag the day) or failed (with ``fail_msg``)."""
        key = day.isoformat()
        outs = outcomes.get(f"{table}:{name}", [])
        errors = [o.error for o in outs if o.error]
        gx_ok = (
            bool(outs)
            and not errors
            and all(
                key not in (o.unexpected_ids or []) and (o.unexpected_ids is not None or o.success)
                for o in outs
            )
        )
        acc = self.accepted.get(day)
        if acc is not None:
            status = "skipped"
            message = f"not judged: {day} was accepted by an operator ({acc.text()})"
        elif not judged:
            status, message = "skipped", skip_msg
        elif gx_ok:
            status, message = "passed", ok_msg
        else:
            status = "failed"
            message = fail_msg + (f" (GX error: {'; '.join(errors)})" if errors else "")
        self.checks.append(
            CheckResult(name, table, "table", status, observed, threshold, message, day=day)
        )

    def _too_few(self, s: DayStats) -> str:
        b, day = self.bounds, s.day
        span = f"{day - dt.timedelta(days=b.trailing_days)}..{day - dt.timedelta(days=1)}"
        return (
            f"only {s.n_trailing} trailing day(s) with impressions in {span}; "
            f"{b.min_trailing_days} needed to judge"
        )

    def _add_volume_and_ctr(self, s: DayStats, add: Callable[..., None]) -> None:
        """The test day's emptiness, and the day's volume and CTR against its trailing days."""
        b, day, too_few = self.bounds, s.day, self._too_few(s)
        if s.test_day:
            add(
                "day_not_empty",
                "impressions",
                True,
                {"impressions": s.impressions},
                "at least 1 impression on the test day",
                f"no impressions on {day}",
                f"{s.impressions:,} impressions on {day}",
            )
        lo, hi = b.volume_ratio
        if not s.impressions:
            vol_skip = "day is empty"
        elif s.n_trailing < b.min_trailing_days:
            vol_skip = too_few
        else:
            vol_skip = (
                f"the trailing days are not a steady feed ({s.spread:.1f}x from their smallest "
                f"to their largest day; allowed {b.volume_max_trailing_spread:g}x): not judged"
            )
        add(
            "volume",
            "impressions",
            not math.isnan(s.volume_ratio),
            {
                "impressions": s.usable,
                "trailing_median": s.med_volume,
                "ratio": s.volume_ratio,
                "previous_day": s.prev_usable,
                "ratio_to_previous_day": _ratio(s.usable, s.prev_usable),
                "trailing_days": s.n_trailing,
                "trailing_spread": s.spread,
            },
            f"{lo:g}x–{hi:g}x the median of the trailing {b.trailing_days} days",
            f"{s.usable:,} impressions on {day} is {s.volume_ratio:.2f}x the trailing median "
            f"{s.med_volume:,.0f} (allowed {lo:g}x–{hi:g}x; previous day {s.prev_usable:,})",
            f"{s.usable:,} impressions is {s.volume_ratio:.2f}x the trailing median "
            f"{s.med_volume:,.0f}",
            vol_skip,
        )
        lo, hi = b.ctr_ratio
        if not s.impressions:
            ctr_skip = "day is empty"
        elif math.isnan(s.ctr):
            ctr_skip = f"no exposed impressions on {day}"
        elif s.n_trailing_ctr < b.min_trailing_days:
            ctr_skip = too_few
        else:
            ctr_skip = f"trailing median CTR is {s.med_ctr:g}; a ratio cannot be formed"
        inside = math.isnan(s.ctr_ratio) or lo <= s.ctr_ratio <= hi
        add(
            "ctr",
            "impressions",
            not math.isnan(s.ctr_ratio),
            {
                "ctr": s.ctr,
                "clicks": s.clicks,
                "exposed": s.exposed,
                "trailing_median": s.med_ctr,
                "ratio": s.ctr_ratio,
                "z": s.ctr_z,
                "previous_day_ctr": _ratio(s.prev_clicks, s.prev_exposed),
            },
            f"{lo:g}x–{hi:g}x the median CTR of the trailing {b.trailing_days} days, or inside "
            f"the noise (|z| < {b.ctr_min_z:g})",
            f"CTR {s.ctr:.4f} ({s.clicks:,} clicks / {s.exposed:,} exposed) on {day} is "
            f"{s.ctr_ratio:.2f}x the trailing median {s.med_ctr:.4f} (allowed {lo:g}x–{hi:g}x; "
            f"z = {s.ctr_z:.1f})",
            f"CTR {s.ctr:.4f} is {s.ctr_ratio:.2f}x the trailing median {s.med_ctr:.4f}"
            + ("" if inside else f", inside the noise (z = {s.ctr_z:.1f})"),
            ctr_skip,
        )

    def _add_shares(self, s: DayStats, add: Callable[..., None]) -> None:
        """The shares of the day's rows quarantined, showing stub items, or clicked right
        after a behaviour on the same item (clock skew / leakage)."""
        b, day = self.bounds, s.day
        add(
            "quarantined_share",
            "impressions",
            bool(s.q_n),
            {"quarantined": s.q_bad, "impressions": s.q_n, "share": s.q_share},
            f"at most {b.max_quarantined_share:.1%} of the day's impressions quarantined "
            "(exact duplicates aside)",
            f"{s.q_bad:,} of {s.q_n:,} impressions on {day} are quarantined "
            f"({s.q_share:.1%}; allowed at most {b.max_quarantined_share:.1%})",
            f"{s.q_bad:,} of {s.q_n:,} impressions quarantined ({s.q_share:.2%})",
            "day is empty",
        )
        add(
            "stub_share",
            "impressions",
            not math.isnan(s.stub_increase),
            {
                "stub_impressions": s.stubs,
                "share": s.stub_share,
                "trailing_median": s.med_stub_share,
                "increase": s.stub_increase,
            },
            f"at most {b.max_stub_share_increase:.0%} above the trailing median share of "
            "impressions of catalog stubs",
            f"{s.stubs:,} of {s.usable:,} impressions on {day} ({s.stub_share:.1%}) show items "
            f"the catalog only has as stubs, {s.stub_increase:+.1%} over the trailing median "
            f"{s.med_stub_share:.1%} (allowed +{b.max_stub_share_increase:.0%})",
            f"{s.stub_share:.1%} of impressions show stub items" + _median_text(s.med_stub_share),
            "day is empty" if not s.usable else self._too_few(s),
        )
        add(
            "click_history",
            "behaviors",
            not math.isnan(s.hist_share),
            {
                "clicks": s.hist_clicks,
                "clicks_after_history": s.clicks_after_history,
                "share": s.hist_share,
                "nonclicks_after_history": s.nonclicks_after_history,
                "trailing_median": s.med_hist_share,
                "increase": s.hist_increase,
            },
            f"at most {b.max_click_history_share:.0%} of the clicks, and at most "
            f"+{b.max_click_history_increase:.0%} over the trailing median, after a behaviour "
            f"on the same item in the {b.history_minutes} min before the impression",
            f"{s.clicks_after_history:,} of {s.hist_clicks:,} clicks on {day} "
            f"({s.hist_share:.1%}) come after a behaviour on the same item in the "
            f"{b.history_minutes} min before (trailing median {s.med_hist_share:.1%}; allowed "
            f"{b.max_click_history_share:.0%} and +{b.max_click_history_increase:.0%}): the "
            "behaviour log's clock runs ahead of the impressions' and each click's follow-up "
            "lands in its own history (leakage)",
            f"{s.hist_share:.1%} of clicks after a behaviour on the same item"
            + _median_text(s.med_hist_share),
            f"no clicks on {day}",
        )


@dataclass
class _DayStatus:
    """A day's row of ``sql/validation/day_fingerprints.sql`` (internal)."""

    day: dt.date
    rows_changed: bool
    changed: bool
    accepted_by: str | None
    accepted_at: dt.datetime | None
    reason: str | None
    last_run_id: str | None

    def text(self) -> str:
        """``alice on 2026-10-06 09:12: <reason>; failed in run <id>``."""
        at = self.accepted_at.strftime("%Y-%m-%d %H:%M") if self.accepted_at else "?"
        return f"{self.accepted_by} on {at} UTC: {self.reason}; failed in run {self.last_run_id}"

    def to_dict(self) -> dict[str, Any]:
        """The acceptance as the report lists it."""
        return {
            "day": self.day.isoformat(),
            "accepted_by": self.accepted_by,
            "accepted_at": self.accepted_at.isoformat() if self.accepted_at else None,
            "reason": self.reason,
            "failed_run_id": self.last_run_id,
        }


@dataclass
class _Chunk:
    """Whole days of a log table checked together (``undated``: with the rows of no day), or
    part ``part`` of ``parts`` of one day's rows, split by user hash."""

    days: list[dt.date]
    undated: bool
    name: str = ""
    part: int = 0
    parts: int = 1

    def label(self, n_chunks: int) -> str:
        """A name for reports and the GX run of this chunk, e.g. ``2026-10-01_2026-10-07`` or
        ``2026-10-05.p2of3``."""
        if self.name:
            return self.name
        if not self.days:
            return "undated"
        first, last = self.days[0], self.days[-1]
        span = str(first) if first == last else f"{first}_{last}"
        if self.parts > 1:
            span += f".p{self.part + 1}of{self.parts}"
        return span + ("+undated" if self.undated and n_chunks > 1 else "")


def _median_text(median: float) -> str:
    return "" if math.isnan(median) else f" (trailing median {median:.1%})"


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


# -- helpers ------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _contract_columns() -> tuple[tuple[str, str, str], ...]:
    """(table, column, type) of the raw tables as the schema DDL creates them."""
    con = duckdb.connect()
    try:
        ensure_schema(con)
        return tuple(
            (t, c, dtype) for t in RAW_TABLES for c, dtype in table_columns(con, t).items()
        )
    finally:
        con.close()


def _contract_frame() -> pd.DataFrame:
    return pd.DataFrame(_contract_columns(), columns=["table_name", "column_name", "data_type"])


def _utcnow() -> dt.datetime:
    """Naive UTC, the convention of every timestamp in the warehouse (importers, generator)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _one(cur: duckdb.DuckDBPyConnection) -> tuple[Any, ...]:
    """The single row of a result, read to the end (DuckDB 2.0 keeps a half-read result
    open on the connection and refuses some later calls)."""
    rows = cur.fetchall()
    if len(rows) != 1:
        raise RuntimeError(f"expected one row, got {len(rows)}")
    return rows[0]


def _drift_text(row: Any) -> str:
    col = f"{row.table_name}.{row.column_name}"
    if row.status == "missing":
        return f"{col} is missing (contract: {row.expected_type})"
    if row.status == "retyped":
        return f"{col} is {row.actual_type}, contract says {row.expected_type}"
    return f"{col} ({row.actual_type}) is not in the contract nor declared in feature_spec"


def _by_check(outcomes: list[ExpectationOutcome]) -> dict[str, list[ExpectationOutcome]]:
    grouped: dict[str, list[ExpectationOutcome]] = {}
    for o in outcomes:
        grouped.setdefault(o.check, []).append(o)
    return grouped


def _disagreement(out: ExpectationOutcome | None, n_sql: int, sql_ids: list[Any]) -> str:
    """Why GX's verdict on a row-level check differs from the SQL flag ('' when they agree)."""
    if out is None:
        return "no GX result"
    if out.error:
        return f"GX error: {out.error}"
    if out.success != (n_sql == 0):
        return f"GX success={out.success} but SQL flagged {n_sql} rows"
    if out.unexpected_count is not None and out.unexpected_count != n_sql:
        return f"GX flagged {out.unexpected_count} rows, SQL {n_sql}"
    if out.unexpected_ids is not None and n_sql and sorted(out.unexpected_ids) != sql_ids:
        only_gx = sorted(set(out.unexpected_ids) - set(sql_ids))[:10]
        only_sql = sorted(set(sql_ids) - set(out.unexpected_ids))[:10]
        return f"row ids differ (only GX: {only_gx}, only SQL: {only_sql})"
    return ""
