"""Benchmark: the data steps on Dask (1 and 2 local workers) beside the single process.

Usage::

    python benchmarks/scale_out.py --preset medium --work outputs/bench-scale-out \\
        --workers 1 2 --json benchmarks/scale_out.json

On one demo warehouse (generated into ``--work`` when missing, seed 7, the fixed window
ending 2026-10-22) it runs each data step of one run date the way ``tarq-daily`` does:

    validate (chunks of days) → build-samples (user buckets) → assign-ids (catalog chunks)

first in this process (the default path: one DuckDB with all cores), then with the jobs as
Prefect tasks on a local Dask cluster of N single-threaded worker processes, for each N of
``--workers``, and for each N once more the samples alone built shuffled (the logs split by
user bucket first, as the flow builds on Dask). Every configuration runs on its own copy of
the warehouse (validation writes its quarantine and records). It checks that every
configuration gives the same samples (fingerprint) and IDs (sha256 of ids.parquet), and
records wall seconds, rows/s, each phase's seconds and jobs (shuffle / buckets, row / day
jobs), and the peak RSS of the busiest worker process (sampled every 50 ms: the memory one
job needs); then how fast one DuckDB thread reads the window's logs keeping one bucket (what
each unshuffled bucket job pays first). The cluster's start is timed apart. The TARQ model
the IDs come from is trained once (few steps: the assignment's cost does not depend on its
quality).

Prefect runs against a temporary local API (its test harness) so the benchmark leaves no
runs in the user's Prefect home. Run it alone: two heavy jobs on 2 cores distort each other.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import shutil
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _harness import Stopwatch, markdown_table, quiet_check, write_json

from tarq.defaults import DEMO_SEED
from tarq.runtime.telemetry import disable_telemetry

END = dt.date(2026, 10, 22)
RUN_DATE = str(END)  # test day 2026-10-21, 19 training days
ID_CHUNK = 16_384  # catalog chunk (items) of the mapped assignment; the single pass reads the same


class PeakRss:
    """Peak RSS (MB) per process of a set, sampled in a thread every ``every`` seconds."""

    def __init__(self, pids: Callable[[], list[int]], every: float = 0.05) -> None:
        import psutil

        self._psutil, self._pids, self._every = psutil, pids, every
        self.peak: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in self._pids():
                try:
                    rss = self._psutil.Process(pid).memory_info().rss / 2**20
                except self._psutil.Error:
                    continue
                self.peak[pid] = max(self.peak.get(pid, 0.0), rss)
            self._stop.wait(self._every)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class TimedMapper:
    """A mapper that times each call of the mapper it wraps, by job name (a step's phases:
    ``sample-shuffle``, ``sample-bucket``, ``validate-rows`` …)."""

    def __init__(self, base: Callable[..., list[Any]]) -> None:
        self.base = base
        self.seconds: dict[str, float] = {}
        self.jobs: dict[str, int] = {}

    def __call__(self, fn: Callable[[Any], Any], jobs: Any, *, name: str) -> list[Any]:
        clock = Stopwatch()
        out = self.base(fn, jobs, name=name)
        self.seconds[name] = round(self.seconds.get(name, 0.0) + clock.seconds, 2)
        self.jobs[name] = self.jobs.get(name, 0) + len(jobs)
        return out


def scan_rate(db: Path, buckets: int) -> dict[str, Any]:
    """What every unshuffled bucket job pays before its own work: one DuckDB thread reading
    the window's logs and keeping one bucket's users (log rows read per second)."""
    import duckdb

    start = dt.datetime(2026, 10, 2)  # the window of RUN_DATE: 19 days + the test day
    end = dt.datetime.combine(END + dt.timedelta(days=1), dt.time())
    with duckdb.connect(str(db), read_only=True) as con:
        con.execute("SET threads = 1")
        spans = (("impressions", start), ("behaviors", start - dt.timedelta(days=60)))
        n = sum(
            con.execute(
                f"SELECT count(*) FROM {table} WHERE ts >= $a AND ts < $b", {"a": a, "b": end}
            ).fetchone()[0]
            for table, a in spans
        )
        clock = Stopwatch()
        for table, a in spans:
            con.execute(
                f"SELECT count(*) FROM {table} WHERE ts >= $a AND ts < $b "
                "AND hash(user_id) % $k = 0",
                {"a": a, "b": end, "k": buckets},
            ).fetchone()
        seconds = clock.seconds
    return {"rows": n, "seconds": round(seconds, 3), "rows_per_s": round(n / seconds)}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def ensure_warehouse(preset: str, work: Path) -> Path:
    from tarq.data.demo import generate

    db = work / f"{preset}.duckdb"
    if not db.exists():
        clock = Stopwatch()
        generate(db, preset=preset, seed=DEMO_SEED, end_date=END)
        print(f"generated {preset} in {clock.seconds:.0f}s", file=sys.stderr)
    return db


def train_model(db: Path, work: Path) -> Path:
    """A TARQ model of the default shape trained for a few steps (IDs need its codebooks)."""
    from tarq.data.samples import build_samples
    from tarq.model import ModelConfig
    from tarq.training.train import TrainConfig, train

    model = work / "model"
    if (model / "model.pt").exists():
        return model
    samples = work / "model-samples"
    if not (samples / "meta.json").exists():
        build_samples(db, RUN_DATE, samples)
    train(
        samples,
        "tarq",
        model,
        ModelConfig(),
        TrainConfig(epochs=1, max_steps_per_epoch=30, patience=0),
        progress=False,
    )
    return model


@contextmanager
def local_cluster(workers: int) -> Iterator[tuple[str, list[int], float]]:
    """(scheduler address, worker pids, seconds to start) of a local cluster as the flow
    starts it (flows.dask_steps.cluster)."""
    from distributed import Client

    from flows.dask_steps import cluster

    clock = Stopwatch()
    with cluster(None, True, workers) as address:
        assert address is not None
        with Client(address) as c:
            c.wait_for_workers(workers)
            pids = list(c.run(os.getpid).values())
        yield address, pids, clock.seconds


def run_steps(
    db: Path,
    model: Path,
    out: Path,
    address: str | None,
    pids: list[int],
    steps_wanted: tuple[str, ...],
    shuffle_rows: int | None,
) -> dict[str, Any]:
    """The data steps on ``db``: here (``address`` None) or as Prefect tasks on Dask; each
    step's phases timed apart (``phases``)."""
    from prefect import flow

    from flows import dask_steps
    from tarq.runtime.parallel import serial_map

    mapper = TimedMapper(dask_steps.prefect_mapper if address else serial_map)
    res = dask_steps.worker_resources(address) if address else None
    threads = res.threads if res else None
    memory = res.memory_limit if res else None
    steps: dict[str, Any] = {}

    def step(name: str, fn: Callable[[], Any]) -> Any:
        @flow(name=f"bench-{name}")
        def body() -> Any:
            return fn()

        runner = dask_steps._runner(address) if address else None
        with PeakRss(lambda: pids or [os.getpid()]) as rss:
            clock = Stopwatch()
            result = body.with_options(task_runner=runner)() if runner else body()
            seconds = clock.seconds
        steps[name] = {
            "seconds": round(seconds, 2),
            "peak_worker_rss_mb": round(max(rss.peak.values(), default=0.0)),
            "phases": dict(mapper.seconds),
            "jobs": dict(mapper.jobs),
        }
        mapper.seconds.clear()
        mapper.jobs.clear()
        return result

    if "validate" in steps_wanted:
        _validate_step(step, steps, db, out, mapper)
    if "build-samples" in steps_wanted:
        _samples_step(step, steps, db, out, mapper, threads, memory, shuffle_rows)
    if "assign-ids" in steps_wanted:
        _assign_step(step, steps, db, model, out, mapper if address else None, threads)
    return steps


