"""Run dates: a job run on day D works on the logs up to the end of D − 1.

The day validated and tested on is D − 1; the training window is the ``train_days`` days
before it, capped by what the logs hold. A test window of N days (``test_days``, benchmarks:
one day is too few test users on small logs) is the N days ending D − 1, and the training
window the ``train_days`` days before its first day.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import duckdb

from tarq.store import sqlfiles


@dataclass(frozen=True)
class Window:
    """The days one run works on: ``train_start``..``train_end`` inclusive, then the test
    window ``test_start``..``test_day`` inclusive (``test_day`` = D − 1 is its last day;
    ``test_start`` defaults to ``test_day``: one test day, the daily job's window)."""

    run_date: dt.date
    train_start: dt.date
    train_end: dt.date
    test_day: dt.date
    test_start: dt.date | None = None

    def __post_init__(self) -> None:
        if self.test_start is None:
            object.__setattr__(self, "test_start", self.test_day)

    @property
    def train_days(self) -> int:
        return (self.train_end - self.train_start).days + 1

    @property
    def test_days(self) -> int:
        """Days in the test window (1 unless a longer one was asked for)."""
        assert self.test_start is not None  # set by __post_init__
        return (self.test_day - self.test_start).days + 1


def parse_date(value: str | dt.date) -> dt.date:
    """Parse ``YYYY-MM-DD`` with an error that names the bad value."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(value)
    except (TypeError, ValueError):
        raise ValueError(f"run date {value!r} is not a date of the form YYYY-MM-DD") from None


def utc_now() -> dt.datetime:
    """The current time as a naive UTC datetime (the warehouse's TIMESTAMP convention)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def latest_run_date(con: duckdb.DuckDBPyConnection, now: dt.datetime | None = None) -> dt.date:
    """The run date whose test day is the last complete day holding a usable impression.

    Usable: not in ``quarantine_impressions`` and before the start of ``now``'s day (naive
    UTC; default the current time): one impression stamped 2099 cannot move every later run to
    2099, and today, still under way, is no test day (logs written through today made
    ``latest`` test on a day whose later hours had not happened yet).

    Raises:
        ValueError: no usable impression (the message says how many rows were set aside).
    """
    now = utc_now() if now is None else now
    start_of_today = dt.datetime.combine(now.date(), dt.time())
    _, last, total = sqlfiles.run(con, "dates/usable_days", {"now": start_of_today}).fetchone()
    if last is None:
        if total:
            raise ValueError(
                f"the warehouse holds no usable impression: all {total:,} are quarantined "
                f"or not before today ({now:%Y-%m-%d} UTC, a day still under way)"
            )
        raise ValueError("the warehouse holds no impressions: load or generate logs first")
    return last + dt.timedelta(days=1)


def resolve_run_date(
    value: str | dt.date | None,
    con: duckdb.DuckDBPyConnection,
    now: dt.datetime | None = None,
) -> dt.date:
    """``None``/``"today"`` → today (UTC, like the schedule and the logs), ``"latest"`` → the
    day after the last day holding a usable impression (:func:`latest_run_date`)."""
    if value is None or value == "today":
        return (utc_now() if now is None else now).date()
    if value == "latest":
        return latest_run_date(con, now)
    return parse_date(value)


def window_for(
    run_date: dt.date,
    train_days: int,
    first_log_day: dt.date | None = None,
    test_days: int = 1,
) -> Window:
    """The train/test window of ``run_date``: the ``test_days`` days ending ``run_date`` − 1,
    and the ``train_days`` days before them; the train start is capped at ``first_log_day``.

    Raises:
        ValueError: ``train_days`` or ``test_days`` below 1, or no training day left before
            the test window (e.g. a test window as long as the logs).
    """
    if train_days < 1:
        raise ValueError(f"train_days must be >= 1, got {train_days}")
    if isinstance(test_days, bool) or not isinstance(test_days, int) or test_days < 1:
        raise ValueError(f"test_days must be an integer >= 1, got {test_days!r}")
    test_day = run_date - dt.timedelta(days=1)
    test_start = test_day - dt.timedelta(days=test_days - 1)
    train_end = test_start - dt.timedelta(days=1)
    train_start = train_end - dt.timedelta(days=train_days - 1)
    if first_log_day is not None and train_start < first_log_day:
        train_start = first_log_day
    if train_start > train_end:
        tested = (
            f"the test day {test_day}"
            if test_days == 1
            else f"its {test_days}-day test window {test_start}..{test_day}"
        )
        raise ValueError(
            f"run date {run_date} leaves no training day before {tested}"
            + (f" (logs start {first_log_day})" if first_log_day else "")
        )
    return Window(run_date, train_start, train_end, test_day, test_start)
