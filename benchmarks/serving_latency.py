"""Benchmark: per-request serving latency of two-tower, TARQ and full target attention.

Usage::

    python benchmarks/serving_latency.py --json serving_latency.json    # default grid, ~3 min
    python benchmarks/serving_latency.py --n 1000 10000 --lengths 50 --reps 20 --faiss-items 0

One process, ``--threads`` torch/FAISS threads (default 1). The three models are the real
model classes at the default ModelConfig (d = 64, m = 8 codebooks × K = 16) with random
weights — latency does not depend on training — and share one backbone: TT and TA take
TARQ's embeddings, towers and score head, TA's target attention is TARQ's teacher. Every
request scores N candidates drawn afresh from a 200k-item table (v̂_item, codes and x_item
precomputed offline, as the published table holds them) for a user with L behaviours.

Timed per request (``time.perf_counter``), inference mode:

- fixed: the user side, once per request — TT: user tower; TARQ: user tower + personalised
  codebooks (m·K queries in one attention) + their pair sums; TA: user tower + the
  history's keys/values; all three on the Scorer's one-request path: the fused numba user side
  (:mod:`tarq.serving.user_kernels`), which hands histories over ``MAX_FUSED_LEN`` to the
  torch lean path (:mod:`tarq.serving.user_side`);
- per-candidate: scoring the N candidates — TT and TARQ: the fused numba kernels of
  :mod:`tarq.serving.kernels`; TA: one attention over the history per candidate (blocked SDPA);
- ``tt_ref``, ``tarq_ref``: the torch reference paths (the model's batched ``user_side`` and
  the torch candidate functions of :mod:`tarq.serving`), for the speed-up in the same run;
- ``tarq_scorer``: the full ``Scorer.score`` path (request encoding and id lookup included);
- ``user_side``: the user side alone, the torch lean path against the fused one (forced at
  every length), per model and L.

Also: the measured FP32 peak (a 512² matrix product) and read bandwidth, and from them a
roofline — FLOPs and bytes per stage against the floor they imply — and FAISS semantic-ID
assignment throughput for ``--faiss-items`` latents (torch for comparison). ``--json OUT``
writes one record per (model, n_candidates, history_len) with p50_ms, p99_ms and threads,
plus a summary record with the ratios and the issue's goals.
"""

from __future__ import annotations

import argparse
import itertools
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numba
import numpy as np
import torch
from _harness import assignment, environment, quiet_check, write_json

