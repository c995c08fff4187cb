"""Invariants of TARQ and the baselines (CPU, tiny dimensions, seconds)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tarq import metrics
from tarq.data.features import TIME_GAP_BUCKETS, FeatureLayout
from tarq.model import MODEL_NAMES, TARQ_VARIANTS, ModelConfig, build_model
from tarq.model.alignment import alignment_loss, level_log_probs, symmetric_kl
from tarq.model.quantizer import ResidualQuantizer, sq_dist

N_ITEMS, N_CATS, N_BRANDS, N_USERS, SEQ_LEN = 60, 6, 5, 80, 8

LAYOUT = FeatureLayout(
    user_fields=["user_id", "gender"],
    item_fields=["item_id", "category_id", "brand_id", "price_bucket", "shop_id"],
    vocab_sizes={
        "user_id": N_USERS + 2,
        "gender": 4,
        "item_id": N_ITEMS + 2,
        "category_id": N_CATS + 2,
        "brand_id": N_BRANDS + 2,
        "price_bucket": 6,
        "shop_id": 9,
        "action": 6,
        "time_gap": TIME_GAP_BUCKETS + 2,
    },
    seq_len=SEQ_LEN,
)
CFG = ModelConfig(
    emb_dim=8,
    d_model=16,
    n_heads=2,
    tower_hidden=(32,),
    ae_hidden=32,
    n_codebooks=3,
    codebook_size=4,
    dropout=0.0,
    inttower_heads=2,
    inttower_head_dim=8,
    mvke_kernels=2,
    kmeans_iters=200,
)

EXPECTED_LOSSES = {
    "tarq": {"ctr", "tar", "recon", "rq", "distill", "align"},
    "tarq_no_align": {"ctr", "tar", "recon", "rq", "distill"},
    "tarq_no_teacher_align": {"ctr", "recon", "rq"},
    "tt": {"ctr"},
    "mvke": {"ctr"},
    "ta": {"ctr"},
    "pooled": {"ctr"},
    "inttower": {"ctr", "cir"},
}


class Synthetic:
    """Seeded click logs where a click depends on the target–history match.

    Every user likes two categories; histories are drawn mostly from them; an impression is
    clicked with probability 0.85 when the target's category occurs in the history, else 0.08.
    Item attributes are deterministic functions of the item id (a fixed catalog).
    """

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        cat_rng = np.random.default_rng(1234)
        self.item_cat = np.arange(N_ITEMS) % N_CATS
        self.item_brand = cat_rng.integers(0, N_BRANDS, N_ITEMS)
        self.item_price = cat_rng.integers(0, 4, N_ITEMS)
        self.item_shop = cat_rng.integers(0, 7, N_ITEMS)
        self.user_likes = np.stack(
            [cat_rng.choice(N_CATS, 2, replace=False) for _ in range(N_USERS)]
        )

    def items(self, ids: np.ndarray) -> torch.Tensor:
        """Item feature indices (N, 5) of raw item ids (values shifted past PAD/OOV)."""
        return torch.from_numpy(
            np.stack(
                [
                    ids + 2,
                    self.item_cat[ids] + 2,
                    self.item_brand[ids] + 2,
                    self.item_price[ids] + 2,
                    self.item_shop[ids] + 2,
                ],
                axis=1,
            ).astype(np.int64)
        )

    def batch(self, b: int, empty_share: float = 0.1) -> dict[str, torch.Tensor]:
        rng = self.rng
        users = rng.integers(0, N_USERS, b)
        lengths = rng.integers(1, SEQ_LEN + 1, b)
        lengths[rng.random(b) < empty_share] = 0
        hist = np.zeros((b, SEQ_LEN, 5), dtype=np.int64)
        mask = np.arange(SEQ_LEN)[None, :] < lengths[:, None]
        hist_cats = np.full((b, SEQ_LEN), -1)
        for r in range(b):
            n = lengths[r]
            likes = self.user_likes[users[r]]
            cats = np.where(rng.random(n) < 0.85, rng.choice(likes, n), rng.integers(0, N_CATS, n))
            ids = cats + N_CATS * rng.integers(0, N_ITEMS // N_CATS, n)
            hist_cats[r, :n] = cats
            hist[r, :n] = np.stack(
                [
                    ids + 2,
                    self.item_cat[ids] + 2,
                    self.item_brand[ids] + 2,
                    rng.integers(2, 6, n),
                    rng.integers(2, TIME_GAP_BUCKETS + 2, n),
                ],
                axis=1,
            )
        target = rng.integers(0, N_ITEMS, b)
        match = (hist_cats == self.item_cat[target][:, None]).any(1)
        label = (rng.random(b) < np.where(match, 0.85, 0.08)).astype(np.float32)
        user = np.stack([users + 2, users % 2 + 2], axis=1).astype(np.int64)
        return {
            "user": torch.from_numpy(user),
            "item": self.items(target),
            "hist": torch.from_numpy(hist),
            "hist_mask": torch.from_numpy(mask),
            "label": torch.from_numpy(label),
            "user_key": torch.from_numpy(users),
        }


def _inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in batch.items() if k != "user_key"}


def _model(name: str, config: ModelConfig = CFG, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(name, LAYOUT, config)


@pytest.fixture(scope="module")
def batch() -> dict[str, torch.Tensor]:
    return Synthetic(0).batch(64, empty_share=0.2)


# -- shapes and the interface ---------------------------------------------------------------
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_shapes_losses_and_backward(name: str, batch: dict[str, torch.Tensor]) -> None:
    model = _model(name)
    model.init_codebooks(_inputs(batch))
    out = model(_inputs(batch))
    assert out.logit.shape == (64,) and out.logit.dtype == torch.float32
    assert set(out.losses) == EXPECTED_LOSSES[name]
    assert all(v.dim() == 0 and torch.isfinite(v) for v in out.losses.values())
    loss = model.total_loss(out)
    loss.backward()
    assert torch.isfinite(loss)
    if name in TARQ_VARIANTS:
        assert out.extras["codes"].shape == (64, CFG.n_codebooks)
        assert out.extras["codes"].dtype == torch.int64
        assert model.codebooks.shape == (CFG.n_codebooks, CFG.codebook_size, CFG.dz)
        assert model.latent(batch["item"]).shape == (64, CFG.dz)
    # Without a label the supervised terms are skipped.
    model.eval()
    with torch.no_grad():
        unlabeled = model({k: v for k, v in _inputs(batch).items() if k != "label"})
    assert not {"ctr", "tar", "cir"} & set(unlabeled.losses)


def test_total_loss_applies_lambda_weights(batch: dict[str, torch.Tensor]) -> None:
    model = _model("tarq")
    out = model(_inputs(batch))
    lam = {"ctr": 1.0, "tar": 1.0, "recon": 1.0, "rq": 0.1, "distill": 1.0, "align": 0.8}
    expect = sum(lam[k] * float(v.detach()) for k, v in out.losses.items())
    assert float(model.total_loss(out).detach()) == pytest.approx(expect, rel=1e-5)
    assert _model("tarq_no_align").loss_weights.get("align", 0.0) == 0.0
    assert _model("tarq_no_teacher_align").teacher is None


def test_saved_configs_without_a_setting_rebuild_the_model_they_were() -> None:
    """A saved config.json lacking a key predates it: rebuilt as trained, not as today's default."""
    dropped = ("distill", "shared_history", "rq_history")
    saved = {k: v for k, v in CFG.to_dict().items() if k not in dropped}
    old = ModelConfig.from_saved(saved)
    assert old.distill == "l2" and old.shared_history is False and old.rq_history == "own"
    assert ModelConfig.from_saved(CFG.to_dict()) == CFG
    assert ModelConfig.from_dict(saved).distill == "score"  # user configs take defaults


