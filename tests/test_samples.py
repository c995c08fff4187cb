"""Point-in-time sample building: exact histories, no leakage, exclusions, layout."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from tarq.data.features import FeatureLayout, Vocab
from tarq.data.samples import SampleBuild, build_samples
from tarq.store.warehouse import add_side_column, connect, table_fingerprint

DAY0 = dt.date(2026, 10, 1)
N_DAYS = 5


def _make_warehouse(path: Path, seed: int = 0) -> None:
    """A small random warehouse with deliberate timestamp ties between behaviours and impressions."""
    rng = np.random.default_rng(seed)
    con = connect(path)
    add_side_column(con, "users", "gender")
    con.execute(
        "INSERT INTO items SELECT range, range % 7, range % 13, (range % 50) * 1.5, 'fx' "
        "FROM range(1, 201)"
    )
    con.execute("INSERT INTO users SELECT range, 'fx', range % 2 FROM range(1, 41)")
    n_beh, n_imp = 3000, 1500
    base = pd.Timestamp(DAY0) - pd.Timedelta(days=2)
    beh_ts = base + pd.to_timedelta(rng.integers(0, (N_DAYS + 2) * 86400, n_beh), unit="s")
    beh = pd.DataFrame(
        {
            "user_id": rng.integers(1, 41, n_beh),
            "ts": beh_ts,
            "item_id": rng.integers(1, 201, n_beh),
            "action": rng.choice(["pv", "cart", "fav", "buy"], n_beh),
        }
    )
    beh["category_id"] = beh["item_id"] % 7
    beh["brand_id"] = beh["item_id"] % 13
    imp_ts = pd.Timestamp(DAY0) + pd.to_timedelta(rng.integers(0, N_DAYS * 86400, n_imp), unit="s")
    imp = pd.DataFrame(
        {
            "user_id": rng.integers(1, 41, n_imp),
            "item_id": rng.integers(1, 201, n_imp),
            "ts": imp_ts,
            "clicked": rng.random(n_imp) < 0.2,
        }
    )
    # Ties: copy 200 impression timestamps onto behaviours of the same user.
    tie = imp.sample(200, random_state=seed)
    beh.loc[: len(tie) - 1, ["user_id", "ts"]] = tie[["user_id", "ts"]].to_numpy()
    con.register("beh_df", beh)
    con.register("imp_df", imp)
    con.execute(
        "INSERT INTO behaviors (user_id, ts, item_id, category_id, brand_id, action, load_id) "
        "SELECT user_id, ts, item_id, category_id, brand_id, action, 'fx' FROM beh_df"
    )
    con.execute(
        "INSERT INTO impressions (user_id, item_id, ts, clicked, exposed, position, request_id, "
        "load_id) SELECT user_id, item_id, ts, clicked, true, 0, NULL, 'fx' FROM imp_df"
    )
    # A user with impressions but no behaviour at all.
    con.execute(
        "INSERT INTO users VALUES (999, 'fx', 1);"
        "INSERT INTO impressions (user_id, item_id, ts, clicked, exposed, load_id) "
        "VALUES (999, 5, TIMESTAMP '2026-10-04 10:00:00', true, true, 'fx')"
    )
    con.close()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, SampleBuild]:
    root = tmp_path_factory.mktemp("samples")
    db = root / "w.duckdb"
    _make_warehouse(db)
    out = root / "out"
    report = build_samples(db, DAY0 + dt.timedelta(days=N_DAYS), out, train_days=19, seq_len=8)
    return db, out, report


def _brute_force_history(db: Path, seq_len: int) -> dict[int, list[int]]:
    con = duckdb.connect(str(db), read_only=True)
    beh = con.execute("SELECT user_id, ts, row_id, item_id FROM behaviors").df()
    imp = con.execute("SELECT row_id, user_id, ts FROM impressions").df()
    con.close()
    beh = beh.sort_values(["user_id", "ts", "row_id"])
    by_user = {u: g for u, g in beh.groupby("user_id")}
    out = {}
    for r in imp.itertuples():
        g = by_user.get(r.user_id)
        if g is None:
            out[r.row_id] = []
            continue
        before = g[g["ts"] < r.ts]
        out[r.row_id] = before["item_id"].tolist()[-seq_len:]
    return out


def test_window_and_counts(built: tuple[Path, Path, SampleBuild]) -> None:
    _, out, report = built
    assert report.test_day == str(DAY0 + dt.timedelta(days=N_DAYS - 1))
    assert report.train_start == str(DAY0)  # capped at the first logged day
    assert report.train_days == N_DAYS - 1
    assert report.rows == 1501 and report.excluded_rows == 0
    assert len(list((out / "train").glob("*.parquet"))) >= 1
    assert len(list((out / "test").glob("*.parquet"))) == 1
    meta = json.loads((out / "meta.json").read_text())
    assert meta["fingerprint"] == report.fingerprint
    # meta.json is the report's dict, and reads back into the same report.
    assert meta == report.to_dict() and list(meta) == list(report.to_dict())
    assert SampleBuild.from_dict(meta) == report
    older = {k: v for k, v in meta.items() if k not in ("items_price_non_finite", "min_count")}
    assert SampleBuild.from_dict(older).items_price_non_finite == 0
    with pytest.raises(ValueError, match="fingerprint"):
        SampleBuild.from_dict({k: v for k, v in meta.items() if k != "fingerprint"})


def test_histories_exact_and_strictly_before(built: tuple[Path, Path, SampleBuild]) -> None:
    db, out, _ = built
    df = pd.read_parquet(out / "train").sort_values("row_id")
    df = pd.concat([df, pd.read_parquet(out / "test")])
    expected = _brute_force_history(db, seq_len=8)
    for r in df.itertuples():
        assert list(r.hist_item_id) == expected[r.row_id], r.row_id
        assert all(t < r.ts for t in r.hist_ts), f"leak in impression {r.row_id}"
        assert len(r.hist_item_id) <= 8
    assert (df.loc[df.user_id == 999, "hist_item_id"].map(len) == 0).all()
    # The tie fixture really exercises equal timestamps.
    con = duckdb.connect(str(db), read_only=True)
    ties = con.execute(
        "SELECT count(*) FROM impressions i JOIN behaviors b USING (user_id, ts)"
    ).fetchone()[0]
    con.close()
    assert ties >= 200


def test_features_and_layout(built: tuple[Path, Path, SampleBuild]) -> None:
    _, out, report = built
    df = pd.read_parquet(out / "test")
    assert {"category_id", "brand_id", "price_bucket", "gender", "label", "fold"} <= set(df)
    layout = FeatureLayout.load(out / "layout.json")
    assert layout.user_fields == ["user_id", "gender"]
    assert layout.item_fields[:4] == ["item_id", "category_id", "brand_id", "price_bucket"]
    assert layout.seq_len == 8
    vocab = Vocab.load(out / "vocab" / "item_id.parquet")
    assert layout.vocab_sizes["item_id"] == len(vocab) == vocab.values.size + 2
    assert vocab.lookup(np.array([10**12]))[0] == 1  # unseen → OOV
    assert report.vocab_sizes["action"] == 6


def test_quarantined_rows_are_excluded_and_raw_untouched(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    _make_warehouse(db, seed=1)
    con = connect(db)
    before = {t: table_fingerprint(con, t) for t in ("impressions", "behaviors")}
    bad_imp = [r[0] for r in con.execute("SELECT row_id FROM impressions LIMIT 5").fetchall()]
    bad_beh = con.execute(
        "SELECT b.row_id, b.item_id FROM behaviors b ORDER BY b.ts DESC LIMIT 1"
    ).fetchone()
    con.execute(
        "INSERT INTO quarantine_impressions (row_id, run_id, stage, check_name, reason) "
        "SELECT unnest($ids), 'r', 'validation', 'test', 'injected'",
        {"ids": bad_imp},
    )
    con.execute(
        "INSERT INTO quarantine_behaviors (row_id, run_id, stage, check_name, reason) "
        "VALUES ($id, 'r', 'validation', 'test', 'injected')",
        {"id": bad_beh[0]},
    )
    con.close()
    out = tmp_path / "out"
    report = build_samples(db, DAY0 + dt.timedelta(days=N_DAYS), out, seq_len=50)
    assert report.excluded_rows == 5
    df = pd.concat([pd.read_parquet(out / "train"), pd.read_parquet(out / "test")])
    assert not set(bad_imp) & set(df.row_id)
    con = connect(db)
    after = {t: table_fingerprint(con, t) for t in ("impressions", "behaviors")}
    assert con.execute("SELECT count(*) FROM sample_builds").fetchone()[0] == 1
    con.close()
    assert before == after


def test_bad_run_dates(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    _make_warehouse(db)
    with pytest.raises(ValueError, match="logs end"):
        build_samples(db, "2027-01-01", tmp_path / "o")
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        build_samples(db, "2026-13-40", tmp_path / "o")
    with pytest.raises(ValueError, match="no training day"):
        build_samples(db, DAY0 + dt.timedelta(days=1), tmp_path / "o")


def test_user_buckets_give_identical_rows(
    built: tuple[Path, Path, SampleBuild], tmp_path: Path
) -> None:
    db, out, report = built
    assert report.buckets == 1
    small = build_samples(
        db, DAY0 + dt.timedelta(days=N_DAYS), tmp_path / "b", seq_len=8, rows_per_bucket=300
    )
    assert small.buckets == 6
    assert small.rows == report.rows

    def rows(root: Path) -> pd.DataFrame:
        df = pd.concat([pd.read_parquet(root / "train"), pd.read_parquet(root / "test")])
        df["hist_item_id"] = df["hist_item_id"].map(tuple)
        return df[["row_id", "label", "hist_item_id"]].sort_values("row_id").reset_index(drop=True)

    pd.testing.assert_frame_equal(rows(out), rows(tmp_path / "b"))


def test_a_shuffled_build_gives_the_same_files(
    built: tuple[Path, Path, SampleBuild], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shuffling the logs by user bucket first (jobs of whole days) changes where each bucket
    job reads its rows from, not the rows: the same files as the unshuffled build, into a
    folder with glob characters in its name; also when buckets share shuffle partitions."""
    import tarq.data.samples as samples

    db, _, _ = built
    run_date = DAY0 + dt.timedelta(days=N_DAYS)
    plain = build_samples(db, run_date, tmp_path / "plain", seq_len=8, rows_per_bucket=300)
    out = tmp_path / "shuf[1]*"
    shuffled = build_samples(db, run_date, out, seq_len=8, rows_per_bucket=300, shuffle_rows=400)
    assert shuffled.buckets == plain.buckets == 6
    assert shuffled.fingerprint == plain.fingerprint
    assert not (out / ".staging").exists()
    monkeypatch.setattr(samples, "SHUFFLE_MAX_PARTS", 4)  # 2 buckets per partition
    assert samples.shuffle_per_part(6) == 2
    shared = build_samples(
        db, run_date, tmp_path / "shared", seq_len=8, rows_per_bucket=300, shuffle_rows=400
    )
    assert shared.fingerprint == plain.fingerprint


