"""Benchmark: the first validation of a training window, time and peak memory, per variant.

Usage::

    python benchmarks/validation_window.py --db outputs/bench-validation/medium.duckdb \\
        --work outputs/bench-validation [--base /tmp/val-base] [--json out.json]

The warehouse (``tarq demo-data --preset medium --seed 7``: ~2.2M impressions, ~3.8M behaviours
over ~22 days) is generated once into ``--db`` and reused. Each variant then validates a fresh
copy of it (the first window validation: no day validated yet, so every day of the window is
checked) with a fresh GX context, in a child process of its own; the child reports its wall time
and its own peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``). Variants:

* ``test day only``: ``window_days=0``, D − 1 alone (what a run checked before the window);
* ``window, chunked by day``: ``window_days=19``, ``max_chunk_rows=0`` (one day a chunk);
* ``window, default chunks``: ``window_days=19``, ``max_chunk_rows`` at its default;
* ``window, one frame (base)``: ``window_days=19`` with the code of ``--base``, a checkout of
  the commit before the row checks were chunked (``git worktree add --detach DIR <commit>``):
  the whole window's rows in one pandas frame. Skipped without ``--base``.

``--only day default`` runs a subset. Ratios are to ``test day only``. Every variant must agree on what it found (success, days,
rows flagged and quarantined); the table says so.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from _harness import Stopwatch, load_average, markdown_table, quiet_check, write_json

from tarq.defaults import DEMO_REFERENCE_START, TRAIN_DAYS
from tarq.runtime.telemetry import TELEMETRY_OFF

REPO = Path(__file__).resolve().parents[1]

#: The child: validates a copy, prints one JSON line. Only uses the API the base commit has.
CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import tarq
from tarq.validation import ValidationBounds, validate
db, docs, run_date, window, chunk = sys.argv[1:6]
kw = {} if chunk == "-" else {"bounds": ValidationBounds(max_chunk_rows=int(chunk))}
t1 = time.perf_counter()
r = validate(db, run_date, docs_dir=docs, window_days=int(window), **kw)
t2 = time.perf_counter()
print(json.dumps({
    "import_s": t1 - t0, "validate_s": t2 - t1,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "success": r.success, "days": len(r.days), "flagged": r.flagged,
    "quarantined": r.quarantined, "failed": r.to_dict()["failed"],
    "tarq": tarq.__file__,
    "rows_checked": {c.table: c.observed.get("rows_checked") for c in r.checks
                     if c.level == "row"},
}))
"""


