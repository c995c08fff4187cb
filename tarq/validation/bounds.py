"""Thresholds of the validation checks, in one place so that a deployment can tune them."""

from __future__ import annotations

from dataclasses import dataclass, field

#: Behaviour actions of Taobao's logs (and what the MovieLens/tabular importers write).
DEFAULT_ACTIONS: tuple[str, ...] = ("pv", "cart", "fav", "buy")


@dataclass(frozen=True)
class ValidationBounds:
    """Bounds of the table-level checks and the domains of the row-level ones.

    Attributes:
        volume_ratio: allowed (low, high) ratio of the checked day's usable impressions to
            the median of the trailing days.
        ctr_ratio: allowed (low, high) ratio of the checked day's click-through rate (clicks
            per exposed impression) to the trailing median.
        trailing_days: how many days before the checked day make up the baseline.
        min_trailing_days: fewer trailing days with impressions than this → the volume and
            CTR checks are skipped with a note instead of judged.
        max_quarantined_share: the largest share of the checked day's impressions that may
            be quarantined before the day as a whole fails.
        actions: allowed values of ``behaviors.action``; importers of other logs extend it,
            e.g. ``ValidationBounds(actions=(*DEFAULT_ACTIONS, "share"))``.
        allow_unregistered_columns: accept extra raw-table columns that ``feature_spec`` does
            not declare (by default they count as schema drift).
        complete_result_limit: up to this many flagged rows per frame GX returns every
            unexpected ``row_id`` (result format COMPLETE) and they are compared one by one
            with the quarantined rows; above it GX returns a summary and counts are compared.
    """

    volume_ratio: tuple[float, float] = (0.2, 5.0)
    ctr_ratio: tuple[float, float] = (0.25, 4.0)
    trailing_days: int = 7
    min_trailing_days: int = 3
    max_quarantined_share: float = 0.05
    actions: tuple[str, ...] = field(default=DEFAULT_ACTIONS)
    allow_unregistered_columns: bool = False
    complete_result_limit: int = 10_000

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
        if self.complete_result_limit < 0:
            raise ValueError("ValidationBounds.complete_result_limit must be >= 0")
        # Accept a list for convenience but keep the dataclass hashable and immutable.
        object.__setattr__(self, "actions", tuple(self.actions))
