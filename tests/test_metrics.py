"""Metrics on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from tarq import metrics


def test_auc_hand_case() -> None:
    # Pairs (pos, neg): (0.8,0.1) ok, (0.8,0.4) ok, (0.35,0.1) ok, (0.35,0.4) wrong → 3/4.
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8])
    assert metrics.auc(y, p) == pytest.approx(0.75)


def test_auc_refuses_one_class_and_bad_input() -> None:
    with pytest.raises(ValueError, match="same class"):
        metrics.auc(np.ones(3), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="differ in length"):
        metrics.auc(np.array([0, 1]), np.array([0.1]))
    with pytest.raises(ValueError, match="NaN"):
        metrics.auc(np.array([0, 1]), np.array([0.1, np.nan]))


def test_gauc_weights_by_impressions_and_counts_skipped_users() -> None:
    # user 1: 4 rows, AUC 0.75 (case above); user 2: 2 rows, AUC 1.0;
    # user 3: only clicks, user 4: only non-clicks → both skipped.
    y = np.array([0, 0, 1, 1, 1, 0, 1, 1, 0])
    p = np.array([0.1, 0.4, 0.35, 0.8, 0.9, 0.2, 0.5, 0.6, 0.3])
    u = np.array([1, 1, 1, 1, 2, 2, 3, 3, 4])
    value, used, skipped = metrics.gauc(y, p, u)
    assert (used, skipped) == (2, 2)
    assert value == pytest.approx((4 * 0.75 + 2 * 1.0) / 6)


def test_gauc_ties_match_sklearn_per_user() -> None:
    rng = np.random.default_rng(0)
    n = 3000
    u = rng.integers(0, 200, n)
    y = (rng.random(n) < 0.3).astype(float)
    p = np.round(rng.random(n), 1)  # many ties within users
    value, used, skipped = metrics.gauc(y, p, u)
    num = den = 0.0
    n_used = 0
    for user in np.unique(u):
        sel = u == user
        if 0 < y[sel].sum() < sel.sum():
            num += sel.sum() * roc_auc_score(y[sel], p[sel])
            den += sel.sum()
            n_used += 1
    assert used == n_used and used + skipped == np.unique(u).size
    assert value == pytest.approx(num / den, abs=1e-12)


def test_gauc_without_any_two_class_user_is_nan() -> None:
    value, used, skipped = metrics.gauc(np.array([1, 0]), np.array([0.3, 0.2]), np.array([7, 8]))
    assert math.isnan(value) and (used, skipped) == (0, 2)


def test_logloss_hand_case_and_clipping() -> None:
    y = np.array([1, 0])
    p = np.array([0.8, 0.4])
    assert metrics.logloss(y, p) == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
    assert math.isfinite(metrics.logloss(np.array([1, 0]), np.array([0.0, 1.0])))
    with pytest.raises(ValueError, match="probabilities"):
        metrics.logloss(y, np.array([1.5, 0.2]))


def test_utilization_per_level_batch_and_catalog() -> None:
    codes = np.array([[0, 1], [1, 1], [2, 1], [2, 1]])
    assert metrics.utilization_per_level(codes, 4).tolist() == [0.75, 0.25]
    assert metrics.utilization_batch(codes, 4) == pytest.approx(0.5)
    assert metrics.utilization_catalog(codes, 4) == pytest.approx(0.5)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        metrics.utilization_batch(codes, 2)


def test_collision_rate_and_largest_group() -> None:
    codes = np.array([[0, 1], [0, 1], [0, 1], [2, 3], [2, 0], [2, 3]])
    rate, largest = metrics.collision_rate(codes)
    assert rate == pytest.approx(5 / 6)
    assert largest == 3
    assert metrics.collision_rate(np.array([[0, 1], [1, 0]])) == (0.0, 1)


def test_collision_rate_distinct_leaves_out_items_with_equal_inputs() -> None:
    # Items 0 and 1 have equal inputs (both collide by necessity); 2 and 3 differ but share a
    # tuple (an avoidable collision); 4 is alone.
    codes = np.array([[1, 1], [1, 1], [2, 0], [2, 0], [0, 3]])
    inputs = np.array([[0, 5], [0, 5], [7, 1], [8, 1], [9, 9]])
    assert metrics.collision_rate(codes)[0] == pytest.approx(0.8)
    assert metrics.collision_rate_distinct(codes, inputs) == (pytest.approx(0.4), 2)
    # A tuple holding two equal-input items and a third distinct item: all three count.
    rate, same = metrics.collision_rate_distinct(codes[[0, 1, 4]] * 0, inputs[[0, 1, 4]])
    assert rate == pytest.approx(1.0) and same == 2
    rng = np.random.default_rng(0)
    codes, inputs = rng.integers(0, 3, (300, 2)), rng.integers(0, 4, (300, 2))
    brute = np.mean(
        [
            any((codes[j] == codes[i]).all() and (inputs[j] != inputs[i]).any() for j in range(300))
            for i in range(300)
        ]
    )
    assert metrics.collision_rate_distinct(codes, inputs)[0] == pytest.approx(brute)
    with pytest.raises(ValueError, match="inputs"):
        metrics.collision_rate_distinct(codes, inputs[:5])


def test_reconstruction_error() -> None:
    x = np.array([[0.0, 0.0], [1.0, 1.0]])
    x_hat = np.array([[3.0, 4.0], [1.0, 1.0]])
    assert metrics.reconstruction_error(x, x_hat) == pytest.approx(12.5)
    with pytest.raises(ValueError, match="must be equal"):
        metrics.reconstruction_error(x, x_hat[:1])


def test_weighted_auc_with_unit_weights_is_the_auc() -> None:
    rng = np.random.default_rng(3)
    y = (rng.random(500) < 0.2).astype(float)
    p = np.round(rng.random(500) + 0.3 * y, 2)  # ties on purpose
    order = np.argsort(p, kind="stable")
    group = np.cumsum(np.r_[True, np.diff(p[order]) != 0]) - 1
    got = metrics._weighted_auc_sorted(y[order], group, int(group[-1]) + 1, np.ones(500))
    assert got == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    w = rng.integers(0, 3, 500).astype(float)  # integer weights = repeated rows
    rep = np.repeat(np.arange(500), w.astype(int))
    got_w = metrics._weighted_auc_sorted(y[order], group, int(group[-1]) + 1, w[order])
    assert got_w == pytest.approx(roc_auc_score(y[rep], p[rep]), abs=1e-12)


def test_paired_bootstrap_sees_a_real_gain_and_none_between_equals() -> None:
    rng = np.random.default_rng(0)
    n = 6000
    user = rng.integers(0, 400, n)
    y = (rng.random(n) < 0.1).astype(float)
    noise = rng.random(n)
    better, worse = noise + 0.8 * y, noise + 0.3 * y
    iv = metrics.paired_bootstrap(y, better, worse, user, n_boot=300)
    assert iv.delta == pytest.approx(metrics.auc(y, better) - metrics.auc(y, worse))
    assert 0 < iv.low < iv.delta < iv.high and iv.significant
    same = metrics.paired_bootstrap(y, better, better, user, n_boot=50)
    assert same.delta == same.low == same.high == 0.0 and not same.significant
    g = metrics.paired_bootstrap(y, better, worse, user, metric="gauc", n_boot=300)
    assert g.delta == pytest.approx(
        metrics.gauc(y, better, user)[0] - metrics.gauc(y, worse, user)[0]
    )
    assert g.low < g.delta < g.high
    again = metrics.paired_bootstrap(y, better, worse, user, n_boot=300)
    assert (again.low, again.high) == (iv.low, iv.high)  # seeded: reproducible
    with pytest.raises(ValueError, match="auc or gauc"):
        metrics.paired_bootstrap(y, better, worse, user, metric="logloss")


def test_pooled_bootstrap_over_seeds_carries_the_seed_to_seed_spread() -> None:
    rng = np.random.default_rng(1)
    n = 4000
    user = rng.integers(0, 300, n)
    y = (rng.random(n) < 0.15).astype(float)
    noise = rng.random((3, n))
    base = noise + 0.5 * y
    # One seed equals the per-day paired bootstrap exactly (same RNG stream).
    one = metrics.pooled_paired_bootstrap(y, base[:1] + 0.1 * y, base[:1], user, n_boot=200)
    ref = metrics.paired_bootstrap(y, base[0] + 0.1 * y, base[0], user, n_boot=200)
    assert (one.delta, one.low, one.high) == (ref.delta, ref.low, ref.high)
    # a beats b by the same margin on every seed: significant, delta = the seed mean.
    a = base + 0.1 * y
    iv = metrics.pooled_paired_bootstrap(y, a, base, user, n_boot=200)
    assert iv.delta == pytest.approx(
        np.mean([metrics.auc(y, a[s]) - metrics.auc(y, base[s]) for s in range(3)])
    )
    assert iv.significant and iv.low < iv.delta < iv.high
    # A gain on one seed and losses on the other two: the seed draw widens the interval
    # beyond what resampling users alone gives, and it covers zero.
    sign = np.array([[0.4], [-0.15], [-0.15]])
    mixed = base + sign * y
    pooled = metrics.pooled_paired_bootstrap(y, mixed, base, user, n_boot=300)
    fixed = [metrics.paired_bootstrap(y, mixed[s], base[s], user, n_boot=300) for s in range(3)]
    assert pooled.low < 0 < pooled.high
    assert pooled.high - pooled.low > 2 * max(f.high - f.low for f in fixed)
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.pooled_paired_bootstrap(y, a, base[:2], user)


def test_intervals_from_predictions_files_check_the_rows_and_pool_seeds(tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tarq.training.evaluation import paired_interval, pooled_interval

    rng = np.random.default_rng(2)
    n = 3000
    rows = {
        "user_id": rng.integers(0, 200, n),
        "item_id": rng.integers(0, 50, n),
        "label": (rng.random(n) < 0.2).astype(float),
    }

    def write(name: str, score: np.ndarray, **change: np.ndarray) -> str:
        path = tmp_path / f"{name}.parquet"
        pq.write_table(pa.table({**rows, **change, "score": score}), path)
        return str(path)

    y = rows["label"]
    a = [write(f"a{s}", rng.random(n) + 0.6 * y) for s in range(2)]
    b = [write(f"b{s}", rng.random(n) + 0.3 * y) for s in range(2)]
    one = paired_interval(a[0], b[0], n_boot=100)
    ref = metrics.paired_bootstrap(
        y,
        pq.read_table(a[0])["score"].to_numpy(),
        pq.read_table(b[0])["score"].to_numpy(),
        rows["user_id"],
        n_boot=100,
    )
    assert (one.delta, one.low, one.high) == (ref.delta, ref.low, ref.high)
    assert pooled_interval(a[:1], b[:1], n_boot=100) == one  # one seed: the same interval
    both = pooled_interval(a, b, n_boot=100)
    assert both.significant and both.low < both.delta < both.high
    other = write("other", rng.random(n), item_id=rows["item_id"][::-1].copy())
    with pytest.raises(ValueError, match="item_id differs"):
        pooled_interval([a[0], other], b)
    with pytest.raises(ValueError, match="as many for both"):
        pooled_interval(a, b[:1])
