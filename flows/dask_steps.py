"""The data steps on a Dask cluster: each heavy stage's jobs as mapped Prefect tasks.

With ``dask`` (or ``dask_address``) set, ``tarq-daily`` runs validation (one job per chunk of
days), sample building (one job per user bucket) and the catalog's semantic-ID assignment
(one job per chunk of items) as subflows whose task runner is prefect-dask's
``DaskTaskRunner``: every job is a Prefect task run (retried on its own, visible in the UI)
executed by a Dask worker. The library side (``tarq.parallel``) knows nothing of either: the
stage takes a mapper, and :func:`prefect_mapper` is the one that maps over Prefect tasks.

:func:`cluster` gives the address of the cluster for one run: the existing one named by
``dask_address``, or a local cluster sized to the machine (one single-threaded worker process
per core unless ``dask_workers`` says otherwise) that is closed when the run ends. Workers
must read the warehouse file (and the lake, if any) and write the run's work folder: on a
real cluster both live on shared storage (README, "Beyond one machine").
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait

T = TypeVar("T")
R = TypeVar("R")

#: Retries of one job (a bucket, a chunk): a lost worker costs that job, not the stage.
JOB_RETRIES = 2
#: Share of a worker's memory limit that DuckDB may use in one job (the rest: Python, Arrow).
DUCKDB_MEMORY_SHARE = 0.6
#: Rows of whole days per shuffle job of the sample build: on a cluster the logs are shuffled
#: by user bucket first, so that each bucket job reads its own rows instead of the whole
#: window (measured faster already at 9 buckets: benchmarks/README.md, "Scale-out").
SHUFFLE_JOB_ROWS = 1_000_000


def prefect_mapper(fn: Callable[[T], R], jobs: Sequence[T], *, name: str) -> list[R]:
    """A :class:`tarq.parallel.Mapper`: one Prefect task run per job, on the current flow's
    task runner (a ``DaskTaskRunner`` in the subflows below); results in job order. It waits
    for every job before raising a failed one's error: a job still running holds the
    warehouse open read-only and writes into the stage's staging folder."""
    job_task = task(
        fn,
        name=name,
        # e.g. "sample-bucket: bucket 3/9", "validate-rows: impressions 2026-10-05.p2of3"
        task_run_name=f"{name}: {{job}}",
        cache_policy=NO_CACHE,
        retries=JOB_RETRIES,
    )
    futures = job_task.map(list(jobs))
    wait(futures)
    return [f.result() for f in futures]


@dataclass(frozen=True)
class WorkerResources:
    """DuckDB's and torch's threads and DuckDB's memory limit in a worker process, from the
    smallest worker (``None``: the engines' own defaults). Both engines keep one pool and one
    limit per process, shared by the jobs a worker with several threads runs at once."""

    threads: int
    memory_limit: str | None


def worker_resources(address: str) -> WorkerResources:
    """Threads and DuckDB memory of a worker process, from the smallest worker of the cluster
    (:class:`WorkerResources`)."""
    from distributed import Client

    with Client(address, timeout="30s") as client:
        workers = list(client.scheduler_info(n_workers=-1)["workers"].values())
    if not workers:
        raise RuntimeError(f"the Dask cluster at {address} has no workers")
    threads = min(int(w.get("nthreads") or 1) for w in workers)
    limits = [int(w.get("memory_limit") or 0) for w in workers]
    memory = f"{max(1, int(min(limits) * DUCKDB_MEMORY_SHARE) >> 20)}MB" if all(limits) else None
    return WorkerResources(threads=threads, memory_limit=memory)


@contextmanager
def cluster(address: str | None, enabled: bool, workers: int | None) -> Iterator[str | None]:
    """The scheduler address the run's data steps use: ``address`` (an existing cluster),
    else a local cluster when ``enabled`` (``workers`` processes of one thread each; default
    one per core, memory split evenly), else None (the steps run in this process)."""
    if address:
        yield address
        return
    if not enabled:
        yield None
        return
    from distributed import LocalCluster

    n = workers or os.cpu_count() or 1
    # Dask's INFO lines (dozens per run, from the scheduler, nannies and each worker process,
    # which reads this variable) would drown the run's log; warnings and errors still show.
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    logging.getLogger("distributed").setLevel(logging.WARNING)
    with LocalCluster(
        n_workers=n,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.WARNING,
    ) as local:
        yield local.scheduler_address


def _runner(address: str) -> Any:
    from prefect_dask import DaskTaskRunner

    return DaskTaskRunner(address=address)


@flow(name="validate-on-dask", description="Validation, one task per chunk of days.")
def _validate_flow(
    db: Path, run_date: str, docs_dir: Path, window_days: int, bounds: dict[str, Any] | None
) -> Any:
    from tarq.validation import ValidationBounds, validate

    return validate(
        db,
        run_date,
        docs_dir=docs_dir,
        window_days=window_days,
        bounds=ValidationBounds.from_overrides(bounds),
        mapper=prefect_mapper,
    )


@flow(
    name="samples-on-dask",
    description="Point-in-time samples: the logs shuffled by user bucket, then one task per bucket.",
)
def _samples_flow(
    db: Path,
    run_date: str,
    out_dir: Path,
    train_days: int,
    seq_len: int,
    min_count: int,
    threads: int,
    memory_limit: str | None,
) -> Any:
    from tarq.data.samples import build_samples

    return build_samples(
        db,
        run_date,
        out_dir,
        train_days=train_days,
        seq_len=seq_len,
        min_count=min_count,
        threads=threads,
        memory_limit=memory_limit,
        mapper=prefect_mapper,
        shuffle_rows=SHUFFLE_JOB_ROWS,
    )


@flow(name="assign-on-dask", description="Semantic IDs, one task per chunk of the catalog.")
def _assign_flow(
    db: Path,
    model_dir: Path,
    out_dir: Path,
    max_churn: float | None,
    max_collision_rate: float | None,
    threads: int,
) -> Any:
    from tarq.semantic_ids import assign_ids

    return assign_ids(
        db,
        model_dir,
        out_dir,
        progress=False,
        max_churn=max_churn,
        max_collision_rate=max_collision_rate,
        mapper=prefect_mapper,
        threads=threads,
    )


def validate(address: str, *args: Any) -> Any:
    """:func:`tarq.validation.validate` with its chunks of days mapped on the cluster."""
    return _validate_flow.with_options(task_runner=_runner(address))(*args)


def build_samples(address: str, *args: Any) -> Any:
    """:func:`tarq.data.samples.build_samples` with its user buckets mapped on the cluster
    (each job with the smallest worker's threads and a share of its memory)."""
    res = worker_resources(address)
    return _samples_flow.with_options(task_runner=_runner(address))(
        *args, res.threads, res.memory_limit
    )


def assign(address: str, *args: Any) -> Any:
    """:func:`tarq.semantic_ids.assign_ids` with its catalog chunks mapped on the cluster."""
    res = worker_resources(address)
    return _assign_flow.with_options(task_runner=_runner(address))(*args, res.threads)
