"""The interface every model implements, its output type and the shared score head."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from tarq.data.features import FeatureLayout
from tarq.model.config import ModelConfig

Batch = dict[str, torch.Tensor]
INPUT_KEYS = ("user", "item", "hist", "hist_mask")


@dataclass
class ModelOutput:
    """What ``forward`` returns.

    Attributes:
        logit: (B,) prediction logit; σ(logit) is the click probability.
        losses: name → UNWEIGHTED scalar loss term (empty when the batch has no label and
            the model has no unsupervised term).
        extras: model-specific tensors, e.g. ``codes`` (B, m) int64 for TARQ.
    """

    logit: torch.Tensor
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class UserState:
    """Per-request user-side tensors for the serving path (computed once per request).

    Attributes:
        v_user: (B, d) user-tower vector (model-specific shape for IntTower/MVKE, see there).
        extra: model-specific tensors: ``personal_codebooks`` (B, m, K, d) for TARQ,
            ``h_seq`` (B, S, d) and ``mask`` (B, S) for the target-attention model, …
    """

    v_user: torch.Tensor
    extra: dict[str, torch.Tensor] = field(default_factory=dict)


class ScoreHead(nn.Module):
    """logit = s · score + b with a learnable temperature s > 0 (log-parametrised) and bias b.

    Cosine scores lie in [−1, 1]; without the temperature σ(ŷ_tt + ŷ_rq) could never reach
    confident probabilities (our fix of eq. 19; docs/model.md "The model").
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        log_s = torch.tensor(math.log(config.score_scale_init))
        if config.learn_score_scale:
            self.log_scale = nn.Parameter(log_s)
        else:
            self.register_buffer("log_scale", log_s)
        self.bias = nn.Parameter(torch.zeros(()))

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp()

    def forward(self, score: torch.Tensor) -> torch.Tensor:
        """score (...) → logit (...)."""
        return self.scale * score + self.bias


def check_batch(batch: Batch, layout: FeatureLayout) -> None:
    """Raise ``ValueError`` naming the key whose shape or dtype breaks the batch contract."""
    for k in INPUT_KEYS:
        if k not in batch:
            raise ValueError(f"batch lacks {k!r} (needs {', '.join(INPUT_KEYS)})")
    u, i, h, m = (batch[k] for k in INPUT_KEYS)
    b = u.shape[0]
    expect = {
        "user": (u, (b, len(layout.user_fields))),
        "item": (i, (b, len(layout.item_fields))),
        "hist": (h, (b, h.shape[1] if h.dim() == 3 else -1, len(layout.seq_fields))),
        "hist_mask": (m, (b, h.shape[1] if h.dim() == 3 else -1)),
    }
    for k, (t, shape) in expect.items():
        if tuple(t.shape) != shape:
            raise ValueError(f"batch[{k!r}] has shape {tuple(t.shape)}, expected {shape}")
    for k in ("user", "item", "hist"):
        if batch[k].dtype != torch.int64:
            raise ValueError(f"batch[{k!r}] must be int64, got {batch[k].dtype}")
    if "label" in batch and tuple(batch["label"].shape) != (b,):
        raise ValueError(f"batch['label'] has shape {tuple(batch['label'].shape)}, expected ({b},)")


def bce(logit: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy on logits (eq. 20/22 with the logs the paper omits)."""
    return F.binary_cross_entropy_with_logits(logit, label.to(logit.dtype))


class TarqModule(nn.Module):
    """Base class of TARQ and the baselines (see :mod:`tarq.model` for the contract).

    Subclasses set ``loss_weights`` (loss name → λ) and implement ``forward``,
    ``user_side``, ``item_side`` and ``score``.
    """

    name: str = "base"

    def __init__(self, layout: FeatureLayout, config: ModelConfig) -> None:
        super().__init__()
        self.layout = layout
        self.config = config
        self.loss_weights: dict[str, float] = {"ctr": config.lambda_ctr}

    def total_loss(self, out: ModelOutput) -> torch.Tensor:
        """Weighted sum of the loss terms (eq. 23): Σ λ_name · losses[name]."""
        if not out.losses:
            raise ValueError("no loss terms: the batch passed to forward had no 'label'")
        unknown = set(out.losses) - set(self.loss_weights)
        if unknown:
            raise KeyError(f"{self.name}: no λ weight for loss terms {sorted(unknown)}")
        total = out.logit.new_zeros(())
        for k, v in out.losses.items():
            w = self.loss_weights[k]
            if w:
                total = total + w * v
        return total

    def base_rate_logit(self, label: torch.Tensor) -> float | None:
        """Log-odds of the click rate of ``label`` (B,), the rate clipped to [1e-4, 1 − 1e-4];
        None when ``config.bias_from_base_rate`` is off or there are no labels."""
        if not self.config.bias_from_base_rate or label.numel() == 0:
            return None
        rate = float(label.float().mean().clamp(1e-4, 1 - 1e-4))
        return math.log(rate / (1 - rate))

    @torch.no_grad()
    def init_score_bias(self, label: torch.Tensor) -> None:
        """Set every score head's bias to :meth:`base_rate_logit` of ``label`` (a no-op when
        that is None)."""
        logit = self.base_rate_logit(label)
        if logit is None:
            return
        for module in self.modules():
            if isinstance(module, ScoreHead):
                module.bias.fill_(logit)

    def init_codebooks(self, batch: Batch) -> None:
        """k-means initialisation of codebooks on ``batch``; a no-op for models without any."""
        return None

    def hold_codebooks(self) -> None:
        """A warm continuation keeps its codebooks (no revival); a no-op without any."""
        return None

    def user_side(
        self, user: torch.Tensor, hist: torch.Tensor, hist_mask: torch.Tensor
    ) -> UserState:
        raise NotImplementedError

    def item_side(self, item: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def score(
        self, state: UserState, v_item: torch.Tensor, aux: torch.Tensor | None = None
    ) -> torch.Tensor:
        raise NotImplementedError

    @staticmethod
    def pair(state_t: torch.Tensor, n: int) -> torch.Tensor:
        """Broadcast a per-user tensor (B, ...) to N candidates: B == 1 → expand, B == N → as is."""
        b = state_t.shape[0]
        if b == n:
            return state_t
        if b == 1:
            return state_t.expand(n, *state_t.shape[1:])
        raise ValueError(f"user state has batch {b}; score needs 1 (one request) or {n} rows")

    def extra_repr(self) -> str:
        return f"name={self.name!r}"
