"""Benchmark: sticky semantic IDs: churn and AUC cost by margin, on consecutive days of the job.

Usage (after ``make demo``, or any run of the daily job over consecutive dates)::

    python benchmarks/sticky_ids.py --db data/tarq.duckdb --work outputs/daily \\
        --margins none,0.02,0.05,0.1,0.2 --json outputs/bench-sticky.json --markdown

For each date of ``--work`` whose TARQ ran warm, on a copy of the warehouse: the previous
date's TARQ assigns the catalog plain nearest-entry codes, which are published (the served
table that day starts from); then the date's TARQ assigns the catalog once per margin
(``none``: plain codes) against it. Reported per date and margin: the tuple churn against the
served table and per level, the items held by stickiness, the FAISS/torch failures, and the
test-day AUC of the date's TARQ scored with those codes, with the paired-bootstrap interval of
its difference to plain codes (the AUC cost of stickiness on the same model and rows).

One step from a plain table: in the job the served table is itself sticky, so held codes
carry over days (bounded by the margin at each level); ``benchmarks/continuous.py`` measures
that over consecutive dates.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from _harness import markdown_table, quiet_check, write_json

from tarq.ids.semantic_ids import IDS_FILE, assign_ids, read_item_codes
from tarq.release.publish import publish
from tarq.training.evaluation import evaluate_model_dir, paired_interval


def _margin(text: str) -> float | None:
    return None if text.lower() == "none" else float(text)


def run_date(
    db: Path, prev_dir: Path, day_dir: Path, margins: list[float | None], tmp: Path
) -> list[dict[str, Any]]:
    """The rows of one warm date (``day_dir``) against ``prev_dir``'s plain IDs."""
    kw: dict[str, Any] = {"progress": False, "max_collision_rate": None}
    base = tmp / f"served-{prev_dir.name}"
    assign_ids(db, prev_dir / "models" / "tarq", base, **kw)
    publish(db, base, model_version="bench", run_date=prev_dir.name, export_dir=tmp / "pub")
    model, samples = day_dir / "models" / "tarq", day_dir / "samples"
    rows, plain_preds = [], None
    for margin in margins:
        out = tmp / f"{day_dir.name}-{margin}"
        report = assign_ids(db, model, out, sticky_margin=margin, **kw)
        preds = out / "predictions.parquet"
        test = evaluate_model_dir(
            model, samples, predictions_out=preds, item_codes=read_item_codes(out / IDS_FILE)[1]
        )
        if margin is None:
            plain_preds = preds
        cost = paired_interval(preds, plain_preds) if plain_preds is not None else None
        churn = report.churn or {}
        rows.append(
            {
                "date": day_dir.name,
                "margin": margin,
                "tuple_churn": churn.get("tuple_churn"),
                "level_churn": churn.get("level_churn"),
                "items_compared": churn.get("items_compared"),
                "items_held": (report.sticky or {}).get("items_held", 0),
                "faiss_torch_failures": report.agreement["failures"],
                "auc": test["auc"],
                "auc_minus_plain": None if cost is None else cost.to_dict(),
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    header = (
        "date | margin | tuple churn | churn per level | items held | test AUC"
        " | AUC − plain [95 % CI]"
    )
    cells = []
    for r in rows:
        d = r["auc_minus_plain"]
        ci = (
            "–"
            if d is None or r["margin"] is None
            else (f"{d['delta']:+.5f} [{d['low']:+.5f}, {d['high']:+.5f}]")
        )
        levels = " ".join(f"{x:.3f}" for x in r["level_churn"] or [])
        cells.append(
            [
                r["date"],
                "plain" if r["margin"] is None else r["margin"],
                f"{r['tuple_churn']:.2%}",
                levels,
                f"{r['items_held']:,}",
                f"{r['auc']:.4f}",
                ci,
            ]
        )
    return markdown_table(header, cells, "lrrlrrl")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--db", type=Path, default=Path("data/tarq.duckdb"))
    p.add_argument("--work", type=Path, default=Path("outputs/daily"))
    p.add_argument("--margins", default="none,0.02,0.05,0.1,0.2")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args(argv)
    margins = [_margin(m) for m in args.margins.split(",")]
    if margins[0] is not None:
        margins.insert(0, None)  # the plain row every interval is paired with
    days = sorted(d for d in args.work.iterdir() if (d / "models" / "tarq" / "model.pt").exists())
    rows: list[dict[str, Any]] = []
    quiet_check()
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        db = tmp / "w.duckdb"
        shutil.copy(args.db, db)  # the user's warehouse is never written
        for prev, day in itertools.pairwise(days):
            lineage = json.loads((day / "models" / "tarq" / "lineage.json").read_text())
            if lineage.get("mode") != "warm":
                continue
            rows += run_date(db, prev, day, margins, tmp)
    if args.json:
        write_json(args.json, rows)
    if args.markdown:
        print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
