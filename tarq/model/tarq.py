"""The TARQ model: backbone + RQ-Attention student + target-attention teacher + alignment.

Training (eq. 19–23)::

    ŷ   = σ(s · (cos(v_user, v_item) + cos(h_rq,  v_item)) + b)      L_ctr  = BCE
    ŷ'  = σ(s · (cos(v_user, v_item) + cos(h_tar, v_item)) + b)      L_tar  = BCE
    L = λ1 L_ctr + λ2 L_tar + λ3 L_recon + λ4 L_rq + λ5 L_distill + λ6 L_align

Serving (section 2.6): ``user_side`` once per request (v_user and Ĉ with its m·K queries),
``item_side`` offline per catalog item (v_item and the semantic IDs), then ``score`` costs a
gather of m rows, a mean and two cosines per candidate — the same arithmetic as ``forward``.
"""

from __future__ import annotations

import torch

from tarq.data.features import FeatureLayout
from tarq.model.alignment import (
    alignment_from_log_probs,
    level_distributions,
    level_log_probs,
    sharpness,
)
from tarq.model.base import Batch, ModelOutput, ScoreHead, TarqModule, UserState, bce, check_batch
from tarq.model.config import ModelConfig
from tarq.model.embeddings import FieldEmbeddings
from tarq.model.layers import cosine
from tarq.model.quantizer import ResidualQuantizer
from tarq.model.rq_attention import AutoEncoder, RQAttention
from tarq.model.teacher import TargetAttention
from tarq.model.towers import ItemTower, UserTower


def distillation(
    h_rq: torch.Tensor,
    h_tar: torch.Tensor,
    config: ModelConfig,
    v_item: torch.Tensor | None = None,
) -> torch.Tensor:
    """L_distill (eq. 15) of h_rq (B, d) towards stop-grad(h_tar) (B, d); scalar.

    ``direction``: mean of 1 − cos(h_rq, sg[h_tar]) = ½‖ĥ_rq − ĥ_tar‖² of the unit
    vectors, in [0, 2]. Both only ever enter the score through a cosine with v_item, so their
    norms are free; the teacher's grows while it learns, and the literal L2 (``l2``) then
    grows with it and takes over the shared embeddings (measured on a sequential log: from
    0.07 to 0.76 over one epoch, 4× the CTR terms' gradient on the embeddings).

    ``score`` (default): mean of (cos(h_rq, sg[v_item]) − sg[cos(h_tar, v_item)])², in [0, 4]: the
    student matches what the teacher's vector does in the score, not its whole direction
    (the part of h_tar orthogonal to v_item is free in the teacher's loss, so copying it
    copies noise). Needs ``v_item`` (B, d).
    """
    target = h_tar.detach()
    if config.distill == "score":
        if v_item is None:
            raise ValueError("the score distillation needs v_item")
        v = v_item.detach()
        return ((cosine(h_rq, v) - cosine(target, v)) ** 2).mean()
    if config.distill == "direction":
        return (1.0 - cosine(h_rq, target)).mean()
    sq = (target - h_rq) ** 2
    return (sq.mean(-1) if config.per_dim_losses else sq.sum(-1)).mean()