def test_a_retried_job_starts_over(built: tuple[Path, Path, SampleBuild], tmp_path: Path) -> None:
    """A job run again (a retry after a lost worker) replaces what its first attempt wrote,
    even a file the first attempt left under another name."""
    from tarq.data.samples import BucketJob, ShuffleJob, build_bucket, shuffle_days

    db = built[0]
    start = dt.datetime.combine(DAY0, dt.time())
    end = start + dt.timedelta(days=N_DAYS)
    shuffle = ShuffleJob(str(db), str(tmp_path), "impressions", 0, start, end, buckets=3)
    assert shuffle_days(shuffle) == shuffle_days(shuffle) > 0
    files = list((tmp_path / "shuffle").rglob("*.parquet"))
    assert len(files) == 3  # one file per bucket: the first attempt's were replaced
    shuffle_days(ShuffleJob(str(db), str(tmp_path), "behaviors", 0, start, end, buckets=3))
    job = BucketJob(str(db), str(tmp_path), 1, 3, start, end, start, DAY0, seq_len=8, shuffled=True)
    once = build_bucket(job)
    stale = job.folder / "rows" / "split=train" / "stale.parquet"
    stale.parent.mkdir(parents=True)
    (job.folder / "train.parquet").rename(stale)  # an attempt's leftover, another name
    assert build_bucket(job) == once and not stale.exists()


