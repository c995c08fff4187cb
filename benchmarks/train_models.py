"""Benchmark: every model and ablation trained on the same samples, one results table.

Usage::

    python benchmarks/train_models.py --dataset movielens --markdown --json ml.json
    python benchmarks/train_models.py --dataset demo-small --max-steps 150 --epochs 2 --markdown
    python benchmarks/train_models.py --db data/tarq.duckdb --run-date 2026-10-23 --models tarq tt
    python benchmarks/train_models.py --dataset movielens --test-days 7 --models tt ta tarq

What it does, in order:

1. The warehouse: ``--dataset demo-<preset>`` generates the demo logs (``tarq demo-data
   --preset <preset> --seed 7``) into ``OUT/warehouse.duckdb`` unless it is there already;
   ``--dataset movielens`` / ``taobao`` import ``--movielens-src`` (the MovieLens-100k RecBole
   files) / ``--taobao-src`` (raw Taobao ad-click files: raw_sample, behavior_log, ...) the same
   way (and exit 0 with a note when the source is absent; see ``--help`` for the defaults);
   ``--db`` + ``--run-date`` use an existing warehouse as it is; ``--dataset next-item``
   generates the sequential next-item log of :mod:`tarq.data.next_item` (history-driven
   clicks, same-day negatives) and imports it.
2. Point-in-time samples, built ONCE into ``OUT/samples`` with
   :func:`tarq.data.samples.build_samples` (reused when ``meta.json`` there has the same
   window, unless ``--rebuild-samples``); ``--test-days N`` tests on the N days ending the run
   date − 1 instead of one day (training ends the day before them).
3. Every model of ``--models`` (default: all seven) trained by :func:`tarq.training.train.train` on those
   samples with ONE :class:`~tarq.training.train.TrainConfig` (and the default
   :class:`~tarq.model.ModelConfig`, or ``--config``), for every seed of ``--seeds``; artefacts
   under ``OUT/runs/seed<S>/<model>/``.
4. A table of the test-day metrics (AUC, GAUC, log-loss, per-batch and catalog codebook
   utilization, semantic-ID collision rate, the alignment's sharpness, train time, samples/s;
   mean ± sd over seeds), the derived figures (TARQ − each baseline's AUC, averaged over seeds,
   with a 95 % paired bootstrap interval that resamples test users and seeds, the
   share of the TT → TA gap that TARQ recovers, utilization with vs without alignment) and a
   results JSON (``--json``, default ``OUT/results.json``) to compare runs across commits.

MovieLens-100k spans 1997-09-20 … 1998-04-22 with a few hundred ratings on most days, while
``build_samples`` tests on ONE day (the run date − 1). The default run date therefore puts the
test day on the busiest day of the last 28 logged days (1998-03-31: 2,217 ratings by 26 users),
and the training window covers every earlier day (``train_days`` = days since the first log
day). The Taobao files test on their last impression day and train on every earlier one.
With ``--test-days N`` > 1 both imported sets test on their last N logged days (the run date is
the day after the last impression) and train on every earlier day; the demo keeps its default
run date (the latest) and 19 training days before the test window. Override with
``--run-date`` / ``--train-days``.

Training rows are shuffled through a buffer that holds the whole training window (TrainConfig
``shuffle_buffer``), so that an epoch capped by ``--max-steps`` is a uniform sample of the window
rather than the first users of the Parquet file (the sample files are ordered by user bucket).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

# _harness (beside this file) also when the file is loaded by its path (tests).
sys.path.append(str(Path(__file__).resolve().parent))
from _harness import (
    Stopwatch,
    assignment,
    git_state,
    load_average,
    machine,
    markdown_table,
    quiet_check,
    write_json,
)

from tarq.defaults import DEMO_REFERENCE_START, DEMO_SEED, PRESETS, SEQ_LEN, TRAIN_DAYS

if TYPE_CHECKING:
    from tarq.data.samples import SampleBuild

ROOT = Path(__file__).resolve().parents[1]
MODELS = (
    "tt",
    "pooled",
    "inttower",
    "mvke",
    "ta",
    "tarq",
    "tarq_no_align",
    "tarq_no_teacher_align",
)
DATASETS = (*(f"demo-{p}" for p in PRESETS), "movielens", "taobao", "next-item")
IMPORTED = {"movielens": "movielens_src", "taobao": "taobao_src"}
# Metrics copied from a run's test-day metrics (absent keys stay absent).
TEST_KEYS = (
    "auc",
    "gauc",
    "logloss",
    "utilization_batch",
    "utilization_catalog",
    "collision_rate",
    "largest_collision_group",
    "catalog_items_seen",
    "rows",
    "positives",
    "gauc_users",
    "gauc_skipped_users",
    "recon_error",
)
LOWER_IS_BETTER = {"logloss", "collision_rate"}
# The figures summarised per model (mean ± sd over seeds), in the summary's order.
SUMMARY_KEYS = (
    "auc",
    "gauc",
    "logloss",
    "utilization_batch",
    "utilization_catalog",
    "collision_rate",
    "train_seconds",
    "samples_per_s",
    "wall_seconds",
    "epochs_run",
    "valid_auc",
    "valid_random_auc",
    "score_scale",
    "align_max_prob_p",
    "align_max_prob_p_hat",
    "align_entropy_p",
    "align_entropy_p_hat",
    "base_logloss",
    "train_ctr",
    "train_tar",
)
# The sample build's fields copied into the results JSON.
SAMPLE_KEYS = (
    "run_date",
    "train_start",
    "train_end",
    "test_start",
    "test_day",
    "train_days",
    "test_days",
    "seq_len",
    "rows",
    "train_rows",
    "test_rows",
    "fingerprint",
    "vocab_sizes",
)


# ----------------------------------------------------------------------------- data
def ensure_warehouse(args: argparse.Namespace) -> Path | None:
    """The warehouse to build samples from (generated/imported when missing); None = skip."""
    if args.db is not None:
        if not args.db.exists():
            raise FileNotFoundError(f"{args.db} does not exist")
        return args.db
    db = args.out / "warehouse.duckdb"
    if db.exists():
        print(f"warehouse: reusing {db}", file=sys.stderr)
        return db
    args.out.mkdir(parents=True, exist_ok=True)
    clock = Stopwatch()
    if args.dataset in IMPORTED:
        src = getattr(args, IMPORTED[args.dataset])
        if not src.exists():
            return None
        from tarq.data.importers import run_import

        report = run_import(args.dataset, src, db)
        if not report.ok:
            raise RuntimeError(f"{args.dataset} import failed:\n{report.to_text()}")
    elif args.dataset == "next-item":
        from tarq.data.importers import run_import
        from tarq.data.next_item import NextItemConfig, generate_next_item_logs

        src = args.out / "next-item-src"
        print(json.dumps(generate_next_item_logs(src, NextItemConfig())), file=sys.stderr)
        report = run_import("parquet", src, db)
        if not report.ok:
            raise RuntimeError(f"next-item import failed:\n{report.to_text()}")
    else:
        from tarq.data.demo import generate

        generate(
            db,
            preset=args.dataset.removeprefix("demo-"),
            seed=DEMO_SEED,
            start_date=dt.date.fromisoformat(DEMO_REFERENCE_START),
        )
    print(f"warehouse: built {db} in {clock.seconds:.1f} s", file=sys.stderr)
    return db


def default_window(db: Path, dataset: str | None, test_days: int = 1) -> tuple[str, int]:
    """(run date, train_days) when not given: demo → the latest day, 19 days (as the paper);
    MovieLens → test on the busiest day of the last 28 logged days, train on every day before;
    Taobao → test on the last impression day, train on every day before. With ``test_days``
    N > 1 the imported sets test on their last N days and train on every day before them."""
    from tarq.dates import latest_run_date
    from tarq.store.warehouse import open_db

    with open_db(db, read_only=True) as con:
        if dataset not in IMPORTED:
            return latest_run_date(con).isoformat(), TRAIN_DAYS
        first, last = con.execute("SELECT min(ts)::DATE, max(ts)::DATE FROM impressions").fetchone()
        if dataset == "taobao" or test_days > 1:
            test_start = last - dt.timedelta(days=test_days - 1)
            return (last + dt.timedelta(days=1)).isoformat(), max(1, (test_start - first).days)
        test_day = con.execute(
            "SELECT ts::DATE AS d FROM impressions WHERE ts::DATE > $lo "
            "GROUP BY d ORDER BY count(*) DESC, d DESC LIMIT 1",
            {"lo": last - dt.timedelta(days=28)},
        ).fetchone()[0]
    return (test_day + dt.timedelta(days=1)).isoformat(), max(1, (test_day - first).days)


def ensure_samples(args: argparse.Namespace, db: Path) -> SampleBuild:
    """Build the samples once; reused while the request (warehouse, window, L) is the same."""
    from tarq.data.samples import SampleBuild, build_samples
    from tarq.dates import resolve_run_date
    from tarq.store.warehouse import open_db

    run_date, train_days = default_window(db, args.dataset, args.test_days)
    if args.run_date:
        with open_db(db, read_only=True) as con:
            run_date = resolve_run_date(args.run_date, con).isoformat()
    train_days = args.train_days or train_days
    with open_db(db, read_only=True) as con:
        n_imp, last_ts = con.execute("SELECT count(*), max(ts) FROM impressions").fetchone()
    out = args.out / "samples"
    request = {
        "db": str(db.resolve()),
        "impressions": int(n_imp),
        "last_ts": str(last_ts),
        "run_date": run_date,
        "train_days": train_days,
        "seq_len": args.seq_len,
        "test_days": args.test_days,
    }
    req_path, meta_path = out / "bench_request.json", out / "meta.json"
    if (
        not args.rebuild_samples
        and meta_path.is_file()
        and req_path.is_file()
        and json.loads(req_path.read_text(encoding="utf-8")) == request
    ):
        meta = SampleBuild.from_dict(json.loads(meta_path.read_text(encoding="utf-8")))
        print(
            f"samples: reusing {out} (run date {meta.run_date}, "
            f"{meta.train_rows:,} train / {meta.test_rows:,} test rows)",
            file=sys.stderr,
        )
        return meta
    meta = build_samples(
        db,
        run_date,
        out,
        train_days=train_days,
        seq_len=args.seq_len,
        threads=args.threads,
        test_days=args.test_days,
    )
    req_path.write_text(json.dumps(request, indent=2), encoding="utf-8")
    print(
        f"samples: built {out} in {meta.seconds:.1f} s (run date {meta.run_date}, "
        f"{meta.train_rows:,} train / {meta.test_rows:,} test rows)",
        file=sys.stderr,
    )
    return meta


def test_set_counts(samples: Path) -> dict[str, int]:
    """Rows, distinct users, positives and days of the test split (``samples/test``)."""
    import duckdb

    from tarq.data.paths import duckdb_path

    files = [duckdb_path(f) for f in sorted((samples / "test").glob("*.parquet"))]
    con = duckdb.connect()
    try:
        rows, users, positives, days = con.execute(
            "SELECT count(*), count(DISTINCT user_id), coalesce(sum(label), 0), "
            "count(DISTINCT day) FROM read_parquet($files)",
            {"files": files},
        ).fetchone()
    finally:
        con.close()
    return {"rows": int(rows), "users": int(users), "positives": int(positives), "days": int(days)}


# ----------------------------------------------------------------------------- training
def _score_scale(model_dir: Path) -> float | None:
    import torch

    state = torch.load(model_dir / "model.pt", map_location="cpu", weights_only=True)
    log_s = state.get("head.log_scale")
    return None if log_s is None else float(log_s.exp())


def parse_variant(text: str) -> tuple[str, str, dict[str, Any]]:
    """``LABEL=MODEL:key=value,key=value`` → (label, model, ModelConfig overrides)."""
    try:
        label, rest = text.split("=", 1)
        base, _, spec = rest.partition(":")
        overrides = dict(assignment(item) for item in filter(None, spec.split(",")))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--variant {text!r}: expected LABEL=MODEL:key=value[,key=value]"
        ) from None
    if base not in MODELS or label in MODELS:
        raise argparse.ArgumentTypeError(
            f"--variant {text!r}: MODEL must be one of {', '.join(MODELS)} and LABEL a new name"
        )
    return label, base, overrides


def run_one(
    args: argparse.Namespace, samples: Path, label: str, seed: int, mcfg_base: Any, tcfg_base: Any
) -> dict[str, Any]:
    """Train one model (or --variant) for one seed; returns the per-run record (never raises)."""
    import dataclasses

    from tarq.training.train import TrainResult, train

    model, overrides = args.variant_of.get(label, (label, {}))
    out = args.out / "runs" / f"seed{seed}" / label
    tcfg = dataclasses.replace(tcfg_base, seed=seed)
    mcfg = dataclasses.replace(mcfg_base, kmeans_seed=seed, **overrides)
    want = {"model_name": model, "model": mcfg.to_dict(), "train": dataclasses.asdict(tcfg)}
    record: dict[str, Any] = {
        "model": label,
        "base_model": model,
        "seed": seed,
        "dir": str(out),
        "model_overrides": overrides,
    }
    clock = Stopwatch()
    try:
        done = out / "metrics.json"
        reuse = False
        if args.skip_done and done.is_file() and (out / "config.json").is_file():
            have = json.loads((out / "config.json").read_text(encoding="utf-8"))
            reuse = have == json.loads(json.dumps(want))
        if reuse:
            result = TrainResult.from_dict(json.loads(done.read_text(encoding="utf-8")))
            record["reused"] = True
        else:
            result = train(samples, model, out, mcfg, tcfg, resume=False, progress=args.progress)
            if result is None:
                raise RuntimeError("no training result: run the benchmark without torchrun")
    except Exception as exc:  # a failing model is a result too; the others still run
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["traceback"] = traceback.format_exc()
        print(f"{label} seed {seed}: FAILED {record['error']}", file=sys.stderr)
        return record
    record["wall_seconds"] = round(clock.seconds, 2)
    test = result.test
    record.update({k: test[k] for k in TEST_KEYS if k in test})
    record["valid_auc"] = result.valid["auc"]
    if result.valid_random is not None:
        record["valid_random_auc"] = result.valid_random["auc"]
    for side, st in (test.get("align_sharpness") or {}).items():
        # Mean over levels; uniform over K codes is 1/K (max-prob) and log K (entropy).
        record[f"align_max_prob_{side}"] = float(np.mean(st["max_prob"]))
        record[f"align_entropy_{side}"] = float(np.mean(st["entropy"]))
    for k in ("train_seconds", "samples_per_s", "epochs_run", "best_epoch", "n_params", "threads"):
        record[k] = getattr(result, k)
    hist = result.history
    record["history"] = [
        {k: h.get(k) for k in ("epoch", "seconds", "samples", "loss", "loss_terms", "valid_auc")}
        for h in hist
    ]
    record["score_scale"] = _score_scale(out)
    if test.get("rows") and test.get("positives") is not None:
        rate = min(max(test["positives"] / test["rows"], 1e-12), 1 - 1e-12)
        # The log-loss of predicting the test rows' own click rate: what learning nothing gives.
        record["base_logloss"] = -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))
    if hist:
        terms = hist[-1].get("loss_terms") or {}
        # Mean training terms of the last epoch: the CTR head, and TARQ's teacher (tar).
        record["train_ctr"] = terms.get("ctr")
        record["train_tar"] = terms.get("tar")
    print(
        f"{label} seed {seed}: AUC {record['auc']:.4f}  GAUC {record['gauc']:.4f}  "
        f"logloss {record['logloss']:.4f}  util {record.get('utilization_batch', '-')}  "
        f"{record['samples_per_s']} samples/s  {record['wall_seconds']:.0f} s wall",
        file=sys.stderr,
        flush=True,
    )
    return record


# ----------------------------------------------------------------------------- statistics
def pooled_bootstrap(a_dirs: list[Path], b_dirs: list[Path], n: int) -> dict[str, Any] | None:
    """Paired bootstrap of the seed-mean AUC(a) − AUC(b) over test users and seeds.

    ``a_dirs[s]`` and ``b_dirs[s]`` are the run directories of seed s; their
    predictions.parquet files must hold the same test rows in the same order (None if not).
    """
    from tarq.training.evaluation import pooled_interval

    try:
        iv = pooled_interval(
            [d / "predictions.parquet" for d in a_dirs],
            [d / "predictions.parquet" for d in b_dirs],
            n_boot=n,
        )
    except ValueError:
        return None
    return {
        "lo": iv.low,
        "hi": iv.high,
        "resamples": iv.n_boot,
        "users": iv.clusters,
        "seeds": len(a_dirs),
        "significant": iv.significant,
    }


def _mean_sd(values: list[float]) -> dict[str, Any]:
    v = [x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not v:
        return {"mean": None, "sd": None, "n": 0}
    return {
        "mean": float(np.mean(v)),
        "sd": float(np.std(v, ddof=1)) if len(v) > 1 else None,
        "n": len(v),
    }


def _per_seed(seeds: list[int], fn: Any) -> list[float]:
    """``fn(seed)`` for every seed where it is defined (a missing run or figure skips it)."""
    out = []
    for s in seeds:
        try:
            v = fn(s)
        except (KeyError, TypeError, ZeroDivisionError):
            continue
        if v is not None:
            out.append(v)
    return out


def _auc_difference(
    by: dict[tuple[str, int], dict[str, Any]], seeds: list[int], a: str, b: str, boot: int
) -> dict[str, Any]:
    """AUC(a) − AUC(b) per seed (mean ± sd) and, with ``boot`` resamples, the pooled paired
    bootstrap interval over the seeds both ran."""
    diff = _mean_sd(_per_seed(seeds, lambda s: by[(a, s)]["auc"] - by[(b, s)]["auc"]))
    paired = [s for s in seeds if (a, s) in by and (b, s) in by]
    if boot and paired:
        ci = pooled_bootstrap(
            [Path(by[(a, s)]["dir"]) for s in paired],
            [Path(by[(b, s)]["dir"]) for s in paired],
            boot,
        )
        if ci:
            diff["ci95_bootstrap_users_seeds"] = ci
    return diff


def _add_gap_recovered(
    derived: dict[str, Any], by: dict[tuple[str, int], dict[str, Any]], seeds: list[int]
) -> None:
    """``auc_ta_minus_tt`` (unless there) and ``gap_recovered``: the share of the TT → TA AUC
    gap that TARQ recovers."""
    lift = _per_seed(seeds, lambda s: by[("ta", s)]["auc"] - by[("tt", s)]["auc"])
    gain = _per_seed(seeds, lambda s: by[("tarq", s)]["auc"] - by[("tt", s)]["auc"])
    derived["auc_ta_minus_tt"] = derived.get("auc_ta_minus_tt") or _mean_sd(lift)
    # The ratio of the seed means: a per-seed ratio explodes where one seed's TA lift is
    # near zero. Undefined unless TA beats TT on average.
    den = float(np.mean(lift)) if lift else 0.0
    derived["gap_recovered"] = {
        "mean": float(np.mean(gain)) / den if gain and den > 0 else None,
        "per_seed": [g / t if t > 0 else None for g, t in zip(gain, lift, strict=True)],
        "note": "mean(AUC_tarq - AUC_tt) / mean(AUC_ta - AUC_tt) over seeds; undefined "
        "where TA does not beat TT on average",
    }


def _add_ablations(
    derived: dict[str, Any],
    summary: dict[str, Any],
    by: dict[tuple[str, int], dict[str, Any]],
    seeds: list[int],
    models: list[str],
) -> None:
    """TARQ against its alignment ablations: codebook utilization with vs without, and the
    AUC difference per seed."""
    for variant in ("tarq_no_align", "tarq_no_teacher_align"):
        if variant in models and "tarq" in models:
            for k in ("utilization_batch", "utilization_catalog"):
                derived[f"{k}_tarq_vs_{variant}"] = {
                    "with_alignment": summary["tarq"][k]["mean"],
                    "without": summary[variant][k]["mean"],
                }
            derived[f"auc_tarq_minus_{variant}"] = _mean_sd(
                _per_seed(seeds, lambda s, v=variant: by[("tarq", s)]["auc"] - by[(v, s)]["auc"])
            )


def summarise(
    runs: list[dict[str, Any]],
    models: list[str],
    seeds: list[int],
    boot: int,
    variants: dict[str, str] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per-model means ± sd and the derived comparisons; ``variants`` (label → the model it
    varies) adds each variant − its model, paired by seed, with the pooled bootstrap."""
    ok = [r for r in runs if "error" not in r]
    summary = {
        m: {k: _mean_sd([r.get(k) for r in ok if r["model"] == m]) for k in SUMMARY_KEYS}
        for m in models
    }
    by = {(r["model"], r["seed"]): r for r in ok}
    derived: dict[str, Any] = {}
    for other in ("tt", "pooled", "inttower", "mvke", "ta"):
        if other in models and "tarq" in models:
            derived[f"auc_tarq_minus_{other}"] = _auc_difference(by, seeds, "tarq", other, boot)
    # The baselines against TT (the paper's order: TT < IntTower < MVKE < TARQ <= TA).
    for other in ("pooled", "inttower", "mvke", "ta"):
        if other in models and "tt" in models:
            derived[f"auc_{other}_minus_tt"] = _auc_difference(by, seeds, other, "tt", boot)
    for label, base in (variants or {}).items():
        if label in models and base in models:
            derived[f"auc_{label}_minus_{base}"] = _auc_difference(by, seeds, label, base, boot)
    if {"tarq", "tt", "ta"} <= set(models):
        _add_gap_recovered(derived, by, seeds)
    _add_ablations(derived, summary, by, seeds, models)
    return summary, derived


