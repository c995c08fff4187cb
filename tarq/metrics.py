"""Offline metrics reported the same way by every model: numpy in, Python numbers out.

AUC, GAUC (per-user AUC weighted by the user's impressions; single-class users skipped and
counted), log-loss, codebook utilization (per batch as the TARQ authors report it, and over the
whole catalog), semantic-ID tuple collisions and reconstruction error.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import log_loss, roc_auc_score


def _labels_scores(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y, p = np.asarray(y, dtype=np.float64).ravel(), np.asarray(p, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels ({y.size}) and scores ({p.size}) differ in length")
    if y.size == 0:
        raise ValueError("no rows to evaluate")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1")
    if not np.isfinite(p).all():
        raise ValueError("scores contain NaN or infinity")
    return y, p


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC of scores ``p`` (N,) against labels ``y`` (N,) in {0, 1}."""
    y, p = _labels_scores(y, p)
    if y.min() == y.max():
        raise ValueError("AUC is undefined: all labels are the same class")
    return float(roc_auc_score(y, p))


def _per_user_auc(
    y: np.ndarray, p: np.ndarray, uidx: np.ndarray, n_users: int
) -> tuple[np.ndarray, np.ndarray]:
    """(AUC per user (U,), NaN where the user has one class; rows per user (U,))."""
    # Rank scores within each user in one pass: sort by (user, score), average ranks of ties.
    order = np.lexsort((p, uidx))
    us, ps, ys = uidx[order], p[order], y[order]
    n = us.size
    start = np.r_[0, np.flatnonzero(np.diff(us)) + 1]
    group_start = np.repeat(start, np.diff(np.r_[start, n]))
    pos_in_group = np.arange(n) - group_start + 1.0
    new_run = np.r_[True, (np.diff(us) != 0) | (np.diff(ps) != 0)]
    run = np.cumsum(new_run) - 1
    run_first = np.flatnonzero(new_run)
    run_last = np.r_[run_first[1:], n] - 1
    rank = (pos_in_group[run_first] + pos_in_group[run_last])[run] / 2.0
    cnt = np.bincount(us, minlength=n_users).astype(np.float64)
    npos = np.bincount(us, weights=ys, minlength=n_users)
    nneg = cnt - npos
    rpos = np.bincount(us, weights=rank * ys, minlength=n_users)
    ok = (npos > 0) & (nneg > 0)
    per_user = np.full(n_users, np.nan)
    per_user[ok] = (rpos[ok] - npos[ok] * (npos[ok] + 1) / 2.0) / (npos[ok] * nneg[ok])
    return per_user, cnt


def gauc(y: np.ndarray, p: np.ndarray, user: np.ndarray) -> tuple[float, int, int]:
    """Group AUC: Σ_u n_u · AUC_u / Σ_u n_u over users having both classes.

    Args:
        y: (N,) labels in {0, 1}.  p: (N,) scores.  user: (N,) user keys.
    Returns:
        (gauc, users used, users skipped because all their rows have one class). gauc is NaN
        when no user has both classes.
    """
    y, p = _labels_scores(y, p)
    user = np.asarray(user).ravel()
    if user.shape != y.shape:
        raise ValueError(f"user keys ({user.size}) and labels ({y.size}) differ in length")
    _, uidx = np.unique(user, return_inverse=True)
    n_users = int(uidx.max()) + 1
    per_user, cnt = _per_user_auc(y, p, uidx, n_users)
    ok = ~np.isnan(per_user)
    used, skipped = int(ok.sum()), int(n_users - ok.sum())
    if used == 0:
        return float("nan"), 0, skipped
    return float(np.sum(per_user[ok] * cnt[ok]) / cnt[ok].sum()), used, skipped