def test_a_rebuild_swaps_in_whole_and_leaves_nothing_behind(tmp_path: Path) -> None:
    """A rebuild replaces exactly the sample outputs (into a folder whose name has glob
    characters: DuckDB must read the parts of this folder only), and stale leftovers of an
    interrupted build are cleared."""
    db = tmp_path / "w.duckdb"
    _make_warehouse(db)
    run_date = DAY0 + dt.timedelta(days=N_DAYS)
    out = tmp_path / "s[1]*"
    (tmp_path / "s1x" / "train").mkdir(parents=True)  # a decoy the glob s[1]* would match
    first = build_samples(db, run_date, out, seq_len=8)
    (out / ".build-dead").mkdir()  # left by a killed build
    (out / "README").write_text("kept")
    second = build_samples(db, run_date, out, seq_len=8)
    assert second.fingerprint == first.fingerprint
    assert second.build_id != first.build_id
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["README", "layout.json", "meta.json", "test", "train", "vocab"]
    )
    assert json.loads((out / "meta.json").read_text())["build_id"] == second.build_id


def test_latest_with_no_usable_impression_says_why(tmp_path: Path) -> None:
    from tarq.dates import latest_run_date

    db = tmp_path / "w.duckdb"
    _make_warehouse(db)
    con = connect(db)
    try:
        assert latest_run_date(con) == DAY0 + dt.timedelta(days=N_DAYS)
        with pytest.raises(
            ValueError,
            match=r"no usable impression: all [\d,]+ are quarantined "
            r"or not before today \(2026-09-01 UTC, a day still under way\)",
        ):
            latest_run_date(con, dt.datetime(2026, 9, 1))
        # Seen during the logs' last day, that day is still under way: the day before is the
        # last test day (logs written through today once made `latest` test on today).
        last = DAY0 + dt.timedelta(days=N_DAYS - 1)
        noon = dt.datetime.combine(last, dt.time(12))
        assert latest_run_date(con, noon) == last
        assert latest_run_date(con, noon + dt.timedelta(days=1)) == last + dt.timedelta(days=1)
    finally:
        con.close()