def _validate_step(step: Any, steps: dict[str, Any], db: Path, out: Path, mapper: Any) -> None:
    from tarq.validation import validate

    report = step(
        "validate",
        lambda: validate(db, RUN_DATE, docs_dir=out / "gx", window_days=19, mapper=mapper),
    )
    steps["validate"].update(
        success=bool(report.success), days=len(report.days), quarantined=report.quarantined
    )


def _samples_step(
    step: Any,
    steps: dict[str, Any],
    db: Path,
    out: Path,
    mapper: Any,
    threads: int | None,
    memory: str | None,
    shuffle_rows: int | None,
) -> None:
    from tarq.data.samples import build_samples

    build = step(
        "build-samples",
        lambda: build_samples(
            db,
            RUN_DATE,
            out / "samples",
            threads=threads,
            memory_limit=memory,
            mapper=mapper,
            shuffle_rows=shuffle_rows,
        ),
    )
    steps["build-samples"].update(
        rows=build.rows,
        buckets=build.buckets,
        rows_per_s=round(build.rows / steps["build-samples"]["seconds"]),
        fingerprint=build.fingerprint,
    )


def _assign_step(
    step: Any,
    steps: dict[str, Any],
    db: Path,
    model: Path,
    out: Path,
    mapper: Any,
    threads: int | None,
) -> None:
    from tarq.ids.semantic_ids import IDS_FILE, assign_ids

    ids = step(
        "assign-ids",
        lambda: assign_ids(
            db,
            model,
            out / "ids",
            chunk_size=ID_CHUNK,
            progress=False,
            max_collision_rate=None,
            mapper=mapper,
            threads=threads,
        ),
    )
    steps["assign-ids"].update(
        items=ids.items_assigned,
        chunks=-(-ids.items_assigned // ID_CHUNK),
        items_per_s=round(ids.items_assigned / steps["assign-ids"]["seconds"]),
        ids_sha256=_sha(out / "ids" / IDS_FILE),
    )


ALL_STEPS = ("validate", "build-samples", "assign-ids")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="medium")
    ap.add_argument("--work", type=Path, default=Path("outputs/bench-scale-out"))
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument(
        "--shuffle-rows",
        type=int,
        default=1_000_000,
        help="also build the samples shuffled (jobs of this many rows) on each cluster size",
    )
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    disable_telemetry()
    from prefect.testing.utilities import prefect_test_harness

    work = args.work.resolve() / args.preset
    work.mkdir(parents=True, exist_ok=True)
    db = ensure_warehouse(args.preset, work)
    model = train_model(db, work)
    # (workers, shuffled): the single process first, then each cluster size plain and shuffled.
    configs = [(0, False)] + [(w, s) for w in args.workers for s in (False, True)]
    results: list[dict[str, Any]] = []
    quiet_check()
    with prefect_test_harness():
        for workers, shuffled in configs:
            name = "single process" if workers == 0 else f"Dask, {workers} worker(s)"
            name += ", shuffled" if shuffled else ""
            run_dir = work / f"run-{workers}{'-shuffled' if shuffled else ''}"
            shutil.rmtree(run_dir, ignore_errors=True)
            run_dir.mkdir()
            copy = run_dir / "w.duckdb"
            shutil.copy(db, copy)
            wanted = ("build-samples",) if shuffled else ALL_STEPS
            rows = args.shuffle_rows if shuffled else None
            if workers == 0:
                steps = run_steps(copy, model, run_dir, None, [], wanted, rows)
                start = None
            else:
                with local_cluster(workers) as (address, pids, start):
                    steps = run_steps(copy, model, run_dir, address, pids, wanted, rows)
            results.append(
                {
                    "config": name,
                    "workers": workers,
                    "shuffled": shuffled,
                    "cluster_start_s": start,
                    **steps,
                }
            )
            print(json.dumps(results[-1]), file=sys.stderr)
            shutil.rmtree(run_dir)
    buckets = results[0]["build-samples"]["buckets"]
    scan = scan_rate(db, buckets)
    print(table(results))
    print(f"\nscan (1 DuckDB thread, the window's logs, one bucket kept): {scan}")
    if args.json:
        write_json(args.json, {"runs": results, "scan": scan})
    same = {r["build-samples"]["fingerprint"] for r in results}
    same_ids = {r["assign-ids"]["ids_sha256"] for r in results if "assign-ids" in r}
    if len(same) != 1 or len(same_ids) != 1:
        print(f"MISMATCH between configurations: {same} {same_ids}", file=sys.stderr)
        return 1
    return 0


def table(results: list[dict[str, Any]]) -> str:
    """Markdown: seconds per step and configuration, ratios to the single process."""
    base = results[0]
    header = (
        "configuration | cluster start s | validate s | build-samples s (rows/s) | phases s"
        " | assign-ids s | samples speed-up vs single | peak RSS of a worker MB (samples)"
    )
    rows = []

    def cell(r: dict[str, Any], step: str) -> str:
        return f"{r[step]['seconds']:.1f}" if step in r else "–"

    for r in results:
        b = r["build-samples"]
        start = "–" if r["cluster_start_s"] is None else f"{r['cluster_start_s']:.1f}"
        phases = ", ".join(
            f"{k.removeprefix('sample-')} {v:.1f} ({b['jobs'][k]})" for k, v in b["phases"].items()
        )
        rows.append(
            [
                r["config"],
                start,
                cell(r, "validate"),
                f"{b['seconds']:.1f} ({b['rows_per_s']:,})",
                phases,
                cell(r, "assign-ids"),
                f"{base['build-samples']['seconds'] / b['seconds']:.2f}",
                f"{b['peak_worker_rss_mb']:,}",
            ]
        )
    return markdown_table(header, rows)


if __name__ == "__main__":
    raise SystemExit(main())