def test_config_round_trip_and_errors() -> None:
    cfg = ModelConfig.from_dict(CFG.to_dict())
    assert cfg == CFG
    d = ModelConfig().to_dict()
    assert (d["n_codebooks"], d["codebook_size"], d["fusion"]) == (8, 16, "mean")
    assert [d[f"lambda_{k}"] for k in ("ctr", "tar", "recon", "rq", "distill", "align")] == [
        1.0,
        1.0,
        1.0,
        0.1,
        1.0,
        0.8,
    ]
    with pytest.raises(ValueError, match="unknown model config keys"):
        ModelConfig.from_dict({"d_modle": 8})
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(d_model=10, n_heads=3)
    with pytest.raises(ValueError, match="unknown model"):
        build_model("din", LAYOUT, CFG)


def test_bad_batch_names_the_key(batch: dict[str, torch.Tensor]) -> None:
    model = _model("tt")
    bad = dict(_inputs(batch), item=batch["item"][:, :3])
    with pytest.raises(ValueError, match=r"batch\['item'\] has shape"):
        model(bad)
    with pytest.raises(ValueError, match="lacks 'hist_mask'"):
        model({k: v for k, v in _inputs(batch).items() if k != "hist_mask"})


# -- residual quantizer --------------------------------------------------------------------
def test_residual_quantizer_round_trip() -> None:
    torch.manual_seed(0)
    rq = ResidualQuantizer(4, 8, 6)
    z = torch.randn(100, 6)
    q = rq.quantize(z)
    assert q.codes.shape == (100, 4) and q.residuals.shape == (100, 4, 6)
    picked = torch.stack([rq.codebooks[level, q.codes[:, level]] for level in range(4)], 1)
    final_residual = q.residuals[:, -1] - picked[:, -1]
    assert torch.allclose(rq.decode(q.codes), picked.sum(1), atol=1e-6)
    assert torch.allclose(rq.decode(q.codes), z - final_residual, atol=1e-5)
    assert torch.allclose(q.z_hat, rq.decode(q.codes))
    # Greedy: each code is the nearest entry to that level's residual.
    for level in range(4):
        d = sq_dist(q.residuals[:, level], rq.codebooks[level])
        assert torch.equal(q.codes[:, level], d.argmin(-1))
    assert torch.equal(rq.encode(z), q.codes)


