"""Open-loop replay of a demo day (``tarq.data.demo_replay``): the rebuilt world reproduces the
logged day exactly, each request gets a pool with true click probabilities, and the top-k
figures are right by brute force."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import pytest

from tarq.data.demo_replay import capture_pools, summary, topk, topk_report
from tarq.store.warehouse import open_db

LAST_DAY, MID_DAY = "2026-10-08", "2026-10-03"


@pytest.mark.parametrize("day", [LAST_DAY, MID_DAY])
def test_the_replay_is_the_logged_day_with_a_pool_per_request(tiny_db: Path, day: str) -> None:
    """The last logged day and a day inside the window (its histories cut at its midnight):
    capture_pools checks the replayed click model against the recorded one internally; here
    the requests' users and times are the logged ones and every pool is live catalog items
    with probabilities in (0, 1)."""
    pools = capture_pools(tiny_db, day, pool_size=150)
    lo = dt.datetime.fromisoformat(day)
    with open_db(tiny_db, read_only=True) as con:
        logged = con.execute(
            "SELECT DISTINCT request_id, user_id, epoch_us(ts) FROM impressions "
            "WHERE ts >= ? AND ts < ? ORDER BY 1",
            [lo, lo + dt.timedelta(days=1)],
        ).fetchall()
        catalog = {r[0] for r in con.execute("SELECT item_id FROM items").fetchall()}
    mine = sorted(
        (format(int(k) & 0xFFFF_FFFF_FFFF_FFFF, "016x"), int(u), int(t))
        for k, u, t in zip(pools.request_key, pools.user_id, pools.ts, strict=True)
    )
    assert mine == [tuple(r) for r in logged] and len(pools) > 100
    ok = pools.items >= 0
    assert ok.mean() > 0.8 and set(pools.items[ok].tolist()) <= catalog
    assert np.isnan(pools.p_true[~ok]).all()
    assert ((pools.p_true[ok] > 0) & (pools.p_true[ok] < 1)).all()
    # per request the pool holds distinct items
    for row in pools.items[:50]:
        got = row[row >= 0]
        assert got.size == np.unique(got).size
    # deterministic, and the pools' stream does not change the day
    again = capture_pools(tiny_db, day, pool_size=150)
    assert np.array_equal(again.items, pools.items)
    other = capture_pools(tiny_db, day, pool_size=150, seed=1)
    assert np.array_equal(other.request_key, pools.request_key)
    assert not np.array_equal(other.items, pools.items)


def test_a_changed_history_is_refused(tiny_db: Path, tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    shutil.copy(tiny_db, db)
    with open_db(db) as con:
        con.execute(
            "DELETE FROM behaviors WHERE row_id IN (SELECT row_id FROM behaviors "
            "WHERE ts < ? ORDER BY ts DESC LIMIT 300)",
            [dt.datetime.fromisoformat(LAST_DAY)],
        )
    with pytest.raises(ValueError, match="does not reproduce the recorded click model"):
        capture_pools(db, LAST_DAY, pool_size=50)
    with pytest.raises(ValueError, match="is not a day of the demo logs"):
        capture_pools(db, "2026-10-09")


def test_topk_is_the_brute_force_argmax() -> None:
    rng = np.random.default_rng(3)
    p = rng.random((40, 30)).astype(np.float32)
    p[rng.random(p.shape) < 0.2] = np.nan
    for k in (1, 5, 10):
        got = topk(p, k)
        for r in range(p.shape[0]):
            valid = np.flatnonzero(~np.isnan(p[r]))
            want = valid[np.argsort(-p[r, valid], kind="stable")][:k]
            assert got[r].tolist() == want.tolist()


def test_truth_is_perfect_and_random_gets_the_random_recall() -> None:
    rng = np.random.default_rng(4)
    p = rng.beta(1, 12, (2000, 200)).astype(np.float32)
    p[:, 150:] = np.nan  # 150 candidates per pool
    k = 10
    truth = topk_report(p, p.copy(), k, reference=p)
    assert np.all(truth["clicks_ratio"] == 1) and np.all(truth["recall"] == 1)
    assert np.all(truth["agreement"] == 1)
    rand = topk_report(p, rng.random(p.shape), k)
    assert rand["recall"].mean() == pytest.approx(k / 150, abs=0.004)
    assert 0 < rand["clicks_ratio"].mean() < 0.6
    worst = topk_report(p, -p, k)
    assert (
        np.all(worst["recall"] == 0) and worst["clicks_ratio"].mean() < rand["clicks_ratio"].mean()
    )
    users = np.arange(2000) % 300
    s = summary({"recall": rand["recall"]}, users)
    assert s["recall"]["low"] < rand["recall"].mean() < s["recall"]["high"]
    with pytest.raises(ValueError, match="at least k"):
        topk_report(p[:, :160], p[:, :160], 11 + 150)


# ----------------------------------------------------------------------------- models

RUN_DATE = "2026-10-09"  # test day 2026-10-08, the tiny logs' last day
TINY = {"emb_dim": 8, "d_model": 16, "n_heads": 2, "codebook_size": 4, "n_codebooks": 2}


@pytest.fixture(scope="module")
def day_dir(tiny_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run date's folder as the daily job leaves it: samples, TARQ, TT and TA trained a few
    steps on the tiny demo logs."""
    from tarq.data.samples import build_samples
    from tarq.model import ModelConfig
    from tarq.training.train import TrainConfig, train

    root = tmp_path_factory.mktemp("replay")
    db = root / "w.duckdb"
    shutil.copy(tiny_db, db)
    day = root / "work" / RUN_DATE
    build_samples(db, dt.date.fromisoformat(RUN_DATE), day / "samples", seq_len=8)
    tcfg = TrainConfig(epochs=1, batch_size=128, max_steps_per_epoch=8, patience=0, threads=1)
    for name in ("tarq", "tt", "ta"):
        train(
            day / "samples",
            name,
            day / "models" / name,
            ModelConfig.from_dict(TINY),
            tcfg,
            progress=False,
        )
    return day


