"""Residual quantizer: m codebooks × K entries, greedy residual assignment (paper eq. 7–8).

r_0 = z;  c_l = argmin_k ‖r_l − e^l_k‖;  r_{l+1} = r_l − e^l_{c_l};  ẑ = Σ_l e^l_{c_l}.

The codebook loss (eq. 8) is Σ_l ‖sg[r_l] − e^l_{c_l}‖², which moves the entries toward the
residuals but not z toward the entries; the paper has no commitment term (β = 0 by default,
optional through ``ModelConfig.rq_commitment``). z still receives gradient from the alignment
loss (eq. 17–18), whose static-side distributions are functions of the residuals.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Quantized:
    """Result of :meth:`ResidualQuantizer.quantize` for N vectors of width dz.

    Attributes:
        codes: (N, m) int64 semantic IDs.
        residuals: (N, m, dz) r_0 … r_{m−1} (r_0 = z), differentiable w.r.t. z and the entries.
        z_hat: (N, dz) Σ_l e^l_{c_l}.
    """

    codes: torch.Tensor
    residuals: torch.Tensor
    z_hat: torch.Tensor


def sq_dist(x: torch.Tensor, entries: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances.

    Args:
        x: (N, d).  entries: (K, d) shared, or (N, K, d) one codebook per row.
    Returns:
        (N, K).
    """
    if entries.dim() == 2:
        return (
            (x * x).sum(-1, keepdim=True) - 2 * x @ entries.T + (entries * entries).sum(-1)[None, :]
        ).clamp_min(0.0)
    return ((x[:, None, :] - entries) ** 2).sum(-1)


def kmeans(x: torch.Tensor, k: int, iters: int, generator: torch.Generator) -> torch.Tensor:
    """Lloyd's k-means with k-means++ seeding.

    Args:
        x: (N, d) points. k: number of centroids. iters: maximum Lloyd iterations (stops early
        when the assignment is stable). generator: CPU RNG for the seeding (reproducible).
    Returns:
        (k, d) centroids. Each centroid is the mean of the points assigned to it by the last
        assignment; an empty cluster takes the point farthest from its centroid. With fewer
        distinct points than k, some centroids coincide (unused codes, honestly so).
    """
    n = x.shape[0]
    if n == 0:
        raise ValueError("k-means needs at least one point")
    x = x.detach().float()
    first = int(torch.randint(n, (1,), generator=generator))
    cent = [x[first]]
    d2 = ((x - x[first]) ** 2).sum(-1)
    for _ in range(1, k):
        total = float(d2.sum())
        if total > 0:
            idx = int(torch.multinomial((d2 / total).cpu(), 1, generator=generator))
        else:
            idx = int(torch.randint(n, (1,), generator=generator))
        cent.append(x[idx])
        d2 = torch.minimum(d2, ((x - x[idx]) ** 2).sum(-1))
    c = torch.stack(cent)
    assign = None
    for _ in range(max(iters, 1)):
        new_assign = sq_dist(x, c).argmin(-1)
        if assign is not None and torch.equal(new_assign, assign):
            break
        assign = new_assign
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros_like(c).index_add_(0, assign, x)
        nonempty = counts > 0
        c = torch.where(nonempty[:, None], sums / counts.clamp_min(1)[:, None].to(x.dtype), c)
        for j in torch.nonzero(~nonempty).flatten().tolist():
            far = int(((x - c[assign]) ** 2).sum(-1).argmax())
            c[j] = x[far]
            assign[far] = j
    return c


class ResidualQuantizer(nn.Module):
    """m codebooks of K entries in R^dz, initialised by k-means on the first batch."""

    def __init__(
        self,
        n_codebooks: int,
        codebook_size: int,
        dim: int,
        kmeans_iters: int = 25,
        kmeans_seed: int = 0,
        commitment: float = 0.0,
        per_dim: bool = False,
    ) -> None:
        super().__init__()
        self.m, self.k, self.dim = n_codebooks, codebook_size, dim
        self.codebooks = nn.Parameter(torch.randn(n_codebooks, codebook_size, dim) * 0.1)
        # A buffer, so it lives in the state_dict and DDP broadcasts it with the codebooks.
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.kmeans_iters, self.kmeans_seed, self.commitment = kmeans_iters, kmeans_seed, commitment
        self.per_dim = per_dim

    @torch.no_grad()
    def kmeans_init(self, z: torch.Tensor) -> None:
        """Set level l's entries to the k-means centroids of the level-l residuals of z (N, dz)."""
        gen = torch.Generator().manual_seed(self.kmeans_seed)
        r = z.detach().float()
        for level in range(self.m):
            c = kmeans(r.cpu(), self.k, self.kmeans_iters, gen).to(r)
            self.codebooks[level].copy_(c)
            r = r - c[sq_dist(r, c).argmin(-1)]
        self.initialized.fill_(True)

    def quantize(self, z: torch.Tensor) -> Quantized:
        """Greedy residual assignment of z (N, dz); see :class:`Quantized`."""
        r = z
        codes, residuals = [], []
        for level in range(self.m):
            book = self.codebooks[level]
            c = sq_dist(r.detach(), book.detach()).argmin(-1)
            codes.append(c)
            residuals.append(r)
            r = r - book[c]
        codes_t = torch.stack(codes, dim=1)
        return Quantized(codes_t, torch.stack(residuals, dim=1), self.decode(codes_t))

    @torch.no_grad()
    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """Semantic IDs (N, m) int64 of z (N, dz)."""
        return self.quantize(z).codes

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Σ_l e^l_{codes[:, l]}: (N, m) int64 → (N, dz)."""
        levels = torch.arange(self.m, device=codes.device)
        return self.codebooks[levels[None, :], codes].sum(1)

    def loss(self, q: Quantized) -> torch.Tensor:
        """Eq. 8 (+ optional commitment): Σ_l mean_n ‖sg[r_l] − e^l_{c_l}‖²; scalar.

        With ``per_dim`` each ‖·‖² is divided by dz (``ModelConfig.per_dim_losses``).
        """
        levels = torch.arange(self.m, device=q.codes.device)
        chosen = self.codebooks[levels[None, :], q.codes]  # (N, m, dz)
        width = self.dim if self.per_dim else 1
        loss = ((q.residuals.detach() - chosen) ** 2).sum(-1).sum(-1).mean() / width
        if self.commitment:
            loss = (
                loss
                + self.commitment
                * ((q.residuals - chosen.detach()) ** 2).sum(-1).sum(-1).mean()
                / width
            )
        return loss
