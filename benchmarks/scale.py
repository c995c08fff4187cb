"""Benchmark: the daily job itself, cold, on each demo preset: time, memory and ID health.

Usage::

    python benchmarks/scale.py --preset small medium large --work outputs/bench-scale \\
        --json outputs/bench-scale.json --markdown
    python benchmarks/scale.py --preset large --epochs 1 --max-steps 2000   # a bounded budget

For each preset it runs ``python -m flows.tarq_daily --cold`` (what ``tarq daily`` and the
deployment run) on a warehouse of its own under ``WORK/<preset>``, under ``/usr/bin/time -v``:
the flow generates the preset's demo logs when the warehouse is empty (its ``logs`` stage),
validates them, builds the samples, trains every model of ``--models``, assigns the catalog its
semantic IDs, registers and publishes. Every other setting is the job's default unless given
(``--epochs``, ``--max-steps``). Reported per preset, from the run's ``summary.json`` and the
assignment's ``health.json``:

- per stage: wall seconds and the flow process's peak resident set during that stage
  (``summary.json`` ``timings`` / ``peak_rss_mb``); the whole run's wall time and peak RSS;
- the ID health: utilization per level and over the catalog, distinct tuples, collision rate,
  the largest group sharing one tuple, items with an unseen id, FAISS/torch agreement, and
  whether the gate published;
- each model's test AUC and training samples/s.

The warehouse of a preset is kept between runs (its logs are generated once; ``--fresh``
deletes the preset's folder first); the MLflow store, Prefect home and work dir are new every
run. Results: ``--json`` and, with ``--markdown``, the tables for ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from _harness import Stopwatch, job_env, markdown_table, quiet_check, run_meta, write_json

from tarq.defaults import DAILY_MODELS, PRESETS

REPO = Path(__file__).resolve().parents[1]
TIME = "/usr/bin/time"


def run_preset(preset: str, args: argparse.Namespace) -> dict[str, Any]:
    """One cold daily run on ``preset``; its figures (``rc`` ≠ 0: what it left)."""
    pdir = (args.work / preset).resolve()
    if args.fresh and pdir.exists():
        shutil.rmtree(pdir)
    for sub in ("work", "mlflow", "prefect"):
        shutil.rmtree(pdir / sub, ignore_errors=True)
    (pdir / "mlflow").mkdir(parents=True)
    db = pdir / "tarq.duckdb"
    env = job_env(pdir)
    cmd = [
        sys.executable,
        "-m",
        "flows.tarq_daily",
        "--db",
        str(db),
        "--preset",
        preset,
        "--run-date",
        "latest",
        "--cold",
        "--work-dir",
        str(pdir / "work"),
        "--models",
        args.models,
    ]
    if args.epochs is not None:
        cmd += ["--epochs", str(args.epochs)]
    if args.max_steps is not None:
        cmd += ["--max-steps", str(args.max_steps)]
    if args.params:
        cmd += ["--params", args.params]
    clock = Stopwatch()
    with open(pdir / "job.log", "w", encoding="utf-8") as log:
        proc = subprocess.run(
            [TIME, "-v", *cmd], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    wall = clock.seconds
    text = (pdir / "job.log").read_text(encoding="utf-8", errors="replace")
    rss = re.findall(r"Maximum resident set size \(kbytes\): (\d+)", text)
    row: dict[str, Any] = {
        "preset": preset,
        "rc": proc.returncode,
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(int(rss[-1]) / 1024) if rss else None,
    }
    days = sorted((pdir / "work").glob("*/summary.json"))
    if not days:
        row["error"] = text[-2000:]
        return row
    return read_run(pdir, row)


def read_run(pdir: Path, row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with the figures of the run left in ``pdir`` (its last run date's summary,
    model metrics and ID health)."""
    days = sorted((pdir / "work").glob("*/summary.json"))
    summary = json.loads(days[-1].read_text(encoding="utf-8"))
    day_dir = days[-1].parent
    row.update(
        run_date=summary["run_date"],
        timings=summary.get("timings", {}),
        stage_peak_rss_mb=summary.get("peak_rss_mb", {}),
        published=bool(summary.get("publication")),
        gate=summary["gate"]["reason"],
    )
    row["models"] = {}
    for r in summary.get("comparison", []):
        if r.get("role") != "model":
            continue
        name = r["model"]
        metrics_path = day_dir / "models" / name / "metrics.json"
        met = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
        row["models"][name] = {
            "auc": r.get("auc"),
            "auc_nearest_codes": r.get("auc_nearest_codes"),
            "samples_per_s": r.get("samples_per_s"),
            "train_seconds": r.get("train_seconds"),
            "rows_trained": met.get("rows_trained"),
            "steps": sum(h.get("steps", 0) for h in met.get("history", [])),
        }
    health_path = day_dir / "ids" / "health.json"
    if health_path.exists():
        h = json.loads(health_path.read_text(encoding="utf-8"))
        row["ids"] = {
            k: h.get(k)
            for k in (
                "ok",
                "catalog_size",
                "items_oov_id",
                "utilization_per_level",
                "utilization_catalog",
                "distinct_tuples",
                "collision_rate",
                "collision_rate_distinct_inputs",
                "items_identical_inputs",
                "largest_collision_group",
                "resolution",
            )
        }
        row["ids"]["agreement"] = {
            k: h["agreement"][k] for k in ("disagreements", "ties", "failures")
        }
        row["ids"]["items_per_s"] = h.get("timing", {}).get("items_per_s")
        row["ids"]["failed_checks"] = [c["detail"] for c in h.get("checks", []) if not c["ok"]]
    return row


