"""Semantic-ID assignment: FAISS agrees with torch, coverage of the whole catalog, health."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tarq.ids.semantic_ids import (
    HEALTH_JSON,
    IDS_FILE,
    IdHealth,
    SemanticIdError,
    assign_ids,
    collapse_hint,
    faiss_assign,
    health_text,
    read_ids,
    residual_at,
)
from tarq.store.warehouse import connect, table_fingerprint
from tests.test_samples import DAY0, N_DAYS, _make_warehouse

TINY_MODEL = {
    "emb_dim": 8,
    "d_model": 16,
    "n_heads": 2,
    "codebook_size": 4,
    "n_codebooks": 3,
    "dropout": 0.0,
}
NEW_ITEMS = 40  # items added to the catalog after training (ids unseen by the vocabulary)


def make_trained(root: Path) -> tuple[Path, Path]:
    """A fixture warehouse, a tiny trained TARQ model, then new catalog items; (db, model_dir)."""
    from tarq.data.samples import build_samples
    from tarq.model import ModelConfig
    from tarq.training.train import TrainConfig, train

    db = root / "w.duckdb"
    _make_warehouse(db)
    build_samples(db, DAY0 + dt.timedelta(days=N_DAYS), root / "samples", seq_len=6)
    tcfg = TrainConfig(epochs=1, batch_size=64, eval_batch_size=256, patience=0, threads=1)
    train(
        root / "samples",
        "tarq",
        root / "model",
        ModelConfig.from_dict(TINY_MODEL),
        tcfg,
        progress=False,
    )
    con = connect(db)
    # New items: some in known categories/brands, some in unknown ones, one with no price.
    con.execute(
        "INSERT INTO items SELECT range, range % 9, range % 17, "
        "CASE WHEN range % 10 = 0 THEN NULL ELSE range * 0.7 END, 'new' "
        "FROM range(1001, 1001 + $n)",
        {"n": NEW_ITEMS},
    )
    con.close()
    return db, root / "model"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_trained(tmp_path_factory.mktemp("ids"))


def test_assigns_every_catalog_item_and_agrees_with_torch(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    db, model_dir = trained
    with connect(db, read_only=True) as con:
        before = table_fingerprint(con, "items")
        n_items = con.execute("SELECT count(*) FROM items").fetchone()[0]
    report = assign_ids(
        db, model_dir, tmp_path, chunk_size=37, progress=False, max_collision_rate=None
    )
    assert report.ok, report.checks
    assert report.catalog_size == n_items == report.items_assigned
    assert report.coverage == 1.0
    assert report.items_oov_id >= NEW_ITEMS
    assert report.agreement["failures"] == 0
    assert len(report.utilization_per_level) == TINY_MODEL["n_codebooks"]
    assert 0 < report.utilization_catalog <= 1
    assert 0 <= report.collision_rate <= 1 and report.largest_collision_group >= 1
    assert 0 <= report.collision_rate_distinct_inputs <= report.collision_rate
    assert 0 <= report.items_identical_inputs <= report.catalog_size
    assert report.recon_error >= 0
    health = json.loads((tmp_path / "health.json").read_text())
    assert health == json.loads(json.dumps(report.to_dict()))
    # health.json is the report's dict (same key order), reads back into it, and health.txt
    # is health_text of it.
    assert list(health) == list(report.to_dict()) and IdHealth.from_dict(health) == report
    assert (tmp_path / "health.txt").read_text() == health_text(report)
    assert "FAISS vs torch" in (tmp_path / "health.txt").read_text()

    meta, item_ids, codes, v_item = read_ids(tmp_path / IDS_FILE)
    assert meta["m"] == TINY_MODEL["n_codebooks"] and meta["K"] == TINY_MODEL["codebook_size"]
    assert item_ids.tolist() == sorted(item_ids.tolist()) and item_ids.size == n_items
    assert codes.shape == (n_items, TINY_MODEL["n_codebooks"])
    assert codes.min() >= 0 and codes.max() < TINY_MODEL["codebook_size"]
    assert v_item.shape == (n_items, TINY_MODEL["d_model"]) and np.isfinite(v_item).all()
    # Assigning reads the warehouse only.
    with connect(db, read_only=True) as con:
        assert table_fingerprint(con, "items") == before


def test_codes_equal_the_model_catalog_codes(trained: tuple[Path, Path], tmp_path: Path) -> None:
    from tarq.data.features import FeatureLayout, Vocab
    from tarq.data.loader import encode_fields
    from tarq.model.io import load_trained

    db, model_dir = trained
    report = assign_ids(
        db, model_dir, tmp_path, progress=False, max_collision_rate=None, resolve=False
    )
    assert report.resolution is None
    _, item_ids, codes, v_item = read_ids(tmp_path / IDS_FILE)
    model, _ = load_trained(model_dir)
    layout = FeatureLayout.load(model_dir / "layout.json")
    vocabs = {f: Vocab.load(model_dir / "vocab" / f"{f}.parquet") for f in layout.item_fields}
    with connect(db, read_only=True) as con:
        tbl = con.sql(
            "SELECT it.* EXCLUDE (load_id, price), price_bucket(it.price) AS "
            "price_bucket FROM items it ORDER BY item_id"
        ).to_arrow_table()
    feats = torch.from_numpy(encode_fields(tbl, layout.item_fields, vocabs))
    with torch.no_grad():
        want_codes = model.catalog_codes(feats).numpy()
        want_v, _ = model.item_side(feats)
    tied = {t["item_id"] for t in report.agreement["ties_listed"]}
    keep = np.array([i not in tied for i in item_ids.tolist()])
    np.testing.assert_array_equal(codes[keep], want_codes[keep])
    np.testing.assert_allclose(v_item, want_v.numpy(), rtol=1e-6, atol=1e-6)

    # Resolved (the default): only the items it reports moved differ, in their last levels.
    resolved = assign_ids(db, model_dir, tmp_path / "r", progress=False, max_collision_rate=None)
    _, _, codes_r, v_r = read_ids(tmp_path / "r" / IDS_FILE)
    moved = (codes_r != codes).any(1)
    assert resolved.resolution is not None and resolved.resolution["classes_moved"] > 0
    assert moved.sum() == resolved.resolution["items_moved"]
    np.testing.assert_array_equal(codes_r[:, : report.m - 3], codes[:, : report.m - 3])
    np.testing.assert_array_equal(v_r, v_item)
    # 240 items in K^m = 64 tuples: not every class can get its own.
    assert resolved.distinct_tuples > report.distinct_tuples
    assert resolved.collision_rate_distinct_inputs < report.collision_rate_distinct_inputs
    assert resolved.recon_error >= report.recon_error


def test_faiss_ties_are_listed_not_failed() -> None:
    # Two identical entries at level 0: every point is exactly tied between them.
    rng = np.random.default_rng(0)
    books = rng.normal(size=(2, 4, 8)).astype(np.float32)
    books[0, 1] = books[0, 0]
    z = books[0, 0] + rng.normal(scale=1e-3, size=(50, 8)).astype(np.float32)
    codes = faiss_assign(z, books)
    assert set(codes[:, 0].tolist()) <= {0, 1}
    r1 = residual_at(z[0], books, codes[0], 1)
    np.testing.assert_array_equal(r1, z[0] - books[0, codes[0, 0]])
    from tarq.ids.semantic_ids import _tie_or_failure

    tie, rec = _tie_or_failure(7, 0, z[0], books[0], 0, 1, 1e-5)
    assert tie and rec["faiss_dist"] == rec["torch_dist"]
    tie, _ = _tie_or_failure(7, 0, z[0], books[0], 0, 2, 1e-5)
    assert not tie


def test_disagreement_beyond_ties_fails_and_writes_no_ids(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    import tarq.ids.semantic_ids as sid

    db, model_dir = trained
    (tmp_path / IDS_FILE).write_bytes(b"stale")
    real = sid.faiss_assign

    def shifted(z: np.ndarray, books: np.ndarray, *sticky: object) -> np.ndarray:
        # A broken assignment engine (not a mock of the check): level 0 picks the next entry.
        codes = real(z, books, *sticky)
        codes[:5, 0] = (codes[:5, 0] + 1) % books.shape[1]
        return codes

    sid.faiss_assign = shifted
    try:
        with pytest.raises(SemanticIdError, match="faiss_torch_agreement"):
            assign_ids(db, model_dir, tmp_path, progress=False, max_collision_rate=None)
    finally:
        sid.faiss_assign = real
    report = json.loads((tmp_path / "health.json").read_text())
    assert not report["ok"] and report["agreement"]["failures"] >= 1
    assert report["agreement"]["failures_listed"][0]["level"] == 0
    assert not (tmp_path / IDS_FILE).exists()


def test_baseline_model_is_refused(trained: tuple[Path, Path], tmp_path: Path) -> None:
    from tarq.data.samples import build_samples  # noqa: F401  (samples exist beside the model)
    from tarq.model import ModelConfig
    from tarq.training.train import TrainConfig, train

    db, model_dir = trained
    train(
        model_dir.parent / "samples",
        "tt",
        tmp_path / "tt",
        ModelConfig.from_dict(TINY_MODEL),
        TrainConfig(epochs=1, batch_size=64, eval_batch_size=256, patience=0, threads=1),
        progress=False,
    )
    with pytest.raises(ValueError, match="no semantic IDs"):
        assign_ids(db, tmp_path / "tt", tmp_path / "out", progress=False)


def test_optional_thresholds_fail_the_assignment(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    db, model_dir = trained
    with pytest.raises(SemanticIdError, match=r"max_collision_rate.*Why: ") as err:
        assign_ids(db, model_dir, tmp_path, progress=False, max_collision_rate=-1.0)
    report = IdHealth.from_dict(json.loads((tmp_path / HEALTH_JSON).read_text()))
    assert not report.ok and collapse_hint(report) in str(err.value)


def test_the_collapse_hint_names_what_to_change(trained: tuple[Path, Path], tmp_path: Path) -> None:
    from dataclasses import replace

    db, model_dir = trained
    # compare_served=False once left a result pending on the connection (DuckDB refused the
    # catalog's read after it); benchmarks/codebook_health.py calls it so.
    report = assign_ids(
        db, model_dir, tmp_path, progress=False, max_collision_rate=None, compare_served=False
    )
    assert report.churn is None
    n = report.catalog_size
    collapsed = replace(report, utilization_per_level=[0.9, 0.06], items_oov_id=0)
    hint = collapse_hint(collapsed)
    assert "level(s) 1 (0.06)" in hint and "codebook_revive" in hint and "OOV" not in hint
    unseen = replace(report, utilization_per_level=[1.0, 1.0], items_oov_id=n // 2)
    hint = collapse_hint(unseen)
    assert "min_count" in hint and f"{n // 2:,} items" in hint and "collapsed" not in hint
    neither = replace(report, utilization_per_level=[1.0, 1.0], items_oov_id=0)
    assert "codebook_size" in collapse_hint(neither)
