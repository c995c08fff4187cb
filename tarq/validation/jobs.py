"""The jobs of a validation run that a :class:`tarq.runtime.parallel.Mapper` may run elsewhere.

:func:`tarq.validation.validate` plans these jobs, runs them through its mapper (in this
process by default; on Dask workers from ``flows/``) and merges their results
(:mod:`tarq.validation.core`). A job is a small picklable value and its function a
module-level function that opens the warehouse itself, read-only, and returns plain values:

* :class:`RowJob` → :func:`check_row_chunk`: the row-level checks of one chunk of a table (whole
  days of a log table, or the whole catalog table): the SQL flags of
  ``sql/validation/<table>_frame.sql`` and GX on the same rows (an ephemeral GX context of the
  job's thread; its result comes back as JSON for the run's Data Docs), the SQL counts and
  flagged ids the coordinator compares with GX, and the flagged rows' ids and flags (Arrow)
  that the coordinator quarantines;
* :class:`DayJob` → :func:`day_stats`: the aggregates the table-level checks of some
  consecutive checked days judge (``day_counts.sql`` over those days and their trailing days,
  ``quarantined_share.sql``), read after the run's quarantine is committed.

The coordinator holds no connection to the warehouse while the jobs run (DuckDB lets one
process write a file or several read it).
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
import threading
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa

from tarq.store.sqlfiles import render, run
from tarq.store.warehouse import RAW_TABLES, open_for_job
from tarq.validation.bounds import ValidationBounds
from tarq.validation.checks import CATALOG_KEYS, LOG_TABLES, row_checks
from tarq.validation.suites import DetachedResult, ExpectationOutcome, GxRunner

#: The temp table each raw table's rows are checked in (see sql/validation/*_frame.sql),
#: one chunk at a time.
FRAMES = {t: f"validation_{t}" for t in RAW_TABLES}


@dataclass(frozen=True)
class RowJob:
    """The row-level checks of one chunk of ``table``: the rows of ``days`` (log tables), and
    the rows of no day when ``undated``; a catalog table is one chunk (``days`` empty)."""

    db_path: str
    table: str
    days: tuple[dt.date, ...]
    undated: bool
    #: Part ``part`` of ``parts`` of the days' rows by user hash (a day too big for one job).
    part: int
    parts: int
    #: The chunk's GX batch label (``<run id>.<label>`` in Data Docs); None: the table is one
    #: chunk.
    batch_label: str | None
    now: dt.datetime
    run_id: str
    run_time: dt.datetime
    bounds: ValidationBounds

    def __str__(self) -> str:  # the job's name in logs and task runs
        return f"{self.table} {self.batch_label or 'all'}"


@dataclass
class RowChunkResult:
    """What :func:`check_row_chunk` found in its chunk."""

    table: str
    n_rows: int
    n_flagged: int
    #: SQL count of each check (by check name).
    counts: dict[str, int]
    #: The flagged ids of each check with a count, lowest first: all of them when
    #: ``complete``, else the first 100.
    sql_ids: dict[str, list[Any]]
    complete: bool
    outcomes: list[ExpectationOutcome]
    gx_result: DetachedResult
    #: The flagged rows: the id column (``row_id`` or the catalog key) and every ``bad_*`` flag.
    flagged: pa.Table


@dataclass(frozen=True)
class DayJob:
    """The aggregates of the checked days ``days`` (consecutive in the run's list)."""

    db_path: str
    days: tuple[dt.date, ...]
    test_day: dt.date
    bounds: ValidationBounds

    def __str__(self) -> str:  # the job's name in logs and task runs
        return f"days {self.days[0]}..{self.days[-1]}" if self.days else "no days"


_local = threading.local()


def _gx(run_id: str, run_time: dt.datetime) -> GxRunner:
    """This thread's ephemeral GX runner (suites and checkpoints are made once and reused)."""
    runner = getattr(_local, "gx", None)
    if runner is None:
        runner = _local.gx = GxRunner(None, run_id, run_time)
    else:
        runner.set_run(run_id, run_time)
    return runner


def check_row_chunk(job: RowJob) -> RowChunkResult:
    """Flag one chunk's rows in SQL and validate the same rows with GX (see the module)."""
    table, frame = job.table, FRAMES[job.table]
    checks = row_checks(table, job.bounds)
    id_col = "row_id" if table in LOG_TABLES else CATALOG_KEYS[table]
    with open_for_job(job.db_path) as con:
        run(
            con,
            f"validation/{table}_frame",
            {
                "days": list(job.days),
                "undated": job.undated,
                "part": job.part,
                "parts": job.parts,
                "now": job.now,
                "actions": list(job.bounds.actions),
            },
        )
        cur = run(con, "validation/flag_counts", frame=frame)
        names = [d[0] for d in cur.description]
        (row,) = cur.fetchall()
        counts = dict(zip(names, row, strict=True))
        n_flagged = int(counts["n_flagged"] or 0)
        complete = n_flagged <= job.bounds.complete_result_limit
        per_check = {c.name: int(counts[c.flag] or 0) for c in checks}
        sql_ids = {
            c.name: [
                r[0]
                for r in run(
                    con,
                    "validation/flagged_ids",
                    {"limit": per_check[c.name] if complete else 100},
                    frame=frame,
                    flag=c.flag,
                    id=id_col,
                ).fetchall()
            ]
            for c in checks
            if per_check[c.name]
        }
        flagged = con.sql(
            render("validation/flagged_rows", frame=frame, id=id_col)
        ).to_arrow_table()
        df = run(con, "validation/frame_rows", frame=frame).df()
    outcomes, gx_result = _gx(job.run_id, job.run_time).validate_detached(
        f"{table}_rows",
        df,
        [c.expectation for c in checks],
        parameters={"now": job.now},
        index_column=id_col,
        complete=complete,
        batch_label=job.batch_label,
    )
    return RowChunkResult(
        table=table,
        n_rows=int(counts["n_rows"]),
        n_flagged=n_flagged,
        counts=per_check,
        sql_ids=sql_ids,
        complete=complete,
        outcomes=outcomes,
        gx_result=gx_result,
        flagged=flagged,
    )


def day_stats(job: DayJob) -> list[DayStats]:
    """The aggregates of each of ``job.days`` and of its trailing days."""
    b = job.bounds
    first = job.days[0] - dt.timedelta(days=b.trailing_days)
    with open_for_job(job.db_path) as con:
        counts = run(
            con,
            "validation/day_counts",
            {"first_day": first, "last_day": job.days[-1], "history_minutes": b.history_minutes},
        ).df()
        shares = {
            d: (int(n), int(q))
            for d, n, q in run(
                con, "validation/quarantined_share", {"days": list(job.days)}
            ).fetchall()
        }
    counts = counts.fillna(0)
    counts["day"] = counts["day"].dt.date
    counts = counts.set_index("day")
    return [_day_stats(d, d == job.test_day, counts, shares.get(d, (0, 0)), b) for d in job.days]


def _day_stats(
    day: dt.date,
    test_day: bool,
    counts: pd.DataFrame,
    quarantined: tuple[int, int],
    b: ValidationBounds,
) -> DayStats:
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
    return DayStats(
        day=day,
        test_day=test_day,
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


@dataclass
class DayStats:
    """The aggregates of one checked day and its trailing days."""

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