from tarq.data.features import TIME_GAP_BUCKETS, FeatureLayout, Vocab
from tarq.ids.semantic_ids import faiss_assign
from tarq.model import ModelConfig, build_model
from tarq.serving import (
    Scorer,
    kernels,
    target_attention_keys,
    target_attention_logits,
    tarq_logits,
    two_tower_logits,
    unit_rows,
    unit_vector,
)
from tarq.serving.user_kernels import MAX_FUSED_LEN, FusedUserSide
from tarq.serving.user_side import LeanUserSide

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
# The timed paths per (L, N): the serving paths, then the torch reference paths.
NAMES = ("tt", "tarq", "ta", "tt_ref", "tarq_ref")
ACTIONS = ("pv", "cart", "fav", "buy")


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
    v_hat = unit_rows(torch.cat(v))
    return {
        "items": items,
        "v_item": torch.cat(v),
        "v_hat": v_hat,
        "codes": codes_t,
        "flat_codes": (codes_t + torch.arange(m) * k).contiguous(),
        "x_item": torch.cat(x),
        # As the Scorer holds them for the fused kernels.
        "v_hat_np": np.ascontiguousarray(v_hat.numpy()),
        "codes_np": np.ascontiguousarray(codes_t.numpy().astype(kernels.code_dtype(k))),
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
    """(fixed(req) -> state, per_candidate(state, rows) -> logits) for one model.

    ``tt``, ``tarq``, ``ta``: the serving paths — the Scorer's one-request user side
    (:class:`~tarq.serving.user_kernels.FusedUserSide`), then the fused kernels (:mod:`tarq.serving.kernels`) for TT and TARQ and
    blocked attention for TA. ``tt_ref``, ``tarq_ref``: the torch reference paths (the model's
    batched ``user_side``, the torch candidate functions of :mod:`tarq.serving`), timed in the
    same run for the speed-up.
    """
    head = model.head
    scale, bias = float(head.scale.detach()), float(head.bias.detach())
    cfg = model.config
    mk = cfg.n_codebooks * cfg.codebook_size
    lean = FusedUserSide(model)

    def fixed_ref(req: dict[str, torch.Tensor]) -> Any:
        st = model.user_side(req["user"], req["hist"], req["hist_mask"])
        u_hat = unit_rows(st.v_user)[0].contiguous()
        if name == "tarq_ref":
            return u_hat, st.extra["personal_codebooks"][0].reshape(mk, cfg.d_model).contiguous()
        return (u_hat,)

    def fixed(req: dict[str, torch.Tensor]) -> Any:
        st = lean(req["user"][0], req["hist"][0])  # the benchmark's histories hold no padding
        u_hat = unit_vector(st.v_user.numpy())  # as Scorer.request_state does
        if name == "tarq":
            personal = kernels.padded_codebooks(st.personal.numpy())
            return u_hat, personal, kernels.pair_sums(personal, cfg.n_codebooks)
        if name == "ta":
            keys, values = target_attention_keys(model.target_attention.attn, st.h_seq[None])
            return (
                torch.from_numpy(u_hat),
                keys,
                values,
                torch.ones(st.h_seq.shape[0], dtype=torch.bool),
            )
        return (u_hat,)

    def per_candidate(state: Any, rows: torch.Tensor) -> torch.Tensor:
        if name == "tt":
            return torch.from_numpy(
                kernels.two_tower_scores(state[0], table["v_hat_np"], scale, bias, rows.numpy())
            )
        if name == "tarq":
            return torch.from_numpy(
                kernels.tarq_scores(
                    state[0],
                    state[1],
                    table["v_hat_np"],
                    table["codes_np"],
                    scale,
                    bias,
                    rows=rows.numpy(),
                    pairs=state[2],
                )
            )
        if name == "tt_ref":
            return two_tower_logits(state[0], table["v_hat"], scale, bias, rows=rows)
        if name == "tarq_ref":
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

    return (fixed_ref if name.endswith("_ref") else fixed), per_candidate


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


@torch.inference_mode()
def _time_cell(fixed, per_candidate, req, row_sets, reps: int, warmup: int) -> dict[str, Any]:
    """Times ``warmup + reps`` requests, request i scoring the candidates ``row_sets[i]``."""
    tot, fix, cand = [], [], []
    for i in range(warmup + reps):
        rows = row_sets[i % len(row_sets)]
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
    n = row_sets[0].numel()
    return {
        "p50_ms": _pct(tot, 50),
        "p99_ms": _pct(tot, 99),
        "fixed_p50_ms": _pct(fix, 50),
        "per_candidate_p50_ms": _pct(cand, 50),
        "per_candidate_ns": _pct(cand, 50) * 1e6 / n,
        "reps": reps,
    }


@torch.inference_mode()
def _time_user_sides(models, req, length: int, reps: int, warmup: int) -> list[dict[str, Any]]:
    """The user side alone, lean (torch) against fused (numba, at every length), per model."""
    out = []
    user, hist = req["user"][0], req["hist"][0]
    for name in ("tt", "tarq", "ta"):
        paths = {"lean": LeanUserSide(models[name]), "fused": FusedUserSide(models[name], 10**9)}
        rec: dict[str, Any] = {"model": "user_side", "base": name, "history_len": length}
        for path, side in paths.items():
            times = []
            for i in range(warmup + reps):
                t0 = time.perf_counter()
                side(user, hist)
                if i >= warmup:
                    times.append((time.perf_counter() - t0) * 1e3)
            rec[f"{path}_p50_ms"] = _pct(times, 50)
        rec["lean_over_fused"] = rec["lean_p50_ms"] / rec["fused_p50_ms"]
        out.append(rec)
        print(
            f"L={length:>5} user side {name:>4}: lean {rec['lean_p50_ms']:.3f} ms, fused "
            f"{rec['fused_p50_ms']:.3f} ms ({rec['lean_over_fused']:.2f}×)",
            flush=True,
        )
    return out


def _bandwidth_gbs() -> float:
    """Sustained read bandwidth: sum over a 512 MiB float32 tensor, best of 5."""
    x = torch.ones(128 * 1024 * 1024)
    x.sum()
    best = min(_timed(lambda: x.sum()) for _ in range(5))
    return x.numel() * 4 / best / 1e9


def _peak_gflops() -> float:
    """Measured FP32 peak: a 512 × 512 matrix product (in cache), best of 20."""
    a, b = torch.randn(512, 512), torch.randn(512, 512)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(20))
    return 2 * 512**3 / best / 1e9


