"""Point-in-time training samples: the warehouse → Parquet for training and testing.

For a run date D the test day is D − 1 and the training window the
``train_days`` days before it; with ``test_days`` N > 1 (benchmarks on small logs) the test
window is the N days ending D − 1 and the training window the ``train_days`` days before its
first day. Each impression becomes one row holding the user's last
``seq_len`` behaviours strictly before the impression time, the item and user features and
the label. Users are hashed into buckets built one job each (:class:`BucketJob`), so memory
stays bounded by one bucket of logs and the buckets can be built in parallel, elsewhere.

Output layout (``out_dir``)::

    train/part-NNNNN.parquet       training-window rows (column ``day``), one part per bucket
    test/part-NNNNN.parquet        the test day (or test window), one part per bucket
    vocab/<field>.parquet          sorted raw values seen in training, per categorical field
    layout.json                    the FeatureLayout (fields, vocab sizes, seq_len)
    meta.json                      window, row counts, exclusions, fingerprint, timings

A build is written into ``out_dir/.build-<id>/`` and swapped in (renames) only when it is
complete and has train and test rows: a failed or empty build leaves the previous samples as
they were. Other files in ``out_dir`` are left alone.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq

from tarq.data.features import (
    BASE_ITEM_FIELDS,
    BASE_USER_FIELDS,
    ID_FIELDS,
    SEQ_CONTEXT_FIELDS,
    SEQ_FIELDS,
    TIME_GAP_BUCKETS,
    FeatureLayout,
    Vocab,
)
from tarq.data.paths import duckdb_path
from tarq.dates import Window, resolve_run_date, utc_now, window_for
from tarq.defaults import MIN_COUNT, SEQ_LEN, TRAIN_DAYS
from tarq.runtime.parallel import Mapper, group_days, serial_map
from tarq.store import sqlfiles
from tarq.store.warehouse import new_id, open_db, open_for_job, side_features

DEFAULT_HISTORY_DAYS = 60
DEFAULT_MIN_COUNT = MIN_COUNT
#: Most shuffle partitions (files per shuffle job): DuckDB keeps a writer per open partition
#: and an object store pays per file, so past this many buckets neighbours share one.
SHUFFLE_MAX_PARTS = 4096
#: What one build writes into ``out_dir``; exactly these are swapped in.
OUTPUTS = ("train", "test", "vocab", "layout.json", "meta.json")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SampleBuild:
    """The report of one sample build (:func:`build_samples`), also written to ``meta.json``.

    Attributes:
        build_id: id of the build (``samples-…``), also its row in ``sample_builds``.
        run_date: the run date D (``YYYY-MM-DD``).
        train_start: first day of the training window (``YYYY-MM-DD``).
        train_end: last day of the training window (``YYYY-MM-DD``; the day before
            ``test_start``).
        test_start: first day of the test window (``YYYY-MM-DD``; ``test_day`` when it is one
            day, as in the daily job).
        test_day: the last test day D − 1 (``YYYY-MM-DD``).
        train_days: days in the training window (after capping by the first logged day).
        test_days: days in the test window ``test_start``..``test_day`` (1 by default).
        seq_len: history length L kept per impression.
        history_days: how far back behaviours were looked up for a history.
        min_count: sightings an id of :data:`ID_FIELDS` needs to get its own embedding row.
        rows: sample rows written (train + test).
        train_rows: rows of the training window.
        test_rows: rows of the test window.
        buckets: user hash buckets the rows were built in (one statement each).
        excluded_rows: raw impressions of the window that became no row (quarantined or
            incomplete).
        per_day: ``{"YYYY-MM-DD": {"rows", "positives", "raw_impressions"}}`` for every day of
            the window, empty ones included.
        user_side_features: side-feature columns of ``users`` in the samples.
        item_side_features: side-feature columns of ``items`` in the samples.
        vocab_sizes: vocabulary size per categorical field (``action``, ``time_gap`` too).
        items_price_non_finite: catalog items whose stored price is inf/NaN (they get the
            unknown price bucket).
        seconds: wall time of the build.
        rows_per_s: rows written per second (None when no time elapsed).
        fingerprint: hash of the sample files (names, row counts, bytes): identifies the
            training data.
    """

    build_id: str
    run_date: str
    train_start: str
    train_end: str
    test_start: str
    test_day: str
    train_days: int
    test_days: int
    seq_len: int
    history_days: int
    min_count: int
    rows: int
    train_rows: int
    test_rows: int
    buckets: int
    excluded_rows: int
    per_day: dict[str, dict[str, int]]
    user_side_features: list[str]
    item_side_features: list[str]
    vocab_sizes: dict[str, int]
    items_price_non_finite: int
    seconds: float
    rows_per_s: float | None
    fingerprint: str

    def to_dict(self) -> dict[str, Any]:
        """The report as written to ``meta.json`` (keys in the order of the attributes)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SampleBuild:
        """A report read back from ``meta.json``. Keys that older builds did not write get
        what those builds did: ``min_count`` 1 (every id kept), ``buckets`` 1,
        ``items_price_non_finite`` 0, one test day (``test_start`` = ``test_day``,
        ``test_days`` 1); unknown keys are ignored.

        Raises:
            ValueError: another key is missing (not a sample build report).
        """
        old = {
            "min_count": 1,
            "buckets": 1,
            "items_price_non_finite": 0,
            "test_start": data.get("test_day"),
            "test_days": 1,
        }
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in data and n not in old]
        if missing:
            raise ValueError(f"not a sample build report: no {', '.join(missing)}")
        return cls(**{n: data[n] if n in data else old[n] for n in names})


