"""Every model hyperparameter in one dataclass (TARQ and the baselines share it)."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Any

FUSIONS = ("mean", "sum", "attention")
DISTILLS = ("direction", "l2", "score")
RQ_HISTORIES = ("own", "user")

# How models saved before a setting existed were trained: read by ModelConfig.from_saved.
SAVED_BEFORE: dict[str, Any] = {
    "distill": "l2",
    "shared_history": False,
    "rq_history": "own",
    "kmeans_init_rows": 0,
    "codebook_revive": 0.0,
}


@dataclass
class ModelConfig:
    """Hyperparameters of TARQ and the baselines.

    Dimensions:
        emb_dim: size of each categorical field embedding (one table per field).
        d_model: width of x_user, x_item, the sequence elements, every attention block and the
            tower outputs (v_user, v_item, h_rq, h_tar all live in R^d_model).
        latent_dim: dz, the autoencoder latent / static codebook width; ``None`` means d_model.
            The static codebook entries are the queries of the personalisation attention; when
            dz != d_model they pass through a linear map dz → d_model first.
        n_heads: heads of every multi-head attention (d_model must be divisible by it).
        tower_hidden: hidden widths of the user/item tower MLPs (eq. 3–4).
        ae_hidden: hidden width of the autoencoder's encoder and decoder.
        dropout: dropout in MLPs and attention weights.
        positional: add a learned recency embedding to the behaviour sequence.

    Residual quantizer (paper: m = 8 codebooks × K = 16 entries):
        n_codebooks: m.  codebook_size: K.
        kmeans_iters / kmeans_seed: k-means initialisation of the codebooks (cold runs).
        kmeans_init_rows: the k-means runs on the distinct items among this many first
            training rows (0: the first batch only, as the paper's authors do; a batch of 512
            covers a sliver of a 1.2M-item catalog).
        codebook_revive: an entry chosen by under ``codebook_revive / K`` of the training rows
            (a moving share, decay ``codebook_usage_decay`` per step) is dead and re-seeded
            from the batch's residuals (:meth:`tarq.model.quantizer.ResidualQuantizer.revive_dead`);
            0 turns it off. Cold runs only: a warm run keeps its parent's entries.
            Measured with both on (16,384 rows, 0.1): on demo ``small`` no AUC cost (3 seeds)
            and catalog utilization 96.9 → 100 %; on ``medium`` the avoidable collisions
            0.060 → 0.047. They made warm days move more IDs (51 % / 60 % of the tuples)
            until the IDs became sticky (the daily job's ``sticky_margin``).
        rq_commitment: β of an optional commitment term β‖r_l − sg[e]‖²; the paper's eq. 8 has
            none, so the default is 0.
        fusion: how the m personalised vectors become h_rq (eq. 11): ``mean`` (paper's pooling),
            ``sum`` or ``attention`` (learned softmax pooling).
        align_temperature: τ of the alignment softmaxes (eq. 17): p = softmax(−‖r − e‖² / τ)
            with ‖·‖² the plain sum over the dimensions, independent of ``per_dim_losses``
            (paper and authors' code: 1). Default 64, the value per-dimension distances gave
            at d = 64 (unchanged behaviour): p and p̂ stay near uniform, but by mid-epoch the
            alignment is the largest gradient on the static codebooks and raises utilization.
            τ = 1 and 0.1 were measured worse on the demo logs (benchmarks/alignment_probe.py):
            at init the alignment's gradient on the embeddings is 11× / 110× the CTR loss's,
            and it minimises the symmetric KL by flattening both sides (Ĉ squashed, h_rq
            shrinks, L_distill rises, more collisions, lower AUC).
        align_relative: the alignment's distances are divided by their row's mean over the K
            entries before τ (:func:`tarq.model.alignment.level_log_probs`): a scale-free
            temperature, the same sharpness whatever ‖z‖ and ‖h_tar‖ are.
        distill: what L_distill (eq. 15) matches (:func:`tarq.model.tarq.distillation`):
            ``score`` (default) the student's cos(h_rq, v_item) to the teacher's
            cos(h_tar, v_item); ``direction`` h_rq's direction to h_tar's; ``l2`` the paper's
            literal ‖sg[h_tar] − h_rq‖². Measured on demo ``small`` (3 seeds, 1 epoch), chosen
            on the validation slice: score .7938 valid / .7922 test AUC, direction .7857 /
            .7840, λ5 = 0.1 .7882 / .7866, no distillation .7877 / .7900.
        shared_history: the RQ-Attention net and the teacher attend over ONE contextualised
            history, H^rq = H^tar (eq. 9 and 13 with one self-attention; their eq. 10 and 14
            attentions keep their own weights). The paper writes two encoders; sharing one
            saves a third of TARQ's sequence encoding, and the student's personalised entries
            then come from the same keys and values as the teacher's h_tar they approximate.
            Without the teacher (``tarq_no_teacher_align``) it changes nothing. Off: on demo
            ``small`` (3 seeds) it trained 1.18× faster but lost 0.011 AUC [−0.022, −0.000].
        rq_history: which contextualised history RQ-Attention's codebook queries attend over
            (eq. 9). ``own`` (the paper): its own self-attention encoder. ``user``: the user
            tower's H^user (eq. 1), one encoder for both, so that TARQ's user side at serving
            is TT's plus the m·K-query attention (at L = 1000 the second O(L²) encoder is half
            of TARQ's user side). Measured in docs/model.md "One history encoder or two".
        per_dim_losses: the squared distances of L_distill (eq. 15) and L_rq (eq. 8) are taken
            per dimension (‖·‖² / width) instead of as plain sums, i.e. their λ divided by the
            width. With d = 64 the sums start 100–200× larger than the BCE (measured on the
            demo logs: distill 31, rq 25 vs ctr 0.18), swamp the shared embeddings and made
            TARQ lose to the two-tower; per dimension, the paper's λ defaults balance the
            terms. ``False`` gives the literal sums. The alignment is not affected (its
            temperature is ``align_temperature``), nor is the autoencoder's L_recon (eq. 6),
            which stays a sum: it trains nothing but the autoencoder.

    Score: ŷ = σ(s · (ŷ_a + ŷ_b) + b) with s = score_scale_init at start (learnable unless
    learn_score_scale is false) and bias b initialised to the log-odds of the click rate of the
    first training batch (``bias_from_base_rate``; 0 when false). With b = 0 and a 20 % click
    rate the model's first job is to push every cosine to −0.28, which it does by giving all
    user and all item vectors a shared, opposed component that then dwarfs what tells items
    apart (a cold TT stayed at the base-rate loss on a sequential log).

    Loss weights λ1..λ6 (eq. 23) default to {1, 1, 1, 0.1, 1, 0.8}; lambda_cir weights IntTower's
    contrastive loss (τ = cir_temperature).

    Baselines: inttower_heads / inttower_head_dim (FE-Block heads), mvke_kernels (virtual kernels).
    """

    emb_dim: int = 16
    d_model: int = 64
    latent_dim: int | None = None
    n_heads: int = 2
    tower_hidden: tuple[int, ...] = (128,)
    ae_hidden: int = 128
    dropout: float = 0.1
    positional: bool = True

    n_codebooks: int = 8
    codebook_size: int = 16
    kmeans_iters: int = 25
    kmeans_seed: int = 0
    kmeans_init_rows: int = 16384
    codebook_revive: float = 0.1
    codebook_usage_decay: float = 0.99
    rq_commitment: float = 0.0
    fusion: str = "mean"
    align_temperature: float = 64.0
    align_relative: bool = False
    per_dim_losses: bool = True
    distill: str = "score"
    shared_history: bool = False
    rq_history: str = "own"

    score_scale_init: float = 5.0
    learn_score_scale: bool = True
    bias_from_base_rate: bool = True

    lambda_ctr: float = 1.0
    lambda_tar: float = 1.0
    lambda_recon: float = 1.0
    lambda_rq: float = 0.1
    lambda_distill: float = 1.0
    lambda_align: float = 0.8
    lambda_cir: float = 1.0
    cir_temperature: float = 0.07

    inttower_heads: int = 4
    inttower_head_dim: int = 16
    mvke_kernels: int = 3

    def __post_init__(self) -> None:
        self.tower_hidden = tuple(int(h) for h in self.tower_hidden)
        problems = []
        for name in (
            "emb_dim",
            "d_model",
            "n_heads",
            "n_codebooks",
            "codebook_size",
            "ae_hidden",
            "inttower_heads",
            "inttower_head_dim",
            "mvke_kernels",
        ):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.d_model % max(self.n_heads, 1):
            problems.append(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.latent_dim is not None and self.latent_dim < 1:
            problems.append(f"latent_dim must be ≥ 1 or null, got {self.latent_dim}")
        if self.distill not in DISTILLS:
            problems.append(f"distill must be one of {DISTILLS}, got {self.distill!r}")
        if self.rq_history not in RQ_HISTORIES:
            problems.append(f"rq_history must be one of {RQ_HISTORIES}, got {self.rq_history!r}")
        if self.fusion not in FUSIONS:
            problems.append(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        if self.kmeans_init_rows < 0 or self.codebook_revive < 0:
            problems.append("kmeans_init_rows and codebook_revive must be ≥ 0")
        if not 0.0 < self.codebook_usage_decay < 1.0:
            problems.append(
                f"codebook_usage_decay must be in (0, 1), got {self.codebook_usage_decay}"
            )
        if self.score_scale_init <= 0 or self.cir_temperature <= 0 or self.align_temperature <= 0:
            problems.append("score_scale_init, cir_temperature and align_temperature must be > 0")
        if problems:
            raise ValueError("invalid model config: " + "; ".join(problems))

    @property
    def dz(self) -> int:
        """Latent width of the autoencoder and the static codebooks."""
        return self.latent_dim or self.d_model

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        d = asdict(self)
        d["tower_hidden"] = list(self.tower_hidden)
        return d

    @classmethod
    def from_saved(cls, data: dict[str, Any]) -> ModelConfig:
        """The config of a SAVED model (its ``config.json``'s ``model`` dict).

        Saved dicts are complete, so a missing key means the model was written before that
        setting existed, and it was trained as the code then behaved (:data:`SAVED_BEFORE`),
        not with today's default: rebuilding it otherwise would load its weights into another
        architecture, or call a loss change no change.
        """
        return cls.from_dict({**SAVED_BEFORE, **data})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build from a (possibly partial) dict; unknown keys are an error, not ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**data)
