"""The streaming loader: the tensor contract, every row once, shuffling and DDP sharding."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
import torch

from tarq.data.features import OOV, PAD, TIME_GAP_BUCKETS, time_gap_index
from tarq.data.loader import ONE_DAY_VALID_SHARE, BatchStream, SampleSet, temporal_cutoff
from tarq.data.samples import build_samples
from tests.test_samples import DAY0, N_DAYS, _make_warehouse


@pytest.fixture(scope="module")
def sset(tmp_path_factory: pytest.TempPathFactory) -> SampleSet:
    root = tmp_path_factory.mktemp("loader")
    _make_warehouse(root / "w.duckdb")
    build_samples(root / "w.duckdb", DAY0 + dt.timedelta(days=N_DAYS), root / "s", seq_len=6)
    return SampleSet.open(root / "s")


def test_contract_shapes_and_padding(sset: SampleSet) -> None:
    batch = next(iter(BatchStream(sset, "train", batch_size=64)))
    lay = sset.layout
    assert batch["user"].shape == (64, len(lay.user_fields))
    assert batch["item"].shape == (64, len(lay.item_fields))
    assert batch["hist"].shape == (64, 6, 5) and batch["hist"].dtype == torch.int64
    assert batch["hist_mask"].shape == (64, 6) and batch["hist_mask"].dtype == torch.bool
    assert batch["label"].dtype == torch.float32
    assert (batch["hist"][~batch["hist_mask"]] == PAD).all()
    assert (batch["hist"][batch["hist_mask"]] >= OOV).all()
    for j, f in enumerate(lay.item_fields):
        assert int(batch["item"][:, j].max()) < lay.vocab_sizes[f]


def test_every_row_once_and_histories_match(sset: SampleSet) -> None:
    rows = pd.read_parquet(sset.root / "train")
    for shuffle in (False, True):
        stream = BatchStream(sset, "train", batch_size=100, shuffle=shuffle, buffer_rows=300)
        keys = torch.cat([b["user_key"] for b in stream])
        assert len(keys) == len(rows) == stream.rows()
        assert sorted(keys.tolist()) == sorted(rows.user_id.tolist())
    # The last filled history slot of a row is its most recent behaviour (in file order, the
    # first row that has a history).
    part = pd.read_parquet(sset.files("train")[0])
    i = int(next(k for k, h in enumerate(part.hist_item_id) if len(h)))
    batch = next(iter(BatchStream(sset, "train", batch_size=i + 1)))
    assert int(batch["user_key"][i]) == int(part.user_id.iloc[i])
    row = part.iloc[i]
    n = min(len(row.hist_item_id), 6)
    assert int(batch["hist_mask"][i].sum()) == n
    vocab = sset.vocabs["item_id"]
    assert int(batch["hist"][i, n - 1, 0]) == int(vocab.lookup(row.hist_item_id[-1:])[0])


def test_folds_and_ddp_sharding(sset: SampleSet) -> None:
    valid = BatchStream(sset, "train", 50, folds=(0, 10))
    train = BatchStream(sset, "train", 50, folds=(10, 100))
    assert valid.rows() + train.rows() == BatchStream(sset, "train", 50).rows()
    shards = [
        list(BatchStream(sset, "train", 32, shuffle=True, rank=r, world=2, drop_last=True))
        for r in (0, 1)
    ]
    assert len(shards[0]) == len(shards[1]) > 0
    seen0 = {tuple(b["user_key"].tolist()) for b in shards[0]}
    seen1 = {tuple(b["user_key"].tolist()) for b in shards[1]}
    assert not seen0 & seen1


def test_time_gap_is_the_bucketed_time_to_the_impression(sset: SampleSet) -> None:
    lay = sset.layout
    col = lay.seq_fields.index("time_gap")
    assert lay.vocab_sizes["time_gap"] == TIME_GAP_BUCKETS + 2
    frame = pd.read_parquet(sset.files("train")[0]).head(200)
    batch = next(iter(BatchStream(sset, "train", batch_size=200)))
    checked = 0
    for r, row in enumerate(frame.itertuples()):
        ts = list(row.hist_ts)[-6:]
        for s, h_ts in enumerate(ts):
            gap_s = (row.ts - h_ts).total_seconds()
            assert gap_s > 0  # point-in-time: strictly before the impression
            assert int(batch["hist"][r, s, col]) == int(time_gap_index(np.array([gap_s]))[0])
            checked += 1
        assert (batch["hist"][r, len(ts) :, col] == PAD).all()
    assert checked > 50


def test_time_gap_buckets() -> None:
    minute = 60.0
    got = time_gap_index(np.array([0.0, 59.0, minute, 3 * minute, 7 * minute, -5.0, np.nan, 1e12]))
    # [0,1) min → 2, [1,3) → 3, [3,7) → 4, [7,15) → 5; negative → 2; NaN → OOV; huge → last.
    assert got.tolist() == [2, 2, 3, 4, 5, 2, OOV, TIME_GAP_BUCKETS + 1]


def test_temporal_cutoff_holds_out_the_last_day_or_the_last_hours_of_one_day(
    sset: SampleSet,
) -> None:
    """Several days: the slice is the last day, from its midnight. One day (a warm run on one
    new day): its latest quarter of rows by time. The ts filters split the rows exactly."""
    rows = pd.read_parquet(sset.root / "train", columns=["day", "ts", "fold"])
    days = pd.to_datetime(rows["day"]).dt.date
    last = max(days)
    assert min(days) < last
    cut = temporal_cutoff(sset)
    assert cut == dt.datetime.combine(last, dt.time())
    held = BatchStream(sset, "train", 50, ts_from=cut)
    kept = BatchStream(sset, "train", 50, ts_before=cut)
    assert held.rows() == int((days == last).sum()) > 0
    assert held.rows() + kept.rows() == len(rows)
    assert sum(len(b["label"]) for b in held) == held.rows()

    # A warm run's window: only the days after since_day count.
    since = last - dt.timedelta(days=1)
    one = temporal_cutoff(sset, since_day=since)
    assert one is not None and one.date() == last and one > cut
    day_ts = rows.loc[(days == last).to_numpy(), "ts"]
    share = float((day_ts >= pd.Timestamp(one)).mean())
    assert ONE_DAY_VALID_SHARE <= share < ONE_DAY_VALID_SHARE + 0.05
    warm_train = BatchStream(
        sset, "train", 50, folds=(5, 100), since_day=since, replay_folds=20, ts_before=one
    )
    warm_valid = BatchStream(sset, "train", 50, ts_from=one)
    assert warm_valid.rows() == int((day_ts >= pd.Timestamp(one)).sum())
    # The replay rows (older days) all lie before the cutoff: none is lost to the slice.
    replay = BatchStream(sset, "train", 50, folds=(5, 100), since_day=since, replay_folds=20)
    old = int(
        (
            (days <= since).to_numpy()
            & (rows["fold"] >= 5).to_numpy()
            & (rows["fold"] < 25).to_numpy()
        ).sum()
    )
    assert warm_train.rows() == old + int(
        (
            (days == last).to_numpy()
            & (rows["fold"] >= 5).to_numpy()
            & (rows["ts"] < pd.Timestamp(one)).to_numpy()
        ).sum()
    )
    assert warm_train.rows() < replay.rows()
    # since_day past every day: the window falls back to all days.
    assert temporal_cutoff(sset, since_day=last) == cut
