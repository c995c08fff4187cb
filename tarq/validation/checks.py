"""The catalogue of checks: what each one tests, as a GX expectation and as its SQL twin.

Row-level checks are evaluated twice on the same temp-table frame: by a GX expectation (the
verdict shown in GX results and Data Docs) and by a ``bad_<name>`` flag column computed in
``sql/validation/<table>_frame.sql`` (which rows go to quarantine). The two must flag the
same rows; ``tarq.validation.core`` compares them on every run.

Expectations are described here as plain data (:class:`ExpectationSpec`) so that this module
does not import Great Expectations; :mod:`tarq.validation.suites` turns them into GX objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tarq.validation.bounds import ValidationBounds

#: Tables whose rows carry a ``row_id`` and a day (checked per day) vs. catalog tables.
LOG_TABLES = ("impressions", "behaviors")
CATALOG_TABLES = ("items", "users")
CATALOG_KEYS = {"items": "item_id", "users": "user_id"}


@dataclass(frozen=True)
class ExpectationSpec:
    """One GX expectation: ``type`` is the class name in ``great_expectations.expectations``.

    ``check`` names the check it belongs to (a check may need several expectations, all of
    which must pass). Values of the form ``{"$PARAMETER": name}`` in ``kwargs`` are bound at
    run time from the run's expectation parameters.
    """

    check: str
    type: str
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RowCheck:
    """A row-level check of one table: a GX expectation plus a reason for the quarantine."""

    name: str
    table: str
    reason: str
    expectation: ExpectationSpec

    @property
    def flag(self) -> str:
        """The SQL flag column of this check in the table's frame."""
        return f"bad_{self.name}"


def _not_null(table: str, column: str) -> RowCheck:
    name = f"not_null_{column}"
    return RowCheck(
        name,
        table,
        f"{column} is NULL (a key column of {table})",
        ExpectationSpec(name, "ExpectColumnValuesToNotBeNull", {"column": column}),
    )


def _not_in_future(table: str) -> RowCheck:
    # Only rows of the checked days: a checked day must be over, so a row of it later than
    # "now" cannot have happened yet. A row of a later day is not judged before its day is
    # (it is in no sample and does not move ``latest`` until then).
    return RowCheck(
        "ts_not_in_future",
        table,
        "ts is later than the time of validation, on a day being validated",
        ExpectationSpec(
            "ts_not_in_future",
            "ExpectColumnValuesToBeBetween",
            {"column": "ts", "max_value": {"$PARAMETER": "now"}},
        ),
    )


def _check(
    name: str, table: str, reason: str, expectation: str, kwargs: dict[str, Any]
) -> RowCheck:
    """A row check whose GX expectation has the check's name."""
    return RowCheck(name, table, reason, ExpectationSpec(name, expectation, kwargs))


def _flag_true(name: str, table: str, reason: str, column: str) -> RowCheck:
    """A row check on a boolean column of the frame that is True for good rows."""
    return _check(
        name, table, reason, "ExpectColumnValuesToBeInSet", {"column": column, "value_set": [True]}
    )


def _first_of_duplicates(name: str, table: str, key: str) -> RowCheck:
    return _check(
        name,
        table,
        f"duplicate of an earlier row with the same ({key}); the lowest row_id is kept",
        "ExpectColumnValuesToBeBetween",
        {"column": "dup_rank", "max_value": 1},
    )


