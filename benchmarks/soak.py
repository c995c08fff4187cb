"""Benchmark: the daily loop for a month — demo feed + tarq-daily on consecutive days.

Usage::

    python benchmarks/soak.py --out /tmp/soak --days 30 --markdown
    python benchmarks/soak.py --out /tmp/soak --resume --markdown   # after an interruption
    python benchmarks/soak.py --out /tmp/soak-medium --preset medium --days 2 --keep-days 1 \
        --params '{"max_steps_per_epoch": 1000}'                     # retention on medium

On a fresh ``small`` demo warehouse (22 days of logs, seed 7) under ``OUT``, with its own MLflow
store, Prefect home and work folder: run date 1 trains cold (``--epochs``), then every day the
demo feed appends the day that just ended (``tarq demo-data --next-day``) and the daily job
(``python -m flows.tarq_daily``, the command the deployment runs) continues yesterday's models
on it, with retention on (``--keep-days``). Each process starts fresh, as a scheduled run does.

Per run date it records: the feed's and the job's wall seconds, the job's seconds and peak RSS
per stage (``summary.json``), the bytes of the warehouse, the MLflow store, the work folder and
the Prefect home, the ID churn, TARQ / TT / previous champion AUC on the test day, the gate's
decision and what retention freed. ``OUT/results.json`` is rewritten after every day (so an
interrupted soak keeps its days; ``--resume`` continues it). With ``--markdown`` it prints the
table and the flatness check for ``benchmarks/README.md``: the last week's mean per-day job
time and peak RSS against the first warm week's (goal ≤ 1.2×), disk against retention's bound.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from _harness import (
    Stopwatch,
    demo_warehouse,
    job_env,
    machine_line,
    markdown_table,
    quiet_check,
    write_json,
)

from flows.retention import dir_bytes
from flows.tasks import PUBLISHED_PREDICTIONS
from tarq.training.evaluation import paired_interval

ROOT = Path(__file__).resolve().parents[1]
MB = 2**20


def _run(cmd: list[str], env: dict[str, str], log: Path) -> float:
    clock = Stopwatch()
    with open(log, "a", encoding="utf-8") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    if rc not in (0, 3):  # 3: the gate rejected the day (recorded, the loop goes on)
        raise SystemExit(f"{cmd[2]} failed (rc {rc}); see {log}")
    return clock.seconds


def _row(out: Path, run_date: str, feed_s: float, job_s: float) -> dict[str, Any]:
    s = json.loads((out / "work" / run_date / "summary.json").read_text(encoding="utf-8"))
    auc = {r["model"]: r["auc"] for r in s["comparison"] if r.get("role") != "champion"}
    champ = next((r for r in s["comparison"] if r.get("role") == "champion"), None)
    churn = s.get("churn") or {}
    ret = s.get("retention") or {}
    day_dir = out / "work" / run_date
    health = json.loads((day_dir / "ids" / "health.json").read_text(encoding="utf-8"))
    sticky = health.get("sticky") or {}
    # Stickiness's AUC cost on the same model and rows (the files go with retention later).
    published = day_dir / "ids" / PUBLISHED_PREDICTIONS
    cost = None
    if published.exists():
        cost = paired_interval(published, day_dir / "models" / "tarq" / "predictions.parquet")
    return {
        "run_date": run_date,
        "mode": s["lineage"]["tarq"]["mode"],
        "feed_s": round(feed_s, 1),
        "job_s": round(job_s, 1),
        "stages_s": s["timings"],
        "peak_rss_mb": max(s.get("peak_rss_mb", {}).values(), default=None),
        "tarq_auc": auc.get("tarq"),
        "tt_auc": auc.get("tt"),
        "champion_auc": champ["auc"] if champ else None,
        "gate": "promote" if s["gate"]["promote"] else "reject",
        "churn": churn.get("tuple_churn"),
        "churn_levels": churn.get("level_churn"),
        "sticky_margin": sticky.get("margin"),
        "sticky_escalated_from": sticky.get("escalated_from"),
        "published_minus_nearest": cost.to_dict() if cost is not None else None,
        "retention_freed_mb": round(ret.get("bytes_freed", 0) / MB, 1),
        "bytes": {
            "warehouse": dir_bytes(out / "data"),
            "mlflow": dir_bytes(out / "mlflow"),
            "work": dir_bytes(out / "work"),
            "prefect": dir_bytes(out / "prefect"),
        },
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, default=Path("/tmp/tarq-soak"))
    ap.add_argument("--days", type=int, default=30, help="consecutive run dates")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--data-seed", type=int, default=7)
    ap.add_argument("--models", default="tarq,tt")
    ap.add_argument("--epochs", type=int, default=1, help="full epochs of the cold first day")
    ap.add_argument("--keep-days", type=int, default=7, help="retention (run dates kept whole)")
    ap.add_argument("--params", default=None, help="DailyParams JSON for every run date")
    ap.add_argument("--resume", action="store_true", help="continue the soak in OUT")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)

    out = args.out.resolve()
    db = out / "data" / "tarq.duckdb"
    results_path = out / "results.json"
    env = job_env(out)
    py = sys.executable
    if args.resume and results_path.exists():
        results = json.loads(results_path.read_text(encoding="utf-8"))
    else:
        if out.exists() and any(out.iterdir()):
            raise SystemExit(f"{out} is not empty (pass --resume to continue it)")
        demo_warehouse(db, args.preset, args.data_seed)
        results = {
            "days": [],
            "settings": {k: str(v) for k, v in vars(args).items()},
            "machine": machine_line(),
        }
    from tarq.dates import resolve_run_date
    from tarq.store.warehouse import open_db

    done = {r["run_date"] for r in results["days"]}
    if results["days"]:
        first = dt.date.fromisoformat(results["days"][0]["run_date"])
    else:
        with open_db(db, read_only=True) as con:
            first = resolve_run_date("latest", con)
    job = [py, "-m", "flows.tarq_daily", "--db", str(db), "--work-dir", str(out / "work")]
    job += ["--models", args.models, "--epochs", str(args.epochs)]
    job += ["--keep-days", str(args.keep_days)]
    if args.params:
        job += ["--params", args.params]
    quiet_check()
    for i in range(args.days):
        day = first + dt.timedelta(days=i)
        if str(day) in done:
            continue
        feed_s = 0.0
        if i > 0:  # the feed appends the day that just ended: the run date's test day
            feed = [py, "-m", "tarq.cli", "demo-data", "--db", str(db), "--next-day"]
            feed_s = _run(
                [*feed, "--through", str(day - dt.timedelta(days=1))], env, out / "soak.log"
            )
        job_s = _run([*job, "--run-date", str(day)], env, out / "soak.log")
        row = _row(out, str(day), feed_s, job_s)
        results["days"].append(row)
        write_json(results_path, results)
        print(
            f"{day}: {row['mode']} {row['job_s']:.0f}s rss {row['peak_rss_mb']:.0f} MB "
            f"churn {row['churn'] or 0:.2%} gate {row['gate']} disk "
            f"{sum(row['bytes'].values()) / MB:,.0f} MB",
            flush=True,
        )
    if args.markdown:
        print(markdown(results))
    return 0


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def markdown(results: dict[str, Any]) -> str:
    """The per-day table and the flatness lines for benchmarks/README.md."""
    rows = results["days"]
    header = (
        "run date | mode | feed s | job s | train TARQ+TT s | samples s | peak RSS MB"
        " | TARQ / TT / prev. champion AUC | churn | gate | freed MB"
        " | warehouse / MLflow / work / Prefect MB"
    )
    days = []
    for r in rows:
        st = r["stages_s"]
        train = sum(v for k, v in st.items() if k.startswith("train:"))
        champ = f"{r['champion_auc']:.4f}" if r["champion_auc"] is not None else "–"
        churn = f"{r['churn']:.2%}" if r["churn"] is not None else "–"
        b = r["bytes"]
        days.append(
            [
                r["run_date"][5:],
                r["mode"],
                f"{r['feed_s']:.0f}",
                f"{r['job_s']:.0f}",
                f"{train:.0f}",
                f"{st.get('samples', 0):.0f}",
                f"{r['peak_rss_mb']:,.0f}",
                f"{r['tarq_auc']:.4f} / {r['tt_auc']:.4f} / {champ}",
                churn,
                r["gate"],
                f"{r['retention_freed_mb']:.0f}",
                f"{b['warehouse'] / MB:.0f} / {b['mlflow'] / MB:.0f} "
                f"/ {b['work'] / MB:.0f} / {b['prefect'] / MB:.0f}",
            ]
        )
    churns = []
    for r in rows:
        if r.get("churn_levels") is None:
            continue
        c = r.get("published_minus_nearest")
        raised = ", ".join(str(e["margin"]) for e in r.get("sticky_escalated_from") or [])
        churns.append(
            [
                r["run_date"][5:],
                f"{r['churn']:.2%}",
                " ".join(f"{v:.3f}" for v in r["churn_levels"]),
                f"{r.get('sticky_margin')}{f' ({raised})' if raised else ''}",
                f"{c['delta']:+.5f} [{c['low']:+.5f}, {c['high']:+.5f}]" if c else "–",
            ]
        )
    header2 = (
        "run date | tuple churn | per level | sticky margin (raised from)"
        " | TARQ AUC published − nearest codes [95 %]"
    )
    lines = [markdown_table(header, days), "", markdown_table(header2, churns)]
    warm = [r for r in rows if r["mode"] == "warm"]
    if len(warm) >= 14:
        first, last = warm[:7], warm[-7:]
        for key, label in (("job_s", "job seconds"), ("peak_rss_mb", "peak RSS MB")):
            a, b = _mean([r[key] for r in first]), _mean([r[key] for r in last])
            lines.append(
                f"\n{label}: first warm week {a:,.0f}, last week {b:,.0f} ({b / a:.2f}×; goal ≤ 1.2×)"
            )
        disk = [sum(r["bytes"].values()) / MB for r in rows]
        lines.append(
            f"\ndisk (all four): day 1 {disk[0]:,.0f} MB, max {max(disk):,.0f} MB, last "
            f"{disk[-1]:,.0f} MB; gate: {sum(r['gate'] == 'promote' for r in rows)} of "
            f"{len(rows)} promoted"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
