"""PeakRss: a block's own peak resident set, not the process's high-water mark."""

from __future__ import annotations

import json
import subprocess
import sys

# Run in a fresh interpreter: inside a long test session the allocator may keep a freed block
# mapped (seen: the whole suite's process at 1.86 GB kept the 300 MiB), which says nothing
# about PeakRss itself.
_PROBE = """
import json, time
import numpy as np
from tarq.runtime.resources import PeakRss, current_rss_bytes

base = current_rss_bytes() / 2**20
with PeakRss(interval_s=0.01) as big:
    block = np.ones(300 * 2**20 // 8)  # 300 MiB, touched
    time.sleep(0.1)
    del block
with PeakRss(interval_s=0.01) as small:
    time.sleep(0.05)
print(json.dumps({"base": base, "big": big.peak_mb, "small": small.peak_mb}))
"""


def test_peak_rss_sees_a_transient_allocation_and_only_its_own_block() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, timeout=120
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    base, big, small = got["base"], got["big"], got["small"]
    assert big > base + 250, (base, big)
    # The freed 300 MiB are not this block's: the high-water mark would have said so.
    assert small < big - 200, (small, big)
