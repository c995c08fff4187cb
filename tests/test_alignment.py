"""Codebook alignment (eq. 17–18): its temperature, its independence from ``per_dim_losses``,
its sharpness diagnostics, and that it is not inert at the default settings."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from flows.tracking import alignment_metrics
from tarq.model import ModelConfig, build_model
from tarq.model.alignment import level_log_probs, sharpness
from tests.test_model import CFG, LAYOUT, Synthetic, _inputs

GROUP = "emb."


def _tarq(config: ModelConfig, name: str = "tarq", seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(name, LAYOUT, config)


@pytest.fixture(scope="module")
def batch() -> dict[str, torch.Tensor]:
    return Synthetic(3).batch(256, empty_share=0.1)


def _sharpness_eval(
    model: torch.nn.Module, batch: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    model.init_codebooks(_inputs(batch))
    model.eval()
    with torch.no_grad():
        out = model(_inputs(batch))
    return {
        k.removeprefix("align_sharpness_"): v
        for k, v in out.extras.items()
        if k.startswith("align_sharpness_")
    }


def test_sharpness_of_uniform_and_one_hot() -> None:
    k = 16
    uniform = torch.full((5, 3, k), -math.log(k))
    ent, top = sharpness(uniform)
    assert torch.allclose(ent, torch.full((3,), math.log(k)), atol=1e-5)
    assert torch.allclose(top, torch.full((3,), 1 / k))
    one_hot = torch.log_softmax(torch.tensor([50.0] + [0.0] * (k - 1)).expand(5, 3, k), -1)
    ent, top = sharpness(one_hot)
    assert float(ent.max()) < 1e-6 and float(top.min()) > 0.999


def test_level_log_probs_sharpen_as_the_temperature_falls() -> None:
    torch.manual_seed(0)
    r, books = torch.randn(100, 8), torch.randn(6, 8)
    ents = [float(sharpness(level_log_probs(r, books, t)[:, None])[0, 0]) for t in (0.5, 4, 64)]
    assert ents[0] < ents[1] < ents[2] < math.log(6)
    assert ents[2] > 0.95 * math.log(6)  # τ = 64 on distances of a few units: nearly uniform


def test_relative_distances_make_the_alignment_scale_free() -> None:
    """align_relative: scaling the residual and the entries together (a teacher whose h_tar
    grows) leaves p unchanged; with absolute distances it sharpens p."""
    g = torch.Generator().manual_seed(1)
    r, e = torch.randn(32, 8, generator=g), torch.randn(16, 8, generator=g)
    rel = level_log_probs(r, e, 0.2, relative=True)
    assert torch.allclose(level_log_probs(10 * r, 10 * e, 0.2, relative=True), rel, atol=1e-5)
    absolute = sharpness(level_log_probs(r, e, 20.0)[:, None])[1, 0]
    assert sharpness(level_log_probs(10 * r, 10 * e, 20.0)[:, None])[1, 0] > absolute + 0.3
    # the same for per-row codebooks (the personalised side)
    eb = torch.randn(32, 16, 8, generator=g)
    assert torch.allclose(
        level_log_probs(3 * r, 3 * eb, 0.2, relative=True),
        level_log_probs(r, eb, 0.2, relative=True),
        atol=1e-5,
    )


def test_temperature_and_per_dim_switch_act_separately(batch: dict[str, torch.Tensor]) -> None:
    """τ changes the alignment's sharpness; per_dim_losses changes the literal (l2) distill and
    rq, not the alignment (same weights, same batch)."""
    res = {}
    for per_dim in (True, False):
        for tau in (0.02, 1.0):
            model = _tarq(
                dataclasses.replace(
                    CFG, per_dim_losses=per_dim, align_temperature=tau, distill="l2"
                )
            )
            with torch.no_grad():
                res[per_dim, tau] = (_sharpness_eval(model, batch), model(_inputs(batch)).losses)
    for per_dim in (True, False):
        sharp, hot = res[per_dim, 0.02][0], res[per_dim, 1.0][0]
        for side in ("p", "p_hat"):
            # mean over levels: entropy up, max-probability down as τ rises
            assert float(sharp[side][0].mean()) < float(hot[side][0].mean()) - 0.02, side
            assert float(sharp[side][1].mean()) > float(hot[side][1].mean()) + 0.02, side
    for tau in (0.02, 1.0):
        (s_on, l_on), (s_off, l_off) = res[True, tau], res[False, tau]
        for side in ("p", "p_hat"):
            assert torch.allclose(s_on[side], s_off[side], atol=1e-6)
        assert float(l_on["align"]) == pytest.approx(float(l_off["align"]), rel=1e-5)
        assert float(l_on["distill"]) == pytest.approx(
            float(l_off["distill"]) / CFG.d_model, rel=1e-5
        )
        assert float(l_on["rq"]) == pytest.approx(float(l_off["rq"]) / CFG.dz, rel=1e-5)


def _grad_norm(model: torch.nn.Module, loss: torch.Tensor) -> float:
    params = [p for n, p in model.named_parameters() if n.startswith(GROUP)]
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return math.sqrt(sum(float((g * g).sum()) for g in grads if g is not None))


def _align_vs_ctr(config: ModelConfig, batch: dict[str, torch.Tensor]) -> tuple[float, float]:
    """(‖∇_emb λ6·L_align‖ / ‖∇_emb L_ctr‖, mean max-probability of p over levels) at init."""
    model = _tarq(config)
    model.init_codebooks(_inputs(batch))
    out = model(_inputs(batch))
    ratio = _grad_norm(model, model.loss_weights["align"] * out.losses["align"]) / _grad_norm(
        model, out.losses["ctr"]
    )
    return ratio, float(out.extras["align_sharpness_p"][1].mean())


def test_alignment_activity_follows_its_temperature(batch: dict[str, torch.Tensor]) -> None:
    """At d = 64, m = 8, K = 16 the alignment's gradient on the embeddings at initialisation
    falls by orders of magnitude from τ = 1 (the paper) to τ = 64 (the default, what
    per-dimension distances amounted to), where p is uniform; per_dim_losses does not move it."""
    cfg = dataclasses.replace(ModelConfig(), dropout=0.0, align_temperature=1.0)
    k = cfg.codebook_size
    ratio, top = _align_vs_ctr(cfg, batch)
    assert ratio > 1e-3, ratio
    assert top > 1.02 / k, top
    flat = dataclasses.replace(cfg, align_temperature=ModelConfig().align_temperature)
    inert_ratio, inert_top = _align_vs_ctr(flat, batch)
    assert inert_ratio < ratio / 100 and inert_top < 1.001 / k, (inert_ratio, inert_top)
    assert _align_vs_ctr(dataclasses.replace(flat, per_dim_losses=False), batch)[
        0
    ] == pytest.approx(inert_ratio, rel=1e-4)


@pytest.mark.parametrize(
    "name,sides",
    [
        ("tarq", {"p", "p_hat"}),
        ("tarq_no_align", {"p", "p_hat"}),
        ("tarq_no_teacher_align", {"p"}),
        ("tt", set()),
    ],
)
def test_sharpness_extras_in_eval_and_only_with_alignment_in_training(
    name: str, sides: set[str], batch: dict[str, torch.Tensor]
) -> None:
    model = _tarq(CFG, name)
    sharp = _sharpness_eval(model, batch)
    assert set(sharp) == sides
    for v in sharp.values():
        assert v.shape == (2, CFG.n_codebooks)
        assert (v[0] >= 0).all() and (v[0] <= math.log(CFG.codebook_size) + 1e-5).all()
        assert (v[1] >= 1 / CFG.codebook_size - 1e-6).all() and (v[1] <= 1).all()
    model.train()
    extras = model(_inputs(batch)).extras
    assert ("align_sharpness_p" in extras) == (name == "tarq")


def test_alignment_metrics_for_mlflow() -> None:
    result = {
        "test": {
            "auc": 0.7,
            "align_sharpness": {
                "p": {"entropy": [1.0, 2.0], "max_prob": [0.5, 0.25]},
                "p_hat": {"entropy": [2.5, 2.7], "max_prob": [0.1, 0.07]},
            },
        }
    }
    m = alignment_metrics(result["test"])
    assert m["align_p_entropy_l1"] == 2.0 and m["align_p_hat_max_prob_l0"] == 0.1
    assert m["align_p_max_prob_mean"] == pytest.approx(0.375)
    assert len(m) == 2 * 2 * (2 + 1)
    assert alignment_metrics({"auc": 0.7}) == {}
