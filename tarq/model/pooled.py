"""Sanity two-tower (``pooled``): mean-pooled history, a dot product and a per-item bias.

The plainest model that can learn from the behaviour sequence (YouTube-DNN style), beside the
paper's TT so that a weak TT shows up as weak::

    u     = MLP([x_user; mean_{i real} x_i])          (B, d)   x_i as every model embeds it
    logit = ⟨u, x_item⟩ / √d + bias_item[item_id] + b

No attention, no cosine, no temperature: the history reaches the score through an average of
the same shared embeddings the other models attend over, and item popularity through its own
bias. It serves like the two-tower (user side once, a dot product and a gather per candidate).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from tarq.data.features import FeatureLayout
from tarq.model.base import Batch, ModelOutput, TarqModule, UserState, bce, check_batch
from tarq.model.config import ModelConfig
from tarq.model.embeddings import FieldEmbeddings
from tarq.model.layers import mlp


class PooledTwoTower(TarqModule):
    """Mean-pooled-history two-tower with a per-item bias; losses: ctr."""

    name = "pooled"

    def __init__(self, layout: FeatureLayout, config: ModelConfig) -> None:
        super().__init__(layout, config)
        d = config.d_model
        self.emb = FieldEmbeddings(layout, config)
        self.user_mlp = mlp(2 * d, config.tower_hidden, d, config.dropout)
        self.item_bias = nn.Embedding(layout.vocab_sizes["item_id"], 1)
        nn.init.zeros_(self.item_bias.weight)
        self.bias = nn.Parameter(torch.zeros(()))
        self.item_col = layout.item_fields.index("item_id")
        self.inv_sqrt_d = 1.0 / math.sqrt(d)

    @torch.no_grad()
    def init_score_bias(self, label: torch.Tensor) -> None:
        """The global bias b at the log-odds of ``label``'s click rate (see the base class)."""
        logit = self.base_rate_logit(label)
        if logit is not None:
            self.bias.fill_(logit)

    def user_side(
        self, user: torch.Tensor, hist: torch.Tensor, hist_mask: torch.Tensor
    ) -> UserState:
        """(B, Fu), (B, L, Fs), (B, L) → u (B, d)."""
        x_seq, mask = self.emb.sequence(hist, hist_mask)
        real = mask[:, 1:, None].to(x_seq.dtype)  # column 0 is the no-history token
        pooled = (x_seq[:, 1:] * real).sum(1) / real.sum(1).clamp_min(1.0)
        x_user = self.emb.x_user(self.emb.user_fields(user))
        return UserState(self.user_mlp(torch.cat([x_user, pooled], dim=-1)))

    def item_side(self, item: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, Fi) → (x_item (N, d), per-item bias (N,))."""
        x_item = self.emb.x_item(self.emb.item_fields(item))
        return x_item, self.item_bias(item[:, self.item_col])[:, 0]

    def score(
        self, state: UserState, v_item: torch.Tensor, aux: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits (N,): ⟨u, x_item⟩/√d + bias_item + b; aux = the per-item bias (N,)."""
        if aux is None:
            raise ValueError("the pooled two-tower's score needs the item bias (from item_side)")
        u = self.pair(state.v_user, v_item.shape[0])
        return (u * v_item).sum(-1) * self.inv_sqrt_d + aux + self.bias

    def forward(self, batch: Batch) -> ModelOutput:
        check_batch(batch, self.layout)
        state = self.user_side(batch["user"], batch["hist"], batch["hist_mask"])
        v_item, bias = self.item_side(batch["item"])
        logit = self.score(state, v_item, bias)
        losses = {"ctr": bce(logit, batch["label"])} if "label" in batch else {}
        return ModelOutput(logit, losses)