def uptime() -> str:
    """``uptime``'s line (the machine's load when the benchmark ran)."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load unknown: " + " ".join(f"{x:.2f}" for x in load_average(None) or [])


def ensure_db(db: Path, preset: str, seed: int) -> dict[str, Any]:
    """Generate the demo warehouse once (reused when it exists); its row counts and days."""
    if not db.exists():
        db.parent.mkdir(parents=True, exist_ok=True)
        clock = Stopwatch()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "tarq.cli",
                "demo-data",
                "--db",
                str(db),
                "--preset",
                preset,
                "--seed",
                str(seed),
                "--start-date",
                DEMO_REFERENCE_START,
            ],
            check=True,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
        )
        print(f"generated {preset} into {db} in {clock.seconds:.0f}s", flush=True)
    import duckdb

    with duckdb.connect(str(db), read_only=True) as con:
        n_imp, first, last = con.execute(
            "SELECT count(*), min(ts)::DATE, max(ts)::DATE FROM impressions"
        ).fetchone()
        (n_beh,) = con.execute("SELECT count(*) FROM behaviors").fetchone()
    return {
        "impressions": n_imp,
        "behaviors": n_beh,
        "first_day": str(first),
        "last_day": str(last),
    }


def run_variant(
    name: str, code: Path, db: Path, work: Path, run_date: str, window: int, chunk: int | None
) -> dict[str, Any]:
    """One variant in a fresh child process on a fresh copy of the warehouse."""
    vdir = work / name.replace(" ", "_").replace(",", "").replace("(", "").replace(")", "")
    shutil.rmtree(vdir, ignore_errors=True)
    vdir.mkdir(parents=True)
    copy = vdir / "w.duckdb"
    shutil.copy(db, copy)
    env = {**os.environ, **TELEMETRY_OFF, "PYTHONPATH": str(code)}
    env.pop("TARQ_SQL_DIR", None)
    cmd = [
        sys.executable,
        "-c",
        CHILD,
        str(copy),
        str(vdir / "gx"),
        run_date,
        str(window),
        "-" if chunk is None else str(chunk),
    ]
    clock = Stopwatch()
    # cwd = the code tree: its tarq/ comes first on sys.path, before the editable install.
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=code, env=env)
    wall = clock.seconds
    (vdir / "child.log").write_text(proc.stdout + "\n--- stderr\n" + proc.stderr)
    if proc.returncode:
        return {"variant": name, "rc": proc.returncode, "error": proc.stderr[-1500:]}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    shutil.rmtree(vdir / "gx", ignore_errors=True)
    copy.unlink()
    commit = subprocess.run(
        ["git", "-C", str(code), "log", "-1", "--format=%h %s"], capture_output=True, text=True
    ).stdout.strip()[:72]
    if not out["tarq"].startswith(str(code)):
        raise RuntimeError(f"{name}: the child imported {out['tarq']}, not the code of {code}")
    return {"variant": name, "rc": 0, "wall_s": wall, "code": str(code), "commit": commit, **out}


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", type=Path, required=True, help="the cached demo warehouse")
    ap.add_argument("--work", type=Path, default=Path("outputs/bench-validation"))
    ap.add_argument("--preset", default="medium")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--train-days", type=int, default=TRAIN_DAYS)
    ap.add_argument(
        "--base",
        type=Path,
        default=None,
        help="checkout of the commit before chunking (the one-frame variant)",
    )
    ap.add_argument(
        "--only",
        nargs="+",
        default=None,
        metavar="VARIANT",
        help="run only these variants: day, by-day, default, base",
    )
    ap.add_argument("--json", type=Path, default=None)
    return ap


def _variants(
    ap: argparse.ArgumentParser, args: argparse.Namespace
) -> list[tuple[str, Path, int, int | None]]:
    """The variants to run, (name, code tree, window days, max chunk rows): all of them, or
    those of ``--only``."""
    variants: list[tuple[str, Path, int, int | None]] = [
        ("test day only", REPO, 0, None),
        ("window, chunked by day", REPO, args.train_days, 0),
        ("window, default chunks", REPO, args.train_days, None),
    ]
    if args.base is not None:
        variants.append(("window, one frame (base)", args.base.resolve(), args.train_days, None))
    if args.only:
        keys = dict(
            zip(["day", "by-day", "default", "base"], [v[0] for v in variants], strict=False)
        )
        unknown = set(args.only) - set(keys)
        if unknown:
            ap.error(f"unknown variants {sorted(unknown)} (choose from {sorted(keys)})")
        variants = [v for v in variants if v[0] in {keys[k] for k in args.only}]
    return variants


def _agree(results: list[dict[str, Any]]) -> bool:
    """Whether the window variants that ran found the same (success, days, flagged and
    quarantined rows)."""
    window_runs = [r for r in results if r["rc"] == 0 and r["variant"] != "test day only"]
    return (
        len(
            {
                json.dumps(
                    [r["success"], r["days"], r["flagged"], r["quarantined"]], sort_keys=True
                )
                for r in window_runs
            }
        )
        <= 1
    )


TABLE_HEADER = (
    "variant | days | impressions checked | wall s | validate s | peak RSS MB | wall × | RSS ×"
)


def _table_rows(results: list[dict[str, Any]]) -> list[list[object] | str]:
    """The table's row per variant, its ratios to ``test day only`` (a failed one as text)."""
    ref = next((r for r in results if r["variant"] == "test day only" and not r["rc"]), None)
    rows: list[list[object] | str] = []
    for r in results:
        if r["rc"]:
            rows.append(f"| {r['variant']} | failed (rc {r['rc']}) | | | | | | |")
            continue
        wx = f"{r['wall_s'] / ref['wall_s']:.2f}" if ref else "-"
        mx = f"{r['peak_rss_mb'] / ref['peak_rss_mb']:.2f}" if ref else "-"
        rows.append(
            [
                r["variant"],
                r["days"],
                f"{r['rows_checked'].get('impressions', 0):,}",
                f"{r['wall_s']:.1f}",
                f"{r['validate_s']:.1f}",
                f"{r['peak_rss_mb']:,.0f}",
                wx,
                mx,
            ]
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)

    quiet_check()
    load_before = uptime()
    data = ensure_db(args.db.resolve(), args.preset, args.seed)
    last = data["last_day"]
    import datetime as dt

    run_date = str(dt.date.fromisoformat(last) + dt.timedelta(days=1))
    variants = _variants(ap, args)
    work = args.work.resolve()
    results = []
    for name, code, window, chunk in variants:
        print(f"running {name} ...", flush=True)
        results.append(run_variant(name, code, args.db.resolve(), work, run_date, window, chunk))
    load_after = uptime()

    agree = _agree(results)
    print(
        f"\n{args.preset} preset: {data['impressions']:,} impressions, "
        f"{data['behaviors']:,} behaviours, {data['first_day']}..{data['last_day']}; "
        f"run date {run_date}, train_days {args.train_days}"
    )
    print(f"load before: {load_before}\nload after:  {load_after}\n")
    print(markdown_table(TABLE_HEADER, _table_rows(results), "lrrrrrrr"))
    print(f"\nwindow variants agree on success, days, flagged and quarantined rows: {agree}")
    for r in results:
        if not r["rc"]:
            print(f"{r['variant']}: code {r['code']} (HEAD {r['commit']})")
    for r in results:
        if r["rc"]:
            print(f"\n{r['variant']} failed:\n{r['error']}")
    if args.json:
        write_json(
            args.json,
            {
                "data": data,
                "run_date": run_date,
                "load_before": load_before,
                "load_after": load_after,
                "agree": agree,
                "results": results,
            },
        )
    return 0 if all(r["rc"] == 0 for r in results) and agree else 1


if __name__ == "__main__":
    sys.exit(main())
