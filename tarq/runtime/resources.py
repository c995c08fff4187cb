"""Peak memory of a block of work: this process's resident set, sampled while it runs.

``resource.getrusage`` only gives the process's high-water mark since it started, so a stage
that stays under an earlier stage's peak would show that peak. :class:`PeakRss` samples the
current resident set (``/proc/self/statm``) on a background thread and keeps the block's own
maximum; a spike shorter than the sampling interval can be missed. Work done in other
processes (a Dask cluster, a torchrun) is not counted.
"""

from __future__ import annotations

import os
import resource
import threading
from types import TracebackType

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def current_rss_bytes() -> int:
    """The resident set size of this process now (the high-water mark where /proc is absent)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakRss:
    """Context manager: ``peak_mb`` is the largest resident set seen while the block ran.

    Args:
        interval_s: seconds between samples.
    """

    def __init__(self, interval_s: float = 0.05) -> None:
        self.interval_s = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, current_rss_bytes())

    def __enter__(self) -> PeakRss:
        self.peak = current_rss_bytes()
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, name="peak-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, current_rss_bytes())

    @property
    def peak_mb(self) -> float:
        """The peak in MiB, one decimal."""
        return round(self.peak / 2**20, 1)