def test_a_pool_of_the_logged_candidates_scores_as_evaluation_does(day_dir: Path) -> None:
    """score_pools on pools made of each request's logged candidates gives the probabilities
    the model's predictions.parquet holds for those rows (the same features, the same path)."""
    import pyarrow.parquet as pq

    from tarq.data.demo_replay import RequestPools
    from tarq.data.loader import epoch_us
    from tarq.online.replay import catalog, score_pools

    db = day_dir.parents[1] / "w.duckdb"
    test = pq.read_table(day_dir / "samples" / "test")
    users = test.column("user_id").to_numpy().astype(np.int64)
    ts = epoch_us(test.column("ts")).astype(np.int64)
    items = test.column("item_id").to_numpy().astype(np.int64)
    keys = sorted(set(zip(users.tolist(), ts.tolist(), strict=True)))
    width = max(np.bincount(np.unique(np.c_[users, ts], axis=0, return_inverse=True)[1].ravel()))
    pool = np.full((len(keys), width), -1, dtype=np.int64)
    where = {k: (i, 0) for i, k in enumerate(keys)}
    for u, t, it in zip(users.tolist(), ts.tolist(), items.tolist(), strict=True):
        i, j = where[(u, t)]
        if it not in pool[i, :j]:
            pool[i, j] = it
            where[(u, t)] = (i, j + 1)
    ukey, tkey = (np.array(x, dtype=np.int64) for x in zip(*keys, strict=True))
    pools = RequestPools(
        dt.date(2026, 10, 8),
        np.arange(len(keys)),
        ukey,
        tkey,
        pool,
        np.where(pool >= 0, 0.1, np.nan),
    )
    cat_rows = catalog(db)
    for name in ("tarq", "tt", "ta"):
        got = score_pools(pools, day_dir / "models" / name, day_dir / "samples", cat_rows)
        pred = pq.read_table(day_dir / "models" / name / "predictions.parquet").to_pandas()
        row_of = {(u, t): i for i, (u, t) in enumerate(keys)}
        col_of = {(i, it): j for i, row in enumerate(pool) for j, it in enumerate(row) if it >= 0}
        prob = 1 / (1 + np.exp(-got.astype(np.float64)))
        want = pred["score"].to_numpy()
        mine = np.array(
            [
                prob[row_of[(u, t)], col_of[(row_of[(u, t)], it)]]
                for u, t, it in zip(users.tolist(), ts.tolist(), items.tolist(), strict=True)
            ]
        )
        assert np.allclose(mine, want, atol=1e-5), name


