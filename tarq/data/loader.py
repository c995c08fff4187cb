"""Streaming batches from the sample Parquet files into the model's tensor contract.

Rows are read in record batches (never the whole table into Python objects), mapped through
the training vocabularies with vectorised numpy, shuffled within a bounded buffer, and cut
into batches of the contract documented in :mod:`tarq.model`:

- ``user``: (B, Fu) int64, ``item``: (B, Fi) int64 — vocabulary indices
- ``hist``: (B, L, Fs) int64 with Fs = (item_id, category_id, brand_id, action), 0 = padding
- ``hist_mask``: (B, L) bool, ``label``: (B,) float32, ``user_key``: (B,) int64 raw user ids
- ``item_key``: (B,) int64 raw item ids (for catalog-level metrics)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from tarq.data.features import ACTIONS, OOV, PAD, FeatureLayout, Vocab, time_gap_index

Batch = dict[str, torch.Tensor]


@dataclass
class SampleSet:
    """A sample folder written by :func:`tarq.data.samples.build_samples`."""

    root: Path
    layout: FeatureLayout
    vocabs: dict[str, Vocab]

    @classmethod
    def open(cls, root: str | Path) -> SampleSet:
        root = Path(root)
        if not (root / "layout.json").is_file():
            raise FileNotFoundError(f"{root} holds no samples (layout.json missing)")
        layout = FeatureLayout.load(root / "layout.json")
        names = {*layout.user_fields, *layout.item_fields}
        vocabs = {n: Vocab.load(root / "vocab" / f"{n}.parquet") for n in names}
        return cls(root, layout, vocabs)

    def files(self, split: str) -> list[Path]:
        files = sorted((self.root / split).glob("*.parquet"))
        if not files:
            raise FileNotFoundError(f"{self.root / split} holds no sample files")
        return files


def _column(table: pa.Table | pa.RecordBatch, name: str) -> pa.Array:
    col = table.column(name)
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def _lookup(vocab: Vocab, arr: pa.Array) -> np.ndarray:
    nulls = arr.is_null().to_numpy(zero_copy_only=False)
    raw = arr.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    return vocab.lookup(raw, null_mask=nulls)


def encode_fields(
    table: pa.Table | pa.RecordBatch, fields: list[str], vocabs: dict[str, Vocab]
) -> np.ndarray:
    """Raw id columns ``fields`` of ``table`` → vocabulary indices, shape (N, len(fields)) int64.

    A column missing from ``table`` (e.g. a side feature an older catalog lacks) maps to OOV.
    """
    n = len(table)
    cols = []
    for f in fields:
        if f in table.schema.names:
            cols.append(_lookup(vocabs[f], _column(table, f)))
        else:
            cols.append(np.full(n, OOV, dtype=np.int64))
    return np.stack(cols, axis=1) if cols else np.zeros((n, 0), dtype=np.int64)


def _pad_lists(arr: pa.ListArray, seq_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A list column → (flat index matrix (B, L), mask (B, L), flat values).

    Histories are chronological; lists longer than L keep their last L entries.
    """
    offsets = arr.offsets.to_numpy()
    lengths = np.diff(offsets)
    start = offsets[:-1] + np.maximum(lengths - seq_len, 0)
    keep = np.minimum(lengths, seq_len)
    steps = np.arange(seq_len)
    mask = steps[None, :] < keep[:, None]
    idx = np.where(mask, start[:, None] + steps[None, :], 0)
    return idx, mask, arr.values


def epoch_us(arr: pa.Array) -> np.ndarray:
    """Timestamps (any unit) → float64 microseconds since the epoch, null → NaN."""
    if pa.types.is_timestamp(arr.type):
        arr = pc.cast(arr, pa.timestamp("us", tz=arr.type.tz))
        arr = arr.cast(pa.int64())
    return arr.to_numpy(zero_copy_only=False).astype(np.float64)


def _naive_us(t: dt.datetime) -> float:
    """A naive datetime → microseconds since the epoch, on the scale of :func:`epoch_us`."""
    return float(np.datetime64(t.replace(tzinfo=None), "us").astype(np.int64))


# Share of the rows, latest by time, that form the temporal validation slice of a window
# that holds a single day (a warm run on one new day): its last hours.
ONE_DAY_VALID_SHARE = 0.25


