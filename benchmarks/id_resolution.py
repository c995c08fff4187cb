"""Benchmark: collision resolution of the semantic IDs, and what it costs TARQ's test AUC.

Usage::

    # train TARQ with the job's defaults, once per seed, on a warehouse's built samples
    python benchmarks/id_resolution.py --db W/tarq.duckdb --samples W/work/D/samples \\
        --seeds 0 1 2 --out /tmp/idr-small --markdown
    # or judge models already trained (e.g. a daily run's), no training
    python benchmarks/id_resolution.py --db W/tarq.duckdb --samples W/work/D/samples \\
        --model W/work/D/models/tarq --out /tmp/idr-large --markdown

For each TARQ model, the whole catalog is assigned twice (``tarq.ids.semantic_ids.assign_ids``
without the collision ceiling): plain greedy codes (``resolve=False``) and resolved
(the default, :mod:`tarq.ids.id_resolution`). The test day is then scored with each table's
codes (``evaluate_model_dir(item_codes=…)``, the daily job's ``score_published``), and the
AUC difference resolved − plain gets a paired bootstrap interval over test users; with
several models (seeds) also a pooled interval over users and seeds
(``tarq.training.evaluation.pooled_interval``). Results: ``OUT/results.json`` and, with
``--markdown``, the tables for ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from _harness import (
    Stopwatch,
    add_catalog_arguments,
    markdown_table,
    quiet_check,
    run_meta,
    write_json,
)

from tarq.runtime.telemetry import TELEMETRY_OFF

os.environ.update(TELEMETRY_OFF)


def train_seed(samples: Path, out: Path, seed: int, threads: int | None) -> Path:
    """TARQ trained cold with the job's default model and train settings, this seed."""
    from tarq.model import ModelConfig
    from tarq.training.train import TrainConfig, train

    model_dir = out / f"seed{seed}" / "model"
    if not (model_dir / "model.pt").exists():
        train(samples, "tarq", model_dir, ModelConfig(), TrainConfig(seed=seed, threads=threads))
    return model_dir


def judge(db: Path, samples: Path, model_dir: Path, out: Path) -> dict[str, Any]:
    """Assign plain and resolved IDs with ``model_dir``; score the test day with each."""
    from tarq.ids.semantic_ids import IDS_FILE, assign_ids, read_item_codes
    from tarq.training.evaluation import evaluate_model_dir, paired_interval

    row: dict[str, Any] = {"model": str(model_dir)}
    for name, resolve in (("plain", False), ("resolved", True)):
        ids = out / f"ids-{name}"
        clock = Stopwatch()
        h = assign_ids(
            db, model_dir, ids, max_collision_rate=None, compare_served=False, resolve=resolve
        )
        row[f"{name}_assign_s"] = round(clock.seconds, 1)
        row[name] = {
            k: getattr(h, k)
            for k in (
                "catalog_size",
                "distinct_tuples",
                "collision_rate",
                "collision_rate_distinct_inputs",
                "largest_collision_group",
                "items_identical_inputs",
                "recon_error_relative",
                "utilization_per_level",
                "resolution",
            )
        }
        row[name]["resolve_seconds"] = h.timing["resolve_seconds"]
        _, codes = read_item_codes(ids / IDS_FILE)
        metrics = evaluate_model_dir(
            model_dir, samples, predictions_out=out / f"pred-{name}.parquet", item_codes=codes
        )
        row[name]["test_auc"] = metrics["auc"]
        row["test_rows"] = metrics["rows"]
    iv = paired_interval(out / "pred-resolved.parquet", out / "pred-plain.parquet")
    row["auc_resolved_minus_plain"] = iv.to_dict()
    return row


def markdown(rows: list[dict[str, Any]], pooled: dict[str, Any] | None) -> str:
    header = (
        "model | items | collision rate plain → resolved (among distinct inputs)"
        " | distinct tuples | classes moved (by depth) | unresolved | relative recon error"
        " | resolve s | test AUC plain → resolved | resolved − plain [95 %]"
    )
    cells = []
    for r in rows:
        p, q = r["plain"], r["resolved"]
        rs = q["resolution"]
        iv = r["auc_resolved_minus_plain"]
        cells.append(
            [
                r["label"],
                f"{p['catalog_size']:,}",
                f"{p['collision_rate']:.4f} ({p['collision_rate_distinct_inputs']:.4f}) → "
                f"{q['collision_rate']:.4f} ({q['collision_rate_distinct_inputs']:.4f})",
                f"{p['distinct_tuples']:,} → {q['distinct_tuples']:,}",
                f"{rs['classes_moved']:,} ({', '.join(f'{x:,}' for x in rs['moved_by_depth'])})",
                f"{rs['unresolved_classes']:,}",
                f"{p['recon_error_relative']:.4f} → {q['recon_error_relative']:.4f}",
                f"{q['resolve_seconds']:.1f}",
                f"{p['test_auc']:.4f} → {q['test_auc']:.4f}",
                f"{iv['delta']:+.5f} [{iv['low']:+.5f}, {iv['high']:+.5f}]",
            ]
        )
    lines = [markdown_table(header, cells, "lrlrlrlrll")]
    if pooled is not None:
        lines.append(
            f"\npooled over {len(rows)} seeds (users and seeds resampled): resolved − plain "
            f"{pooled['delta']:+.5f} [{pooled['low']:+.5f}, {pooled['high']:+.5f}]"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_catalog_arguments(ap)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--seeds", type=int, nargs="+", help="train TARQ once per seed")
    src.add_argument("--model", type=Path, action="append", help="trained TARQ model dir(s)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    from tarq.training.evaluation import pooled_interval

    quiet_check()
    rows = []
    jobs = [(f"seed {s}", s) for s in args.seeds] if args.seeds else []
    jobs += [(str(m), m) for m in args.model or []]
    for k, (label, job) in enumerate(jobs):
        clock = Stopwatch()
        model_dir = (
            train_seed(args.samples, args.out, job, args.threads) if isinstance(job, int) else job
        )
        train_s = clock.seconds
        out = args.out / f"judge{k}"
        out.mkdir(exist_ok=True)
        row = {
            "label": label,
            "train_s": round(train_s, 1),
            **judge(args.db, args.samples, model_dir, out),
        }
        print(json.dumps(row, default=str), flush=True)
        rows.append(row)
    pooled = None
    if len(rows) > 1:
        outs = [args.out / f"judge{k}" for k in range(len(rows))]
        pooled = pooled_interval(
            [o / "pred-resolved.parquet" for o in outs], [o / "pred-plain.parquet" for o in outs]
        ).to_dict()
    write_json(
        args.out / "results.json", {"meta": run_meta(), "rows": rows, "pooled": pooled}, default=str
    )
    if args.markdown:
        print(markdown(rows, pooled))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