def test_kmeans_init_uses_first_batch_only(batch: dict[str, torch.Tensor]) -> None:
    model = _model("tarq")
    model.eval()
    assert not model.codebooks_initialized
    model.init_codebooks(_inputs(batch))
    assert model.codebooks_initialized and bool(model.state_dict()["quantizer.initialized"])
    with torch.no_grad():
        z = model.latent(batch["item"])
    c0 = model.codebooks[0]
    assign = sq_dist(z, c0).argmin(-1)
    for k in assign.unique().tolist():
        assert torch.allclose(c0[k], z[assign == k].mean(0), atol=1e-5)
    # Level 1 is fitted to the level-0 residuals of the same batch.
    r1 = z - c0[assign]
    c1 = model.codebooks[1]
    a1 = sq_dist(r1, c1).argmin(-1)
    for k in a1.unique().tolist():
        assert torch.allclose(c1[k], r1[a1 == k].mean(0), atol=1e-5)
    before = model.codebooks.clone()
    other = Synthetic(99).batch(64)
    model.init_codebooks(_inputs(other))
    with torch.no_grad():
        model(_inputs(other))
    assert torch.equal(model.codebooks, before)
    # forward initialises lazily, from the batch it sees first, identically.
    lazy = _model("tarq")
    lazy.eval()
    with torch.no_grad():
        lazy(_inputs(batch))
    assert lazy.codebooks_initialized and torch.allclose(lazy.codebooks, before)