# ----------------------------------------------------------------------------- test windows
# The tiny demo logs run 2026-10-01 .. 2026-10-08; run date 2026-10-09 tests on 2026-10-08.
TINY_RUN = dt.date(2026, 10, 9)
# The samples of the tiny demo logs for run date 2026-10-09 with the default settings
# (train_days 19, seq_len 50, min_count 2), as built by the sample code from before the test
# window could be longer than one day (63739fb; 983c08eaa9428a3a on the demo world of then),
# on the demo world of 9c629f9 (the multi-interest click model changed the tiny logs). A DuckDB
# upgrade or a change of the demo world changes the bytes: then check the new value against a
# build with the sample code of 63739fb before changing it here.
TINY_ONE_DAY_FINGERPRINT = "6a74918e5d0c92f9"


def _frame(root: Path, split: str) -> pd.DataFrame:
    df = pd.read_parquet(root / split)
    for c in ("hist_item_id", "hist_ts"):
        df[c] = df[c].map(tuple)
    return df.sort_values("row_id").reset_index(drop=True)


@pytest.fixture(scope="module")
def window_builds(
    tiny_db: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, SampleBuild]]:
    """On a copy of the tiny demo warehouse (builds record themselves in it): a three-day test
    window for run date 2026-10-09 (``n3``) and the one-day builds of run dates 2026-10-07,
    -08 and -09 (``d07``, ``d08``, ``d09``: the daily job's samples of those days)."""
    import shutil

    root = tmp_path_factory.mktemp("test_window")
    db = root / "tiny.duckdb"
    shutil.copy(tiny_db, db)
    builds = {"n3": build_samples(db, TINY_RUN, root / "n3", test_days=3)}
    for k in (2, 1, 0):
        run_date = TINY_RUN - dt.timedelta(days=k)
        key = f"d{(run_date - dt.timedelta(days=1)).day:02d}"  # named by its test day
        builds[key] = build_samples(db, run_date, root / key)
    return root, builds


def test_one_test_day_gives_the_same_samples_as_before(
    window_builds: tuple[Path, dict[str, SampleBuild]],
) -> None:
    """``test_days`` 1 (the default, the daily job's) writes the very files it wrote before
    the option existed; its report says so in the new keys too."""
    root, b = window_builds
    one = b["d08"]  # run date 2026-10-09, default test_days
    assert one.fingerprint == TINY_ONE_DAY_FINGERPRINT
    assert (one.test_start, one.test_day, one.test_days) == ("2026-10-08", "2026-10-08", 1)
    assert (one.train_start, one.train_end) == ("2026-10-01", "2026-10-07")
    meta = json.loads((root / "d08" / "meta.json").read_text())
    assert meta["test_start"] == meta["test_day"] and meta["test_days"] == 1
    # A meta.json written before the test window existed still reads: one test day.
    older = {k: v for k, v in meta.items() if k not in ("test_start", "test_days")}
    back = SampleBuild.from_dict(older)
    assert (back.test_start, back.test_days) == (meta["test_day"], 1)


