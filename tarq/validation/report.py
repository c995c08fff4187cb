"""The outcome of one validation run: per-check results and a readable summary."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Level = Literal["row", "table"]
Status = Literal["passed", "failed", "skipped"]


@dataclass
class CheckResult:
    """One check of one table.

    ``level='row'`` checks flag individual rows, which are quarantined; their failure does not
    fail the validation. ``level='table'`` checks judge the data as a whole; any failure fails
    the validation. ``observed`` holds the numbers behind the verdict (counts, ratios).
    ``day`` is the day a table-level check of a day judged (None: not a check of one day).
    """

    name: str
    table: str
    level: Level
    status: Status
    observed: dict[str, Any] = field(default_factory=dict)
    threshold: str = ""
    message: str = ""
    day: dt.date | None = None

    @property
    def success(self) -> bool:
        """True unless the check failed (a skipped check does not fail)."""
        return self.status != "failed"

    @property
    def key(self) -> str:
        """``table.name``, the check's name in summaries (``table.name@day`` for a window day)."""
        return f"{self.table}.{self.name}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "table": self.table,
            "level": self.level,
            "day": self.day.isoformat() if self.day else None,
            "status": self.status,
            "success": self.success,
            "observed": {k: _jsonable(v) for k, v in self.observed.items()},
            "threshold": self.threshold,
            "message": self.message,
        }


@dataclass
class ValidationReport:
    """Everything one ``validate`` run found; ``success`` decides whether the job goes on.

    ``days``: the days checked (the test day ``check_day`` last, after the window days whose
    rows changed since their last validation).
    ``quarantined``: rows this run newly copied into ``quarantine_<table>``, per table.
    ``flagged``: rows the row-level checks flagged this run, per table (a row flagged by two
    checks counts once; rows quarantined by an earlier run of the same day count again).
    ``accepted``: the days of the window (and test day) whose failed verdict an operator
    accepted (``tarq validate --accept-day``) and whose rows are unchanged since: day,
    accepted_by, accepted_at, reason, failed_run_id. Their table-level checks are not judged.
    """

    success: bool
    run_id: str
    run_date: dt.date
    check_day: dt.date
    days: list[dt.date]
    checks: list[CheckResult]
    quarantined: dict[str, int]
    flagged: dict[str, int]
    docs_path: Path | None
    started_at: dt.datetime
    finished_at: dt.datetime
    notes: list[str] = field(default_factory=list)
    accepted: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed_checks(self) -> list[CheckResult]:
        """Table-level checks that failed (the reasons the validation failed)."""
        return [c for c in self.checks if c.level == "table" and c.status == "failed"]

    def check(self, table: str, name: str, day: dt.date | None = None) -> CheckResult:
        """The result of ``table.name`` (a check of one day: of ``day``, default the test day);
        KeyError when no such check ran."""
        day = day or self.check_day
        for c in self.checks:
            if c.table == table and c.name == name and c.day in (None, day):
                return c
        raise KeyError(f"no check {table}.{name} of {day} in this report")

    def _label(self, c: CheckResult) -> str:
        """``table.name``, with ``@day`` for a check of a window day."""
        return f"{c.key}@{c.day}" if c.day not in (None, self.check_day) else c.key

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored in ``validation_runs.summary``)."""
        return {
            "success": self.success,
            "run_id": self.run_id,
            "run_date": self.run_date.isoformat(),
            "check_day": self.check_day.isoformat(),
            "days": [d.isoformat() for d in self.days],
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "failed": [self._label(c) for c in self.failed_checks],
            "quarantined": dict(self.quarantined),
            "flagged": dict(self.flagged),
            "docs_path": str(self.docs_path) if self.docs_path else None,
            "notes": list(self.notes),
            "accepted": [dict(a) for a in self.accepted],
            "checks": [c.to_dict() for c in self.checks],
        }

    def to_text(self) -> str:
        """A summary for people: verdict, each failed check with its numbers, quarantine."""
        verdict = "PASSED" if self.success else "FAILED"
        n_table = sum(1 for c in self.checks if c.level == "table")
        lines = [
            f"validation {verdict}: day {self.check_day} (run date {self.run_date}), "
            f"run {self.run_id}"
            + (f", and {len(self.days) - 1} window day(s)" if len(self.days) > 1 else ""),
            f"  {n_table - len(self.failed_checks)}/{n_table} table-level checks passed",
        ]
        for c in self.failed_checks:
            lines.append(f"  FAILED {self._label(c)}: {c.message}")
        for c in self.checks:
            if c.status == "skipped" and c.day in (None, self.check_day):
                lines.append(f"  skipped {self._label(c)}: {c.message}")
        flagged_rows = [c for c in self.checks if c.level == "row" and c.status == "failed"]
        if flagged_rows:
            lines.append("  row-level checks (rows quarantined, excluded from samples):")
            lines.extend(f"    {c.key}: {c.message}" for c in flagged_rows)
        else:
            lines.append("  row-level checks: no bad rows")
        total = ", ".join(f"{t} {n:,}" for t, n in self.quarantined.items() if n) or "none"
        lines.append(f"  newly quarantined: {total}")
        for a in self.accepted:
            lines.append(
                f"  accepted by an operator: {a['day']} by {a['accepted_by']} on "
                f"{a['accepted_at']}: {a['reason']} (failed in run {a['failed_run_id']}; not "
                "judged again until its rows change)"
            )
        lines.extend(f"  note: {n}" for n in self.notes)
        if self.docs_path:
            lines.append(f"  Data Docs: {self.docs_path}")
        return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    """Plain JSON values for numbers, dates and NaN (→ None)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalars
        return _jsonable(value.item())
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
