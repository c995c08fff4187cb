"""Building blocks: multi-head attention with a key mask, the sequence encoder, MLPs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MultiHeadAttention(nn.Module):
    """Scaled dot-product multi-head attention (Vaswani et al.) with a boolean key mask.

    Written out instead of ``nn.MultiheadAttention`` so that training and the serving path run
    the same arithmetic (no fast path that changes results between train and eval mode).
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

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attend.

        Args:
            query: (B, Nq, d).  key, value: (B, Nk, d).
            key_mask: (B, Nk) bool, True = attendable. Every row needs at least one True key.
        Returns:
            (B, Nq, d).
        """
        q, k, v = self._split(self.q(query)), self._split(self.k(key)), self._split(self.v(value))
        mask = None if key_mask is None else key_mask[:, None, None, :]
        o = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        b, _, nq, _ = o.shape
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