def test_a_test_window_is_point_in_time_day_by_day(
    window_builds: tuple[Path, dict[str, SampleBuild]],
) -> None:
    """A three-day test window: training ends before its first day; each test day's rows are
    exactly that day's rows of the one-day build of its own run date (histories of
    behaviours strictly before each impression, the earlier test days' included, never a
    later day's); the vocabularies are the training window's only."""
    root, b = window_builds
    n3 = b["n3"]
    assert (n3.train_start, n3.train_end) == ("2026-10-01", "2026-10-05")
    assert (n3.test_start, n3.test_day, n3.test_days) == ("2026-10-06", "2026-10-08", 3)
    train, test = _frame(root / "n3", "train"), _frame(root / "n3", "test")
    assert (n3.train_rows, n3.test_rows) == (len(train), len(test))
    first_test = pd.Timestamp("2026-10-06")
    # Training rows and everything they hold come before the first test day.
    assert train["ts"].max() < first_test
    assert max(t for h in train["hist_ts"] for t in h) < first_test
    assert sorted(str(d) for d in test["day"].unique()) == [
        "2026-10-06",
        "2026-10-07",
        "2026-10-08",
    ]
    # Every history entry is before its own impression; no day-k row holds a day k+1 behaviour.
    hist = pd.concat([train, test])[["row_id", "ts", "day", "hist_ts"]].explode("hist_ts")
    hist = hist.dropna(subset=["hist_ts"]).astype({"hist_ts": "datetime64[us]"})
    assert len(hist) > len(test)
    assert (hist["hist_ts"] < hist["ts"]).all(), "an impression sees its future"
    assert (hist["hist_ts"].dt.date <= hist["day"]).all(), "a day sees a later day"
    # Histories are not frozen at the end of training: later test days see earlier ones.
    later = hist[hist["day"] > first_test.date()]
    assert (later["hist_ts"] >= first_test).any()
    # Each test day = the daily job's test rows on that day, column for column.
    for day, key in (("2026-10-06", "d06"), ("2026-10-07", "d07"), ("2026-10-08", "d08")):
        assert b[key].test_day == day
        got = test[test["day"] == dt.date.fromisoformat(day)].reset_index(drop=True)
        pd.testing.assert_frame_equal(got, _frame(root / key, "test"))
    # The training window is the one-day build's of run date 2026-10-07: same files, same
    # vocabularies (built from the training window only).
    for name in [f"train/{p.name}" for p in (root / "d06" / "train").iterdir()] + [
        f"vocab/{p.name}" for p in (root / "d06" / "vocab").iterdir()
    ]:
        assert (root / "n3" / name).read_bytes() == (root / "d06" / name).read_bytes(), name
    assert (root / "n3" / "layout.json").read_text() == (root / "d06" / "layout.json").read_text()
    seen = set(train["item_id"]) | {i for h in train["hist_item_id"] for i in h}
    only_in_test = set(test["item_id"]) - seen
    assert only_in_test  # the tiny logs put new items live in these days
    vocab = set(Vocab.load(root / "n3" / "vocab" / "item_id.parquet").values.tolist())
    assert vocab <= seen and not vocab & only_in_test


@pytest.mark.parametrize(
    ("test_days", "message"),
    [
        (0, r"test_days must be an integer >= 1, got 0"),
        (-2, r"test_days must be an integer >= 1, got -2"),
        (
            8,
            r"run date 2026-10-09 leaves no training day before its 8-day test window "
            r"2026-10-01\.\.2026-10-08 \(logs start 2026-10-01\)",
        ),
        (30, r"leaves no training day before its 30-day test window"),
    ],
)
def test_a_bad_test_window_is_refused(
    window_builds: tuple[Path, dict[str, SampleBuild]],
    test_days: int,
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """0, a negative count or more days than the logs leave a training day for: refused
    before anything is written, by the library and by ``tarq build-samples`` (exit 2)."""
    from tarq.cli import main as cli_main

    root, _ = window_builds
    out = root / f"bad{test_days}"
    with pytest.raises(ValueError, match=message):
        build_samples(root / "tiny.duckdb", TINY_RUN, out, test_days=test_days)
    assert not out.exists() or not any(out.iterdir())
    argv = ["build-samples", "--db", str(root / "tiny.duckdb"), "--run-date", str(TINY_RUN)]
    assert cli_main([*argv, "--out", str(out), f"--test-days={test_days}"]) == 2
    assert re.search(message, capsys.readouterr().err)
