"""PeakRss: a block's own peak resident set, not the process's high-water mark."""

from __future__ import annotations

import time

import numpy as np

from tarq.resources import PeakRss, current_rss_bytes


def test_peak_rss_sees_a_transient_allocation_and_only_its_own_block() -> None:
    base = current_rss_bytes() / 2**20
    with PeakRss(interval_s=0.01) as big:
        block = np.ones(300 * 2**20 // 8)  # 300 MiB, touched
        time.sleep(0.1)
        del block
    with PeakRss(interval_s=0.01) as small:
        time.sleep(0.05)
    assert big.peak_mb > base + 250, (base, big.peak_mb)
    # The freed 300 MiB are not this block's: the high-water mark would have said so.
    assert small.peak_mb < big.peak_mb - 200, (small.peak_mb, big.peak_mb)
