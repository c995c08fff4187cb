"""Target-Attention Net (eq. 13–16): the offline teacher, also the ``ta`` baseline's interaction.

H^tar = MHA(X_seq, X_seq, X_seq);  h_tar = MHA(x_item, H^tar, H^tar).  Cost grows with the
number of candidates × history length, which is why TARQ keeps it out of serving.
"""

from __future__ import annotations

import torch
from torch import nn

from tarq.model.config import ModelConfig
from tarq.model.layers import MultiHeadAttention, SequenceEncoder


class TargetAttention(nn.Module):
    """Full target attention of the candidate item over the behaviour sequence."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d = config.d_model
        self.seq = SequenceEncoder(d, config.n_heads, config.dropout)  # eq. 13
        self.attn = MultiHeadAttention(d, config.n_heads, config.dropout)  # eq. 14

    def encode_sequence(self, x_seq: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """H^tar (B, S, d) from X_seq (B, S, d) and mask (B, S)."""
        return self.seq(x_seq, mask)

    def attend(self, x_item: torch.Tensor, h_seq: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """h_tar (N, d): each row's x_item (N, d) attends over its own H^tar (N, S, d)."""
        return self.attn(x_item[:, None], h_seq, h_seq, mask)[:, 0]

    def forward(
        self, x_item: torch.Tensor, x_seq: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """h_tar (B, d)."""
        return self.attend(x_item, self.encode_sequence(x_seq, mask), mask)