def row_checks(table: str, bounds: ValidationBounds) -> list[RowCheck]:
    """The row-level checks of ``table`` in evaluation order."""
    if table == "impressions":
        return [
            *(_not_null(table, c) for c in ("user_id", "item_id", "ts", "clicked", "exposed")),
            _check(
                "clicked_implies_exposed",
                table,
                "clicked = true but exposed = false (a click on an unexposed item is impossible)",
                "ExpectColumnPairValuesToBeInSet",
                {
                    "column_A": "clicked",
                    "column_B": "exposed",
                    "value_pairs_set": [(True, True), (False, True), (False, False)],
                    "ignore_row_if": "either_value_is_missing",
                },
            ),
            _check(
                "position_non_negative",
                table,
                "position < 0",
                "ExpectColumnValuesToBeBetween",
                {"column": "position", "min_value": 0},
            ),
            _first_of_duplicates("duplicate_impression", table, "user_id, item_id, ts, request_id"),
            _flag_true(
                "request_id_reused",
                table,
                "request_id already names a request of another user or day (its first "
                "row, lowest row_id, is kept)",
                "request_consistent",
            ),
            _flag_true("item_in_catalog", table, "item_id is not in items", "item_known"),
            _flag_true("user_in_users", table, "user_id is not in users", "user_known"),
            _not_in_future(table),
        ]
    if table == "behaviors":
        return [
            *(_not_null(table, c) for c in ("user_id", "ts", "action")),
            _check(
                "action_in_set",
                table,
                f"action is not one of {', '.join(bounds.actions)}",
                "ExpectColumnValuesToBeInSet",
                {"column": "action", "value_set": list(bounds.actions)},
            ),
            _first_of_duplicates("duplicate_behavior", table, "user_id, item_id, ts, action"),
            _not_in_future(table),
        ]
    if table == "items":
        # The keys of items and users are primary keys: a NULL-key check could never fire.
        return [
            _flag_true(
                "price_valid",
                table,
                "price is NaN, infinite or negative (a missing price is allowed: OOV bucket)",
                "price_ok",
            )
        ]
    if table == "users":
        return []
    raise ValueError(f"no row-level checks for table {table!r}")


def schema_expectations(tables: tuple[str, ...], bounds: ValidationBounds) -> list[ExpectationSpec]:
    """One expectation per raw table over the schema frame (one row per column)."""
    allowed = ["ok", "side_feature"] + (
        ["unregistered"] if bounds.allow_unregistered_columns else []
    )
    return [
        ExpectationSpec(
            f"schema:{t}",
            "ExpectColumnValuesToBeInSet",
            {
                "column": "status",
                "value_set": allowed,
                "row_condition": f'table_name=="{t}"',
                "condition_parser": "pandas",
            },
        )
        for t in tables
    ]


def day_expectations(bounds: ValidationBounds) -> list[ExpectationSpec]:
    """Table-level expectations over the frame of the checked days' aggregates (one row a day).

    Each column holds what its check judges, or NULL where the check cannot judge that day
    (too few or too unsteady trailing days, no clicks, a window day that is not the test day);
    GX skips NULLs, and the report marks such a day's check as skipped.
    """
    vol_lo, vol_hi = bounds.volume_ratio
    ctr_lo, ctr_hi = bounds.ctr_ratio
    between = "ExpectColumnValuesToBeBetween"
    return [
        ExpectationSpec(
            "impressions:day_not_empty", between, {"column": "test_day_impressions", "min_value": 1}
        ),
        ExpectationSpec(
            "impressions:volume",
            between,
            {"column": "volume_ratio", "min_value": vol_lo, "max_value": vol_hi},
        ),
        ExpectationSpec(
            "impressions:ctr",
            between,
            {"column": "ctr_ratio_significant", "min_value": ctr_lo, "max_value": ctr_hi},
        ),
        ExpectationSpec(
            "impressions:quarantined_share",
            between,
            {"column": "quarantined_share", "max_value": bounds.max_quarantined_share},
        ),
        ExpectationSpec(
            "impressions:stub_share",
            between,
            {"column": "stub_share_increase", "max_value": bounds.max_stub_share_increase},
        ),
        ExpectationSpec(
            "behaviors:click_history",
            between,
            {"column": "click_history_share", "max_value": bounds.max_click_history_share},
        ),
        ExpectationSpec(
            "behaviors:click_history",
            between,
            {
                "column": "click_history_increase",
                "max_value": bounds.max_click_history_increase,
            },
        ),
    ]
