"""Fused per-candidate serving kernels (numba), checked against the torch reference paths.

Why numba: TARQ's per-candidate work is a gather of m rows of the request's Ĉ, their sum, two
dot products and a norm — about 0.7k flops on ~270 bytes. As a chain of torch ops
(``index_select`` → ``embedding_bag`` → ``mv`` → ``vecdot`` → ``vector_norm``) each step
writes its (block, d) intermediate to memory and reads it back and pays dispatch overhead;
fused, a candidate's vector and codes are read once and the rest stays in registers and L1.
numba compiles the loops with LLVM at first use and caches the machine code on disk, so a
fresh machine needs no C compiler and ``make install`` builds nothing; a compiled extension
(pybind11/nanobind) would be as fast but adds a compiler and a build step to every install.

Two details carry most of the speed:

- for m ≤ 8 (the paper's and the default m = 8) the m picked rows are summed as a balanced
  tree in the same loop over the d dimensions as the dot products, so nothing is stored and
  re-read between levels — summing level by level into an accumulator chains m store→load
  round trips per candidate (measured 2.5× slower); larger m and the attention fusion take a
  general path;
- per request, the pair sums Ĉ[2p, a] + Ĉ[2p+1, b] of the four level pairs are tabulated once
  (:func:`pair_sums`, 4·K² rows, 256 KiB at K = 16), so a candidate reads 4 rows and adds 3
  instead of 8 and 7 (measured 1.5× faster per candidate at m = 8, K = 16);
- the rows ``PREFETCH`` candidates ahead are prefetched: the candidates' rows are scattered
  over a table larger than the caches, and a loop that only loads them when it needs them
  waits on one miss at a time.

Every kernel is single-threaded: a serving process scales by running requests concurrently,
and one request is well under a millisecond of arithmetic. Codes are stored as the smallest
unsigned type that holds K − 1 (:func:`code_dtype`, uint8 for K ≤ 256); the level offset l·K
is added in the kernel.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

EPS = np.float32(1e-8)
# Candidates looked ahead by the prefetch; 8–16 measured alike (benchmarks/serving_latency.py).
PREFETCH = 8
GROUP = 8  # levels of the fused path's balanced-tree sum (written out for 8)
PAIRS = GROUP // 2
# Pair sums are worth their per-request cost (PAIRS · K² · d additions) up to K = 16: 4 · 256
# rows of d = 64 float32 is 256 KiB, in L2, built in ~4 µs; at K = 32 it would be 1 MiB.
PAIR_MAX_K = 16
_JIT = {"nogil": True, "cache": True, "fastmath": True, "boundscheck": False}


def code_dtype(codebook_size: int) -> np.dtype:
    """The smallest unsigned integer type that holds codes 0 … K−1."""
    for t in (np.uint8, np.uint16, np.uint32):
        if codebook_size - 1 <= np.iinfo(t).max:
            return np.dtype(t)
    raise ValueError(f"codebook size {codebook_size} does not fit uint32")


@intrinsic
def _prefetch(typingctx, arr, i, j):
    """Hint the CPU to load the cache line of ``arr[i, j]`` (2-D array) for reading."""

    def codegen(context, builder, sig, args):
        aryty = sig.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(
            context, builder, aryty, ary, [args[1], args[2]], wraparound=False
        )
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        # read, high temporal locality, data cache
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(arr, i, j), codegen


@numba.njit(**_JIT)
def _prefetch_row(v_hat, codes, r):
    for j in range(0, v_hat.shape[1], 16):  # 16 float32 = one 64-byte line
        _prefetch(v_hat, r, j)
    if codes.shape[1]:
        _prefetch(codes, r, 0)


@numba.njit(**_JIT)
def _prefetch_start(v_hat, codes, rows):
    """The first PREFETCH candidates' rows; each kernel's loop then fetches PREFETCH ahead."""
    for i in range(min(PREFETCH, rows.shape[0])):
        _prefetch_row(v_hat, codes, rows[i])


@numba.njit(**_JIT)
def _pair_sums(personal, m, k, out):
    z = personal.shape[0] - 1
    d = personal.shape[1]
    for p in range(PAIRS):
        for a in range(k):
            ra = personal[2 * p * k + a if 2 * p < m else z]
            for b in range(k):
                rb = personal[(2 * p + 1) * k + b if 2 * p + 1 < m else z]
                o = out[(p * k + a) * k + b]
                for j in range(d):
                    o[j] = ra[j] + rb[j]


@numba.njit(**_JIT)
def _tarq_kernel_pairs(u_hat, pairs, v_hat, codes, rows, k, scale, bias, out):
    """m ≤ 8 levels, mean/sum fusion, with the request's pair sums: four rows per candidate."""
    n = rows.shape[0]
    m = codes.shape[1]
    d = v_hat.shape[1]
    kk = k * k
    _prefetch_start(v_hat, codes, rows)
    for i in range(n):
        if i + PREFETCH < n:
            _prefetch_row(v_hat, codes, rows[i + PREFETCH])
        r = rows[i]
        c = codes[r]
        q0 = pairs[np.int64(c[0]) * k + (c[1] if m > 1 else 0)]
        q1 = pairs[kk + (np.int64(c[2]) * k + (c[3] if m > 3 else 0) if m > 2 else 0)]
        q2 = pairs[2 * kk + (np.int64(c[4]) * k + (c[5] if m > 5 else 0) if m > 4 else 0)]
        q3 = pairs[3 * kk + (np.int64(c[6]) * k + (c[7] if m > 7 else 0) if m > 6 else 0)]
        vr = v_hat[r]
        uv = np.float32(0.0)
        hv = np.float32(0.0)
        hh = np.float32(0.0)
        for j in range(d):
            x = (q0[j] + q1[j]) + (q2[j] + q3[j])
            v = vr[j]
            uv += u_hat[j] * v
            hv += x * v
            hh += x * x
        out[i] = scale * (uv + hv / max(np.sqrt(hh), EPS)) + bias


