"""The serving fast paths against their references: the fused numba kernels against the torch
paths of tarq.serving (and the model's own ``score``), the item index against a sorted search,
the lean user side against the model's ``user_side``."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tarq.data.features import TIME_GAP_BUCKETS, FeatureLayout
from tarq.model import ModelConfig, build_model
from tarq.serving import kernels, tarq_logits, two_tower_logits, unit_rows, unit_vector
from tarq.serving.item_index import ItemIndex
from tarq.serving.user_kernels import FusedUserSide
from tarq.serving.user_side import LeanUserSide

SMALL = ModelConfig(
    emb_dim=8, d_model=32, n_heads=4, codebook_size=8, n_codebooks=4, tower_hidden=(32,)
)


def _table(t: int, d: int, m: int, k: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "u_hat": unit_rows(torch.randn(1, d, generator=g))[0],
        "personal": torch.randn(m * k, d, generator=g),
        "v_hat": unit_rows(torch.randn(t, d, generator=g)),
        "codes": torch.randint(0, k, (t, m), generator=g),
        "pool": torch.randn(m * k, generator=g),
        "rows": torch.randint(0, t, (777,), generator=g),  # repeats, unsorted, N ≠ block sizes
    }


def _seq_layout(seq_len: int) -> FeatureLayout:
    return FeatureLayout(
        user_fields=["user_id", "gender"],
        item_fields=["item_id", "category_id", "brand_id", "price_bucket"],
        vocab_sizes={
            "user_id": 60,
            "gender": 4,
            "item_id": 300,
            "category_id": 30,
            "brand_id": 40,
            "price_bucket": 10,
            "action": 6,
            "time_gap": TIME_GAP_BUCKETS + 2,
        },
        seq_len=seq_len,
    )


@pytest.mark.parametrize(
    ("m", "k", "d", "fusion"),
    [
        (8, 16, 64, "mean"),  # the default: the fused balanced-tree path
        (3, 4, 16, "mean"),  # m < 8: padded with the zero row
        (1, 16, 16, "mean"),  # one level: pairs with the zero row only
        (8, 32, 16, "mean"),  # K > 16: no pair sums
        (11, 16, 24, "mean"),  # m > 8: the general path
        (8, 16, 64, "attention"),  # weighted levels: the general path
        (2, 300, 8, "mean"),  # K > 256: uint16 codes
    ],
)
def test_tarq_kernel_equals_torch_reference(m: int, k: int, d: int, fusion: str) -> None:
    x = _table(500, d, m, k)
    pool = x["pool"] if fusion == "attention" else None
    flat = x["codes"] + torch.arange(m) * k
    for rows in (x["rows"], None):
        want = tarq_logits(
            x["u_hat"], x["personal"], x["v_hat"], flat, 2.5, -0.3, pool, rows=rows, block=64
        )
        codes = x["codes"].numpy().astype(kernels.code_dtype(k))
        got = kernels.tarq_scores(
            x["u_hat"].numpy(),
            kernels.padded_codebooks(x["personal"].numpy()),
            x["v_hat"].numpy(),
            codes,
            2.5,
            -0.3,
            None if pool is None else np.append(pool.numpy(), np.float32(-np.inf)),
            rows=None if rows is None else rows.numpy(),
        )
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-5)
        padded = kernels.padded_codebooks(x["personal"].numpy())
        pairs = kernels.pair_sums(padded, m)
        assert (pairs is None) == (m > 8 or k > 16)
        if pairs is not None and pool is None:
            got = kernels.tarq_scores(
                x["u_hat"].numpy(),
                padded,
                x["v_hat"].numpy(),
                codes,
                2.5,
                -0.3,
                rows=None if rows is None else rows.numpy(),
                pairs=pairs,
            )
            np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-5)
    assert codes.dtype == (np.uint8 if k <= 256 else np.uint16)


def test_tarq_kernel_equals_model_score() -> None:
    layout = _seq_layout(12)
    vs = layout.vocab_sizes
    torch.manual_seed(3)
    g = torch.Generator().manual_seed(3)
    model = build_model("tarq", layout, SMALL).eval()
    items = torch.stack(
        [torch.randint(2, vs[f], (300,), generator=g) for f in layout.item_fields], dim=1
    )
    hist = torch.stack(
        [torch.randint(2, vs[f], (1, 12), generator=g) for f in layout.seq_fields], dim=2
    )
    with torch.no_grad():
        model.quantizer.kmeans_init(model.latent(items))
        state = model.user_side(torch.tensor([[7, 2]]), hist, torch.ones(1, 12, dtype=torch.bool))
        v_item, codes = model.item_side(items)
        want = model.score(state, v_item, codes)
    m, k = SMALL.n_codebooks, SMALL.codebook_size
    got = kernels.tarq_scores(
        unit_rows(state.v_user)[0].numpy(),
        kernels.padded_codebooks(state.extra["personal_codebooks"][0].reshape(m * k, -1).numpy()),
        unit_rows(v_item).numpy(),
        codes.numpy().astype(np.uint8),
        float(model.head.scale.detach()),
        float(model.head.bias.detach()),
    )
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-5)


def test_two_tower_kernel_equals_torch_reference() -> None:
    x = _table(500, 40, 1, 2)
    for rows in (x["rows"], None):
        want = two_tower_logits(x["u_hat"], x["v_hat"], 1.7, 0.2, rows=rows, block=50)
        got = kernels.two_tower_scores(
            x["u_hat"].numpy(), x["v_hat"].numpy(), 1.7, 0.2, None if rows is None else rows.numpy()
        )
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-6, atol=1e-6)


def test_code_dtype_is_the_smallest_that_fits() -> None:
    assert kernels.code_dtype(256) == np.uint8
    assert kernels.code_dtype(257) == np.uint16
    assert kernels.code_dtype(65_537) == np.uint32


@pytest.mark.parametrize(
    "ids",
    [
        np.arange(5, 1005),  # dense
        np.random.default_rng(0).permutation(np.arange(-40, 960)),  # dense, negative, shuffled
        np.random.default_rng(1).choice(10**12, 3000, replace=False),  # sparse: the hash
        np.array([np.iinfo(np.int64).max, np.iinfo(np.int64).min + 1, 0]),  # extremes: hash
        np.array([], dtype=np.int64),
    ],
)
def test_item_index_equals_sorted_search(ids: np.ndarray) -> None:
    index = ItemIndex(ids)
    rng = np.random.default_rng(2)
    unknown = np.array([-(10**15), 10**15, np.iinfo(np.int64).min, 7_777_777_777_777])
    unknown = unknown[~np.isin(unknown, ids)]
    query = np.concatenate([rng.choice(ids, 500) if ids.size else ids, unknown])
    query = rng.permutation(query)
    rows, known = index.rows(query)
    want_known = np.isin(query, ids)
    np.testing.assert_array_equal(known, want_known)
    np.testing.assert_array_equal(ids[rows[known]], query[known])
    assert (rows[~known] == 0).all()
    if ids.size > 100:
        assert index.kind == ("hash" if np.ptp(ids) > 10**9 else "dense")


def test_item_index_refuses_duplicates() -> None:
    with pytest.raises(ValueError, match="more than once"):
        ItemIndex(np.array([3, 9, 3]))
    with pytest.raises(ValueError, match="more than once"):
        ItemIndex(np.array([10**12, 5, 10**12]))


USER_SIDES = {
    "lean": LeanUserSide,
    "fused": FusedUserSide,
    "fused_past_max_len": lambda model: FusedUserSide(model, max_len=5),  # hands over to lean
}


@pytest.mark.parametrize("path", list(USER_SIDES))
@pytest.mark.parametrize(
    "name",
    ["tarq", "tarq_attention_lift", "tarq_shared", "tarq_rquser", "tarq_nopos", "tt", "ta"],
)
@pytest.mark.parametrize("n_real", [20, 7, 1, 0])
def test_lean_user_side_equals_model(path: str, name: str, n_real: int) -> None:
    layout = _seq_layout(20)
    cfg = SMALL
    if name == "tarq_attention_lift":
        cfg = dataclasses.replace(SMALL, fusion="attention", latent_dim=16)
    if name == "tarq_shared":
        cfg = dataclasses.replace(SMALL, shared_history=True)
    if name == "tarq_rquser":  # H^rq = H^user = H^tar: one encoder for all three
        cfg = dataclasses.replace(SMALL, rq_history="user", shared_history=True)
    if name == "tarq_nopos":
        cfg = dataclasses.replace(SMALL, positional=False)
    torch.manual_seed(5)
    g = torch.Generator().manual_seed(5)
    model = build_model(name.split("_")[0], layout, cfg).eval()
    vs = layout.vocab_sizes
    user = torch.tensor([[9, 2]])
    hist = torch.stack(
        [torch.randint(2, vs[f], (1, 20), generator=g) for f in layout.seq_fields], dim=2
    )
    mask = torch.zeros(1, 20, dtype=torch.bool)
    mask[0, :n_real] = True
    hist[~mask] = 0
    with torch.no_grad():
        if hasattr(model, "quantizer"):
            items = torch.stack(
                [torch.randint(2, vs[f], (256,), generator=g) for f in layout.item_fields], dim=1
            )
            model.quantizer.kmeans_init(model.latent(items))
        want = model.user_side(user, hist, mask)
    got = USER_SIDES[path](model)(user[0], hist[0, :n_real])
    torch.testing.assert_close(got.v_user, want.v_user[0], rtol=1e-5, atol=1e-5)
    if "personal_codebooks" in want.extra:
        personal = want.extra["personal_codebooks"][0]
        torch.testing.assert_close(got.personal, personal.reshape(got.personal.shape))
    if "h_seq" in want.extra:
        real = want.extra["h_seq"][0][want.extra["mask"][0]]
        torch.testing.assert_close(got.h_seq, real, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("path", list(USER_SIDES))
def test_user_sides_refuse_indices_outside_the_tables(path: str) -> None:
    layout = _seq_layout(5)
    model = build_model("tarq", layout, SMALL).eval()
    side = USER_SIDES[path](model)
    hist = torch.full((3, len(layout.seq_fields)), 2, dtype=torch.int64)
    side(torch.tensor([9, 2]), hist)  # in range
    with pytest.raises(IndexError):
        side(torch.tensor([60, 2]), hist)  # user_id's table has 60 rows
    bad = hist.clone()
    bad[1, 0] = 300  # item_id's table has 300 rows
    with pytest.raises(IndexError):
        side(torch.tensor([9, 2]), bad)


@pytest.mark.parametrize("path", list(USER_SIDES))
def test_lean_user_side_refuses_a_training_model(path: str) -> None:
    model = build_model("tt", _seq_layout(5), SMALL)
    with pytest.raises(ValueError, match="eval mode"):
        USER_SIDES[path](model)


def test_unit_vector_equals_unit_rows() -> None:
    v = torch.randn(5, 64, generator=torch.Generator().manual_seed(3))
    for row in [*v, torch.zeros(64)]:
        got = unit_vector(row.numpy())
        assert got.dtype == np.float32
        torch.testing.assert_close(torch.from_numpy(got), unit_rows(row[None])[0])
