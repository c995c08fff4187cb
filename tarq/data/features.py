"""Feature layout and vocabularies: raw warehouse ids → embedding indices.

Index convention for every categorical field: ``0`` = padding (empty history slot),
``1`` = out-of-vocabulary / null, ``2..`` = values seen in the training window. The same
vocabulary is saved with a trained model so that items added after training map to OOV.

Sequence fields share embedding tables with the item fields of the same name (a behaviour
on item 42 and the target item 42 use one embedding); ``action`` has its own table.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tarq.defaults import SEQ_LEN

PAD = 0
OOV = 1
ACTIONS = ("pv", "cart", "fav", "buy")

BASE_USER_FIELDS = ("user_id",)
BASE_ITEM_FIELDS = ("item_id", "category_id", "brand_id", "price_bucket")
# Identifier fields: one embedding row per id, so a minimum count applies (rare ids → OOV).
ID_FIELDS = ("user_id", "item_id")
SEQ_FIELDS = ("item_id", "category_id", "brand_id", "action", "time_gap")
# Sequence fields that are not item fields: embedded at d_model width and added to x_i.
SEQ_CONTEXT_FIELDS = ("action", "time_gap")
# time_gap = log2 buckets of the minutes between a behaviour and the impression it precedes.
TIME_GAP_BUCKETS = 24


@dataclass
class FeatureLayout:
    """Which categorical fields feed the model and how large each vocabulary is.

    Attributes:
        user_fields: columns of the ``user`` tensor, in order; ``user_id`` first.
        item_fields: columns of the ``item`` tensor, in order; ``item_id`` first.
        seq_fields: columns of the ``hist`` tensor, in order; all but the context fields
            ``action`` and ``time_gap`` share the embedding table of the item field with the
            same name. Layouts saved before ``time_gap`` existed simply lack it.
        vocab_sizes: field → number of embedding rows (padding and OOV included).
        seq_len: maximum history length L.
    """

    user_fields: list[str]
    item_fields: list[str]
    seq_fields: list[str] = field(default_factory=lambda: list(SEQ_FIELDS))
    vocab_sizes: dict[str, int] = field(default_factory=dict)
    seq_len: int = SEQ_LEN

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FeatureLayout:
        return cls(**json.loads(text))

    def save(self, path: Path) -> None:
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> FeatureLayout:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))


class Vocab:
    """Raw values of one field in index order; maps arrays of raw ids to indices ≥ 2 (or OOV).

    Index ``i + 2`` belongs to ``values[i]``. A vocabulary built from scratch is sorted; an
    extended one (:meth:`extend`, continuous training) keeps the parent's values at their
    indices and appends the new ones, so a parent's embedding row ``j`` is the child's row
    ``j`` for every id the parent knew.
    """

    def __init__(self, values: np.ndarray) -> None:
        values = np.asarray(values)
        if values.size and values.dtype.kind not in "iu":
            raise TypeError(f"vocabulary values must be integers, got {values.dtype}")
        values = values.astype(np.int64)
        uniq, first = np.unique(values, return_index=True)
        if uniq.size != values.size:
            values = values[np.sort(first)]  # keep first occurrences, in order
        self.values = values
        self._order = np.argsort(values, kind="stable")
        self._sorted = values[self._order]

    def __len__(self) -> int:
        """Number of embedding rows: the known values plus padding and OOV."""
        return int(self.values.size) + 2

    def lookup(self, raw: np.ndarray, null_mask: np.ndarray | None = None) -> np.ndarray:
        """Map raw ids (any shape) to indices; unknown or null → ``OOV``. Same shape, int64."""
        raw = np.asarray(raw, dtype=np.int64)
        if self.values.size == 0:
            return np.full(raw.shape, OOV, dtype=np.int64)
        pos = np.searchsorted(self._sorted, raw)
        pos_c = np.minimum(pos, self.values.size - 1)
        found = self._sorted[pos_c] == raw
        out = np.where(found, self._order[pos_c] + 2, OOV).astype(np.int64)
        if null_mask is not None:
            out[null_mask] = OOV
        return out

    def extend(self, values: np.ndarray) -> Vocab:
        """A vocabulary with every value of this one at its index and the unknown ``values``
        (sorted) appended after them. Nothing is ever dropped."""
        new = np.unique(np.asarray(values, dtype=np.int64))
        new = new[self.lookup(new) == OOV]
        return Vocab(np.concatenate([self.values, new]))

    def save(self, path: Path) -> None:
        pq.write_table(pa.table({"value": pa.array(self.values, pa.int64())}), path)

    @classmethod
    def load(cls, path: Path) -> Vocab:
        return cls(pq.read_table(path).column("value").to_numpy())


def action_index(actions: np.ndarray) -> np.ndarray:
    """Map action strings to indices (``pv``→2 … ``buy``→5, unknown→OOV, ``None``→PAD)."""
    lut = {a: i + 2 for i, a in enumerate(ACTIONS)}
    return np.array([PAD if a is None else lut.get(a, OOV) for a in actions], dtype=np.int64)


def time_gap_index(gap_seconds: np.ndarray) -> np.ndarray:
    """Seconds between a behaviour and the impression → ``time_gap`` indices (same shape).

    Bucket b ≥ 0 holds gaps of [2^b − 1, 2^(b+1) − 1) minutes (b = 0: under a minute … the last
    bucket: everything beyond ~16 years); index = b + 2, NaN → OOV. The click model of
    interest-driven feeds decays over minutes to hours (DIN/BST-style time features), which a
    recency *rank* cannot express: the 3rd most recent behaviour may be 2 minutes or 2 weeks old.
    Negative gaps never come from training samples (history is strictly before the
    impression) and serving refuses them; should one reach this function it lands in the
    "under a minute" bucket.
    """
    g = np.asarray(gap_seconds, dtype=np.float64)
    nan = np.isnan(g)
    minutes = np.where(nan, 0.0, np.maximum(g, 0.0)) / 60.0
    b = np.minimum(np.floor(np.log2(1.0 + minutes)), TIME_GAP_BUCKETS - 1).astype(np.int64)
    return np.where(nan, OOV, b + 2).astype(np.int64)