def fixed_flops(cfg: ModelConfig, layout: FeatureLayout, length: int, name: str) -> float:
    """Multiply-adds × 2 of one request's user side (the matrix products and attentions; the
    layer norms, softmaxes and additions are O(S·d) and left out).

    S = L + 1 (the no-history token); a linear (n, a) → (n, b) costs 2·n·a·b, an attention of
    q queries over S keys 4·q·S·d (scores and weighted sum)."""
    d, e, s = cfg.d_model, cfg.emb_dim, length + 1
    mk = cfg.n_codebooks * cfg.codebook_size
    n_shared = sum(f in layout.item_fields for f in layout.seq_fields)

    def encoder() -> float:  # LayerNorm(X + MHA(X, X, X))
        return 2 * s * d * 3 * d + 4 * s * s * d + 2 * s * d * d

    dims = [2 * d, *cfg.tower_hidden, d]
    mlp = sum(2 * a * b for a, b in itertools.pairwise(dims))
    flops = 2 * len(layout.user_fields) * e * d + 2 * length * n_shared * e * d  # x_user, X
    flops += encoder() + 2 * d * d + 2 * s * d * 2 * d + 4 * s * d + 2 * d * d + mlp  # tower
    if name == "tarq":  # K/V, m·K queries (projected once per model), output
        flops += 2 * s * d * 2 * d + 4 * mk * s * d + 2 * mk * d * d
        if cfg.rq_history == "own":  # its own encoder (else it reads the user tower's H^user)
            flops += encoder()
    if name == "ta":  # H^tar and its keys/values, computed once per request
        flops += encoder() + 2 * s * d * 2 * d
    return float(flops)


def fixed_bytes(model: torch.nn.Module, length: int) -> float:
    """Bytes one request's lean user side reads: every weight it uses (fused copies counted
    once) and the embedding rows of its L behaviours and user fields; activations (O(S·d),
    in cache) left out."""
    lean = LeanUserSide(model)
    emb, layout = lean.emb, lean.emb.layout
    tensors: list[torch.Tensor] = [*emb.user_proj.parameters(), *emb.shared_proj.parameters()]
    tensors += [*lean.mlp.parameters(), emb.no_history]
    attns = [lean.user_attn]
    for enc in (lean.seq_user, lean.rq_seq, lean.ta_seq):
        if enc is not None:
            attns.append(enc.attn)
            tensors += [*enc.norm.parameters()]
    for a in attns:
        tensors += [a.w_qkv, a.b_qkv, *a.out.parameters()]
    if lean.rq_attn is not None:
        tensors += [lean.rq_attn.w_kv, lean.rq_attn.b_kv, *lean.rq_attn.out.parameters()]
        tensors.append(lean.books_q)
    n = sum(t.numel() for t in tensors)
    per_behaviour = sum(emb.tables[f].embedding_dim for f in layout.seq_fields)
    if emb.positional is not None:
        per_behaviour += emb.positional.embedding_dim
    n += length * per_behaviour + len(layout.user_fields) * model.config.emb_dim
    return 4.0 * n


def candidate_cost(cfg: ModelConfig, name: str, code_bytes: int) -> tuple[float, float]:
    """(flops, bytes) per candidate from memory: TT reads its unit vector (d float32) and does
    one dot product; TARQ also reads its m codes, sums the picked rows of the cache-resident Ĉ
    (m − 1 vector additions as the paper's arithmetic counts them; the pair sums do 3 of the 7
    once per request) and does three dot products (⟨v̂_u, v̂⟩, ⟨h, v̂⟩, ‖h‖²)."""
    d, m = cfg.d_model, cfg.n_codebooks
    if name == "tt":
        return 2.0 * d, 4.0 * d
    return float((m - 1) * d + 3 * 2 * d), float(4 * d + m * code_bytes)


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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
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
    p.add_argument(
        "--user-side-lengths",
        type=int,
        nargs="*",
        default=[50, 100, 200, 300, 500, 1000],
        help="history lengths at which the user side alone is timed, lean against fused",
    )
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--faiss-items", type=int, default=1_000_000)
    p.add_argument("--json", type=Path, default=None, help="write the records here")
    p.add_argument(
        "--model-config",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="ModelConfig overrides, e.g. rq_history=user (values parsed as JSON, else text)",
    )
    return p.parse_args(argv)