# ----------------------------------------------------------------------------- output
def _fmt(st: dict[str, Any], digits: int = 4, pct: bool = False) -> str:
    if not st or st.get("mean") is None:
        return "–"
    scale = 100.0 if pct else 1.0
    d = 1 if pct else digits
    s = f"{st['mean'] * scale:.{d}f}"
    if st.get("sd") is not None:
        s += f" ± {st['sd'] * scale:.{d}f}"
    return s + (" %" if pct else "")


def _fmt_num(st: dict[str, Any], digits: int = 0) -> str:
    if not st or st.get("mean") is None:
        return "–"
    s = f"{st['mean']:,.{digits}f}"
    if st.get("sd") is not None:
        s += f" ± {st['sd']:,.{digits}f}"
    return s


TABLE_HEADER = (
    "model | AUC | GAUC | log-loss | valid AUC (last day) | valid AUC (random 5 %)"
    " | util. batch | util. catalog | collisions | max-prob p / p̂ | epochs | train s"
    " | samples/s"
)


def _model_row(m: str, s: dict[str, Any]) -> list[str] | str:
    """The table's row of model ``m`` (``s``: its summary); a failed model's row as text."""
    if s["auc"]["n"] == 0:
        return f"| {m} | failed |" + " |" * 11
    sharp = (
        " / ".join(
            f"{s[k]['mean']:.3f}"
            for k in ("align_max_prob_p", "align_max_prob_p_hat")
            if s[k]["mean"] is not None
        )
        or "–"
    )
    return [
        m,
        _fmt(s["auc"]),
        _fmt(s["gauc"]),
        _fmt(s["logloss"]),
        _fmt(s["valid_auc"]),
        _fmt(s["valid_random_auc"]),
        _fmt(s["utilization_batch"], pct=True),
        _fmt(s["utilization_catalog"], pct=True),
        _fmt(s["collision_rate"], pct=True),
        sharp,
        _fmt_num(s["epochs_run"]),
        _fmt_num(s["train_seconds"]),
        _fmt_num(s["samples_per_s"]),
    ]


