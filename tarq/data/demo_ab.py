"""Closed-loop A/B days of the demo world: each arm's pre-ranking done by its own model.

Users are split into two arms by a stable hash of their id (:func:`arm_of`). On an A/B day
(:func:`append_ab_day`) the world runs as on any other day — the same visits, sessions,
ranking, exposure and click model — except at the pre-ranking step: each request draws a pool
of ``pool_size`` candidates with the world's own candidate generation, the request's arm's
ranker scores them, and its top ``candidates_per_request`` go on to the world's ranker (the
next stage, as on every logged day), which orders them and decides what is shown. The day is
written as a demo load of its own (the next day of the warehouse's demo logs), so the daily
job trains on it the next morning: each arm's model shapes the exposures the models later
learn from, as online.

A ranker is any callable ``(sim, users, t_req, cand, valid) → (R, P) scores`` over world
indices (:class:`tarq.online.ab.ModelRanker` scores with a trained model); the simulator's state
(``sim.w`` the world, ``sim.ring`` the users' behaviours so far) is its view of the request.

Per request the day records the arm, the number of exposed impressions, their expected clicks
under the true click model (Σ p over the exposed, position term included) and the realised
clicks; :func:`arm_summary` turns them into each arm's true CTR and clicks per request, and the
relative lift of arm B over arm A with a bootstrap interval over users.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tarq.data.demo import _append, _Simulator, _splitmix64, parse_day
from tarq.data.demo_replay import topk

ARMS = ("A", "B")
Ranker = Callable[[_Simulator, np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def arm_of(user_id: np.ndarray, salt: int = 0) -> np.ndarray:
    """(N,) int8 arm (0 = A, 1 = B) of raw user ids: one bit of a 64-bit hash of the id and
    ``salt``, so a user stays in one arm for the whole test and another salt reshuffles."""
    h = _splitmix64(np.asarray(user_id, dtype=np.int64).view(np.uint64) ^ np.uint64(salt))
    return (h >> np.uint64(63)).astype(np.int8)


@dataclass(frozen=True)
class ABDay:
    """One A/B day's requests: (R,) arrays, one row per request.

    Attributes:
        day: the simulated day.  arm: (R,) int8.  user_id: (R,) int64 raw ids.
        exposed: (R,) impressions shown.  expected_clicks: (R,) Σ true p over them.
        clicks: (R,) realised clicks.
    """

    day: dt.date
    arm: np.ndarray
    user_id: np.ndarray
    exposed: np.ndarray
    expected_clicks: np.ndarray
    clicks: np.ndarray
    report: dict[str, Any]


class _ABSim(_Simulator):
    """The simulator with each request's candidates pre-ranked by its arm's ranker."""

    def __init__(
        self, base: _Simulator, rankers: tuple[Ranker, Ranker], pool_size: int, salt: int
    ) -> None:
        self.__dict__.update(base.__dict__)
        if pool_size < self.cfg.candidates_per_request:
            raise ValueError(
                f"pool_size {pool_size} is below the {self.cfg.candidates_per_request} "
                "candidates the next stage takes"
            )
        self.rankers, self.pool_size = rankers, pool_size
        self.user_arm = arm_of(self.w.user_id, salt)
        self._t_req: np.ndarray | None = None
        self.rows: list[tuple[np.ndarray, ...]] = []

    def _request(self, rng, users, t_req, slot_len, keys):  # type: ignore[no-untyped-def]
        self._t_req = t_req
        imps, follow = super()._request(rng, users, t_req, slot_len, keys)
        n = len(users)
        req = _row_of(keys, imps["request_key"])
        shown = imps["exposed"]
        p = np.where(shown, 1.0 / (1.0 + np.exp(-(imps["user_part"] + imps["hist_part"]))), 0.0)
        self.rows.append(
            (
                self.user_arm[users],
                self.w.user_id[users],
                np.bincount(req, weights=shown, minlength=n),
                np.bincount(req, weights=np.nan_to_num(p), minlength=n),
                np.bincount(req, weights=imps["clicked"] & shown, minlength=n),
            )
        )
        return imps, follow

    def _candidates(self, rng, users, c=None):  # type: ignore[no-untyped-def]
        if c is not None:  # a caller asking for a pool of its own size
            return super()._candidates(rng, users, c)
        cand, valid = super()._candidates(rng, users, self.pool_size)
        scores = np.full(cand.shape, np.nan, dtype=np.float64)
        arm = self.user_arm[users]
        for a, ranker in enumerate(self.rankers):
            sel = np.flatnonzero(arm == a)
            if sel.size:
                s = ranker(self, users[sel], self._t_req[sel], cand[sel], valid[sel])
                scores[sel] = np.where(valid[sel], s, np.nan)
        top = topk(scores, self.cfg.candidates_per_request)
        return np.take_along_axis(cand, top, axis=1), np.take_along_axis(valid, top, axis=1)

    def figures(self) -> tuple[np.ndarray, ...]:
        return tuple(np.concatenate(a) for a in zip(*self.rows, strict=True))

    def report_extra(self) -> dict[str, Any]:
        arm, _, exposed, expected, clicks = self.figures()
        return {
            "ab": {
                ARMS[a]: {
                    "requests": int((arm == a).sum()),
                    "exposed": int(exposed[arm == a].sum()),
                    "expected_clicks": float(expected[arm == a].sum()),
                    "clicks": int(clicks[arm == a].sum()),
                }
                for a in range(len(ARMS))
            },
            "pool_size": self.pool_size,
        }


def _row_of(keys: np.ndarray, imp_keys: np.ndarray) -> np.ndarray:
    """(M,) row in ``keys`` (R,) (unique request keys) of each impression's key."""
    order = np.argsort(keys, kind="stable")
    return order[np.searchsorted(keys[order], imp_keys)]


