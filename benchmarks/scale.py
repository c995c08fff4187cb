"""Benchmark: the daily job's heavy stages end to end on one machine, per demo preset.

Usage::

    python benchmarks/scale.py --preset small medium large --work outputs/bench-scale \\
        --json benchmarks/scale.json

For each preset it runs, each stage as its own ``tarq`` process under ``/usr/bin/time -v`` (so
the peak RSS is that stage's own, not the sum of everything before it):

    demo-data → validate → build-samples → train TARQ (bounded steps) → assign-ids → publish

and records wall seconds, peak RSS and the stage's main figure (rows generated, samples built,
samples/s, catalog items assigned, rows published). A stage that fails stops its preset and is
reported with its exit code and the tail of its stderr; the table still prints. The warehouse of
a preset is reused when it already holds its logs (``--fresh`` regenerates).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tarq.defaults import DEMO_REFERENCE_START, DEMO_SEED, PRESETS, TRAIN_DAYS
from tarq.telemetry import TELEMETRY_OFF

REPO = Path(__file__).resolve().parents[1]
TIME = "/usr/bin/time"


def timed(cmd: list[str], log: Path) -> dict[str, Any]:
    """Run ``cmd`` under ``/usr/bin/time -v``; wall seconds, peak RSS (MB), exit code, output."""
    t0 = time.perf_counter()
    proc = subprocess.run([TIME, "-v", *cmd], capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t0
    log.write_text(f"$ {' '.join(cmd)}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    return {
        "seconds": round(wall, 1),
        "peak_rss_mb": round(int(rss.group(1)) / 1024) if rss else None,
        "rc": proc.returncode,
        "stdout": proc.stdout,
        "stderr_tail": proc.stderr[-1500:],
    }


def last_json(text: str) -> dict[str, Any]:
    """The last top-level JSON object printed by a ``tarq`` command."""
    start = text.rfind("\n{")
    start = 0 if start < 0 and text.startswith("{") else start + 1
    return json.loads(text[start:])


def run_preset(preset: str, work: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """All stages of one preset; one record per stage."""
    tarq = [sys.executable, "-m", "tarq.cli"]
    pdir = work / preset
    db = pdir / "tarq.duckdb"
    if args.fresh and pdir.exists():
        shutil.rmtree(pdir)
    pdir.mkdir(parents=True, exist_ok=True)
    logs = pdir / "logs"
    logs.mkdir(exist_ok=True)
    rows: list[dict[str, Any]] = []

    def stage(name: str, cmd: list[str], figure: Any = None) -> dict[str, Any] | None:
        r = timed(cmd, logs / f"{name}.log")
        rec = {
            "preset": preset,
            "stage": name,
            "seconds": r["seconds"],
            "peak_rss_mb": r["peak_rss_mb"],
            "rc": r["rc"],
        }
        if r["rc"] != 0:
            rec["error"] = r["stderr_tail"]
            rows.append(rec)
            print(json.dumps(rec), flush=True)
            return None
        if figure is not None:
            rec.update(figure(r["stdout"]))
        rows.append(rec)
        print(json.dumps(rec), flush=True)
        return r

    def gen_fig(out: str) -> dict[str, Any]:
        if "not regenerating" in out:
            return {"figure": "reused existing logs"}
        rep = last_json(out)
        return {
            "figure": f"{rep['rows']['impressions']:,} impressions, "
            f"{rep['rows']['behaviors']:,} behaviours, {rep['rows']['items']:,} items"
        }

    if (
        stage(
            "demo-data",
            [
                *tarq,
                "demo-data",
                "--db",
                str(db),
                "--preset",
                preset,
                "--seed",
                str(args.seed),
                "--start-date",
                DEMO_REFERENCE_START,
                "--if-missing",
            ],
            gen_fig,
        )
        is None
    ):
        return rows

    last_day = _last_day(db)
    run_date = str(last_day + dt.timedelta(days=1))

    def val_fig(out: str) -> dict[str, Any]:
        return {"figure": out.strip().splitlines()[0][:120] if out.strip() else ""}

    if (
        stage(
            "validate",
            [
                *tarq,
                "validate",
                "--db",
                str(db),
                "--run-date",
                run_date,
                "--docs-dir",
                str(pdir / "gx"),
            ],
            val_fig,
        )
        is None
    ):
        return rows

    sdir = pdir / "samples"
    if sdir.exists():
        shutil.rmtree(sdir)

    def samples_fig(out: str) -> dict[str, Any]:
        rep = last_json(out)
        return {
            "figure": f"{rep['rows']:,} samples ({rep['train_rows']:,} train, "
            f"{rep['test_rows']:,} test), {rep['rows_per_s']:,.0f} rows/s"
        }

    if (
        stage(
            "build-samples",
            [
                *tarq,
                "build-samples",
                "--db",
                str(db),
                "--run-date",
                run_date,
                "--out",
                str(sdir),
                "--train-days",
                str(args.train_days),
            ],
            samples_fig,
        )
        is None
    ):
        return rows

    mdir = pdir / "model"
    if mdir.exists():
        shutil.rmtree(mdir)

    def train_fig(out: str) -> dict[str, Any]:
        m = json.loads((mdir / "metrics.json").read_text())
        sps = m.get("samples_per_s") or m.get("train", {}).get("samples_per_s")
        test = m.get("test", {})
        return {
            "figure": f"{args.max_steps} steps × batch {args.batch_size}: "
            f"{sps:,.0f} samples/s, test AUC {test.get('auc', float('nan')):.4f}"
        }

    cfg = pdir / "train.json"
    cfg.write_text(
        json.dumps(
            {
                "train": {
                    "batch_size": args.batch_size,
                    "epochs": 1,
                    "max_steps_per_epoch": args.max_steps,
                    "threads": args.threads,
                }
            }
        )
    )
    if (
        stage(
            "train",
            [
                *tarq,
                "train",
                "--samples",
                str(sdir),
                "--model",
                "tarq",
                "--out",
                str(mdir),
                "--config",
                str(cfg),
                "--no-resume",
            ],
            train_fig,
        )
        is None
    ):
        return rows

    ids = pdir / "ids"

    def ids_fig(out: str) -> dict[str, Any]:
        h = json.loads((ids / "health.json").read_text())
        return {
            "figure": f"{h.get('catalog_size', 0):,} items, "
            f"{h['timing']['items_per_s']:,.0f} items/s, "
            f"collision rate {h.get('collision_rate', float('nan')):.4f}"
        }

    if (
        stage(
            "assign-ids",
            [*tarq, "assign-ids", "--db", str(db), "--model", str(mdir), "--out", str(ids)],
            ids_fig,
        )
        is None
    ):
        return rows

    def pub_fig(out: str) -> dict[str, Any]:
        rep = last_json(out)
        return {"figure": f"version {rep.get('version')}, {rep['manifest']['rows']:,} rows"}

    stage(
        "publish",
        [
            *tarq,
            "publish",
            "--db",
            str(db),
            "--ids",
            str(ids),
            "--run-date",
            run_date,
            "--export-dir",
            str(pdir / "published"),
        ],
        pub_fig,
    )
    return rows


def _last_day(db: Path) -> dt.date:
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT max(ts)::DATE FROM impressions").fetchone()[0]
    finally:
        con.close()


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--preset", nargs="+", default=["small", "medium", "large"], choices=PRESETS)
    p.add_argument("--work", type=Path, default=REPO / "outputs" / "bench-scale")
    p.add_argument("--seed", type=int, default=DEMO_SEED)
    p.add_argument("--train-days", type=int, default=TRAIN_DAYS)
    p.add_argument("--max-steps", type=int, default=200, help="training steps (one epoch)")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--fresh", action="store_true", help="regenerate the logs of each preset")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    if not Path(TIME).exists():
        print(f"{TIME} not found (apt-get install time)", file=sys.stderr)
        return 2
    os.environ.update(TELEMETRY_OFF)
    rows: list[dict[str, Any]] = []
    for preset in args.preset:
        rows += run_preset(preset, args.work.resolve(), args)
    print("\n| preset | stage | wall s | peak RSS MB | figure |")
    print("|---|---|---|---|---|")
    for r in rows:
        fig = r.get("figure", "") if r["rc"] == 0 else f"FAILED rc={r['rc']}"
        print(
            f"| {r['preset']} | {r['stage']} | {r['seconds']:,.1f} | {r['peak_rss_mb'] or '-':,} "
            f"| {fig} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0 if all(r["rc"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