def _difference_lines(results: dict[str, Any]) -> list[str]:
    """One line per AUC difference in the results: TARQ − each baseline, each baseline − TT,
    each variant − its model (with its bootstrap interval where there is one)."""
    der = results["derived"]
    d = []
    pairs = [(f"auc_tarq_minus_{o}", "TARQ", o) for o in ("tt", "pooled", "inttower", "mvke", "ta")]
    pairs += [(f"auc_{o}_minus_tt", o, "tt") for o in ("pooled", "inttower", "mvke", "ta")]
    for label, v in results.get("variants", {}).items():
        pairs.append((f"auc_{label}_minus_{v['model']}", label, v["model"]))
    for k, a, b in pairs:
        name = {"tt": "TT", "ta": "TA"}
        if k in der and der[k]["mean"] is not None:
            line = f"- {name.get(a, a)} − {name.get(b, b)} AUC: {der[k]['mean']:+.4f}"
            if der[k].get("sd") is not None:
                line += f" ± {der[k]['sd']:.4f} (sd over {der[k]['n']} seeds)"
            ci = der[k].get("ci95_bootstrap_users_seeds")
            if ci:
                line += (
                    f", 95 % paired bootstrap over {ci['users']} test users × "
                    f"{ci['seeds']} seed(s) [{ci['lo']:+.4f}, {ci['hi']:+.4f}]"
                )
            d.append(line)
    return d