@dataclass(frozen=True)
class PairedInterval:
    """A paired-bootstrap interval of ``metric(a) − metric(b)`` on the same rows.

    Attributes:
        metric: ``auc`` or ``gauc``.
        delta: the difference on the rows as they are.
        low, high: the percentile interval at ``level``.
        level: e.g. 0.95.
        n_boot: bootstrap replicates.
        clusters: resampled units (users: rows of one user are correlated).
    """

    metric: str
    delta: float
    low: float
    high: float
    level: float
    n_boot: int
    clusters: int

    @property
    def significant(self) -> bool:
        """The interval excludes 0."""
        return self.low > 0 or self.high < 0

    def to_dict(self) -> dict[str, float | int | str | bool]:
        return {**asdict(self), "significant": self.significant}

    def text(self) -> str:
        return (
            f"{self.delta:+.4f} [{self.low:+.4f}, {self.high:+.4f}] "
            f"({self.level:.0%} paired bootstrap over {self.clusters:,} users)"
        )


def _weighted_auc_sorted(ys: np.ndarray, group: np.ndarray, n_groups: int, w: np.ndarray) -> float:
    """AUC of rows pre-sorted by score (tie groups ``group``) under row weights ``w``."""
    gp = np.bincount(group, weights=w * ys, minlength=n_groups)
    gn = np.bincount(group, weights=w * (1.0 - ys), minlength=n_groups)
    below = np.cumsum(gn) - gn
    denom = gp.sum() * gn.sum()
    return float(np.sum(gp * (below + 0.5 * gn)) / denom) if denom > 0 else float("nan")


