"""The closed-loop A/B (``tarq.data.demo_ab``, ``tarq.online.ab``, ``flows/ab.py``): the arms are
disjoint user sets, each arm's exposures come from its own ranker (swapping the rankers swaps
the arms' exposures), model rankers see a request as training does, and ``tarq ab`` runs the
loop with the daily job, logging each day."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tarq.data.demo_ab import append_ab_day, arm_of, arm_summary
from tarq.store.warehouse import open_db

NEXT_DAY = "2026-10-09"  # the tiny logs run 2026-10-01 .. 2026-10-08


def test_the_arms_split_users_stably_and_evenly() -> None:
    users = np.arange(1, 200_001, dtype=np.int64)
    arm = arm_of(users)
    assert set(np.unique(arm).tolist()) == {0, 1}
    assert abs(arm.mean() - 0.5) < 0.005
    assert np.array_equal(arm_of(users[::-1])[::-1], arm)  # a user's arm is its own
    other = arm_of(users, salt=1)
    assert 0.45 < (other != arm).mean() < 0.55  # another salt reshuffles


class _ByItemId:
    """A ranker preferring low (``sign`` −1) or high (+1) raw item ids; records what it saw."""

    def __init__(self, sign: float) -> None:
        self.sign = sign
        self.calls: list[tuple[np.ndarray, np.ndarray, list[set[int]]]] = []

    def __call__(self, sim, users, t_req, cand, valid):  # type: ignore[no-untyped-def]
        s = self.sign * sim.w.item_id[cand].astype(np.float64)
        c = sim.cfg.candidates_per_request
        top = np.argsort(-np.where(valid, s, -np.inf), axis=1, kind="stable")[:, :c]
        ids = sim.w.item_id[np.take_along_axis(cand, top, axis=1)]
        self.calls.append((sim.w.user_id[users], t_req.copy(), [set(r.tolist()) for r in ids]))
        return s


def _day_impressions(db: Path, day: str) -> list[tuple[int, int, int, bool]]:
    lo = dt.datetime.fromisoformat(day)
    with open_db(db, read_only=True) as con:
        return con.execute(
            "SELECT user_id, epoch_us(ts), item_id, exposed FROM impressions "
            "WHERE ts >= ? AND ts < ?",
            [lo, lo + dt.timedelta(days=1)],
        ).fetchall()


def _run_day(tiny_db: Path, tmp_path: Path, name: str, rankers) -> tuple:  # type: ignore[no-untyped-def]
    db = tmp_path / f"{name}.duckdb"
    shutil.copy(tiny_db, db)
    ab = append_ab_day(db, NEXT_DAY, rankers, pool_size=60)
    return db, ab


def test_each_arm_is_ranked_by_its_own_model_and_swapping_swaps(
    tiny_db: Path, tmp_path: Path
) -> None:
    low, high = _ByItemId(-1.0), _ByItemId(+1.0)
    db, ab = _run_day(tiny_db, tmp_path, "ab", (low, high))
    # disjoint arms: each ranker only ever saw users of its own arm
    seen_a = np.concatenate([c[0] for c in low.calls])
    seen_b = np.concatenate([c[0] for c in high.calls])
    assert (arm_of(seen_a) == 0).all() and (arm_of(seen_b) == 1).all()
    assert not set(seen_a.tolist()) & set(seen_b.tolist())
    # every impression of the day (shown or not) is in its request's ranker's top C
    chosen = {
        (int(u), int(t)): top
        for calls in (low.calls, high.calls)
        for us, ts, tops in calls
        for u, t, top in zip(us, ts, tops, strict=True)
    }
    imps = _day_impressions(db, NEXT_DAY)
    assert len(imps) > 500
    assert all(item in chosen[(u, t)] for u, t, item, _ in imps)
    assert len(ab.arm) == len(chosen) and ab.report["ab"]["A"]["requests"] > 50

    def mean_id(rows, arm: int) -> float:  # type: ignore[no-untyped-def]
        ids = [i for u, _, i, shown in rows if shown and arm_of(np.array([u]))[0] == arm]
        return float(np.mean(ids))

    assert mean_id(imps, 0) < mean_id(imps, 1)
    db2, _ = _run_day(tiny_db, tmp_path, "swapped", (_ByItemId(+1.0), _ByItemId(-1.0)))
    swapped = _day_impressions(db2, NEXT_DAY)
    assert mean_id(swapped, 0) > mean_id(swapped, 1)
    # the arms' exposures swap: what arm A was shown is now close to what arm B was shown
    assert (
        abs(mean_id(swapped, 0) - mean_id(imps, 1)) < abs(mean_id(imps, 0) - mean_id(imps, 1)) / 4
    )


def test_summary_of_equal_arms_has_no_lift_and_a_better_arm_shows(
    tiny_db: Path, tmp_path: Path
) -> None:
    """Both arms ranked by the world's own truth-free rule ⇒ the lift's interval holds 0;
    arm B ranked by the true click model's user part beats arm A ranked against it."""
    same = _ByItemId(0.0)
    _, ab = _run_day(tiny_db, tmp_path, "same", (same, same))
    s = arm_summary([ab])
    assert s["lift"]["ctr"]["low"] < 0 < s["lift"]["ctr"]["high"]
    for arm in ("A", "B"):
        assert 0 < s[arm]["ctr"]["low"] <= s[arm]["ctr"]["mean"] <= s[arm]["ctr"]["high"] < 1
        assert s[arm]["exposed"] == ab.exposed[ab.arm == "AB".index(arm)].sum()

    def truth(sign: float):  # type: ignore[no-untyped-def]
        def rank(sim, users, t_req, cand, valid):  # type: ignore[no-untyped-def]
            w = sim.w
            t = np.einsum("rd,rcd->rc", sim.taste[users], w.item_emb[cand])
            return sign * (t + w.item_quality[cand] + w.item_pop_z[cand])

        return rank

    _, ab2 = _run_day(tiny_db, tmp_path, "truth", (truth(-1.0), truth(+1.0)))
    s2 = arm_summary([ab2])
    assert s2["lift"]["ctr"]["low"] > 0.1
    pooled = arm_summary([ab, ab2])
    assert pooled["A"]["requests"] == s["A"]["requests"] + s2["A"]["requests"]