def _gap_line(der: dict[str, Any]) -> str:
    """The share of the TT → TA gap that TARQ recovers (``der`` holds ``gap_recovered``)."""
    g, t = der["gap_recovered"], der["auc_ta_minus_tt"]
    if g["mean"] is None:
        ta_tt = "n/a" if t["mean"] is None else f"{t['mean']:+.4f}"
        return f"- TT → TA gap recovered by TARQ: undefined (TA − TT AUC = {ta_tt})"
    seeds_txt = ", ".join("–" if v is None else f"{v * 100:.0f} %" for v in g.get("per_seed", []))
    return (
        f"- TT → TA gap recovered by TARQ: {g['mean'] * 100:.0f} % of the mean "
        f"TA − TT AUC {t['mean']:+.4f} (per seed: {seeds_txt})"
    )


def _utilization_lines(der: dict[str, Any]) -> list[str]:
    """Codebook utilization of TARQ against each alignment ablation in the results."""
    d = []
    for variant in ("tarq_no_align", "tarq_no_teacher_align"):
        kb = f"utilization_batch_tarq_vs_{variant}"
        kc = f"utilization_catalog_tarq_vs_{variant}"
        if kb in der and der[kb]["with_alignment"] is not None and der[kb]["without"] is not None:
            d.append(
                f"- codebook utilization, tarq vs {variant}: per batch "
                f"{der[kb]['with_alignment'] * 100:.1f} % vs {der[kb]['without'] * 100:.1f} %, "
                f"catalog {der[kc]['with_alignment'] * 100:.1f} % vs "
                f"{der[kc]['without'] * 100:.1f} %"
            )
    return d