def _scorer(
    models: dict[str, torch.nn.Module], layout: FeatureLayout, table: dict[str, torch.Tensor]
) -> Scorer:
    """The Scorer over the same table, for the end-to-end path (request encoding included)."""
    vocabs = {f: Vocab(np.arange(VOCAB[f] - 2)) for f in VOCAB if f != "action"}
    item_ids = np.arange(TABLE_ITEMS, dtype=np.int64)
    # No request cap: the benchmark scores up to the whole 100k table per request.
    return Scorer(
        models["tarq"],
        layout,
        vocabs,
        item_ids,
        table["codes"].numpy(),
        table["v_item"].numpy(),
        max_candidates=None,
    )


def _history(req: dict[str, torch.Tensor], length: int) -> list[dict[str, Any]]:
    """The request's behaviours as the Scorer takes them: one a minute, the last one a minute
    before the request."""
    return [
        {
            "item_id": int(r[0]),
            "category_id": int(r[1]),
            "brand_id": int(r[2]),
            "action": ACTIONS[i % 4],
            "ts": 1.7e9 - 60.0 * (length - i),
        }
        for i, r in enumerate(req["hist"][0].tolist())
    ]


def _time_models(
    args: argparse.Namespace,
    runners: dict[str, Any],
    models: dict[str, torch.nn.Module],
    cfg: ModelConfig,
    layout: FeatureLayout,
    req: dict[str, torch.Tensor],
    row_sets: list[torch.Tensor],
    cell: tuple[int, int],
    roof: tuple[float, float, int],
) -> list[dict[str, Any]]:
    """One record per path of NAMES for the cell (L, N), with its roofline figures
    (``roof``: read bandwidth, FP32 peak, bytes per code)."""
    length, n = cell
    bw, peak, code_bytes = roof
    records = []
    for name in NAMES:
        slow = name == "ta" and n >= 100_000
        reps, warm = (args.slow_reps, 1) if slow else (args.reps, args.warmup)
        rec = _time_cell(*runners[name], req, row_sets, reps, warm)
        rec.update(model=name, n_candidates=n, history_len=length, threads=args.threads)
        base = name.removesuffix("_ref")
        rec["fixed_gflop"] = fixed_flops(cfg, layout, length, base) / 1e9
        rec["fixed_mbytes"] = fixed_bytes(models[base], length) / 1e6
        if base in ("tt", "tarq"):
            flops, nbytes = candidate_cost(cfg, base, code_bytes)
            rec["candidate_flops"], rec["candidate_bytes"] = flops, nbytes
            rec["bandwidth_floor_ns"] = nbytes / bw
            rec["compute_floor_ns"] = flops / peak
        records.append(rec)
        print(
            f"L={length:>5} N={n:>7} {name:>8}: p50 {rec['p50_ms']:9.3f} ms  p99 "
            f"{rec['p99_ms']:9.3f} ms  fixed {rec['fixed_p50_ms']:8.3f} ms  per-cand "
            f"{rec['per_candidate_ns']:8.1f} ns  ({reps} reps)",
            flush=True,
        )
    return records


