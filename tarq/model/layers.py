"""Building blocks: multi-head attention with a key mask, the sequence encoder, MLPs."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def dropout_keep(
    shape: torch.Size | tuple[int, ...], p: float, device: torch.device
) -> torch.Tensor:
    """A dropout mask (bool, ``shape``) that keeps each element with probability 1 − p̃.

    p̃ is p rounded to a multiple of 1/256 (0.1 → 0.1016): each element draws one random byte
    (four per 32-bit draw of the global generator) instead of one float, which makes the mask
    ~10× cheaper than ``bernoulli_`` on CPU; seeded runs stay reproducible. Scale the kept
    values by :func:`dropout_scale`.
    """
    n = math.prod(shape)
    # The full int32 range: random_() alone draws [0, 2^31), whose top byte is never ≥ 128.
    words = torch.empty((n + 3) // 4, dtype=torch.int32, device=device).random_(-(2**31), 2**31)
    return words.view(torch.uint8)[:n].view(shape) >= _dropout_threshold(p)


def _dropout_threshold(p: float) -> int:
    return min(255, round(p * 256))


def dropout_scale(p: float) -> float:
    """1 / (1 − p̃), the inverse keep-probability of :func:`dropout_keep`."""
    return 256.0 / (256 - _dropout_threshold(p))


class MultiHeadAttention(nn.Module):
    """Scaled dot-product multi-head attention (Vaswani et al.) with a boolean key mask.

    Written out instead of ``nn.MultiheadAttention`` so that training and the serving path run
    the same arithmetic (no fast path that changes results between train and eval mode).

    Without dropout (eval, or ``dropout`` 0) it calls ``F.scaled_dot_product_attention``,
    which runs a fused kernel. With dropout on the attention weights that function falls back
    to an unfused path whose ``bernoulli_`` mask alone costs more than the attention on CPU
    (measured 39 vs 9 ms for a batch's self-attention), so training spells the same arithmetic
    out with the cheaper mask of :func:`dropout_keep`. Self-attention (query is key is value)
    projects Q, K and V with one matrix product.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.n_heads, self.head_dim).transpose(1, 2)

    def _project(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if query is key and key is value:
            w = torch.cat([self.q.weight, self.k.weight, self.v.weight])
            b = torch.cat([self.q.bias, self.k.bias, self.v.bias])
            q, k, v = F.linear(query, w, b).chunk(3, dim=-1)
            return self._split(q), self._split(k), self._split(v)
        if key is value:
            w = torch.cat([self.k.weight, self.v.weight])
            b = torch.cat([self.k.bias, self.v.bias])
            k, v = F.linear(key, w, b).chunk(2, dim=-1)
        else:
            k, v = self.k(key), self.v(value)
        return self._split(self.q(query)), self._split(k), self._split(v)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attend.

        Args:
            query: (B, Nq, d), or (1, Nq, d) shared by every row (projected once).
            key, value: (B, Nk, d).
            key_mask: (B, Nk) bool, True = attendable. Every row needs at least one True key.
        Returns:
            (B, Nq, d).
        """
        q, k, v = self._project(query, key, value)
        b = k.shape[0]
        p = self.dropout if self.training else 0.0
        if p > 0.0:
            scores = (q * self.head_dim**-0.5) @ k.transpose(-1, -2)  # (B, H, Nq, Nk)
            if key_mask is not None:
                scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
            weights = torch.softmax(scores, dim=-1)
            weights = weights * dropout_keep(weights.shape, p, weights.device)
            o = (weights @ v) * dropout_scale(p)
        else:
            mask = None if key_mask is None else key_mask[:, None, None, :]
            o = F.scaled_dot_product_attention(q.expand(b, -1, -1, -1), k, v, attn_mask=mask)
        nq = o.shape[2]
        return self.out(o.transpose(1, 2).reshape(b, nq, self.n_heads * self.head_dim))


class SequenceEncoder(nn.Module):
    """Self-attention over the behaviour sequence, H = LayerNorm(X + MHA(X, X, X)) (eq. 1/9/13).

    The residual and LayerNorm are the usual transformer wrapping around the paper's MHA; they
    keep each element's own identity next to its context.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: (B, S, d), mask: (B, S) bool (True = real) → (B, S, d)."""
        return self.norm(x + self.attn(x, x, x, mask))


def mlp(d_in: int, hidden: tuple[int, ...], d_out: int, dropout: float) -> nn.Sequential:
    """Linear–ReLU–Dropout stack ending in a plain Linear to ``d_out``."""
    layers: list[nn.Module] = []
    prev = d_in
    for h in hidden:
        layers += [nn.Linear(prev, h), nn.ReLU(), nn.Dropout(dropout)]
        prev = h
    layers.append(nn.Linear(prev, d_out))
    return nn.Sequential(*layers)


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity of (..., d) tensors → (...)."""
    return F.cosine_similarity(a, b, dim=-1, eps=1e-8)