def _logloss_line(results: dict[str, Any]) -> str | None:
    """The base rate's log-loss against each model's test log-loss and last training terms
    (None when no run recorded a base rate)."""
    summ = results["summary"]
    base = [summ[m]["base_logloss"]["mean"] for m in results["models"]]
    base = [b for b in base if b is not None]
    if not base:
        return None
    # Learning anything shows as a test log-loss below the base rate's entropy.
    rows = []
    for m in results["models"]:
        s = summ[m]
        if s["logloss"]["mean"] is None:
            continue
        txt = f"{m} {s['logloss']['mean']:.4f} (train ctr {_fmt(s['train_ctr'])}"
        if s["train_tar"]["mean"] is not None:
            txt += f", teacher {_fmt(s['train_tar'])}"
        rows.append(txt + ")")
    return (
        f"- base-rate log-loss of the test rows {base[0]:.4f}; test log-loss (last epoch's "
        "mean training terms): " + "; ".join(rows)
    )


def markdown(results: dict[str, Any]) -> str:
    summ, der = results["summary"], results["derived"]
    rows: list[list[str] | str] = [_model_row(m, summ[m]) for m in results["models"]]
    out = [markdown_table(TABLE_HEADER, rows), ""]
    d = _difference_lines(results)
    if "gap_recovered" in der:
        d.append(_gap_line(der))
    d += _utilization_lines(der)
    logloss = _logloss_line(results)
    if logloss is not None:
        d.append(logloss)
    out.append("\n".join(d))
    return "\n".join(out).rstrip() + "\n"