@numba.njit(**_JIT)
def _tarq_kernel8(u_hat, personal, v_hat, codes, rows, k, scale, bias, out):
    """m ≤ 8 levels, mean/sum fusion: the fused balanced-tree path."""
    n = rows.shape[0]
    m = codes.shape[1]
    d = v_hat.shape[1]
    z = personal.shape[0] - 1  # the zero row stands in for levels m … 7
    _prefetch_start(v_hat, codes, rows)
    for i in range(n):
        if i + PREFETCH < n:
            _prefetch_row(v_hat, codes, rows[i + PREFETCH])
        r = rows[i]
        p0 = personal[codes[r, 0]]
        p1 = personal[k + codes[r, 1] if m > 1 else z]
        p2 = personal[2 * k + codes[r, 2] if m > 2 else z]
        p3 = personal[3 * k + codes[r, 3] if m > 3 else z]
        p4 = personal[4 * k + codes[r, 4] if m > 4 else z]
        p5 = personal[5 * k + codes[r, 5] if m > 5 else z]
        p6 = personal[6 * k + codes[r, 6] if m > 6 else z]
        p7 = personal[7 * k + codes[r, 7] if m > 7 else z]
        vr = v_hat[r]
        uv = np.float32(0.0)
        hv = np.float32(0.0)
        hh = np.float32(0.0)
        for j in range(d):
            x = ((p0[j] + p1[j]) + (p2[j] + p3[j])) + ((p4[j] + p5[j]) + (p6[j] + p7[j]))
            v = vr[j]
            uv += u_hat[j] * v
            hv += x * v
            hh += x * x
        out[i] = scale * (uv + hv / max(np.sqrt(hh), EPS)) + bias


@numba.njit(**_JIT)
def _tarq_kernel_general(u_hat, personal, pool, use_pool, v_hat, codes, rows, k, scale, bias, out):
    """Any m, mean/sum or attention fusion: levels accumulated one by one into h."""
    n = rows.shape[0]
    m = codes.shape[1]
    d = v_hat.shape[1]
    idx = np.empty(m, dtype=np.int64)
    w = np.ones(m, dtype=np.float32)
    h = np.empty(d, dtype=np.float32)
    _prefetch_start(v_hat, codes, rows)
    for i in range(n):
        if i + PREFETCH < n:
            _prefetch_row(v_hat, codes, rows[i + PREFETCH])
        r = rows[i]
        for t in range(m):
            idx[t] = t * k + codes[r, t]
        if use_pool:
            # Softmax of the m picked entries' pooling logits.
            top = np.float32(-np.inf)
            for t in range(m):
                w[t] = pool[idx[t]]
                top = max(top, w[t])
            tot = np.float32(0.0)
            for t in range(m):
                w[t] = np.exp(w[t] - top)
                tot += w[t]
            for t in range(m):
                w[t] /= tot
        h[:] = 0.0
        for t in range(m):
            pt, wt = personal[idx[t]], w[t]
            for j in range(d):
                h[j] += wt * pt[j]
        vr = v_hat[r]
        uv = np.float32(0.0)
        hv = np.float32(0.0)
        hh = np.float32(0.0)
        for j in range(d):
            v = vr[j]
            x = h[j]
            uv += u_hat[j] * v
            hv += x * v
            hh += x * x
        out[i] = scale * (uv + hv / max(np.sqrt(hh), EPS)) + bias


