"""Two-tower baseline (TT): the backbone alone, ŷ = σ(s · cos(v_user, v_item) + b)."""

from __future__ import annotations

import torch

from tarq.data.features import FeatureLayout
from tarq.model.base import Batch, ModelOutput, ScoreHead, TarqModule, UserState, bce, check_batch
from tarq.model.config import ModelConfig
from tarq.model.embeddings import FieldEmbeddings
from tarq.model.layers import cosine
from tarq.model.towers import ItemTower, UserTower


class TwoTower(TarqModule):
    """Eq. 1–5 with the shared score head; losses: ctr."""

    name = "tt"

    def __init__(self, layout: FeatureLayout, config: ModelConfig) -> None:
        super().__init__(layout, config)
        self.emb = FieldEmbeddings(layout, config)
        self.user_tower = UserTower(config)
        self.item_tower = ItemTower(config)
        self.head = ScoreHead(config)

    def user_side(
        self, user: torch.Tensor, hist: torch.Tensor, hist_mask: torch.Tensor
    ) -> UserState:
        """(B, Fu), (B, L, Fs), (B, L) → v_user (B, d)."""
        x_seq, mask = self.emb.sequence(hist, hist_mask)
        return UserState(self.user_tower(self.emb.x_user(self.emb.user_fields(user)), x_seq, mask))

    def item_side(self, item: torch.Tensor) -> tuple[torch.Tensor, None]:
        """(N, Fi) → (v_item (N, d), None)."""
        return self.item_tower(self.emb.x_item(self.emb.item_fields(item))), None

    def score(
        self, state: UserState, v_item: torch.Tensor, aux: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits (N,): s · cos(v_user, v_item) + b."""
        return self.head(cosine(self.pair(state.v_user, v_item.shape[0]), v_item))

    def forward(self, batch: Batch) -> ModelOutput:
        check_batch(batch, self.layout)
        state = self.user_side(batch["user"], batch["hist"], batch["hist_mask"])
        v_item, _ = self.item_side(batch["item"])
        logit = self.score(state, v_item)
        losses = {"ctr": bce(logit, batch["label"])} if "label" in batch else {}
        return ModelOutput(logit, losses)
