"""A sequential next-item log: the kind of data on which a model must learn from the history.

Real interaction logs laid out for CTR training the usual way (each interaction a click,
negatives drawn from the same day's traffic) carry almost no user-level or item-level signal:
an item's click rate is flat because its negatives are drawn as often as it is consumed. What
predicts the click is the history — the next item repeats a recent one, or follows the last
one. This generator writes such a log in the warehouse contract (``tarq import parquet``), so
that the models can be checked on it: each one must beat the base-rate loss.

The world, per user and event (``NextItemConfig``):

- with probability ``p_follow`` the next item is one of the last item's ``n_successors``
  successors (fixed per item, within its category): item-to-item transitions;
- with probability ``p_repeat`` it is one of the user's last ``repeat_window`` items: repeat
  consumption (about a quarter of Taobao's public UserBehavior events repeat a recent item);
- otherwise a draw from the item popularity (Zipf over a long-tailed catalog).

Each event is a ``pv`` behaviour at ``ts`` and a clicked impression one second earlier, with
``n_negatives`` unclicked impressions of items drawn from the same day's events (so they follow
the day's popularity). Users are active on a random share of the event slots (log-normal
activity), so histories range from empty to long. Same config and seed → same files.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class NextItemConfig:
    """Sizes and behaviour of the log (see the module docstring)."""

    n_users: int = 1_200
    n_items: int = 60_000
    n_categories: int = 300
    brands_per_category: int = 8
    days: int = 10
    slots_per_day: int = 6
    mean_activity: float = 0.5
    p_follow: float = 0.10
    p_repeat: float = 0.45
    n_successors: int = 5
    repeat_window: int = 20
    n_negatives: int = 4
    item_pop_exponent: float = 1.0
    start: dt.date = dt.date(2026, 1, 1)

    def __post_init__(self) -> None:
        if not 0 <= self.p_follow + self.p_repeat <= 1 or min(self.p_follow, self.p_repeat) < 0:
            raise ValueError("p_follow and p_repeat must be ≥ 0 and sum to at most 1")
        for name in ("n_users", "n_items", "n_categories", "days", "slots_per_day"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1")


def generate_next_item_logs(out: Path, config: NextItemConfig, seed: int = 0) -> dict[str, Any]:
    """Write ``items``, ``users``, ``impressions`` and ``behaviors`` Parquet files into ``out``.

    Returns a report: rows per table, the click rate of the impressions (1 / (1 + negatives))
    and the shares of follow / repeat / popularity events.
    """
    c, rng = config, np.random.default_rng(seed)
    cat = rng.integers(1, c.n_categories + 1, c.n_items)
    brand = cat * 100 + rng.integers(0, c.brands_per_category, c.n_items)
    pop = 1.0 / np.arange(1, c.n_items + 1) ** c.item_pop_exponent
    pop = pop[rng.permutation(c.n_items)]
    pop /= pop.sum()
    order = np.argsort(cat, kind="stable")
    starts = np.searchsorted(cat[order], np.arange(1, c.n_categories + 2))
    lo, size = starts[cat - 1], starts[cat] - starts[cat - 1]
    succ = order[
        lo[:, None] + (rng.random((c.n_items, c.n_successors)) * size[:, None]).astype(int)
    ]

    out.mkdir(parents=True, exist_ok=True)
    items = pd.DataFrame(
        {
            "item_id": np.arange(1, c.n_items + 1),
            "category_id": cat,
            "brand_id": brand,
            "price": np.round(rng.lognormal(3.0, 0.8, c.n_items), 2),
        }
    )
    items.to_parquet(out / "items.parquet", index=False)
    pd.DataFrame({"user_id": np.arange(1, c.n_users + 1)}).to_parquet(
        out / "users.parquet", index=False
    )
    imps, behs, kinds = _simulate(c, rng, cat, brand, pop, succ)
    impressions, behaviors = pd.concat(imps), pd.concat(behs)
    impressions.to_parquet(out / "impressions.parquet", index=False)
    behaviors.to_parquet(out / "behaviors.parquet", index=False)
    events = max(int(kinds[2]), 1)
    return {
        "config": {k: str(v) if isinstance(v, dt.date) else v for k, v in asdict(c).items()},
        "seed": seed,
        "rows": {
            "items": len(items),
            "users": c.n_users,
            "impressions": len(impressions),
            "behaviors": len(behaviors),
        },
        "click_rate": round(1.0 / (1 + c.n_negatives), 4),
        "event_shares": {
            "follow": round(kinds[0] / events, 4),
            "repeat": round(kinds[1] / events, 4),
            "popularity": round(1 - (kinds[0] + kinds[1]) / events, 4),
        },
    }


def _simulate(
    c: NextItemConfig,
    rng: np.random.Generator,
    cat: np.ndarray,
    brand: np.ndarray,
    pop: np.ndarray,
    succ: np.ndarray,
) -> tuple[list[pd.DataFrame], list[pd.DataFrame], np.ndarray]:
    """The users' days: each slot every active user moves on (follow a successor of the last
    item, repeat a recent one, or a popular item); one behaviour per event and an impression
    of the event's item (clicked) with ``n_negatives`` other events' items of the day.

    Args: the config, the generator (continued from the catalog's draws), the items' (N,)
    categories, brands and popularity, and their (N, n_successors) successors.
    Returns: (impression frames, behaviour frames, counts of follow / repeat / all events).
    """
    activity = rng.lognormal(0.0, 1.0, c.n_users)
    activity = np.minimum(activity / activity.mean() * c.mean_activity, 1.0)
    ring = np.full((c.n_users, c.repeat_window), -1)
    seen = np.zeros(c.n_users, dtype=np.int64)
    last = rng.choice(c.n_items, c.n_users, p=pop)
    users = np.arange(c.n_users)
    slot_s = 86_400 // c.slots_per_day
    kinds = np.zeros(3, dtype=np.int64)
    imps, behs = [], []
    for day in range(c.days):
        ev_u, ev_i, ev_s = [], [], []
        for slot in range(c.slots_per_day):
            r = rng.random(c.n_users)
            pick = rng.integers(0, c.repeat_window, c.n_users) % np.maximum(
                np.minimum(seen, c.repeat_window), 1
            )
            recent = ring[users, pick]
            follow = succ[last, rng.integers(0, c.n_successors, c.n_users)]
            nxt = rng.choice(c.n_items, c.n_users, p=pop)
            is_follow = r < c.p_follow
            is_repeat = (r >= c.p_follow) & (r < c.p_follow + c.p_repeat) & (recent >= 0)
            nxt = np.where(is_follow, follow, np.where(is_repeat, recent, nxt))
            act = np.flatnonzero(rng.random(c.n_users) < activity)
            kinds += [is_follow[act].sum(), is_repeat[act].sum(), act.size]
            ev_u.append(act)
            ev_i.append(nxt[act])
            ev_s.append(slot * slot_s + rng.integers(1, slot_s, act.size))
            ring[act, seen[act] % c.repeat_window] = nxt[act]
            seen[act] += 1
            last[act] = nxt[act]
        u, i, s = np.concatenate(ev_u), np.concatenate(ev_i), np.concatenate(ev_s)
        ts = pd.Timestamp(c.start + dt.timedelta(days=day)) + pd.to_timedelta(s, unit="s")
        behs.append(
            pd.DataFrame(
                {
                    "user_id": u + 1,
                    "ts": ts,
                    "item_id": i + 1,
                    "category_id": cat[i],
                    "brand_id": brand[i],
                    "action": "pv",
                }
            )
        )
        negatives = i[rng.integers(0, i.size, (c.n_negatives, i.size))]
        shown = ts - pd.Timedelta(seconds=1)
        for j, item in enumerate([i, *negatives]):
            imps.append(
                pd.DataFrame(
                    {"user_id": u + 1, "item_id": item + 1, "ts": shown, "clicked": j == 0}
                )
            )
    return imps, behs, kinds
