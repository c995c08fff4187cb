"""One daily run per warehouse at a time: an exclusive lock file beside the DuckDB file.

Two runs of the job on the same warehouse (a scheduled run and a manual one, two workers
without the deployment's concurrency limit, a backfill started twice) must not both train,
register and publish the same run date. The Prefect deployment's ``concurrency_limit: 1``
only covers runs through that deployment; this lock covers every path, including
``python -m flows.tarq_daily`` without a server. DuckDB allows one writing process per file
anyway, so the lock is per warehouse, not per run date: a second run waits (up to
``wait_s``) or is refused with the holder named, and after waiting it finds the date done.

The lock is ``flock(2)`` on ``<warehouse>.run.lock``: the kernel drops it when its holder
exits, also on SIGKILL, so a crashed run never leaves a stale lock behind. The file is
never deleted (deleting a lock file races with a process about to lock it); it holds the
holder's pid, host, start time and what it runs, for the refusal message.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class LockBusyError(RuntimeError):
    """The lock is held by another run (the message names the holder and the lock file)."""

    def __init__(self, path: Path, holder: Mapping[str, Any], waited_s: float) -> None:
        self.path = Path(path)
        self.holder = dict(holder)
        self.waited_s = waited_s
        who = ", ".join(f"{k} {v}" for k, v in self.holder.items()) or "holder unknown"
        wait = f" after waiting {waited_s:.1f}s" if waited_s > 0 else ""
        super().__init__(f"another run holds {self.path} ({who}); refused{wait}")


def warehouse_lock_path(db_path: str | Path) -> Path:
    """The lock file of a warehouse: ``<db>.run.lock`` beside the DuckDB file."""
    db = Path(db_path).resolve()
    return db.with_name(f"{db.name}.run.lock")


def _holder(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@contextmanager
def exclusive_lock(
    path: str | Path,
    wait_s: float = 0.0,
    info: Mapping[str, Any] | None = None,
    poll_s: float = 0.2,
) -> Iterator[Path]:
    """Hold an exclusive ``flock`` on ``path`` for the ``with`` block.

    Args:
        path: the lock file (created when missing, never deleted).
        wait_s: how long to wait for a busy lock; 0 refuses at once.
        info: what the holder runs (e.g. ``{"run_date": "2026-10-09"}``), written into the
            file with pid, host and start time for whoever is refused.
        poll_s: how often a waiting caller retries.

    Raises:
        LockBusyError: the lock is still held by another process (or another open of the
            same file in this process) after ``wait_s`` seconds.
    """
    if wait_s < 0:
        raise ValueError(f"wait_s must be >= 0, got {wait_s}")
    lock = Path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        started = time.monotonic()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - started
                if waited >= wait_s:
                    raise LockBusyError(lock, _holder(lock), waited) from None
                time.sleep(min(poll_s, max(wait_s - waited, 0.01)))
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            **(info or {}),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record, default=str).encode(), 0)
        try:
            yield lock
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