def resummarise(path: Path, out: Path | None, boot: int) -> int:
    """Recompute an earlier run's summary, derived figures and table (``--summarise``);
    run folders recorded relative are read relative to the current directory."""
    results = json.loads(path.read_text(encoding="utf-8"))
    variants = {label: v["model"] for label, v in results.get("variants", {}).items()}
    results["summary"], results["derived"] = summarise(
        results["runs"], results["models"], results["seeds"], boot, variants
    )
    write_json(out or path, results, default=str)
    print(markdown(results))
    return 0


# ----------------------------------------------------------------------------- main
def _data_args(p: argparse.ArgumentParser) -> None:
    """The ``data`` group: which warehouse, window and samples."""
    src = p.add_argument_group("data")
    src.add_argument(
        "--dataset",
        choices=DATASETS,
        default=None,
        help="demo preset (generated with seed 7), MovieLens-100k or the Taobao "
        "ad-click files (imported)",
    )
    src.add_argument(
        "--preset", choices=PRESETS, default=None, help="same as --dataset demo-<preset>"
    )
    src.add_argument(
        "--db",
        type=Path,
        default=None,
        help="an existing warehouse instead of --dataset (with --run-date)",
    )
    src.add_argument(
        "--run-date", default=None, help="YYYY-MM-DD or 'latest' (default: per dataset, see above)"
    )
    src.add_argument("--train-days", type=int, default=None)
    src.add_argument(
        "--test-days",
        type=int,
        default=1,
        help="test window: the N days ending the run date - 1 (default 1); with N > 1 the "
        "imported sets default to their last N logged days",
    )
    src.add_argument("--seq-len", type=int, default=SEQ_LEN)
    src.add_argument(
        "--movielens-src", type=Path, default=ROOT.parent / "shared" / "data" / "movielens-100k"
    )
    src.add_argument(
        "--taobao-src", type=Path, default=ROOT.parent / "shared" / "data" / "taobao-samples"
    )
    src.add_argument("--rebuild-samples", action="store_true")