def paired_bootstrap(
    y: np.ndarray,
    p_a: np.ndarray,
    p_b: np.ndarray,
    user: np.ndarray,
    metric: str = "auc",
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> PairedInterval:
    """Interval of ``metric(p_a) − metric(p_b)`` by a paired bootstrap over users.

    Both models are scored on the same rows; each replicate draws users with replacement and
    weighs every row by its user's count, so the two metrics of a replicate see the same
    resample (the pairing removes the day's difficulty from the difference) and a user's
    correlated rows move together.

    Args:
        y: (N,) labels.  p_a, p_b: (N,) scores of the two models.  user: (N,) user keys.
        metric: ``auc`` or ``gauc``.
        n_boot: replicates.  level: interval coverage.  seed: RNG seed (reproducible).
    """
    if metric not in ("auc", "gauc"):
        raise ValueError(f"metric must be auc or gauc, got {metric!r}")
    y, p_a = _labels_scores(y, p_a)
    _, p_b = _labels_scores(y, p_b)
    _, uidx = np.unique(np.asarray(user).ravel(), return_inverse=True)
    n_users = int(uidx.max()) + 1
    point_a = auc(y, p_a) if metric == "auc" else gauc(y, p_a, uidx)[0]
    point_b = auc(y, p_b) if metric == "auc" else gauc(y, p_b, uidx)[0]
    rng = np.random.default_rng(seed)
    if metric == "auc":
        prepared = []
        for p in (p_a, p_b):
            order = np.argsort(p, kind="stable")
            ps = p[order]
            group = np.cumsum(np.r_[True, np.diff(ps) != 0]) - 1
            prepared.append((order, group, int(group[-1]) + 1))
    else:
        per = [_per_user_auc(y, p, uidx, n_users) for p in (p_a, p_b)]
    deltas = np.empty(n_boot)
    for b in range(n_boot):
        counts = np.bincount(rng.integers(0, n_users, n_users), minlength=n_users)
        if metric == "auc":
            w = counts[uidx].astype(np.float64)
            a, bb = (_weighted_auc_sorted(y[o], g, k, w[o]) for o, g, k in prepared)
        else:
            vals = []
            for per_user, cnt in per:
                ok = ~np.isnan(per_user) & (counts > 0)
                wt = counts[ok] * cnt[ok]
                vals.append(float(np.sum(per_user[ok] * wt) / wt.sum()) if wt.sum() else np.nan)
            a, bb = vals
        deltas[b] = a - bb
    deltas = deltas[np.isfinite(deltas)]
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(deltas, [tail, 1.0 - tail]) if deltas.size else (np.nan, np.nan)
    return PairedInterval(
        metric, float(point_a - point_b), float(lo), float(hi), level, int(n_boot), n_users
    )


def pooled_paired_bootstrap(
    y: np.ndarray,
    p_a: np.ndarray,
    p_b: np.ndarray,
    user: np.ndarray,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> PairedInterval:
    """Interval of the seed-mean ``AUC(a) − AUC(b)``, resampling test users AND seeds.

    Several training seeds of each model score the same test rows. Each replicate draws the
    users with replacement (as :func:`paired_bootstrap`) and, when there is more than one
    seed, the seeds with replacement too, pairing seed ``s`` of ``a`` with seed ``s`` of
    ``b``; the replicate's value is the mean over the drawn seeds of the paired AUC
    difference. The interval therefore carries both the test day's sampling noise and the
    run-to-run noise of training, which a per-seed interval or an sd over seeds alone miss.

    Args:
        y: (N,) labels, the same rows for every seed.  user: (N,) user keys.
        p_a, p_b: (S, N) scores of the two models, one row per seed (row s of both = seed s).
        n_boot: replicates.  level: interval coverage.  seed: RNG seed (reproducible).
    Returns:
        ``delta`` = mean over seeds of the paired AUC difference; ``clusters`` = users.
        With S = 1 the result equals :func:`paired_bootstrap` with the same seed.
    """
    p_a, p_b = (
        np.atleast_2d(np.asarray(p_a, dtype=np.float64)),
        np.atleast_2d(np.asarray(p_b, dtype=np.float64)),
    )
    if p_a.shape != p_b.shape:
        raise ValueError(f"scores of a {p_a.shape} and b {p_b.shape} differ in shape")
    n_seeds = p_a.shape[0]
    y = _labels_scores(y, p_a[0])[0]
    for row in (*p_a, *p_b):
        _labels_scores(y, row)
    _, uidx = np.unique(np.asarray(user).ravel(), return_inverse=True)
    if uidx.size != y.size:
        raise ValueError(f"user keys ({uidx.size}) and labels ({y.size}) differ in length")
    n_users = int(uidx.max()) + 1
    point = float(np.mean([auc(y, a) - auc(y, b) for a, b in zip(p_a, p_b, strict=True)]))

    def prepare(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        order = np.argsort(p, kind="stable")
        group = np.cumsum(np.r_[True, np.diff(p[order]) != 0]) - 1
        return order, group, int(group[-1]) + 1

    prepared = [(prepare(a), prepare(b)) for a, b in zip(p_a, p_b, strict=True)]
    rng = np.random.default_rng(seed)
    deltas = np.empty(n_boot)
    for r in range(n_boot):
        counts = np.bincount(rng.integers(0, n_users, n_users), minlength=n_users)
        w = counts[uidx].astype(np.float64)
        drawn = rng.integers(0, n_seeds, n_seeds) if n_seeds > 1 else np.zeros(1, dtype=int)
        per_seed = {}
        for s in np.unique(drawn):
            (oa, ga, ka), (ob, gb, kb) = prepared[s]
            per_seed[s] = _weighted_auc_sorted(y[oa], ga, ka, w[oa]) - _weighted_auc_sorted(
                y[ob], gb, kb, w[ob]
            )
        deltas[r] = np.mean([per_seed[s] for s in drawn])
    deltas = deltas[np.isfinite(deltas)]
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(deltas, [tail, 1.0 - tail]) if deltas.size else (np.nan, np.nan)
    return PairedInterval("auc", point, float(lo), float(hi), level, int(n_boot), n_users)


def logloss(y: np.ndarray, p: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities ``p`` (clipped to [eps, 1 − eps])."""
    y, p = _labels_scores(y, p)
    if p.min() < 0 or p.max() > 1:
        raise ValueError("log-loss needs probabilities in [0, 1]")
    return float(log_loss(y, np.clip(p, eps, 1 - eps), labels=[0, 1]))


def _codes(codes: np.ndarray, k: int | None = None) -> np.ndarray:
    c = np.asarray(codes)
    if c.ndim != 2 or c.shape[0] == 0:
        raise ValueError(f"codes must be a non-empty (N, m) array, got shape {c.shape}")
    if c.dtype.kind not in "iu":
        raise ValueError(f"codes must be integers, got {c.dtype}")
    if k is not None and (c.min() < 0 or c.max() >= k):
        raise ValueError(f"codes must lie in [0, {k}), got [{c.min()}, {c.max()}]")
    return c.astype(np.int64, copy=False)


def utilization_per_level(codes: np.ndarray, k: int) -> np.ndarray:
    """Distinct codes used at each level ÷ K: (N, m) codes → (m,) floats in (0, 1]."""
    c = _codes(codes, k)
    return np.array([np.unique(c[:, level]).size / k for level in range(c.shape[1])])


def utilization_batch(codes: np.ndarray, k: int) -> float:
    """The authors' figure: distinct codes in one batch ÷ K, averaged over levels."""
    return float(utilization_per_level(codes, k).mean())


def utilization_catalog(codes: np.ndarray, k: int) -> float:
    """The same over the whole catalog (one row per item)."""
    return float(utilization_per_level(codes, k).mean())


def collision_rate(codes: np.ndarray) -> tuple[float, int]:
    """Share of items whose full m-tuple is shared with at least one other item.

    Args:
        codes: (N, m), one row per distinct item.
    Returns:
        (rate in [0, 1], size of the largest group of items sharing one tuple; 1 = none).
    """
    c = _codes(codes)
    _, inverse, counts = np.unique(c, axis=0, return_inverse=True, return_counts=True)
    shared = counts[inverse.ravel()] > 1
    return float(shared.mean()), int(counts.max())


def collision_rate_distinct(codes: np.ndarray, inputs: np.ndarray) -> tuple[float, int]:
    """Collisions that a model could have avoided: the share of items sharing their tuple with
    an item whose inputs differ, and how many items have the same inputs as another item.

    Items with equal inputs (e.g. two ids unseen in training, both mapped to the OOV embedding,
    with equal category, brand, price bucket and shop) get equal latents from any model, so
    equal tuples; :func:`collision_rate` counts them, this does not.

    Args:
        codes: (N, m) semantic IDs, one row per distinct item.
        inputs: (N, F) the items' encoded model inputs (same row order).
    Returns:
        (rate in [0, 1], items whose inputs equal another item's).
    """
    c = _codes(codes)
    x = np.ascontiguousarray(np.asarray(inputs, dtype=np.int64))
    if x.ndim != 2 or x.shape[0] != c.shape[0]:
        raise ValueError(f"inputs {x.shape} must be (N, F) with N = {c.shape[0]} rows of codes")
    _, tup = np.unique(c, axis=0, return_inverse=True)
    _, inp, inp_counts = np.unique(x, axis=0, return_inverse=True, return_counts=True)
    tup, inp = tup.ravel(), inp.ravel()
    pairs = np.unique(np.stack([tup, inp], 1), axis=0)  # distinct (tuple, inputs) pairs
    inputs_per_tuple = np.bincount(pairs[:, 0], minlength=int(tup.max()) + 1)
    return float((inputs_per_tuple[tup] > 1).mean()), int((inp_counts[inp] > 1).sum())


def reconstruction_error(x: np.ndarray, x_hat: np.ndarray) -> float:
    """Mean over rows of the squared L2 distance ‖x − x̂‖²: (N, d), (N, d) → float."""
    x, x_hat = np.asarray(x, dtype=np.float64), np.asarray(x_hat, dtype=np.float64)
    if x.shape != x_hat.shape or x.ndim != 2:
        raise ValueError(f"x {x.shape} and x_hat {x_hat.shape} must be equal (N, d) arrays")
    return float(((x - x_hat) ** 2).sum(axis=1).mean())
