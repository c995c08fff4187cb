"""Open-loop replay of a demo test day: every request with a large candidate pool and the
world's true click probability of each candidate (the offline half of a simulated A/B).

Logged exposures say nothing about the items a user was never shown. The demo world can:
:func:`capture_pools` rebuilds it in its state at the start of the test day (the world from its
seed, interests drifted, each user's history as logged before that midnight), simulates the day
again — the same requests at the same times with the same histories as the logs hold, checked
request by request against the logged ``request_key`` — and at each request draws a pool of
``pool_size`` candidates with the world's own candidate generation (its retrieval mix over live
items, from a stream of its own so the day's traffic is unchanged) and computes each
candidate's true click probability at the first position (the click model without the
position term's cost: pre-ranking chooses before anything is shown).

:func:`topk_report` then judges any scores of the same pools against that truth: the expected
clicks of a scorer's top k relative to the oracle's top k (the true argmax), recall of the
oracle's top k, and agreement with a reference scorer's top k (TA's, for the paper's claim that
TARQ ranks like TA at two-tower cost).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tarq.data.demo import _read_chain, _Simulator, rebuild
from tarq.data.demo_world import rng_for
from tarq.store import sqlfiles
from tarq.store.warehouse import open_db

POOL_STREAM = 11  # rng_for(seed, POOL_STREAM, day): the pools' own stream
LOGIT_CHUNK = 64  # requests per click-model call (bounds the (R, N, H) arrays)


@dataclass(frozen=True)
class RequestPools:
    """The test day's requests, each with a candidate pool and the true click probabilities.

    Attributes:
        day: the replayed day.
        request_key: (R,) int64, the logged impressions' ``request_key`` of each request.
        user_id: (R,) int64 raw user ids.  ts: (R,) int64 request times, µs since the epoch.
        items: (R, N) int64 raw item ids of each pool; −1 where the pool has fewer (duplicates
            the world's candidate generation could not replace).
        p_true: (R, N) float32 true click probability at the first position; NaN where
            ``items`` is −1.
    """

    day: dt.date
    request_key: np.ndarray
    user_id: np.ndarray
    ts: np.ndarray
    items: np.ndarray
    p_true: np.ndarray

    def __len__(self) -> int:
        return int(self.request_key.size)


class _Capture(_Simulator):
    """The simulator, recording a candidate pool with true probabilities at every request."""

    def __init__(self, base: _Simulator, pool_size: int, pool_rng: np.random.Generator) -> None:
        self.__dict__.update(base.__dict__)
        self.pool_size, self.pool_rng = pool_size, pool_rng
        self.captured: list[tuple[np.ndarray, ...]] = []
        self.replayed: list[dict[str, np.ndarray]] = []

    def _request(self, rng, users, t_req, slot_len, keys):  # type: ignore[no-untyped-def]
        cand, valid = self._candidates(self.pool_rng, users, self.pool_size)
        p = np.full(cand.shape, np.nan, dtype=np.float32)
        for lo in range(0, len(users), LOGIT_CHUNK):
            part = slice(lo, lo + LOGIT_CHUNK)
            er, ec = np.nonzero(valid[part])
            user_part, hist_part = self._logits(
                users[part], cand[part], t_req[part], er, ec, np.zeros(er.size, dtype=np.int64)
            )
            p[part][er, ec] = 1.0 / (1.0 + np.exp(-(user_part + hist_part)))
        self.captured.append((keys.copy(), users.copy(), t_req.copy(), cand, valid, p))
        imps, follow = super()._request(rng, users, t_req, slot_len, keys)
        self.replayed.append(imps)
        return imps, follow


def capture_pools(
    db_path: Path,
    day: dt.date | str,
    pool_size: int = 1000,
    seed: int = 0,
) -> RequestPools:
    """Replay demo day ``day`` of the warehouse and capture every request's pool.

    Args:
        db_path: a warehouse holding demo logs that include ``day`` (opened read-only).
        day: the day to replay (the daily job's test day: its run date − 1).
        pool_size: candidates per request (N), drawn by the world's candidate generation.
        seed: the pools' stream (the day's traffic does not depend on it).

    Raises:
        ValueError: no demo logs, ``day`` outside them, or the replay does not reproduce the
            logged requests (a warehouse whose demo rows were changed).
    """
    day = dt.date.fromisoformat(str(day))
    with open_db(db_path, read_only=True) as con:
        chain = _read_chain(con, Path(db_path))
        if not chain.start_date <= day <= chain.last_day:
            raise ValueError(
                f"{day} is not a day of the demo logs of {db_path} "
                f"({chain.start_date} .. {chain.last_day})"
            )
        item_base, _, user_base, _ = sqlfiles.run(
            con, "demo/load_ids", {"load_id": chain.base}
        ).fetchone()
        start = dt.datetime.combine(day, dt.time())
        world, sim = rebuild(
            con, chain, int(item_base), int(user_base), day - dt.timedelta(days=1), before=start
        )
        span = {"lo": start, "hi": start + dt.timedelta(days=1)}
        logged = sqlfiles.run(con, "demo/request_keys", span).fetchnumpy()
        truth = sqlfiles.run(con, "demo/truth_of_day", span).fetchnumpy()
    index = (day - chain.start_date).days
    cap = _Capture(sim, pool_size, rng_for(seed, POOL_STREAM, index))
    cap.start_day(index)
    for b, lo in enumerate(range(0, world.n_users, chain.cfg.user_block)):
        cap.simulate_block(index, b, np.arange(lo, min(lo + chain.cfg.user_block, world.n_users)))
    keys, users, ts, cand, valid, p = (np.concatenate(a) for a in zip(*cap.captured, strict=True))
    order = np.argsort(keys, kind="stable")
    want = sorted(str(r) for r in logged["request_id"])
    got = sorted(format(int(k) & 0xFFFF_FFFF_FFFF_FFFF, "016x") for k in keys)
    if got != want:
        raise ValueError(
            f"the replay of {day} does not reproduce its {len(want):,} logged requests "
            f"({keys.size:,} replayed): the demo rows of {db_path} were changed"
        )
    _check_truth(cap.replayed, truth, world.item_id, day)
    items = np.where(valid, world.item_id[cand], -1)
    return RequestPools(
        day, keys[order], world.user_id[users][order], ts[order], items[order], p[order]
    )


def _check_truth(
    replayed: list[dict[str, np.ndarray]],
    truth: dict[str, np.ndarray],
    item_id: np.ndarray,
    day: dt.date,
) -> None:
    """The replay's click-model parts of the exposed impressions equal the recorded ones: the
    rebuilt histories and interests are the day's (a request key alone would not show it)."""
    imps = {k: np.concatenate([r[k] for r in replayed]) for k in replayed[0]}
    shown = ~np.isnan(imps["user_part"])
    keys = zip(
        imps["request_key"][shown].tolist(), item_id[imps["item"][shown]].tolist(), strict=True
    )
    parts = zip(imps["user_part"][shown].tolist(), imps["hist_part"][shown].tolist(), strict=True)
    mine = dict(zip(keys, parts, strict=True))
    rows = zip(
        truth["request_key"].tolist(),
        truth["item_id"].tolist(),
        truth["user_part"].tolist(),
        truth["hist_part"].tolist(),
        strict=True,
    )
    bad = sum(
        1
        for key, item, up, hp in rows
        if (got := mine.get((key, item))) is None
        or abs(got[0] - up) > 1e-4
        or abs(got[1] - hp) > 1e-4
    )
    if bad or len(mine) != truth["request_key"].size:
        raise ValueError(
            f"the replay of {day} does not reproduce the recorded click model of {bad:,} of "
            f"{truth['request_key'].size:,} exposed impressions ({len(mine):,} replayed): the "
            "demo rows were changed"
        )


def topk(scores: np.ndarray, k: int) -> np.ndarray:
    """(R, k) column indices of each row's k highest scores (NaN never chosen), best first;
    ties go to the lower index."""
    s = np.where(np.isnan(scores), -np.inf, scores)
    part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    keyed = np.take_along_axis(-s, part, axis=1)
    o = np.lexsort((part, keyed), axis=1)
    return np.take_along_axis(part, o, axis=1)


def topk_report(
    p_true: np.ndarray,
    scores: np.ndarray,
    k: int,
    reference: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Per request (R,), how a scorer's top k of each pool fares against the truth.

    Args:
        p_true: (R, N) true click probabilities (NaN: no candidate).
        scores: (R, N) the scorer's scores of the same candidates (higher = better).
        k: how many go on to the next stage.
        reference: (R, N) another scorer's scores (e.g. TA's) for ``agreement``.

    Returns:
        ``clicks_ratio``: Σ p_true over the scorer's top k / Σ over the oracle's top k (1 =
        the best possible choice); ``recall``: share of the oracle's top k in the scorer's;
        ``agreement`` (with ``reference``): share of the reference's top k in the scorer's.
    """
    valid = ~np.isnan(p_true)
    if (valid.sum(axis=1) < k).any():
        raise ValueError(f"every pool needs at least k = {k} candidates")
    s = np.where(valid, scores, np.nan)
    mine, best = topk(s, k), topk(p_true, k)
    pt = np.nan_to_num(p_true)
    got = np.take_along_axis(pt, mine, axis=1).sum(axis=1)
    ideal = np.take_along_axis(pt, best, axis=1).sum(axis=1)
    out = {"clicks_ratio": got / ideal, "recall": _overlap(mine, best) / k}
    if reference is not None:
        out["agreement"] = _overlap(mine, topk(np.where(valid, reference, np.nan), k)) / k
    return out


def _overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(R,) size of each row's intersection of index sets a (R, k) and b (R, k)."""
    return (a[:, :, None] == b[:, None, :]).any(axis=2).sum(axis=1)


def summary(values: dict[str, np.ndarray], users: np.ndarray, n_boot: int = 1000) -> dict[str, Any]:
    """Mean of each per-request figure with a 95 % bootstrap interval, users resampled."""
    rng = np.random.default_rng(0)
    uniq, inv = np.unique(users, return_inverse=True)
    out: dict[str, Any] = {}
    for name, v in values.items():
        sums = np.bincount(inv, weights=v, minlength=uniq.size)
        counts = np.bincount(inv, minlength=uniq.size)
        draws = rng.integers(0, uniq.size, (n_boot, uniq.size))
        boot = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
        lo, hi = np.quantile(boot, [0.025, 0.975])
        out[name] = {"mean": float(v.mean()), "low": float(lo), "high": float(hi)}
    return out