def _clusters(n_per: int, centers: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.cat(
        [c + 0.05 * torch.randn(n_per, centers.shape[1], generator=g) for c in centers]
    )


def test_a_collapsed_codebook_is_revived_and_trains_back_to_health() -> None:
    """One entry takes every residual (the others sit far off, never chosen): without
    revival eq. 8 only moves that entry and the level stays at 1 of K; with it the dead entries
    are re-seeded from the batch and training spreads the rows over the clusters."""
    torch.manual_seed(0)
    centers = 3.0 * torch.eye(4, 6)  # 4 well-separated clusters in R^6
    z = _clusters(64, centers, seed=1)
    error, used = {}, {}
    for revive in (0.0, 0.1):
        q = ResidualQuantizer(1, 4, 6, revive_below=revive, usage_decay=0.9)
        with torch.no_grad():
            q.codebooks.copy_(100.0 + torch.arange(4.0)[None, :, None].expand(1, 4, 6))
            q.codebooks[0, 0] = z.mean(0)  # the one live entry, nearest to everything
        q.initialized.fill_(True)
        assert int(q.encode(z)[:, 0].unique().numel()) == 1
        opt = torch.optim.SGD(q.parameters(), lr=0.5)
        for _ in range(120):
            q.revive_dead(z)
            out = q.quantize(z)
            opt.zero_grad()
            q.loss(out).backward()
            opt.step()
            q.track_usage(out.codes)
        codes = q.encode(z)[:, 0]
        used[revive] = int(codes.unique().numel())
        error[revive] = float(((z - q.codebooks[0, codes].detach()) ** 2).sum(-1).mean())
    assert used[0.0] == 1 and error[0.0] > 4.0  # collapsed: every row on one entry
    assert used[0.1] >= 3 and error[0.1] < 0.5 * error[0.0]


def test_revival_reseeds_only_dead_entries_from_the_batch() -> None:
    q = ResidualQuantizer(2, 4, 3, revive_below=0.1)
    with torch.no_grad():
        q.codebooks.copy_(torch.randn(2, 4, 3))
    q.initialized.fill_(True)
    before = q.codebooks.detach().clone()
    z = torch.randn(32, 3)
    assert q.revive_dead(z) == 0 and torch.equal(q.codebooks, before)  # uniform usage: alive
    q.usage[0, 2] = 0.0  # level 0, entry 2 dead
    q.usage[1, 1] = 0.01  # level 1, entry 1 below 0.1 / 4
    assert q.dead_entries().sum() == 2
    assert q.revive_dead(z) == 2
    after = q.codebooks.detach()
    keep = torch.ones(2, 4, dtype=torch.bool)
    keep[0, 2] = keep[1, 1] = False
    assert torch.equal(after[keep], before[keep])
    assert (z == after[0, 2]).all(-1).any()  # a level-0 residual is z itself
    assert torch.allclose(q.usage[0, 2], torch.tensor(0.25)) and not q.dead_entries().any()
    q.revive_enabled = False  # held (a warm run): nothing moves, usage frozen
    q.usage[0, 0] = 0.0
    frozen = q.usage.clone()
    assert q.revive_dead(z) == 0
    q.track_usage(torch.zeros(32, 2, dtype=torch.long))
    assert torch.equal(q.usage, frozen)


def test_no_revival_means_no_usage_buffer() -> None:
    """Models saved before revival existed load their state dict as it was."""
    off = ResidualQuantizer(2, 4, 3)
    assert off.usage is None and "usage" not in off.state_dict()
    assert off.revive_dead(torch.randn(8, 3)) == 0
    assert "usage" in ResidualQuantizer(2, 4, 3, revive_below=0.1).state_dict()
    saved = ModelConfig.from_saved(
        {k: v for k, v in CFG.to_dict().items() if k != "codebook_revive"}
    )
    assert saved.codebook_revive == 0.0
    assert "quantizer.usage" not in build_model("tarq", LAYOUT, saved).state_dict()


def test_kmeans_init_on_a_sample_covers_clusters_the_first_batch_missed() -> None:
    """The first batch holds two of eight clusters (popular items); k-means on it leaves the
    other six far from every entry, k-means on a larger sample of distinct items does not."""
    centers = 4.0 * torch.eye(8, 8)
    z = _clusters(40, centers, seed=2)
    first = z[:80]  # clusters 0 and 1 only
    far = z[80:]
    gaps = {}
    for name, sample in (("first batch", first), ("sample", z)):
        q = ResidualQuantizer(1, 8, 8)
        q.kmeans_init(sample)
        gaps[name] = float(sq_dist(far, q.codebooks[0].detach()).min(-1).values.mean())
    assert gaps["sample"] < 0.1 < 10.0 < gaps["first batch"]


def test_codebook_sample_takes_distinct_items_of_the_first_rows() -> None:
    from tarq.training.train import codebook_sample

    def batch(items: list[int]) -> dict[str, torch.Tensor]:
        n = len(items)
        return {
            "item": torch.tensor(items)[:, None].repeat(1, 2),
            "label": torch.zeros(n),
            "user": torch.arange(n)[:, None],
        }

    first = batch([5, 5, 7, 5])
    rest = iter([batch([7, 9, 1, 9]), batch([2, 3, 4, 8]), batch([6, 6, 6, 6])])
    out = codebook_sample(first, rest, 10)  # rows 0..9: items 5 5 7 5 7 9 1 9 2 3
    assert out["item"][:, 0].tolist() == [5, 7, 9, 1, 2, 3]
    assert out["user"][:, 0].tolist() == [0, 2, 1, 2, 0, 1]  # each item's first row
    assert codebook_sample(first, iter([]), 10) is first
    assert codebook_sample(first, iter([batch([9])]), 4) is first  # 0 or ≤ a batch: the batch


# -- gradient routing ----------------------------------------------------------------------
def _grads(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad for p in module.parameters()]


def _silent(module: torch.nn.Module) -> bool:
    return all(g is None or not g.abs().any() for g in _grads(module))


def test_teacher_gets_no_gradient_from_distillation_or_alignment(
    batch: dict[str, torch.Tensor],
) -> None:
    model = _model("tarq")
    model.init_codebooks(_inputs(batch))
    out = model(_inputs(batch))
    (out.losses["distill"] + out.losses["align"]).backward(retain_graph=True)
    assert _silent(model.teacher)
    assert not _silent(model.rq_attention)  # the student does learn from them
    assert model.quantizer.codebooks.grad is not None
    model.zero_grad(set_to_none=True)
    out.losses["tar"].backward()  # positive control: L_tar trains the teacher
    assert not _silent(model.teacher)


def test_reconstruction_sends_no_gradient_to_embeddings(batch: dict[str, torch.Tensor]) -> None:
    model = _model("tarq")
    out = model(_inputs(batch))
    out.losses["recon"].backward()
    for part in (model.emb, model.user_tower, model.item_tower, model.rq_attention, model.teacher):
        assert _silent(part)
    assert not _silent(model.autoencoder)


# -- alignment -----------------------------------------------------------------------------
def test_symmetric_kl_nonnegative_and_zero_on_equal() -> None:
    torch.manual_seed(0)
    lp = torch.log_softmax(torch.randn(50, 7), -1)
    lq = torch.log_softmax(torch.randn(50, 7), -1)
    assert (symmetric_kl(lp, lq) >= 0).all()
    assert torch.allclose(symmetric_kl(lp, lp), torch.zeros(50))


def test_alignment_loss_zero_when_distributions_equal_and_positive_otherwise() -> None:
    torch.manual_seed(0)
    m, k, d, b = 3, 5, 6, 20
    books = torch.randn(m, k, d)
    rq = ResidualQuantizer(m, k, d)
    with torch.no_grad():
        rq.codebooks.copy_(books)
    z = torch.randn(b, d)
    q = rq.quantize(z)
    # Personalised codebook = static codebook and h_tar = z: identical distributions per level.
    same = alignment_loss(q.residuals, books, z, books[None].expand(b, -1, -1, -1), q.codes)
    assert float(same) == pytest.approx(0.0, abs=1e-6)
    lp = level_log_probs(z, books[0])
    assert torch.allclose(lp.exp().sum(-1), torch.ones(b))
    diff = alignment_loss(
        q.residuals, books, torch.randn(b, d), books[None] + torch.randn(b, m, k, d), q.codes
    )
    assert float(diff) > 0


def test_model_alignment_loss_is_nonnegative(batch: dict[str, torch.Tensor]) -> None:
    out = _model("tarq")(_inputs(batch))
    assert float(out.losses["align"]) >= 0


# -- serving path --------------------------------------------------------------------------
FLAGS = {"shared_history": {"shared_history": True}, "rq_user": {"rq_history": "user"}}


@pytest.mark.parametrize(
    "name", [*MODEL_NAMES, "tarq+shared_history", "tarq+rq_user", "tarq_no_teacher_align+rq_user"]
)
def test_serving_path_matches_training_forward(name: str, batch: dict[str, torch.Tensor]) -> None:
    name, _, flag = name.partition("+")
    model = _model(name, dataclasses.replace(CFG, **FLAGS[flag]) if flag else CFG)
    model.init_codebooks(_inputs(batch))
    model.eval()
    n = 30
    cand = Synthetic(5).items(np.arange(n))
    for r in (0, 3):  # a user with history and, in this fixture, possibly one without
        request = {k: batch[k][r : r + 1] for k in ("user", "hist", "hist_mask")}
        with torch.no_grad():
            state = model.user_side(request["user"], request["hist"], request["hist_mask"])
            v_item, aux = model.item_side(cand)
            served = model.score(state, v_item, aux)
            train_like = model(
                {**{k: v.expand(n, *v.shape[1:]) for k, v in request.items()}, "item": cand}
            ).logit
        assert served.shape == (n,)
        assert torch.allclose(served, train_like, atol=1e-5), (served - train_like).abs().max()
    if name in TARQ_VARIANTS:
        assert state.extra["personal_codebooks"].shape == (
            1,
            CFG.n_codebooks,
            CFG.codebook_size,
            CFG.d_model,
        )
        assert torch.equal(aux, model.catalog_codes(cand))


def test_tarq_personal_codebooks_latent_dim_differs() -> None:
    cfg = dataclasses.replace(CFG, latent_dim=6)
    model = _model("tarq", cfg)
    b = Synthetic(3).batch(32)
    out = model(_inputs(b))
    assert model.codebooks.shape == (3, 4, 6)
    assert torch.isfinite(model.total_loss(out))


# -- empty histories -----------------------------------------------------------------------
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_no_nan_for_users_without_history(name: str) -> None:
    b = Synthetic(7).batch(32, empty_share=1.0)
    assert not b["hist_mask"].any()
    model = _model(name)
    out = model(_inputs(b))
    assert torch.isfinite(out.logit).all()
    loss = model.total_loss(out)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(g).all() for g in _grads(model) if g is not None)


