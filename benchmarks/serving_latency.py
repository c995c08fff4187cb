"""Benchmark: per-request serving latency of two-tower, TARQ and full target attention.

Usage::

    python benchmarks/serving_latency.py --json serving.json            # default grid, ~5 min
    python benchmarks/serving_latency.py --n 1000 10000 --lengths 50 --reps 20 --faiss-items 0

One process, ``--threads`` torch/FAISS threads (default 1). The three models are the real
model classes at the default ModelConfig (d = 64, m = 8 codebooks × K = 16) with random
weights — latency does not depend on training — and share one backbone: TT and TA take
TARQ's embeddings, towers and score head, TA's target attention is TARQ's teacher. Every
request scores N candidates drawn from a 200k-item table (v̂_item, codes and x_item
precomputed offline, as the published table holds them) for a user with L behaviours.

Timed per request (``time.perf_counter``), inference mode:

- fixed: the user side, once per request — TT: user tower; TARQ: user tower + personalised
  codebooks (m·K queries in one attention); TA: user tower + the history's keys/values;
- per-candidate: scoring the N candidates with the fast paths of :mod:`tarq.serving`
  (TT: gather + one matrix-vector product; TARQ: fused gather-sum of m codebook rows +
  two dot products; TA: one attention over the history per candidate);
- ``tarq_scorer``: the full ``Scorer.score`` path (request encoding, id lookup included).

Also: FAISS semantic-ID assignment throughput for ``--faiss-items`` latents (torch for
comparison), the measured memory read bandwidth and the floor it sets for reading N
candidates' vectors and codes. ``--json OUT`` writes one record per (model, n_candidates,
history_len) with p50_ms, p99_ms and threads, plus a summary record.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tarq.data.features import TIME_GAP_BUCKETS, FeatureLayout, Vocab
from tarq.model import ModelConfig, build_model
from tarq.semantic_ids import faiss_assign
from tarq.serving import (
    Scorer,
    target_attention_keys,
    target_attention_logits,
    tarq_logits,
    two_tower_logits,
    unit_rows,
)

TABLE_ITEMS = 200_000
VOCAB = {
    "user_id": 100_002,
    "item_id": TABLE_ITEMS + 2,
    "category_id": 2_002,
    "brand_id": 20_002,
    "price_bucket": 66,
    "action": 6,
    "time_gap": TIME_GAP_BUCKETS + 2,
}


def _layout(seq_len: int) -> FeatureLayout:
    return FeatureLayout(
        user_fields=["user_id"],
        item_fields=["item_id", "category_id", "brand_id", "price_bucket"],
        vocab_sizes=dict(VOCAB),
        seq_len=seq_len,
    )


def _models(layout: FeatureLayout, cfg: ModelConfig) -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    tarq = build_model("tarq", layout, cfg).eval()
    state = tarq.state_dict()
    tt = build_model("tt", layout, cfg).eval()
    tt.load_state_dict({k: v for k, v in state.items() if k in tt.state_dict()})
    ta = build_model("ta", layout, cfg).eval()
    ta_state = {k.replace("teacher.", "target_attention.", 1): v for k, v in state.items()}
    ta.load_state_dict({k: v for k, v in ta_state.items() if k in ta.state_dict()})
    return {"tt": tt, "tarq": tarq, "ta": ta}


def _items(n: int, g: torch.Generator) -> torch.Tensor:
    cols = [torch.arange(2, n + 2)]
    for f in ("category_id", "brand_id", "price_bucket"):
        cols.append(torch.randint(2, VOCAB[f], (n,), generator=g))
    return torch.stack(cols, dim=1)


@torch.inference_mode()
def _table(models: dict[str, torch.nn.Module], g: torch.Generator) -> dict[str, torch.Tensor]:
    """The offline item side for the whole table: what publication stores per item."""
    tarq, ta = models["tarq"], models["ta"]
    items = _items(TABLE_ITEMS, g)
    tarq.quantizer.kmeans_init(tarq.latent(items[torch.randperm(TABLE_ITEMS, generator=g)[:8192]]))
    v, codes, x = [], [], []
    for s in range(0, TABLE_ITEMS, 65536):
        chunk = items[s : s + 65536]
        vi, ci = tarq.item_side(chunk)
        _, xi = ta.item_side(chunk)
        v.append(vi)
        codes.append(ci)
        x.append(xi)
    m, k = tarq.config.n_codebooks, tarq.config.codebook_size
    codes_t = torch.cat(codes)
    return {
        "items": items,
        "v_item": torch.cat(v),
        "v_hat": unit_rows(torch.cat(v)),
        "codes": codes_t,
        "flat_codes": (codes_t + torch.arange(m) * k).contiguous(),
        "x_item": torch.cat(x),
    }


def _request(layout: FeatureLayout, length: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    hist = torch.stack(
        [torch.randint(2, VOCAB[f], (1, length), generator=g) for f in layout.seq_fields], dim=2
    )
    return {
        "user": torch.randint(2, VOCAB["user_id"], (1, 1), generator=g),
        "hist": hist,
        "hist_mask": torch.ones(1, length, dtype=torch.bool),
    }


def _runner(name: str, model: torch.nn.Module, table: dict[str, torch.Tensor]):
    """(fixed(req) -> state, per_candidate(state, rows) -> logits) for one model."""
    head = model.head
    scale, bias = float(head.scale.detach()), float(head.bias.detach())
    cfg = model.config
    mk = cfg.n_codebooks * cfg.codebook_size

    def fixed(req: dict[str, torch.Tensor]) -> Any:
        st = model.user_side(req["user"], req["hist"], req["hist_mask"])
        u_hat = unit_rows(st.v_user)[0].contiguous()
        if name == "tarq":
            return u_hat, st.extra["personal_codebooks"][0].reshape(mk, cfg.d_model).contiguous()
        if name == "ta":
            keys, values = target_attention_keys(model.target_attention.attn, st.extra["h_seq"])
            return u_hat, keys, values, st.extra["mask"][0]
        return (u_hat,)

    def per_candidate(state: Any, rows: torch.Tensor) -> torch.Tensor:
        if name == "tt":
            return two_tower_logits(state[0], table["v_hat"], scale, bias, rows=rows)
        if name == "tarq":
            return tarq_logits(
                state[0], state[1], table["v_hat"], table["flat_codes"], scale, bias, rows=rows
            )
        return target_attention_logits(
            model.target_attention.attn,
            state[1],
            state[2],
            state[3],
            state[0],
            table["x_item"],
            table["v_hat"],
            scale,
            bias,
            rows=rows,
        )

    return fixed, per_candidate


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


@torch.inference_mode()
def _time_cell(fixed, per_candidate, req, rows, reps: int, warmup: int) -> dict[str, Any]:
    tot, fix, cand = [], [], []
    for i in range(warmup + reps):
        t0 = time.perf_counter()
        state = fixed(req)
        t1 = time.perf_counter()
        out = per_candidate(state, rows)
        t2 = time.perf_counter()
        if not torch.isfinite(out).all():
            raise FloatingPointError("non-finite scores in the benchmark")
        if i >= warmup:
            tot.append((t2 - t0) * 1e3)
            fix.append((t1 - t0) * 1e3)
            cand.append((t2 - t1) * 1e3)
    n = rows.numel()
    return {
        "p50_ms": _pct(tot, 50),
        "p99_ms": _pct(tot, 99),
        "fixed_p50_ms": _pct(fix, 50),
        "per_candidate_p50_ms": _pct(cand, 50),
        "per_candidate_ns": _pct(cand, 50) * 1e6 / n,
        "reps": reps,
    }


def _bandwidth_gbs() -> float:
    """Sustained read bandwidth: sum over a 512 MiB float32 tensor, best of 5."""
    x = torch.ones(128 * 1024 * 1024)
    x.sum()
    best = min(_timed(lambda: x.sum()) for _ in range(5))
    return x.numel() * 4 / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


@torch.inference_mode()
def _faiss_throughput(tarq: torch.nn.Module, n_items: int, g: torch.Generator) -> dict[str, Any]:
    """Assignment of n_items latents (of random catalog items) with FAISS and with torch."""
    items = _items(min(n_items, TABLE_ITEMS), g)
    z_base = tarq.latent(items)
    reps = -(-n_items // z_base.shape[0])
    z = z_base.repeat(reps, 1)[:n_items].contiguous()
    books = tarq.codebooks.numpy()
    chunk = 65536
    t0 = time.perf_counter()
    codes_f = np.concatenate(
        [faiss_assign(z[s : s + chunk].numpy(), books) for s in range(0, n_items, chunk)]
    )
    t_faiss = time.perf_counter() - t0
    t0 = time.perf_counter()
    codes_t = torch.cat([tarq.quantizer.encode(z[s : s + chunk]) for s in range(0, n_items, chunk)])
    t_torch = time.perf_counter() - t0
    agree = float((codes_f == codes_t.numpy()).all(1).mean())
    return {
        "items": n_items,
        "faiss_seconds": round(t_faiss, 3),
        "faiss_items_per_s": round(n_items / t_faiss),
        "torch_seconds": round(t_torch, 3),
        "torch_items_per_s": round(n_items / t_torch),
        "agreement": agree,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, nargs="+", default=[1000, 10000, 100000])
    p.add_argument("--lengths", type=int, nargs="+", default=[50, 200, 1000])
    p.add_argument("--reps", type=int, default=50, help="timed requests per cell")
    p.add_argument(
        "--slow-reps",
        type=int,
        default=5,
        help="timed requests for the TA cells with N >= 100k (each takes seconds)",
    )
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--faiss-items", type=int, default=1_000_000)
    p.add_argument("--json", type=Path, default=None, help="write the records here")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    import faiss

    faiss.omp_set_num_threads(args.threads)
    t_start = time.perf_counter()
    cfg = ModelConfig()
    layout = _layout(max(args.lengths))
    g = torch.Generator().manual_seed(0)
    models = _models(layout, cfg)
    table = _table(models, g)
    bw = _bandwidth_gbs()
    records: list[dict[str, Any]] = []
    runners = {name: _runner(name, mdl, table) for name, mdl in models.items()}
    # Bytes a candidate's scoring must read: its unit vector (d float32) and, for TARQ, its
    # m codes as stored for the fused gather (int64); the 128-row Ĉ stays in L1.
    bytes_per = {"tt": cfg.d_model * 4, "tarq": cfg.d_model * 4 + cfg.n_codebooks * 8}
    # The Scorer over the same table, for the end-to-end path (request encoding included).
    vocabs = {f: Vocab(np.arange(VOCAB[f] - 2)) for f in VOCAB if f != "action"}
    item_ids = np.arange(TABLE_ITEMS, dtype=np.int64)
    # No request cap: the benchmark scores up to the whole 100k table per request.
    scorer = Scorer(
        models["tarq"],
        layout,
        vocabs,
        item_ids,
        table["codes"].numpy(),
        table["v_item"].numpy(),
        max_candidates=None,
    )
    actions = ("pv", "cart", "fav", "buy")

    print(
        f"threads={args.threads}  cpu={platform.processor() or platform.machine()}  "
        f"torch={torch.__version__}  read bandwidth {bw:.1f} GB/s",
        flush=True,
    )
    for length in args.lengths:
        req = _request(layout, length, g)
        # One behaviour a minute, the last one a minute before the request.
        history = [
            {
                "item_id": int(r[0]),
                "category_id": int(r[1]),
                "brand_id": int(r[2]),
                "action": actions[i % 4],
                "ts": 1.7e9 - 60.0 * (length - i),
            }
            for i, r in enumerate(req["hist"][0].tolist())
        ]
        for n in args.n:
            rows = torch.randperm(TABLE_ITEMS, generator=g)[:n]
            for name in ("tt", "tarq", "ta"):
                reps = args.slow_reps if (name == "ta" and n >= 100_000) else args.reps
                warm = 1 if (name == "ta" and n >= 100_000) else args.warmup
                rec = _time_cell(*runners[name], req, rows, reps, warm)
                rec.update(model=name, n_candidates=n, history_len=length, threads=args.threads)
                if name in bytes_per:
                    rec["bandwidth_floor_ms"] = n * bytes_per[name] / (bw * 1e9) * 1e3
                records.append(rec)
                print(
                    f"L={length:>5} N={n:>7} {name:>5}: p50 {rec['p50_ms']:9.3f} ms  p99 "
                    f"{rec['p99_ms']:9.3f} ms  fixed {rec['fixed_p50_ms']:8.3f} ms  per-cand "
                    f"{rec['per_candidate_ns']:8.1f} ns  ({reps} reps)",
                    flush=True,
                )
            cand_ids = rows.numpy()
            times = []
            for i in range(args.warmup + args.reps):
                t0 = time.perf_counter()
                scorer.score(
                    {"user_id": int(req["user"][0, 0])}, history, cand_ids, request_ts=1.7e9
                )
                if i >= args.warmup:
                    times.append((time.perf_counter() - t0) * 1e3)
            records.append(
                {
                    "model": "tarq_scorer",
                    "n_candidates": n,
                    "history_len": length,
                    "threads": args.threads,
                    "p50_ms": _pct(times, 50),
                    "p99_ms": _pct(times, 99),
                    "reps": args.reps,
                }
            )

    faiss_rec = _faiss_throughput(models["tarq"], args.faiss_items, g) if args.faiss_items else None

    def cell(model: str, n: int, length: int) -> dict[str, Any]:
        return next(
            r
            for r in records
            if r["model"] == model and r["n_candidates"] == n and r["history_len"] == length
        )

    ratios = []
    for length in args.lengths:
        for n in args.n:
            tt, tq, ta = cell("tt", n, length), cell("tarq", n, length), cell("ta", n, length)
            ratios.append(
                {
                    "n_candidates": n,
                    "history_len": length,
                    "tarq_over_tt_p50": tq["p50_ms"] / tt["p50_ms"],
                    "ta_over_tarq_p50": ta["p50_ms"] / tq["p50_ms"],
                    "tarq_per_candidate_over_tt": (
                        tq["per_candidate_p50_ms"] / tt["per_candidate_p50_ms"]
                    ),
                }
            )
    summary = {
        "kind": "summary",
        "threads": args.threads,
        "read_bandwidth_gbs": bw,
        "bytes_per_candidate": bytes_per,
        "table_items": TABLE_ITEMS,
        "config": cfg.to_dict(),
        "faiss": faiss_rec,
        "ratios": ratios,
        "slow_reps_note": f"TA cells with N >= 100k use {args.slow_reps} timed requests",
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "seconds": round(time.perf_counter() - t_start, 1),
        "command": "python benchmarks/serving_latency.py " + " ".join(argv or sys.argv[1:]),
    }

    print(
        "\n| L | N | TT p50/p99 ms | TARQ p50/p99 ms | TA p50/p99 ms | TARQ/TT | TA/TARQ |"
        "\n|---|---|---|---|---|---|---|"
    )
    for r in ratios:
        n, length = r["n_candidates"], r["history_len"]
        tt, tq, ta = cell("tt", n, length), cell("tarq", n, length), cell("ta", n, length)
        print(
            f"| {length} | {n:,} | {tt['p50_ms']:.3f} / {tt['p99_ms']:.3f} | "
            f"{tq['p50_ms']:.3f} / {tq['p99_ms']:.3f} | {ta['p50_ms']:.2f} / {ta['p99_ms']:.2f}"
            f" | {r['tarq_over_tt_p50']:.2f} | {r['ta_over_tarq_p50']:.1f} |"
        )
    print(
        "\n| L | N | fixed ms TT / TARQ / TA | per-candidate ns TT / TARQ / TA | TARQ floor ms "
        "| Scorer.score p50 ms |\n|---|---|---|---|---|---|"
    )
    for r in ratios:
        n, length = r["n_candidates"], r["history_len"]
        tt, tq, ta = cell("tt", n, length), cell("tarq", n, length), cell("ta", n, length)
        sc = cell("tarq_scorer", n, length)
        print(
            f"| {length} | {n:,} | {tt['fixed_p50_ms']:.3f} / {tq['fixed_p50_ms']:.3f} / "
            f"{ta['fixed_p50_ms']:.3f} | {tt['per_candidate_ns']:.1f} / "
            f"{tq['per_candidate_ns']:.1f} / {ta['per_candidate_ns']:.0f} | "
            f"{tq['bandwidth_floor_ms']:.4f} | {sc['p50_ms']:.3f} |"
        )
    if faiss_rec:
        print(
            f"\nFAISS assignment: {faiss_rec['items']:,} items in {faiss_rec['faiss_seconds']} s "
            f"= {faiss_rec['faiss_items_per_s']:,} items/s (torch {faiss_rec['torch_items_per_s']:,}"
            f" items/s); agreement {faiss_rec['agreement']:.6f}"
        )
    print(
        f"read bandwidth {bw:.1f} GB/s; {summary['slow_reps_note']}; total {summary['seconds']} s"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([*records, summary], indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
