"""Sticky semantic IDs: a warm day's assignment keeps an item's served code at a level unless
the nearest entry is closer by more than a margin; FAISS and torch decide alike."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from tarq.ids.semantic_ids import IDS_FILE, assign_ids, faiss_assign, sticky_ladder
from tarq.model.io import load_weights
from tarq.model.quantizer import ResidualQuantizer, sticky_choice
from tarq.release.publish import publish
from tarq.runtime.parallel import serial_map
from tarq.store.warehouse import connect
from tests.test_semantic_ids import make_trained


def test_the_sticky_rule_by_hand() -> None:
    book = torch.tensor([[0.0], [1.0]])
    r = torch.tensor([[0.55], [0.55], [0.55], [0.2]])
    nearest = torch.tensor([1, 1, 1, 0])
    prior = torch.tensor([0, 0, -1, 1])
    # Row 0: the nearest (d 0.45) beats the prior (d 0.55) by 0.10; 0.2 × ‖r‖ = 0.11 keeps it.
    assert sticky_choice(r, book, nearest, prior, 0.2).tolist() == [0, 0, 1, 0]
    # 0.1 × ‖r‖ = 0.055 < 0.10: the item moves; row 3 (0.2 from 0, 0.8 from 1) moves too.
    assert sticky_choice(r, book, nearest, prior, 0.1).tolist() == [1, 1, 1, 0]
    assert sticky_choice(r, book, nearest, prior, math.inf).tolist() == [0, 0, 1, 1]
    assert sticky_choice(r, book, nearest, torch.full((4,), -1), math.inf).equal(nearest)


@pytest.mark.parametrize("margin", [0.0, 0.05, 0.3, math.inf])
def test_faiss_and_torch_stick_alike(margin: float) -> None:
    torch.manual_seed(0)
    q = ResidualQuantizer(4, 8, 6)
    z = torch.randn(2000, 6)
    with torch.no_grad():
        q.codebooks.copy_(torch.randn(4, 8, 6) * torch.tensor([1.0, 0.5, 0.25, 0.1])[:, None, None])
    plain = q.encode(z)
    prior = torch.randint(0, 8, plain.shape)
    prior[::7] = -1  # items that were never served
    torch_codes = q.encode(z, prior, margin)
    books = q.codebooks.detach().numpy()
    faiss_codes = faiss_assign(z.numpy(), books, prior.numpy(), margin)
    assert (faiss_codes == torch_codes.numpy()).mean() > 0.999  # float32 threshold ties only
    assert (faiss_assign(z.numpy(), books) == plain.numpy()).all()
    kept = (torch_codes == prior).float().mean().item()
    if margin == 0.0:
        assert torch_codes[::7].equal(plain[::7])
    if margin == math.inf:
        served = prior[:, 0] >= 0
        assert torch_codes[served].equal(prior[served]) and kept > 0.8
    # A larger margin keeps more served codes.
    assert kept >= (q.encode(z, prior, 0.0) == prior).float().mean().item()


def _drifted(model_dir: Path, out: Path, scale: float) -> Path:
    """A copy of the model whose codebook entries moved a little: a warm day's drift."""
    out.mkdir()
    for f in model_dir.rglob("*"):
        if f.is_file():
            (out / f.relative_to(model_dir)).parent.mkdir(parents=True, exist_ok=True)
            (out / f.relative_to(model_dir)).write_bytes(f.read_bytes())
    state = load_weights(model_dir / "model.pt")
    key = next(k for k in state if k.endswith("codebooks"))
    gen = torch.Generator().manual_seed(3)
    books = state[key]
    state[key] = books + scale * books.std() * torch.randn(books.shape, generator=gen)
    torch.save(state, out / "model.pt")
    return out


def _codes(ids_dir: Path) -> dict[int, tuple[int, ...]]:
    t = pq.read_table(ids_dir / IDS_FILE).to_pandas()
    cols = sorted((c for c in t if c.startswith("code_")), key=lambda c: int(c[5:]))
    return dict(zip(t["item_id"], map(tuple, t[cols].to_numpy()), strict=True))


