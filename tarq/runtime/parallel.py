"""How the data steps run their independent pieces: in this process, or on an engine the
caller supplies.

The heavy data steps (sample building over user buckets, catalog ID assignment over item
chunks, validation over days) are written as a plan, a list of self-contained jobs and a
merge. A job is a picklable value and its function a module-level function that opens the
warehouse itself (read-only), so the jobs can run in other processes or on other machines.
:func:`serial_map` runs them one after the other here (the default, and what every command
does); ``flows/`` passes a mapper that runs each job as a Prefect task on a Dask cluster.
The library never imports Prefect or Dask for this.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")
D = TypeVar("D")


class Mapper(Protocol):
    """``mapper(fn, jobs, name=...)`` → ``[fn(job) for job in jobs]``, in the order of ``jobs``,
    wherever it runs them; ``name`` names the kind of job (a task name, a log line). A job that
    fails raises its error from the mapper, once every job has ended: the caller cleans up
    or writes the warehouse next, which a job still running would be in the way of (it holds
    the DuckDB file open read-only and writes into the step's staging folder)."""

    def __call__(self, fn: Callable[[T], R], jobs: Sequence[T], *, name: str) -> list[R]: ...


def serial_map(fn: Callable[[T], R], jobs: Sequence[T], *, name: str) -> list[R]:
    """Run every job in this process, one after the other (the default :class:`Mapper`)."""
    del name
    return [fn(job) for job in jobs]


def group_days(days: Iterable[tuple[D, int]], limit: int) -> list[list[D]]:
    """Consecutive days, in order, in runs holding at most ``limit`` rows together (a day
    holding more is a run of its own; ``limit`` 0: a day a run): how a data step cuts its
    days into jobs. ``days``: ``(day, rows)`` in order."""
    runs: list[list[D]] = []
    run: list[D] = []
    n = 0
    for day, rows in days:
        if run and n + rows > limit:
            runs.append(run)
            run, n = [], 0
        run.append(day)
        n += rows
    if run:
        runs.append(run)
    return runs