@numba.njit(**_JIT)
def _tt_kernel(u_hat, v_hat, rows, scale, bias, out):
    n = rows.shape[0]
    d = v_hat.shape[1]
    no_codes = np.empty((1, 0), dtype=np.uint8)
    _prefetch_start(v_hat, no_codes, rows)
    for i in range(n):
        if i + PREFETCH < n:
            _prefetch_row(v_hat, no_codes, rows[i + PREFETCH])
        vr = v_hat[rows[i]]
        uv = np.float32(0.0)
        for j in range(d):
            uv += u_hat[j] * vr[j]
        out[i] = scale * uv + bias


def _all_rows(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.int64)


def padded_codebooks(personal: np.ndarray) -> np.ndarray:
    """(m·K, d) Ĉ → (m·K + 1, d) with a zero last row (the kernels' padding level)."""
    out = np.zeros((personal.shape[0] + 1, personal.shape[1]), dtype=np.float32)
    out[:-1] = personal
    return out


def pair_sums(personal: np.ndarray, n_codebooks: int) -> np.ndarray | None:
    """The request's pair sums Ĉ[2p, a] + Ĉ[2p+1, b] for p < 4 and a, b < K, or None where the
    pair path does not apply (m > 8 or K > :data:`PAIR_MAX_K`).

    With them a candidate reads 4 rows instead of m = 8 and adds 3 instead of 7 (the same
    additions as the balanced tree's first level, done once per request instead of once per
    candidate). Levels beyond m pair with the zero row.

    Args:
        personal: (m·K + 1, d) float32 padded Ĉ (:func:`padded_codebooks`).
    Returns:
        (4·K², d) float32, row p·K² + a·K + b; or None.
    """
    k = (personal.shape[0] - 1) // n_codebooks
    if n_codebooks > GROUP or k > PAIR_MAX_K:
        return None
    out = np.empty((PAIRS * k * k, personal.shape[1]), dtype=np.float32)
    _pair_sums(personal, n_codebooks, k, out)
    return out


def tarq_scores(
    u_hat: np.ndarray,
    personal: np.ndarray,
    v_hat: np.ndarray,
    codes: np.ndarray,
    scale: float,
    bias: float,
    pool_logits: np.ndarray | None = None,
    rows: np.ndarray | None = None,
    pairs: np.ndarray | None = None,
) -> np.ndarray:
    """TARQ logits s · (⟨v̂_u, v̂_i⟩ + cos(Σ_l w_il Ĉ[l, c_il], v̂_i)) + b, fused per candidate.

    Args:
        u_hat: (d,) float32 unit user vector.
        personal: (m·K + 1, d) float32 personalised codebooks, level-major (row l·K + c), and
            a zero last row (:func:`padded_codebooks`).
        v_hat: (T, d) float32 unit item vectors of the table, C-contiguous.
        codes: (T, m) unsigned codes of the table (:func:`code_dtype`), C-contiguous.
        scale, bias: the score head.
        pool_logits: (m·K + 1,) float32 pooling logits of the ``attention`` fusion (weights =
            softmax over the m picked entries; the last is never picked); None for mean/sum
            fusion (cos ignores the 1/m).
        rows: (N,) int64 table rows of the candidates; None: every row in order.
        pairs: the request's :func:`pair_sums` (mean/sum fusion only); None: sum m rows.
    Returns:
        (N,) float32 logits.
    """
    rows = _all_rows(v_hat.shape[0]) if rows is None else rows
    out = np.empty(rows.shape[0], dtype=np.float32)
    k = (personal.shape[0] - 1) // codes.shape[1]
    if pairs is not None and pool_logits is None:
        _tarq_kernel_pairs(
            u_hat, pairs, v_hat, codes, rows, k, np.float32(scale), np.float32(bias), out
        )
        return out
    s, b = np.float32(scale), np.float32(bias)
    if pool_logits is None and codes.shape[1] <= GROUP:
        _tarq_kernel8(u_hat, personal, v_hat, codes, rows, k, s, b, out)
    else:
        use_pool = pool_logits is not None
        pool = pool_logits if use_pool else np.zeros(1, dtype=np.float32)
        _tarq_kernel_general(u_hat, personal, pool, use_pool, v_hat, codes, rows, k, s, b, out)
    return out


def two_tower_scores(
    u_hat: np.ndarray, v_hat: np.ndarray, scale: float, bias: float, rows: np.ndarray | None = None
) -> np.ndarray:
    """TT logits s · ⟨v̂_u, v̂_i⟩ + b: (d,), (T, d) float32, rows (N,) or None → (N,) float32."""
    rows = _all_rows(v_hat.shape[0]) if rows is None else rows
    out = np.empty(rows.shape[0], dtype=np.float32)
    _tt_kernel(u_hat, v_hat, rows, np.float32(scale), np.float32(bias), out)
    return out
