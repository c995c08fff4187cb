"""The lean per-request user side: the model's ``user_side`` arithmetic for ONE request with
fewer, larger ops, for serving.

The model's ``user_side`` is written for training batches: (B, S, d) tensors, a key mask on
every attention, three projections per attention, the static codebooks projected into
queries on every call. For one request at L = 50 that is ~100 small torch ops whose dispatch
costs more than their arithmetic. Here, built once per loaded model:

- Q, K and V of each self-attention come from one fused (d, 3d) projection, K and V of each
  cross-attention from one (d, 2d) projection;
- the RQ-Attention's queries — the m·K static codebook entries, lifted and projected — are
  constant after training, so they are projected once, not per request;
- padded history slots are dropped instead of masked (a masked key contributes nothing and
  a padded slot's own output is never read), so no attention needs a mask and the tensors
  are 2-D (S, d) with heads as the batch dimension.

It reads the model's parameters (no copy except the fused and precomputed tensors), so it
must be rebuilt if the weights change. ``tests/test_serving.py`` checks it against the
model's ``user_side`` for TARQ (both fusions, with and without the dz → d lift), TT and TA.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tarq.model.layers import MultiHeadAttention, SequenceEncoder


@dataclass
class LeanState:
    """One request's user side.

    Attributes:
        v_user: (d,) user vector (not normalised).
        personal: (m·K, d) personalised codebooks Ĉ, level-major, or None (no RQ-Attention).
        h_seq: (S, d) the target attention's H^tar, or None (no target attention).
    """

    v_user: torch.Tensor
    personal: torch.Tensor | None = None
    h_seq: torch.Tensor | None = None


class _Attention:
    """A ``MultiHeadAttention`` with its K/V (and Q/K/V) projections fused."""

    def __init__(self, attn: MultiHeadAttention) -> None:
        self.h, self.dh = attn.n_heads, attn.head_dim
        self.q, self.out = attn.q, attn.out
        self.w_kv = torch.cat([attn.k.weight, attn.v.weight]).detach()
        self.b_kv = torch.cat([attn.k.bias, attn.v.bias]).detach()
        self.w_qkv = torch.cat([attn.q.weight, self.w_kv]).detach()
        self.b_qkv = torch.cat([attn.q.bias, self.b_kv]).detach()

    def heads(self, x: torch.Tensor, parts: int) -> torch.Tensor:
        """(S, parts·d) → (parts, H, S, dh)."""
        return x.view(x.shape[0], parts, self.h, self.dh).permute(1, 2, 0, 3)

    def kv(self, mem: torch.Tensor) -> torch.Tensor:
        """Keys and values (2, H, S, dh) of a memory (S, d)."""
        return self.heads(F.linear(mem, self.w_kv, self.b_kv), 2)

    def attend(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        """Queries (H, Nq, dh) over keys/values (2, H, S, dh) → output (Nq, d)."""
        # 4-D inputs: with 3-D ones torch takes the unfused math path (an S × S matrix).
        o = F.scaled_dot_product_attention(q[None], kv[0][None], kv[1][None])[0]
        return self.out(o.transpose(0, 1).reshape(q.shape[1], self.h * self.dh))

    def self_attend(self, x: torch.Tensor) -> torch.Tensor:
        """MHA(X, X, X) of (S, d) → (S, d)."""
        qkv = self.heads(F.linear(x, self.w_qkv, self.b_qkv), 3)
        return self.attend(qkv[0], qkv[1:])


class _Encoder:
    """A ``SequenceEncoder``: LayerNorm(X + MHA(X, X, X)) of (S, d)."""

    def __init__(self, enc: SequenceEncoder) -> None:
        self.attn = _Attention(enc.attn)
        self.norm = enc.norm

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.attn.self_attend(x))


class LeanUserSide:
    """Inference-only user side of a TT, TA or TARQ model for one request.

    Args:
        model: the model in eval mode (``user_tower`` and ``emb``; ``rq_attention`` and
            ``quantizer`` for TARQ; ``target_attention`` for TA).
    """

    def __init__(self, model: nn.Module) -> None:
        if model.training:
            raise ValueError("LeanUserSide needs the model in eval mode (model.eval())")
        emb = model.emb
        self.emb = emb
        self.fields = emb.layout.seq_fields
        self.user_fields = emb.layout.user_fields
        tower = model.user_tower
        self.seq_user = _Encoder(tower.seq)
        self.user_attn = _Attention(tower.attn)
        self.mlp = tower.mlp
        self.rq_seq = self.rq_attn = self.books_q = None
        rq = getattr(model, "rq_attention", None)
        if rq is not None:
            # None: RQ-Attention attends over the user tower's H^user (rq_history = "user").
            self.rq_seq = None if rq.seq is tower.seq else _Encoder(rq.seq)
            self.rq_attn = _Attention(rq.attn)
            with torch.no_grad():
                books = model.quantizer.codebooks
                q = rq.attn.q(rq.lift(books.reshape(-1, books.shape[-1])))
            self.books_q = self.rq_attn.heads(q.detach().clone(), 1)[0]  # (H, m·K, dh)
        ta = getattr(model, "target_attention", None)
        self.ta_seq = _Encoder(ta.seq) if ta is not None else None

    def x_user(self, user: torch.Tensor) -> torch.Tensor:
        """User field indices (Fu,) → x_user (1, d)."""
        e = self.emb
        rows = [e.tables[f].weight[user[j]] for j, f in enumerate(self.user_fields)]
        return e.user_proj(torch.cat(rows)[None])

    def x_seq(self, hist: torch.Tensor) -> torch.Tensor:
        """Real behaviours (n, Fs), oldest first → X_seq (1 + n, d) with the no-history token."""
        e = self.emb
        n = hist.shape[0]
        if n == 0:
            return e.no_history[None]
        parts = [e.tables[self.fields[j]].weight[hist[:, j]] for j in e.seq_item_cols]
        x = e.shared_proj(torch.cat(parts, dim=1))
        for j, f in e.context_cols:
            x = x + e.tables[f].weight[hist[:, j]]
        if e.positional is not None:
            # Recency 0 = the most recent behaviour, as FieldEmbeddings.sequence counts it.
            recency = torch.arange(n - 1, -1, -1).clamp_(max=e.positional.num_embeddings - 2)
            x = x + e.positional.weight[recency + 1]
        return torch.cat([e.no_history[None], x])

    @torch.inference_mode()
    def __call__(self, user: torch.Tensor, hist: torch.Tensor) -> LeanState:
        """User field indices (Fu,) int64 and the real behaviours (n, Fs) int64 (n ≥ 0, no
        padding) → :class:`LeanState`."""
        x_user = self.x_user(user)
        x_seq = self.x_seq(hist)
        h_user = self.seq_user(x_seq)
        q = self.user_attn.heads(self.user_attn.q(x_user), 1)[0]
        summary = self.user_attn.attend(q, self.user_attn.kv(h_user))
        state = LeanState(self.mlp(torch.cat([x_user, summary], dim=1))[0])
        if self.rq_attn is not None:
            kv = self.rq_attn.kv(self.rq_seq(x_seq) if self.rq_seq is not None else h_user)
            state.personal = self.rq_attn.attend(self.books_q, kv)
        if self.ta_seq is not None:
            state.h_seq = self.ta_seq(x_seq)
        return state
