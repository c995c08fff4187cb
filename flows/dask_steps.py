"""The data steps on a Dask cluster: each heavy stage's jobs as mapped Prefect tasks.

With ``dask`` (or ``dask_address``) set, ``tarq-daily`` runs validation (one job per chunk of
days), sample building (the logs shuffled by user bucket in jobs of whole days, then one job
per bucket) and the catalog's semantic-ID assignment (one job per chunk of items) as subflows
``<step>-on-dask`` (:func:`run_step`) whose task runner is prefect-dask's ``DaskTaskRunner``:
every job is a Prefect task run (retried on its own, visible in the UI) executed by a Dask
worker. The library side (``tarq.runtime.parallel``) knows nothing of either: the
stage takes a mapper, and :func:`prefect_mapper` is the one that maps over Prefect tasks.

:func:`cluster` gives the address of the cluster for one run: the existing one named by
``dask_address``, or a local cluster sized to the machine (one single-threaded worker process
per core unless ``dask_workers`` says otherwise) that is closed when the run ends. Workers
must read the warehouse file (and the lake, if any) and write the run's work folder: on a
real cluster both live on shared storage (docs/operations.md, "Beyond one machine").
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
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
    """A :class:`tarq.runtime.parallel.Mapper`: one Prefect task run per job, on the current flow's
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


#: The data steps that can map on Dask: (module, function, what the step adds there, what
#: the subflow is). Each function takes a ``mapper``; ``threads``/``memory_limit`` where it
#: has them are sized from the workers.
STEPS: dict[str, tuple[str, str, dict[str, Any], str]] = {
    "validate": ("tarq.validation", "validate", {}, "Validation, one task per chunk of days."),
    "samples": (
        "tarq.data.samples",
        "build_samples",
        {"shuffle_rows": SHUFFLE_JOB_ROWS},
        "Point-in-time samples: the logs shuffled by user bucket, then one task per bucket.",
    ),
    "assign": (
        "tarq.ids.semantic_ids",
        "assign_ids",
        {},
        "Semantic IDs, one task per chunk of the catalog.",
    ),
}


def _step_function(step: str) -> Callable[..., Any]:
    module, name, _, _ = STEPS[step]
    return getattr(importlib.import_module(module), name)


def run_step(address: str | None, step: str, **kwargs: Any) -> Any:
    """The data step ``step`` (:data:`STEPS`) called with ``kwargs``: here, one job after the
    other, when ``address`` is None; else as the subflow ``<step>-on-dask`` whose jobs are
    Prefect tasks on the Dask cluster at ``address`` (the same result)."""
    if not address:
        return _step_function(step)(**kwargs)
    return _on_dask.with_options(
        name=f"{step}-on-dask", description=STEPS[step][3], task_runner=_runner(address)
    )(step, kwargs, address)


@flow(name="data-step-on-dask")  # named <step>-on-dask by run_step
def _on_dask(step: str, kwargs: dict[str, Any], address: str) -> Any:
    fn = _step_function(step)
    takes = inspect.signature(fn).parameters
    sized = {}
    if {"threads", "memory_limit"} & set(takes):
        res = dataclasses.asdict(worker_resources(address))
        sized = {k: v for k, v in res.items() if k in takes}
    return fn(**kwargs, **STEPS[step][2], **sized, mapper=prefect_mapper)
