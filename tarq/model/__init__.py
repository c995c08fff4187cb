"""TARQ (arXiv 2509.16931) and the baselines it is compared with, in PyTorch.

No Prefect or MLflow here: the models only need torch and the :class:`FeatureLayout`. May
import the shared modules and :mod:`tarq.data.features`; never training, semantic IDs, the
release of a day or serving.

Batch contract (``dict[str, torch.Tensor]``, from :mod:`tarq.data.loader`)
-------------------------------------------------------------------------
- ``user``: (B, Fu) int64, indices of ``layout.user_fields`` (user_id first)
- ``item``: (B, Fi) int64, indices of ``layout.item_fields`` (item_id, category_id,
  brand_id, price_bucket, item side fields)
- ``hist``: (B, L, Fs) int64, indices of ``layout.seq_fields`` = (item_id, category_id,
  brand_id, action); the first three share the item fields' embedding tables; 0 = padding
- ``hist_mask``: (B, L) bool, True where a behaviour exists; rows may have none
- ``label``: (B,) float32 in {0, 1}; optional (without it the supervised terms are skipped)
- other keys (``user_key``, ``item_key``) are ignored by the models.

Index 0 = padding, 1 = OOV/null; vocabulary sizes are ``layout.vocab_sizes[field]``.

Module interface (every model from :func:`build_model`)
-------------------------------------------------------
- ``forward(batch) -> ModelOutput``: ``logit`` (B,) (σ(logit) = click probability),
  ``losses`` (name → UNWEIGHTED scalar), ``extras`` (e.g. ``codes`` (B, m) int64 for TARQ).
  Loss names: TARQ ``ctr, tar, recon, rq, distill, align`` (ablations drop some);
  ``tt``/``mvke``/``ta``/``pooled``: ``ctr``; ``inttower``: ``ctr, cir``. recon/rq/distill/align need
  no label and are returned in eval too (``recon`` is the reconstruction error).
- ``total_loss(out) -> Tensor``: Σ λ · term (eq. 23), weights from :class:`ModelConfig`.
- ``init_score_bias(label) -> None``: output bias at the log-odds of the labels' click rate
  (cold training calls it on the first batch; ``ModelConfig.bias_from_base_rate``).
- ``init_codebooks(batch) -> None``: k-means initialisation on this batch (TARQ variants; once,
  guarded by a state_dict buffer); a no-op for the baselines. Call it before DDP wrapping;
  ``forward`` calls it lazily otherwise. In training mode TARQ's ``forward`` also re-seeds
  dead codebook entries (``ModelConfig.codebook_revive``) unless ``hold_codebooks()`` was
  called (a warm continuation; a no-op for the baselines).
- Serving: ``user_side(user, hist, hist_mask) -> UserState`` once per request,
  ``item_side(item) -> (v_item (N, d), aux)`` per catalog item, and
  ``score(state, v_item, aux) -> logits (N,)`` for one request (B = 1) × N candidates or
  B = N pairs. ``aux`` is model-specific: TARQ the semantic IDs (N, m) int64, ``ta`` x_item
  (N, d) (the per-candidate attention query), ``mvke`` the item gate (N, k), ``pooled`` the
  per-item bias (N,), otherwise None.
  In eval mode ``score`` gives the same logits as ``forward``.
- TARQ only: ``catalog_codes(item) -> (N, m)``, ``latent(item) -> z (N, dz)``, ``codebooks``
  (m, K, dz) (static, detached), ``quantizer.decode(codes) -> (N, dz)``.

Model names: ``tarq``, ``tt``, ``inttower``, ``mvke``, ``ta``, ``tarq_no_align``,
``tarq_no_teacher_align``, ``pooled``.
"""

from tarq.model.base import ModelOutput, TarqModule, UserState
from tarq.model.config import ModelConfig
from tarq.model.registry import MODEL_NAMES, TARQ_VARIANTS, build_model

__all__ = [
    "MODEL_NAMES",
    "TARQ_VARIANTS",
    "ModelConfig",
    "ModelOutput",
    "TarqModule",
    "UserState",
    "build_model",
]