def _num(x: float | None, fmt: str) -> str:
    return "–" if x is None else format(x, fmt)


def markdown(rows: list[dict[str, Any]]) -> str:
    """The stage table and the ID-health table."""
    stages = []
    for r in rows:
        for stage, sec in r.get("timings", {}).items():
            stages.append(
                [
                    r["preset"],
                    stage,
                    f"{sec:,.1f}",
                    f"{r['stage_peak_rss_mb'].get(stage, float('nan')):,.0f}",
                ]
            )
        stages.append(
            [
                r["preset"],
                f"**whole run** (rc {r['rc']})",
                f"**{r['wall_s']:,.0f}**",
                f"**{r['peak_rss_mb'] or 0:,}**",
            ]
        )
    header = (
        "preset | items | utilization per level | catalog | distinct tuples"
        " | collision rate (distinct inputs), greedy → published | largest group"
        " | unseen ids (equal inputs) | FAISS/torch | published | models: test AUC (samples/s)"
    )
    health: list[list[str]] = []
    for r in rows:
        ids = r.get("ids")
        models = ", ".join(
            f"{n} {m['auc']:.4f} ({m['samples_per_s'] or 0:,.0f}/s)"
            for n, m in r.get("models", {}).items()
        )
        if not ids:
            health.append([r["preset"], *["–"] * 8, "no", models])
            continue
        util = " ".join(f"{u:.2f}" for u in ids["utilization_per_level"] or [])
        agree = ids["agreement"]
        res = ids.get("resolution")
        greedy = (
            f"{res['greedy_collision_rate']:.4f} "
            f"({res['greedy_collision_rate_distinct_inputs']:.4f}) → "
            if res and "greedy_collision_rate" in res
            else ""
        )
        health.append(
            [
                r["preset"],
                f"{ids['catalog_size']:,}",
                util,
                f"{ids['utilization_catalog']:.3f}",
                f"{ids['distinct_tuples']:,}",
                f"{greedy}{ids['collision_rate']:.4f} "
                f"({_num(ids.get('collision_rate_distinct_inputs'), '.4f')})",
                f"{ids['largest_collision_group']:,}",
                f"{ids['items_oov_id']:,} ({_num(ids.get('items_identical_inputs'), ',')})",
                f"{agree['disagreements']} disagreements, {agree['failures']} failures",
                "yes" if r.get("published") else "no",
                models,
            ]
        )
    return "\n".join(
        [
            markdown_table(("preset", "stage", "wall s", "peak RSS MB"), stages, "llrr"),
            "",
            markdown_table(header, health, "lrlrrrrrlll"),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--preset", nargs="+", default=["small", "medium", "large"], choices=PRESETS)
    p.add_argument("--work", type=Path, default=REPO / "outputs" / "bench-scale")
    p.add_argument("--models", default=",".join(DAILY_MODELS))
    p.add_argument("--epochs", type=int, default=None, help="cold epochs (default: the job's)")
    p.add_argument("--max-steps", type=int, default=None, help="cap on steps per epoch")
    p.add_argument("--params", default=None, help="JSON of further DailyParams fields")
    p.add_argument("--fresh", action="store_true", help="regenerate the logs of each preset")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--markdown", action="store_true")
    p.add_argument(
        "--summarise",
        type=Path,
        default=None,
        help="re-read the runs of an earlier --json (their folders under --work) and print "
        "the tables, running nothing",
    )
    args = p.parse_args(argv)
    if args.summarise is not None:
        rows = json.loads(args.summarise.read_text(encoding="utf-8"))["rows"]
        rows = [read_run((args.work / r["preset"]).resolve(), r) for r in rows]
        print(markdown(rows))
        return 0
    if not Path(TIME).exists():
        print(f"{TIME} not found (apt-get install time)", file=sys.stderr)
        return 2
    quiet_check()
    rows = []
    for preset in args.preset:
        row = run_preset(preset, args)
        print(json.dumps(row, default=str), flush=True)
        rows.append(row)
        if args.json:
            write_json(args.json, {"meta": run_meta(), "rows": rows}, default=str)
    if args.markdown:
        print(markdown(rows))
    return 0 if all(r["rc"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