def test_replay_of_a_run_date_reports_every_model_against_the_truth(day_dir: Path) -> None:
    from tarq.online.replay import replay, text

    db = day_dir.parents[1] / "w.duckdb"
    res = replay(db, day_dir.parent, RUN_DATE, pool_size=120)
    assert res["requests"] == res["requests_total"] > 100
    assert res["tarq_codes"] == "nearest"  # no ids/ in this folder
    for name in ("tarq", "tt", "ta"):
        for k in ("@10", "@50"):
            f = res[name][k]
            assert (
                0
                < f["clicks_ratio"]["low"]
                <= f["clicks_ratio"]["mean"]
                <= f["clicks_ratio"]["high"]
                <= 1
            )
            assert 0 <= f["recall"]["mean"] <= 1 and 0 <= f["agreement"]["mean"] <= 1
    assert res["ta"]["@10"]["agreement"]["mean"] == 1.0
    assert (
        "clicks_ratio_minus_tt" in res["tarq"]["@10"]
        and "clicks_ratio_minus_tt" not in res["tt"]["@10"]
    )
    assert "open-loop replay of 2026-10-08" in text(res)
    # A day of more requests than max_requests is judged on a fixed sample of them.
    few = replay(db, day_dir.parent, RUN_DATE, models=["tt"], pool_size=120, max_requests=40)
    assert few["requests"] == few["requests_total"] == 40
    assert few["requests_day"] == res["requests_day"] == res["requests"]
    again = replay(db, day_dir.parent, RUN_DATE, models=["tt"], pool_size=120, max_requests=40)
    assert again["tt"] == few["tt"]  # the same sample
    with pytest.raises(FileNotFoundError, match="holds no trained"):
        replay(db, day_dir.parent, RUN_DATE, models=["mvke"], pool_size=50)


def test_tarq_replay_command_line(day_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from tarq.cli import main

    db = day_dir.parents[1] / "w.duckdb"
    out = day_dir.parent / "replay.json"
    args = ["replay", "--db", str(db), "--run-date", RUN_DATE, "--work-dir", str(day_dir.parent)]
    assert main([*args, "--pool", "60", "--k", "5", "--models", "tt,tarq", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "clicks/oracle @5" in printed and printed.count("\n") >= 3
    res = json.loads(out.read_text())
    assert set(res) >= {"tt", "tarq", "requests"} and "@5" in res["tarq"]
    assert main([*args, "--models", "nope"]) == 2
    assert "holds no trained ['nope']" in capsys.readouterr().err


def test_every_model_scores_the_same_pools(day_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One capture per replay, and every model scores exactly those pools (the same requests
    and candidates): the comparison is paired."""
    import tarq.online.replay as rp

    captured, seen = [], []
    real_capture, real_score = rp.capture_pools, rp.score_pools

    def capture(*a, **k):  # type: ignore[no-untyped-def]
        captured.append(real_capture(*a, **k))
        return captured[-1]

    def score(pools, model_dir, *a, **k):  # type: ignore[no-untyped-def]
        seen.append((Path(model_dir).name, pools))
        return real_score(pools, model_dir, *a, **k)

    monkeypatch.setattr(rp, "capture_pools", capture)
    monkeypatch.setattr(rp, "score_pools", score)
    rp.replay(day_dir.parents[1] / "w.duckdb", day_dir.parent, RUN_DATE, pool_size=60)
    assert len(captured) == 1 and sorted(n for n, _ in seen) == ["ta", "tarq", "tt"]
    assert all(p is captured[0] for _, p in seen)