def _training_args(p: argparse.ArgumentParser) -> None:
    """The ``training`` group: the models, seeds and the one TrainConfig."""
    tr = p.add_argument_group("training (one TrainConfig for every model)")
    tr.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    tr.add_argument(
        "--variant",
        type=parse_variant,
        action="append",
        default=[],
        metavar="LABEL=MODEL:key=value,...",
        help="an extra row: MODEL with ModelConfig overrides, e.g. "
        "tarq_sum=tarq:fusion=sum (repeatable; diagnostics, not a default)",
    )
    tr.add_argument("--epochs", type=int, default=None, help="TrainConfig.epochs")
    tr.add_argument("--max-steps", type=int, default=None, help="cap on steps per epoch")
    tr.add_argument("--batch-size", type=int, default=None)
    tr.add_argument("--lr", type=float, default=None)
    tr.add_argument(
        "--valid-split",
        choices=("auto", "time", "hash"),
        default=None,
        help="TrainConfig.valid_split (default auto: the last day with several epochs)",
    )
    tr.add_argument(
        "--patience", type=int, default=None, help="early-stop patience in epochs (0 = off)"
    )
    tr.add_argument("--threads", type=int, default=2, help="torch (and DuckDB) threads")
    tr.add_argument("--seeds", type=int, nargs="+", default=[0])
    tr.add_argument(
        "--config",
        type=Path,
        default=None,
        help="JSON/TOML with model/train sections (as `tarq train --config`)",
    )
    tr.add_argument(
        "--skip-done",
        action="store_true",
        help="reuse a run whose metrics.json exists with the same config",
    )
    tr.add_argument("--progress", action="store_true", help="tqdm bars while training")


def _output_args(p: argparse.ArgumentParser) -> None:
    """The ``output`` group: where the results go, and ``--summarise``."""
    o = p.add_argument_group("output")
    o.add_argument(
        "--out",
        type=Path,
        default=None,
        help="work directory (default outputs/bench-train/<dataset>)",
    )
    o.add_argument(
        "--json", type=Path, default=None, help="results JSON (default OUT/results.json)"
    )
    o.add_argument("--markdown", action="store_true", help="print the markdown table on stdout")
    o.add_argument(
        "--summarise",
        type=Path,
        default=None,
        metavar="RESULTS_JSON",
        help="no training: recompute the summary, the derived figures and the "
        "table of an earlier results JSON (its run folders must still exist); "
        "rewrites that file, or writes --json",
    )
    o.add_argument(
        "--bootstrap",
        type=int,
        default=1000,
        help="paired bootstrap resamples (test users × seeds) for the TARQ − "
        "baseline AUC intervals (0 = off)",
    )


def _check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """A training run's arguments checked and completed: the dataset, ``--out`` (absolute),
    ``variant_of`` and the variants appended to ``--models``."""
    if args.preset:
        if args.dataset and args.dataset != f"demo-{args.preset}":
            p.error("--preset contradicts --dataset")
        args.dataset = f"demo-{args.preset}"
    if (args.db is None) == (args.dataset is None):
        p.error("give exactly one of --dataset/--preset or --db")
    if args.db is not None and args.run_date is None:
        p.error("--db needs --run-date")
    if args.test_days < 1:
        p.error(f"--test-days must be >= 1, got {args.test_days}")
    if args.out is None:
        name = args.dataset or args.db.stem
        args.out = ROOT / "outputs" / "bench-train" / name
    args.out = args.out.resolve()  # run folders are recorded absolute (--summarise reads them)
    args.variant_of = {label: (base, ov) for label, base, ov in args.variant}
    args.models = list(dict.fromkeys([*args.models, *args.variant_of]))
    return args


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _data_args(p)
    _training_args(p)
    _output_args(p)
    args = p.parse_args(argv)
    if args.summarise is not None:
        return args
    return _check_args(p, args)


