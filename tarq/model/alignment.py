"""Codebook Alignment (eq. 17–18), with the fixes docs/model.md "The model" lists.

Per level l (authors' code): p_l = softmax(−‖r_l − C_l‖² / τ) over the STATIC codebook,
residuals of the item latent z; p̂_l = softmax(−‖r̂_l − Ĉ_l‖² / τ) over the user's PERSONALISED
codebook, residuals of r̂_0 = sg[h_tar]. Both sides subtract the entry chosen by the item's own
argmin code c_l at each level. Loss = Σ_l mean_b (KL(p_l‖p̂_l) + KL(p̂_l‖p_l)), minimised (the
paper's leading minus sign is a slip). The teacher gets no gradient (h_tar is detached); z, the
static codebook and the RQ-Attention net do.

The temperature τ (``ModelConfig.align_temperature``) is the alignment's own setting: the
distances are plain sums over the dimensions, whatever ``per_dim_losses`` says. At τ = 64 p and
p̂ stay near uniform, yet the loss still moves the static codebooks (every entry gets a pull
from every item); at τ = 1 or below it flattens both sides instead (see ``ModelConfig``).
:func:`sharpness` measures how far from uniform the distributions are (entropy, max-probability).
"""

from __future__ import annotations

import torch

from tarq.model.quantizer import sq_dist
from tarq.model.rq_attention import RQAttention


