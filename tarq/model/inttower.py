"""IntTower (Li et al., CIKM'22) under the shared features and loop.

- light-SE: per-field mean of the field embeddings → Linear F→F (no bias) → softmax over
  fields → E + E·A, on the user fields and on the item fields.
- FE-Block: the representation entering each user-tower MLP layer, and the tower's output, is
  projected into H user heads; the item tower's output into H item heads; the score is the
  MaxSim Σ_layers Σ_user heads max_item heads ⟨u, v⟩ of L2-normalised heads, averaged over
  (layers × heads) so it stays in [−1, 1] before the shared temperature.
- CIR: in-batch InfoNCE (τ = ``cir_temperature``) that pulls each CLICKED item to its own user
  (the diagonal) and pushes the batch's other items — the paper's version.

The behaviour sequence enters the user tower as in the backbone (h_user of eq. 1–2), so the
comparison isolates IntTower's interaction modules.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tarq.data.features import FeatureLayout
from tarq.model.base import Batch, ModelOutput, ScoreHead, TarqModule, UserState, bce, check_batch
from tarq.model.config import ModelConfig
from tarq.model.embeddings import FieldEmbeddings
from tarq.model.towers import ItemTower, UserTower


class LightSE(nn.Module):
    """E (B, F, e) → E + E · softmax_F(W · mean_e(E)) (B, F, e)."""

    def __init__(self, n_fields: int) -> None:
        super().__init__()
        self.w = nn.Linear(n_fields, n_fields, bias=False)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        a = torch.softmax(self.w(e.mean(-1)), dim=-1)
        return e + e * a[..., None]


def cir_loss(
    v_user: torch.Tensor, v_item: torch.Tensor, label: torch.Tensor, temperature: float
) -> torch.Tensor:
    """In-batch InfoNCE with diagonal positives, averaged over clicked rows.

    Args:
        v_user, v_item: (B, d) tower outputs of the same rows.  label: (B,) in {0, 1}.
    Returns:
        scalar (0 with a graph when the batch has no click).
    """
    u, v = F.normalize(v_user, dim=-1), F.normalize(v_item, dim=-1)
    logits = u @ v.T / temperature
    pos = label > 0.5
    if not bool(pos.any()):
        return logits.sum() * 0.0
    target = torch.arange(u.shape[0], device=u.device)
    return F.cross_entropy(logits[pos], target[pos])


class IntTower(TarqModule):
    """Losses: ctr, cir."""

    name = "inttower"

    def __init__(self, layout: FeatureLayout, config: ModelConfig) -> None:
        super().__init__(layout, config)
        d, nh, hd = config.d_model, config.inttower_heads, config.inttower_head_dim
        self.emb = FieldEmbeddings(layout, config)
        self.se_user = LightSE(len(layout.user_fields))
        self.se_item = LightSE(len(layout.item_fields))
        self.user_tower = UserTower(config)
        self.item_tower = ItemTower(config)
        linears = [m for m in self.user_tower.mlp if isinstance(m, nn.Linear)]
        widths = [m.in_features for m in linears] + [linears[-1].out_features]
        self.user_heads = nn.ModuleList(nn.Linear(w, nh * hd) for w in widths)
        self.item_heads = nn.Linear(d, nh * hd)
        self.n_heads, self.head_dim = nh, hd
        self.head = ScoreHead(config)
        self.loss_weights["cir"] = config.lambda_cir

    def _user(
        self, user: torch.Tensor, hist: torch.Tensor, hist_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """→ normalised user heads (B, J, H, hd) and the tower output v_user (B, d)."""
        x_user = self.emb.x_user(self.se_user(self.emb.user_fields(user)))
        x_seq, mask = self.emb.sequence(hist, hist_mask)
        h = torch.cat([x_user, self.user_tower.summary(x_user, x_seq, mask)], dim=-1)
        layer_inputs = []
        for m in self.user_tower.mlp:
            if isinstance(m, nn.Linear):
                layer_inputs.append(h)
            h = m(h)
        layer_inputs.append(h)
        heads = torch.stack(
            [
                p(x).view(-1, self.n_heads, self.head_dim)
                for p, x in zip(self.user_heads, layer_inputs, strict=True)
            ],
            dim=1,
        )
        return F.normalize(heads, dim=-1), h

    def user_side(
        self, user: torch.Tensor, hist: torch.Tensor, hist_mask: torch.Tensor
    ) -> UserState:
        """v_user = user heads (B, J, H, hd); ``v_final`` = tower output (B, d)."""
        heads, v = self._user(user, hist, hist_mask)
        return UserState(heads, {"v_final": v})

    def item_side(self, item: torch.Tensor) -> tuple[torch.Tensor, None]:
        """(N, Fi) → (v_item (N, d), None)."""
        return self.item_tower(self.emb.x_item(self.se_item(self.emb.item_fields(item)))), None

    def score(
        self, state: UserState, v_item: torch.Tensor, aux: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits (N,) from the FE-Block MaxSim."""
        n = v_item.shape[0]
        iv = F.normalize(self.item_heads(v_item).view(n, self.n_heads, self.head_dim), dim=-1)
        sim = torch.einsum("njhd,ngd->njhg", self.pair(state.v_user, n), iv)
        return self.head(sim.amax(-1).mean((1, 2)))

    def forward(self, batch: Batch) -> ModelOutput:
        check_batch(batch, self.layout)
        heads, v_user = self._user(batch["user"], batch["hist"], batch["hist_mask"])
        v_item, _ = self.item_side(batch["item"])
        logit = self.score(UserState(heads), v_item)
        losses = {}
        if "label" in batch:
            losses["ctr"] = bce(logit, batch["label"])
            losses["cir"] = cir_loss(v_user, v_item, batch["label"], self.config.cir_temperature)
        return ModelOutput(logit, losses)
