"""The two-tower backbone (paper eq. 1–5)."""

from __future__ import annotations

import torch
from torch import nn

from tarq.model.config import ModelConfig
from tarq.model.layers import MultiHeadAttention, SequenceEncoder, mlp


class HistoryAttention(nn.Module):
    """h_user = MHA(x_user, H^user, H^user) with H^user = MHA(X, X, X) (eq. 1–2).

    The history input every user tower of the comparison gets (TT, IntTower, MVKE, TA, TARQ).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d = config.d_model
        self.seq = SequenceEncoder(d, config.n_heads, config.dropout)  # eq. 1
        self.attn = MultiHeadAttention(d, config.n_heads, config.dropout)  # eq. 2

    def summary(
        self, x_user: torch.Tensor, x_seq: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """h_user (B, d) from x_user (B, d), X_seq (B, S, d) and its mask (B, S)."""
        return self.attend(x_user, self.seq(x_seq, mask), mask)

    def attend(self, x_user: torch.Tensor, h_seq: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """h_user (B, d) from x_user (B, d) over an encoded history H^user (B, S, d) (eq. 2)."""
        return self.attn(x_user[:, None], h_seq, h_seq, mask)[:, 0]


class UserTower(HistoryAttention):
    """v_user = MLP([x_user; MHA(x_user, H^user, H^user)]) with H^user = MHA(X, X, X)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        d = config.d_model
        self.mlp = mlp(2 * d, config.tower_hidden, d, config.dropout)  # eq. 3

    def forward(
        self, x_user: torch.Tensor, x_seq: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """v_user (B, d)."""
        return self.from_encoded(x_user, self.seq(x_seq, mask), mask)

    def from_encoded(
        self, x_user: torch.Tensor, h_seq: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """v_user (B, d) over an already encoded history H^user (B, S, d)."""
        return self.mlp(torch.cat([x_user, self.attend(x_user, h_seq, mask)], dim=-1))


class ItemTower(nn.Module):
    """v_item = MLP(x_item) (eq. 4)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.mlp = mlp(config.d_model, config.tower_hidden, config.d_model, config.dropout)

    def forward(self, x_item: torch.Tensor) -> torch.Tensor:
        """x_item (N, d) → v_item (N, d)."""
        return self.mlp(x_item)