def train_configs(args: argparse.Namespace, meta: SampleBuild) -> tuple[Any, Any]:
    """The (ModelConfig, TrainConfig) every model trains with: ``--config`` (or the defaults)
    with the command line's training flags on top."""
    from tarq.training.train import load_config

    mcfg, tcfg = load_config(args.config)
    for flag, key in (
        ("epochs", "epochs"),
        ("max_steps", "max_steps_per_epoch"),
        ("batch_size", "batch_size"),
        ("lr", "lr"),
        ("patience", "patience"),
        ("valid_split", "valid_split"),
    ):
        if getattr(args, flag) is not None:
            setattr(tcfg, key, getattr(args, flag))
    tcfg.threads = args.threads
    # The whole window in the shuffle buffer: capped epochs sample all users (see above).
    tcfg.shuffle_buffer = max(tcfg.shuffle_buffer, int(meta.train_rows))
    return mcfg, tcfg


def _results(
    args: argparse.Namespace,
    meta: SampleBuild,
    runs: list[dict[str, Any]],
    configs: tuple[Any, Any],
    load_before: list[float] | None,
    started: Stopwatch,
    summary: dict[str, Any],
    derived: dict[str, Any],
) -> dict[str, Any]:
    """The results JSON of a training run (``configs``: its ModelConfig and TrainConfig)."""
    mcfg, tcfg = configs
    return {
        "benchmark": "train_models",
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "dataset": args.dataset or str(args.db),
        "git": git_state(),
        "machine": machine(
            threads=args.threads, load_avg_before=load_before, load_avg_after=load_average()
        ),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "samples": {k: getattr(meta, k) for k in SAMPLE_KEYS},
        "test_positives": next((r.get("positives") for r in runs if "positives" in r), None),
        "test_set": test_set_counts(args.out / "samples"),
        "train_config": tcfg.__dict__,
        "model_config": mcfg.to_dict(),
        "models": args.models,
        "variants": {k: {"model": b, "overrides": ov} for k, (b, ov) in args.variant_of.items()},
        "seeds": args.seeds,
        "wall_seconds": round(started.seconds, 1),
        "summary": summary,
        "derived": derived,
        "runs": [{k: v for k, v in r.items() if k != "traceback"} for r in runs],
        "errors": {
            f"{r['model']}/seed{r['seed']}": r["traceback"] for r in runs if "traceback" in r
        },
    }


def _headline(
    results: dict[str, Any], args: argparse.Namespace, path: Path, load_before: list[float] | None
) -> str:
    """The line above the table: the test and training windows, the run's size and cost."""
    s = results["samples"]
    t = results["test_set"]
    tested = (
        f"test day {s['test_day']}"
        if s["test_start"] == s["test_day"]
        else f"test days {s['test_start']}..{s['test_day']}"
    )
    return (
        f"{results['dataset']}: {tested} ({s['test_rows']:,} rows, {t['users']:,} users, "
        f"{t['positives']:,} positives), train "
        f"{s['train_start']}..{s['train_end']} ({s['train_rows']:,} rows); "
        f"{len(args.models)} models × {len(args.seeds)} seed(s), "
        f"{results['wall_seconds']:.0f} s wall, load avg {load_before} → "
        f"{results['machine']['load_avg_after']}; results in {path}"
    )


def main(argv: list[str] | None = None) -> int:
    from tarq.runtime.telemetry import disable_telemetry

    disable_telemetry()
    args = parse_args(argv)
    if args.summarise is not None:
        return resummarise(args.summarise, args.json, args.bootstrap)
    started = Stopwatch()
    load_before = quiet_check()
    db = ensure_warehouse(args)
    if db is None:
        print(
            f"SKIPPED: {args.dataset} source {getattr(args, IMPORTED[args.dataset])} is absent",
            file=sys.stderr,
        )
        return 0
    meta = ensure_samples(args, db)
    samples = args.out / "samples"
    mcfg, tcfg = train_configs(args, meta)

    runs = []
    for seed in args.seeds:
        for model in args.models:
            runs.append(run_one(args, samples, model, seed, mcfg, tcfg))
    variants = {label: base for label, (base, _) in args.variant_of.items()}
    summary, derived = summarise(runs, args.models, args.seeds, args.bootstrap, variants)
    results = _results(args, meta, runs, (mcfg, tcfg), load_before, started, summary, derived)
    path = args.json or args.out / "results.json"
    write_json(path, results, default=str)
    table = markdown(results)
    head = _headline(results, args, path, load_before)
    if args.markdown:
        print(head + "\n\n" + table)
    else:
        print(head, file=sys.stderr)
        print(table, file=sys.stderr)
    return 1 if any("error" in r for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
