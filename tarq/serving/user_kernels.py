"""The fused user side (numba): the lean path's arithmetic for one request in a handful of
compiled calls instead of ~40 torch ops.

At L = 50 the user side is ~10 MFLOP for TARQ and ~4 MFLOP for TT, a few tens of µs at this
machine's peak, while the torch path spends most of its time dispatching small ops
(benchmarks/README.md "Roofline": 4–6× its floor). Here each step is one numba function whose
matrix products are BLAS calls (``np.dot`` on 2-D float32) and whose softmax, LayerNorm and
gathers are loops compiled with LLVM:

- the inputs: x_user and X_seq (field-embedding gathers, the projections, context and recency
  embeddings, the no-history token) in one call;
- each sequence encoder LayerNorm(X + MHA(X, X, X)) in one call, heads as per-head weight
  slices prepared once (the 1/√dh scale folded into the query weights);
- each cross-attention (the user tower's one query, RQ-Attention's m·K precomputed codebook
  queries) in one call.

The softmax's exponentials are a vectorisable exp (:func:`_softmax_rows`: 2^n by the exponent
bits times a degree-6 polynomial): numba's ``math.exp`` is a scalar libm call, measured 2.3 ns
per element against 0.33 here, which at L = 50 would cost about as much as all the matrix
products. Long histories go to the torch lean path (``max_len``): its flash attention never
materialises the S × S scores that this module does.

Results equal :class:`~tarq.serving.user_side.LeanUserSide` and the model's ``user_side`` to
float32 rounding (``tests/test_kernels.py``: TARQ with both fusions and the dz → d lift, a
shared history encoder, no recency embedding, TT, TA; full, short, one-behaviour and empty
histories, and the hand-over past ``max_len``).
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from torch import nn

from tarq.model.layers import MultiHeadAttention, SequenceEncoder
from tarq.serving.user_side import LeanState, LeanUserSide

_JIT = {"nogil": True, "cache": True, "fastmath": True, "boundscheck": False}
LOG2E = np.float32(1.4426950408889634)
LN2 = np.float32(0.6931471805599453)
# Histories longer than this go to the torch lean path (measured crossover: see
# benchmarks/serving_latency.py's fixed-cost columns).
MAX_FUSED_LEN = 256
BLOCK = 32  # query rows per block of scores in _attend


@numba.njit(**_JIT)
def _softmax_rows(s, bits):
    """Row-wise softmax of s (Nq, S) in place.

    exp(x) = 2^n · e^(f·ln2) with n = round(x·log2 e), |f| ≤ ½: the polynomial is a Taylor
    series to degree 6 (|f·ln2| ≤ 0.347, truncation < 7e-8); x·log2 e rounded to float32 adds
    up to ~2e-6 relative at x ≈ −30. 2^n is written into the float's exponent bits (``bits``,
    an int32 scratch of S). Inputs below −87 (weights < 2e-38 of the row's largest) are
    clamped there.
    """
    rows, cols = s.shape
    scale = bits.view(np.float32)
    for i in range(rows):
        r = s[i]
        mx = r[0]
        for j in range(1, cols):
            mx = max(mx, r[j])
        for j in range(cols):
            t = max(r[j] - mx, np.float32(-87.0)) * LOG2E
            n = np.floor(t + np.float32(0.5))
            y = (t - n) * LN2
            p = np.float32(1.0 / 720.0)
            p = p * y + np.float32(1.0 / 120.0)
            p = p * y + np.float32(1.0 / 24.0)
            p = p * y + np.float32(1.0 / 6.0)
            p = p * y + np.float32(0.5)
            p = p * y + np.float32(1.0)
            p = p * y + np.float32(1.0)
            r[j] = p
            bits[j] = (np.int32(n) + 127) << 23
        total = np.float32(0.0)
        for j in range(cols):
            r[j] *= scale[j]
            total += r[j]
        inv = np.float32(1.0) / total
        for j in range(cols):
            r[j] *= inv


@numba.njit(**_JIT)
def _attend(q, k, v, bits, out, col):
    """One head: softmax(q kᵀ) v of q (Nq, dh) (pre-scaled), k, v (S, dh) into out[:, col:col+dh].

    ``BLOCK`` query rows at a time, so that the scores being normalised (BLOCK × S) stay in
    L2 whatever S is: the whole Nq × S matrix at S = 1001 is 4 MB, and the softmax's passes
    over it ran at memory speed (measured 2.5× slower than blocked).
    """
    nq, dh = q.shape
    kt = np.ascontiguousarray(k.T)
    for i0 in range(0, nq, BLOCK):
        i1 = min(i0 + BLOCK, nq)
        s = np.dot(q[i0:i1], kt)
        _softmax_rows(s, bits)
        o = np.dot(s, v)
        for i in range(i1 - i0):
            for j in range(dh):
                out[i0 + i, col + j] = o[i, j]


@numba.njit(**_JIT)
def _encode(x, w_qkv, b_qkv, wo_t, bo, ln_w, ln_b, eps):
    """LayerNorm(X + MHA(X, X, X)) of X (S, d); w_qkv (3, H, d, dh), b_qkv (3, H, dh)."""
    s, d = x.shape
    heads, dh = w_qkv.shape[1], w_qkv.shape[3]
    o = np.empty((s, d), np.float32)
    bits = np.empty(s, np.int32)
    for h in range(heads):
        q = np.dot(x, w_qkv[0, h]) + b_qkv[0, h]
        k = np.dot(x, w_qkv[1, h]) + b_qkv[1, h]
        v = np.dot(x, w_qkv[2, h]) + b_qkv[2, h]
        _attend(q, k, v, bits, o, h * dh)
    y = np.dot(o, wo_t) + bo + x
    inv_d = np.float32(1.0 / d)
    for i in range(s):
        r = y[i]
        mean = np.float32(0.0)
        for j in range(d):
            mean += r[j]
        mean *= inv_d
        var = np.float32(0.0)
        for j in range(d):
            c = r[j] - mean
            var += c * c
        inv = np.float32(1.0) / np.sqrt(var * inv_d + eps)
        for j in range(d):
            r[j] = (r[j] - mean) * inv * ln_w[j] + ln_b[j]
    return y


@numba.njit(**_JIT)
def _cross(q, mem, w_kv, b_kv, wo_t, bo):
    """MHA(Q, H, H) of per-head queries q (H, Nq, dh) (pre-scaled, projected) over a memory
    (S, d) with w_kv (2, H, d, dh), b_kv (2, H, dh) → (Nq, d)."""
    heads, nq, dh = q.shape
    o = np.empty((nq, heads * dh), np.float32)
    bits = np.empty(mem.shape[0], np.int32)
    for h in range(heads):
        k = np.dot(mem, w_kv[0, h]) + b_kv[0, h]
        v = np.dot(mem, w_kv[1, h]) + b_kv[1, h]
        _attend(q[h], k, v, bits, o, h * dh)
    return np.dot(o, wo_t) + bo


@numba.njit(**_JIT)
def _inputs(user, user_tables, wu_t, bu, hist, item_cols, item_tables, ws_t, bs,
            ctx_cols, ctx_tables, pos, no_hist):  # fmt: skip
    """x_user (d,) and X_seq (1 + n, d) of one request (FieldEmbeddings' arithmetic).

    user (Fu,) and hist (n, Fs) are int64 indices, checked against their tables (the arrays
    are read without bounds checks); ``pos`` is (0, d) without the recency embedding. Row 0 of X_seq is the no-history token; the behaviours follow, oldest first.
    """
    e = user_tables[0].shape[1]
    d = bu.shape[0]
    u = np.empty(len(user_tables) * e, np.float32)
    for f in range(len(user_tables)):
        if user[f] < 0 or user[f] >= user_tables[f].shape[0]:
            raise IndexError("user field index outside its embedding table")
        u[f * e : (f + 1) * e] = user_tables[f][user[f]]
    x_user = np.dot(u.reshape(1, -1), wu_t)[0] + bu
    n = hist.shape[0]
    x = np.empty((n + 1, d), np.float32)
    x[0] = no_hist
    if n == 0:
        return x_user, x
    ei = item_tables[0].shape[1]
    parts = np.empty((n, len(item_tables) * ei), np.float32)
    for i in range(n):
        for f in range(len(item_tables)):
            j = hist[i, item_cols[f]]
            if j < 0 or j >= item_tables[f].shape[0]:
                raise IndexError("behaviour field index outside its embedding table")
            parts[i, f * ei : (f + 1) * ei] = item_tables[f][j]
    x[1:] = np.dot(parts, ws_t) + bs
    top = pos.shape[0] - 2
    for i in range(n):
        r = x[i + 1]
        for f in range(ctx_cols.shape[0]):
            j = hist[i, ctx_cols[f]]
            if j < 0 or j >= ctx_tables[f].shape[0]:
                raise IndexError("behaviour context index outside its embedding table")
            r += ctx_tables[f][j]
        if pos.shape[0]:
            r += pos[min(n - 1 - i, top) + 1]
    return x_user, x


def one_blas_thread() -> None:
    """Limit the process's BLAS libraries (the SciPy OpenBLAS that numba's ``np.dot`` calls,
    and numpy's) to one thread.

    OpenBLAS otherwise starts a thread per core for products above a size; a request's user
    side is far too small to gain from that, and a serving process scales by answering
    requests concurrently (``tarq serve --workers``), where the extra threads only contend
    (measured under load: the fused user side at L = 300 took 1.3 ms with two BLAS threads).
    Process-wide and lasting, like ``torch.set_num_threads``; torch's own threads are not
    affected.
    """
    import scipy.linalg.cython_blas  # noqa: F401  (loaded, so that threadpoolctl sees it)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def _np(t: torch.Tensor) -> np.ndarray:
    """A contiguous float32 numpy copy of a (detached) parameter."""
    return np.ascontiguousarray(t.detach().float().numpy())


def _heads(w: torch.Tensor, b: torch.Tensor, n_heads: int, scale: float = 1.0):
    """nn.Linear weight (d_out, d_in) and bias → per-head (H, d_in, dh) and (H, dh), × scale."""
    d_out, d_in = w.shape
    dh = d_out // n_heads
    wh = (w.detach().float() * scale).T.reshape(d_in, n_heads, dh).permute(1, 0, 2)
    return _np(wh), _np((b.detach().float() * scale).reshape(n_heads, dh))


class _Attn:
    """A MultiHeadAttention's weights in the kernels' per-head layout."""

    def __init__(self, attn: MultiHeadAttention) -> None:
        self.h = attn.n_heads
        self.scale = attn.head_dim**-0.5
        wq, bq = _heads(attn.q.weight, attn.q.bias, self.h, self.scale)
        wk, bk = _heads(attn.k.weight, attn.k.bias, self.h)
        wv, bv = _heads(attn.v.weight, attn.v.bias, self.h)
        self.w_qkv, self.b_qkv = np.stack([wq, wk, wv]), np.stack([bq, bk, bv])
        self.w_kv, self.b_kv = self.w_qkv[1:], self.b_qkv[1:]  # C-contiguous views
        # The scaled Q projection again as one (d, d) matrix, for queries() (heads in columns).
        self.wq_t = np.ascontiguousarray(wq.transpose(1, 0, 2).reshape(wq.shape[1], -1))
        self.bq = bq.reshape(-1)
        self.wo_t, self.bo = _np(attn.out.weight.T), _np(attn.out.bias)

    def queries(self, x: np.ndarray) -> np.ndarray:
        """Rows (Nq, d) → scaled per-head queries (H, Nq, dh)."""
        q = x @ self.wq_t + self.bq
        return np.ascontiguousarray(q.reshape(q.shape[0], self.h, -1).transpose(1, 0, 2))

    def cross(self, q: np.ndarray, mem: np.ndarray) -> np.ndarray:
        return _cross(q, mem, self.w_kv, self.b_kv, self.wo_t, self.bo)


class _Enc:
    """A SequenceEncoder's weights for :func:`_encode`."""

    def __init__(self, enc: SequenceEncoder) -> None:
        self.a = _Attn(enc.attn)
        self.ln_w, self.ln_b = _np(enc.norm.weight), _np(enc.norm.bias)
        self.eps = np.float32(enc.norm.eps)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        a = self.a
        return _encode(x, a.w_qkv, a.b_qkv, a.wo_t, a.bo, self.ln_w, self.ln_b, self.eps)


class FusedUserSide:
    """Inference-only user side of a TT, TA or TARQ model for one request, fused (numba).

    Same call and result as :class:`~tarq.serving.user_side.LeanUserSide`; histories longer
    than ``max_len`` behaviours are handed to it. The weights are copied into the kernels'
    layout once, so it must be rebuilt if they change. Building one limits the process's BLAS
    to one thread (:func:`one_blas_thread`).

    Args:
        model: the model in eval mode.
        max_len: the longest history computed here (default :data:`MAX_FUSED_LEN`).
    """

    def __init__(self, model: nn.Module, max_len: int = MAX_FUSED_LEN) -> None:
        self.lean = LeanUserSide(model)  # checks eval mode; the long-history path
        one_blas_thread()
        self.max_len = max_len
        emb = model.emb
        lay = emb.layout
        tables = {f: emb.tables[f].weight.detach().numpy() for f in emb.tables}
        self.user_tables = tuple(tables[f] for f in lay.user_fields)
        self.item_cols = np.array(emb.seq_item_cols, np.int64)
        self.item_tables = tuple(tables[lay.seq_fields[j]] for j in emb.seq_item_cols)
        self.ctx_cols = np.array([j for j, _ in emb.context_cols], np.int64)
        d = emb.d_model
        self.ctx_tables = tuple(tables[f] for _, f in emb.context_cols) or (
            np.zeros((1, d), np.float32),
        )
        self.wu_t, self.bu = _np(emb.user_proj.weight.T), _np(emb.user_proj.bias)
        self.ws_t, self.bs = _np(emb.shared_proj.weight.T), _np(emb.shared_proj.bias)
        pos = emb.positional
        self.pos = _np(pos.weight) if pos is not None else np.zeros((0, d), np.float32)
        self.no_hist = _np(emb.no_history)
        tower = model.user_tower
        self.seq_user = _Enc(tower.seq)
        self.user_attn = _Attn(tower.attn)
        self.mlp = [
            (_np(m.weight.T), _np(m.bias), i < len(tower.mlp) - 1)
            for i, m in enumerate(tower.mlp)
            if isinstance(m, nn.Linear)
        ]
        self.rq_seq = self.rq_attn = self.books_q = None
        rq = getattr(model, "rq_attention", None)
        if rq is not None:
            self.rq_seq = None if rq.seq is tower.seq else _Enc(rq.seq)  # None: H^rq = H^user
            self.rq_attn = _Attn(rq.attn)
            with torch.no_grad():
                books = model.quantizer.codebooks
                lifted = _np(rq.lift(books.reshape(-1, books.shape[-1])))
            self.books_q = self.rq_attn.queries(lifted)  # (H, m·K, dh)
        ta = getattr(model, "target_attention", None)
        self.ta_seq = _Enc(ta.seq) if ta is not None else None

    def inputs(self, user: np.ndarray, hist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x_user (d,) and X_seq (1 + n, d) of user indices (Fu,) and behaviours (n, Fs)."""
        return _inputs(
            user, self.user_tables, self.wu_t, self.bu, hist, self.item_cols,
            self.item_tables, self.ws_t, self.bs, self.ctx_cols,
            self.ctx_tables, self.pos, self.no_hist,
        )  # fmt: skip

    def __call__(self, user: torch.Tensor, hist: torch.Tensor) -> LeanState:
        """User field indices (Fu,) int64 and the real behaviours (n, Fs) int64 (n ≥ 0, no
        padding) → :class:`~tarq.serving.user_side.LeanState` (tensors sharing the arrays)."""
        if hist.shape[0] > self.max_len:
            return self.lean(user, hist)
        u = np.ascontiguousarray(user.numpy(), dtype=np.int64)
        hh = np.ascontiguousarray(hist.numpy(), dtype=np.int64)
        x_user, x_seq = self.inputs(u, hh)
        h_user = self.seq_user(x_seq)
        summary = self.user_attn.cross(self.user_attn.queries(x_user[None]), h_user)
        z = np.concatenate([x_user[None], summary], axis=1)
        for w_t, b, relu in self.mlp:
            z = z @ w_t + b
            if relu:
                np.maximum(z, 0.0, out=z)
        state = LeanState(torch.from_numpy(z[0]))
        if self.rq_attn is not None:
            h_rq = self.rq_seq(x_seq) if self.rq_seq is not None else h_user
            personal = self.rq_attn.cross(self.books_q, h_rq)
            state.personal = torch.from_numpy(personal)
        if self.ta_seq is not None:
            state.h_seq = torch.from_numpy(self.ta_seq(x_seq))
        return state
