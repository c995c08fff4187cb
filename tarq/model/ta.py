"""Full target-attention model (``ta``): the backbone plus the teacher path as a ranking model.

ŷ = σ(s · (cos(v_user, v_item) + cos(h_tar, v_item)) + b), h_tar = MHA(x_item, H^tar, H^tar).
It is the accuracy reference TARQ approximates; its serving cost is one attention over the
history PER CANDIDATE (``score`` below), which is what TARQ's codebook lookup avoids.
"""

from __future__ import annotations

import torch

from tarq.data.features import FeatureLayout
from tarq.model.base import Batch, ModelOutput, ScoreHead, TarqModule, UserState, bce, check_batch
from tarq.model.config import ModelConfig
from tarq.model.embeddings import FieldEmbeddings
from tarq.model.layers import cosine
from tarq.model.teacher import TargetAttention
from tarq.model.towers import ItemTower, UserTower


class TargetAttentionModel(TarqModule):
    """Backbone + target attention; losses: ctr."""

    name = "ta"

    def __init__(self, layout: FeatureLayout, config: ModelConfig) -> None:
        super().__init__(layout, config)
        self.emb = FieldEmbeddings(layout, config)
        self.user_tower = UserTower(config)
        self.item_tower = ItemTower(config)
        self.target_attention = TargetAttention(config)
        self.head = ScoreHead(config)

    def user_side(
        self, user: torch.Tensor, hist: torch.Tensor, hist_mask: torch.Tensor
    ) -> UserState:
        """v_user (B, d), ``h_seq`` = H^tar (B, S, d) and its ``mask`` (B, S)."""
        x_seq, mask = self.emb.sequence(hist, hist_mask)
        v_user = self.user_tower(self.emb.x_user(self.emb.user_fields(user)), x_seq, mask)
        h_seq = self.target_attention.encode_sequence(x_seq, mask)
        return UserState(v_user, {"h_seq": h_seq, "mask": mask})

    def item_side(self, item: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, Fi) → (v_item (N, d), x_item (N, d)); x_item is the per-candidate attention query."""
        x_item = self.emb.x_item(self.emb.item_fields(item))
        return self.item_tower(x_item), x_item

    def score(
        self, state: UserState, v_item: torch.Tensor, aux: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits (N,); aux = x_item (N, d). One attention over the history per candidate."""
        if aux is None:
            raise ValueError("the target-attention model's score needs x_item (from item_side)")
        n = v_item.shape[0]
        h_tar = self.target_attention.attend(
            aux, self.pair(state.extra["h_seq"], n), self.pair(state.extra["mask"], n)
        )
        return self.head(cosine(self.pair(state.v_user, n), v_item) + cosine(h_tar, v_item))

    def forward(self, batch: Batch) -> ModelOutput:
        check_batch(batch, self.layout)
        state = self.user_side(batch["user"], batch["hist"], batch["hist_mask"])
        v_item, x_item = self.item_side(batch["item"])
        logit = self.score(state, v_item, x_item)
        losses = {"ctr": bce(logit, batch["label"])} if "label" in batch else {}
        return ModelOutput(logit, losses)