def test_a_sticky_assignment_moves_fewer_items_and_says_which(tmp_path: Path) -> None:
    db, model_dir = make_trained(tmp_path / "fx")
    # Plain greedy codes: this test holds the sticky rule's own accounting (resolution: below).
    kw = {"progress": False, "max_collision_rate": None, "resolve": False}
    assign_ids(db, model_dir, tmp_path / "ids0", **kw)
    publish(db, tmp_path / "ids0", model_version="1", run_date="2026-10-06", export_dir=tmp_path)
    served = _codes(tmp_path / "ids0")
    with connect(db) as con:  # the catalog grows
        con.execute("INSERT INTO items SELECT range, 1, 2, 9.5, 'new' FROM range(5001, 5011)")
    warm = _drifted(model_dir, tmp_path / "warm", 0.3)

    plain = assign_ids(db, warm, tmp_path / "plain", **kw)
    sticky = assign_ids(db, warm, tmp_path / "sticky", sticky_margin=0.3, **kw)
    frozen = assign_ids(db, warm, tmp_path / "frozen", sticky_margin=math.inf, **kw)
    assert plain.sticky is None and plain.churn["tuple_churn"] > 0.05
    assert sticky.churn["tuple_churn"] < plain.churn["tuple_churn"]
    assert frozen.churn["tuple_churn"] == 0.0 and frozen.ok
    for rep in (sticky, frozen):
        assert rep.agreement["failures"] == 0
    # The report counts the items whose published tuple is not their nearest one.
    p, s = _codes(tmp_path / "plain"), _codes(tmp_path / "sticky")
    held = sum(p[i] != s[i] for i in s)
    st = sticky.sticky
    assert st["items_held"] == held > 0 and st["margin"] == 0.3
    assert st["items_with_served_code"] == len(served) and len(s) > len(served)  # new items
    assert sum(st["held_per_level"]) >= held
    # New items get plain codes; a held item keeps a served code at some level.
    assert all(s[i] == p[i] for i in s if i not in served)
    assert all(any(a == b for a, b in zip(s[i], served[i], strict=True)) for i in s if p[i] != s[i])
    # The mapped assignment (chunks as jobs) writes the same file.
    mapped = assign_ids(
        db, warm, tmp_path / "mapped", sticky_margin=0.3, mapper=serial_map, chunk_size=7, **kw
    )
    assert _codes(tmp_path / "mapped") == s and mapped.sticky == st
    health = json.loads((tmp_path / "sticky" / "health.json").read_text())
    assert health["sticky"]["items_held"] == held
    assert "sticky (margin 0.3" in (tmp_path / "sticky" / "health.txt").read_text()


def test_a_churn_over_the_budget_raises_the_margin_until_it_fits(tmp_path: Path) -> None:
    """With ``max_churn`` set, a margin whose churn exceeds it is doubled (then ∞) until the
    churn fits: the result is the plain sticky rule at the final margin, and the report says
    which margins moved too much. A budget of 0 keeps every served tuple."""
    db, model_dir = make_trained(tmp_path / "fx")
    kw = {"progress": False, "max_collision_rate": None}
    assign_ids(db, model_dir, tmp_path / "ids0", **kw)
    publish(db, tmp_path / "ids0", model_version="1", run_date="2026-10-06", export_dir=tmp_path)
    warm = _drifted(model_dir, tmp_path / "warm", 0.3)

    loose = assign_ids(db, warm, tmp_path / "loose", sticky_margin=0.01, **kw)
    budget = loose.churn["tuple_churn"] / 3
    assert budget > 0
    fit = assign_ids(db, warm, tmp_path / "fit", sticky_margin=0.01, max_churn=budget, **kw)
    assert fit.ok and fit.churn["tuple_churn"] <= budget
    steps = fit.sticky["escalated_from"]
    assert steps[0] == {"margin": 0.01, "tuple_churn": loose.churn["tuple_churn"]}
    assert all(e["tuple_churn"] > budget for e in steps)
    assert fit.agreement["failures"] == 0
    final = fit.sticky["margin"]
    assert final == ("inf" if len(steps) == 5 else 0.01 * 2 ** len(steps))
    direct = assign_ids(
        db, warm, tmp_path / "direct", sticky_margin=math.inf if final == "inf" else final, **kw
    )
    assert _codes(tmp_path / "fit") == _codes(tmp_path / "direct")
    assert direct.sticky["escalated_from"] == []
    assert "moved" in (tmp_path / "fit" / "health.txt").read_text()

    frozen = assign_ids(db, warm, tmp_path / "zero", sticky_margin=0.01, max_churn=0.0, **kw)
    assert frozen.ok and frozen.churn["tuple_churn"] == 0.0
    assert all(e["tuple_churn"] > 0 for e in frozen.sticky["escalated_from"])
    assert sticky_ladder(0.01, 0.0) == [0.01, 0.02, 0.04, 0.08, 0.16, math.inf]
    assert sticky_ladder(0.01, None) == [0.01] and sticky_ladder(None, 0.05) == [None]


