"""``tarq validate``: check the logs of one day with Great Expectations, quarantine bad rows.

A run on run date D checks day D − 1 (README "The command line"):

1. schema: the raw tables' columns and types against ``sql/schema/create_tables.sql``
   (table-level; a drifted table's other checks are skipped);
2. row-level checks of the day's impressions and behaviours and of the catalog tables (GX
   verdict + SQL flags on the same temp-table frame); flagged rows are copied into
   ``quarantine_<table>`` — raw rows are never modified or deleted;
3. table-level checks of the day: not empty, volume and CTR against the trailing days,
   quarantined share, timestamps inside the day.

Row-level failures do not fail the run (their rows are excluded from samples); any
table-level failure does. Each run leaves a row in ``validation_runs`` and a Data Docs page.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import statistics
from dataclasses import dataclass
from functools import lru_cache
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

#: The temp table each raw table's rows are checked in (see sql/validation/*_frame.sql).
FRAMES = {t: f"validation_{t}" for t in RAW_TABLES}


def validate(
    db_path: Path,
    run_date: str | dt.date,
    docs_dir: Path | None = None,
    run_id: str | None = None,
    bounds: ValidationBounds | None = None,
) -> ValidationReport:
    """Validate the logs that run date ``run_date`` trains on (the day D − 1).

    Args:
        db_path: the DuckDB warehouse; it must exist.
        run_date: ``YYYY-MM-DD``, a date, ``"today"`` or ``"latest"`` (the day after the last
            day holding impressions).
        docs_dir: the file-based GX context and its Data Docs; default ``<db dir>/gx``.
        run_id: id of this run in ``validation_runs`` and the quarantine tables (default: a
            new ``validation-…`` id); a repeated id replaces its ``validation_runs`` row.
        bounds: thresholds and domains of the checks (default :class:`ValidationBounds`).

    Returns:
        The report; ``report.success`` is False when a table-level check failed.

    Raises:
        FileNotFoundError: the warehouse does not exist.
        ValueError: a malformed run date, or ``"latest"`` on a warehouse without impressions.
    """
    disable_telemetry()
    bounds = bounds or ValidationBounds()
    db_path = Path(db_path)
    if not db_path.is_file():
        raise FileNotFoundError(f"warehouse {db_path} does not exist")
    docs_dir = Path(docs_dir) if docs_dir is not None else db_path.parent / "gx"
    started = _utcnow()
    with open_db(db_path) as con:
        day_after = resolve_run_date(run_date, con)
        job = _Run(
            con=con,
            bounds=bounds,
            run_id=run_id or new_id("validation"),
            run_date=day_after,
            day=day_after - dt.timedelta(days=1),
            # One "now" for SQL and GX alike, so both judge "in the future" identically.
            now=_utcnow(),
            started=started,
        )
        job.gx = GxRunner(docs_dir, job.run_id, started)
        return job.execute()


@dataclass
class _Run:
    """State of one validation run (internal)."""

    con: duckdb.DuckDBPyConnection
    bounds: ValidationBounds
    run_id: str
    run_date: dt.date
    day: dt.date
    now: dt.datetime
    started: dt.datetime
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
            self._check_day()

        failed = [c for c in self.checks if c.level == "table" and c.status == "failed"]
        report = ValidationReport(
            success=not failed,
            run_id=self.run_id,
            run_date=self.run_date,
            check_day=self.day,
            checks=self.checks,
            quarantined=self.quarantined,
            flagged=self.flagged,
            docs_path=self._gx.build_docs(),
            started_at=self.started,
            finished_at=_utcnow(),
            notes=self.notes,
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

    def _check_rows(self, table: str) -> list[tuple[str, RowCheck, int]]:
        """Run the row-level checks of ``table``; returns (table, check, SQL count) to quarantine."""
        frame = FRAMES[table]
        checks = row_checks(table, self.bounds)
        if table in LOG_TABLES:
            run(
                self.con,
                f"validation/{table}_frame",
                {"day": self.day, "now": self.now, "actions": list(self.bounds.actions)},
            )
            id_col = "row_id"
        else:
            key = CATALOG_KEYS[table]
            (check,) = checks
            run(
                self.con,
                "validation/catalog_frame",
                frame=frame,
                key=key,
                raw=table,
                flag=check.flag,
            )
            id_col = None  # catalog rows have no row id; GX and SQL are compared by counts
        cur = run(self.con, "validation/flag_counts", frame=frame)
        names = [d[0] for d in cur.description]
        counts = dict(zip(names, _one(cur), strict=True))
        self.flagged[table] = int(counts["n_flagged"] or 0)
        complete = self.flagged[table] <= self.bounds.complete_result_limit
        df = run(self.con, "validation/frame_rows", frame=frame).df()
        outcomes = _by_check(
            self._gx.validate_frame(
                f"{table}_rows",
                df,
                [c.expectation for c in checks],
                parameters={"now": self.now},
                index_column=id_col,
                complete=complete,
            )
        )
        disagreements: list[str] = []
        pending: list[tuple[str, RowCheck, int]] = []
        for check in checks:
            n_sql = int(counts[check.flag] or 0)
            (out,) = outcomes.get(check.name) or [None]
            sql_ids: list[Any] = []
            if id_col and n_sql:
                cur = run(
                    self.con,
                    "validation/flagged_ids",
                    {"limit": n_sql if complete else 100},
                    frame=frame,
                    flag=check.flag,
                    id=id_col,
                )
                sql_ids = [r[0] for r in cur.fetchall()]
            problem = _disagreement(out, n_sql, sql_ids)
            if problem:
                disagreements.append(f"{check.name}: {problem}")
            if n_sql:
                pending.append((table, check, n_sql))
            shown = ", ".join(str(i) for i in sql_ids[:10]) + (" …" if len(sql_ids) > 10 else "")
            self.checks.append(
                CheckResult(
                    name=check.name,
                    table=table,
                    level="row",
                    status="failed" if n_sql or (out is not None and not out.success) else "passed",
                    observed={
                        "rows_checked": int(counts["n_rows"]),
                        "flagged": n_sql,
                        "gx_unexpected": out.unexpected_count if out else None,
                        "row_ids": sql_ids[:100],
                        "quarantined_new": 0,
                    },
                    threshold="no rows",
                    message=(
                        f"{n_sql:,} of {int(counts['n_rows']):,} rows: {check.reason}"
                        + (f" (row_id {shown})" if shown else "")
                        if n_sql
                        else "no bad rows"
                    ),
                )
            )
        if disagreements:
            self.checks.append(
                CheckResult(
                    name="gx_sql_agreement",
                    table=table,
                    level="table",
                    status="failed",
                    observed={"disagreements": disagreements},
                    threshold="GX and the SQL quarantine flags mark the same rows",
                    message="GX and the quarantine disagree: " + "; ".join(disagreements),
                )
            )
        return pending

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
                    "source": f"validation of {self.day}",
                }
                idents = {"qtable": f"quarantine_{table}", "raw": table}
                if table in LOG_TABLES:
                    cur = run(
                        self.con,
                        "validation/quarantine_log_rows",
                        params,
                        frame=FRAMES[table],
                        flag=check.flag,
                        **idents,
                    )
                else:
                    cur = run(
                        self.con,
                        "validation/quarantine_catalog_rows",
                        params,
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

    def _check_day(self) -> None:
        b = self.bounds
        day = self.day
        first = day - dt.timedelta(days=b.trailing_days)
        counts = run(self.con, "validation/day_counts", {"first_day": first, "day": day}).df()
        today = counts[counts["day"] == pd.Timestamp(day)]
        trailing = counts[(counts["day"] < pd.Timestamp(day)) & (counts["usable"] > 0)]
        raw_n = int(today["impressions"].sum())
        usable = int(today["usable"].sum())
        exposed = int(today["exposed"].sum())
        clicks = int(today["clicks"].sum())
        ctr = clicks / exposed if exposed else math.nan

        enough = len(trailing) >= b.min_trailing_days
        med_volume = float(statistics.median(trailing["usable"])) if len(trailing) else math.nan
        trailing_ctr = (trailing["clicks"] / trailing["exposed"])[trailing["exposed"] > 0]
        med_ctr = float(statistics.median(trailing_ctr)) if len(trailing_ctr) else math.nan
        volume_ratio = usable / med_volume if raw_n and enough and med_volume > 0 else math.nan
        ctr_ok_to_judge = (
            raw_n
            and len(trailing_ctr) >= b.min_trailing_days
            and med_ctr > 0
            and not math.isnan(ctr)
        )
        ctr_ratio = ctr / med_ctr if ctr_ok_to_judge else math.nan

        q_n, q_bad = _one(run(self.con, "validation/quarantined_share", {"day": day}))
        share = q_bad / q_n if q_n else math.nan
        cur = run(self.con, "validation/day_window", {"day": day})
        window = dict(zip([d[0] for d in cur.description], _one(cur), strict=True))

        frame = pd.DataFrame(
            [
                {
                    "day": pd.Timestamp(day),
                    "impressions": raw_n,
                    "usable_impressions": usable,
                    "trailing_days": len(trailing),
                    "trailing_median_volume": med_volume,
                    "volume_ratio": volume_ratio,
                    "ctr": ctr,
                    "trailing_median_ctr": med_ctr,
                    "ctr_ratio": ctr_ratio,
                    "quarantined": int(q_bad),
                    "quarantined_share": share,
                    **window,
                }
            ]
        )
        for col in (
            "impressions_min_ts",
            "impressions_max_ts",
            "behaviors_min_ts",
            "behaviors_max_ts",
        ):
            frame[col] = pd.to_datetime(frame[col])
        day_start = dt.datetime.combine(day, dt.time())
        day_end = day_start + dt.timedelta(days=1)
        outcomes = _by_check(
            self._gx.validate_frame(
                "day",
                frame,
                day_expectations(b),
                parameters={"day_start": day_start, "day_end": day_end},
            )
        )

        def add(
            name: str,
            table: str,
            judged: bool,
            observed: dict[str, Any],
            threshold: str,
            fail_msg: str,
            ok_msg: str,
            skip_msg: str = "",
        ) -> None:
            outs = outcomes.get(f"{table}:{name}", [])
            errors = [o.error for o in outs if o.error]
            gx_ok = bool(outs) and all(o.success for o in outs) and not errors
            if not judged:
                status, message = "skipped", skip_msg
            elif gx_ok:
                status, message = "passed", ok_msg
            else:
                status = "failed"
                message = fail_msg + (f" (GX error: {'; '.join(errors)})" if errors else "")
            self.checks.append(
                CheckResult(name, table, "table", status, observed, threshold, message)
            )

        add(
            "day_not_empty",
            "impressions",
            True,
            {"impressions": raw_n},
            "at least 1 impression on the checked day",
            f"no impressions on {day}",
            f"{raw_n:,} impressions on {day}",
        )
        lo, hi = b.volume_ratio
        trailing_span = f"{first}..{day - dt.timedelta(days=1)}"
        too_few = (
            f"only {len(trailing)} trailing day(s) with impressions in {trailing_span}; "
            f"{b.min_trailing_days} needed to judge"
        )
        add(
            "volume",
            "impressions",
            bool(raw_n) and not math.isnan(volume_ratio),
            {
                "impressions": usable,
                "trailing_median": med_volume,
                "ratio": volume_ratio,
                "trailing_days": len(trailing),
            },
            f"{lo:g}x–{hi:g}x the median of the trailing {b.trailing_days} days",
            f"{usable:,} impressions on {day} is {volume_ratio:.2f}x the trailing median "
            f"{med_volume:,.0f} (allowed {lo:g}x–{hi:g}x)",
            f"{usable:,} impressions is {volume_ratio:.2f}x the trailing median {med_volume:,.0f}",
            "day is empty" if not raw_n else too_few,
        )
        lo, hi = b.ctr_ratio
        if not raw_n:
            ctr_skip = "day is empty"
        elif math.isnan(ctr):
            ctr_skip = f"no exposed impressions on {day}"
        elif len(trailing_ctr) < b.min_trailing_days:
            ctr_skip = too_few
        else:
            ctr_skip = f"trailing median CTR is {med_ctr:g}; a ratio cannot be formed"
        add(
            "ctr",
            "impressions",
            not math.isnan(ctr_ratio),
            {
                "ctr": ctr,
                "clicks": clicks,
                "exposed": exposed,
                "trailing_median": med_ctr,
                "ratio": ctr_ratio,
            },
            f"{lo:g}x–{hi:g}x the median CTR of the trailing {b.trailing_days} days",
            f"CTR {ctr:.4f} ({clicks:,} clicks / {exposed:,} exposed) on {day} is "
            f"{ctr_ratio:.2f}x the trailing median {med_ctr:.4f} (allowed {lo:g}x–{hi:g}x)",
            f"CTR {ctr:.4f} is {ctr_ratio:.2f}x the trailing median {med_ctr:.4f}",
            ctr_skip,
        )
        add(
            "quarantined_share",
            "impressions",
            bool(q_n),
            {"quarantined": int(q_bad), "impressions": int(q_n), "share": share},
            f"at most {b.max_quarantined_share:.1%} of the day's impressions quarantined",
            f"{int(q_bad):,} of {int(q_n):,} impressions on {day} are quarantined "
            f"({share:.1%}; allowed at most {b.max_quarantined_share:.1%})",
            f"{int(q_bad):,} of {int(q_n):,} impressions quarantined ({share:.2%})",
            "day is empty",
        )
        for table in LOG_TABLES:
            lo_ts, hi_ts = window[f"{table}_min_ts"], window[f"{table}_max_ts"]
            add(
                "day_window",
                table,
                lo_ts is not None,
                {"min_ts": lo_ts, "max_ts": hi_ts},
                f"[{day_start}, {day_end})",
                f"the {table} selected for {day} span {lo_ts} .. {hi_ts}, "
                f"outside [{day_start}, {day_end})",
                f"{table} of the day span {lo_ts} .. {hi_ts}",
                f"no {table} on {day}",
            )


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
