"""Validation of the warehouse logs with Great Expectations, and the quarantine of bad rows.

``validate(db_path, run_date, window_days=N)`` checks day D − 1 of run date D and each of the N
days before it whose rows changed since they were last validated; see
:mod:`tarq.validation.core`. ``validate(..., mapper=m)`` runs its row-level and day-level jobs
(:mod:`tarq.validation.jobs`) through a :class:`tarq.runtime.parallel.Mapper` (default: one after the
other in this process).
``accept_day`` records an operator's acceptance of a day that failed its table-level checks.
Great Expectations is imported only when a validation runs. Imports only the shared modules
(:mod:`tarq.store`, :mod:`tarq.runtime`, dates).
"""

from tarq.validation.bounds import DEFAULT_ACTIONS, ValidationBounds
from tarq.validation.core import accept_day, validate
from tarq.validation.report import CheckResult, ValidationReport

__all__ = [
    "DEFAULT_ACTIONS",
    "CheckResult",
    "ValidationBounds",
    "ValidationReport",
    "accept_day",
    "validate",
]
