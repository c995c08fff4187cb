"""The demo-log generator behind ``tarq demo-data``: realistic multi-day click logs in DuckDB.

Users visit the app several times a day. Each visit is a browsing session (behaviours ``pv``,
``cart``, ``fav``, ``buy``) that usually ends in a feed request: candidates from several
retrieval sources are ranked by an upstream ranker, the top slots are exposed, and exposed
items are clicked with a probability that depends on user-level taste *and* on individual
behaviours of the last hours and days (which of the user's interests the item hits, similarity
to specific history items, repeats, complements). Clicks are followed by ``pv`` behaviours (and
sometimes cart/fav/buy), so the history before each impression is what the user actually did.
Every exposed impression's true logit and its parts go to the side table ``demo_truth``
(:mod:`tarq.data.demo_oracle` scores models against it). docs/demo-data.md gives the formulas.

The simulation runs day by day and, within a day, in fixed blocks of users, each with its own
PCG64 stream, so memory is bounded by one block and results do not depend on anything but
``(preset, seed, start_date)``. Without dates the window ends yesterday (UTC). Later days are
appended one at a time (:func:`append_day`, :func:`append_days`: ``tarq demo-data
--next-day``): the world and its state at the end of the logged days are rebuilt from the
warehouse (the window's report, the users' last behaviours), so an appended day holds exactly
the rows the generator would have written had it gone on for one more day.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from tarq.data.demo_world import (
    ACTIONS,
    BUY,
    CART,
    FAV,
    PV,
    ClickModel,
    DemoConfig,
    World,
    build_world,
    preset_config,
    rng_for,
    sample_in_ranges,
)
from tarq.data.lake import flush, init_lake, raw_target
from tarq.dates import utc_now
from tarq.store import sqlfiles
from tarq.store.warehouse import add_side_column, connect

log = logging.getLogger(__name__)

DAY_US = 86_400 * 1_000_000
EPOCH = dt.datetime(1970, 1, 1)
USER_SIDE_COLUMNS = ("gender", "age_bucket", "segment")
ITEM_SIDE_COLUMNS = ("shop_id",)
RECENT = 10  # history retrieval and revisits draw from the last RECENT behaviours
# Retrieval-source mix of the candidates of a request (popular, interest, history, complement).
SOURCE_CUTS = (0.30, 0.65, 0.90)
# Session item modes: focal brand, focal category, revisit a recent item, another interest.
SESSION_CUTS = (0.30, 0.80, 0.90)
# Session focal category: an interest, the complement of a recent cart/buy, or exploration.
FOCAL_CUTS = (0.72, 0.80)
# Extra action after a pv: (buy, cart, fav) cumulative probabilities, in sessions / after a click.
SESSION_EXTRA = (0.025, 0.085, 0.115)
CLICK_EXTRA = (0.06, 0.18, 0.24)
WEEKEND_BOOST = 1.15
MEMORY_LIMIT = "1GB"  # DuckDB's buffer pool while generating
COMMIT_ROWS = 8_000_000  # commit once this many rows are pending (only the large preset does)


def _diurnal_inverse_cdf() -> tuple[np.ndarray, np.ndarray]:
    """(cdf, day fraction) knots of the time-of-day distribution: a morning, a lunch and a
    stronger evening peak over a low night floor."""
    h = np.linspace(0.0, 24.0, 97)
    f = (
        0.25
        + 0.3 * np.exp(-(((h - 8.5) / 1.5) ** 2))
        + 0.6 * np.exp(-(((h - 12.5) / 3.0) ** 2))
        + 1.0 * np.exp(-(((h - 21.0) / 2.0) ** 2))
    )
    cdf = np.concatenate([[0.0], np.cumsum((f[1:] + f[:-1]) / 2)])
    return cdf / cdf[-1], h / 24.0


_CDF, _FRAC = _diurnal_inverse_cdf()


@dataclass
class _Ring:
    """Each user's last ``H`` behaviours, oldest first, right-aligned (−1 = empty slot)."""

    item: np.ndarray  # (U, H) int64
    ts: np.ndarray  # (U, H) int64 µs since the epoch
    act: np.ndarray  # (U, H) int8

    @classmethod
    def empty(cls, n_users: int, h: int) -> _Ring:
        return cls(
            np.full((n_users, h), -1, dtype=np.int64),
            np.zeros((n_users, h), dtype=np.int64),
            np.zeros((n_users, h), dtype=np.int8),
        )

    def push(
        self,
        users: np.ndarray,
        item: np.ndarray,
        ts: np.ndarray,
        act: np.ndarray,
        valid: np.ndarray,
    ) -> None:
        """Append (R, M) chronologically ordered events (``valid`` marks real ones) per user."""
        h = self.item.shape[1]
        ci = np.concatenate([self.item[users], item], axis=1)
        ct = np.concatenate([self.ts[users], ts], axis=1)
        ca = np.concatenate([self.act[users], act.astype(np.int8)], axis=1)
        cv = np.concatenate([self.item[users] >= 0, valid], axis=1)
        key = np.where(cv, np.arange(ci.shape[1])[None, :], -1)
        order = np.argsort(key, axis=1, kind="stable")[:, -h:]
        keep = np.take_along_axis(cv, order, axis=1)
        self.item[users] = np.where(keep, np.take_along_axis(ci, order, axis=1), -1)
        self.ts[users] = np.take_along_axis(ct, order, axis=1)
        self.act[users] = np.take_along_axis(ca, order, axis=1)

    @classmethod
    def from_rows(
        cls,
        n_users: int,
        h: int,
        user: np.ndarray,
        item: np.ndarray,
        ts: np.ndarray,
        act: np.ndarray,
    ) -> _Ring:
        """The ring holding logged behaviours: rows grouped by user, oldest first, at most
        ``h`` per user (what :meth:`push` kept). Slots left empty hold −1 like a new ring's;
        the times and actions of empty slots never enter a draw or a logit."""
        ring = cls.empty(n_users, h)
        if len(user):
            ends = np.cumsum(np.bincount(user, minlength=n_users))
            slot = h - (ends[user] - np.arange(len(user)))
            ring.item[user, slot] = item
            ring.ts[user, slot] = ts
            ring.act[user, slot] = act
        return ring