# -- learning ------------------------------------------------------------------------------
# ~6 s (tt) and ~15 s (tarq) on an idle core; marked slow because shared CI cores stretch it.
@pytest.mark.slow
@pytest.mark.parametrize("name", ["tarq", "tt"])
def test_tiny_run_learns_target_history_match(name: str) -> None:
    torch.manual_seed(0)
    cfg = dataclasses.replace(CFG, kmeans_iters=25)
    model = build_model(name, LAYOUT, cfg)
    gen = Synthetic(1)
    test = Synthetic(2).batch(2000)
    model.init_codebooks(_inputs(gen.batch(256)))
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    ctr = []
    for _ in range(120):
        out = model(_inputs(gen.batch(128)))
        loss = model.total_loss(out)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        ctr.append(float(out.losses["ctr"]))
    model.eval()
    with torch.no_grad():
        p = torch.sigmoid(model(_inputs(test)).logit).numpy()
    auc = metrics.auc(test["label"].numpy(), p)
    assert np.mean(ctr[-20:]) < np.mean(ctr[:20]) - 0.03
    assert auc > 0.65, auc


def test_per_dim_losses_are_the_sums_divided_by_the_width(batch: dict[str, torch.Tensor]) -> None:
    """ModelConfig.per_dim_losses: the literal (``l2``) distill and rq are the paper's sums /
    width; the alignment
    (its own temperature) and the ctr/tar/recon terms are unchanged."""
    import dataclasses

    inputs = _inputs(batch)
    outs = {}
    for per_dim in (False, True):
        model = _model("tarq", dataclasses.replace(CFG, per_dim_losses=per_dim, distill="l2"))
        model.eval()
        with torch.no_grad():
            outs[per_dim] = model(inputs).losses
    lit, per = outs[False], outs[True]
    for k in ("ctr", "tar", "recon", "align"):
        assert float(per[k]) == pytest.approx(float(lit[k]), rel=1e-5)
    assert float(per["distill"]) == pytest.approx(float(lit["distill"]) / CFG.d_model, rel=1e-5)
    assert float(per["rq"]) == pytest.approx(float(lit["rq"]) / CFG.dz, rel=1e-5)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_score_bias_starts_at_the_base_rates_log_odds(name: str) -> None:
    """init_score_bias: every model's output bias at logit(click rate) (0.2 → log 1/4), so an
    untrained model predicts the base rate; off with bias_from_base_rate = False."""
    import dataclasses

    label = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0] * 8)
    batch = {k: v[:40] for k, v in Synthetic(5).batch(40).items()}
    for on in (True, False):
        model = _model(name, dataclasses.replace(CFG, bias_from_base_rate=on))
        model.init_codebooks(_inputs(batch))
        model.init_score_bias(label)
        biases = [m.bias for m in model.modules() if hasattr(m, "log_scale")]
        biases += [model.bias] if name == "pooled" else []
        assert biases, name
        want = math.log(0.25) if on else 0.0
        for b in biases:
            assert float(b) == pytest.approx(want, abs=1e-6), (name, on)


def test_direction_distillation_ignores_norms_and_matches_the_l2_of_unit_vectors() -> None:
    """The default L_distill is 1 − cos(h_rq, sg[h_tar]) = ½‖ĥ_rq − ĥ_tar‖²: a teacher whose
    norm grows leaves it unchanged (the literal L2 grows with it), and no gradient reaches
    the teacher."""
    import dataclasses

    from tarq.model.tarq import distillation

    g = torch.Generator().manual_seed(0)
    h_rq = torch.randn(32, 8, generator=g, requires_grad=True)
    h_tar = torch.randn(32, 8, generator=g, requires_grad=True)
    direction = dataclasses.replace(CFG, distill="direction")
    l2 = dataclasses.replace(CFG, distill="l2", per_dim_losses=False)
    base = distillation(h_rq, h_tar, direction)
    unit = 0.5 * ((F.normalize(h_rq, dim=-1) - F.normalize(h_tar, dim=-1)) ** 2).sum(-1).mean()
    assert float(base) == pytest.approx(float(unit), rel=1e-5)
    assert 0.0 <= float(base) <= 2.0
    assert float(distillation(h_rq, 10 * h_tar, direction)) == pytest.approx(float(base), rel=1e-5)
    assert float(distillation(h_rq, 10 * h_tar, l2)) > 10 * float(distillation(h_rq, h_tar, l2))
    base.backward()
    assert h_tar.grad is None and h_rq.grad is not None
    with pytest.raises(ValueError, match="distill must be one of"):
        ModelConfig(distill="cosine")


