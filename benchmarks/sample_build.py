"""Benchmark: point-in-time sample building, rows/s and peak memory, by log size.

Usage::

    python benchmarks/sample_build.py --impressions 1000000 10000000 --json out.json

Each size runs in its own process (so peak RSS is that build's own) on synthetic uniform logs
(3 behaviours per impression, 20 days, one user per 50 impressions) written by ``sql/bench``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from _harness import Stopwatch, markdown_table, quiet_check, write_json

from tarq.data.samples import build_samples
from tarq.defaults import SEQ_LEN, TRAIN_DAYS
from tarq.store import sqlfiles
from tarq.store.warehouse import connect

START = dt.datetime(2026, 10, 1)
DAYS = 20


def make_logs(db: Path, n_impressions: int) -> None:
    n_users = max(1000, n_impressions // 50)
    params = {
        "n_items": 200_000,
        "n_users": n_users,
        "n_impressions": n_impressions,
        "n_behaviors": 3 * n_impressions,
        "days": DAYS,
        "start": START,
    }
    con = connect(db)
    for name in ("items", "users", "impressions", "behaviors"):
        sqlfiles.run(con, f"bench/synthetic_{name}", params)
    con.close()


def one(n_impressions: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.duckdb"
        clock = Stopwatch()
        make_logs(db, n_impressions)
        gen_s = clock.seconds
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        report = build_samples(
            db,
            (START + dt.timedelta(days=DAYS)).date(),
            Path(tmp) / "samples",
            train_days=TRAIN_DAYS,
            seq_len=SEQ_LEN,
            threads=threads,
        )
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "impressions": n_impressions,
        "rows": report.rows,
        "build_seconds": report.seconds,
        "rows_per_s": report.rows_per_s,
        "peak_rss_mb": round(peak / 1024, 1),
        "rss_before_build_mb": round(rss_before / 1024, 1),
        "generate_seconds": round(gen_s, 1),
        "threads": threads,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--impressions", type=int, nargs="+", default=[1_000_000, 10_000_000])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        print(json.dumps(one(args.child, args.threads)))
        return 0
    quiet_check()
    results = []
    for n in args.impressions:
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(n), "--threads", str(args.threads)],
            check=True,
            capture_output=True,
            text=True,
        )
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]))
    base = results[0]
    header = "impressions | rows/s | build s | peak RSS MB | rows/s ratio to first"
    cells = [
        [
            f"{r['impressions']:,}",
            f"{r['rows_per_s']:,.0f}",
            f"{r['build_seconds']:.1f}",
            f"{r['peak_rss_mb']:,.0f}",
            f"{r['rows_per_s'] / base['rows_per_s']:.2f}",
        ]
        for r in results
    ]
    print("\n" + markdown_table(header, cells))
    if args.json:
        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
