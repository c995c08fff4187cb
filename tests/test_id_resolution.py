"""Collision resolution (tarq.ids.id_resolution): hand-made latents and codebooks, and the
warm-day round trip through assign_ids + publish on a trained fixture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tarq.ids.id_resolution import resolve_collisions
from tarq.ids.semantic_ids import assign_ids, faiss_assign
from tarq.release.publish import publish
from tests.test_semantic_ids import make_trained
from tests.test_sticky_ids import _codes


def _books(m: int, k: int, scale: float = 0.5) -> np.ndarray:
    """(m, K, 2) codebooks: level l's entries on a circle of radius scale^l."""
    ang = 2 * np.pi * np.arange(k) / k
    ring = np.stack([np.cos(ang), np.sin(ang)], 1)
    return np.stack([ring * scale**lv for lv in range(m)]).astype(np.float32)


def _resolve(z: np.ndarray, inputs: np.ndarray, books: np.ndarray, prior=None):
    """Greedy codes of z, then resolution with z looked up by the inputs' first column."""
    codes = faiss_assign(z, books)
    calls: list[int] = []

    def latent(feats: np.ndarray) -> np.ndarray:
        calls.append(len(feats))
        return z[feats[:, 0]]

    return codes, resolve_collisions(codes, inputs, latent, books, prior), calls


def _sq(z: np.ndarray, books: np.ndarray, c: np.ndarray) -> float:
    return float(((z - books[np.arange(books.shape[0]), c].sum(0)) ** 2).sum())


def test_distinct_inputs_get_the_nearest_free_tuple_equal_inputs_share() -> None:
    books = _books(3, 4)
    base = books[0, 0] + books[1, 0] + books[2, 0]
    rng = np.random.default_rng(0)
    z = (base + rng.normal(scale=0.02, size=(5, 2))).astype(np.float32)
    z[4] = z[0]  # item 4: the same inputs as item 0
    inputs = np.array([[0, 1], [1, 1], [2, 1], [3, 1], [0, 1]])
    codes, res, calls = _resolve(z, inputs, books)
    assert (codes == codes[0]).all()  # greedy: one tuple for all
    out = res.codes
    assert len({tuple(out[i]) for i in range(4)}) == 4 and (out[4] == out[0]).all()
    assert res.classes_contested == 4 and res.classes_moved == 3
    assert res.moved_by_depth == [3] and res.unresolved_classes == 0 and calls == [4]
    assert res.greedy_collision_rate == 1.0 == res.greedy_collision_rate_distinct_inputs
    # The nearest class keeps the greedy tuple; the others keep levels 0 and 1 and move in
    # order of their error, each to the nearest last-level entry still free.
    errs = [_sq(z[i], books, codes[i]) for i in range(4)]
    keeper = int(np.argmin(errs))
    assert (out[keeper] == codes[keeper]).all() and (out[:, :2] == codes[:, :2]).all()
    taken = {int(codes[0, 2])}
    for i in sorted(set(range(4)) - {keeper}, key=lambda i: errs[i]):
        free = [e for e in range(4) if e not in taken]
        best = min(free, key=lambda e: _sq(z[i], books, np.array([*codes[i, :2], e])))
        assert out[i, 2] == best
        taken.add(best)
    moved = [i for i in range(5) if (out[i] != codes[i]).any()]
    assert res.items_moved == len(moved)
    want = sum(_sq(z[i], books, out[i]) - _sq(z[i], books, codes[i]) for i in moved)
    assert res.sq_err_added == pytest.approx(want, rel=1e-5)


def test_a_full_ending_moves_up_a_level_and_the_coarse_levels_never_change() -> None:
    books = _books(4, 2)  # m = 4 > MAX_DEPTH = 3: level 0 is never changed
    base = books[0, 1] + books[1, 0] + books[2, 0] + books[3, 0]
    z = (base + np.linspace(-0.01, 0.01, 10)[:, None] * np.array([1, 0.3])).astype(np.float32)
    codes, res, _ = _resolve(z, np.arange(10)[:, None], books)
    assert (codes == [1, 0, 0, 0]).all()
    out = res.codes
    assert (out[:, 0] == 1).all() and len({tuple(r) for r in out}) == 8  # 2^3 endings
    assert res.moved_by_depth == [1, 2, 4] and res.unresolved_classes == 2
    assert res.classes_moved == 7 == res.items_moved


def test_no_collision_changes_nothing() -> None:
    books = _books(2, 4)
    z = np.stack([books[0, i] + books[1, j] for i in range(4) for j in range(4)])
    codes, res, calls = _resolve(z, np.arange(16)[:, None], books)
    assert (res.codes == codes).all() and res.classes_contested == 0 and calls == []
    assert res.greedy_collision_rate == 0.0 == res.greedy_collision_rate_distinct_inputs
    # Equal inputs share a tuple: a collision, but not one among distinct inputs.
    _, same, _ = _resolve(z[[0, 0, 1]], np.array([[0], [0], [1]]), books)
    assert same.greedy_collision_rate == pytest.approx(2 / 3) and same.classes_contested == 0


def test_the_served_holder_keeps_its_tuple_and_a_mover_takes_its_served_tuple_back() -> None:
    books = _books(2, 4)
    base = books[0, 2] + books[1, 0]
    z = (base + np.array([[0.0, 0.0], [0.02, 0.0], [0.03, 0.01]])).astype(np.float32)
    inputs = np.arange(3)[:, None]
    codes, plain, _ = _resolve(z, inputs, books)
    assert (codes == codes[0]).all()
    assert (plain.codes[0] == codes[0]).all()  # the nearest keeps it without a prior
    prior = np.array([[-1, -1], codes[0], [2, 3]])  # item 1 served the tuple; item 2 (2, 3)
    _, res, _ = _resolve(z, inputs, books, prior)
    assert (res.codes[1] == codes[1]).all()  # the served holder keeps it
    assert res.codes[2].tolist() == [2, 3] and res.moved_to_served == 1
    assert res.codes[0, 0] == 2 and tuple(res.codes[0]) not in {(2, 0), (2, 3)}


def test_a_warm_day_republishes_yesterdays_resolution(tmp_path: Path) -> None:
    db, model_dir = make_trained(tmp_path / "fx")
    kw = {"progress": False, "max_collision_rate": None}
    day1 = assign_ids(db, model_dir, tmp_path / "ids1", **kw)
    assert day1.resolution["classes_moved"] > 0
    publish(db, tmp_path / "ids1", model_version="1", run_date="2026-10-06", export_dir=tmp_path)
    day2 = assign_ids(db, model_dir, tmp_path / "ids2", sticky_margin=0.3, **kw)
    assert _codes(tmp_path / "ids2") == _codes(tmp_path / "ids1")
    assert day2.churn["tuple_churn"] == 0.0
    # A cold day's resolution ignores the served table: the same codes as day 1 here too.
    cold = assign_ids(db, model_dir, tmp_path / "ids3", **kw)
    assert _codes(tmp_path / "ids3") == _codes(tmp_path / "ids1") and cold.sticky is None
