"""Collision resolution: items with distinct inputs get distinct semantic-ID tuples.

Greedy residual assignment gives two items the same m-tuple whenever their latents fall in
the same cell of all m levels. On a large catalog that is common (issue #24, benchmarks/README
"Codebook health"): as training goes on, items of one category and brand come to lie closer
than the last levels' K entries can separate, so 7–14 % of 1.2M items shared their tuple
with an item of other inputs although every codebook entry was in use.

:func:`resolve_collisions` keeps the greedy tuple of one item class per tuple (a class: the
items with equal encoded inputs, which any model maps to one latent) and moves each other
class to the free tuple nearest its latent that differs only in the last ``j`` levels, with
``j`` = 1, then 2, then 3 (exact search over the K^j endings, by ‖z − ẑ‖²). This is the
deterministic counterpart of LC-Rec's uniform semantic mapping on the last level (Zheng et
al., 2024, which applies a Sinkhorn-balanced assignment to the last level of conflicting
items only) and of TIGER's disambiguation: the coarse levels, which carry the item's
semantics, never change, and the reconstruction error grows by the least the free tuples
allow (measured in benchmarks/README "Collision resolution").

Which class keeps a contested tuple: the one served with it (a warm day's ``prior``), then
the one nearest it, then the one with the lowest first row. A moved class whose served tuple
is free and shares the tuple's coarse levels takes it back first, so a warm day re-publishes
yesterday's resolution instead of inventing a new one.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

#: Ending depths tried in turn: the last 1, 2, 3 levels of the tuple may change.
MAX_DEPTH = 3
#: No depth whose K^j endings exceed this is searched (K = 16: depth 3 is 4,096 endings).
MAX_ENDINGS = 65536
_BLOCK_FLOATS = 1 << 22  # distances computed per block of movers: ~16 MB of float32


@dataclass(frozen=True)
class Resolution:
    """What :func:`resolve_collisions` did.

    Attributes:
        codes: (N, m) int64 resolved codes, rows as given.
        classes_contested: item classes (distinct inputs) sharing their greedy tuple with
            another class.
        classes_moved: classes given another tuple.
        items_moved: items given another tuple (a class moves with all its items).
        moved_by_depth: ``[d1, d2, …]``: classes moved within their last 1, 2, … levels.
        moved_to_served: moved classes that took back their served tuple (warm days).
        unresolved_classes: classes left sharing a tuple: no free tuple within MAX_DEPTH.
        sq_err_added: Σ over items of ‖z − ẑ_new‖² − ‖z − ẑ_greedy‖².
        greedy_collision_rate: share of items sharing their given (greedy) tuple.
        greedy_collision_rate_distinct_inputs: share of items sharing their given tuple with
            an item of other inputs (:func:`tarq.metrics.collision_rate_distinct` of
            ``codes``): what the model itself separates, and what a collapse shows in.
    """

    codes: np.ndarray
    classes_contested: int
    classes_moved: int
    items_moved: int
    moved_by_depth: list[int]
    moved_to_served: int
    unresolved_classes: int
    sq_err_added: float
    greedy_collision_rate: float = 0.0
    greedy_collision_rate_distinct_inputs: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The report's ``resolution`` entry (without the codes)."""
        return {
            "method": f"free tuple nearest z differing in the last 1..{MAX_DEPTH} levels",
            "classes_contested": self.classes_contested,
            "classes_moved": self.classes_moved,
            "items_moved": self.items_moved,
            "moved_by_depth": self.moved_by_depth,
            "moved_to_served": self.moved_to_served,
            "unresolved_classes": self.unresolved_classes,
            "sq_err_added": self.sq_err_added,
            "greedy_collision_rate": self.greedy_collision_rate,
            "greedy_collision_rate_distinct_inputs": self.greedy_collision_rate_distinct_inputs,
        }


def row_keys(a: np.ndarray) -> np.ndarray:
    """(N,) keys equal exactly when rows of the (N, F) integer array ``a`` are equal."""
    a = np.ascontiguousarray(a, dtype=np.int64)
    return a.view(np.dtype((np.void, 8 * a.shape[1]))).ravel()