def test_score_distillation_matches_the_teachers_cosine_with_the_item() -> None:
    """distill='score': (cos(h_rq, sg v_item) − sg cos(h_tar, v_item))²; zero when the student
    scores the item as the teacher does, whatever h_tar's part orthogonal to v_item; the
    gradient reaches h_rq only (not the teacher, not v_item)."""
    from tarq.model.tarq import distillation

    cfg = dataclasses.replace(CFG, distill="score")
    g = torch.Generator().manual_seed(1)
    v = torch.randn(16, 8, generator=g, requires_grad=True)
    h_tar = torch.randn(16, 8, generator=g, requires_grad=True)
    h_rq = torch.randn(16, 8, generator=g, requires_grad=True)
    loss = distillation(h_rq, h_tar, cfg, v)
    want = (
        (F.cosine_similarity(h_rq, v, dim=-1) - F.cosine_similarity(h_tar, v, dim=-1)) ** 2
    ).mean()
    assert float(loss) == pytest.approx(float(want), rel=1e-5) and 0.0 < float(loss) <= 4.0
    loss.backward()
    assert h_rq.grad is not None and h_tar.grad is None and v.grad is None
    # A student whose part orthogonal to v_item points elsewhere (same length, same part along
    # v_item) scores the item as the teacher does: no score loss, a large direction loss.
    vd, t = v.detach(), h_tar.detach()
    unit = vd / vd.norm(dim=-1, keepdim=True)
    along = (t * unit).sum(-1, keepdim=True) * unit
    other = torch.randn(16, 8, generator=g)
    other = other - (other * unit).sum(-1, keepdim=True) * unit
    student = along + other * (t - along).norm(dim=-1, keepdim=True) / other.norm(
        dim=-1, keepdim=True
    )
    assert float(distillation(student, t, cfg, vd)) == pytest.approx(0.0, abs=1e-8)
    direction = dataclasses.replace(CFG, distill="direction")
    assert float(distillation(student, t, direction)) > 0.1
    with pytest.raises(ValueError, match="needs v_item"):
        distillation(h_rq, h_tar, cfg)


def test_mvke_gets_the_backbones_x_user_queried_history_attention(
    batch: dict[str, torch.Tensor],
) -> None:
    """MVKE's user side holds the same history-attention module as the two-tower's user tower
    (TT's trained weights load into it as they are), queries it with x_user, feeds its output
    to the virtual kernels, and every weight of it gets a gradient from the click loss."""
    from tarq.model.towers import HistoryAttention

    mvke, tt = _model("mvke"), _model("tt", seed=1)
    assert type(mvke.history) is HistoryAttention and isinstance(tt.user_tower, HistoryAttention)
    backbone = {k: v for k, v in tt.user_tower.state_dict().items() if not k.startswith("mlp.")}
    mvke.history.load_state_dict(backbone, strict=True)

    seen: dict[str, torch.Tensor] = {}
    mvke.history.attn.register_forward_hook(
        lambda _m, args, out: seen.update(query=args[0].detach(), h_user=out.detach())
    )
    inputs = _inputs(batch)
    mvke.eval()
    with torch.no_grad():
        base = mvke(inputs).logit
        x_user = mvke.emb.x_user(mvke.emb.user_fields(inputs["user"]))
    assert torch.allclose(seen["query"][:, 0], x_user)
    h_user = seen["h_user"][:, 0]

    # The attention's output reaches the score: a different h_user gives other logits.
    handle = mvke.history.attn.register_forward_hook(lambda _m, _a, out: out * 0.0)
    with torch.no_grad():
        assert not torch.allclose(mvke(inputs).logit, base)
    handle.remove()
    assert h_user.abs().sum() > 0

    mvke.train()
    mvke.zero_grad()
    mvke.total_loss(mvke(inputs)).backward()
    for name, p in mvke.history.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


# -- the implementations equal their reference formulation (guards for faster paths) -------
def _values_and_grads(
    fn, inputs: list[torch.Tensor], module: torch.nn.Module, seed: int
) -> list[torch.Tensor]:
    """fn()'s output and the gradients of a fixed random projection of it w.r.t. ``inputs``
    and ``module``'s parameters, with the RNG (dropout) seeded alike."""
    torch.manual_seed(seed)
    out = fn()
    weight = torch.linspace(-1.0, 1.0, out.numel()).view_as(out)
    params = [p for p in module.parameters() if p.requires_grad]
    grads = torch.autograd.grad((out * weight).sum(), [*inputs, *params], allow_unused=True)
    return [out.detach(), *(g for g in grads if g is not None)]