def temporal_cutoff(
    sset: SampleSet, split: str = "train", since_day: dt.date | None = None
) -> dt.datetime | None:
    """Start of the temporal validation slice: the rows with ``ts`` >= it are held out.

    The window is the split's days after ``since_day`` (a warm run's new days; every day
    when None, or when no row lies after it). A window of several days holds out its last
    day (the cutoff is that day's midnight); a window of one day holds out its latest
    :data:`ONE_DAY_VALID_SHARE` of rows by time. Rows before ``since_day`` (a warm run's
    replay) are older than any cutoff, so they are never part of the slice.

    Returns:
        The naive cutoff datetime, or None when the split has no rows.
    """

    def window_days(since: dt.date | None) -> tuple[np.datetime64, np.datetime64] | None:
        lo = hi = None
        for f in sset.files(split):
            day = (
                _column(pq.read_table(f, columns=["day"]), "day")
                .to_numpy(zero_copy_only=False)
                .astype("datetime64[D]")
            )
            if since is not None:
                day = day[day > np.datetime64(since, "D")]
            if day.size:
                lo = day.min() if lo is None else min(lo, day.min())
                hi = day.max() if hi is None else max(hi, day.max())
        return None if lo is None or hi is None else (lo, hi)

    days = window_days(since_day) if since_day is not None else None
    days = days or window_days(None)
    if days is None:
        return None
    first, last = days
    if first < last:
        return dt.datetime.combine(last.item(), dt.time())
    stamps = []
    for f in sset.files(split):
        t = pq.read_table(f, columns=["day", "ts"])
        on_day = _column(t, "day").to_numpy(zero_copy_only=False).astype("datetime64[D]") == last
        stamps.append(epoch_us(_column(t, "ts"))[on_day])
    cut = np.quantile(np.concatenate(stamps), 1.0 - ONE_DAY_VALID_SHARE, method="higher")
    return dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=int(cut))


def to_batch(rb: pa.RecordBatch | pa.Table, sset: SampleSet) -> Batch:
    """Convert Arrow rows of the sample schema to the model's tensor contract."""
    lay = sset.layout
    user = encode_fields(rb, lay.user_fields, sset.vocabs)
    item = encode_fields(rb, lay.item_fields, sset.vocabs)
    n = len(rb)
    hist = np.zeros((n, lay.seq_len, len(lay.seq_fields)), dtype=np.int64)
    mask = np.zeros((n, lay.seq_len), dtype=bool)
    for j, field in enumerate(lay.seq_fields):
        if field == "time_gap":
            # Seconds from each behaviour to its own impression (hist_ts < ts by construction).
            idx, mask, values = _pad_lists(_column(rb, "hist_ts"), lay.seq_len)
            row_us = epoch_us(_column(rb, "ts"))
            beh_us = epoch_us(values) if len(values) else np.zeros(1)
            gaps = (row_us[:, None] - beh_us[idx]) / 1e6
            hist[:, :, j] = np.where(mask, time_gap_index(gaps), PAD)
            continue
        idx, mask, values = _pad_lists(_column(rb, f"hist_{field}"), lay.seq_len)
        if field == "action":
            codes = pc.index_in(values, value_set=pa.array(ACTIONS)).to_numpy(zero_copy_only=False)
            mapped = np.where(np.isnan(codes.astype(float)), OOV, codes + 2).astype(np.int64)
        else:
            mapped = _lookup(sset.vocabs[field], values) if len(values) else np.zeros(0, np.int64)
        flat = mapped[idx] if mapped.size else np.zeros(idx.shape, np.int64)
        hist[:, :, j] = np.where(mask, flat, PAD)
    return {
        "user": torch.from_numpy(user),
        "item": torch.from_numpy(item),
        "hist": torch.from_numpy(hist),
        "hist_mask": torch.from_numpy(mask),
        "label": torch.from_numpy(
            _column(rb, "label").to_numpy(zero_copy_only=False).astype(np.float32)
        ),
        "user_key": torch.from_numpy(
            _column(rb, "user_id").to_numpy(zero_copy_only=False).astype(np.int64)
        ),
        "item_key": torch.from_numpy(
            _column(rb, "item_id").to_numpy(zero_copy_only=False).astype(np.int64)
        ),
    }


def model_inputs(batch: Batch) -> Batch:
    """The keys a model reads: the batch without the raw ``user_key`` / ``item_key`` columns."""
    return {k: v for k, v in batch.items() if k not in ("user_key", "item_key")}


def _select(batch: Batch, idx: torch.Tensor) -> Batch:
    return {k: v[idx] for k, v in batch.items()}


def _concat(batches: list[Batch]) -> Batch:
    return {k: torch.cat([b[k] for b in batches]) for k in batches[0]}