def test_no_sticking_to_a_table_of_another_shape(tmp_path: Path) -> None:
    from tarq.ids.semantic_ids import StickyPrior, _sticky_prior

    served = (1, np.array([3, 1, 2]), np.array([[0, 1], [1, 1], [2, 0]]))
    assert _sticky_prior(served, None, (2, 4, 5)) is None
    assert _sticky_prior(served, 0.1, (3, 4, 5)) is None  # other m
    assert _sticky_prior(served, 0.1, (2, 2, 5)) is None  # codes beyond K
    prior = _sticky_prior(served, 0.1, (2, 4, 5))
    assert isinstance(prior, StickyPrior)
    assert prior.lookup(np.array([1, 9, 3])).tolist() == [[1, 1], [-1, -1], [0, 1]]


def test_tarq_is_scored_with_the_codes_it_is_published_with(tmp_path: Path) -> None:
    from tarq.ids.churn import ItemCodes
    from tarq.ids.semantic_ids import read_ids
    from tarq.training.evaluation import evaluate_model_dir

    db, model_dir = make_trained(tmp_path / "fx")
    samples = tmp_path / "fx" / "samples"
    assign_ids(
        db, model_dir, tmp_path / "ids", progress=False, max_collision_rate=None, resolve=False
    )
    _, ids, codes, _ = read_ids(tmp_path / "ids" / IDS_FILE)
    plain = evaluate_model_dir(model_dir, samples, predictions_out=tmp_path / "p0.parquet")
    same = evaluate_model_dir(
        model_dir,
        samples,
        predictions_out=tmp_path / "p1.parquet",
        item_codes=ItemCodes.of(ids, codes),
    )
    p0, p1 = (pq.read_table(tmp_path / f"p{i}.parquet").to_pandas() for i in (0, 1))
    # The published codes of a plain assignment are the nearest entries: the same scores.
    assert np.allclose(p0["score"], p1["score"], atol=1e-6) and same["auc"] == pytest.approx(
        plain["auc"], abs=1e-6
    )
    k = int(codes.max()) + 1
    other = evaluate_model_dir(
        model_dir,
        samples,
        predictions_out=tmp_path / "p2.parquet",
        item_codes=ItemCodes.of(ids, (codes + 1) % k),
    )
    p2 = pq.read_table(tmp_path / "p2.parquet").to_pandas()
    assert not np.allclose(p0["score"], p2["score"], atol=1e-4) and other["rows"] == plain["rows"]
    # Items the table lacks are scored with their nearest entries.
    none = evaluate_model_dir(model_dir, samples, item_codes=ItemCodes.of(ids[:0], codes[:0]))
    assert none["auc"] == pytest.approx(plain["auc"], abs=1e-6)


def test_only_tarq_scores_with_given_codes() -> None:
    from tarq.training.batch_scoring import score_batch
    from tests.test_batch_scoring import _model, _requests
    from tests.test_model import _inputs

    batch = _requests(0, 10, 3, 0.0)
    tt = _model("tt", batch)
    with torch.inference_mode(), pytest.raises(ValueError, match="only TARQ"):
        score_batch(
            tt, _inputs(batch), codes=torch.zeros(len(batch["label"]), 8, dtype=torch.int64)
        )
