"""The static world behind the demo logs: presets, the click model's parameters, the catalog and
the user population. ``tarq.data.demo`` simulates days of traffic on top of it.

Everything here is a pure function of ``(config, seed)``; docs/demo-data.md documents every
parameter and the formulas they enter.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

ACTIONS = ("pv", "cart", "fav", "buy")
PV, CART, FAV, BUY = range(4)

# Categorical user profile codes (0 = unknown, as in Taobao's user_profile).
GENDER_P = (0.04, 0.50, 0.46)
AGE_P = (0.03, 0.08, 0.20, 0.25, 0.19, 0.13, 0.08, 0.04)
SEGMENT_P = (0.30, 0.50, 0.20)  # codes 1..3: budget, regular, premium spenders


@dataclass(frozen=True)
class ClickModel:
    """Parameters of the click probability of an exposed impression (docs/demo-data.md).

    ``logit = bias + taste + affinity + popularity + quality + price + position + history``;
    only the history terms depend on individual past behaviours (the rest is user-level).
    """

    bias: float = -4.7
    taste: float = 1.0  # × <user's current interest vector, item embedding>
    affinity: float = 0.5  # × (gender, age) × department affinity
    popularity: float = 0.35  # × standardized log item popularity
    quality_sd: float = 0.3  # item quality ~ N(0, quality_sd), hidden
    price_sensitivity: tuple[float, float, float] = (-0.6, -0.25, 0.15)  # per segment × price_z
    position_decay: float = 0.35  # − position_decay × ln(1 + position)
    # Target-specific interactions with the last `history_len` behaviours.
    history_len: int = 50  # = the samples' history length (tarq.defaults.SEQ_LEN)
    similarity: float = 1.5  # × max_h recency_h × action_w × relu((cos(e_i, e_h) − s0) / (1 − s0))
    similarity_floor: float = 0.3  # s0
    similarity_action_w: tuple[float, float, float, float] = (1.0, 1.4, 1.2, 0.3)  # pv cart fav buy
    repeat: float = 0.8  # × max_h recency_h × [item_h = i, action_h ≠ buy]
    satiation: float = 1.0  # − satiation × [i was bought within the history]
    complement: float = 1.2  # × max_h long_recency_h × comp_w × [comp(cat_h) = cat_i]
    complement_action_w: tuple[float, float, float, float] = (0.0, 0.5, 0.0, 1.0)
    recency_hours: float = 3.0  # τ of recency_h = exp(−Δt / τ)
    long_recency_hours: float = 72.0  # τ of long_recency_h
    # Multi-interest match over days: × max_h interest_recency_h × action_w × relu(...) as
    # for `similarity`, with a recency of days (0 in logs generated before it existed).
    interest: float = 2.5
    interest_hours: float = 48.0  # τ of interest_recency_h = exp(−Δt / τ)

    def taste_only(self) -> ClickModel:
        """The same model with every history term off (a user-level-taste-only control)."""
        return dataclasses.replace(
            self, similarity=0.0, repeat=0.0, satiation=0.0, complement=0.0, interest=0.0
        )


@dataclass(frozen=True)
class DemoConfig:
    """Sizes and behaviour parameters of one demo preset (docs/demo-data.md, "Parameters")."""

    name: str
    n_users: int
    n_items: int
    n_days: int
    n_departments: int
    n_categories: int
    n_brands: int
    n_shops: int
    impressions_per_day: int  # target mean; weekends run 15 % above weekdays
    candidates_per_request: int = 10
    min_exposed: int = 2  # exposed slots = min_exposed + Binomial(C − min_exposed, scroll_prob)
    scroll_prob: float = 0.45
    request_prob: float = 0.6  # a visit ends in a feed request (else browse only)
    session_items_mean: float = 9.0
    session_items_max: int = 40
    max_visits_per_day: int = 40
    late_item_frac: float = 0.08  # launched after the last day: never shown
    new_item_frac: float = 0.12  # launched during the window
    new_user_frac: float = 0.15  # first active during the window
    interests_min: int = 2
    interests_max: int = 5
    drift_prob: float = 0.12  # per user-day: one interest replaced
    drift_sd: float = 0.25  # per user-day: interest weights × exp(N(0, drift_sd))
    item_pop_exponent: float = 0.9
    category_pop_exponent: float = 0.8
    brand_pop_exponent: float = 1.0
    ranker_noise: float = 0.6
    dim: int = 16
    user_block: int = 32_768  # users simulated per chunk (part of the world: fixes the RNG streams)
    click: ClickModel = field(default_factory=ClickModel)


PRESETS: dict[str, DemoConfig] = {
    "tiny": DemoConfig(
        name="tiny",
        n_users=300,
        n_items=600,
        n_days=8,
        n_departments=4,
        n_categories=24,
        n_brands=90,
        n_shops=40,
        impressions_per_day=3_000,
        candidates_per_request=8,
    ),
    "small": DemoConfig(
        name="small",
        n_users=3_000,
        n_items=10_000,
        n_days=22,
        n_departments=8,
        n_categories=80,
        n_brands=800,
        n_shops=300,
        impressions_per_day=10_000,
    ),
    "medium": DemoConfig(
        name="medium",
        n_users=30_000,
        n_items=100_000,
        n_days=22,
        n_departments=12,
        n_categories=300,
        n_brands=5_000,
        n_shops=2_000,
        impressions_per_day=100_000,
    ),
    "large": DemoConfig(
        name="large",
        n_users=300_000,
        n_items=1_200_000,
        n_days=22,
        n_departments=16,
        n_categories=1_500,
        n_brands=40_000,
        n_shops=20_000,
        impressions_per_day=1_000_000,
    ),
}


def preset_config(name: str) -> DemoConfig:
    """The :class:`DemoConfig` of a preset name; ValueError naming the known presets."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(
            f"unknown demo preset {name!r}; choose one of {', '.join(PRESETS)}"
        ) from None