class BatchStream:
    """Iterates batches over the day files of one split, optionally filtered by ``fold``.

    Args:
        sset: the sample folder.
        split: ``"train"`` or ``"test"``.
        batch_size: rows per batch.
        folds: keep rows whose ``fold`` (0–99, a hash of the row) is in [lo, hi); None = all.
        shuffle: shuffle day order and rows within a buffer of ``buffer_rows``.
        seed: base seed; the epoch is added so every epoch has its own order.
        rank, world: under DDP each rank takes every ``world``-th batch of the same stream.
        drop_last: drop the last partial batch (training) or keep it (evaluation).
        since_day: keep only rows of days after this one (a warm start trains on the days
            since its parent's last training day); None = every day.
        replay_folds: with ``since_day``, also keep the rows of earlier days whose ``fold``
            lies in [folds[0], folds[0] + replay_folds) — a fixed ``replay_folds`` % replay
            sample of the older days (never the validation folds, which lie below folds[0]).
        ts_from, ts_before: keep only rows whose impression time ``ts`` lies in
            [ts_from, ts_before) (naive, like the ``ts`` column); None = unbounded. The
            temporal validation slice is ``ts_from=cutoff``, its training rows
            ``ts_before=cutoff`` (:func:`temporal_cutoff`).
    """

    def __init__(
        self,
        sset: SampleSet,
        split: str,
        batch_size: int,
        folds: tuple[int, int] | None = None,
        shuffle: bool = False,
        seed: int = 0,
        buffer_rows: int = 65536,
        rank: int = 0,
        world: int = 1,
        drop_last: bool = False,
        since_day: dt.date | None = None,
        replay_folds: int = 0,
        ts_from: dt.datetime | None = None,
        ts_before: dt.datetime | None = None,
    ) -> None:
        if not 0 <= replay_folds <= 100:
            raise ValueError(f"replay_folds must be in [0, 100], got {replay_folds}")
        self.sset, self.split, self.batch_size = sset, split, batch_size
        self.since_day, self.replay_folds = since_day, replay_folds
        self.ts_from, self.ts_before = ts_from, ts_before
        self.folds, self.shuffle, self.seed = folds, shuffle, seed
        self.buffer_rows, self.rank, self.world, self.drop_last = (
            buffer_rows,
            rank,
            world,
            drop_last,
        )
        self.epoch = 0
        self._rows: int | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _filtered(self) -> bool:
        return (
            self.folds is not None
            or self.since_day is not None
            or self.ts_from is not None
            or self.ts_before is not None
        )

    def _columns(self) -> list[str]:
        """The columns :meth:`_keep` reads."""
        cols = ["fold"]
        if self.since_day is not None:
            cols.append("day")
        if self.ts_from is not None or self.ts_before is not None:
            cols.append("ts")
        return cols

    def rows(self) -> int:
        """Rows in the stream after filtering (reads only the ``fold`` and ``day`` columns)."""
        if self._rows is None:
            total = 0
            for f in self.sset.files(self.split):
                if not self._filtered():
                    total += pq.ParquetFile(f).metadata.num_rows
                    continue
                total += int(self._keep(pq.read_table(f, columns=self._columns())).sum())
            self._rows = total
        return self._rows

    def __len__(self) -> int:
        """Batches this rank yields per epoch (equal on every rank, as DDP requires)."""
        rows = self.rows()
        full = rows // self.batch_size
        n = full if self.drop_last or rows % self.batch_size == 0 else full + 1
        return n // self.world if self.world > 1 else n

    def _keep(self, rb: pa.RecordBatch | pa.Table) -> np.ndarray:
        """(N,) bool: the rows of ``rb`` this stream yields."""
        fold = _column(rb, "fold").to_numpy(zero_copy_only=False)
        lo, hi = self.folds if self.folds is not None else (0, 100)
        keep = (fold >= lo) & (fold < hi)
        if self.since_day is not None:
            day = _column(rb, "day").to_numpy(zero_copy_only=False).astype("datetime64[D]")
            recent = day > np.datetime64(self.since_day, "D")
            replay = (fold >= lo) & (fold < lo + self.replay_folds)
            keep &= recent | replay
        if self.ts_from is not None or self.ts_before is not None:
            ts = epoch_us(_column(rb, "ts"))
            if self.ts_from is not None:
                keep &= ts >= _naive_us(self.ts_from)
            if self.ts_before is not None:
                keep &= ts < _naive_us(self.ts_before)
        return keep

    def _chunks(self, rng: np.random.Generator) -> Iterator[Batch]:
        files = self.sset.files(self.split)
        if self.shuffle:
            files = [files[i] for i in rng.permutation(len(files))]
        for f in files:
            for rb in pq.ParquetFile(f).iter_batches(batch_size=8192):
                if self._filtered():
                    keep = self._keep(rb)
                    if not keep.any():
                        continue
                    rb = rb.filter(pa.array(keep))
                yield to_batch(rb, self.sset)

    def _rows_stream(self) -> Iterator[Batch]:
        rng = np.random.default_rng([self.seed, self.epoch])
        if not self.shuffle:
            yield from self._chunks(rng)
            return
        buf: list[Batch] = []
        size = 0
        for chunk in self._chunks(rng):
            buf.append(chunk)
            size += len(chunk["label"])
            if size >= self.buffer_rows:
                merged = _concat(buf)
                yield _select(merged, torch.from_numpy(rng.permutation(size)))
                buf, size = [], 0
        if buf:
            merged = _concat(buf)
            yield _select(merged, torch.from_numpy(rng.permutation(size)))

    def __iter__(self) -> Iterator[Batch]:
        limit = len(self)
        produced = 0
        index = 0
        carry: list[Batch] = []
        carry_n = 0
        for chunk in self._rows_stream():
            carry.append(chunk)
            carry_n += len(chunk["label"])
            if carry_n < self.batch_size:
                continue
            merged = _concat(carry)
            start = 0
            while carry_n - start >= self.batch_size:
                if index % self.world == self.rank:
                    if produced >= limit:
                        return
                    yield {k: v[start : start + self.batch_size] for k, v in merged.items()}
                    produced += 1
                index += 1
                start += self.batch_size
            carry = [{k: v[start:] for k, v in merged.items()}]
            carry_n -= start
        if carry_n and not self.drop_last and produced < limit and index % self.world == self.rank:
            yield _concat(carry)
