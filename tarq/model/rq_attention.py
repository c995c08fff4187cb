"""RQ-Attention Net: autoencoder (eq. 6) and personalised codebooks (eq. 9–12).

All m·K static codebook entries are the queries of ONE batched attention over the user's
contextualised history H^rq, giving Ĉ (B, m, K, d). The static entries live in R^dz; when
dz ≠ d_model a linear map lifts them to d_model first (identity otherwise). Ĉ, h_rq, h_tar and
v_item all live in R^d_model, which is what the alignment's r̂ = h_tar − … needs.
"""

from __future__ import annotations

import torch
from torch import nn

from tarq.model.config import ModelConfig
from tarq.model.layers import MultiHeadAttention, SequenceEncoder, mlp


class AutoEncoder(nn.Module):
    """z = Enc(x_item), x̂ = Dec(z). Trained on the DETACHED x_item only (eq. 6)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d, h, dz = config.d_model, config.ae_hidden, config.dz
        self.encoder = mlp(d, (h,), dz, 0.0)
        self.decoder = mlp(dz, (h,), d, 0.0)

    def encode(self, x_item: torch.Tensor) -> torch.Tensor:
        """x_item (N, d) → z (N, dz); the input is detached so no gradient reaches the embeddings."""
        return self.encoder(x_item.detach())

    def recon_loss(self, x_item: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Eq. 6, mean over rows of ‖sg[x_item] − Dec(z)‖²; scalar."""
        return ((x_item.detach() - self.decoder(z)) ** 2).sum(-1).mean()


class RQAttention(nn.Module):
    """Personalised codebooks and the fused approximate target-attention output h_rq."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d = config.d_model
        self.m, self.k = config.n_codebooks, config.codebook_size
        self.seq = SequenceEncoder(d, config.n_heads, config.dropout)  # eq. 9
        self.attn = MultiHeadAttention(d, config.n_heads, config.dropout)  # eq. 10
        self.lift: nn.Module = nn.Identity() if config.dz == d else nn.Linear(config.dz, d)
        self.fusion = config.fusion
        if self.fusion == "attention":
            self.pool = nn.Linear(d, 1, bias=False)

    def personal_codebooks(
        self, codebooks: torch.Tensor, x_seq: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Ĉ_l = MHA(C_l, H^rq, H^rq) for all levels in one call.

        Args:
            codebooks: (m, K, dz) static entries.  x_seq: (B, S, d).  mask: (B, S) bool.
        Returns:
            (B, m, K, d).
        """
        return self.personalise(codebooks, self.seq(x_seq, mask), mask)

    def personalise(
        self, codebooks: torch.Tensor, h: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Eq. 10 over an already encoded history H^rq (B, S, d): (m, K, dz) → (B, m, K, d)."""
        q = self.lift(codebooks.reshape(self.m * self.k, -1))
        out = self.attn(q[None], h, h, mask)
        return out.view(h.shape[0], self.m, self.k, -1)

    @staticmethod
    def lookup(personal: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Ê_rq: row b, level l takes Ĉ[b, l, codes[b, l]].

        Args:
            personal: (B, m, K, d).  codes: (B, m) int64.
        Returns:
            (B, m, d).
        """
        idx = codes[:, :, None, None].expand(-1, -1, 1, personal.shape[-1])
        return personal.gather(2, idx)[:, :, 0]

    def fuse(self, vectors: torch.Tensor) -> torch.Tensor:
        """Eq. 11: (N, m, d) → h_rq (N, d) by mean (default), sum or learned attention pooling."""
        if self.fusion == "mean":
            return vectors.mean(1)
        if self.fusion == "sum":
            return vectors.sum(1)
        w = torch.softmax(self.pool(vectors), dim=1)
        return (w * vectors).sum(1)