def append_ab_day(
    db_path: Path,
    day: dt.date | str,
    rankers: tuple[Ranker, Ranker],
    pool_size: int = 1000,
    salt: int = 0,
) -> ABDay:
    """Simulate the warehouse's next demo day with arm A's requests pre-ranked by
    ``rankers[0]`` and arm B's by ``rankers[1]``, and append it (one load, like
    :func:`tarq.data.demo.append_day`; its report's ``ab`` holds each arm's totals).

    Raises:
        NoDemoLogs / ValueError: as :func:`tarq.data.demo.append_day` (not the next day, a
            day already logged, today or later).
    """
    day = parse_day(day)
    sims: list[_ABSim] = []

    def wrap(sim: _Simulator) -> _Simulator:
        sims.append(_ABSim(sim, rankers, pool_size, salt))
        return sims[-1]

    (report,) = _append(Path(db_path), first=day, through=day, wrap=wrap)
    arm, user_id, exposed, expected, clicks = sims[0].figures()
    return ABDay(day, arm, user_id, exposed, expected, clicks, report)


def _ratio_boot(
    num: np.ndarray, den: np.ndarray, users: np.ndarray, draws: np.ndarray | None, n_boot: int, rng
) -> np.ndarray:
    """(n_boot,) Σnum/Σden over users resampled with replacement."""
    uniq, inv = np.unique(users, return_inverse=True)
    sn = np.bincount(inv, weights=num, minlength=uniq.size)
    sd = np.bincount(inv, weights=den, minlength=uniq.size)
    idx = rng.integers(0, uniq.size, (n_boot, uniq.size)) if draws is None else draws
    return sn[idx].sum(axis=1) / sd[idx].sum(axis=1)


def arm_summary(days: list[ABDay], n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Each arm's true CTR (expected clicks / exposed) and expected clicks per request, with
    95 % intervals (users resampled within each arm: the arms are independent user sets), and
    arm B's relative lift over arm A on both (B / A − 1, the same resamples).

    ``days``: one or several :class:`ABDay` (several: pooled, a user's requests of every day
    resampled together)."""
    rng = np.random.default_rng(seed)
    cat = {
        k: np.concatenate([getattr(d, k) for d in days])
        for k in ABDay.__dataclass_fields__
        if k not in ("day", "report")
    }
    out: dict[str, Any] = {"days": [str(d.day) for d in days]}
    boots: dict[str, dict[str, np.ndarray]] = {}
    for a, name in enumerate(ARMS):
        sel = cat["arm"] == a
        users = cat["user_id"][sel]
        ones = np.ones(int(sel.sum()))
        b = {
            "ctr": _ratio_boot(
                cat["expected_clicks"][sel], cat["exposed"][sel], users, None, n_boot, rng
            ),
            "clicks_per_request": _ratio_boot(
                cat["expected_clicks"][sel], ones, users, None, n_boot, rng
            ),
        }
        boots[name] = b
        exp_sum, n_exp = float(cat["expected_clicks"][sel].sum()), float(cat["exposed"][sel].sum())
        out[name] = {
            "requests": int(sel.sum()),
            "users": int(np.unique(users).size),
            "exposed": int(n_exp),
            "clicks": int(cat["clicks"][sel].sum()),
            "realised_ctr": float(cat["clicks"][sel].sum() / max(n_exp, 1)),
            "ctr": _interval(exp_sum / max(n_exp, 1), b["ctr"]),
            "clicks_per_request": _interval(
                exp_sum / max(int(sel.sum()), 1), b["clicks_per_request"]
            ),
        }
    out["lift"] = {
        k: _interval(
            out["B"][k]["mean"] / out["A"][k]["mean"] - 1.0, boots["B"][k] / boots["A"][k] - 1.0
        )
        for k in ("ctr", "clicks_per_request")
    }
    return out


def _interval(mean: float, boot: np.ndarray) -> dict[str, float]:
    lo, hi = np.quantile(boot, [0.025, 0.975])
    return {"mean": float(mean), "low": float(lo), "high": float(hi)}