def symmetric_kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p‖q) + KL(q‖p) per row from log-probabilities (N, K) → (N,), always ≥ 0."""
    p, q = log_p.exp(), log_q.exp()
    return (p * (log_p - log_q)).sum(-1) + (q * (log_q - log_p)).sum(-1)


def _logits(dist: torch.Tensor, temperature: float, relative: bool) -> torch.Tensor:
    """−dist / τ, or with ``relative`` −(dist / sg[row mean of dist]) / τ: (N, K) → (N, K)."""
    if relative:
        dist = dist / dist.mean(-1, keepdim=True).detach().clamp_min(1e-12)
    return -dist / temperature


def level_log_probs(
    residual: torch.Tensor,
    entries: torch.Tensor,
    temperature: float = 1.0,
    relative: bool = False,
) -> torch.Tensor:
    """Eq. 17 in log space: log softmax_k(−‖r − e_k‖² / τ), ‖·‖² summed over the d dimensions.

    Args:
        residual: (N, d).  entries: (K, d) shared or (N, K, d) per row.
        temperature: τ > 0; smaller is sharper.
        relative: divide each row's K distances by their mean (not differentiated) first, so
            that τ acts on distances relative to the row's own scale: the same sharpness
            whatever the norms of z and of the teacher's h_tar (which grows while it learns).
    Returns:
        (N, K).
    """
    return torch.log_softmax(_logits(sq_dist(residual, entries), temperature, relative), dim=-1)


def level_distributions(
    residuals: torch.Tensor,
    codebooks: torch.Tensor,
    h_tar: torch.Tensor,
    personal: torch.Tensor,
    codes: torch.Tensor,
    temperature: float = 1.0,
    group: torch.Tensor | None = None,
    relative: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """log p and log p̂ of every level (eq. 17).

    Args:
        residuals: (B, m, dz) static residuals r_0 = z, …, r_{m−1} (from the quantizer).
        codebooks: (m, K, dz) static codebooks C.
        h_tar: (B, d) teacher output; detached here.
        personal: (B, m, K, d) personalised codebooks Ĉ, one per row; or (G, m, K, d), one
            per group of rows, with ``group``.
        codes: (B, m) the item's own semantic IDs (argmin over the static codebooks).
        temperature: τ of :func:`level_log_probs`.
        group: (B,) int64, the row of ``personal`` each row uses (batch scoring: the rows of
            one request share Ĉ); None = row b uses ``personal[b]``.
        relative: distances over their row mean (:func:`level_log_probs`).
    Returns:
        (log_p, log_p̂), each (B, m, K).
    """
    m = codebooks.shape[0]
    r_hat = h_tar.detach()
    if group is None:
        return _static_log_probs(residuals, codebooks, temperature, relative), _personal_log_probs(
            r_hat, personal, codes, temperature, relative
        )
    rows = group
    log_p, log_q = [], []
    for level in range(m):
        log_p.append(level_log_probs(residuals[:, level], codebooks[level], temperature, relative))
        log_q.append(
            _grouped_level_log_probs(r_hat, personal[:, level], group, temperature, relative)
        )
        r_hat = r_hat - personal[rows, level, codes[:, level]]
    return torch.stack(log_p, dim=1), torch.stack(log_q, dim=1)


def _static_log_probs(
    residuals: torch.Tensor, codebooks: torch.Tensor, temperature: float, relative: bool
) -> torch.Tensor:
    """log p of every level at once: residuals (B, m, dz), codebooks (m, K, dz) → (B, m, K).

    The arithmetic of :func:`level_log_probs` with a shared codebook (‖r‖² − 2 r·e + ‖e‖²),
    batched over the levels in one matrix product.
    """
    r = residuals.transpose(0, 1)  # (m, B, dz)
    dist = (
        (r * r).sum(-1, keepdim=True)
        - 2 * torch.bmm(r, codebooks.transpose(1, 2))
        + (codebooks * codebooks).sum(-1)[:, None, :]
    ).clamp_min(0.0)
    return torch.log_softmax(_logits(dist.transpose(0, 1), temperature, relative), dim=-1)


def _personal_log_probs(
    r_hat: torch.Tensor,
    personal: torch.Tensor,
    codes: torch.Tensor,
    temperature: float,
    relative: bool,
) -> torch.Tensor:
    """log p̂ of every level at once: r̂_0 (B, d), Ĉ (B, m, K, d), codes (B, m) → (B, m, K).

    The residuals r̂_l are built level by level as before, from ONE gather of the chosen
    entries (B, m, d): indexing Ĉ per level made autograd zero-fill a (B, m, K, d) gradient
    per level (the largest ``fill_`` of a TARQ step).
    """
    chosen = RQAttention.lookup(personal, codes)  # (B, m, d)
    levels = [r_hat]
    for level in range(codes.shape[1] - 1):
        levels.append(levels[-1] - chosen[:, level])
    r = torch.stack(levels, dim=1)  # (B, m, d)
    dist = ((r[:, :, None, :] - personal) ** 2).sum(-1)
    return torch.log_softmax(_logits(dist, temperature, relative), dim=-1)


# Rows per block of :func:`_grouped_level_log_probs`: its (rows, K, d) differences stay in cache.
_GROUP_BLOCK = 128


def _grouped_level_log_probs(
    residual: torch.Tensor,
    entries: torch.Tensor,
    group: torch.Tensor,
    temperature: float,
    relative: bool = False,
) -> torch.Tensor:
    """``level_log_probs(residual, entries[group], temperature)`` in blocks of rows, without
    the (N, K, d) gather: the same elementwise arithmetic, hence the same values.

    Args:
        residual: (N, d).  entries: (G, K, d), one codebook per group.  group: (N,) int64.
    Returns:
        (N, K).
    """
    n = residual.shape[0]
    dist = residual.new_empty(n, entries.shape[1])
    for i in range(0, n, _GROUP_BLOCK):
        rows = slice(i, i + _GROUP_BLOCK)
        dist[rows] = sq_dist(residual[rows], entries[group[rows]])
    return torch.log_softmax(_logits(dist, temperature, relative), dim=-1)


def alignment_from_log_probs(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Eq. 18 (minimised) from (B, m, K) log-probabilities: Σ_l mean_b symmetric KL; scalar."""
    return symmetric_kl(log_p, log_q).mean(0).sum()


def alignment_loss(
    residuals: torch.Tensor,
    codebooks: torch.Tensor,
    h_tar: torch.Tensor,
    personal: torch.Tensor,
    codes: torch.Tensor,
    temperature: float = 1.0,
    relative: bool = False,
) -> torch.Tensor:
    """Eq. 18 (minimised); arguments as :func:`level_distributions`. Returns a scalar ≥ 0."""
    return alignment_from_log_probs(
        *level_distributions(
            residuals, codebooks, h_tar, personal, codes, temperature, relative=relative
        )
    )


@torch.no_grad()
def sharpness(log_probs: torch.Tensor) -> torch.Tensor:
    """Per level, batch means of the entropy and of the max-probability of a distribution.

    Uniform over K entries: entropy log K, max-probability 1/K; one-hot: 0 and 1.

    Args:
        log_probs: (B, m, K).
    Returns:
        (2, m): row 0 the mean entropy (nats), row 1 the mean max-probability.
    """
    p = log_probs.exp()
    entropy = -(p * log_probs).sum(-1).mean(0)
    return torch.stack([entropy, p.amax(-1).mean(0)])