def _tuple_ints(codes: np.ndarray, k: int) -> np.ndarray | None:
    """(N,) int64 base-K numbers of (N, m) codes, or None when K^m overflows int64."""
    m = codes.shape[1]
    if m * np.log2(max(k, 2)) >= 62:
        return None
    return codes.astype(np.int64) @ (k ** np.arange(m - 1, -1, -1, dtype=np.int64))


def resolve_collisions(
    codes: np.ndarray,
    inputs: np.ndarray,
    latent: Callable[[np.ndarray], np.ndarray],
    codebooks: np.ndarray,
    prior: np.ndarray | None = None,
) -> Resolution:
    """Give every class of items with distinct inputs its own tuple where a free one is near.

    Args:
        codes: (N, m) greedy (or sticky) codes of the catalog.
        inputs: (N, F) the items' encoded model inputs, same rows.
        latent: encoded inputs (n, F) → latents z (n, dz) float32; called once, on the first
            row of each contested class.
        codebooks: (m, K, dz) float32.
        prior: (N, m) served codes (−1 rows: none), or None (a cold day).
    Returns:
        The :class:`Resolution`; its ``codes`` equal ``codes`` where nothing was contested.
    """
    codes = np.asarray(codes, dtype=np.int64)
    n, m = codes.shape
    k = codebooks.shape[1]
    out = codes.copy()
    empty = Resolution(out, 0, 0, 0, [], 0, 0, 0.0)
    if n < 2:
        return empty
    ints = _tuple_ints(codes, k)
    tkey = ints if ints is not None else row_keys(codes)
    first, cls, t_of_cls, greedy = _classes(codes, inputs, tkey)
    contested = np.flatnonzero(np.bincount(t_of_cls)[t_of_cls] > 1)  # class indices
    if contested.size == 0:
        return replace(empty, greedy_collision_rate=greedy[0])
    rows = first[contested]  # one row per contested class
    z = np.asarray(latent(np.ascontiguousarray(inputs[rows])), dtype=np.float32)
    err = _sq_err(z, codebooks, codes[rows])
    served = prior[rows] if prior is not None else np.full((rows.size, m), -1, np.int64)
    not_held = ~(served == codes[rows]).all(1)
    order = np.lexsort((rows, err, not_held, t_of_cls[contested]))
    owner = np.ones(order.size, bool)
    tc = t_of_cls[contested][order]
    owner[1:] = tc[1:] != tc[:-1]

    def key(c: np.ndarray) -> Any:
        return int(_tuple_ints(c[None], k)[0]) if ints is not None else row_keys(c[None])[0]

    occupied = set(tkey.tolist())
    new = codes[rows].copy()
    left, to_served = _back_to_served(order[~owner], served, new, occupied, key)
    by_depth = []
    for depth in range(1, min(MAX_DEPTH, m) + 1):
        if not left or k**depth > MAX_ENDINGS:
            break
        left, moved = _move(np.array(left, np.int64), depth, z, new, codebooks, occupied, key)
        by_depth.append(moved)
    changed = np.flatnonzero((new != codes[rows]).any(1))
    item_moved = np.isin(cls, contested[changed])
    class_new = np.full((first.size, m), -1, np.int64)
    class_new[contested] = new
    out[item_moved] = class_new[cls[item_moved]]
    sizes = np.bincount(cls, minlength=first.size)[contested[changed]]
    added = (_sq_err(z[changed], codebooks, new[changed]) - err[changed]) * sizes
    return Resolution(
        codes=out,
        classes_contested=int(contested.size),
        classes_moved=int(changed.size),
        items_moved=int(item_moved.sum()),
        moved_by_depth=by_depth,
        moved_to_served=to_served,
        unresolved_classes=len(left),
        sq_err_added=float(added.astype(np.float64).sum()),
        greedy_collision_rate=greedy[0],
        greedy_collision_rate_distinct_inputs=greedy[1],
    )


