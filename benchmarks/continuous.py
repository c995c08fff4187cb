"""Benchmark: consecutive run dates of the real daily job, warm (continuous) vs cold, side by side.

Usage::

    python benchmarks/continuous.py --out /tmp/continuous --markdown
    python benchmarks/continuous.py --days 7 --models tarq,tt,ta \\
        --variant fresh_optimizer='{"carry_optimizer": false}' \\
        --variant replay10='{"replay_folds": 10}' --variant min_count1='{"min_count": 1}'

Every mode runs ``python -m flows.tarq_daily --backfill-days`` (the command ``make demo`` runs)
on its own copy of the warehouse, MLflow store, Prefect home and work dir:

- **cold**: ``--cold``: every run date trains every model from scratch on the whole window
  (``--epochs`` full epochs), as the job did before continuous training;
- **warm**: the default job: the first run date trains cold (same budget), every later one
  continues each model (TARQ: the champion) on its new day (``--warm-epochs``);
- each ``--variant NAME=JSON``: the warm job with those ``DailyParams`` on top. A variant
  that changes nothing before its first warm day (e.g. ``carry_optimizer``, ``replay_folds``)
  starts from a copy of the warm mode's first run date, so they share that cold model.

Per run date and mode it reads ``summary.json`` and the models' ``metrics.json``: test-day AUC
of each model, seconds and rows trained, the semantic-ID churn against the served table, the
gate decision; and per date the paired-bootstrap interval (users resampled) of warm TARQ −
cold TARQ on the same test rows. Results: ``OUT/results.json`` and, with ``--markdown``, the
tables printed for ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _harness import (
    Stopwatch,
    base_warehouse,
    job_env,
    machine_line,
    markdown_table,
    quiet_check,
    write_json,
)

ROOT = Path(__file__).resolve().parents[1]
# Variants that differ from the warm job only from its first warm day on.
SHARES_FIRST_DAY = {
    "carry_optimizer",
    "replay_folds",
    "warm_epochs",
    "warm_max_steps_per_epoch",
    "warm_lr",
    "max_churn",
    "champion_tolerance",
    "sticky_margin",
}


def _run_job(
    mode_dir: Path,
    db: Path,
    end: dt.date,
    backfill: int,
    models: str,
    epochs: int,
    warm_epochs: int,
    params: dict[str, Any],
    cold: bool,
) -> float:
    """One backfill of the daily job; returns its wall seconds."""
    env = job_env(mode_dir)
    cmd = [
        sys.executable,
        "-m",
        "flows.tarq_daily",
        "--db",
        str(db),
        "--run-date",
        str(end),
        "--backfill-days",
        str(backfill),
        "--work-dir",
        str(mode_dir / "work"),
        "--models",
        models,
        "--epochs",
        str(epochs),
        "--warm-epochs",
        str(warm_epochs),
        "--params",
        json.dumps(params),
    ]
    if cold:
        cmd.append("--cold")
    clock = Stopwatch()
    with open(mode_dir / "job.log", "a", encoding="utf-8") as log:
        rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise SystemExit(
            f"the daily job failed in {mode_dir} (rc {rc}); see {mode_dir / 'job.log'}"
        )
    return clock.seconds


def _copy_mode(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("prefect", "job.log"))


def _day_row(mode_dir: Path, day: str, models: list[str]) -> dict[str, Any]:
    path = mode_dir / "work" / day / "summary.json"
    if not path.exists():
        return {"run_date": day, "missing": True}
    s = json.loads(path.read_text(encoding="utf-8"))
    row: dict[str, Any] = {
        "run_date": day,
        "test_day": s["test_day"],
        "gate": "promote" if s["gate"]["promote"] else "reject",
        "gate_reason": s["gate"]["reason"],
        "published": bool(s.get("publication")),
    }
    for m in models:
        met = json.loads((mode_dir / "work" / day / "models" / m / "metrics.json").read_text())
        lin = s["lineage"][m]
        row[f"{m}_auc"] = met["test"]["auc"]
        row[f"{m}_seconds"] = met["train_seconds"]
        row[f"{m}_rows"] = met.get("rows_trained")
        row[f"{m}_mode"] = lin["mode"]
    row["train_seconds"] = sum(row[f"{m}_seconds"] for m in models)
    churn = s.get("churn") or {}
    row["churn_tuple"] = churn.get("tuple_churn")
    row["churn_level0"] = (churn.get("level_churn") or [None])[0]
    row["churn_levels"] = churn.get("level_churn")
    if "tarq" in models:
        met = json.loads((mode_dir / "work" / day / "models" / "tarq" / "metrics.json").read_text())
        row["tarq_auc_nearest_codes"] = met["test"].get("auc_nearest_codes")
    row["churn_items_new"] = churn.get("items_new")
    tvt = s["gate"].get("tarq_minus_tt") or {}
    row["tarq_minus_tt"] = [tvt.get("delta"), tvt.get("low"), tvt.get("high")] if tvt else None
    return row


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, default=Path("/tmp/tarq-continuous"))
    ap.add_argument("--preset", default="small")
    ap.add_argument("--data-seed", type=int, default=7)
    ap.add_argument(
        "--last-run-date",
        default="latest",
        help="the last of the run dates (default: the day after the last log day)",
    )
    ap.add_argument("--days", type=int, default=7, help="consecutive run dates")
    ap.add_argument("--models", default="tarq,tt,ta")
    ap.add_argument("--epochs", type=int, default=1, help="full epochs of a cold run")
    ap.add_argument("--warm-epochs", type=int, default=1)
    ap.add_argument("--params", default="{}", help="DailyParams JSON for every mode")
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        help="NAME=JSON: a further warm mode with these DailyParams",
    )
    ap.add_argument(
        "--skip-cold",
        action="store_true",
        help="reuse OUT/cold from a prior run (none there: no cold mode, no warm − cold pairs)",
    )
    ap.add_argument("--markdown", action="store_true")
    return ap.parse_args(argv)


def _prepare(out: Path, base: Path, mode: str) -> tuple[Path, Path]:
    """A fresh ``out/mode`` with its own copy of the base warehouse: (folder, warehouse)."""
    d = out / mode
    if d.exists():
        shutil.rmtree(d)
    (d / "data").mkdir(parents=True)
    shutil.copy(base, d / "data" / "tarq.duckdb")
    return d, d / "data" / "tarq.duckdb"


def _run_modes(
    args: argparse.Namespace,
    out: Path,
    base: Path,
    window: tuple[dt.date, dt.date],
    common: dict[str, Any],
    variants: dict[str, dict[str, Any]],
) -> dict[str, float]:
    """Cold (unless ``--skip-cold``), warm, then every variant over the run dates ``window``
    (first, last); the wall seconds of each."""
    first, last = window
    wall: dict[str, float] = {}
    if not args.skip_cold:
        d, db = _prepare(out, base, "cold")
        wall["cold"] = _run_job(
            d,
            db,
            last,
            args.days - 1,
            args.models,
            args.epochs,
            args.warm_epochs,
            common,
            cold=True,
        )
    d, db = _prepare(out, base, "warm")
    wall["warm_first_day"] = _run_job(
        d, db, first, 0, args.models, args.epochs, args.warm_epochs, common, cold=False
    )
    _copy_mode(out / "warm", out / "warm_after_first_day")
    wall["warm"] = wall["warm_first_day"] + _run_job(
        d, db, last, args.days - 2, args.models, args.epochs, args.warm_epochs, common, cold=False
    )
    for name, over in variants.items():
        params = {**common, **over}
        if set(over) <= SHARES_FIRST_DAY:
            _copy_mode(out / "warm_after_first_day", out / name)
            d, db = out / name, out / name / "data" / "tarq.duckdb"
            wall[name] = _run_job(
                d,
                db,
                last,
                args.days - 2,
                args.models,
                args.epochs,
                args.warm_epochs,
                params,
                cold=False,
            )
        else:
            d, db = _prepare(out, base, name)
            wall[name] = _run_job(
                d,
                db,
                last,
                args.days - 1,
                args.models,
                args.epochs,
                args.warm_epochs,
                params,
                cold=False,
            )
    return wall


def _intervals(
    modes: list[str], dates: list[str], paths: Callable[[str, str], tuple[Path, Path]]
) -> list[dict[str, Any]]:
    """Per warm mode and run date: the paired interval of the two prediction files ``paths``
    gives (where both exist)."""
    from tarq.training.evaluation import paired_interval

    found = []
    for mode in [m for m in modes if m != "cold"]:
        for day in dates:
            a, b = paths(mode, day)
            if a.exists() and b.exists():
                iv = paired_interval(a, b)
                found.append({"mode": mode, "run_date": day, **iv.to_dict()})
    return found


def _results(
    args: argparse.Namespace,
    out: Path,
    dates: list[str],
    models: list[str],
    wall: dict[str, float],
    common: dict[str, Any],
    variants: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """The results JSON: each mode's per-day rows, warm − cold TARQ and the published codes
    against the nearest ones, per day."""
    from flows.tasks import PUBLISHED_PREDICTIONS

    modes = ["cold", "warm", *variants] if (out / "cold").exists() else ["warm", *variants]
    results: dict[str, Any] = {
        "dates": dates,
        "models": models,
        "wall_seconds": wall,
        "epochs": args.epochs,
        "warm_epochs": args.warm_epochs,
        "params": common,
        "variants": variants,
        "machine": machine_line(),
        "modes": {},
    }
    for mode in modes:
        results["modes"][mode] = [_day_row(out / mode, day, models) for day in dates]
    results["tarq_vs_cold"] = _intervals(
        modes,
        dates,
        lambda mode, day: (
            out / mode / "work" / day / "models" / "tarq" / "predictions.parquet",
            out / "cold" / "work" / day / "models" / "tarq" / "predictions.parquet",
        ),
    )
    # Stickiness's AUC cost on the same model and rows: the day's TARQ scored with the codes
    # the job published (sticky) against the same TARQ with plain nearest-entry codes.
    results["published_vs_nearest_codes"] = _intervals(
        modes,
        dates,
        lambda mode, day: (
            out / mode / "work" / day / "ids" / PUBLISHED_PREDICTIONS,
            out / mode / "work" / day / "models" / "tarq" / "predictions.parquet",
        ),
    )
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out.resolve()
    base = base_warehouse(out, args.preset, args.data_seed)
    sys.path.insert(0, str(ROOT))
    from tarq.dates import resolve_run_date
    from tarq.store.warehouse import open_db

    with open_db(base, read_only=True) as con:
        last = resolve_run_date(args.last_run_date, con)
    first = last - dt.timedelta(days=args.days - 1)
    dates = [str(first + dt.timedelta(days=i)) for i in range(args.days)]
    models = [m.strip() for m in args.models.split(",")]
    common = json.loads(args.params)
    variants: dict[str, dict[str, Any]] = {}
    for spec in args.variant:
        name, _, js = spec.partition("=")
        variants[name] = json.loads(js)

    quiet_check()
    wall = _run_modes(args, out, base, (first, last), common, variants)
    results = _results(args, out, dates, models, wall, common, variants)
    write_json(out / "results.json", results)
    if args.markdown:
        print(markdown(results))
    return 0


def markdown(results: dict[str, Any]) -> str:
    """The per-day tables and the summary lines for benchmarks/README.md."""
    models = results["models"]
    lines = []
    iv = {(p["mode"], p["run_date"]): p for p in results["tarq_vs_cold"]}
    for mode, rows in results["modes"].items():
        header = [
            "run date",
            *[f"{m.upper()} AUC" for m in models],
            "train s (all models)",
            "TARQ rows",
            "ID churn",
            "gate",
        ]
        if mode != "cold":
            header.append("warm − cold TARQ AUC [95 %]")
        table: list[list[str]] = []
        for r in rows:
            if r.get("missing"):
                table.append([r["run_date"], "(no summary: validation failed?)"])
                continue
            churn = "–" if r["churn_tuple"] is None else f"{r['churn_tuple']:.1%}"
            cells = [
                r["run_date"],
                *[f"{r[f'{m}_auc']:.4f}" for m in models],
                f"{r['train_seconds']:.0f}",
                f"{r['tarq_rows']:,} ({r['tarq_mode']})",
                churn,
                r["gate"],
            ]
            if mode != "cold":
                p = iv.get((mode, r["run_date"]))
                cells.append(f"{p['delta']:+.4f} [{p['low']:+.4f}, {p['high']:+.4f}]" if p else "–")
            table.append(cells)
        lines += [f"**{mode}**", "", markdown_table(header, table)]
        ok = [r for r in rows if not r.get("missing")]
        if ok:
            mean = {m: sum(r[f"{m}_auc"] for r in ok) / len(ok) for m in models}
            secs = [r["train_seconds"] for r in ok]
            lines += [
                "",
                "mean AUC "
                + ", ".join(f"{m.upper()} {v:.4f}" for m, v in mean.items())
                + f"; train seconds per day: first {secs[0]:.0f}, later mean "
                f"{sum(secs[1:]) / max(len(secs) - 1, 1):.0f}; champion moved on "
                f"{sum(r['gate'] == 'promote' for r in ok)} of {len(ok)} days",
                "",
            ]
    lines += churn_markdown(results)
    lines.append(
        "wall seconds per mode: "
        + ", ".join(f"{k} {v:.0f}" for k, v in results["wall_seconds"].items())
    )
    return "\n".join(lines)


def churn_markdown(results: dict[str, Any]) -> list[str]:
    """Per warm day and mode: tuple and per-level churn, and TARQ's AUC with the published
    codes against plain nearest-entry codes on the same model (paired interval)."""
    cost = {(p["mode"], p["run_date"]): p for p in results.get("published_vs_nearest_codes", [])}
    lines = []
    for mode, rows in results["modes"].items():
        warm = [r for r in rows if not r.get("missing") and r.get("churn_levels")]
        if mode == "cold" or not warm:
            continue
        depth = len(warm[0]["churn_levels"])
        header = [
            "run date",
            "tuple churn",
            *[f"L{j}" for j in range(depth)],
            "TARQ AUC published codes − nearest codes [95 %]",
        ]
        table = []
        for r in warm:
            p = cost.get((mode, r["run_date"]))
            cells = [
                r["run_date"],
                f"{r['churn_tuple']:.2%}",
                *[f"{v:.2%}" for v in r["churn_levels"]],
                f"{p['delta']:+.5f} [{p['low']:+.5f}, {p['high']:+.5f}]" if p else "–",
            ]
            table.append(cells)
        lines += [
            f"**{mode}: semantic-ID churn against the served table**",
            "",
            markdown_table(header, table),
            "",
        ]
    return lines


if __name__ == "__main__":
    sys.exit(main())
