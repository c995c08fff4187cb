"""Residual quantizer: m codebooks × K entries, greedy residual assignment (paper eq. 7–8).

r_0 = z;  c_l = argmin_k ‖r_l − e^l_k‖;  r_{l+1} = r_l − e^l_{c_l};  ẑ = Σ_l e^l_{c_l}.

The codebook loss (eq. 8) is Σ_l ‖sg[r_l] − e^l_{c_l}‖², which moves the entries toward the
residuals but not z toward the entries; the paper has no commitment term (β = 0 by default,
optional through ``ModelConfig.rq_commitment``). z still receives gradient from the alignment
loss (eq. 17–18), whose static-side distributions are functions of the residuals.

Codebook health (what RQ-based semantic-ID systems do; eq. 8 alone lets them collapse): the
entries start as k-means centroids of a large sample of item latents
(:meth:`ResidualQuantizer.kmeans_init`), and during training an entry that the batches stop
choosing (its moving share of the rows under ``revive_below / K``) is re-seeded from the
current batch's residuals at its level (:meth:`ResidualQuantizer.revive_dead`), the
dead-code restart of SoundStream and Jukebox. Without it the latents drift away from the
entries they started at, one entry per level takes every item, and a 1.2M-item catalog got 7
distinct tuples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
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


def sticky_choice(
    r: torch.Tensor, book: torch.Tensor, nearest: torch.Tensor, prior: torch.Tensor, margin: float
) -> torch.Tensor:
    """One level of sticky assignment: keep the prior entry unless the nearest is closer by
    more than ``margin`` × ‖r‖.

    Hysteresis: an item near the border of two entries keeps the one it was served with while
    the latents drift a little from day to day; a clear move still moves it. Distances are
    computed directly (‖r − e‖, not the expanded form) so that the FAISS twin
    (:func:`tarq.ids.semantic_ids.faiss_assign`) decides the same in float32.

    Args:
        r: (N, dz) residuals at this level.  book: (K, dz) the level's entries.
        nearest: (N,) int64 nearest entry of each row.  prior: (N,) int64 served entry, −1: none.
        margin: relative margin (0: the prior wins only ties of distance; inf: always).
    Returns:
        (N,) int64 chosen entries.
    """
    has = prior >= 0
    p = prior.clamp_min(0)
    if margin == float("inf"):
        return torch.where(has, p, nearest)
    d_prior = (r - book[p]).norm(dim=-1)
    d_near = (r - book[nearest]).norm(dim=-1)
    keep = has & (d_prior - d_near <= margin * r.norm(dim=-1))
    return torch.where(keep, p, nearest)


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
    """m codebooks of K entries in R^dz, initialised by k-means, dead entries revived.

    Args:
        revive_below: an entry is dead when its moving share of the training rows falls under
            ``revive_below / K`` (a K-th is its share under a uniform use); 0 turns revival off
            and then no ``usage`` buffer exists (models saved before revival load as they were).
        usage_decay: decay of that moving share per training step (0.99: a dead entry is found
            ~230 steps after its last row).
    """

    def __init__(
        self,
        n_codebooks: int,
        codebook_size: int,
        dim: int,
        kmeans_iters: int = 25,
        kmeans_seed: int = 0,
        commitment: float = 0.0,
        per_dim: bool = False,
        revive_below: float = 0.0,
        usage_decay: float = 0.99,
    ) -> None:
        super().__init__()
        self.m, self.k, self.dim = n_codebooks, codebook_size, dim
        self.codebooks = nn.Parameter(torch.randn(n_codebooks, codebook_size, dim) * 0.1)
        # A buffer, so it lives in the state_dict and DDP broadcasts it with the codebooks.
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.kmeans_iters, self.kmeans_seed, self.commitment = kmeans_iters, kmeans_seed, commitment
        self.per_dim = per_dim
        self.revive_below, self.usage_decay = revive_below, usage_decay
        # Off for a warm continuation (the trainer turns it off): its served codes stay put.
        self.revive_enabled = revive_below > 0
        self.usage: torch.Tensor | None
        if revive_below > 0:
            # (m, K) moving share of the training rows that chose each entry; uniform at start.
            self.register_buffer(
                "usage", torch.full((n_codebooks, codebook_size), 1.0 / codebook_size)
            )
        else:
            self.usage = None

    @torch.no_grad()
    def kmeans_init(self, z: torch.Tensor) -> None:
        """Set level l's entries to the k-means centroids of the level-l residuals of z (N, dz)."""
        gen = torch.Generator().manual_seed(self.kmeans_seed)
        r = z.detach().float()
        for level in range(self.m):
            c = kmeans(r.cpu(), self.k, self.kmeans_iters, gen).to(r)
            self.codebooks[level].copy_(c)
            r = r - c[sq_dist(r, c).argmin(-1)]
        if self.usage is not None:
            self.usage.fill_(1.0 / self.k)
        self.initialized.fill_(True)

    @torch.no_grad()
    def track_usage(self, codes: torch.Tensor) -> None:
        """Fold one training batch's codes (N, m) into the moving ``usage`` (summed over DDP
        ranks, so every rank finds the same dead entries); a no-op without revival or while
        held (a warm run leaves its parent's usage as it was)."""
        if self.usage is None or not self.revive_enabled:
            return
        counts = torch.zeros(self.m, self.k, device=codes.device)
        counts.scatter_add_(1, codes.T, torch.ones_like(codes.T, dtype=counts.dtype))
        total = torch.tensor([float(codes.shape[0])], device=codes.device)
        if _distributed():
            dist.all_reduce(counts)
            dist.all_reduce(total)
        share = counts / total.clamp_min(1.0)
        self.usage.mul_(self.usage_decay).add_(share.to(self.usage), alpha=1 - self.usage_decay)

    def dead_entries(self) -> torch.Tensor:
        """(m, K) bool: the entries whose moving share is under ``revive_below / K``."""
        if self.usage is None:
            return torch.zeros(self.m, self.k, dtype=torch.bool)
        return self.usage < self.revive_below / self.k

    @torch.no_grad()
    def revive_dead(self, z: torch.Tensor) -> int:
        """Re-seed the dead entries from this batch's latents z (N, dz), level by level.

        A dead entry at level l becomes one of the batch's level-l residuals, drawn without
        replacement with probability ∝ its squared distance to the entry it chose (k-means++
        seeding: far, badly served residuals first); its usage restarts at 1/K. Later levels
        see the residuals of the revived level. Under DDP rank 0's entries are broadcast.

        Returns:
            How many entries were re-seeded (0 when none is dead or revival is off).
        """
        if not self.revive_enabled or self.usage is None:
            return 0
        dead = self.dead_entries()
        if not bool(dead.any()):
            return 0
        r = z.detach().float()
        revived = 0
        for level in range(self.m):
            book = self.codebooks[level]
            d = sq_dist(r, book.detach())
            idx = torch.nonzero(dead[level]).flatten()
            if idx.numel():
                err = d.min(-1).values
                weights = err if float(err.sum()) > 0 else torch.ones_like(err)
                many = idx.numel() > int((weights > 0).sum())
                pick = torch.multinomial(weights, idx.numel(), replacement=many)
                book.data[idx] = r[pick].to(book.dtype)
                self.usage[level, idx] = 1.0 / self.k
                revived += idx.numel()
                d = sq_dist(r, book.detach())
            r = r - book.detach()[d.argmin(-1)]
        if _distributed():
            dist.broadcast(self.codebooks.data, 0)
            dist.broadcast(self.usage, 0)
        return revived

    def quantize(
        self, z: torch.Tensor, prior: torch.Tensor | None = None, margin: float = 0.0
    ) -> Quantized:
        """Greedy residual assignment of z (N, dz); see :class:`Quantized`.

        With ``prior`` (N, m) int64 (−1: none), a level keeps the prior's entry unless the
        nearest one is closer by more than ``margin`` × ‖r_l‖ (:func:`sticky_choice`): the
        sticky semantic IDs of a warm day. ``margin = inf`` forces the prior's codes.
        """
        r = z
        codes, residuals = [], []
        for level in range(self.m):
            book = self.codebooks[level]
            c = sq_dist(r.detach(), book.detach()).argmin(-1)
            if prior is not None:
                c = sticky_choice(r.detach(), book.detach(), c, prior[:, level], margin)
            codes.append(c)
            residuals.append(r)
            r = r - book[c]
        codes_t = torch.stack(codes, dim=1)
        return Quantized(codes_t, torch.stack(residuals, dim=1), self.decode(codes_t))

    @torch.no_grad()
    def encode(
        self, z: torch.Tensor, prior: torch.Tensor | None = None, margin: float = 0.0
    ) -> torch.Tensor:
        """Semantic IDs (N, m) int64 of z (N, dz) (``prior``, ``margin``: see :meth:`quantize`)."""
        return self.quantize(z, prior, margin).codes

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


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
