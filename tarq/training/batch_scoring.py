"""Batch scoring: the logits of many rows (evaluation, champion re-scoring) without autograd,
the user side once per request.

The rows of one request (an impression of several candidates: 10 on the demo logs) share the
user, the history and the history's times, so their user side — the two-tower's history
encoder and attention, TARQ's personalised codebooks Ĉ, the target-attention model's H^tar —
is the same. :func:`score_batch` finds the groups of identical (user, hist, hist_mask) rows of
a batch, runs the user side once per group and scores every row with the per-candidate part of
the model (the arithmetic of the serving path, ``score``), as ``forward`` would:

- ``tt``, ``inttower``, ``mvke`` (and any model with ``user_side``/``item_side``/``score``):
  ``user_side`` per group, its tensors gathered per row, ``item_side`` and ``score`` per row;
- ``ta``: H^tar once per group, and the group's rows (their x_item) the queries of ONE
  attention over it, so its keys and values are projected once per group (:func:`_attend`);
- TARQ variants: v_user and Ĉ per group, each row's m entries picked from its group's Ĉ by
  its codes. With ``diagnostics`` also what :func:`tarq.training.evaluation.evaluate` reports besides
  the scores, as ``forward`` computes them in eval mode, for every row: the reconstruction
  error, the codes, and the sharpness of the alignment's p and p̂ (the teacher's H^tar once
  per group, its attention as ``ta``'s, the level distributions per row).

Results equal ``model(batch).logit`` up to float reassociation (the user side's matrix
products run on G instead of B rows): ``tests/test_batch_scoring.py`` holds every model to
1e-5 on the logits and the evaluation's figures to 1e-6. Any other module falls back to its
``forward``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tarq.model.alignment import level_distributions, level_log_probs, sharpness
from tarq.model.base import Batch, ModelOutput, TarqModule, UserState, check_batch
from tarq.model.layers import MultiHeadAttention, cosine
from tarq.model.ta import TargetAttentionModel
from tarq.model.tarq import TarqModel

_HASH_SEED = 20261130
_HASH_PRIME = 2_147_483_647  # 2^31 − 1


@dataclass
class Groups:
    """Groups of identical (user, hist, hist_mask) rows of a batch of B rows.

    Attributes:
        first: (G,) int64, one row of each group (its user side is the group's).
        index: (B,) int64, the group of each row, in [0, G).
    """

    first: torch.Tensor
    index: torch.Tensor

    @property
    def size(self) -> int:
        """G, the number of groups."""
        return int(self.first.shape[0])

    def slots(self) -> tuple[torch.Tensor, int]:
        """(slot, P): each row's position (B,) int64 among its group's rows, in row order, and
        the size P of the largest group (a (G, P) layout holds every row at [index, slot])."""
        counts = torch.bincount(self.index, minlength=self.size)
        order = torch.argsort(self.index, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.empty_like(self.index)
        slot[order] = torch.arange(order.shape[0], device=order.device) - starts[self.index[order]]
        return slot, int(counts.max())


def request_groups(
    user: torch.Tensor, hist: torch.Tensor, hist_mask: torch.Tensor
) -> Groups | None:
    """The rows of a batch that share their user side, or None when no two rows do.

    Rows equal in (user, hist, hist_mask) form a group: runs of equal adjacent rows (the
    candidates of one request, as the samples store them) and equal runs elsewhere in the
    batch (the same user and history again); rows are compared exactly, never by a hash alone.

    Args:
        user: (B, Fu) int64.  hist: (B, L, Fs) int64.  hist_mask: (B, L) bool.
    Returns:
        :class:`Groups` (groups in the order of their first row), or None when every row is
        its own group.
    """
    b = user.shape[0]
    if b < 2:
        return None
    start = torch.ones(b, dtype=torch.bool, device=user.device)
    start[1:] = ~(
        (user[1:] == user[:-1]).all(1)
        & (hist_mask[1:] == hist_mask[:-1]).all(1)
        & (hist[1:] == hist[:-1]).flatten(1).all(1)
    )
    heads = torch.nonzero(start)[:, 0]  # (R,) the first row of each run of equal rows
    lead = _equal_rows(user[heads], hist[heads], hist_mask[heads])  # (R,)
    representative = heads[lead][torch.cumsum(start, 0) - 1]  # (B,) lowest equal row
    first, index = torch.unique(representative, sorted=True, return_inverse=True)
    if first.shape[0] == b:
        return None
    return Groups(first, index)


def _equal_rows(user: torch.Tensor, hist: torch.Tensor, hist_mask: torch.Tensor) -> torch.Tensor:
    """(R,) int64: for each of R rows the lowest index of a row equal to it (itself if none).

    Only rows whose user id occurs twice can have an equal row; those are sorted by an exact
    integer hash of the whole row and compared with their neighbour, so equal rows found are
    equal (two equal rows split by a hash collision are merely not merged).
    """
    r = user.shape[0]
    out = torch.arange(r, device=user.device)
    if r < 2:
        return out
    _, inverse, counts = torch.unique(user[:, 0], return_inverse=True, return_counts=True)
    cand = torch.nonzero(counts[inverse] > 1)[:, 0]
    if cand.shape[0] < 2:
        return out
    key = torch.cat([user[cand], hist[cand].flatten(1), hist_mask[cand].long()], dim=1)
    # Σ_j (key_j mod p) · w_j with p < 2^31 and w_j < 2^bits stays below 2^62: exact in int64.
    bits = max(1, 31 - (key.shape[1] - 1).bit_length())
    gen = torch.Generator().manual_seed(_HASH_SEED)
    weights = torch.randint(1, 2**bits, (key.shape[1],), generator=gen).to(key.device)
    order = torch.argsort((key % _HASH_PRIME * weights).sum(1), stable=True)
    ks = key[order]
    new = torch.ones(cand.shape[0], dtype=torch.bool, device=user.device)
    new[1:] = ~(ks[1:] == ks[:-1]).all(1)
    lead = order[new][torch.cumsum(new, 0) - 1]  # per sorted row, its run's first (lowest) row
    out[cand[order]] = cand[lead]
    return out


def _rows(t: torch.Tensor, groups: Groups | None) -> torch.Tensor:
    """A per-group tensor (G, ...) as a per-row one (B, ...)."""
    return t if groups is None else t[groups.index]


def _user_inputs(
    batch: Batch, groups: Groups | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(user (G, Fu), hist (G, L, Fs), hist_mask (G, L)): one row per group."""
    if groups is None:
        return batch["user"], batch["hist"], batch["hist_mask"]
    f = groups.first
    return batch["user"][f], batch["hist"][f], batch["hist_mask"][f]


def score_candidates(
    model: torch.nn.Module,
    requests: Batch,
    request_of: np.ndarray,
    items: torch.Tensor,
    codes: torch.Tensor | None = None,
) -> torch.Tensor:
    """Logits (n,) of n candidates, each scored for one of a batch of requests.

    Args:
        model: any model of :func:`score_batch`.
        requests: ``user`` (R, Fu), ``hist`` (R, L, Fs), ``hist_mask`` (R, L) of R requests.
        request_of: (n,) int64, the request of each candidate, in [0, R).
        items: (n, Fi) the candidates' encoded item fields.
        codes: TARQ: (n, m) the candidates' semantic IDs (None: nearest entries).
    """
    src = torch.from_numpy(np.asarray(request_of, dtype=np.int64))
    batch = {
        "user": requests["user"][src],
        "item": items,
        "hist": requests["hist"][src],
        "hist_mask": requests["hist_mask"][src],
    }
    return score_batch(model, batch, diagnostics=False, codes=codes).logit


def score_batch(
    model: torch.nn.Module,
    batch: Batch,
    diagnostics: bool = True,
    codes: torch.Tensor | None = None,
) -> ModelOutput:
    """``model(batch)`` in eval mode for evaluation: the logits of every row and, for TARQ
    variants, the figures :func:`tarq.training.evaluation.evaluate` reads.

    Call it under ``torch.no_grad()`` or ``torch.inference_mode()`` with the model in eval
    mode (no dropout).

    Args:
        model: a model of :func:`tarq.model.build_model` (others: their own ``forward``).
        batch: the batch contract of :mod:`tarq.model` (B rows; ``label`` is not read).
        diagnostics: TARQ variants: also ``losses["recon"]`` (scalar) and the extras
            ``align_sharpness_p`` / ``align_sharpness_p_hat`` (2, m), as ``forward`` in eval;
            the ``codes`` (B, m) extra is always there. Without, the teacher does not run.
        codes: TARQ variants: (B, m) int64 semantic IDs to score the rows with (a published
            table's, −1 rows: the nearest entries) instead of their nearest entries.
    Returns:
        :class:`ModelOutput` with ``logit`` (B,); no CTR losses.
    """
    if model.training:
        raise ValueError("score_batch needs the model in eval mode (model.eval())")
    if codes is not None and not isinstance(model, TarqModel):
        raise ValueError(f"only TARQ scores with given semantic IDs, not {type(model).__name__}")
    if not isinstance(model, TarqModule) or type(model).user_side is TarqModule.user_side:
        out = model(batch)
        return ModelOutput(out.logit, {}, out.extras)
    check_batch(batch, model.layout)
    groups = request_groups(batch["user"], batch["hist"], batch["hist_mask"])
    if isinstance(model, TarqModel):
        return _tarq(model, batch, groups, diagnostics, codes)
    if isinstance(model, TargetAttentionModel):
        return ModelOutput(_ta(model, batch, groups))
    state = model.user_side(*_user_inputs(batch, groups))
    if groups is not None:
        state = UserState(
            state.v_user[groups.index], {k: v[groups.index] for k, v in state.extra.items()}
        )
    v_item, aux = model.item_side(batch["item"])
    return ModelOutput(model.score(state, v_item, aux))


def _ta(model: TargetAttentionModel, batch: Batch, groups: Groups | None) -> torch.Tensor:
    """Logits (B,) of the target-attention model: H^tar per group, attention per row."""
    state = model.user_side(*_user_inputs(batch, groups))
    v_item, x_item = model.item_side(batch["item"])
    h_tar = _attend(
        model.target_attention.attn, x_item, state.extra["h_seq"], state.extra["mask"], groups
    )
    return model.head(cosine(_rows(state.v_user, groups), v_item) + cosine(h_tar, v_item))


def _attend(
    attn: MultiHeadAttention,
    x_item: torch.Tensor,
    memory: torch.Tensor,
    mask: torch.Tensor,
    groups: Groups | None,
) -> torch.Tensor:
    """h_tar (B, d): each row's x_item (B, d) attends over its group's memory (G, S, d) with
    its mask (G, S), as ``attn(x_item[:, None], memory[g], memory[g], mask[g])[:, 0]``.

    The rows of a group are the queries of ONE attention over the group's memory (a (G, P, d)
    query layout, P the largest group), so the keys and values are projected once per group;
    when groups are so uneven that the layout would hold over twice B rows, row by row.
    """
    if groups is None:
        return attn(x_item[:, None], memory, memory, mask)[:, 0]
    b = x_item.shape[0]
    slot, width = groups.slots()
    if groups.size * width > 2 * b:
        idx = groups.index
        return attn(x_item[:, None], memory[idx], memory[idx], mask[idx])[:, 0]
    query = x_item.new_zeros(groups.size, width, x_item.shape[1])
    query[groups.index, slot] = x_item
    return attn(query, memory, memory, mask)[groups.index, slot]


def _tarq(
    model: TarqModel,
    batch: Batch,
    groups: Groups | None,
    diagnostics: bool,
    codes: torch.Tensor | None = None,
) -> ModelOutput:
    """TARQ's eval ``forward`` with the user side (v_user, Ĉ, H^tar) once per group; the
    rows' ``codes`` (B, m) when given (−1 rows: nearest entries)."""
    if not model.codebooks_initialized:
        model.init_codebooks(batch)  # as forward does (k-means on this batch, once)
    e = model.emb
    user, hist, hist_mask = _user_inputs(batch, groups)
    x_seq, mask = e.sequence(hist, hist_mask)  # (G, S, d), (G, S)
    v_user = model.user_tower(e.x_user(e.user_fields(user)), x_seq, mask)  # (G, d)
    codebooks = model.quantizer.codebooks
    personal = model.rq_attention.personal_codebooks(codebooks, x_seq, mask)  # (G, m, K, d)

    x_item = e.x_item(e.item_fields(batch["item"]))  # (B, d)
    v_item = model.item_tower(x_item)
    z = model.autoencoder.encode(x_item)  # (B, dz)
    q = model.quantizer.quantize(z, codes, float("inf"))  # codes None: the nearest entries
    index = torch.arange(x_item.shape[0], device=x_item.device) if groups is None else groups.index
    levels = torch.arange(q.codes.shape[1], device=q.codes.device)
    picked = personal[index[:, None], levels[None, :], q.codes]  # (B, m, d)
    h_rq = model.rq_attention.fuse(picked)
    logit = model.head(cosine(_rows(v_user, groups), v_item) + cosine(h_rq, v_item))
    extras = {"codes": q.codes}
    if not diagnostics:
        return ModelOutput(logit, {}, extras)
    losses = {"recon": model.autoencoder.recon_loss(x_item, z)}
    tau, relative = model.config.align_temperature, model.config.align_relative
    if model.teacher is not None:
        h_seq = model.teacher.encode_sequence(x_seq, mask)  # (G, S, d)
        h_tar = _attend(model.teacher.attn, x_item, h_seq, mask, groups)
        log_p, log_q = level_distributions(
            q.residuals, codebooks, h_tar, personal, q.codes, tau, group=index, relative=relative
        )
        extras["align_sharpness_p"] = sharpness(log_p)
        extras["align_sharpness_p_hat"] = sharpness(log_q)
    else:
        log_p = torch.stack(
            [
                level_log_probs(q.residuals[:, level], codebooks[level], tau, relative)
                for level in range(q.codes.shape[1])
            ],
            dim=1,
        )
        extras["align_sharpness_p"] = sharpness(log_p)
    return ModelOutput(logit, losses, extras)