class TarqModel(TarqModule):
    """TARQ and its ablations.

    Args:
        layout: feature layout of the batches.
        config: hyperparameters.
        teacher: build the target-attention teacher (L_tar, L_distill); False gives
            ``tarq_no_teacher_align`` (two-tower + RQ-Attention only).
        align: use the codebook alignment loss (needs the teacher).
    """

    def __init__(
        self,
        layout: FeatureLayout,
        config: ModelConfig,
        teacher: bool = True,
        align: bool = True,
        name: str = "tarq",
    ) -> None:
        super().__init__(layout, config)
        if align and not teacher:
            raise ValueError("codebook alignment needs the target-attention teacher")
        self.name = name
        self.emb = FieldEmbeddings(layout, config)
        self.user_tower = UserTower(config)
        self.item_tower = ItemTower(config)
        self.autoencoder = AutoEncoder(config)
        self.quantizer = ResidualQuantizer(
            config.n_codebooks,
            config.codebook_size,
            config.dz,
            config.kmeans_iters,
            config.kmeans_seed,
            config.rq_commitment,
            config.per_dim_losses,
            config.codebook_revive,
            config.codebook_usage_decay,
        )
        self.rq_attention = RQAttention(config)
        self.teacher = TargetAttention(config) if teacher else None
        if self.teacher is not None and config.shared_history:
            # One encoder module under both names: H^rq = H^tar (ModelConfig.shared_history).
            self.rq_attention.seq = self.teacher.seq
        if config.rq_history == "user":
            # H^rq = H^user (ModelConfig.rq_history); with shared_history H^tar too.
            self.rq_attention.seq = self.user_tower.seq
            if self.teacher is not None and config.shared_history:
                self.teacher.seq = self.user_tower.seq
        self.use_align = align
        self.head = ScoreHead(config)
        self.loss_weights = {
            "ctr": config.lambda_ctr,
            "recon": config.lambda_recon,
            "rq": config.lambda_rq,
        }
        if teacher:
            self.loss_weights.update(tar=config.lambda_tar, distill=config.lambda_distill)
        if align:
            self.loss_weights["align"] = config.lambda_align

    # -- codebooks -----------------------------------------------------------------------
    @property
    def codebooks(self) -> torch.Tensor:
        """The static codebooks (m, K, dz), detached."""
        return self.quantizer.codebooks.detach()

    @property
    def codebooks_initialized(self) -> bool:
        return bool(self.quantizer.initialized)

    @torch.no_grad()
    def init_codebooks(self, batch: Batch, force: bool = False) -> None:
        """k-means on this batch's latents z, level by level on the residuals; runs once.

        The flag is a buffer, so a second call (or a second batch) does nothing unless
        ``force``; call it before wrapping the model in DistributedDataParallel. The trainer
        passes the distinct items of the first ``config.kmeans_init_rows`` training rows.
        """
        if self.codebooks_initialized and not force:
            return
        check_batch(batch, self.layout)
        self.quantizer.kmeans_init(self.latent(batch["item"]))

    def hold_codebooks(self) -> None:
        """A warm continuation: keep the parent's entries as they are (no dead-entry revival),
        so the catalog's served codes move only as far as training moves them."""
        self.quantizer.revive_enabled = False

    def latent(self, item: torch.Tensor) -> torch.Tensor:
        """Item features (N, Fi) → autoencoder latent z (N, dz)."""
        return self.autoencoder.encode(self.emb.x_item(self.emb.item_fields(item)))

    @torch.no_grad()
    def catalog_codes(self, item: torch.Tensor) -> torch.Tensor:
        """Semantic IDs (N, m) int64 of item features (N, Fi) over the trained codebooks."""
        return self.quantizer.encode(self.latent(item))

    # -- serving path --------------------------------------------------------------------
    def item_side(self, item: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Item features (N, Fi) → (v_item (N, d), codes (N, m) int64)."""
        x_item = self.emb.x_item(self.emb.item_fields(item))
        return self.item_tower(x_item), self.quantizer.encode(self.autoencoder.encode(x_item))

    def user_side(
        self, user: torch.Tensor, hist: torch.Tensor, hist_mask: torch.Tensor
    ) -> UserState:
        """(B, Fu), (B, L, Fs), (B, L) → v_user (B, d) and ``personal_codebooks`` (B, m, K, d)."""
        x_user = self.emb.x_user(self.emb.user_fields(user))
        x_seq, mask = self.emb.sequence(hist, hist_mask)
        v_user, h_seq = self._user_and_history(x_user, x_seq, mask)
        personal = self.rq_attention.personalise(self.quantizer.codebooks, h_seq, mask)
        return UserState(v_user, {"personal_codebooks": personal})

    def _user_and_history(
        self, x_user: torch.Tensor, x_seq: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """v_user (B, d) and H^rq (B, S, d), the history encoded once when they share it."""
        if self.rq_attention.seq is self.user_tower.seq:
            h_seq = self.rq_attention.seq(x_seq, mask)
            return self.user_tower.from_encoded(x_user, h_seq, mask), h_seq
        return self.user_tower(x_user, x_seq, mask), self.rq_attention.seq(x_seq, mask)

    def score(
        self, state: UserState, v_item: torch.Tensor, aux: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits (N,) of N candidates: v_item (N, d), aux = codes (N, m).

        The state holds one request (B = 1, broadcast to every candidate) or one user per
        candidate (B = N).
        """
        if aux is None:
            raise ValueError("TARQ's score needs the candidates' semantic IDs (codes)")
        n = v_item.shape[0]
        personal = state.extra["personal_codebooks"]
        if personal.shape[0] == 1:
            levels = torch.arange(personal.shape[1], device=aux.device)
            picked = personal[0][levels[None, :], aux]  # (N, m, d)
        else:
            picked = self.rq_attention.lookup(self.pair(personal, n), aux)
        h_rq = self.rq_attention.fuse(picked)
        y = cosine(self.pair(state.v_user, n), v_item) + cosine(h_rq, v_item)
        return self.head(y)

    # -- training forward ----------------------------------------------------------------
    def forward(self, batch: Batch) -> ModelOutput:
        """See :mod:`tarq.model`; losses: ctr, tar, recon, rq, distill, align.

        Extras ``align_sharpness_p`` / ``align_sharpness_p_hat``: (2, m) per-level batch means
        of the entropy and max-probability of the alignment's p and p̂ (eq. 17,
        :func:`tarq.model.alignment.sharpness`); with alignment always, for the ablations in
        eval mode only (p̂ needs the teacher).
        """
        check_batch(batch, self.layout)
        if not self.codebooks_initialized:
            self.init_codebooks(batch)
        e = self.emb
        x_user = e.x_user(e.user_fields(batch["user"]))
        x_item = e.x_item(e.item_fields(batch["item"]))
        x_seq, mask = e.sequence(batch["hist"], batch["hist_mask"])
        # Dropout draws in the same order as before rq_history existed: user tower, item tower,
        # ..., then H^rq, unless H^rq is the user tower's.
        shared_user = self.rq_attention.seq is self.user_tower.seq
        if shared_user:
            h_seq = self.rq_attention.seq(x_seq, mask)
            v_user = self.user_tower.from_encoded(x_user, h_seq, mask)
        else:
            v_user = self.user_tower(x_user, x_seq, mask)
        v_item = self.item_tower(x_item)

        z = self.autoencoder.encode(x_item)
        if self.training:
            self.quantizer.revive_dead(z)
        q = self.quantizer.quantize(z)
        if self.training:
            self.quantizer.track_usage(q.codes)
        if not shared_user:
            h_seq = self.rq_attention.seq(x_seq, mask)  # H^rq, also H^tar when shared
        personal = self.rq_attention.personalise(self.quantizer.codebooks, h_seq, mask)
        h_rq = self.rq_attention.fuse(self.rq_attention.lookup(personal, q.codes))

        y_tt = cosine(v_user, v_item)
        y_rq = cosine(h_rq, v_item)
        logit = self.head(y_tt + y_rq)
        losses = {"recon": self.autoencoder.recon_loss(x_item, z), "rq": self.quantizer.loss(q)}
        extras = {"codes": q.codes, "z": z.detach(), "y_tt": y_tt.detach(), "y_rq": y_rq.detach()}
        tar_logit = None
        if self.teacher is not None:
            if self.rq_attention.seq is self.teacher.seq:
                h_tar = self.teacher.attend(x_item, h_seq, mask)
            else:
                h_tar = self.teacher(x_item, x_seq, mask)
            tar_logit = self.head(y_tt + cosine(h_tar, v_item))
            losses["distill"] = distillation(h_rq, h_tar, self.config, v_item)
            if self.use_align or not self.training:
                # Ablations without alignment get the same diagnostics, at evaluation only.
                with torch.set_grad_enabled(self.use_align and torch.is_grad_enabled()):
                    log_p, log_q = level_distributions(
                        q.residuals,
                        self.quantizer.codebooks,
                        h_tar,
                        personal,
                        q.codes,
                        self.config.align_temperature,
                        relative=self.config.align_relative,
                    )
                if self.use_align:
                    losses["align"] = alignment_from_log_probs(log_p, log_q)
                extras["align_sharpness_p"] = sharpness(log_p)
                extras["align_sharpness_p_hat"] = sharpness(log_q)
            extras["tar_logit"] = tar_logit.detach()
        elif not self.training:
            with torch.no_grad():
                log_p = torch.stack(
                    [
                        level_log_probs(
                            q.residuals[:, level],
                            self.quantizer.codebooks[level],
                            self.config.align_temperature,
                            self.config.align_relative,
                        )
                        for level in range(q.codes.shape[1])
                    ],
                    dim=1,
                )
            extras["align_sharpness_p"] = sharpness(log_p)
        if "label" in batch:
            losses["ctr"] = bce(logit, batch["label"])
            if tar_logit is not None:
                losses["tar"] = bce(tar_logit, batch["label"])
        return ModelOutput(logit, losses, extras)
