"""Benchmark: the health of the catalog's semantic IDs by codebook setting, side by side.

Usage::

    python benchmarks/codebook_health.py --db outputs/bench-scale/medium/tarq.duckdb \\
        --samples outputs/bench-scale/medium/samples --steps 400 --out /tmp/cbh \\
        --variant first_batch='{"kmeans_init_rows": 0, "codebook_revive": 0}' \\
        --variant sample_init='{"codebook_revive": 0}' --variant default='{}' --markdown

Each variant trains TARQ cold on the same samples (``tarq.training.train.train``, one epoch capped at
``--steps`` steps, once per value given, the same seed) with those ``ModelConfig`` fields on top of the defaults,
then assigns the whole catalog its semantic IDs (``tarq.ids.semantic_ids.assign_ids``, without the
collision ceiling, so a collapsed table is measured rather than refused) and reports the
catalog's health: utilization per level, distinct tuples, collision rate, the largest group
sharing one tuple, the entries revived, the test AUC and the seconds. Results:
``OUT/results.json`` and, with ``--markdown``, a table for ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
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


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """``NAME=JSON`` → (name, ModelConfig overrides)."""
    name, _, spec = text.partition("=")
    if not name or not spec:
        raise argparse.ArgumentTypeError(f"--variant wants NAME=JSON, got {text!r}")
    overrides = json.loads(spec)
    if not isinstance(overrides, dict):
        raise argparse.ArgumentTypeError(f"--variant {name}: the JSON must be an object")
    return name, overrides


def run_variant(
    name: str, overrides: dict[str, Any], steps: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Train one variant for ``steps`` steps and assign the catalog; one table row's figures."""
    import torch

    from tarq.ids.semantic_ids import assign_ids
    from tarq.model import ModelConfig
    from tarq.model.io import load_trained
    from tarq.training.train import TrainConfig, train

    out = args.out / (name if len(args.steps) == 1 else f"{name}-{steps}")
    mcfg = ModelConfig.from_dict(overrides)
    tcfg = TrainConfig(
        epochs=1,
        batch_size=args.batch_size,
        max_steps_per_epoch=steps,
        patience=0,
        seed=args.seed,
        threads=args.threads,
    )
    clock = Stopwatch()
    result = train(args.samples, "tarq", out / "model", mcfg, tcfg, progress=False)
    train_s = clock.seconds
    model, _ = load_trained(out / "model")
    usage = model.quantizer.usage
    clock = Stopwatch()
    health = assign_ids(
        args.db, out / "model", out / "ids", max_collision_rate=None, compare_served=False
    ).to_dict()
    assign_s = clock.seconds
    util = health["utilization_per_level"]
    return {
        "variant": name,
        "steps": steps,
        "overrides": overrides,
        "test_auc": result.test["auc"],
        "train_s": round(train_s, 1),
        "assign_s": round(assign_s, 1),
        "catalog_items": health["catalog_size"],
        "utilization_per_level": util,
        "utilization_min": min(util),
        "utilization_catalog": health["utilization_catalog"],
        "distinct_tuples": health["distinct_tuples"],
        "collision_rate": health["collision_rate"],
        "collision_rate_distinct_inputs": health["collision_rate_distinct_inputs"],
        "largest_collision_group": health["largest_collision_group"],
        "items_oov_id": health["items_oov_id"],
        "utilization_batch": result.test.get("utilization_batch"),
        "dead_at_end": None
        if usage is None
        else int((usage < mcfg.codebook_revive / mcfg.codebook_size).sum()),
        "threads": torch.get_num_threads(),
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    header = (
        "variant | steps | utilization per level (min) | distinct tuples"
        " | collision rate (among distinct inputs) | largest group | test AUC | train s"
    )
    cells = []
    for r in rows:
        util = " ".join(f"{u:.2f}" for u in r["utilization_per_level"])
        cells.append(
            [
                r["variant"],
                f"{r['steps']:,}",
                f"{util} ({r['utilization_min']:.2f})",
                f"{r['distinct_tuples']:,}",
                f"{r['collision_rate']:.4f} ({r['collision_rate_distinct_inputs']:.4f})",
                f"{r['largest_collision_group']:,}",
                f"{r['test_auc']:.4f}",
                f"{r['train_s']:.0f}",
            ]
        )
    return markdown_table(header, cells, "lrlrrrrr")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_catalog_arguments(ap)
    ap.add_argument(
        "--steps",
        type=int,
        nargs="+",
        default=[400],
        help="training steps of each variant (a list: one run each)",
    )
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--variant", type=parse_variant, action="append", required=True)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    quiet_check()
    rows = []
    for name, overrides in args.variant:
        for steps in args.steps:
            row = run_variant(name, overrides, steps, args)
            print(json.dumps(row), flush=True)
            rows.append(row)
    write_json(args.out / "results.json", {"meta": run_meta(), "rows": rows})
    if args.markdown:
        print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
