"""Shared field embeddings: x_user, x_item and the behaviour sequence X_seq from a FeatureLayout.

One table per categorical field; the sequence's item_id / category_id / brand_id use the
tables of the item fields with the same name. An item's shared fields (those a behaviour also
carries) go through ONE projection ``P_s`` for both the target item and the history, so that
x_item and each x_i live in one space (the teacher queries the history with x_item)::

    x_item = P_s([e_item_id; e_category; e_brand]) + P_x([other item fields])   (B, d)
    x_i    = P_s([e_item_id; e_category; e_brand]) + e_action + e_time_gap + e_recency  (B, L, d)
    x_user = P_u([all user fields])                                              (B, d)

A learned "no-history" token is prepended to every sequence and is always attendable, so users
without any behaviour get a well-defined (and NaN-free) attention output.
"""

from __future__ import annotations

import torch
from torch import nn

from tarq.data.features import SEQ_CONTEXT_FIELDS, FeatureLayout
from tarq.model.config import ModelConfig


class FieldEmbeddings(nn.Module):
    """Embedding tables and projections shared by every tower of a model."""

    def __init__(self, layout: FeatureLayout, config: ModelConfig) -> None:
        super().__init__()
        missing = [
            f
            for f in {*layout.user_fields, *layout.item_fields, *layout.seq_fields}
            if f not in layout.vocab_sizes
        ]
        if missing:
            raise ValueError(f"layout.vocab_sizes lacks fields {sorted(missing)}")
        if not layout.user_fields or not layout.item_fields:
            raise ValueError("layout needs at least one user field and one item field")
        self.layout = layout
        e, d = config.emb_dim, config.d_model
        names = dict.fromkeys([*layout.user_fields, *layout.item_fields, *layout.seq_fields])
        self.tables = nn.ModuleDict(
            {
                n: nn.Embedding(
                    layout.vocab_sizes[n], d if n in SEQ_CONTEXT_FIELDS else e, padding_idx=0
                )
                for n in names
            }
        )
        # Unit-scale inputs to the projections: with tiny embeddings the tower MLPs start out
        # dominated by their biases and the cosine scores sit on a plateau for hundreds of steps.
        for t in self.tables.values():
            nn.init.normal_(t.weight, std=t.embedding_dim**-0.5)
            with torch.no_grad():
                t.weight[0].zero_()
        self.seq_item_cols = [j for j, f in enumerate(layout.seq_fields) if f in layout.item_fields]
        self.shared_fields = [layout.seq_fields[j] for j in self.seq_item_cols]
        self.item_shared_cols = [layout.item_fields.index(f) for f in self.shared_fields]
        self.item_extra_cols = [
            j for j, f in enumerate(layout.item_fields) if f not in self.shared_fields
        ]
        # (column, field) of the context fields (action, time_gap) this layout has.
        self.context_cols = [
            (j, f) for j, f in enumerate(layout.seq_fields) if f in SEQ_CONTEXT_FIELDS
        ]
        if not self.shared_fields:
            raise ValueError(
                "seq_fields share no field with item_fields; x_i and x_item "
                "would live in different spaces"
            )
        self.user_proj = nn.Linear(len(layout.user_fields) * e, d)
        self.shared_proj = nn.Linear(len(self.shared_fields) * e, d)
        self.extra_proj = (
            nn.Linear(len(self.item_extra_cols) * e, d, bias=False)
            if self.item_extra_cols
            else None
        )
        self.positional = nn.Embedding(layout.seq_len + 1, d) if config.positional else None
        if self.positional is not None:
            # Below the content's scale: the default N(0, 1) would drown the behaviours.
            nn.init.normal_(self.positional.weight, std=0.1 * d**-0.5)
        self.no_history = nn.Parameter(torch.randn(d) * d**-0.5)
        self.d_model = d

    def user_fields(self, user: torch.Tensor) -> torch.Tensor:
        """(B, Fu) indices → (B, Fu, emb_dim) field embeddings."""
        return torch.stack(
            [self.tables[f](user[:, j]) for j, f in enumerate(self.layout.user_fields)], dim=1
        )

    def item_fields(self, item: torch.Tensor) -> torch.Tensor:
        """(B, Fi) indices → (B, Fi, emb_dim) field embeddings."""
        return torch.stack(
            [self.tables[f](item[:, j]) for j, f in enumerate(self.layout.item_fields)], dim=1
        )

    def x_user(self, fields: torch.Tensor) -> torch.Tensor:
        """(B, Fu, e) user field embeddings → x_user (B, d)."""
        return self.user_proj(fields.flatten(1))

    def x_item(self, fields: torch.Tensor) -> torch.Tensor:
        """(B, Fi, e) item field embeddings → x_item (B, d)."""
        x = self.shared_proj(fields[:, self.item_shared_cols].flatten(1))
        if self.extra_proj is not None:
            x = x + self.extra_proj(fields[:, self.item_extra_cols].flatten(1))
        return x

    def sequence(
        self, hist: torch.Tensor, hist_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Behaviour sequence with the no-history token in front.

        Args:
            hist: (B, L, Fs) indices; hist_mask: (B, L) bool.
        Returns:
            X_seq (B, L+1, d) and its mask (B, L+1) bool whose column 0 is always True.
        """
        b = hist.shape[0]
        parts = [self.tables[self.layout.seq_fields[j]](hist[:, :, j]) for j in self.seq_item_cols]
        x = self.shared_proj(torch.cat(parts, dim=-1))
        for j, f in self.context_cols:
            x = x + self.tables[f](hist[:, :, j])
        mask = hist_mask.bool()
        if self.positional is not None:
            # Recency position (0 = most recent behaviour): the number of real behaviours after
            # each slot, so the encoding holds whether padding sits at the end or the front.
            m = mask.long()
            recency = m.flip(1).cumsum(1).flip(1) - m
            recency = recency.clamp(max=self.positional.num_embeddings - 2)
            x = x + self.positional(recency + 1)
        x = x * mask[..., None]
        token = self.no_history.expand(b, 1, self.d_model)
        x = torch.cat([token, x], dim=1)
        mask = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=hist.device), mask], dim=1)
        return x, mask
