"""Thresholds of the validation checks, in one place so that a deployment can tune them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

#: Behaviour actions of Taobao's logs (and what the MovieLens/tabular importers write).
DEFAULT_ACTIONS: tuple[str, ...] = ("pv", "cart", "fav", "buy")


@dataclass(frozen=True)
class ValidationBounds:
    """Bounds of the table-level checks and the domains of the row-level ones.

    Every table-level check of a day is day over day: it compares the day with the median of
    its ``trailing_days`` days before (the previous day's figure is reported beside it). The
    defaults were set on the demo presets (``tiny``, ``small``: volume 0.86–1.35x the trailing
    median, CTR 0.85–1.18x, 0–10 % of clicks after a view of the same item) and the shared
    Taobao and MovieLens imports (Taobao CTR 0.76x on a 45-click day; MovieLens ratings are not
    a steady daily feed: 0.03x–25x a day) so that those pass, while a doubled day, 30 % of a
    day's clicks flipped to non-clicks, and behaviours 10 minutes early fail.

    Attributes:
        volume_ratio: allowed (low, high) ratio of a day's usable impressions to the median
            of its trailing days (1.6 catches a doubled day).
        volume_max_trailing_spread: the volume is judged only when the trailing days are a
            steady feed: their largest count at most this many times their smallest;
            otherwise it is skipped with a note (MovieLens).
        ctr_ratio: allowed (low, high) ratio of a day's click-through rate (clicks per exposed
            usable impression) to the trailing median. A day fails only when it is outside
            this band *and* significantly so (``ctr_min_z``): small days are noisy (Taobao's
            45–63 clicks a day move the CTR by ±25 %).
        ctr_min_z: the binomial z-score of the day's clicks against the trailing median CTR
            beyond which a CTR outside ``ctr_ratio`` fails (30 % of 190 clicks flipped: z ≈ −5).
        trailing_days: how many days before a checked day make up its baseline.
        min_trailing_days: fewer trailing days with impressions than this → the day-over-day
            checks are skipped with a note instead of judged.
        max_quarantined_share: the largest share of a day's impressions that may be
            quarantined (exact duplicates aside: their first copy is used) before the day
            as a whole fails.
        max_stub_share_increase: the largest increase, over the trailing median, of the share
            of a day's usable impressions whose item is a catalog stub (an id the catalog
            lacked at import, no attributes): unknown ids pass ``item_in_catalog`` through
            their stubs, a jump in them is a broken item feed.
        history_minutes: the window before an impression in which a behaviour on the same
            (user, item) counts for the cross-log clock check.
        max_click_history_share: the largest share of a day's clicks (exposed, usable) whose
            item the user acted on in the ``history_minutes`` before the impression. A click
            is followed by a view of its item; when that view is logged before the click (the
            behaviour log's clock runs early), it lands in the click's own history: leakage.
        max_click_history_increase: the largest increase of that share over the trailing
            median (demo: 0–10 %; behaviours 10 minutes early: 100 %).
        actions: allowed values of ``behaviors.action``; importers of other logs extend it,
            e.g. ``ValidationBounds(actions=(*DEFAULT_ACTIONS, "share"))``.
        allow_unregistered_columns: accept extra raw-table columns that ``feature_spec`` does
            not declare (by default they count as schema drift).
        complete_result_limit: up to this many flagged rows per frame GX returns every
            unexpected ``row_id`` (result format COMPLETE) and they are compared one by one
            with the quarantined rows; above it GX returns a summary and counts are compared.
            The limit applies to each chunk (``max_chunk_rows``).
        max_chunk_rows: not a threshold but a memory bound: the row-level checks of the log
            tables read the checked days in chunks of whole days holding at most this many rows
            (a larger day is split by user hash into parts of at most this many; 0: one day a
            chunk, never split), so that a run validating the whole training window, or a day
            of hundreds of millions of rows, holds one chunk in pandas for GX.
    """

    volume_ratio: tuple[float, float] = (0.5, 1.6)
    volume_max_trailing_spread: float = 3.0
    ctr_ratio: tuple[float, float] = (0.8, 1.25)
    ctr_min_z: float = 4.0
    trailing_days: int = 7
    min_trailing_days: int = 3
    max_quarantined_share: float = 0.05
    max_stub_share_increase: float = 0.2
    history_minutes: int = 30
    max_click_history_share: float = 0.5
    max_click_history_increase: float = 0.25
    actions: tuple[str, ...] = field(default=DEFAULT_ACTIONS)
    allow_unregistered_columns: bool = False
    complete_result_limit: int = 10_000
    max_chunk_rows: int = 1_000_000

    def __post_init__(self) -> None:
        for name in ("volume_ratio", "ctr_ratio"):
            lo, hi = getattr(self, name)
            if not 0 <= lo < hi:
                raise ValueError(
                    f"ValidationBounds.{name} must satisfy 0 <= low < high, got {(lo, hi)}"
                )
        if self.trailing_days < 1:
            raise ValueError(
                f"ValidationBounds.trailing_days must be >= 1, got {self.trailing_days}"
            )
        if not 1 <= self.min_trailing_days <= self.trailing_days:
            raise ValueError(
                "ValidationBounds.min_trailing_days must lie in [1, trailing_days], "
                f"got {self.min_trailing_days}"
            )
        if not 0 <= self.max_quarantined_share <= 1:
            raise ValueError(
                "ValidationBounds.max_quarantined_share must lie in [0, 1], "
                f"got {self.max_quarantined_share}"
            )
        if not self.actions or not all(isinstance(a, str) and a for a in self.actions):
            raise ValueError(
                f"ValidationBounds.actions must be non-empty strings, got {self.actions!r}"
            )
        for name in (
            "max_stub_share_increase",
            "max_click_history_share",
            "max_click_history_increase",
        ):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(
                    f"ValidationBounds.{name} must lie in [0, 1], got {getattr(self, name)}"
                )
        if self.volume_max_trailing_spread < 1 or self.ctr_min_z < 0 or self.history_minutes < 1:
            raise ValueError(
                "ValidationBounds: volume_max_trailing_spread must be >= 1, ctr_min_z >= 0 and "
                f"history_minutes >= 1, got {self.volume_max_trailing_spread}, "
                f"{self.ctr_min_z}, {self.history_minutes}"
            )
        if self.complete_result_limit < 0:
            raise ValueError("ValidationBounds.complete_result_limit must be >= 0")
        if self.max_chunk_rows < 0:
            raise ValueError("ValidationBounds.max_chunk_rows must be >= 0")
        # Accept a list for convenience but keep the dataclass hashable and immutable.
        object.__setattr__(self, "actions", tuple(self.actions))

    @classmethod
    def from_overrides(cls, overrides: Mapping[str, Any] | None) -> ValidationBounds:
        """The default bounds with ``overrides`` applied, from plain (JSON/YAML) values.

        Pairs and ``actions`` may be given as lists. Raises ValueError naming the key for an
        unknown key or a value of the wrong type or out of range.
        """
        overrides = dict(overrides or {})
        defaults = cls()
        known = {f.name: getattr(defaults, f.name) for f in fields(cls)}
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise ValueError(
                f"unknown validation bound(s) {unknown}; known: {', '.join(sorted(known))}"
            )
        values = {k: _coerce(k, v, known[k]) for k, v in overrides.items()}
        return cls(**values)


def _coerce(name: str, value: Any, default: Any) -> Any:
    """``value`` as the type of ``default`` (bool, int, float, pair of numbers, strings)."""

    def bad(expected: str) -> ValueError:
        return ValueError(f"validation bound {name} must be {expected}, got {value!r}")

    def number(v: Any, integral: bool) -> Any:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise bad("an integer" if integral else "a number")
        if integral and not isinstance(v, int):
            raise bad("an integer")
        return v if integral else float(v)

    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if isinstance(default, int):
        return number(value, integral=True)
    if isinstance(default, float):
        return number(value, integral=False)
    if name == "actions":
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise bad("a list of strings")
        return tuple(value)  # __post_init__ checks the items
    if isinstance(default, tuple):
        if isinstance(value, str) or not isinstance(value, list | tuple) or len(value) != 2:
            raise bad("a pair [low, high]")
        return tuple(number(v, integral=False) for v in value)
    raise bad(type(default).__name__)
