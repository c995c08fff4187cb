"""Codebook Alignment (eq. 17–18), with the fixes README "The model" lists.

Per level l (authors' code): p_l = softmax(−‖r_l − C_l‖²) over the STATIC codebook, residuals
of the item latent z; p̂_l = softmax(−‖r̂_l − Ĉ_l‖²) over the user's PERSONALISED codebook,
residuals of r̂_0 = sg[h_tar]. Both sides subtract the entry chosen by the item's own argmin
code c_l at each level. Loss = Σ_l mean_b (KL(p_l‖p̂_l) + KL(p̂_l‖p_l)), minimised (the paper's
leading minus sign is a slip). The teacher gets no gradient (h_tar is detached); z, the static
codebook and the RQ-Attention net do.
"""

from __future__ import annotations

import torch

from tarq.model.quantizer import sq_dist


def symmetric_kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p‖q) + KL(q‖p) per row from log-probabilities (N, K) → (N,), always ≥ 0."""
    p, q = log_p.exp(), log_q.exp()
    return (p * (log_p - log_q)).sum(-1) + (q * (log_q - log_p)).sum(-1)


def level_log_probs(residual: torch.Tensor, entries: torch.Tensor,
                    temperature: float = 1.0, per_dim: bool = False) -> torch.Tensor:
    """Eq. 17 in log space: log softmax_k(−‖r − e_k‖² / τ), or ‖r − e_k‖² / (τ·d) per dimension.

    Args:
        residual: (N, d).  entries: (K, d) shared or (N, K, d) per row.
    Returns:
        (N, K).
    """
    scale = temperature * (residual.shape[-1] if per_dim else 1)
    return torch.log_softmax(-sq_dist(residual, entries) / scale, dim=-1)


def alignment_loss(
    residuals: torch.Tensor, codebooks: torch.Tensor, h_tar: torch.Tensor,
    personal: torch.Tensor, codes: torch.Tensor, temperature: float = 1.0,
    per_dim: bool = False,
) -> torch.Tensor:
    """Eq. 18 (minimised).

    Args:
        residuals: (B, m, dz) static residuals r_0 = z, …, r_{m−1} (from the quantizer).
        codebooks: (m, K, dz) static codebooks C.
        h_tar: (B, d) teacher output; detached here.
        personal: (B, m, K, d) personalised codebooks Ĉ.
        codes: (B, m) the item's own semantic IDs (argmin over the static codebooks).
        temperature, per_dim: see :func:`level_log_probs` (``ModelConfig.per_dim_losses``).
    Returns:
        scalar ≥ 0.
    """
    m = codebooks.shape[0]
    r_hat = h_tar.detach()
    rows = torch.arange(codes.shape[0], device=codes.device)
    total = residuals.new_zeros(())
    for level in range(m):
        log_p = level_log_probs(residuals[:, level], codebooks[level], temperature, per_dim)
        log_q = level_log_probs(r_hat, personal[:, level], temperature, per_dim)
        total = total + symmetric_kl(log_p, log_q).mean()
        r_hat = r_hat - personal[rows, level, codes[:, level]]
    return total