def rng_for(seed: int, *stream: int) -> np.random.Generator:
    """An independent PCG64 stream for ``(seed, *stream)`` (e.g. stage, day, block)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, *stream])))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _zipf_weights(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Power-law weights ``rank^-exponent`` over a random ranking of ``n`` things."""
    ranks = rng.permutation(n) + 1
    return ranks.astype(np.float64) ** -exponent


def sample_in_ranges(
    cumz: np.ndarray, start: np.ndarray, end: np.ndarray, u: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted draw of one index in ``[start, end)`` per row.

    Args:
        cumz: (N + 1,) ``[0, cumsum(weights)]``; zero-weight entries are never drawn.
        start, end: (R,) index ranges.
        u: (R,) uniforms in [0, 1).

    Returns:
        (index, ok): (R,) int64 indices and (R,) bool, False where the range has no weight
        (the index is then meaningless and the caller falls back).
    """
    lo = cumz[start]
    hi = cumz[end]
    target = lo + u * (hi - lo)
    idx = np.searchsorted(cumz, target, side="right") - 1
    ok = hi > lo
    return np.clip(idx, start, np.maximum(end - 1, start)), ok


@dataclass
class World:
    """Catalog and users. Items are indexed 0..N−1 sorted by brand, brands by category, so each
    brand and each category is a contiguous index range (``brand_start``/``cat_start``)."""

    # categories (C,)
    cat_dept: np.ndarray
    cat_weight: np.ndarray
    cat_vec: np.ndarray  # (C, d) unit
    cat_comp: np.ndarray  # complement category index or −1
    cat_start: np.ndarray  # (C + 1,) item index ranges
    # brands (B,)
    brand_cat: np.ndarray
    brand_start: np.ndarray  # (B + 1,)
    brand_label: np.ndarray  # public brand_id
    # items (N,)
    item_id: np.ndarray
    item_cat: np.ndarray
    item_brand: np.ndarray
    item_shop: np.ndarray
    item_price: np.ndarray  # NaN = missing
    item_price_z: np.ndarray  # log price standardized within the category, 0 when missing
    item_weight: np.ndarray  # popularity weight (power law)
    item_pop_z: np.ndarray
    item_quality: np.ndarray
    item_launch: np.ndarray  # first live day index; −1 = before the window, >= n_days = after
    item_emb: np.ndarray  # (N, d) float32 unit
    # users (U,)
    user_id: np.ndarray
    gender: np.ndarray
    age: np.ndarray
    segment: np.ndarray
    activity: np.ndarray  # mean 1
    join_day: np.ndarray
    interest_cat: np.ndarray  # (U, K) category index or −1
    interest_w: np.ndarray  # (U, K), rows sum to 1
    affinity: np.ndarray  # (3 genders, 8 ages, D departments) profile × department affinity

    @property
    def n_items(self) -> int:
        return len(self.item_id)

    @property
    def n_users(self) -> int:
        return len(self.user_id)

    def interest_probs(self, gender: int, age: int) -> np.ndarray:
        """(C,) probability of a category becoming an interest of a (gender, age) user."""
        p = self.cat_weight * np.exp(self.affinity[gender, age, self.cat_dept])
        return p / p.sum()

    def draw_interests(self, rng: np.random.Generator, users: np.ndarray) -> np.ndarray:
        """(len(users),) a fresh interest category per user, profile-dependent."""
        out = np.empty(len(users), dtype=np.int64)
        key = self.gender[users] * 8 + self.age[users]
        for k in np.unique(key):
            sel = np.flatnonzero(key == k)
            p = self.interest_probs(int(k) // 8, int(k) % 8)
            out[sel] = rng.choice(len(p), size=len(sel), p=p)
        return out


def build_world(cfg: DemoConfig, seed: int, item_base: int = 0, user_base: int = 0) -> World:
    """Build the catalog and users of ``cfg`` deterministically from ``seed``.

    ``item_base``/``user_base`` offset the public ids past ids already in the warehouse.
    One random stream feeds every step below in a fixed order (the logs depend on it).
    """
    rng = rng_for(seed, 0)
    if cfg.n_brands < cfg.n_categories or cfg.n_categories < cfg.n_departments:
        raise ValueError("a demo config needs n_departments <= n_categories <= n_brands")
    cats = _categories(rng, cfg)
    items = _items(rng, cfg, cats)
    items.update(_prices(rng, cfg, items["item_cat"], items["item_brand"]))
    items["item_shop"] = _shops(
        rng, cfg, cats["cat_dept"], cats["brand_cat"], items["item_cat"], items["item_brand"]
    )
    items["item_launch"] = _launch_days(rng, cfg)
    brand_vec = _unit(rng.standard_normal((cfg.n_brands, cfg.dim)))
    noise = rng.standard_normal((cfg.n_items, cfg.dim)) / np.sqrt(cfg.dim)
    item_emb = _unit(
        cats["cat_vec"][items["item_cat"]] + 0.6 * brand_vec[items["item_brand"]] + 0.45 * noise
    )
    item_id = item_base + rng.permutation(cfg.n_items).astype(np.int64) + 1
    world = World(
        **cats,
        **items,
        item_id=item_id,
        item_emb=item_emb.astype(np.float32),
        **_users(rng, cfg, user_base),
        interest_cat=np.empty(0, dtype=np.int64),
        interest_w=np.empty(0),
    )
    _draw_interests(rng, cfg, world)
    _schedule_late_launches(cfg, seed, world)
    return world


def _schedule_late_launches(cfg: DemoConfig, seed: int, world: World) -> None:
    """Launch days after the window for the items held back from it (``late_item_frac``).

    Their own stream ``(seed, 4)``, drawn after everything else, so the window's logs are
    exactly what they were before days after the window existed. Days ``n_days + k`` with
    ``k ~ Geometric(p) − 1``: the first appended day launches new items at the window's
    daily rate (``new_item_frac / (n_days − 1)`` of the catalog), later days fewer as the
    held-back items run out (``tarq demo-data --next-day``, docs/demo-data.md).
    """
    late = np.flatnonzero(world.item_launch >= cfg.n_days)
    if not len(late):
        return
    daily = cfg.new_item_frac / max(cfg.n_days - 1, 1)
    p = min(1.0, daily / max(cfg.late_item_frac, 1e-12))
    offset = rng_for(seed, 4).geometric(p, size=len(late)) - 1
    world.item_launch[late] = cfg.n_days + offset


def _categories(rng: np.random.Generator, cfg: DemoConfig) -> dict[str, np.ndarray]:
    """Departments, popularity and embeddings (correlated within a department) of the
    categories; their complements; brands per category."""
    n_c, d = cfg.n_categories, cfg.dim
    cat_dept = rng.permutation(np.arange(n_c) % cfg.n_departments)
    cat_weight = _zipf_weights(rng, n_c, cfg.category_pop_exponent)
    cat_weight /= cat_weight.sum()
    dept_vec = _unit(rng.standard_normal((cfg.n_departments, d)))
    cat_vec = _unit(dept_vec[cat_dept] + 0.9 * _unit(rng.standard_normal((n_c, d))))
    # Complements: half of the categories lead to one category of another department.
    cat_comp = np.full(n_c, -1, dtype=np.int64)
    has = rng.random(n_c) < 0.5
    cand = rng.integers(0, n_c, size=n_c)
    for _ in range(8):
        bad = has & (cat_dept[cand] == cat_dept)
        if not bad.any():
            break
        cand[bad] = rng.integers(0, n_c, size=int(bad.sum()))
    ok = has & (cat_dept[cand] != cat_dept)
    cat_comp[ok] = cand[ok]
    # Brands belong to categories (every category has one; popular ones get more).
    extra = rng.choice(
        n_c, size=cfg.n_brands - n_c, p=np.sqrt(cat_weight) / np.sqrt(cat_weight).sum()
    )
    return {
        "cat_dept": cat_dept,
        "cat_weight": cat_weight,
        "cat_vec": cat_vec,
        "cat_comp": cat_comp,
        "brand_cat": np.sort(np.concatenate([np.arange(n_c), extra])),
    }


def _items(
    rng: np.random.Generator, cfg: DemoConfig, cats: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Items: category by popularity, brand within the category by brand popularity; items
    ordered by brand; popularity (z-scored over what gets shown) and quality."""
    n_c, n_b, n_i = cfg.n_categories, cfg.n_brands, cfg.n_items
    brand_cat = cats["brand_cat"]
    brand_weight = _zipf_weights(rng, n_b, cfg.brand_pop_exponent)
    brand_cstart = np.searchsorted(brand_cat, np.arange(n_c + 1))
    cats["brand_label"] = rng.permutation(n_b) + 1
    item_cat = rng.choice(n_c, size=n_i, p=cats["cat_weight"])
    bcum = np.concatenate([[0.0], np.cumsum(brand_weight)])
    item_brand, _ = sample_in_ranges(
        bcum, brand_cstart[item_cat], brand_cstart[item_cat + 1], rng.random(n_i)
    )
    item_brand = item_brand[np.argsort(item_brand, kind="stable")]
    item_cat = brand_cat[item_brand]
    cats["brand_start"] = np.searchsorted(item_brand, np.arange(n_b + 1))
    cats["cat_start"] = np.searchsorted(item_cat, np.arange(n_c + 1))
    item_weight = _zipf_weights(rng, n_i, cfg.item_pop_exponent)
    # Standardized over what gets shown (popularity-weighted), so the popularity term means
    # the same for a 600-item and a 1.2M-item catalog.
    logw = np.log(item_weight)
    pw = item_weight / item_weight.sum()
    mean = float(pw @ logw)
    return {
        "item_cat": item_cat,
        "item_brand": item_brand,
        "item_weight": item_weight,
        "item_pop_z": (logw - mean) / np.sqrt(float(pw @ (logw - mean) ** 2)),
        "item_quality": rng.normal(0.0, cfg.click.quality_sd, n_i),
    }


def _prices(
    rng: np.random.Generator, cfg: DemoConfig, item_cat: np.ndarray, item_brand: np.ndarray
) -> dict[str, np.ndarray]:
    """Prices: log-normal per category with a brand premium; 0.5 % missing (NaN)."""
    n_i = cfg.n_items
    cat_mu = rng.normal(3.3, 0.9, cfg.n_categories)
    cat_sigma = rng.uniform(0.25, 0.7, cfg.n_categories)
    brand_premium = rng.normal(0.0, 0.35, cfg.n_brands)
    z = rng.standard_normal(n_i)
    logp = cat_mu[item_cat] + brand_premium[item_brand] + cat_sigma[item_cat] * z
    item_price = np.round(np.exp(logp), 2)
    item_price_z = (logp - cat_mu[item_cat]) / cat_sigma[item_cat]
    missing = rng.random(n_i) < 0.005
    item_price[missing] = np.nan
    item_price_z[missing] = 0.0
    return {"item_price": item_price, "item_price_z": item_price_z}


def _shops(
    rng: np.random.Generator,
    cfg: DemoConfig,
    cat_dept: np.ndarray,
    brand_cat: np.ndarray,
    item_cat: np.ndarray,
    item_brand: np.ndarray,
) -> np.ndarray:
    """(n_items,) shop per item: shops sell within one department; an item is in its brand's
    flagship shop (60 %) or another shop of its department."""
    shop_dept = np.sort(np.arange(cfg.n_shops) % cfg.n_departments)
    shop_dstart = np.searchsorted(shop_dept, np.arange(cfg.n_departments + 1))
    bdept = cat_dept[brand_cat]
    flagship = shop_dstart[bdept] + (
        rng.random(cfg.n_brands) * (shop_dstart[bdept + 1] - shop_dstart[bdept])
    ).astype(np.int64)
    idept = cat_dept[item_cat]
    other = shop_dstart[idept] + (
        rng.random(cfg.n_items) * (shop_dstart[idept + 1] - shop_dstart[idept])
    ).astype(np.int64)
    return np.where(rng.random(cfg.n_items) < 0.6, flagship[item_brand], other)


def _launch_days(rng: np.random.Generator, cfg: DemoConfig) -> np.ndarray:
    """(n_items,) launch day: most items predate the window (-1), some launch during it,
    some after it (day n_days here; :func:`_schedule_late_launches` spreads them out)."""
    u = rng.random(cfg.n_items)
    item_launch = np.full(cfg.n_items, -1, dtype=np.int64)
    late = u < cfg.late_item_frac
    new = (u >= cfg.late_item_frac) & (u < cfg.late_item_frac + cfg.new_item_frac)
    item_launch[late] = cfg.n_days
    item_launch[new] = rng.integers(1, max(cfg.n_days, 2), size=int(new.sum()))
    return item_launch


def _users(rng: np.random.Generator, cfg: DemoConfig, user_base: int) -> dict[str, np.ndarray]:
    """Users: profile (gender, age, segment), activity, join day, and the profile's
    department affinity (3, 8, n_departments)."""
    n_u = cfg.n_users
    gender = rng.choice(3, size=n_u, p=GENDER_P)
    age = rng.choice(8, size=n_u, p=AGE_P)
    segment = rng.choice(3, size=n_u, p=SEGMENT_P) + 1
    activity = rng.lognormal(0.0, 0.9, n_u)
    activity /= activity.mean()
    join_day = np.where(
        rng.random(n_u) < cfg.new_user_frac, rng.integers(1, max(cfg.n_days, 2), n_u), 0
    )
    affinity = np.zeros((3, 8, cfg.n_departments))
    g_aff = rng.normal(0.0, 0.6, (3, cfg.n_departments))
    a_aff = rng.normal(0.0, 0.4, (8, cfg.n_departments))
    g_aff[0] = 0.0  # unknown gender / age: no profile lean
    a_aff[0] = 0.0
    affinity[:] = g_aff[:, None, :] + a_aff[None, :, :]
    return {
        "user_id": user_base + np.arange(n_u, dtype=np.int64) + 1,
        "gender": gender,
        "age": age,
        "segment": segment,
        "activity": activity,
        "join_day": join_day,
        "affinity": affinity,
    }


def _draw_interests(rng: np.random.Generator, cfg: DemoConfig, world: World) -> None:
    """Each user's interest categories (n_users, interests_max; -1 = none) and weights."""
    n_u, k_max = cfg.n_users, cfg.interests_max
    n_int = rng.integers(cfg.interests_min, k_max + 1, size=n_u)
    interest_cat = np.full((n_u, k_max), -1, dtype=np.int64)
    all_users = np.arange(n_u)
    for k in range(k_max):
        fresh = world.draw_interests(rng, all_users)
        interest_cat[:, k] = np.where(k < n_int, fresh, -1)
    w = rng.dirichlet(np.ones(k_max), size=n_u) * (interest_cat >= 0)
    world.interest_cat = interest_cat
    world.interest_w = w / w.sum(axis=1, keepdims=True)