def _assert_all_close(fast: list[torch.Tensor], ref: list[torch.Tensor]) -> None:
    assert len(fast) == len(ref)
    for a, b in zip(fast, ref, strict=True):
        assert a.shape == b.shape
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), (a - b).abs().max()


@pytest.mark.parametrize("latent_dim", [None, 6])
def test_personal_codebooks_equal_reference_formulation(latent_dim: int | None) -> None:
    """Ĉ = MHA(lift(C), H^rq, H^rq) with the m·K queries repeated per row (the reference)."""
    cfg = dataclasses.replace(CFG, latent_dim=latent_dim, dropout=0.2)
    model = _model("tarq", cfg).train()
    rq = model.rq_attention
    b = Synthetic(11).batch(16, empty_share=0.25)
    x_seq, mask = model.emb.sequence(b["hist"], b["hist_mask"])
    x_seq = x_seq.detach().requires_grad_(True)
    books = model.quantizer.codebooks

    def reference() -> torch.Tensor:
        h = rq.seq(x_seq, mask)
        q = rq.lift(books.reshape(cfg.n_codebooks * cfg.codebook_size, -1))
        out = rq.attn(q[None].expand(16, -1, -1), h, h, mask)
        return out.view(16, cfg.n_codebooks, cfg.codebook_size, -1)

    fast = _values_and_grads(
        lambda: rq.personal_codebooks(books, x_seq, mask), [x_seq, books], rq, 3
    )
    _assert_all_close(fast, _values_and_grads(reference, [x_seq, books], rq, 3))


def test_alignment_distributions_equal_per_level_reference() -> None:
    """log p, log p̂, the loss and its gradients equal the per-level loop of eq. 17 (reference:
    r̂ updated level by level with Ĉ[b, l, c_l], distances summed per level)."""
    from tarq.model.alignment import level_distributions

    torch.manual_seed(4)
    b, m, k, d, tau = 32, 3, 5, 8, 2.0
    residuals = torch.randn(b, m, d, requires_grad=True)
    books = torch.randn(m, k, d, requires_grad=True)
    h_tar = torch.randn(b, d)
    personal = (0.5 * torch.randn(b, m, k, d)).requires_grad_(True)
    codes = torch.randint(k, (b, m))

    def reference() -> torch.Tensor:
        r_hat, rows, log_p, log_q = h_tar, torch.arange(b), [], []
        for level in range(m):
            s_p = sq_dist(residuals[:, level], books[level])
            s_q = sq_dist(r_hat, personal[:, level])
            log_p.append(torch.log_softmax(-s_p / tau, -1))
            log_q.append(torch.log_softmax(-s_q / tau, -1))
            r_hat = r_hat - personal[rows, level, codes[:, level]]
        return torch.stack([torch.stack(log_p, 1), torch.stack(log_q, 1)])

    def fast() -> torch.Tensor:
        return torch.stack(level_distributions(residuals, books, h_tar, personal, codes, tau))

    inputs = [residuals, books, personal]
    got = _values_and_grads(fast, inputs, torch.nn.Module(), 0)
    _assert_all_close(got, _values_and_grads(reference, inputs, torch.nn.Module(), 0))
    assert got[0][1].exp().sum(-1).allclose(torch.ones(b, m))


def test_mvke_experts_contain_the_two_tower_user_tower(batch: dict[str, torch.Tensor]) -> None:
    """Each MVKE expert reads its kernel vector beside TT's user-tower input [x_user; h_user]:
    with TT's embeddings, history attention and tower weights loaded and the kernel's columns
    of the first layer zeroed, every expert's user vector IS the two-tower's v_user."""
    mvke, tt = _model("mvke"), _model("tt", seed=1)
    d = CFG.d_model
    mvke.emb.load_state_dict(tt.emb.state_dict())
    tower = tt.user_tower.state_dict()
    mvke.history.load_state_dict({k: v for k, v in tower.items() if not k.startswith("mlp.")})
    mlp_state = {k.removeprefix("mlp."): v for k, v in tower.items() if k.startswith("mlp.")}
    with torch.no_grad():
        for expert in mvke.towers:
            first = dict(mlp_state)
            first["0.weight"] = torch.cat(
                [torch.zeros_like(mlp_state["0.weight"][:, :d]), mlp_state["0.weight"]], dim=1
            )
            expert.load_state_dict(first)
    mvke.eval(), tt.eval()
    inputs = _inputs(batch)
    with torch.no_grad():
        users = mvke.user_side(inputs["user"], inputs["hist"], inputs["hist_mask"]).v_user
        v_user = tt.user_side(inputs["user"], inputs["hist"], inputs["hist_mask"]).v_user
    assert users.shape == (len(inputs["user"]), CFG.mvke_kernels, d)
    for j in range(CFG.mvke_kernels):
        assert torch.allclose(users[:, j], v_user, atol=1e-6)