def test_a_model_ranker_sees_a_request_as_training_does(tiny_db: Path, tmp_path: Path) -> None:
    """Replaying the logged day 2026-10-08 in the rebuilt world, the ranker's user and history
    tensors of each request equal those of the day's test samples (same user, same time)."""
    import pyarrow.parquet as pq

    from tarq.data.demo import _read_chain, _Simulator, rebuild
    from tarq.data.loader import SampleSet, epoch_us, to_batch
    from tarq.data.samples import build_samples
    from tarq.model import ModelConfig
    from tarq.online.ab import ModelRanker
    from tarq.store.sqlfiles import run as run_sql
    from tarq.training.train import TrainConfig, train

    db = tmp_path / "w.duckdb"
    shutil.copy(tiny_db, db)
    day = tmp_path / "work" / NEXT_DAY
    build_samples(db, dt.date.fromisoformat(NEXT_DAY), day / "samples", seq_len=8)
    tiny = {"emb_dim": 8, "d_model": 16, "n_heads": 2, "codebook_size": 4, "n_codebooks": 2}
    tcfg = TrainConfig(epochs=1, batch_size=128, max_steps_per_epoch=2, patience=0, threads=1)
    train(
        day / "samples",
        "tt",
        day / "models" / "tt",
        ModelConfig.from_dict(tiny),
        tcfg,
        progress=False,
    )
    ranker = ModelRanker(day / "models" / "tt", db)

    got: dict[tuple[int, int], tuple] = {}

    class Probe(_Simulator):
        def __init__(self, base: _Simulator) -> None:
            self.__dict__.update(base.__dict__)

        def _request(self, rng, users, t_req, slot_len, keys):  # type: ignore[no-untyped-def]
            b = to_batch(ranker.request_table(self, users, t_req), ranker.sset)
            for i, (u, t) in enumerate(zip(self.w.user_id[users], t_req, strict=True)):
                got[(int(u), int(t))] = (b["user"][i], b["hist"][i], b["hist_mask"][i])
            return super()._request(rng, users, t_req, slot_len, keys)

    test_day = dt.date(2026, 10, 8)
    with open_db(db, read_only=True) as con:
        chain = _read_chain(con, db)
        item_base, _, user_base, _ = run_sql(
            con, "demo/load_ids", {"load_id": chain.base}
        ).fetchone()
        start = dt.datetime.combine(test_day, dt.time())
        world, sim = rebuild(
            con,
            chain,
            int(item_base),
            int(user_base),
            test_day - dt.timedelta(days=1),
            before=start,
        )
    probe = Probe(sim)
    index = (test_day - chain.start_date).days
    probe.start_day(index)
    for b, lo in enumerate(range(0, world.n_users, chain.cfg.user_block)):
        probe.simulate_block(index, b, np.arange(lo, min(lo + chain.cfg.user_block, world.n_users)))

    test = pq.read_table(day / "samples" / "test")
    want = to_batch(test, SampleSet(day / "samples", ranker.layout, ranker.sset.vocabs))
    users = test.column("user_id").to_numpy().astype(np.int64)
    ts = epoch_us(test.column("ts")).astype(np.int64)
    checked = 0
    for i, key in enumerate(zip(users.tolist(), ts.tolist(), strict=True)):
        u, h, m = got[key]
        assert torch_equal(u, want["user"][i]) and torch_equal(m, want["hist_mask"][i])
        assert torch_equal(h[m], want["hist"][i][want["hist_mask"][i]])
        checked += 1
    assert checked > 300 and any(bool(v[2].any()) for v in got.values())


