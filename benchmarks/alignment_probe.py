"""Probe: is the codebook alignment active, and what drives TARQ's loss terms during an epoch?

Usage::

    python benchmarks/alignment_probe.py --preset small --steps 200 --seeds 0 1 \
        --variant tau1=tarq:align_temperature=1 --variant tau64=tarq:align_temperature=64 \
        --variant no_align=tarq_no_align: --json outputs/align-probe/small.json

For every variant and seed, on the same point-in-time samples as ``train_models.py`` (demo
logs generated with seed 7 into ``OUT/warehouse.duckdb``, samples built once into
``OUT/samples``; or ``--samples DIR``), with the training loop's settings (Adam 2e-3, batch 512,
gradient clip 5, the training rows outside the 5 % validation hash, k-means on the first batch):

1. at initialisation, the gradient norm that each λ-weighted loss term puts on each parameter
   group (embeddings, static codebooks, autoencoder encoder, RQ-Attention net, towers, head);
2. every ``--log-every`` steps: the loss terms, ‖h_tar‖, ‖h_rq‖ (RMS per dimension) and
   cos(h_tar, h_rq), to see which term moves and why;
3. after ``--steps`` steps: the same gradient norms again, and on the test day AUC, per-batch
   and catalog codebook utilization and the alignment sharpness of p and p̂ per level
   (``tarq.training.evaluation.evaluate``).

Prints one markdown table and writes everything to ``--json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _harness import Stopwatch, load_average, markdown_table, quiet_check, write_json

from tarq.data.loader import model_inputs
from tarq.defaults import DEMO_REFERENCE_START, SEQ_LEN, TRAIN_DAYS

ROOT = Path(__file__).resolve().parents[1]
GROUPS = {
    "emb": ("emb.",),
    "codebooks": ("quantizer.",),
    "encoder": ("autoencoder.encoder",),
    "rq_attention": ("rq_attention.",),
    "teacher": ("teacher.",),
    "towers": ("user_tower.", "item_tower."),
    "head": ("head.",),
}


def ensure_samples(preset: str, out: Path) -> Path:
    """Demo warehouse (seed 7) and samples (latest run date, 19 days, L = 50), built once."""
    from tarq.data.demo import generate
    from tarq.data.samples import build_samples
    from tarq.dates import latest_run_date
    from tarq.store.warehouse import open_db

    db, samples = out / "warehouse.duckdb", out / "samples"
    if (samples / "meta.json").is_file():
        return samples
    out.mkdir(parents=True, exist_ok=True)
    if not db.exists():
        generate(db, preset=preset, seed=7, start_date=dt.date.fromisoformat(DEMO_REFERENCE_START))
    with open_db(db, read_only=True) as con:
        run_date = latest_run_date(con).isoformat()
    build_samples(db, run_date, samples, train_days=TRAIN_DAYS, seq_len=SEQ_LEN, threads=2)
    return samples


def parse_variant(text: str) -> tuple[str, str, dict[str, Any]]:
    """``LABEL=MODEL:key=value,...`` → (label, model name, ModelConfig overrides)."""
    label, rest = text.split("=", 1)
    base, _, spec = rest.partition(":")
    overrides = {}
    for item in filter(None, spec.split(",")):
        k, v = item.split("=", 1)
        overrides[k] = json.loads(v)
    return label, base, overrides


def grad_norms(model: Any, batch: dict[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    """{loss term: {parameter group: ‖∂(λ·L_term)/∂θ_group‖}} on one batch (train mode)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    out = model(model_inputs(batch))
    res: dict[str, dict[str, float]] = {}
    for term, loss in out.losses.items():
        w = model.loss_weights.get(term, 0.0)
        if not w:
            continue
        grads = torch.autograd.grad(
            w * loss, [p for _, p in named], retain_graph=True, allow_unused=True
        )
        sq = {g: 0.0 for g in GROUPS}
        for (name, _), grad in zip(named, grads, strict=True):
            if grad is None:
                continue
            for g, prefixes in GROUPS.items():
                if name.startswith(prefixes):
                    sq[g] += float((grad * grad).sum())
        res[term] = {g: math.sqrt(v) for g, v in sq.items()}
    return res