# -- training-speed paths: the same arithmetic as the reference ---------------------------------
def test_attention_training_path_is_the_fused_path_with_a_dropout_mask(monkeypatch) -> None:
    """Train mode spells attention out (softmax, cheap dropout mask, weights @ V); with a mask
    that keeps everything it equals the fused ``scaled_dot_product_attention`` of eval mode,
    for self-attention (one Q/K/V product), shared queries and per-row queries."""
    from tarq.model import layers

    torch.manual_seed(0)
    attn = layers.MultiHeadAttention(16, 2, dropout=0.3)
    x = torch.randn(5, 7, 16)
    mask = torch.rand(5, 7) > 0.4
    mask[:, 0] = True
    shared_q, row_q = torch.randn(1, 9, 16), torch.randn(5, 3, 16)
    with torch.no_grad():
        attn.eval()
        want = [attn(x, x, x, mask), attn(shared_q, x, x, mask), attn(row_q, x, x, mask)]
        monkeypatch.setattr(
            layers, "dropout_keep", lambda shape, p, device: torch.ones(shape, dtype=torch.bool)
        )
        monkeypatch.setattr(layers, "dropout_scale", lambda p: 1.0)
        attn.train()
        got = [attn(x, x, x, mask), attn(shared_q, x, x, mask), attn(row_q, x, x, mask)]
    assert got[1].shape == (5, 9, 16)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # A masked key gets no weight: changing it changes nothing.
    x2 = x.clone()
    x2[~mask] = 100.0
    with torch.no_grad():
        torch.testing.assert_close(attn(row_q, x2, x2, mask), got[2], rtol=1e-5, atol=1e-5)


def test_dropout_keep_rate_scale_and_reproducibility() -> None:
    from tarq.model.layers import dropout_keep, dropout_scale

    torch.manual_seed(3)
    keep = dropout_keep((400, 500), 0.1, torch.device("cpu"))
    torch.manual_seed(3)
    again = dropout_keep((400, 500), 0.1, torch.device("cpu"))
    assert keep.dtype == torch.bool and torch.equal(keep, again)
    rate = keep.float().mean().item()
    assert rate == pytest.approx(230 / 256, abs=0.003)  # p = 0.1 rounds to 26/256
    assert dropout_scale(0.1) == pytest.approx(256 / 230)
    # The expectation of a kept-and-scaled value is the value.
    assert (keep.float() * dropout_scale(0.1)).mean().item() == pytest.approx(1.0, abs=0.004)
    assert dropout_keep((7,), 0.0, torch.device("cpu")).all()


def test_shared_history_uses_one_encoder_for_student_and_teacher(
    batch: dict[str, torch.Tensor],
) -> None:
    cfg = dataclasses.replace(CFG, shared_history=True)
    model = _model("tarq", cfg)
    assert model.rq_attention.seq is model.teacher.seq
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params < sum(p.numel() for p in _model("tarq").parameters())
    model.init_codebooks(_inputs(batch))
    out = model(_inputs(batch))
    model.total_loss(out).backward()
    enc = model.teacher.seq.attn.q.weight.grad
    assert enc is not None and enc.abs().sum() > 0
    # Saved and rebuilt from its config, the model is the same (both names load one module).
    fresh = _model("tarq", cfg, seed=9)
    fresh.load_state_dict(model.state_dict())
    model.eval(), fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(_inputs(batch)).logit, model(_inputs(batch)).logit)
    # Without the teacher there is nothing to share.
    assert not hasattr(_model("tarq_no_teacher_align", cfg), "teacher") or (
        _model("tarq_no_teacher_align", cfg).teacher is None
    )


@pytest.mark.parametrize("shared_history", [False, True])
def test_rq_history_user_reads_the_user_towers_encoder(
    batch: dict[str, torch.Tensor], shared_history: bool
) -> None:
    cfg = dataclasses.replace(CFG, rq_history="user", shared_history=shared_history)
    model = _model("tarq", cfg)
    assert model.rq_attention.seq is model.user_tower.seq
    assert (model.teacher.seq is model.user_tower.seq) is shared_history
    own = sum(p.numel() for p in _model("tarq").parameters())
    assert sum(p.numel() for p in model.parameters()) < own
    model.init_codebooks(_inputs(batch))
    out = model(_inputs(batch))
    model.total_loss(out).backward()
    # The one encoder learns from the CTR loss through both the tower and RQ-Attention.
    assert model.user_tower.seq.attn.q.weight.grad.abs().sum() > 0
    fresh = _model("tarq", cfg, seed=9)
    fresh.load_state_dict(model.state_dict())
    model.eval(), fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(_inputs(batch)).logit, model(_inputs(batch)).logit)
    with pytest.raises(ValueError, match="rq_history"):
        dataclasses.replace(CFG, rq_history="teacher")


def test_own_rq_history_trains_as_before(batch: dict[str, torch.Tensor]) -> None:
    """rq_history = "own" keeps the forward's dropout draws in their old order: the same
    seed gives the same losses as the tower-first arithmetic spelt out here."""
    model = _model("tarq", seed=4)
    model.init_codebooks(_inputs(batch))
    model.train()
    torch.manual_seed(11)
    out = model(_inputs(batch))
    torch.manual_seed(11)
    e = model.emb
    x = _inputs(batch)
    x_user = e.x_user(e.user_fields(x["user"]))
    x_seq, mask = e.sequence(x["hist"], x["hist_mask"])
    v_user = model.user_tower(x_user, x_seq, mask)
    v_item = model.item_tower(e.x_item(e.item_fields(x["item"])))
    torch.testing.assert_close(
        out.extras["y_tt"], torch.cosine_similarity(v_user, v_item, -1).detach()
    )
