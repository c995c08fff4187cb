"""The model version a server answers with, and a thread that follows the champion.

``tarq serve --follow`` keeps one :class:`Live` per process. A request reads
``live.current`` once and is answered wholly by that :class:`Loaded` (the model and the ID
table of one publication: a registered scorer carries both), so a swap can never mix two
versions in one response. :class:`Follower` polls a source for the version that should be
served (e.g. the registry alias ``models:/tarq@champion``); when it changes, the new version is
loaded *beside* the old one — with the loader's checks, the weights↔IDs sha256 among them —
warmed up, and only then swapped in with one reference assignment. A failed load keeps the old
version serving and is reported (``live.status()``, the server's ``/ready``); the follower tries
that version again after ``retry_s``. Rolling the alias back is followed the same way.

No MLflow here: the source and the loader are functions
(:func:`tarq.serving.loading.registry_source` builds them for a registered model).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tarq.serving import Scorer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Loaded:
    """One servable version.

    Attributes:
        scorer: the model with its ID table.
        version: what answered, in every response (the registered model version, or the
            source's name when not following).
        ids_version: the published ID table's version the scorer was built from, if known.
        loaded_at: UNIX time the load finished.
    """

    scorer: Scorer
    version: str
    ids_version: int | None = None
    loaded_at: float = field(default_factory=time.time)


class Live:
    """The version answering requests now; swapped whole (one attribute store)."""

    def __init__(self, loaded: Loaded | None = None, source: str = "") -> None:
        self.current: Loaded | None = loaded
        self.source = source
        self.error: str | None = None
        self.failed_version: str | None = None
        self.checked_at: float | None = None
        self.swaps = 0

    def swap(self, loaded: Loaded) -> None:
        """Serve ``loaded`` from the next request on; requests in flight finish with theirs."""
        self.current = loaded
        self.swaps += 1

    def status(self) -> dict[str, Any]:
        """What ``/ready`` answers: ready, version, ids_version, source and the follower's
        last check and error (a failed load keeps the previous version serving)."""
        cur = self.current
        return {
            "ready": cur is not None,
            "version": None if cur is None else cur.version,
            "ids_version": None if cur is None else cur.ids_version,
            "items": None if cur is None else cur.scorer.n_items,
            "source": self.source,
            "loaded_at": None if cur is None else cur.loaded_at,
            "checked_at": self.checked_at,
            "swaps": self.swaps,
            "error": self.error,
        }


#: Niceness added to whatever loads a new version: the follower thread when it loads in the
#: serving process, the child process when :mod:`tarq.serving.loading` loads in one.
LOAD_NICENESS = 10


def _lower_own_priority(niceness: int) -> None:
    """Lower the calling thread's CPU priority by ``niceness`` (Linux: a thread is a task with
    its own nice value), so that loading and warming up a new version competes less with the
    requests the old version is answering on a machine with few cores. It does not help
    against the GIL, only against the scheduler. Elsewhere, or if refused, a no-op."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + niceness)
    except (AttributeError, OSError):
        pass


class Follower(threading.Thread):
    """Polls ``resolve()`` every ``poll_s`` seconds and swaps in ``load(version)`` on a change.

    Args:
        live: the process's :class:`Live`.
        resolve: the version that should be served now (e.g. the alias's model version).
        load: a version → its :class:`Loaded` (raises when it cannot be served).
        poll_s: seconds between checks.
        retry_s: a version that failed to load is tried again after this long.
        niceness: added to this thread's nice value. 0 when ``load`` runs in a child process
            (niced itself): a low-priority thread that still holds the GIL at times, e.g.
            while it reads the child's export, would keep the serving threads waiting when
            the scheduler preempts it.
    """

    def __init__(
        self,
        live: Live,
        resolve: Callable[[], str],
        load: Callable[[str], Loaded],
        poll_s: float = 10.0,
        retry_s: float = 60.0,
        niceness: int = LOAD_NICENESS,
    ) -> None:
        super().__init__(name="champion-follower", daemon=True)
        self.live, self.resolve, self.load = live, resolve, load
        self.poll_s, self.retry_s, self.niceness = poll_s, retry_s, niceness
        self.stopped = threading.Event()
        self._failed_at = 0.0

    def check(self) -> bool:
        """One check: True when a new version was swapped in."""
        live = self.live
        try:
            target = str(self.resolve())
        except Exception as exc:  # the registry is down: keep serving, say so
            live.error = f"cannot resolve {live.source}: {exc}"
            log.warning("%s", live.error)
            return False
        finally:
            live.checked_at = time.time()
        cur = live.current
        if cur is not None and cur.version == target:  # e.g. the alias came back to it
            live.error, live.failed_version = None, None
            return False
        if target == live.failed_version and time.time() - self._failed_at < self.retry_s:
            return False
        try:
            loaded = self.load(target)
        except Exception as exc:
            live.error = (
                f"version {target} not loaded, still serving "
                + (f"{cur.version}" if cur is not None else "nothing")
                + f": {type(exc).__name__}: {exc}"
            )
            live.failed_version, self._failed_at = target, time.time()
            log.error("%s", live.error)
            return False
        previous = None if cur is None else cur.version
        live.swap(loaded)
        live.error, live.failed_version = None, None
        log.info("now serving version %s (was %s)", loaded.version, previous)
        return True

    def run(self) -> None:
        if self.niceness:
            _lower_own_priority(self.niceness)
        while not self.stopped.wait(self.poll_s):
            self.check()

    def stop(self) -> None:
        self.stopped.set()
