"""Semantic-ID churn against the served table: the figures, the ceiling, the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tarq.ids.churn import id_churn
from tarq.ids.semantic_ids import HEALTH_JSON, IDS_FILE, SemanticIdError, assign_ids
from tarq.release.publish import publish
from tarq.store.warehouse import connect
from tests.test_semantic_ids import make_trained


def test_churn_of_a_hand_made_pair() -> None:
    old_ids = np.array([1, 2, 3, 4, 5])
    old = np.array([[0, 0, 0], [1, 1, 1], [2, 2, 2], [3, 3, 3], [0, 1, 2]])
    new_ids = np.array([5, 4, 3, 2, 1, 6, 7])  # another order, two new items, none dropped
    new = np.array(
        [
            [0, 1, 2],  # 5 unchanged
            [3, 3, 0],  # 4 changed at level 2 only
            [1, 2, 2],  # 3 changed at level 0 (so every prefix changed)
            [1, 1, 1],  # 2 unchanged
            [0, 0, 0],  # 1 unchanged
            [9, 9, 9],
            [8, 8, 8],
        ]
    )
    c = id_churn(new_ids, new, old_ids, old, against_version=3)
    assert (c.items_compared, c.items_new, c.items_dropped) == (5, 2, 0)
    assert c.tuple_churn == pytest.approx(2 / 5)
    assert c.level_churn == pytest.approx([1 / 5, 0.0, 1 / 5])
    assert c.prefix_churn == pytest.approx([1 / 5, 1 / 5, 2 / 5])
    assert c.against_version == 3 and c.metrics()["churn_level_2"] == pytest.approx(0.2)
    assert "40.00% of 5 items" in c.summary()
    gone = id_churn(new_ids[:3], new[:3], old_ids, old)
    assert gone.items_dropped == 2 and gone.items_compared == 3


def test_churn_refuses_what_cannot_be_compared() -> None:
    with pytest.raises(ValueError, match="levels"):
        id_churn(np.array([1]), np.zeros((1, 2)), np.array([1]), np.zeros((1, 3)))
    with pytest.raises(ValueError, match="twice"):
        id_churn(np.array([1, 1]), np.zeros((2, 2)), np.array([1]), np.zeros((1, 2)))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_trained(tmp_path_factory.mktemp("churn"))


def test_churn_against_the_served_table_and_its_ceiling(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    src, model_dir = trained
    db = tmp_path / "w.duckdb"
    db.write_bytes(src.read_bytes())
    first = assign_ids(db, model_dir, tmp_path / "ids1", progress=False, max_collision_rate=None)
    assert first.churn is None  # nothing served yet
    pub = publish(
        db, tmp_path / "ids1", model_version="1", run_date="2026-10-06", export_dir=tmp_path / "pub"
    )
    assert pub.manifest["churn"] is None

    with connect(db) as con:  # the catalog grows
        con.execute("INSERT INTO items SELECT range, 1, 2, 9.5, 'new' FROM range(5001, 5011)")
    same = assign_ids(
        db, model_dir, tmp_path / "ids2", progress=False, max_collision_rate=None, max_churn=0.0
    )
    ch = same.churn
    assert ch["against_version"] == pub.version and ch["tuple_churn"] == 0.0
    assert ch["items_new"] == 10 and ch["items_compared"] == pub.manifest["rows"]
    assert any(c["name"] == "max_churn" and c["ok"] for c in same.checks)
    second = publish(
        db, tmp_path / "ids2", model_version="2", run_date="2026-10-07", export_dir=tmp_path / "pub"
    )
    assert second.manifest["churn"]["items_new"] == 10

    # Another model's IDs move most tuples: the ceiling refuses them and writes no ids file.
    other = tmp_path / "other"
    _retrain(db, model_dir, other)
    with pytest.raises(SemanticIdError, match="max_churn"):
        assign_ids(
            db, other, tmp_path / "ids3", progress=False, max_collision_rate=None, max_churn=0.01
        )
    report = json.loads((tmp_path / "ids3" / HEALTH_JSON).read_text())
    assert report["churn"]["tuple_churn"] > 0.01 and not report["ok"]
    assert not (tmp_path / "ids3" / IDS_FILE).exists()


def _retrain(db: Path, like: Path, out: Path) -> None:
    from tarq.model import ModelConfig
    from tarq.training.train import TrainConfig, train

    cfg = json.loads((like / "config.json").read_text())
    samples = Path(json.loads((like / "metrics.json").read_text())["samples"])
    tcfg = TrainConfig(**{**cfg["train"], "seed": 1})
    train(samples, "tarq", out, ModelConfig.from_dict(cfg["model"]), tcfg, progress=False)


def test_collapsed_assignments_are_refused_by_default(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    import torch

    from tarq.model.io import load_weights

    db, model_dir = trained
    collapsed = tmp_path / "collapsed"
    collapsed.mkdir()
    for f in model_dir.iterdir():
        if f.is_file():
            (collapsed / f.name).write_bytes(f.read_bytes())
    (collapsed / "vocab").mkdir()
    for f in (model_dir / "vocab").iterdir():
        (collapsed / "vocab" / f.name).write_bytes(f.read_bytes())
    state = load_weights(model_dir / "model.pt")
    key = next(k for k in state if k.endswith("codebooks"))
    books = state[key]
    # Every entry of every level equal: every item gets the same tuple.
    state[key] = books[:, :1].expand_as(books).clone()
    torch.save(state, collapsed / "model.pt")
    with pytest.raises(SemanticIdError, match="max_collision_rate") as err:
        assign_ids(db, collapsed, tmp_path / "ids", progress=False)
    # Resolution hands out free tuples whose entries are all equal: the ceiling judges the
    # model's own codes, not the resolved ones.
    assert "before resolution" in str(err.value)
    report = assign_ids(db, collapsed, tmp_path / "ids2", progress=False, max_collision_rate=None)
    rs = report.resolution
    assert rs["greedy_collision_rate_distinct_inputs"] == pytest.approx(1.0)
    assert report.collision_rate_distinct_inputs < rs["greedy_collision_rate_distinct_inputs"]