def torch_equal(a, b) -> bool:  # type: ignore[no-untyped-def]
    return bool((a == b).all())


def test_tarq_ab_runs_the_loop_and_logs_each_day(
    tmp_path: Path, prefect_api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two days on the tiny preset: the daily job between them, the champion serving arm B,
    a Prefect artifact per day, the MLflow run with one step per day, the plot, ab.json."""
    import mlflow

    from flows.ab import main

    out = tmp_path / "ab"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("PREFECT_API_URL", prefect_api)
    rc = main(
        [
            "--out",
            str(out),
            "--days",
            "2",
            "--preset",
            "tiny",
            "--epochs",
            "1",
            "--pool-size",
            "40",
            "--first-day",
            "2026-10-09",
        ]
    )
    assert rc == 0
    res = json.loads((out / "ab.json").read_text())
    assert [d["day"] for d in res["days"]] == ["2026-10-09", "2026-10-10"]
    assert res["days"][0]["source"]["B"].startswith("tarq champion v1")
    assert res["days"][1]["source"]["A"] == "tt of 2026-10-10"  # the next morning's TT
    assert (out / "work" / "2026-10-11" / "summary.json").exists()  # the job after the last day
    assert (out / "lift.png").stat().st_size > 1000
    # nothing process-wide is left behind for the flows that run after it in this process
    assert mlflow.active_run() is None and mlflow.tracking.fluent._active_experiment_id is None
    client = mlflow.MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("tarq-ab").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_id == res["mlflow_run_id"]
    hist = client.get_metric_history(run.info.run_id, "lift_ctr")
    assert [m.step for m in hist] == [0, 1]
    assert "overall_lift_ctr" in run.data.metrics and run.data.params["arm_b"] == "tarq"
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"ab.json", "lift.png"} <= arts
    # the warehouse's demo logs go on after the A/B like any other
    with open_db(out / "tarq.duckdb", read_only=True) as con:
        loads = con.execute("SELECT count(*) FROM loads WHERE load_id LIKE '%-20261010'").fetchone()
    assert loads[0] == 1
    assert main(["--out", str(out), "--days", "1", "--first-day", "2026-10-09"]) == 1  # not new
