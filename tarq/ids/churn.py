"""Semantic-ID stability: how many catalog items a new assignment moves against the served one.

Downstream systems key on the published IDs (retrieval indexes, caches, prefix trees of
generative retrievers); a daily table that reshuffles them costs those systems a rebuild.
:func:`id_churn` compares two assignments item by item: the share of items present in both
whose full m-tuple changed, the same per level, and the items new in the catalog counted apart
(they had no ID to keep).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import duckdb
import numpy as np

from tarq.store import sqlfiles


@dataclass(frozen=True)
class IdChurn:
    """Churn of a new assignment against a reference (normally the served table).

    Attributes:
        against_version: the publication version compared with (None: another reference).
        items_compared: items with IDs in both assignments.
        items_new: items of the new assignment that the reference lacks.
        items_dropped: items of the reference the new assignment lacks.
        tuple_churn: share of the compared items whose full tuple changed (0 when none).
        level_churn: per level l, share of the compared items whose code_l changed.
        prefix_churn: per level l, share whose first l+1 codes changed (the prefix a
            coarse-to-fine consumer keys on); the last entry equals ``tuple_churn``.
    """

    against_version: int | None
    items_compared: int
    items_new: int
    items_dropped: int
    tuple_churn: float
    level_churn: list[float]
    prefix_churn: list[float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def metrics(self) -> dict[str, float]:
        """Flat numeric metrics (MLflow keys)."""
        out = {
            "churn_tuple": self.tuple_churn,
            "churn_items_new": float(self.items_new),
            "churn_items_compared": float(self.items_compared),
        }
        out.update({f"churn_level_{j}": v for j, v in enumerate(self.level_churn)})
        return out

    def summary(self) -> str:
        levels = " ".join(f"{v:.3f}" for v in self.level_churn)
        return (
            f"{self.tuple_churn:.2%} of {self.items_compared:,} items changed their ID tuple "
            f"against version {self.against_version}; per level {levels}; "
            f"{self.items_new:,} new items"
        )


def id_churn(
    new_ids: np.ndarray,
    new_codes: np.ndarray,
    old_ids: np.ndarray,
    old_codes: np.ndarray,
    against_version: int | None = None,
) -> IdChurn:
    """Compare two assignments.

    Args:
        new_ids: (N,) item ids of the new assignment; new_codes: (N, m) its codes.
        old_ids: (M,) item ids of the reference; old_codes: (M, m') its codes.
        against_version: recorded in the result.

    Raises:
        ValueError: the code widths differ (m ≠ m': not comparable level by level) or an id
            appears twice in one assignment.
    """
    new_ids, old_ids = np.asarray(new_ids, np.int64), np.asarray(old_ids, np.int64)
    new_codes, old_codes = np.asarray(new_codes), np.asarray(old_codes)
    if new_codes.shape[1] != old_codes.shape[1]:
        raise ValueError(
            f"assignments have {new_codes.shape[1]} and {old_codes.shape[1]} levels: not comparable"
        )
    for name, ids in (("new", new_ids), ("reference", old_ids)):
        if np.unique(ids).size != ids.size:
            raise ValueError(f"the {name} assignment lists an item twice")
    common, i_new, i_old = np.intersect1d(new_ids, old_ids, assume_unique=True, return_indices=True)
    m = new_codes.shape[1]
    n = common.size
    if n:
        diff = new_codes[i_new].astype(np.int64) != old_codes[i_old].astype(np.int64)
        level = diff.mean(axis=0)
        prefix = np.logical_or.accumulate(diff, axis=1).mean(axis=0)
    else:
        level = prefix = np.zeros(m)
    return IdChurn(
        against_version=against_version,
        items_compared=int(n),
        items_new=int(new_ids.size - n),
        items_dropped=int(old_ids.size - n),
        tuple_churn=float(prefix[-1]) if n else 0.0,
        level_churn=[float(v) for v in level],
        prefix_churn=[float(v) for v in prefix],
    )


def served_codes(con: duckdb.DuckDBPyConnection) -> tuple[int, np.ndarray, np.ndarray] | None:
    """(version, item ids (M,), codes (M, m)) of the served table, or None when none is."""
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'serving_item_ids'"
    ).fetchall()[0][0]
    if not exists:
        return None
    t = sqlfiles.run(con, "publish/served_codes").fetchnumpy()
    if t["item_id"].size == 0:
        return None
    cols = sorted((c for c in t if c.startswith("code_")), key=lambda c: int(c.split("_")[1]))
    codes = np.stack([np.asarray(t[c]) for c in cols], axis=1).astype(np.int64)
    return int(t["version"][0]), np.asarray(t["item_id"]).astype(np.int64), codes


@dataclass(frozen=True)
class ItemCodes:
    """Semantic IDs by item id: a served or published table, looked up for any item ids.

    Attributes:
        item_ids: (M,) int64, sorted.  codes: (M, m) int64 their codes.
    """

    item_ids: np.ndarray
    codes: np.ndarray

    @classmethod
    def of(cls, item_ids: np.ndarray, codes: np.ndarray) -> ItemCodes:
        """From (M,) ids and (M, m) codes in any order."""
        order = np.argsort(item_ids, kind="stable")
        return cls(np.asarray(item_ids)[order], np.asarray(codes, dtype=np.int64)[order])

    def lookup(self, item_ids: np.ndarray) -> np.ndarray:
        """(n, m) int64 codes of ``item_ids`` (n,); −1 rows for items the table lacks."""
        out = np.full((len(item_ids), self.codes.shape[1]), -1, np.int64)
        if len(self.item_ids) == 0:
            return out
        pos = np.searchsorted(self.item_ids, item_ids)
        pos_c = np.minimum(pos, len(self.item_ids) - 1)
        found = (pos < len(self.item_ids)) & (self.item_ids[pos_c] == item_ids)
        out[found] = self.codes[pos_c[found]]
        return out