def _classes(
    codes: np.ndarray, inputs: np.ndarray, tkey: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float]]:
    """The item classes: distinct (tuple, inputs) pairs of the (N, m) codes and (N, F) inputs.

    Returns (first row of each class (C,), class of each row (N,), tuple index of each class
    (C,), (greedy collision rate, greedy collision rate among distinct inputs)).
    """
    _, first, cls = np.unique(
        row_keys(np.concatenate([codes, np.asarray(inputs, np.int64)], 1)),
        return_index=True,
        return_inverse=True,
    )
    cls = cls.ravel()
    _, t_of_cls = np.unique(tkey[first], return_inverse=True)
    t_of_cls = t_of_cls.ravel()
    shared = np.bincount(t_of_cls)[t_of_cls] > 1  # per class: its tuple holds another class
    _, t_inv, t_counts = np.unique(tkey, return_inverse=True, return_counts=True)
    greedy = float((t_counts[t_inv.ravel()] > 1).mean()), float(shared[cls].mean())
    return first, cls, t_of_cls, greedy


def _back_to_served(
    movers: np.ndarray,
    served: np.ndarray,
    new: np.ndarray,
    occupied: set[Any],
    key: Callable[[np.ndarray], Any],
) -> tuple[list[int], int]:
    """Movers whose served tuple is free and keeps their coarse levels take it back (updates
    ``new`` and ``occupied``). Returns (the movers left, how many took their served tuple)."""
    m = new.shape[1]
    left, taken = [], 0
    for p in movers.tolist():
        s = served[p]
        if s[0] >= 0 and (s[: m - MAX_DEPTH] == new[p, : m - MAX_DEPTH]).all():
            ks = key(s)
            if ks not in occupied:
                occupied.add(ks)
                new[p] = s
                taken += 1
                continue
        left.append(p)
    return left, taken


def _sq_err(z: np.ndarray, codebooks: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """(n,) ‖z − ẑ‖² of latents (n, dz) under codes (n, m), in float64."""
    m = codebooks.shape[0]
    z_hat = codebooks[np.arange(m)[None, :], codes].sum(1)
    return ((z.astype(np.float64) - z_hat) ** 2).sum(1)


def _move(
    movers: np.ndarray,
    depth: int,
    z: np.ndarray,
    new: np.ndarray,
    codebooks: np.ndarray,
    occupied: set[Any],
    key: Callable[[np.ndarray], Any],
) -> tuple[list[int], int]:
    """Move each mover (rows of ``z``/``new``, in order) to the free tuple nearest its latent
    among those that keep its first m − ``depth`` levels; updates ``new`` and ``occupied``.

    Returns (the movers left without a free tuple, how many moved).
    """
    m, k, _ = codebooks.shape
    lv0 = m - depth
    endings = np.array(list(itertools.product(range(k), repeat=depth)), np.int64)  # (k^j, j)
    recon = codebooks[np.arange(lv0, m)[None, :], endings].sum(1)  # (k^j, dz)
    recon_sq = (recon.astype(np.float64) ** 2).sum(1)
    block = max(1, _BLOCK_FLOATS // len(endings))
    left, moved = [], 0
    for s in range(0, movers.size, block):
        idx = movers[s : s + block]
        prefix = codebooks[np.arange(lv0)[None, :], new[idx, :lv0]].sum(1)
        r = (z[idx] - prefix).astype(np.float64)
        dist = recon_sq[None, :] - 2.0 * r @ recon.T.astype(np.float64)  # + ‖r‖², constant
        ranked = np.argsort(dist, axis=1, kind="stable")
        for a, p in enumerate(idx.tolist()):
            cand = new[p].copy()
            for e in ranked[a].tolist():
                cand[lv0:] = endings[e]
                kc = key(cand)
                if kc not in occupied:
                    occupied.add(kc)
                    new[p] = cand
                    moved += 1
                    break
            else:
                left.append(p)
    return left, moved