@dataclass
class _Stats:
    """Running counts for the report."""

    impressions: int = 0
    exposed: int = 0
    clicked: int = 0
    behaviors: int = 0
    actions: np.ndarray = field(default_factory=lambda: np.zeros(4, dtype=np.int64))
    per_day: dict[str, int] = field(default_factory=dict)
    # Σ, Σx² of the user-level and history parts of exposed logits (variance decomposition).
    user_sum: float = 0.0
    user_sq: float = 0.0
    hist_sum: float = 0.0
    hist_sq: float = 0.0

    def add_logits(self, user_part: np.ndarray, hist_part: np.ndarray) -> None:
        self.user_sum += float(user_part.sum())
        self.user_sq += float(np.square(user_part, dtype=np.float64).sum())
        self.hist_sum += float(hist_part.sum())
        self.hist_sq += float(np.square(hist_part, dtype=np.float64).sum())

    def sd(self, s: float, sq: float) -> float:
        n = max(self.exposed, 1)
        return float(np.sqrt(max(sq / n - (s / n) ** 2, 0.0)))


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """Bijective 64-bit mixer: distinct inputs give distinct, random-looking request ids."""
    x = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class _Simulator:
    """Day-by-day traffic on a :class:`World`; yields impression and behaviour chunks."""

    def __init__(self, cfg: DemoConfig, world: World, seed: int, start_date: dt.date) -> None:
        self.cfg, self.w, self.seed = cfg, world, seed
        self.cm = cfg.click
        self.start_us = int((dt.datetime.combine(start_date, dt.time()) - EPOCH).total_seconds())
        self.start_us *= 1_000_000
        self.start_weekday = start_date.weekday()
        self.ring = _Ring.empty(world.n_users, self.cm.history_len)
        self.stats = _Stats()
        self.shown = np.zeros(world.n_items, dtype=bool)
        joined = np.mean([(world.join_day <= d).mean() for d in range(cfg.n_days)])
        per_user = cfg.impressions_per_day / (
            cfg.candidates_per_request * cfg.request_prob * cfg.n_users * joined
        )
        self.visit_rate = per_user  # mean visits per joined user-day (before the weekday factor)
        self.mix = np.uint64(int(rng_for(seed, 3).integers(0, 2**62)))
        self.sim_w = np.asarray(self.cm.similarity_action_w, dtype=np.float32)
        self.comp_w = np.asarray(self.cm.complement_action_w, dtype=np.float32)
        self.price_sens = np.asarray((0.0, *self.cm.price_sensitivity), dtype=np.float32)

    # ------------------------------------------------------------------ day state

    def drift(self, day: int) -> None:
        """Day ``day``'s interest drift (from day 1 on): its own stream ``(seed, 1, day)``,
        independent of the traffic, so a continuation replays it without simulating visits."""
        if day <= 0:
            return
        w, cfg = self.w, self.cfg
        rng = rng_for(self.seed, 1, day)
        n_u = w.n_users
        n_int = (w.interest_cat >= 0).sum(axis=1)
        swap = rng.random(n_u) < cfg.drift_prob
        slot = (rng.random(n_u) * n_int).astype(np.int64)
        fresh = w.draw_interests(rng, np.arange(n_u))
        rows = np.flatnonzero(swap)
        w.interest_cat[rows, slot[rows]] = fresh[rows]
        jitter = np.exp(rng.normal(0.0, cfg.drift_sd, w.interest_w.shape))
        iw = w.interest_w * jitter * (w.interest_cat >= 0)
        w.interest_w = iw / iw.sum(axis=1, keepdims=True)

    def start_day(self, day: int) -> None:
        """Drift interests (from day 1 on), recompute taste vectors and the live catalog."""
        w = self.w
        self.drift(day)
        cats = np.maximum(w.interest_cat, 0)
        self.taste = np.einsum("uk,ukd->ud", w.interest_w, w.cat_vec[cats]).astype(np.float32)
        live = np.where(w.item_launch <= day, w.item_weight, 0.0)
        self.cumz = np.concatenate([[0.0], np.cumsum(live)])
        self.n_items = w.n_items

    # ------------------------------------------------------------------ item draws

    def _global(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` popularity-weighted live items."""
        return self._global_from(rng.random(n))

    def _global_from(self, u: np.ndarray) -> np.ndarray:
        zero = np.zeros(len(u), dtype=np.int64)
        idx, _ = sample_in_ranges(self.cumz, zero, zero + self.n_items, u)
        return idx

    def _in_cats(self, rng: np.random.Generator, cats: np.ndarray) -> np.ndarray:
        """One popularity-weighted live item per category (−1 or no live item → global)."""
        n = len(cats)
        c = np.maximum(cats, 0)
        u = rng.random((2, n))  # both draws always, so the stream does not depend on fallbacks
        idx, ok = sample_in_ranges(self.cumz, self.w.cat_start[c], self.w.cat_start[c + 1], u[0])
        bad = ~ok | (cats < 0)
        if bad.any():
            idx[bad] = self._global_from(u[1, bad])
        return idx

    def _in_brands(self, rng: np.random.Generator, brands: np.ndarray) -> np.ndarray:
        """One popularity-weighted live item per brand (no live item → its category)."""
        idx, ok = sample_in_ranges(
            self.cumz,
            self.w.brand_start[brands],
            self.w.brand_start[brands + 1],
            rng.random(len(brands)),
        )
        if not ok.all():
            idx[~ok] = self._in_cats(rng, self.w.brand_cat[brands[~ok]])
        return idx

    def _interest(self, rng: np.random.Generator, users: np.ndarray) -> np.ndarray:
        """One current interest category per row, drawn by interest weight."""
        cw = np.cumsum(self.w.interest_w[users], axis=1)
        k = (cw < rng.random(len(users))[:, None]).sum(axis=1)
        k = np.minimum(k, cw.shape[1] - 1)
        return self.w.interest_cat[users, k]

    def _recent(self, rng: np.random.Generator, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A random item among each user's last RECENT behaviours, and whether there was one."""
        ring = self.ring.item[users]
        h = ring.shape[1]
        m = np.minimum((ring >= 0).sum(axis=1), RECENT)
        j = h - 1 - (rng.random(len(users)) * m).astype(np.int64)
        return ring[np.arange(len(users)), np.clip(j, 0, h - 1)], m > 0

    def _complement_of_recent_purchase(self, users: np.ndarray) -> np.ndarray:
        """Complement category of each user's latest cart/buy that has one (−1 if none)."""
        ring_item, ring_act = self.ring.item[users], self.ring.act[users]
        comp = np.where(ring_item >= 0, self.w.cat_comp[self.w.item_cat[ring_item]], -1)
        ok = ((ring_act == CART) | (ring_act == BUY)) & (comp >= 0)
        last = ring_item.shape[1] - 1 - np.argmax(ok[:, ::-1], axis=1)
        return np.where(ok.any(axis=1), comp[np.arange(len(users)), last], -1)

    # ------------------------------------------------------------------ visits

    def _session(
        self, rng: np.random.Generator, users: np.ndarray, s0: np.ndarray, span_len: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Browsing before a visit's request: (item, ts, action, valid), each (R, 2M), in time
        order (each item's pv, then its optional extra action)."""
        cfg, n = self.cfg, len(users)
        n_items = np.minimum(1 + rng.poisson(cfg.session_items_mean - 1, n), cfg.session_items_max)
        m = int(n_items.max())
        u_src = rng.random(n)
        comp = self._complement_of_recent_purchase(users)
        interest = self._interest(rng, users)
        explore = self.w.item_cat[self._global(rng, n)]
        focal = np.where(
            u_src < FOCAL_CUTS[0],
            interest,
            np.where(u_src < FOCAL_CUTS[1], np.where(comp >= 0, comp, interest), explore),
        )
        focal_brand = self.w.item_brand[self._in_cats(rng, focal)]

        mode = rng.random((n, m))
        items = np.empty((n, m), dtype=np.int64)
        rows = np.broadcast_to(np.arange(n)[:, None], (n, m))
        sel = mode < SESSION_CUTS[0]
        items[sel] = self._in_brands(rng, focal_brand[rows[sel]])
        sel = (mode >= SESSION_CUTS[0]) & (mode < SESSION_CUTS[2])
        items[sel] = self._in_cats(rng, focal[rows[sel]])
        sel = (mode >= SESSION_CUTS[1]) & (mode < SESSION_CUTS[2])
        if sel.any():  # revisits overwrite their category draw where the user has a history
            rev, ok = self._recent(rng, users[rows[sel]])
            items[sel] = np.where(ok, rev, items[sel])
        sel = mode >= SESSION_CUTS[2]
        items[sel] = self._in_cats(rng, self._interest(rng, users[rows[sel]]))

        j = np.arange(m)[None, :]
        valid = j < n_items[:, None]
        start = s0 + 0.05 * span_len * (1.0 + rng.random(n))
        span = np.minimum(0.38 * span_len, n_items * rng.exponential(45e6, n))
        step = span / n_items
        t = start[:, None] + step[:, None] * (j + 0.8 * rng.random((n, m)))
        u_x = rng.random((n, m))
        extra = np.select(
            [u_x < SESSION_EXTRA[0], u_x < SESSION_EXTRA[1], u_x < SESSION_EXTRA[2]],
            [BUY, CART, FAV],
            default=-1,
        )
        t_x = t + 0.15 * step[:, None] * rng.random((n, m))
        item2 = np.stack([items, items], axis=2).reshape(n, 2 * m)
        ts2 = np.stack([t, t_x], axis=2).reshape(n, 2 * m).astype(np.int64)
        act2 = np.stack([np.full((n, m), PV), np.maximum(extra, 0)], axis=2).reshape(n, 2 * m)
        valid2 = np.stack([valid, valid & (extra >= 0)], axis=2).reshape(n, 2 * m)
        return item2, ts2, act2, valid2

    def _candidates(
        self, rng: np.random.Generator, users: np.ndarray, c: int | None = None
    ) -> tuple[np.ndarray, ...]:
        """(R, C) candidate items from the retrieval mix, deduplicated; (items, valid). C is
        ``candidates_per_request`` unless ``c`` is given (a replay's larger pools)."""
        n, c = len(users), c or self.cfg.candidates_per_request
        rows = np.broadcast_to(np.arange(n)[:, None], (n, c))
        mode = rng.random((n, c))
        cand = np.empty((n, c), dtype=np.int64)
        sel = mode < SOURCE_CUTS[0]
        cand[sel] = self._global(rng, int(sel.sum()))
        sel = (mode >= SOURCE_CUTS[0]) & (mode < SOURCE_CUTS[1])
        cand[sel] = self._in_cats(rng, self._interest(rng, users[rows[sel]]))
        sel = (mode >= SOURCE_CUTS[1]) & (mode < SOURCE_CUTS[2])
        if sel.any():  # "similar to what you just saw": category or brand of a recent item
            rec, ok = self._recent(rng, users[rows[sel]])
            rec = np.maximum(rec, 0)
            by_brand = rng.random(len(rec)) < 0.3
            cat_pick = self._in_cats(rng, np.where(ok, self.w.item_cat[rec], -1))
            brand_pick = self._in_brands(rng, self.w.item_brand[rec])
            cand[sel] = np.where(ok & by_brand, brand_pick, cat_pick)
        sel = mode >= SOURCE_CUTS[2]
        cand[sel] = self._in_cats(rng, self._complement_of_recent_purchase(users)[rows[sel]])

        valid = np.ones((n, c), dtype=bool)
        for attempt in range(4):
            order = np.argsort(cand, axis=1, kind="stable")
            srt = np.take_along_axis(cand, order, axis=1)
            dup_sorted = np.zeros((n, c), dtype=bool)
            dup_sorted[:, 1:] = srt[:, 1:] == srt[:, :-1]
            dup = np.zeros((n, c), dtype=bool)
            np.put_along_axis(dup, order, dup_sorted, axis=1)
            if not dup.any():
                break
            if attempt == 3:
                valid &= ~dup
            else:
                cand[dup] = self._global(rng, int(dup.sum()))
        return cand, valid

    def _logits(
        self,
        users: np.ndarray,
        cand: np.ndarray,
        t_req: np.ndarray,
        er: np.ndarray,
        ec: np.ndarray,
        position: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Click logits of the N exposed candidates ``cand[er, ec]`` of R requests (``users``,
        ``t_req``: (R,); ``cand``: (R, C)) shown at ``position`` (N,), each (N,): (user-level
        part, history part). See docs/demo-data.md for the formula; :mod:`tarq.data.demo`
        records both parts of every exposed impression. Per-request quantities (the history,
        its ages, the cosines against it) are computed once per request, then picked per pair."""
        w, cm = self.w, self.cm
        item = cand[er, ec]
        u = users[er]
        e_c = w.item_emb[item]  # (N, d)
        cat_c = w.item_cat[item]
        taste = np.einsum("nd,nd->n", self.taste[u], e_c)
        aff = w.affinity[w.gender[u], w.age[u], w.cat_dept[cat_c]]
        user_part = (
            cm.bias
            + cm.taste * taste
            + cm.affinity * aff
            + cm.popularity * w.item_pop_z[item]
            + w.item_quality[item]
            + self.price_sens[w.segment[u]] * w.item_price_z[item]
            - cm.position_decay * np.log1p(np.maximum(position, 0))
        )

        hi_r = self.ring.item[users]  # (R, H)
        valid_r = hi_r >= 0
        hi0_r = np.maximum(hi_r, 0)
        act_r = self.ring.act[users].astype(np.int64)
        age_r = (t_req[:, None] - self.ring.ts[users]) / 3.6e9  # hours
        cos = np.einsum("rcd,rhd->rch", w.item_emb[cand], w.item_emb[hi0_r])[er, ec]  # (N, H)
        hi, valid, act = hi_r[er], valid_r[er], act_r[er]
        act_w = self.sim_w[act] * valid
        sim = np.clip((cos - cm.similarity_floor) / (1.0 - cm.similarity_floor), 0.0, None)
        sim_w = sim * act_w
        short_r = np.exp(-age_r / cm.recency_hours)
        h_sim = (sim_w * short_r[er]).max(axis=1)
        h_int = (sim_w * np.exp(-age_r / cm.interest_hours)[er]).max(axis=1) if cm.interest else 0.0
        rec = (short_r * valid_r)[er]
        same = item[:, None] == hi
        bought = act == BUY
        h_rep = (same & ~bought) * rec
        h_sat = (same & bought & valid).any(axis=1)
        comp_h = np.where(valid_r, w.cat_comp[w.item_cat[hi0_r]], -1)[er]
        rec_long = (np.exp(-age_r / cm.long_recency_hours) * valid_r)[er]
        h_comp = (cat_c[:, None] == comp_h) * (rec_long * self.comp_w[act])
        hist_part = (
            cm.similarity * h_sim
            + cm.interest * h_int
            + cm.repeat * h_rep.max(axis=1)
            - cm.satiation * h_sat
            + cm.complement * h_comp.max(axis=1)
        )
        return user_part, hist_part

    def _request(
        self,
        rng: np.random.Generator,
        users: np.ndarray,
        t_req: np.ndarray,
        slot_len: np.ndarray,
        keys: np.ndarray,
    ) -> tuple[dict[str, np.ndarray], tuple[np.ndarray, ...]]:
        """Candidates, ranking, exposure and clicks of R requests.

        Returns the impression columns and the click follow-up behaviours as (item, ts, action,
        valid) arrays of shape (R, 2C) in time order.
        """
        cfg, w, n = self.cfg, self.w, len(users)
        c = cfg.candidates_per_request
        cand, valid = self._candidates(rng, users)
        score = (
            np.einsum("rd,rcd->rc", self.taste[users], w.item_emb[cand])
            + 0.3 * w.item_pop_z[cand]
            + rng.normal(0.0, cfg.ranker_noise, (n, c))
        )
        score = np.where(valid, score, -np.inf)
        order = np.argsort(-score, axis=1, kind="stable")
        cand = np.take_along_axis(cand, order, axis=1)
        valid = np.take_along_axis(valid, order, axis=1)
        rank = np.broadcast_to(np.arange(c)[None, :], (n, c))
        n_exp = cfg.min_exposed + rng.binomial(c - cfg.min_exposed, cfg.scroll_prob, n)
        exposed = valid & (rank < n_exp[:, None])
        position = np.where(exposed, rank, -1)

        # Logits of the exposed pairs only (the others are never clicked); the uniforms are
        # drawn for every pair so the stream does not depend on which are exposed.
        er, ec = np.nonzero(exposed)
        user_part, hist_part = self._logits(users, cand, t_req, er, ec, position[er, ec])
        logit = user_part + hist_part
        u_click = rng.random((n, c))
        clicked = np.zeros((n, c), dtype=bool)
        clicked[er, ec] = u_click[er, ec] < 1.0 / (1.0 + np.exp(-logit))
        self.stats.add_logits(user_part, hist_part)
        parts = np.full((2, n, c), np.nan)
        parts[0, er, ec] = user_part
        parts[1, er, ec] = hist_part

        step = np.minimum(15e6, 0.4 * slot_len / (c + 1))
        t_pv = t_req[:, None] + (rank + 1) * step[:, None] * (0.5 + 0.5 * rng.random((n, c)))
        t_x = t_pv + 0.08 * slot_len[:, None] * rng.random((n, c))
        u_x = rng.random((n, c))
        extra = np.select(
            [u_x < CLICK_EXTRA[0], u_x < CLICK_EXTRA[1], u_x < CLICK_EXTRA[2]],
            [BUY, CART, FAV],
            default=-1,
        )
        f_item = np.concatenate([cand, cand], axis=1)
        f_ts = np.concatenate([t_pv, t_x], axis=1).astype(np.int64)
        f_act = np.concatenate([np.full((n, c), PV), np.maximum(extra, 0)], axis=1)
        f_valid = np.concatenate([clicked, clicked & (extra >= 0)], axis=1)
        o = np.argsort(np.where(f_valid, f_ts, np.iinfo(np.int64).max), axis=1, kind="stable")
        follow = tuple(np.take_along_axis(a, o, axis=1) for a in (f_item, f_ts, f_act, f_valid))

        keep = valid.ravel()
        imps = {
            "user": np.repeat(users, c)[keep],
            "item": cand.ravel()[keep],
            "ts": np.repeat(t_req, c)[keep],
            "clicked": clicked.ravel()[keep],
            "exposed": exposed.ravel()[keep],
            "position": position.ravel()[keep],
            "request_key": np.repeat(keys, c)[keep],
            "user_part": parts[0].ravel()[keep],
            "hist_part": parts[1].ravel()[keep],
        }
        return imps, follow

    def simulate_block(
        self, day: int, block: int, users: np.ndarray
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """All visits of ``users`` on ``day``; returns (impressions, behaviours) columns with
        absolute µs timestamps, rows ordered by time."""
        cfg, w = self.cfg, self.w
        rng = rng_for(self.seed, 2, day, block)
        weekend = (self.start_weekday + day) % 7 >= 5
        factor = (WEEKEND_BOOST if weekend else 1.0) / ((5 + 2 * WEEKEND_BOOST) / 7)
        lam = w.activity[users] * self.visit_rate * factor * (w.join_day[users] <= day)
        n_vis = np.minimum(rng.poisson(lam), cfg.max_visits_per_day)
        active = n_vis > 0
        users, n_vis = users[active], n_vis[active]
        imp_parts: list[dict[str, np.ndarray]] = []
        beh_parts: list[tuple[np.ndarray, ...]] = []
        if len(users) == 0:
            return _concat_imps(imp_parts), _concat_behs(beh_parts)

        # Visit slots: a random partition of the day (mixed with an even one so no slot is
        # vanishingly short), warped by the time-of-day profile.
        v_max = int(n_vis.max())
        inner = rng.random((len(users), v_max))
        inner[np.arange(v_max)[None, :] >= (n_vis - 1)[:, None]] = 1.0
        inner.sort(axis=1)
        edges = np.concatenate([np.zeros((len(users), 1)), inner], axis=1)
        even = np.minimum(np.arange(v_max + 1)[None, :] / n_vis[:, None], 1.0)
        edges = np.interp(0.5 * edges + 0.5 * even, _CDF, _FRAC) * DAY_US
        has_request = rng.random((len(users), v_max)) < cfg.request_prob
        day_us = self.start_us + day * DAY_US

        for k in range(v_max):
            sel = np.flatnonzero(n_vis > k)
            us = users[sel]
            s0, slot_len = edges[sel, k], edges[sel, k + 1] - edges[sel, k]
            s_item, s_ts, s_act, s_valid = self._session(rng, us, s0, slot_len)
            s_ts += day_us
            self.ring.push(us, s_item, s_ts, s_act, s_valid)
            beh_parts.append(
                (np.broadcast_to(us[:, None], s_item.shape), s_item, s_ts, s_act, s_valid)
            )
            req = has_request[sel, k]
            if not req.any():
                continue
            ru, r_s0, r_len = us[req], s0[req], slot_len[req]
            t_req = (r_s0 + (0.5 + 0.02 * rng.random(len(ru))) * r_len).astype(np.int64) + day_us
            raw_key = (
                (np.uint64(day + 1) << np.uint64(44))
                | (ru.astype(np.uint64) << np.uint64(8))
                | np.uint64(k)
            )
            keys = _splitmix64(raw_key ^ self.mix).view(np.int64)
            for lo in range(0, len(ru), 8192):  # bounds the (R, C, H) arrays of the click model
                part = slice(lo, lo + 8192)
                imps, follow = self._request(rng, ru[part], t_req[part], r_len[part], keys[part])
                imp_parts.append(imps)
                f_item, f_ts, f_act, f_valid = follow
                self.ring.push(ru[part], f_item, f_ts, f_act, f_valid)
                beh_parts.append(
                    (np.broadcast_to(ru[part][:, None], f_item.shape), f_item, f_ts, f_act, f_valid)
                )
        return _concat_imps(imp_parts), _concat_behs(beh_parts)


def _concat_imps(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    keys = (
        "user",
        "item",
        "ts",
        "clicked",
        "exposed",
        "position",
        "request_key",
        "user_part",
        "hist_part",
    )
    if not parts:
        return {k: np.empty(0, dtype=np.float64 if "part" in k else np.int64) for k in keys}
    out = {k: np.concatenate([p[k] for p in parts]) for k in keys}
    order = np.argsort(out["ts"], kind="stable")  # log order; a request's rows stay by rank
    return {k: v[order] for k, v in out.items()}


def _concat_behs(parts: list[tuple[np.ndarray, ...]]) -> dict[str, np.ndarray]:
    if not parts:
        return {k: np.empty(0, dtype=np.int64) for k in ("user", "item", "ts", "action")}
    cols = [np.concatenate([p[i][p[4]] for p in parts]) for i in range(4)]
    order = np.argsort(cols[2], kind="stable")
    return {k: c[order] for k, c in zip(("user", "item", "ts", "action"), cols, strict=True)}


# ---------------------------------------------------------------------------- warehouse I/O


def _ts_array(us: np.ndarray) -> pa.Array:
    return pa.array(us.astype("datetime64[us]"))


def _insert(
    con: duckdb.DuckDBPyConnection, name: str, frame: pa.Table, load_id: str, **idents: str
) -> None:
    con.register("demo_frame", frame)
    try:
        sqlfiles.run(con, name, {"load_id": load_id}, **idents)
    finally:
        con.unregister("demo_frame")


def _items_table(w: World) -> pa.Table:
    return pa.table(
        {
            "item_id": w.item_id,
            "category_id": w.item_cat + 1,
            "brand_id": w.brand_label[w.item_brand],
            "price": pa.array(w.item_price, mask=np.isnan(w.item_price)),
            "shop_id": w.item_shop + 1,
        }
    )


def _users_table(w: World) -> pa.Table:
    return pa.table(
        {"user_id": w.user_id, "gender": w.gender, "age_bucket": w.age, "segment": w.segment}
    )


def _impressions_table(w: World, imps: dict[str, np.ndarray]) -> pa.Table:
    pos = imps["position"]
    return pa.table(
        {
            "user_id": w.user_id[imps["user"]],
            "item_id": w.item_id[imps["item"]],
            "ts": _ts_array(imps["ts"]),
            "clicked": imps["clicked"].astype(bool),
            "exposed": imps["exposed"].astype(bool),
            "position": pa.array(pos.astype(np.int32), mask=pos < 0),
            "request_key": imps["request_key"].astype(np.int64),
        }
    )


def _truth_table(w: World, imps: dict[str, np.ndarray], cm: ClickModel) -> pa.Table:
    """The exposed impressions' true logits and their parts (the ``demo_truth`` rows); the
    position term (part of the user-level part) as :meth:`_Simulator._logits` computes it."""
    e = imps["exposed"].astype(bool)
    user_part, hist_part = imps["user_part"][e], imps["hist_part"][e]
    return pa.table(
        {
            "request_key": imps["request_key"][e].astype(np.int64),
            "item_id": w.item_id[imps["item"][e]],
            "logit": user_part + hist_part,
            "user_part": user_part,
            "hist_part": hist_part,
            "position_part": -cm.position_decay * np.log1p(np.maximum(imps["position"][e], 0)),
        }
    )


def _behaviors_table(w: World, behs: dict[str, np.ndarray]) -> pa.Table:
    item = behs["item"]
    return pa.table(
        {
            "user_id": w.user_id[behs["user"]],
            "ts": _ts_array(behs["ts"]),
            "item_id": w.item_id[item],
            "category_id": w.item_cat[item] + 1,
            "brand_id": w.brand_label[w.item_brand[item]],
            "action": pa.array(np.asarray(ACTIONS, dtype=object)[behs["action"]]),
        }
    )


# ---------------------------------------------------------------------------- public API


class NoDemoLogs(ValueError):
    """The warehouse holds no demo logs to continue (``append_days``)."""


def default_end_date(now: dt.datetime | None = None) -> dt.date:
    """Yesterday in UTC (``now``: a naive UTC datetime, default the current time): the last
    day of demo logs generated without a date, so that a run date of ``today`` finds its test
    day (a run date D tests on D − 1, docs/design.md "Run dates")."""
    return (utc_now() if now is None else now).date() - dt.timedelta(days=1)


def parse_day(value: str | dt.date, now: dt.datetime | None = None) -> dt.date:
    """``YYYY-MM-DD``, ``today`` or ``yesterday`` (UTC) → a date; ValueError naming a bad value."""
    if isinstance(value, dt.datetime):
        raise ValueError(f"need a day, not a time: {value!r}")
    if isinstance(value, dt.date):
        return value
    today = (utc_now() if now is None else now).date()
    if value == "today":
        return today
    if value == "yesterday":
        return today - dt.timedelta(days=1)
    try:
        return dt.date.fromisoformat(value)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not a day (YYYY-MM-DD, 'today' or 'yesterday')") from None


def generate(
    db_path: Path,
    preset: str = "small",
    seed: int = 7,
    start_date: dt.date | None = None,
    end_date: dt.date | None = None,
    lake: str | None = None,
) -> dict[str, Any]:
    """Append the demo logs of ``preset`` to the warehouse at ``db_path`` (created if missing).

    The logs cover the preset's ``n_days`` days: from ``start_date``, or ending on
    ``end_date``, or (neither given) ending yesterday, UTC (:func:`default_end_date`). The
    same (preset, seed, window) give identical tables; the window's weekdays shape the
    traffic, so another window gives other logs of the same world (catalog and users).

    Args:
        db_path: DuckDB warehouse file.
        preset: ``tiny``, ``small``, ``medium`` or ``large`` (docs/demo-data.md).
        seed: non-negative integer; the same seed gives identical tables.
        start_date: the first logged day (not with ``end_date``).
        end_date: the last logged day (not with ``start_date``).
        lake: keep the logs in this lake (:mod:`tarq.data.lake`; a warehouse without logs is
            set up with it, one in lake layout must use it). None: the warehouse's layout.

    Returns:
        The load report (also stored in ``loads.report``): preset, seed, days, row counts,
        CTR, exposure rate, items never shown and the planted-effect parameters.

    Raises:
        ValueError: unknown preset, bad seed or dates, or a warehouse that already holds
            impressions.
        LakeError: ``lake`` does not fit the warehouse.
    """
    return generate_from_config(
        db_path,
        preset_config(preset),
        seed=seed,
        start_date=start_date,
        end_date=end_date,
        lake=lake,
    )


def _window_start(start_date: dt.date | None, end_date: dt.date | None, n_days: int) -> dt.date:
    """The first day of an ``n_days`` window given by its first or last day (or neither:
    ending yesterday, UTC)."""
    for name, value in (("start_date", start_date), ("end_date", end_date)):
        if value is not None and (isinstance(value, dt.datetime) or not isinstance(value, dt.date)):
            raise ValueError(f"{name} must be a datetime.date, got {value!r}")
    if start_date is not None and end_date is not None:
        raise ValueError("give the window's start_date or its end_date, not both")
    if start_date is not None:
        return start_date
    end = default_end_date() if end_date is None else end_date
    return end - dt.timedelta(days=n_days - 1)


def generate_from_config(
    db_path: Path,
    cfg: DemoConfig,
    seed: int = 7,
    start_date: dt.date | None = None,
    end_date: dt.date | None = None,
    days: int | None = None,
    lake: str | None = None,
) -> dict[str, Any]:
    """:func:`generate` for an explicit :class:`DemoConfig` (e.g. a preset with the history
    terms of the click model switched off, ``dataclasses.replace(cfg, click=cfg.click.
    taste_only())``, as a control).

    ``days`` (default ``cfg.n_days``) simulates another number of days of the same world in
    this one load: the world (launch and join days) is always that of ``cfg.n_days`` days, and
    days past them continue it exactly as :func:`append_days` does, day by day. ``lake`` as
    for :func:`generate`.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    n_days = cfg.n_days if days is None else days
    if isinstance(n_days, bool) or not isinstance(n_days, int) or n_days < 1:
        raise ValueError(f"days must be a positive integer, got {days!r}")
    start_date = _window_start(start_date, end_date, n_days)
    seed = int(seed)
    started = utc_now()
    t0 = time.perf_counter()
    if lake is not None:
        init_lake(db_path, lake)
    con = connect(db_path)
    in_transaction = False
    committed_days = 0
    try:
        item_base, user_base = _prepare(con, db_path)
        # Derived from the inputs rather than new_id("demo"): the load id is stored on every
        # raw row, and the same (preset, seed, start_date) must give identical tables.
        load_id = f"demo-{cfg.name}-seed{seed}-{start_date:%Y%m%d}"
        world = build_world(cfg, seed, item_base=int(item_base), user_base=int(user_base))
        sim = _Simulator(cfg, world, seed, start_date)
        con.begin()
        in_transaction = True
        _insert(con, "demo/insert_items", _items_table(world), load_id)
        _insert(con, "demo/insert_users", _users_table(world), load_id)
        blocks = range(0, world.n_users, cfg.user_block)
        pending = 0
        for day in range(n_days):
            n_day, n_rows = _simulate_day(con, sim, world, day, blocks, load_id)
            pending += n_rows
            day_str = (start_date + dt.timedelta(days=day)).isoformat()
            sim.stats.per_day[day_str] = n_day
            log.info("demo %s: day %s, %d impressions", cfg.name, day_str, n_day)
            if pending >= COMMIT_ROWS and day < n_days - 1:
                # DuckDB keeps a transaction's appends in memory; the large preset commits
                # every few days to stay bounded (and is then not all-or-nothing).
                flush(con, load_id)
                con.commit()
                committed_days, pending = day + 1, 0
                con.begin()
        report = _report(
            cfg, seed, start_date, range(n_days), world, sim, load_id, time.perf_counter() - t0
        )
        report["config"] = dataclasses.asdict(cfg)
        flush(con, load_id)
        _record_load(con, load_id, cfg, seed, started, report)
        con.commit()
    except BaseException as exc:
        if in_transaction:
            con.rollback()
        if committed_days:
            _record_load(
                con,
                load_id,
                cfg,
                seed,
                started,
                {"status": "incomplete", "committed_days": committed_days, "error": repr(exc)},
            )
        raise
    finally:
        con.close()
    return report


@dataclass(frozen=True)
class _Chain:
    """The demo logs of a warehouse: the generated window (``base``) and the days appended
    to it, one load each."""

    base: str  # load id of the generated window
    cfg: DemoConfig
    seed: int
    start_date: dt.date  # day index 0 of the world
    last_day: dt.date
    load_ids: tuple[str, ...]


def _config_from_report(report: dict[str, Any]) -> DemoConfig:
    """The :class:`DemoConfig` a window was generated with: stored in its report (``config``);
    for a report without it (logs generated before it was stored), the preset's with the
    recorded click model, checked against the recorded sizes."""
    stored = report.get("config")
    if stored is not None:
        click = {k: tuple(v) if isinstance(v, list) else v for k, v in stored["click"].items()}
        click.setdefault("interest", 0.0)  # recorded before the term existed: it was off
        rest = {k: v for k, v in stored.items() if k != "click"}
        return DemoConfig(**rest, click=ClickModel(**click))
    cfg = preset_config(report["preset"])
    recorded = report.get("planted_effect", {}).get("click_model")
    if recorded is not None:
        click = {k: tuple(v) if isinstance(v, list) else v for k, v in recorded.items()}
        click.setdefault("interest", 0.0)  # recorded before the term existed: it was off
        cfg = dataclasses.replace(cfg, click=ClickModel(**click))
    rows = report.get("rows", {})
    if (report.get("days"), rows.get("users"), rows.get("items")) != (
        cfg.n_days,
        cfg.n_users,
        cfg.n_items,
    ):
        raise ValueError(
            f"demo load {report.get('load_id')} does not match the {cfg.name!r} preset "
            f"({report.get('days')} days, {rows.get('users')} users, {rows.get('items')} items) "
            "and does not record its config: it cannot be continued"
        )
    return cfg


def _read_chain(con: duckdb.DuckDBPyConnection, db_path: Path) -> _Chain:
    """The warehouse's demo logs (``loads`` rows of kind ``demo``); :class:`NoDemoLogs` when
    there are none, ValueError when they cannot be continued."""
    loads = [(lid, json.loads(rep)) for lid, rep in sqlfiles.run(con, "demo/loads").fetchall()]
    bases = [(lid, rep) for lid, rep in loads if "continues" not in rep]
    if not bases:
        raise NoDemoLogs(
            f"{db_path} holds no demo logs to continue: generate them first (tarq demo-data)"
        )
    if len(bases) > 1:
        raise ValueError(
            f"{db_path} holds several demo loads ({', '.join(b for b, _ in bases)}); "
            "cannot tell which one to continue"
        )
    base, rep = bases[0]
    if rep.get("status") == "incomplete":
        raise ValueError(
            f"demo load {base} of {db_path} is incomplete (it failed after "
            f"{rep.get('committed_days')} committed days): generate again into a new --db"
        )
    chain = [(lid, r) for lid, r in loads if r.get("continues") == base]
    last = max([rep["last_day"], *(r["last_day"] for _, r in chain)])
    return _Chain(
        base=base,
        cfg=_config_from_report(rep),
        seed=int(rep["seed"]),
        start_date=dt.date.fromisoformat(rep["first_day"]),
        last_day=dt.date.fromisoformat(last),
        load_ids=(base, *(lid for lid, _ in chain)),
    )


def append_day(db_path: Path, day: dt.date | str | None = None) -> dict[str, Any]:
    """Append the next day of the warehouse's demo logs, continuing the same world.

    The day is simulated exactly as if the generator had gone on for one more day: the same
    users and catalog (items held back from the window launch over the following days), the
    users' interests drifted day by day, each user's history as the logs hold it, the same
    click model. Deterministic for the warehouse's (preset, seed, first day) and the day.
    It is appended as a load of its own (``loads``: ``<window load id>-<YYYYMMDD>``, its
    report); no existing row changes.

    Args:
        db_path: a warehouse holding demo logs (:func:`generate`).
        day: the day to append (a date or YYYY-MM-DD); it must be the day after the demo
            logs' last day (the default).

    Returns:
        The day's load report.

    Raises:
        NoDemoLogs: the warehouse holds no demo logs.
        ValueError: ``day`` is already logged (the message names it) or is not the next day,
            or the warehouse already holds rows on the next day.
    """
    if day is not None:
        day = parse_day(day)
    return _append(db_path, first=day, through=day)[0]


def append_days(db_path: Path, through: dt.date | str = "yesterday") -> list[dict[str, Any]]:
    """Append each day after the demo logs' last day through ``through`` (a date,
    ``yesterday`` or ``today``, UTC), in order, one load per day (:func:`append_day`).

    Returns the appended days' reports: none when the logs already reach ``through``. A
    failure keeps the days appended before it (each day is one transaction).
    """
    return _append(db_path, first=None, through=parse_day(through))


def _append(
    db_path: Path,
    first: dt.date | None,
    through: dt.date | None,
    wrap: Callable[[_Simulator], _Simulator] | None = None,
) -> list[dict[str, Any]]:
    """Append the chain's days from its next day (``first``, if given, must be that day)
    through ``through`` (default: only the next day); ``wrap``: see :func:`_continue`."""
    db_path = Path(db_path)
    if not db_path.exists():
        raise NoDemoLogs(f"{db_path} does not exist: generate demo logs first (tarq demo-data)")
    con = connect(db_path)
    try:
        chain = _read_chain(con, db_path)
        nxt = chain.last_day + dt.timedelta(days=1)
        span = f"the demo logs of {db_path} run {chain.start_date} .. {chain.last_day}"
        if first is not None and first <= chain.last_day:
            raise ValueError(f"{first} already exists: {span}; nothing was written")
        if first is not None and first > nxt:
            raise ValueError(
                f"{first} is not the next day: {span}, so the next one is {nxt} (days are "
                "simulated in order); nothing was written"
            )
        last = nxt if through is None else through
        today = utc_now().date()
        if last >= today:
            raise ValueError(
                f"{last} is today or later (UTC): a simulated day is written whole, hours "
                f"that have not happened included, so the demo feed writes through yesterday "
                f"({today - dt.timedelta(days=1)}) at most; nothing was written"
            )
        days = [nxt + dt.timedelta(days=k) for k in range((last - nxt).days + 1)]
        for d in days:
            n_imp, n_beh = sqlfiles.run(
                con,
                "demo/rows_on_day",
                {
                    "lo": dt.datetime.combine(d, dt.time()),
                    "hi": dt.datetime.combine(d + dt.timedelta(days=1), dt.time()),
                },
            ).fetchone()
            if n_imp or n_beh:
                raise ValueError(
                    f"{d} already exists in {db_path}: it holds {n_imp:,} impressions and "
                    f"{n_beh:,} behaviours on that day ({span}); nothing was written"
                )
        if not days:
            return []
        return _continue(con, db_path, chain, days, wrap)
    finally:
        con.close()


def _continue(
    con: duckdb.DuckDBPyConnection,
    db_path: Path,
    chain: _Chain,
    days: list[dt.date],
    wrap: Callable[[_Simulator], _Simulator] | None = None,
) -> list[dict[str, Any]]:
    """Rebuild the chain's world and state at the end of its last day, then simulate and
    append ``days`` (consecutive, starting the day after it), one transaction each.

    ``wrap`` replaces the rebuilt simulator by one built on it (the A/B test's, whose
    pre-ranking is done by models, :mod:`tarq.data.demo_ab`); a simulator with a
    ``report_extra()`` method adds what it returns to each day's load report."""
    t0 = time.perf_counter()
    cfg, seed = chain.cfg, chain.seed
    item_base, n_items, user_base, n_users = sqlfiles.run(
        con, "demo/load_ids", {"load_id": chain.base}
    ).fetchone()
    if (n_items, n_users) != (cfg.n_items, cfg.n_users):
        raise ValueError(
            f"demo load {chain.base} of {db_path} holds {n_items} items and {n_users} users, "
            f"its config {cfg.n_items} and {cfg.n_users}: it cannot be continued"
        )
    world, sim = rebuild(con, chain, int(item_base), int(user_base), chain.last_day)
    if wrap is not None:
        sim = wrap(sim)
    sqlfiles.run(con, "demo/create_truth")  # logs generated before it existed get it now
    _settings(con)
    blocks = range(0, world.n_users, cfg.user_block)
    reports = []
    for d in days:
        started, t_day = utc_now(), time.perf_counter()
        index = (d - chain.start_date).days
        load_id = f"{chain.base}-{d:%Y%m%d}"
        sim.stats = _Stats()
        sim.shown[:] = False
        con.begin()
        try:
            n_day, _ = _simulate_day(con, sim, world, index, blocks, load_id)
            sim.stats.per_day[d.isoformat()] = n_day
            report = _report(
                cfg,
                seed,
                d,
                range(index, index + 1),
                world,
                sim,
                load_id,
                time.perf_counter() - t_day,
            )
            report["rows"].update(items=0, users=0)
            report["items_shown"] = int(sim.shown.sum())
            del report["items_never_shown"]  # over a whole window; this is one day
            report.update(
                continues=chain.base,
                window_first_day=chain.start_date.isoformat(),
                day_index=index,
                items_live=int((world.item_launch <= index).sum()),
                items_launched=int((world.item_launch == index).sum()),
            )
            if hasattr(sim, "report_extra"):
                report.update(sim.report_extra())
            flush(con, load_id)
            _record_load(con, load_id, cfg, seed, started, report)
            con.commit()
        except BaseException:
            con.rollback()
            raise
        log.info("demo %s: appended %s, %d impressions", cfg.name, d, n_day)
        reports.append(report)
    log.info("demo %s: %d day(s) appended in %.1fs", cfg.name, len(days), time.perf_counter() - t0)
    return reports


def rebuild(
    con: duckdb.DuckDBPyConnection,
    chain: _Chain,
    item_base: int,
    user_base: int,
    through: dt.date,
    before: dt.datetime | None = None,
) -> tuple[World, _Simulator]:
    """The chain's world and simulator in their state at the end of day ``through``: interests
    drifted through it (their own streams), and each user's last behaviours as logged ((ts,
    row_id) is the order the generator pushed them in), those before ``before`` when given
    (a day's visits never spill past its midnight, so the start of the next day cuts exactly)."""
    cfg, seed = chain.cfg, chain.seed
    world = build_world(cfg, seed, item_base=item_base, user_base=user_base)
    sim = _Simulator(cfg, world, seed, chain.start_date)
    for d in range(1, (through - chain.start_date).days + 1):
        sim.drift(d)
    hist = sqlfiles.run(
        con,
        "demo/last_behaviors",
        {
            "load_ids": list(chain.load_ids),
            "history_len": cfg.click.history_len,
            "actions": list(ACTIONS),
            "before": before,
        },
    ).fetchnumpy()
    index_of = np.empty(world.n_items, dtype=np.int64)
    index_of[world.item_id - item_base - 1] = np.arange(world.n_items)
    sim.ring = _Ring.from_rows(
        world.n_users,
        cfg.click.history_len,
        np.asarray(hist["user_id"], dtype=np.int64) - user_base - 1,
        index_of[np.asarray(hist["item_id"], dtype=np.int64) - item_base - 1],
        np.asarray(hist["ts"], dtype=np.int64),
        np.asarray(hist["act"], dtype=np.int8),
    )
    return world, sim


def _prepare(con: duckdb.DuckDBPyConnection, db_path: Path) -> tuple[int, int]:
    """Refuse a warehouse with impressions, add the demo's side columns, pin one thread and
    bounded memory; returns the (item, user) id bases past the ids already stored."""
    n = sqlfiles.run(con, "demo/count_impressions").fetchone()[0]
    if n:
        raise ValueError(
            f"{db_path} already holds {n:,} impressions; demo logs are only generated into "
            "a warehouse without impressions (use a new --db, or --if-missing to skip, or "
            "--next-day to append the next day of its demo logs)"
        )
    item_base, user_base = sqlfiles.run(con, "demo/id_bases").fetchone()
    for col in USER_SIDE_COLUMNS:
        add_side_column(con, "users", col, "BIGINT")
    for col in ITEM_SIDE_COLUMNS:
        add_side_column(con, "items", col, "BIGINT")
    sqlfiles.run(con, "demo/create_truth")
    _settings(con)
    return int(item_base), int(user_base)


def _settings(con: duckdb.DuckDBPyConnection) -> None:
    """One thread and bounded memory while the generator writes."""
    # One thread keeps the row_id sequence in insertion order (parallel inserts would hand
    # out ids in a scheduling-dependent order and break "same seed → identical tables").
    con.execute("SET threads = 1")
    # Bounded memory: DuckDB's cache of written pages stays small.
    con.execute("SET memory_limit = $m", {"m": MEMORY_LIMIT})


def _simulate_day(
    con: duckdb.DuckDBPyConnection,
    sim: _Simulator,
    world: World,
    day: int,
    blocks: range,
    load_id: str,
) -> tuple[int, int]:
    """Simulate and insert one day, block of users by block; returns (impressions, rows)."""
    cfg = sim.cfg
    sim.start_day(day)
    n_day = n_rows = 0
    imp_target, beh_target = raw_target(con, "impressions"), raw_target(con, "behaviors")
    for b, lo in enumerate(blocks):
        users = np.arange(lo, min(lo + cfg.user_block, world.n_users))
        imps, behs = sim.simulate_block(day, b, users)
        _insert(
            con,
            "demo/insert_impressions",
            _impressions_table(world, imps),
            load_id,
            target=imp_target,
        )
        _insert(
            con, "demo/insert_behaviors", _behaviors_table(world, behs), load_id, target=beh_target
        )
        truth = _truth_table(world, imps, cfg.click)
        _insert(con, "demo/insert_truth", truth, load_id)
        sim.shown[imps["item"]] = True
        st = sim.stats
        st.impressions += len(imps["item"])
        st.exposed += int(imps["exposed"].sum())
        st.clicked += int(imps["clicked"].sum())
        st.behaviors += len(behs["item"])
        st.actions += np.bincount(behs["action"], minlength=4)
        n_day += len(imps["item"])
        n_rows += len(imps["item"]) + len(behs["item"]) + truth.num_rows
    return n_day, n_rows


def _record_load(
    con: duckdb.DuckDBPyConnection,
    load_id: str,
    cfg: DemoConfig,
    seed: int,
    started: dt.datetime,
    report: dict[str, Any],
) -> None:
    sqlfiles.run(
        con,
        "demo/record_load",
        {
            "load_id": load_id,
            "source": f"demo:{cfg.name}:seed={seed}",
            "started_at": started,
            "finished_at": dt.datetime.now(dt.UTC).replace(tzinfo=None),
            "report": json.dumps(report),
        },
    )


def _report(
    cfg: DemoConfig,
    seed: int,
    first_day: dt.date,
    days: range,
    world: World,
    sim: _Simulator,
    load_id: str,
    seconds: float,
) -> dict[str, Any]:
    """The report of a load that simulated the world's day indices ``days`` (the first of
    them is ``first_day``), from the simulator's running counts."""
    st = sim.stats
    live_at_end = world.item_launch <= days[-1]
    return {
        "load_id": load_id,
        "preset": cfg.name,
        "seed": seed,
        "days": len(days),
        "first_day": first_day.isoformat(),
        "last_day": (first_day + dt.timedelta(days=len(days) - 1)).isoformat(),
        "rows": {
            "items": world.n_items,
            "users": world.n_users,
            "impressions": st.impressions,
            "behaviors": st.behaviors,
        },
        "impressions_per_day": st.per_day,
        "ctr": st.clicked / max(st.exposed, 1),
        "ctr_all_impressions": st.clicked / max(st.impressions, 1),
        "exposure_rate": st.exposed / max(st.impressions, 1),
        "behaviors_per_impression": st.behaviors / max(st.impressions, 1),
        "action_share": {
            a: int(v) / max(st.behaviors, 1) for a, v in zip(ACTIONS, st.actions, strict=True)
        },
        "items_never_shown": int((~sim.shown).sum()),
        "items_not_launched": int((~live_at_end).sum()),
        "unexposed_position": "NULL",
        "planted_effect": {
            "click_model": dataclasses.asdict(cfg.click),
            "user_level_logit_sd": st.sd(st.user_sum, st.user_sq),
            "history_logit_sd": st.sd(st.hist_sum, st.hist_sq),
            "history_logit_mean": st.hist_sum / max(st.exposed, 1),
        },
        "seconds": round(seconds, 2),
    }


def history_match_lift(
    con: duckdb.DuckDBPyConnection, last_n: int = 5, max_position: int = 3
) -> dict[str, float]:
    """How much more often exposed items are clicked when their category appears among the
    user's last ``last_n`` organic behaviours before the impression (sql/demo/
    history_match_ctr.sql), compared *within* (user, day, category, slot) strata with
    Mantel–Haenszel pooling, so user-level and daily taste and position are held fixed.

    Args:
        con: a warehouse connection (read-only is enough).
        last_n: how many of the latest behaviours count as "recent".
        max_position: display positions at or beyond this share one stratum slot.

    Returns:
        ``matched``/``unmatched`` exposed impressions and their raw CTRs (``matched_ctr``,
        ``unmatched_ctr``, not controlled for taste), the stratified ``mh_ctr_ratio`` and
        ``mh_odds_ratio`` (≈ 1 when clicks ignore individual history items), and
        ``informative_strata`` (strata holding both kinds).
    """
    if last_n < 1 or max_position < 0:
        raise ValueError(f"need last_n >= 1 and max_position >= 0, got {last_n}, {max_position}")
    row = sqlfiles.run(
        con, "demo/history_match_ctr", {"last_n": last_n, "max_position": max_position}
    ).fetchone()
    names = (
        "matched",
        "matched_ctr",
        "unmatched",
        "unmatched_ctr",
        "mh_ctr_ratio",
        "mh_odds_ratio",
        "informative_strata",
    )
    return {k: float("nan") if v is None else float(v) for k, v in zip(names, row, strict=True)}
