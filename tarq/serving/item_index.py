"""Item id → table row, in O(1) per candidate: a direct-address array or an open-addressing hash.

Catalog ids are usually dense-ish integers (auto-increment keys, re-indexed ids), so an array
indexed by ``id − min_id`` answers with one load per candidate; when the ids are too sparse
for that (the span exceeds :data:`DENSE_SLACK` × the number of items, and a few MiB), a
linear-probing hash table over a power-of-two array at most half full does it in ~1–2 probes.
Both are filled once when the ID table is loaded; lookups run in numba without the GIL.
"""

from __future__ import annotations

import numba
import numpy as np

DENSE_SLACK = 8  # a direct-address array up to 8 slots per item (int32: 32 bytes per item) …
DENSE_MIN_SPAN = 1 << 22  # … or 4M slots (16 MiB) whatever the catalog size
_EMPTY = np.iinfo(np.int64).min  # no catalog id is int64's minimum (ids are refused beyond)
_JIT = {"nogil": True, "cache": True, "boundscheck": False}


@numba.njit(**_JIT)
def _dense_lookup(slots, lo, ids, rows, known):
    span = slots.shape[0]
    for i in range(ids.shape[0]):
        off = ids[i] - lo
        r = slots[off] if 0 <= off < span else -1
        known[i] = r >= 0
        rows[i] = max(r, 0)


@numba.njit(**_JIT)
def _mix(x, mask):
    # splitmix64's finaliser: sequential ids spread over the whole table.
    z = np.uint64(x)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return np.int64(z & np.uint64(mask))


@numba.njit(**_JIT)
def _dense_build(slots, lo, item_ids):
    """Fill the direct-address slots; the first row whose id is already there, or -1."""
    for r in range(item_ids.shape[0]):
        off = item_ids[r] - lo
        if slots[off] >= 0:
            return r
        slots[off] = r
    return -1


@numba.njit(**_JIT)
def _hash_build(keys, vals, item_ids):
    """Fill the hash table; the first row whose id is already there, or -1."""
    mask = keys.shape[0] - 1
    for r in range(item_ids.shape[0]):
        x = item_ids[r]
        s = _mix(x, mask)
        while keys[s] != _EMPTY:
            if keys[s] == x:
                return r
            s = (s + 1) & mask
        keys[s] = x
        vals[s] = r
    return -1


@numba.njit(**_JIT)
def _hash_lookup(keys, vals, ids, rows, known):
    mask = keys.shape[0] - 1
    for i in range(ids.shape[0]):
        x = ids[i]
        s = _mix(x, mask)
        r = -1
        while keys[s] != _EMPTY:
            if keys[s] == x:
                r = vals[s]
                break
            s = (s + 1) & mask
        known[i] = r >= 0
        rows[i] = max(r, 0)


class ItemIndex:
    """Rows of item ids in a table.

    Args:
        item_ids: (T,) int64 distinct ids; row t holds ``item_ids[t]``.
    Raises:
        ValueError: an id occurs twice.
    """

    def __init__(self, item_ids: np.ndarray) -> None:
        ids = np.ascontiguousarray(item_ids, dtype=np.int64)
        n = ids.size
        if n and ids.min() == _EMPTY:
            raise ValueError(f"item id {_EMPTY} is reserved")
        self.size = n
        self._lo = int(ids.min()) if n else 0
        span = int(ids.max()) - self._lo + 1 if n else 0
        self.kind = "dense" if span <= max(DENSE_SLACK * n, DENSE_MIN_SPAN) else "hash"
        if self.kind == "dense":
            self._slots = np.full(span, -1, dtype=np.int32 if n < 2**31 else np.int64)
            twice = _dense_build(self._slots, self._lo, ids)
        else:
            cap = 1 << max(int(2 * n - 1).bit_length(), 4)  # load factor ≤ 1/2
            self._keys = np.full(cap, _EMPTY, dtype=np.int64)
            self._vals = np.empty(cap, dtype=np.int64)
            twice = _hash_build(self._keys, self._vals, ids)
        # Found while filling, in numba without the GIL: a sort or np.unique here held it for
        # ~45 ms at 200k items, which serving threads of the same process waited for.
        if twice >= 0:
            raise ValueError(f"the ID table holds item {int(ids[twice])} more than once")

    @property
    def nbytes(self) -> int:
        if self.kind == "dense":
            return int(self._slots.nbytes)
        return int(self._keys.nbytes + self._vals.nbytes)

    def rows(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N,) int64 ids → (rows (N,) int64, known (N,) bool); rows of unknown ids are 0."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        rows = np.empty(ids.size, dtype=np.int64)
        known = np.empty(ids.size, dtype=np.bool_)
        if self.size == 0:
            rows[:] = 0
            known[:] = False
        elif self.kind == "dense":
            _dense_lookup(self._slots, self._lo, ids, rows, known)
        else:
            _hash_lookup(self._keys, self._vals, ids, rows, known)
        return rows, known
