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
"""

from __future__ import annotations

import datetime as dt
import json
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from tarq.dates import resolve_run_date
from tarq.sqlfiles import run
from tarq.telemetry import disable_telemetry
from tarq.validation.bounds import ValidationBounds
from tarq.validation.checks import (
    CATALOG_KEYS,
    LOG_TABLES,
    RowCheck,
    day_expectations,
    row_checks,
    schema_expectations,
)
from tarq.validation.report import CheckResult, ValidationReport
from tarq.validation.suites import ExpectationOutcome, GxRunner
from tarq.warehouse import RAW_TABLES, ensure_schema, new_id, open_db, table_columns

#: The temp table each raw table's rows are checked in (see sql/validation/*_frame.sql),
#: one chunk at a time.
FRAMES = {t: f"validation_{t}" for t in RAW_TABLES}
#: The temp table collecting the flagged rows of every chunk (the quarantine's source).
FLAGGED = {t: f"validation_{t}_flagged" for t in RAW_TABLES}


def validate(
    db_path: Path,
    run_date: str | dt.date,
    docs_dir: Path | None = None,
    run_id: str | None = None,
    bounds: ValidationBounds | None = None,
    window_days: int = 0,
) -> ValidationReport:
    """Validate the logs that run date ``run_date`` tests on (D − 1) and trains on.

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
            con=con,
            bounds=bounds,
            run_id=run_id or new_id("validation"),
            run_date=day_after,
            day=day,
            days=days,
            # One "now" for SQL and GX alike, so both judge "in the future" identically.
            now=_utcnow(),
            started=started,
            accepted={s.day: s for s in status if s.accepted_by is not None},
        )
        job.gx = GxRunner(docs_dir, job.run_id, started)
        return job.execute()


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
        run(
            con,
            "validation/record_days",
            {
                "days": [day],
                "failed_days": [],
                "run_id": st.last_run_id,
                "now": now,
                "accepted_by": who,
                "reason": reason,
            },
        )
    return {
        "day": day.isoformat(),
        "accepted_by": who,
        "accepted_at": now.isoformat(),
        "reason": reason,
        "failed_run_id": st.last_run_id,
    }


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
        shown = self.shown_ids[check.name]
        shown.extend(sql_ids[: 100 - len(shown)])

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
class _Run:
    """State of one validation run (internal)."""

    con: duckdb.DuckDBPyConnection
    bounds: ValidationBounds
    run_id: str
    run_date: dt.date
    day: dt.date
    days: list[dt.date]
    now: dt.datetime
    started: dt.datetime
    accepted: dict[dt.date, _DayStatus]
    gx: GxRunner | None = None

    def execute(self) -> ValidationReport:
        self.checks: list[CheckResult] = []
        self.notes: list[str] = []
        self.quarantined = dict.fromkeys(RAW_TABLES, 0)
        self.flagged = dict.fromkeys(RAW_TABLES, 0)

        drifted = self._check_schema()
        pending: list[tuple[str, RowCheck, int]] = []
        for table in RAW_TABLES:
            if table in drifted:
                self.notes.append(f"row-level checks of {table} skipped: schema drift")
                continue
            pending.extend(self._check_rows(table))
        self._quarantine(pending)
        if drifted & set(LOG_TABLES):
            self.notes.append("day checks skipped: schema drift in impressions or behaviors")
        else:
            self._check_days()
        n_imp, n_beh, latest = _one(
            run(self.con, "validation/not_yet_due", {"now": self.now, "last_day": self.day})
        )
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
        run(
            self.con,
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
        run(
            self.con,
            "validation/record_days",
            {
                # An accepted day's record stays its latest: the acceptance holds.
                "days": [d for d in self.days if d not in self.accepted],
                "failed_days": failed_days,
                "run_id": self.run_id,
                "now": report.finished_at,
                "accepted_by": None,
                "reason": None,
            },
        )
        return report

    @property
    def _gx(self) -> GxRunner:
        if self.gx is None:
            raise RuntimeError("GX runner not set")
        return self.gx

    # -- schema ---------------------------------------------------------------------------

    def _check_schema(self) -> set[str]:
        """Contract vs. actual columns; returns the tables with schema drift."""
        # A cursor of its own: registering a frame is refused while the connection holds an
        # unfinished result (DuckDB 2.0), and the caller's last fetch may have left one.
        cur = self.con.cursor()
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

    def _chunks(self, table: str) -> list[_Chunk]:
        """The chunks of ``table``'s rows under check: whole days, consecutive, each at most
        ``bounds.max_chunk_rows`` rows unless one day holds more; the last one also holds the
        rows that belong to no day. The catalog is one chunk."""
        if table not in LOG_TABLES:
            return [_Chunk([], False, "all")]
        limit = self.bounds.max_chunk_rows
        per_day = run(self.con, "validation/chunk_days", {"days": self.days}, raw=table).fetchall()
        chunks: list[_Chunk] = []
        days: list[dt.date] = []
        n = 0
        for day, rows in per_day:
            if day is None:
                continue
            if days and n + rows > limit:
                chunks.append(_Chunk(days, False))
                days, n = [], 0
            days.append(day)
            n += rows
        chunks.append(_Chunk(days, True))
        return chunks

    def _check_rows(self, table: str) -> list[tuple[str, RowCheck, int]]:
        """Run the row-level checks of ``table``; returns (table, check, SQL count) to quarantine.

        The rows are checked chunk by chunk (:meth:`_chunks`), so that GX holds one chunk in
        pandas at a time; the flagged rows of every chunk are kept in a temp table
        (``FLAGGED``) that the quarantine is filled from. Each check's result sums its chunks;
        GX and SQL are compared chunk by chunk.
        """
        checks = row_checks(table, self.bounds)
        if not checks:
            return []
        chunks = self._chunks(table)
        tally = _RowTally(checks)
        for k, chunk in enumerate(chunks):
            self._check_chunk(table, checks, chunk, k, len(chunks), tally)
        if len(chunks) > 1:
            self.notes.append(
                f"row-level checks of {table} ran in {len(chunks)} chunks of whole days (at "
                f"most {self.bounds.max_chunk_rows:,} rows each unless one day holds more)"
            )
        pending: list[tuple[str, RowCheck, int]] = []
        for check in checks:
            n = tally.n_sql[check.name]
            if n:
                pending.append((table, check, n))
            self.checks.append(tally.result(table, check, len(chunks)))
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

    def _check_chunk(
        self,
        table: str,
        checks: list[RowCheck],
        chunk: _Chunk,
        k: int,
        n_chunks: int,
        tally: _RowTally,
    ) -> None:
        """Flag one chunk's rows in SQL, validate the same rows with GX, compare, tally."""
        frame = FRAMES[table]
        id_col = "row_id" if table in LOG_TABLES else CATALOG_KEYS[table]
        run(
            self.con,
            f"validation/{table}_frame",
            {
                "days": chunk.days,
                "undated": chunk.undated,
                "now": self.now,
                "actions": list(self.bounds.actions),
            },
        )
        if k == 0:
            run(self.con, "validation/new_flagged", frame=frame, flagged=FLAGGED[table])
        run(self.con, "validation/keep_flagged", frame=frame, flagged=FLAGGED[table])
        cur = run(self.con, "validation/flag_counts", frame=frame)
        names = [d[0] for d in cur.description]
        counts = dict(zip(names, _one(cur), strict=True))
        n_flagged = int(counts["n_flagged"] or 0)
        self.flagged[table] += n_flagged
        tally.n_rows += int(counts["n_rows"])
        complete = n_flagged <= self.bounds.complete_result_limit
        label = chunk.label(n_chunks)
        df = run(self.con, "validation/frame_rows", frame=frame).df()
        outcomes = _by_check(
            self._gx.validate_frame(
                f"{table}_rows",
                df,
                [c.expectation for c in checks],
                parameters={"now": self.now},
                index_column=id_col,
                complete=complete,
                batch_label=None if n_chunks == 1 else label,
            )
        )
        del df
        for check in checks:
            n = int(counts[check.flag] or 0)
            (out,) = outcomes.get(check.name) or [None]
            sql_ids: list[Any] = []
            if id_col and n:
                cur = run(
                    self.con,
                    "validation/flagged_ids",
                    {"limit": n if complete else 100},
                    frame=frame,
                    flag=check.flag,
                    id=id_col,
                )
                sql_ids = [r[0] for r in cur.fetchall()]
            problem = _disagreement(out, n, sql_ids)
            if problem:
                where = f" ({label})" if n_chunks > 1 else ""
                tally.disagreements.append(f"{check.name}{where}: {problem}")
            tally.add(check, n, out, sql_ids)

    def _quarantine(self, pending: list[tuple[str, RowCheck, int]]) -> None:
        """Copy the flagged rows into quarantine_<table>, all in one transaction."""
        if not pending:
            return
        results = {(c.table, c.name): c for c in self.checks if c.level == "row"}
        self.con.execute("BEGIN TRANSACTION")
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
                        self.con,
                        "validation/quarantine_log_rows",
                        params,
                        frame=FLAGGED[table],
                        flag=check.flag,
                        **idents,
                    )
                else:
                    cur = run(
                        self.con,
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
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise

    # -- table-level checks of the day ----------------------------------------------------

    def _check_days(self) -> None:
        """The table-level checks of each checked day, in one GX run over one row a day."""
        b = self.bounds
        first = self.days[0] - dt.timedelta(days=b.trailing_days)
        counts = run(
            self.con,
            "validation/day_counts",
            {"first_day": first, "last_day": self.day, "history_minutes": b.history_minutes},
        ).df()
        counts = counts.fillna(0)
        counts["day"] = counts["day"].dt.date
        counts = counts.set_index("day")
        shares = {
            d: (int(n), int(q))
            for d, n, q in run(
                self.con, "validation/quarantined_share", {"days": self.days}
            ).fetchall()
        }
        stats = [self._day_stats(d, counts, shares.get(d, (0, 0))) for d in self.days]
        frame = pd.DataFrame([s.frame_row() for s in stats])
        outcomes = _by_check(
            self._gx.validate_frame(
                "days", frame, day_expectations(b), index_column="day", complete=True
            )
        )
        for s in stats:
            self._add_day_results(s, outcomes)

    def _day_stats(
        self, day: dt.date, counts: pd.DataFrame, quarantined: tuple[int, int]
    ) -> _DayStats:
        b = self.bounds
        trailing = counts[
            (counts.index < day)
            & (counts.index >= day - dt.timedelta(days=b.trailing_days))
            & (counts["usable"] > 0)
        ]
        r = counts.loc[day] if day in counts.index else None
        get = (lambda c: int(r[c])) if r is not None else (lambda c: 0)
        prev = (
            counts.loc[day - dt.timedelta(days=1)]
            if (day - dt.timedelta(days=1)) in counts.index
            else None
        )
        return _DayStats(
            day=day,
            test_day=day == self.day,
            impressions=get("impressions"),
            usable=get("usable"),
            exposed=get("exposed"),
            clicks=get("clicks"),
            stubs=get("stub_impressions"),
            clicks_after_history=get("clicks_after_history"),
            nonclicks_after_history=get("nonclicks_after_history"),
            ctr_moments=(float(r["ctr_cc"]), float(r["ctr_ce"]), float(r["ctr_ee"]))
            if r is not None
            else (0.0, 0.0, 0.0),
            prev_usable=int(prev["usable"]) if prev is not None else 0,
            prev_exposed=int(prev["exposed"]) if prev is not None else 0,
            prev_clicks=int(prev["clicks"]) if prev is not None else 0,
            trailing=trailing,
            q_n=quarantined[0],
            q_bad=quarantined[1],
            bounds=b,
        )

    def _add_day_results(self, s: _DayStats, outcomes: dict[str, list[ExpectationOutcome]]) -> None:
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

    def _too_few(self, s: _DayStats) -> str:
        b, day = self.bounds, s.day
        span = f"{day - dt.timedelta(days=b.trailing_days)}..{day - dt.timedelta(days=1)}"
        return (
            f"only {s.n_trailing} trailing day(s) with impressions in {span}; "
            f"{b.min_trailing_days} needed to judge"
        )

    def _add_volume_and_ctr(self, s: _DayStats, add: Callable[..., None]) -> None:
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

    def _add_shares(self, s: _DayStats, add: Callable[..., None]) -> None:
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
    """Whole days of a log table checked together (``undated``: with the rows of no day)."""

    days: list[dt.date]
    undated: bool
    name: str = ""

    def label(self, n_chunks: int) -> str:
        """A name for reports and the GX run of this chunk, e.g. ``2026-10-01_2026-10-07``."""
        if self.name:
            return self.name
        if not self.days:
            return "undated"
        first, last = self.days[0], self.days[-1]
        span = str(first) if first == last else f"{first}_{last}"
        return span + ("+undated" if self.undated and n_chunks > 1 else "")


@dataclass
class _DayStats:
    """The aggregates of one checked day and its trailing days (internal)."""

    day: dt.date
    test_day: bool
    impressions: int
    usable: int
    exposed: int
    clicks: int
    stubs: int
    clicks_after_history: int
    nonclicks_after_history: int
    ctr_moments: tuple[float, float, float]
    prev_usable: int
    prev_exposed: int
    prev_clicks: int
    trailing: pd.DataFrame
    q_n: int
    q_bad: int
    bounds: ValidationBounds

    def __post_init__(self) -> None:
        b, t = self.bounds, self.trailing
        self.n_trailing = len(t)
        enough = self.n_trailing >= b.min_trailing_days
        self.med_volume = float(statistics.median(t["usable"])) if len(t) else math.nan
        self.spread = float(t["usable"].max() / t["usable"].min()) if len(t) else math.nan
        self.volume_ratio = (
            self.usable / self.med_volume
            if self.impressions and enough and self.spread <= b.volume_max_trailing_spread
            else math.nan
        )
        self.ctr = self.clicks / self.exposed if self.exposed else math.nan
        t_ctr = (t["clicks"] / t["exposed"])[t["exposed"] > 0]
        self.n_trailing_ctr = len(t_ctr)
        self.med_ctr = float(statistics.median(t_ctr)) if len(t_ctr) else math.nan
        judge = (
            self.impressions
            and self.n_trailing_ctr >= b.min_trailing_days
            and self.med_ctr > 0
            and not math.isnan(self.ctr)
        )
        self.ctr_ratio = self.ctr / self.med_ctr if judge else math.nan
        # z of the day's clicks against the trailing median CTR, with the users as clusters:
        # one user's rows move together (MovieLens: a day can be a few users' ratings).
        cc, ce, ee = self.ctr_moments
        p = self.med_ctr
        var = cc - 2 * p * ce + p * p * ee if judge else math.nan
        self.ctr_z = (self.clicks - self.exposed * p) / math.sqrt(var) if var > 0 else math.nan
        self.q_share = self.q_bad / self.q_n if self.q_n else math.nan
        self.stub_share = self.stubs / self.usable if self.usable else math.nan
        t_stub = t["stub_impressions"] / t["usable"]
        self.med_stub_share = float(statistics.median(t_stub)) if len(t_stub) else math.nan
        self.stub_increase = (
            self.stub_share - self.med_stub_share if self.usable and enough else math.nan
        )
        self.hist_clicks = self.clicks
        self.hist_share = self.clicks_after_history / self.clicks if self.clicks else math.nan
        t_hist = (t["clicks_after_history"] / t["clicks"])[t["clicks"] > 0]
        self.med_hist_share = (
            float(statistics.median(t_hist)) if len(t_hist) >= b.min_trailing_days else math.nan
        )
        self.hist_increase = self.hist_share - self.med_hist_share if self.clicks else math.nan

    def frame_row(self) -> dict[str, Any]:
        """This day's row of the GX frame: NULL (NaN) where a check does not judge the day."""
        ctr_sig = (
            self.ctr_ratio
            if not math.isnan(self.ctr_z) and abs(self.ctr_z) >= self.bounds.ctr_min_z
            else math.nan
        )
        return {
            "day": self.day.isoformat(),
            "test_day_impressions": self.impressions if self.test_day else math.nan,
            "volume_ratio": self.volume_ratio,
            "ctr_ratio_significant": ctr_sig,
            "quarantined_share": self.q_share,
            "stub_share_increase": self.stub_increase,
            "click_history_share": self.hist_share,
            "click_history_increase": self.hist_increase,
        }


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
