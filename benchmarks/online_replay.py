"""Benchmark: open-loop replay of a demo test day — each model's pre-ranking judged by the
world's true clicks, several training seeds pooled.

Usage::

    python benchmarks/online_replay.py --out /tmp/replay --seeds 0,1,2 --markdown

On one ``small`` demo warehouse (data seed 7), for each training seed the daily job runs its
latest run date cold with every model (``python -m flows.tarq_daily --cold``; ``--epochs``).
The test day's requests get pools of ``--pool`` candidates with true click probabilities
(:func:`tarq.data.demo_replay.capture_pools`, the same pools for every seed), each seed's
models score them (:func:`tarq.online.replay.score_pools`; TARQ with the codes the job published), and
per model and k the per-request figures of all seeds are pooled: expected clicks of the top k
relative to the oracle's, recall of the oracle's top k, agreement with TA's top k, and the
paired difference to TT, each with a 95 % bootstrap interval (users resampled, a user's
requests of every seed together). ``OUT/results.json``; ``--markdown`` prints the table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from _harness import (
    Stopwatch,
    base_warehouse,
    job_env,
    machine_line,
    markdown_table,
    quiet_check,
    write_json,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from tarq.data.demo_replay import RequestPools

ROOT = Path(__file__).resolve().parents[1]
MODELS = "tarq,tt,inttower,mvke,ta"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, default=Path("/tmp/tarq-replay"))
    ap.add_argument("--preset", default="small")
    ap.add_argument("--data-seed", type=int, default=7)
    ap.add_argument("--seeds", default="0,1,2", help="training seeds")
    ap.add_argument("--models", default=MODELS)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--pool", type=int, default=1000)
    ap.add_argument("--k", default="10,50")
    ap.add_argument("--markdown", action="store_true")
    return ap.parse_args(argv)


def _train_seed(
    args: argparse.Namespace, base: Path, d: Path, run_date: dt.date, seed: int
) -> None:
    """The daily job's cold run of ``run_date`` with training seed ``seed`` in ``d``, on a
    copy of the base warehouse (kept when ``d`` holds that run's summary already)."""
    if (d / "work" / str(run_date) / "summary.json").exists():
        return
    shutil.rmtree(d, ignore_errors=True)
    (d / "data").mkdir(parents=True)
    shutil.copy(base, d / "data" / "tarq.duckdb")
    cmd = [
        sys.executable,
        "-m",
        "flows.tarq_daily",
        "--db",
        str(d / "data" / "tarq.duckdb"),
    ]
    cmd += ["--run-date", str(run_date), "--work-dir", str(d / "work"), "--cold"]
    cmd += ["--models", args.models, "--epochs", str(args.epochs)]
    cmd += ["--params", json.dumps({"seed": seed})]
    with open(d / "job.log", "w", encoding="utf-8") as log:
        rc = subprocess.run(
            cmd, cwd=ROOT, env=job_env(d), stdout=log, stderr=subprocess.STDOUT
        ).returncode
    if rc not in (0, 3):
        raise SystemExit(f"the daily job failed for seed {seed} (rc {rc}); see {d / 'job.log'}")


def _score_seed(
    pools: RequestPools,
    items: pa.Table,
    day: Path,
    models: list[str],
    ks: list[int],
    per: dict[str, dict[int, dict[str, list[np.ndarray]]]],
) -> np.ndarray:
    """Score the pools with one seed's models (the run folder ``day``; TARQ with the codes the
    job published) and add each model's per-request figures to ``per``; the mask of the
    requests scored."""
    from tarq.ids.semantic_ids import IDS_FILE, read_item_codes
    from tarq.online.replay import per_request, score_pools

    codes = (
        read_item_codes(day / "ids" / IDS_FILE)[1] if (day / "ids" / IDS_FILE).exists() else None
    )
    scores = {
        m: score_pools(
            pools, day / "models" / m, day / "samples", items, codes if m == "tarq" else None
        )
        for m in models
    }
    scored, figs = per_request(pools, scores, ks)
    for m in models:
        for k in ks:
            for name, v in figs[m][k].items():
                per[m][k].setdefault(name, []).append(v)
    return scored


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    from tarq.data.demo_replay import capture_pools, summary
    from tarq.dates import resolve_run_date
    from tarq.online.replay import catalog
    from tarq.store.warehouse import open_db

    out = args.out.resolve()
    base = base_warehouse(out, args.preset, args.data_seed)
    with open_db(base, read_only=True) as con:
        run_date = resolve_run_date("latest", con)
    test_day = run_date - dt.timedelta(days=1)
    models = [m.strip() for m in args.models.split(",")]
    ks = [int(k) for k in args.k.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    quiet_check()
    clock = Stopwatch()
    pools = capture_pools(base, test_day, args.pool, seed=0)
    items = catalog(base)
    print(f"{len(pools):,} requests of {test_day}, pools of {args.pool}", flush=True)

    per: dict[str, dict[int, dict[str, list[np.ndarray]]]] = {
        m: {k: {} for k in ks} for m in models
    }
    users: list[np.ndarray] = []
    for seed in seeds:
        d = out / f"seed{seed}"
        _train_seed(args, base, d, run_date, seed)
        scored = _score_seed(pools, items, d / "work" / str(run_date), models, ks, per)
        users.append(pools.user_id[scored])
        print(f"seed {seed}: scored {int(scored.sum()):,} requests", flush=True)

    u = np.concatenate(users)
    results: dict[str, Any] = {
        "run_date": str(run_date),
        "test_day": str(test_day),
        "requests": len(pools),
        "pool": args.pool,
        "seeds": seeds,
        "epochs": args.epochs,
        "mean_p_true": float(np.nanmean(pools.p_true)),
        "seconds": round(clock.seconds, 1),
        "machine": machine_line(),
        "models": {
            m: {
                f"@{k}": summary({n: np.concatenate(v) for n, v in per[m][k].items()}, u)
                for k in ks
            }
            for m in models
        },
    }
    write_json(out / "results.json", results)
    if args.markdown:
        print(markdown(results))
    return 0


def _cell(f: dict[str, float], digits: int = 4) -> str:
    return f"{f['mean']:.{digits}f} [{f['low']:.{digits}f}, {f['high']:.{digits}f}]"


def markdown(results: dict[str, Any]) -> str:
    """One table per k for benchmarks/README.md."""
    header = (
        "model | expected clicks / oracle | − TT (paired) | recall of oracle's | − TT (paired)"
        " | agreement with TA"
    )
    lines = []
    for k in sorted({k for m in results["models"].values() for k in m}):
        rows = []
        for m, figs in results["models"].items():
            f = figs[k]
            rows.append(
                [
                    m,
                    _cell(f["clicks_ratio"]),
                    _cell(f["clicks_ratio_minus_tt"]) if "clicks_ratio_minus_tt" in f else "–",
                    _cell(f["recall"]),
                    _cell(f["recall_minus_tt"]) if "recall_minus_tt" in f else "–",
                    _cell(f["agreement"]) if "agreement" in f else "–",
                ]
            )
        lines += [
            f"**top {k[1:]}** of {results['pool']} candidates, {results['requests']:,} requests × "
            f"{len(results['seeds'])} seeds",
            "",
            markdown_table(header, rows),
            "",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