def _time_scorer(
    args: argparse.Namespace,
    scorer: Scorer,
    req: dict[str, torch.Tensor],
    history: list[dict[str, Any]],
    row_sets: list[torch.Tensor],
    cell: tuple[int, int],
) -> dict[str, Any]:
    """The record of the full ``Scorer.score`` path for the cell (L, N)."""
    length, n = cell
    times = []
    for i in range(args.warmup + args.reps):
        cand_ids = row_sets[i].numpy()  # item id = table row here
        t0 = time.perf_counter()
        scorer.score({"user_id": int(req["user"][0, 0])}, history, cand_ids, request_ts=1.7e9)
        if i >= args.warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    return {
        "model": "tarq_scorer",
        "n_candidates": n,
        "history_len": length,
        "threads": args.threads,
        "p50_ms": _pct(times, 50),
        "p99_ms": _pct(times, 99),
        "reps": args.reps,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    load_before = quiet_check()
    torch.set_num_threads(args.threads)
    import faiss

    faiss.omp_set_num_threads(args.threads)
    t_start = time.perf_counter()
    cfg = ModelConfig.from_dict(dict(assignment(kv) for kv in args.model_config))
    layout = _layout(max([*args.lengths, *args.user_side_lengths]))
    g = torch.Generator().manual_seed(0)
    models = _models(layout, cfg)
    table = _table(models, g)
    bw = _bandwidth_gbs()
    peak = _peak_gflops()
    records: list[dict[str, Any]] = []
    runners = {n: _runner(n, models[n.removesuffix("_ref")], table) for n in NAMES}
    code_bytes = table["codes_np"].itemsize
    scorer = _scorer(models, layout, table)

    print(
        f"threads={args.threads}  cpu={platform.processor() or platform.machine()}  "
        f"torch={torch.__version__}  read bandwidth {bw:.1f} GB/s  FP32 peak {peak:.0f} GFLOP/s",
        flush=True,
    )
    for length in args.user_side_lengths:
        req = _request(layout, length, g)
        records += _time_user_sides(models, req, length, args.reps, args.warmup)
    for length in args.lengths:
        req = _request(layout, length, g)
        history = _history(req, length)
        for n in args.n:
            # Every request its own candidates (as retrieval would send them): their rows are
            # not left in the caches by the previous request.
            row_sets = [
                torch.randperm(TABLE_ITEMS, generator=g)[:n] for _ in range(args.warmup + args.reps)
            ]
            cell, roof = (length, n), (bw, peak, code_bytes)
            records += _time_models(args, runners, models, cfg, layout, req, row_sets, cell, roof)
            records.append(_time_scorer(args, scorer, req, history, row_sets, cell))

    faiss_rec = _faiss_throughput(models["tarq"], args.faiss_items, g) if args.faiss_items else None
    summary = _summary(records, args, bw, peak, cfg, code_bytes, faiss_rec)
    summary.update(environment("serving_latency.py", argv, t_start, git=True))
    summary["load_average_before"] = load_before
    _print_tables(records, summary, args)
    if args.json:
        write_json(args.json, [*records, summary])
    return 0


def _cell(records: list[dict[str, Any]], model: str, n: int, length: int) -> dict[str, Any]:
    return next(
        r
        for r in records
        if r.get("model") == model and r["n_candidates"] == n and r["history_len"] == length
    )


def _summary(records, args, bw, peak, cfg, code_bytes, faiss_rec) -> dict[str, Any]:
    """Ratios per (L, N) and the issue's goals, from the records of one run."""
    ratios = []
    for length in args.lengths:
        for n in args.n:
            c = {
                m: _cell(records, m, n, length) for m in ("tt", "tarq", "ta", "tt_ref", "tarq_ref")
            }
            ratios.append(
                {
                    "n_candidates": n,
                    "history_len": length,
                    "tarq_over_tt_p50": c["tarq"]["p50_ms"] / c["tt"]["p50_ms"],
                    "ta_over_tarq_p50": c["ta"]["p50_ms"] / c["tarq"]["p50_ms"],
                    "tarq_per_candidate_over_tt": (
                        c["tarq"]["per_candidate_ns"] / c["tt"]["per_candidate_ns"]
                    ),
                    "tarq_per_candidate_over_floor": (
                        c["tarq"]["per_candidate_ns"] / c["tarq"]["bandwidth_floor_ns"]
                    ),
                    "tarq_speedup_over_ref_p50": c["tarq_ref"]["p50_ms"] / c["tarq"]["p50_ms"],
                    "tt_speedup_over_ref_p50": c["tt_ref"]["p50_ms"] / c["tt"]["p50_ms"],
                    "scorer_over_kernel_p50": (
                        _cell(records, "tarq_scorer", n, length)["p50_ms"] / c["tarq"]["p50_ms"]
                    ),
                }
            )
    goals: dict[str, Any] = {}
    n_goal = 10_000 if 10_000 in args.n else max(args.n)
    per_cand = [
        _cell(records, "tarq", n_goal, length)["per_candidate_ns"] for length in args.lengths
    ]
    at = [r for r in ratios if r["n_candidates"] == n_goal]
    goals["n_candidates"] = n_goal
    goals["tarq_per_candidate_over_tt"] = [r["tarq_per_candidate_over_tt"] for r in at]
    goals["tarq_per_candidate_over_floor"] = [r["tarq_per_candidate_over_floor"] for r in at]
    goals["tarq_over_tt_per_request"] = [r["tarq_over_tt_p50"] for r in at]
    goals["ta_over_tarq_per_request"] = [r["ta_over_tarq_p50"] for r in at]
    goals["tarq_per_candidate_spread"] = max(per_cand) / min(per_cand) - 1
    return {
        "kind": "summary",
        "threads": args.threads,
        "read_bandwidth_gbs": bw,
        "peak_gflops": peak,
        "code_bytes": code_bytes,
        "table_items": TABLE_ITEMS,
        "config": cfg.to_dict(),
        "faiss": faiss_rec,
        "ratios": ratios,
        "goals": goals,
        "lengths": args.lengths,
        "slow_reps_note": f"TA cells with N >= 100k use {args.slow_reps} timed requests",
        "numba": numba.__version__,
        "max_fused_len": MAX_FUSED_LEN,
        "user_sides": [r for r in records if r.get("model") == "user_side"],
    }


def _print_latency_table(records: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    """Per (L, N): p50/p99 per request of TT, TARQ and TA, their ratios, TARQ's speed-up."""
    print(
        "\n| L | N | TT p50/p99 ms | TARQ p50/p99 ms | TA p50/p99 ms | TARQ/TT | TA/TARQ |"
        " TARQ speed-up vs torch path |\n|---|---|---|---|---|---|---|---|"
    )
    for r in summary["ratios"]:
        n, length = r["n_candidates"], r["history_len"]
        tt, tq, ta = (_cell(records, m, n, length) for m in ("tt", "tarq", "ta"))
        print(
            f"| {length} | {n:,} | {tt['p50_ms']:.3f} / {tt['p99_ms']:.3f} | "
            f"{tq['p50_ms']:.3f} / {tq['p99_ms']:.3f} | {ta['p50_ms']:.2f} / {ta['p99_ms']:.2f}"
            f" | {r['tarq_over_tt_p50']:.2f} | {r['ta_over_tarq_p50']:.1f} | "
            f"{r['tarq_speedup_over_ref_p50']:.1f}× |"
        )


def _print_stage_table(records: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    """Per (L, N): fixed and per-candidate cost of every path, and ``Scorer.score``."""
    print(
        "\n| L | N | fixed ms TT / TARQ / TA | per-candidate ns TT / TARQ / TA | "
        "torch path: fixed ms TT / TARQ, per-candidate ns TT / TARQ | `Scorer.score` p50 ms |"
        "\n|---|---|---|---|---|---|"
    )
    for r in summary["ratios"]:
        n, length = r["n_candidates"], r["history_len"]
        c = {m: _cell(records, m, n, length) for m in ("tt", "tarq", "ta", "tt_ref", "tarq_ref")}
        sc = _cell(records, "tarq_scorer", n, length)
        print(
            f"| {length} | {n:,} | {c['tt']['fixed_p50_ms']:.3f} / {c['tarq']['fixed_p50_ms']:.3f}"
            f" / {c['ta']['fixed_p50_ms']:.3f} | {c['tt']['per_candidate_ns']:.1f} / "
            f"{c['tarq']['per_candidate_ns']:.1f} / {c['ta']['per_candidate_ns']:.0f} | "
            f"{c['tt_ref']['fixed_p50_ms']:.3f} / {c['tarq_ref']['fixed_p50_ms']:.3f}, "
            f"{c['tt_ref']['per_candidate_ns']:.1f} / {c['tarq_ref']['per_candidate_ns']:.1f} | "
            f"{sc['p50_ms']:.3f} |"
        )


def _print_user_side_table(summary: dict[str, Any]) -> None:
    """Per L and model: the user side alone, torch lean against fused."""
    print(
        f"\n| L | user side | torch lean ms | fused ms | lean / fused |  (served: fused up to "
        f"L = {summary['max_fused_len']})\n|---|---|---|---|---|"
    )
    for r in summary["user_sides"]:
        print(
            f"| {r['history_len']} | {r['base'].upper()} | {r['lean_p50_ms']:.3f} | "
            f"{r['fused_p50_ms']:.3f} | {r['lean_over_fused']:.2f} |"
        )


def _print_roofline(records: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    """The roofline at the goals' N: each stage's FLOPs and bytes, the floor they imply and
    the measured time."""
    bw, peak = summary["read_bandwidth_gbs"], summary["peak_gflops"]
    n_goal = summary["goals"]["n_candidates"]
    print(
        f"\nRoofline (1 thread; FP32 peak {peak:.0f} GFLOP/s, read bandwidth {bw:.1f} GB/s; "
        f"N = {n_goal:,})\n\n| stage | L | FLOPs | bytes | floor | measured | measured / floor |"
        "\n|---|---|---|---|---|---|---|"
    )
    for length in summary["lengths"]:
        for m in ("tt", "tarq"):
            c = _cell(records, m, n_goal, length)
            fl, mb = c["fixed_gflop"] * 1e9, c["fixed_mbytes"]
            floor_ms = max(fl / (peak * 1e9), mb * 1e6 / (bw * 1e9)) * 1e3
            print(
                f"| {m.upper()} user side | {length} | {fl / 1e6:.2f} M | {mb * 1e3:.0f} kB | "
                f"{floor_ms:.3f} ms | {c['fixed_p50_ms']:.3f} ms | {c['fixed_p50_ms'] / floor_ms:.1f} |"
            )
    for length in summary["lengths"]:
        for m in ("tt", "tarq"):
            c = _cell(records, m, n_goal, length)
            floor = max(c["bandwidth_floor_ns"], c["compute_floor_ns"])
            print(
                f"| {m.upper()} per candidate | {length} | {c['candidate_flops']:.0f} | "
                f"{c['candidate_bytes']:.0f} B | {floor:.1f} ns | {c['per_candidate_ns']:.1f} ns | "
                f"{c['per_candidate_ns'] / floor:.1f} |"
            )


def _print_goals(summary: dict[str, Any]) -> None:
    """The issue's goals at the goals' N, against their targets."""
    goals = summary["goals"]
    n_goal = goals["n_candidates"]
    fmt = lambda xs: " / ".join(f"{x:.2f}" for x in xs)  # noqa: E731
    print(
        f"\nGoals at N = {n_goal:,}, L = {' / '.join(map(str, summary['lengths']))}: "
        f"TARQ/TT per candidate {fmt(goals['tarq_per_candidate_over_tt'])} (≤ 2); "
        f"TARQ per candidate / bandwidth floor {fmt(goals['tarq_per_candidate_over_floor'])} "
        f"(≤ 3); TARQ/TT per request {fmt(goals['tarq_over_tt_per_request'])} (≤ 1.3); "
        f"TA/TARQ per request {fmt(goals['ta_over_tarq_per_request'])} (≥ 30 at L = 200); "
        f"TARQ per-candidate spread over L {goals['tarq_per_candidate_spread']:+.1%} (±10 %)"
    )


def _print_tables(records: list[dict[str, Any]], summary: dict[str, Any], args) -> None:
    _print_latency_table(records, summary)
    _print_stage_table(records, summary)
    _print_user_side_table(summary)
    _print_roofline(records, summary)
    _print_goals(summary)
    faiss_rec = summary["faiss"]
    if faiss_rec:
        print(
            f"\nFAISS assignment: {faiss_rec['items']:,} items in {faiss_rec['faiss_seconds']} s "
            f"= {faiss_rec['faiss_items_per_s']:,} items/s (torch {faiss_rec['torch_items_per_s']:,}"
            f" items/s); agreement {faiss_rec['agreement']:.6f}"
        )
    print(f"{summary['slow_reps_note']}; total {summary.get('seconds')} s")


if __name__ == "__main__":
    sys.exit(main())