def _day_files(out_dir: Path, split: str) -> list[Path]:
    return sorted((out_dir / split).glob("*.parquet"))


def build_samples(
    db_path: str | Path,
    run_date: str | dt.date,
    out_dir: str | Path,
    train_days: int = TRAIN_DAYS,
    seq_len: int = SEQ_LEN,
    history_days: int = DEFAULT_HISTORY_DAYS,
    threads: int | None = None,
    memory_limit: str | None = None,
    rows_per_bucket: int = 250_000,
    min_count: int = DEFAULT_MIN_COUNT,
    mapper: Mapper | None = None,
    shuffle_rows: int | None = None,
    test_days: int = 1,
) -> SampleBuild:
    """Write the point-in-time samples of ``run_date`` to ``out_dir`` and return a report.

    Args:
        db_path: the DuckDB warehouse (opened read-only: building samples changes no row).
        run_date: the run date D (``YYYY-MM-DD``, ``"latest"`` or ``"today"``).
        out_dir: output folder; the new samples replace the previous ones (:data:`OUTPUTS`)
            only once complete and non-empty.
        train_days: days in the training window before the test window (capped by the logs).
        seq_len: history length L kept per impression.
        history_days: how far back behaviours are looked up for a history.
        threads: DuckDB threads (default: DuckDB's choice).
        memory_limit: DuckDB memory limit such as ``"4GB"`` (default: DuckDB's choice).
        rows_per_bucket: impressions per statement; users are hashed into as many buckets as
            needed, which bounds memory (each behaviour is still read into one bucket only).
            250k measured fastest on 2 cores (1M-row buckets: 1.2x slower, 3x the memory).
        min_count: ids of the id fields (:data:`ID_FIELDS`) seen fewer times in the training
            window get no embedding row of their own (they map to OOV); see ``vocab.sql``
            for what counts as a sighting.
        mapper: runs the per-bucket jobs (:class:`BucketJob`, :func:`build_bucket`); default
            one after the other in this process. Any :class:`tarq.runtime.parallel.Mapper` gives the
            same files (e.g. ``tarq-daily`` on Dask maps them as Prefect tasks).
        shuffle_rows: shuffle the logs by user bucket first, in jobs of whole days of about
            this many rows (:class:`ShuffleJob`), so that each bucket job reads its own rows
            instead of every row of the window: the window is read about twice instead of
            once per bucket. For many buckets (a cluster); the same files. None: no shuffle.
        test_days: days N in the test window, the N days ending D − 1 (split ``test``); the
            training window ends the day before its first day. Every row keeps the history
            strictly before its own impression (so a day-k test row sees the earlier test
            days' behaviours, as a model served on day k would), and the vocabularies come
            from the training window only. 1 (the default, the daily job's window) writes the
            same files as before this option existed.

    Returns:
        The :class:`SampleBuild` report (``to_dict()`` is what ``meta.json`` holds): window,
        per-split rows, positives, exclusions (quarantined or incomplete rows), rows/s, the
        dataset fingerprint and ``items_price_non_finite`` (catalog prices of inf/NaN, stored
        before the importer rejected them: they get the unknown price bucket, and a warning
        is logged).

    Raises:
        ValueError: bad arguments (``test_days`` below 1 or longer than the logs leave
            a training day for), no usable logs for the window, or no train/test rows
            (the previous samples in ``out_dir`` are kept).
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    if isinstance(test_days, bool) or not isinstance(test_days, int) or test_days < 1:
        raise ValueError(f"test_days must be an integer >= 1, got {test_days!r}")
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    out = Path(out_dir)
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(out)
    # Next to the previous samples (same file system), so that swapping in is renames.
    build = out / f".build-{uuid.uuid4().hex[:12]}"
    build.mkdir()
    try:
        report = _build(
            db_path,
            run_date,
            build,
            train_days,
            seq_len,
            history_days,
            threads,
            memory_limit,
            rows_per_bucket,
            min_count,
            started,
            mapper or serial_map,
            shuffle_rows,
            test_days,
        )
        _swap_in(build, out)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    _record_build(db_path, report, out)
    return report


def _build(
    db_path: str | Path,
    run_date: str | dt.date,
    out: Path,
    train_days: int,
    seq_len: int,
    history_days: int,
    threads: int | None,
    memory_limit: str | None,
    rows_per_bucket: int,
    min_count: int,
    started: float,
    mapper: Mapper,
    shuffle_rows: int | None,
    test_days: int,
) -> SampleBuild:
    """Write a complete build into the empty folder ``out``; return its report."""
    with open_db(db_path, read_only=True) as con:
        _configure(con, threads, memory_limit)
        win = _window(con, run_date, train_days, test_days)
        user_side = side_features(con, "users")
        item_side = side_features(con, "items")
        clash = set(user_side) & set(item_side)
        if clash:
            raise ValueError(f"users and items both declare side features {sorted(clash)}")
        raw_counts = {
            str(day): int(n)
            for day, n in sqlfiles.run(
                con,
                "samples/day_counts",
                {"start": win.train_start, "end": win.test_day + dt.timedelta(days=1)},
            ).fetchall()
        }
        n_window = sum(raw_counts.values())
        bad_prices = int(sqlfiles.run(con, "samples/non_finite_prices").fetchone()[0])
        if bad_prices:
            log.warning(
                "%d catalog item(s) have a non-finite price (inf/NaN, stored before "
                "the importer rejected them): they get the unknown price bucket",
                bad_prices,
            )
        buckets = max(1, math.ceil(n_window / rows_per_bucket))
        _write_rows(
            con,
            db_path,
            out,
            win,
            buckets,
            seq_len,
            history_days,
            threads,
            memory_limit,
            mapper,
            shuffle_rows if shuffle_rows and buckets > 1 else None,
            [(dt.date.fromisoformat(day), n) for day, n in raw_counts.items()],
        )
        per_day = _per_day(con, out, raw_counts)

        train_files = [duckdb_path(f) for f in _day_files(out, "train")]
        layout = _build_vocabularies(
            con, out, train_files, user_side, item_side, seq_len, min_count
        )

    rows = sum(v["rows"] for v in per_day.values())
    raw = sum(v["raw_impressions"] for v in per_day.values())
    test_rows = sum(
        v["rows"] for d, v in per_day.items() if dt.date.fromisoformat(d) >= win.test_start
    )
    elapsed = time.perf_counter() - started
    report = SampleBuild(
        build_id=new_id("samples"),
        run_date=str(win.run_date),
        train_start=str(win.train_start),
        train_end=str(win.train_end),
        test_start=str(win.test_start),
        test_day=str(win.test_day),
        train_days=win.train_days,
        test_days=win.test_days,
        seq_len=seq_len,
        history_days=history_days,
        min_count=min_count,
        rows=rows,
        train_rows=rows - test_rows,
        test_rows=test_rows,
        buckets=buckets,
        excluded_rows=raw - rows,
        per_day=per_day,
        user_side_features=user_side,
        item_side_features=item_side,
        vocab_sizes=layout.vocab_sizes,
        items_price_non_finite=bad_prices,
        seconds=round(elapsed, 3),
        rows_per_s=round(rows / elapsed, 1) if elapsed > 0 else None,
        fingerprint=_fingerprint(out),
    )
    (out / "meta.json").write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")
    return report


def _per_day(
    con: duckdb.DuckDBPyConnection, out: Path, raw_counts: dict[str, int]
) -> dict[str, dict[str, int]]:
    """Rows and positives written per day beside the day's raw impressions (every day of
    the window, empty ones included)."""
    per_day = {
        str(day): {
            "rows": int(n),
            "positives": int(pos),
            "raw_impressions": raw_counts.get(str(day), 0),
        }
        for day, n, pos in sqlfiles.run(
            con,
            "samples/split_summary",
            {"files": [duckdb_path(f) for s in ("train", "test") for f in _day_files(out, s)]},
        ).fetchall()
    }
    for day, n in raw_counts.items():
        per_day.setdefault(day, {"rows": 0, "positives": 0, "raw_impressions": n})
    return per_day


def _window(
    con: duckdb.DuckDBPyConnection, run_date: str | dt.date, train_days: int, test_days: int = 1
) -> Window:
    """The run's window, checked against the usable log days (not quarantined, not future):
    the last test day must be logged and a training day must precede the test window."""
    now = utc_now()
    d = resolve_run_date(run_date, con, now)
    first_day, last_day, _ = sqlfiles.run(con, "dates/usable_days", {"now": now}).fetchone()
    if first_day is None:
        raise ValueError(
            "the warehouse holds no usable impressions (none, or all quarantined or later "
            "than now): nothing to build samples from"
        )
    win = window_for(d, train_days, first_log_day=first_day, test_days=test_days)
    if win.test_day > last_day:
        raise ValueError(f"run date {d} tests on {win.test_day}, but the logs end on {last_day}")
    return win


@dataclass(frozen=True)
class BucketJob:
    """The rows of one user hash bucket (:func:`build_bucket`): a picklable job that any
    process able to read the warehouse and write ``staging`` can run.

    Attributes:
        db_path: the warehouse (opened read-only).
        staging: the build's staging folder; the job writes ``staging/bNNNN/{train,test}.parquet``.
        bucket: this bucket's index in ``0 .. buckets - 1``.
        buckets: how many buckets the users are hashed into.
        start: first impression time of the window (the training window's first midnight).
        end: the end of the window (the midnight after the test day), exclusive.
        history_start: behaviours are looked up from this time on.
        test_day: the last test day (rows of ``test_start``..``test_day`` are the ``test``
            split).
        seq_len: history length L kept per impression.
        threads: DuckDB threads of the job (None: DuckDB's choice).
        memory_limit: DuckDB memory limit of the job such as ``"4GB"`` (None: DuckDB's choice).
        shuffled: read the bucket's rows from the shuffle's files (:class:`ShuffleJob`).
        test_start: the first test day (None: ``test_day``, a one-day test window).
    """

    db_path: str
    staging: str
    bucket: int
    buckets: int
    start: dt.datetime
    end: dt.datetime
    history_start: dt.datetime
    test_day: dt.date
    seq_len: int
    threads: int | None = None
    memory_limit: str | None = None
    shuffled: bool = False
    test_start: dt.date | None = None

    @property
    def folder(self) -> Path:
        return Path(self.staging) / f"b{self.bucket:04d}"

    def __str__(self) -> str:  # the job's name in logs and task runs
        return f"bucket {self.bucket + 1}/{self.buckets}"


@dataclass(frozen=True)
class ShuffleJob:
    """The shuffle of one group of days of one log table (:func:`shuffle_days`): its rows
    written into ``staging/shuffle/<table>/jNNNNN/part=K/`` by user hash bucket (one bucket
    per part unless they are very many: :func:`shuffle_per_part`), so that each bucket job
    then reads its own rows only. A picklable job, like :class:`BucketJob`.

    Attributes:
        db_path: the warehouse (opened read-only).
        staging: the build's staging folder.
        table: ``impressions`` or ``behaviors``.
        index: the job's number among the table's shuffle jobs (its folder).
        start: first row time of the group (a midnight).
        end: the end of the group (a midnight), exclusive.
        buckets: how many buckets the users are hashed into.
        threads: DuckDB threads of the job (None: DuckDB's choice).
        memory_limit: DuckDB memory limit of the job (None: DuckDB's choice).
    """

    db_path: str
    staging: str
    table: str
    index: int
    start: dt.datetime
    end: dt.datetime
    buckets: int
    threads: int | None = None
    memory_limit: str | None = None

    def __str__(self) -> str:  # the job's name in logs and task runs
        last = (self.end - dt.timedelta(days=1)).date()
        return f"{self.table} {self.start.date()}..{last}"


def shuffle_days(job: ShuffleJob) -> int:
    """Write one group of days of a log table split by user bucket; returns the rows written."""
    out = _shuffled(job.staging, job.table) / f"j{job.index:05d}"
    shutil.rmtree(out, ignore_errors=True)  # a retry starts over: the folder is this job's
    out.parent.mkdir(parents=True, exist_ok=True)
    with open_for_job(job.db_path) as con:
        _configure(con, job.threads, job.memory_limit)
        query = sqlfiles.render("samples/shuffle", table=job.table)
        cur = con.execute(
            f"COPY ({query}) TO $out_path (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (part))",
            {
                "start": job.start,
                "end": job.end,
                "buckets": job.buckets,
                "per_part": shuffle_per_part(job.buckets),
                "out_path": str(out),
            },
        )
        return int(cur.fetchone()[0])


def shuffle_per_part(buckets: int) -> int:
    """Buckets per shuffle partition: 1, unless there are more than
    :data:`SHUFFLE_MAX_PARTS` buckets (then a bucket job also reads its neighbours' rows, and
    keeps its own)."""
    return max(1, math.ceil(buckets / SHUFFLE_MAX_PARTS))


def _shuffled(staging: str | Path, table: str) -> Path:
    return Path(staging) / "shuffle" / table


def build_bucket(job: BucketJob) -> dict[str, int]:
    """Write the point-in-time rows of one user bucket, one file per split in ``row_id`` order.

    Returns:
        Rows written per split, ``{"train": n, "test": n}`` (a split without rows has no file).
    """
    out = job.folder
    shutil.rmtree(out, ignore_errors=True)  # a retry starts over: the folder is this job's
    out.mkdir(parents=True)
    with open_for_job(job.db_path) as con:
        _configure(con, job.threads, job.memory_limit)
        sources = {"impressions": "impressions", "behaviors": "behaviors"}
        if job.shuffled:
            sources = _bucket_tables(con, job)
            if sources is None:
                return {"train": 0, "test": 0}
        rows = sqlfiles.render("samples/rows", **sources)
        # DuckDB writes <bucket>/rows/split=train|test/*.parquet in thread order ...
        con.execute(
            f"COPY ({rows}) TO $out_path (FORMAT parquet, "
            "COMPRESSION zstd, PARTITION_BY (split), OVERWRITE_OR_IGNORE)",
            {
                "start": job.start,
                "end": job.end,
                "history_start": job.history_start,
                "test_start": job.test_day if job.test_start is None else job.test_start,
                "test_day": job.test_day,
                "seq_len": job.seq_len,
                "bucket": job.bucket,
                "buckets": job.buckets,
                "out_path": str(out / "rows"),
            },
        )
        # ... so each split is rewritten as one file in row_id order (see ordered_part.sql).
        ordered = sqlfiles.load_sql("samples/ordered_part")
        counts = {}
        for split in ("train", "test"):
            parts = sorted(duckdb_path(p) for p in out.glob(f"rows/split={split}/*.parquet"))
            counts[split] = 0
            if parts:
                target = out / f"{split}.parquet"
                con.execute(
                    f"COPY ({ordered}) TO $out_path (FORMAT parquet, COMPRESSION zstd)",
                    {"files": parts, "out_path": str(target)},
                )
                counts[split] = pq.ParquetFile(target).metadata.num_rows
    shutil.rmtree(out / "rows")
    return counts


def _bucket_tables(con: duckdb.DuckDBPyConnection, job: BucketJob) -> dict[str, str] | None:
    """Temp tables of the bucket's shuffled rows, named for rows.sql (None: no impressions)."""
    names = {}
    for table in ("impressions", "behaviors"):
        name = f"bucket_{table}"
        part = job.bucket // shuffle_per_part(job.buckets)
        files = sorted(
            duckdb_path(p) for p in _shuffled(job.staging, table).glob(f"j*/part={part}/*.parquet")
        )
        if files:
            sqlfiles.run(con, "samples/bucket_rows", {"files": files}, target=name)
        elif table == "impressions":
            return None
        else:
            sqlfiles.run(con, "samples/bucket_rows_empty", target=name, table=table)
        names[table] = name
    return names


def _configure(con: duckdb.DuckDBPyConnection, threads: int | None, memory: str | None) -> None:
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    if memory:
        con.execute("SET memory_limit = $m", {"m": memory})


def _write_rows(
    con: duckdb.DuckDBPyConnection,
    db_path: str | Path,
    out: Path,
    win: Window,
    buckets: int,
    seq_len: int,
    history_days: int,
    threads: int | None,
    memory_limit: str | None,
    mapper: Mapper,
    shuffle_rows: int | None,
    impression_days: list[tuple[dt.date, int]],
) -> None:
    """The point-in-time rows of the window as ``out/{train,test}/part-NNNNN.parquet``.

    Users are split into ``buckets`` hash buckets, one job each (bounded memory, and the jobs
    are independent: ``mapper`` may run them anywhere that reads the warehouse and writes
    ``out``); the files of non-empty buckets are then numbered in bucket order. With
    ``shuffle_rows``, the logs are first shuffled by bucket (jobs of about that many rows of
    whole days; ``impression_days``: the window's impressions per day, already counted),
    and each bucket job reads its own rows only.
    """
    staging = out / ".staging"
    staging.mkdir()
    history_start = dt.datetime.combine(
        win.train_start - dt.timedelta(days=history_days), dt.time()
    )
    start = dt.datetime.combine(win.train_start, dt.time())
    end = dt.datetime.combine(win.test_day + dt.timedelta(days=1), dt.time())
    if shuffle_rows:
        behavior_days = sqlfiles.run(
            con, "samples/log_day_counts", {"start": history_start, "end": end}, table="behaviors"
        ).fetchall()
        shuffles = [
            ShuffleJob(
                db_path=str(Path(db_path).absolute()),
                staging=str(staging.absolute()),
                table=table,
                index=k,
                start=lo,
                end=hi,
                buckets=buckets,
                threads=threads,
                memory_limit=memory_limit,
            )
            for table, per_day in (("impressions", impression_days), ("behaviors", behavior_days))
            for k, (lo, hi) in enumerate(_day_spans(per_day, shuffle_rows))
        ]
        mapper(shuffle_days, shuffles, name="sample-shuffle")
    jobs = [
        BucketJob(
            db_path=str(Path(db_path).absolute()),
            staging=str(staging.absolute()),
            bucket=bucket,
            buckets=buckets,
            start=start,
            end=end,
            history_start=history_start,
            test_day=win.test_day,
            seq_len=seq_len,
            threads=threads,
            memory_limit=memory_limit,
            shuffled=bool(shuffle_rows),
            test_start=win.test_start,
        )
        for bucket in range(buckets)
    ]
    counts = mapper(build_bucket, jobs, name="sample-bucket")
    for split in ("train", "test"):
        target = out / split
        target.mkdir()
        k = 0
        for job, n in zip(jobs, counts, strict=True):
            if n[split]:
                (job.folder / f"{split}.parquet").rename(target / f"part-{k:05d}.parquet")
                k += 1
    shutil.rmtree(staging)
    for split in ("train", "test"):
        if not _day_files(out, split):
            raise ValueError(
                f"no {split} rows for run date {win.run_date} (training {win.train_start}.."
                f"{win.train_end}, test {win.test_start}..{win.test_day}): every impression "
                "was excluded or the days are empty"
            )


def _day_spans(
    per_day: list[tuple[dt.date, int]], limit: int
) -> list[tuple[dt.datetime, dt.datetime]]:
    """[start, end) of each run of whole days holding about ``limit`` rows (``per_day``: the
    days with rows, in order; :func:`tarq.runtime.parallel.group_days`)."""
    return [
        (
            dt.datetime.combine(days[0], dt.time()),
            dt.datetime.combine(days[-1] + dt.timedelta(days=1), dt.time()),
        )
        for days in group_days(per_day, limit)
    ]


def _remove_leftovers(out: Path) -> None:
    """Remove what an interrupted build left in ``out`` (never the samples themselves)."""
    for stale in [out / ".staging", *out.glob(".build-*"), *out.glob(".old-*")]:
        if stale.is_dir():
            shutil.rmtree(stale)


def _swap_in(build: Path, out: Path) -> None:
    """Replace the samples in ``out`` by the complete build in ``build`` (renames only).

    The previous outputs are moved aside first and moved back if any rename fails, so ``out``
    holds either the old samples or the new ones.
    """
    missing = [name for name in OUTPUTS if not (build / name).exists()]
    if missing:
        raise RuntimeError(f"sample build {build} lacks {', '.join(missing)}; this is a bug")
    old = out / f".old-{build.name.removeprefix('.build-')}"
    old.mkdir()
    try:
        for name in OUTPUTS:
            if (out / name).exists():
                (out / name).rename(old / name)
        for name in OUTPUTS:
            (build / name).rename(out / name)
    except BaseException:
        for name in OUTPUTS:
            if (old / name).exists():
                if (out / name).is_dir():
                    shutil.rmtree(out / name)
                elif (out / name).exists():
                    (out / name).unlink()
                (old / name).rename(out / name)
        raise
    shutil.rmtree(old)
    shutil.rmtree(build)


def _build_vocabularies(
    con: Any,
    out: Path,
    train_files: list[str],
    user_side: list[str],
    item_side: list[str],
    seq_len: int,
    min_count: int = 1,
) -> FeatureLayout:
    """Write one vocabulary per categorical field (values seen in training) and the layout.

    Fields in :data:`ID_FIELDS` keep the values seen at least ``min_count`` times; the
    others every value seen.
    """
    vocab_dir = out / "vocab"
    vocab_dir.mkdir(parents=True, exist_ok=True)
    sizes: dict[str, int] = {}
    shared = {f for f in SEQ_FIELDS if f not in SEQ_CONTEXT_FIELDS}
    for field in [*BASE_USER_FIELDS, *user_side, *BASE_ITEM_FIELDS, *item_side]:
        params = {"files": train_files, "min_count": min_count if field in ID_FIELDS else 1}
        if field in shared:
            cur = sqlfiles.run(
                con, "samples/vocab", params, field=field, hist_field=f"hist_{field}"
            )
        else:
            cur = sqlfiles.run(con, "samples/vocab_flat", params, field=field)
        values = cur.fetchnumpy()["value"]
        vocab = Vocab(values)
        vocab.save(vocab_dir / f"{field}.parquet")
        sizes[field] = len(vocab)
    sizes["action"] = 6  # pad, oov and the four Taobao actions
    sizes["time_gap"] = TIME_GAP_BUCKETS + 2
    layout = FeatureLayout(
        user_fields=[*BASE_USER_FIELDS, *user_side],
        item_fields=[*BASE_ITEM_FIELDS, *item_side],
        seq_fields=list(SEQ_FIELDS),
        vocab_sizes=sizes,
        seq_len=seq_len,
    )
    layout.save(out / "layout.json")
    return layout


def _fingerprint(out: Path) -> str:
    """Hash of the sample files' names, sizes and row counts: identifies the training data."""
    h = hashlib.sha256()
    for split in ("train", "test"):
        for f in _day_files(out, split):
            h.update(f"{split}/{f.name}:{pq.ParquetFile(f).metadata.num_rows}".encode())
            h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()[:16]


def _record_build(db_path: str | Path, report: SampleBuild, out: Path) -> None:
    with open_db(db_path) as con:
        sqlfiles.run(
            con,
            "samples/record_build",
            {
                "build_id": report.build_id,
                "run_date": report.run_date,
                "train_start": report.train_start,
                "test_day": report.test_day,
                "out_dir": str(out.resolve()),
                "report": json.dumps(report.to_dict()),
            },
        )
