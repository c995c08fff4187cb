"""Batch scoring (``tarq.training.batch_scoring``) against the reference ``model(batch)`` path: the same
logits (1e-5), codes and diagnostics for every model, the same evaluation figures, and request
groups that only ever join equal rows (CPU, tiny dimensions, seconds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tarq.training.batch_scoring as bs
from tarq.model import MODEL_NAMES, TARQ_VARIANTS, build_model
from tarq.training.evaluation import evaluate
from tests.test_model import CFG, LAYOUT, N_ITEMS, N_USERS, Synthetic, _inputs

Batch = dict[str, torch.Tensor]


def _requests(seed: int, n_requests: int, max_candidates: int, shuffle_share: float) -> Batch:
    """Rows shaped like impressions: each request (a user, a history) has 1..max_candidates
    candidate items (adjacent rows); ``shuffle_share`` of the rows are then moved elsewhere,
    so that equal rows also occur apart. Each request has its own user (at most 80)."""
    rng = np.random.default_rng(seed)
    base = Synthetic(seed).batch(n_requests, empty_share=0.2)
    base["user"][:, 0] = torch.from_numpy(rng.permutation(N_USERS)[:n_requests] + 2)
    reps = rng.integers(1, max_candidates + 1, n_requests)
    idx = np.repeat(np.arange(n_requests), reps)
    moved = np.sort(rng.permutation(idx.size)[: int(shuffle_share * idx.size)])
    idx[moved] = idx[rng.permutation(moved)]
    rows = torch.from_numpy(idx)
    items = rng.integers(0, N_ITEMS, idx.size)
    batch = {k: base[k][rows] for k in ("user", "hist", "hist_mask", "user_key")}
    batch["item"] = Synthetic(seed).items(items)
    batch["item_key"] = torch.from_numpy(items)
    batch["label"] = torch.from_numpy((rng.random(idx.size) < 0.3).astype(np.float32))
    return batch


@pytest.fixture(scope="module")
def batch() -> Batch:
    return _requests(0, 40, 6, 0.3)


def _model(name: str, batch: Batch) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(name, LAYOUT, CFG)
    model.init_codebooks(_inputs(batch))
    return model.eval()


def _distinct(batch: Batch, rows: torch.Tensor) -> set[bytes]:
    return {
        b"".join(batch[k][r].numpy().tobytes() for k in ("user", "hist", "hist_mask"))
        for r in rows.tolist()
    }


def _check_groups(batch: Batch, groups: bs.Groups | None, merged: bool = True) -> None:
    n = batch["user"].shape[0]
    distinct = _distinct(batch, torch.arange(n))
    if groups is None:
        assert len(distinct) == n
        return
    assert groups.index.shape == (n,) and int(groups.index.max()) == groups.size - 1
    assert torch.equal(groups.index[groups.first], torch.arange(groups.size))
    for g in range(groups.size):
        assert len(_distinct(batch, torch.nonzero(groups.index == g)[:, 0])) == 1
    if merged:
        assert groups.size == len(distinct)
    slot, width = groups.slots()
    pairs = set(zip(groups.index.tolist(), slot.tolist(), strict=True))
    assert len(pairs) == n and int(slot.max()) == width - 1


def test_request_groups_join_exactly_the_equal_rows(batch: Batch) -> None:
    groups = bs.request_groups(batch["user"], batch["hist"], batch["hist_mask"])
    assert groups is not None and groups.size == 40 < batch["user"].shape[0]
    _check_groups(batch, groups)
    one_each = _requests(1, 30, 1, 0.0)
    assert bs.request_groups(one_each["user"], one_each["hist"], one_each["hist_mask"]) is None


def test_a_hash_collision_never_joins_different_rows(
    batch: Batch, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bs, "_HASH_PRIME", 1)  # every row hashes to 0
    groups = bs.request_groups(batch["user"], batch["hist"], batch["hist_mask"])
    _check_groups(batch, groups, merged=False)
    model = _model("tarq", batch)
    with torch.inference_mode():
        ref, new = model(_inputs(batch)).logit, bs.score_batch(model, _inputs(batch)).logit
    assert torch.allclose(ref, new, atol=1e-5)


def _compare(model: torch.nn.Module, batch: Batch, name: str) -> None:
    with torch.inference_mode():
        ref = model(_inputs(batch))
        new = bs.score_batch(model, _inputs(batch))
    assert new.logit.shape == ref.logit.shape
    assert torch.allclose(new.logit, ref.logit, atol=1e-5), (new.logit - ref.logit).abs().max()
    if name in TARQ_VARIANTS:
        assert torch.equal(new.extras["codes"], ref.extras["codes"])
        assert abs(float(new.losses["recon"]) - float(ref.losses["recon"])) < 1e-6
        sides = {k for k in ref.extras if k.startswith("align_sharpness_")}
        assert sides == {k for k in new.extras if k.startswith("align_sharpness_")} and sides
        for k in sides:
            assert torch.allclose(new.extras[k], ref.extras[k], atol=1e-6)
    else:
        assert not new.extras and not new.losses


def _uneven() -> Batch:
    """12 single-row requests and one of 40 candidates: groups too uneven for one layout."""
    batch = _requests(3, 12, 1, 0.0)
    big = _requests(4, 1, 1, 0.0)
    for k in ("user", "hist", "hist_mask", "user_key"):
        batch[k] = torch.cat([batch[k], big[k].expand(40, *big[k].shape[1:])])
    for k in ("item", "item_key", "label"):
        batch[k] = torch.cat([batch[k], _requests(5, 40, 1, 0.0)[k]])
    return batch


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_batch_scoring_equals_the_forward(name: str, batch: Batch) -> None:
    model = _model(name, batch)
    singles = _requests(2, 25, 1, 0.0)
    uneven = _uneven()
    for b, padded in ((batch, True), (singles, None), (uneven, False)):
        groups = bs.request_groups(b["user"], b["hist"], b["hist_mask"])
        if padded is None:
            assert groups is None
        else:  # the target attention's (G, P) query layout, or its row-by-row fallback
            _, width = groups.slots()
            assert (groups.size * width <= 2 * b["user"].shape[0]) == padded
        _compare(model, b, name)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_evaluation_figures_equal_the_reference_path(name: str) -> None:
    batches = [_requests(s, 30, 10, 0.2) for s in (10, 11, 12)]
    model = _model(name, batches[0])
    model.train()
    ref = evaluate(model, batches, CFG.codebook_size, reference=True)
    assert model.training  # evaluate restores the mode it found
    new = evaluate(model, batches, CFG.codebook_size)
    assert sorted(k for k in new if k != "_arrays") == sorted(k for k in ref if k != "_arrays")
    assert round(new["auc"], 6) == round(ref["auc"], 6)
    assert round(new["gauc"], 6) == round(ref["gauc"], 6)
    assert abs(new["logloss"] - ref["logloss"]) < 1e-6
    for k in ("rows", "positives", "gauc_users", "utilization_batch", "collision_rate"):
        assert new.get(k) == ref.get(k)
    for side, stats in ref.get("align_sharpness", {}).items():
        for stat, levels in stats.items():
            assert np.allclose(new["align_sharpness"][side][stat], levels, atol=1e-5)
    if "recon_error" in ref:
        assert abs(new["recon_error"] - ref["recon_error"]) < 1e-6
    for k in ("label", "user_id", "item_id"):
        assert np.array_equal(new["_arrays"][k], ref["_arrays"][k])
    assert np.abs(new["_arrays"]["score"] - ref["_arrays"]["score"]).max() < 1e-6
    quick = evaluate(model, batches, CFG.codebook_size, diagnostics=False)
    assert "align_sharpness" not in quick and "recon_error" not in quick
    assert quick["auc"] == new["auc"] and quick["gauc"] == new["gauc"]