def run(
    samples: Path,
    label: str,
    base: str,
    overrides: dict[str, Any],
    seed: int,
    steps: int,
    log_every: int,
    threads: int,
) -> dict[str, Any]:
    """One variant, one seed: see the module docstring."""
    from tarq.data.loader import BatchStream, SampleSet
    from tarq.model import ModelConfig, build_model
    from tarq.training.evaluation import evaluate
    from tarq.training.train import TrainConfig

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    tcfg = TrainConfig(seed=seed)
    mcfg = dataclasses.replace(ModelConfig(), kmeans_seed=seed, **overrides)
    sset = SampleSet.open(samples)
    model = build_model(base, sset.layout, mcfg)
    stream = BatchStream(
        sset,
        "train",
        tcfg.batch_size,
        folds=(tcfg.valid_folds, 100),
        shuffle=True,
        seed=seed,
        buffer_rows=10**7,
        drop_last=True,
    )
    batches = iter(stream)
    first = next(batches)
    model.init_codebooks(model_inputs(first))
    model.train()
    rec: dict[str, Any] = {
        "label": label,
        "model": base,
        "overrides": overrides,
        "seed": seed,
        "grad_init": grad_norms(model, first),
    }
    captured: dict[str, torch.Tensor] = {}
    if getattr(model, "teacher", None) is not None:
        model.teacher.register_forward_hook(
            lambda _m, _i, o: captured.__setitem__("h_tar", o.detach())
        )
        fuse = model.rq_attention.fuse

        def fuse_and_keep(v: torch.Tensor) -> torch.Tensor:
            h = fuse(v)
            captured["h_rq"] = h.detach()
            return h

        model.rq_attention.fuse = fuse_and_keep
    optim = torch.optim.Adam(model.parameters(), lr=tcfg.lr)
    curve, acc, n = [], {}, 0
    clock = Stopwatch()
    batch = first
    for step in range(steps):
        if step:
            batch = next(batches)
        out = model(model_inputs(batch))
        loss = model.total_loss(out)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
        optim.step()
        for k, v in out.losses.items():
            acc[k] = acc.get(k, 0.0) + float(v.detach())
        acc["total"] = acc.get("total", 0.0) + float(loss.detach())
        if "h_tar" in captured:
            ht, hr = captured["h_tar"], captured["h_rq"]
            acc["rms_h_tar"] = acc.get("rms_h_tar", 0.0) + float(ht.pow(2).mean().sqrt())
            acc["rms_h_rq"] = acc.get("rms_h_rq", 0.0) + float(hr.pow(2).mean().sqrt())
            acc["cos_tar_rq"] = acc.get("cos_tar_rq", 0.0) + float(
                torch.nn.functional.cosine_similarity(ht, hr, dim=-1).mean()
            )
        n += 1
        if n == log_every or step == steps - 1:
            curve.append({"step": step + 1, **{k: round(v / n, 5) for k, v in acc.items()}})
            acc, n = {}, 0
    rec["train_seconds"] = round(clock.seconds, 1)
    rec["curve"] = curve
    rec["grad_end"] = grad_norms(model, next(batches))
    test = evaluate(model, BatchStream(sset, "test", 4096), mcfg.codebook_size)
    rec["test"] = {k: v for k, v in test.items() if not k.startswith("_")}
    return rec


def _mean(vals: list[float]) -> str:
    if not vals:
        return "–"
    if len(vals) == 1:
        return f"{vals[0]:.3f}"
    return f"{np.mean(vals):.3f} ± {np.std(vals, ddof=1):.3f}"


def markdown(records: list[dict[str, Any]], k: int) -> str:
    """One row per variant, mean ± sd over seeds."""
    header = (
        "variant | AUC | util. batch | p max-prob l0 / l7 | p̂ max-prob l0 / l7"
        f" | p̂ entropy mean (uniform {math.log(k):.2f}) | ‖g_align‖/‖g_ctr‖ emb, init"
        " | g_align / g_rq codebooks, init | loss first → last | distill first → last"
    )
    rows = []
    for label in dict.fromkeys(r["label"] for r in records):
        rs = [r for r in records if r["label"] == label]
        sh = [r["test"].get("align_sharpness", {}) for r in rs]

        def lv(side: str, stat: str, level: int, sh: list[dict[str, Any]] = sh) -> list[float]:
            return [s[side][stat][level] for s in sh if side in s]

        def ratio(term: str, ref: str, group: str, rs: list[dict[str, Any]] = rs) -> list[float]:
            return [
                r["grad_init"][term][group] / max(r["grad_init"][ref][group], 1e-30)
                for r in rs
                if term in r["grad_init"]
            ]

        ent = [float(np.mean(s["p_hat"]["entropy"])) for s in sh if "p_hat" in s]
        rows.append(
            [
                label,
                _mean([r["test"]["auc"] for r in rs]),
                _mean([r["test"].get("utilization_batch", float("nan")) for r in rs]),
                f"{_mean(lv('p', 'max_prob', 0))} / {_mean(lv('p', 'max_prob', -1))}",
                f"{_mean(lv('p_hat', 'max_prob', 0))} / {_mean(lv('p_hat', 'max_prob', -1))}",
                _mean(ent),
                _mean(ratio("align", "ctr", "emb")),
                _mean(ratio("align", "rq", "codebooks")),
                f"{_mean([r['curve'][0]['total'] for r in rs])} → "
                f"{_mean([r['curve'][-1]['total'] for r in rs])}",
                f"{_mean([r['curve'][0].get('distill', float('nan')) for r in rs])} → "
                f"{_mean([r['curve'][-1].get('distill', float('nan')) for r in rs])}",
            ]
        )
    return markdown_table(header, rows)


def main(argv: list[str] | None = None) -> int:
    from tarq.runtime.telemetry import disable_telemetry

    disable_telemetry()
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--preset", default="small", choices=["tiny", "small", "medium"])
    p.add_argument("--samples", type=Path, default=None, help="existing samples instead")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="work directory (default outputs/align-probe/demo-<preset>)",
    )
    p.add_argument(
        "--variant",
        type=parse_variant,
        action="append",
        default=[],
        metavar="LABEL=MODEL:key=value,...",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    out = args.out or ROOT / "outputs" / "align-probe" / f"demo-{args.preset}"
    samples = args.samples or ensure_samples(args.preset, out)
    variants = args.variant or [("tarq", "tarq", {}), ("tarq_no_align", "tarq_no_align", {})]
    records = []
    path = args.json or out / "results.json"
    load = quiet_check(ndigits=None)
    for seed in args.seeds:
        for label, base, ov in variants:
            rec = run(samples, label, base, ov, seed, args.steps, args.log_every, args.threads)
            records.append(rec)
            print(
                f"{label} seed {seed}: AUC {rec['test']['auc']:.4f} util "
                f"{rec['test'].get('utilization_batch')} {rec['train_seconds']} s",
                file=sys.stderr,
                flush=True,
            )
            write_json(
                path,
                {
                    "load_before": load,
                    "samples": str(samples),
                    "steps": args.steps,
                    "records": records,
                },
                default=str,
            )
    from tarq.model import ModelConfig

    print(markdown(records, ModelConfig().codebook_size))
    print(f"load average before {load}, after {load_average(None)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
