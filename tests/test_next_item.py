"""The sequential next-item case (issue: TT and TARQ stayed at the base-rate loss on real
sequential logs while target attention learned): a generated log whose clicks depend on the
history and whose negatives come from the same day's traffic. Every model must learn there."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from tarq.data.importers import run_import
from tarq.data.next_item import NextItemConfig, generate_next_item_logs
from tarq.data.samples import build_samples
from tarq.model import ModelConfig
from tarq.training.train import TrainConfig, train

SMALL = NextItemConfig(
    n_users=600, n_items=3_000, n_categories=60, days=8, p_follow=0.3, p_repeat=0.4
)


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("next_item")
    report = generate_next_item_logs(root / "src", SMALL, seed=0)
    assert report["click_rate"] == pytest.approx(0.2)
    assert report["event_shares"]["repeat"] > 0.3
    db = root / "w.duckdb"
    assert run_import("parquet", root / "src", db).ok
    build_samples(db, "latest", root / "samples")
    return root / "samples"


def _base_logloss(metrics: dict) -> float:
    rate = metrics["test"]["positives"] / metrics["test"]["rows"]
    return -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))


def _train(samples: Path, out: Path, name: str, **model: object) -> dict:
    tcfg = TrainConfig(epochs=1, threads=1, valid_split="hash")
    train(samples, name, out / name, ModelConfig(**model), tcfg, resume=False, progress=False)
    return json.loads((out / name / "metrics.json").read_text(encoding="utf-8"))


def test_generator_is_reproducible(tmp_path: Path) -> None:
    cfg = dataclasses.replace(SMALL, n_users=50, days=2)
    a = generate_next_item_logs(tmp_path / "a", cfg, seed=3)
    b = generate_next_item_logs(tmp_path / "b", cfg, seed=3)
    assert a == b
    for f in ("items", "users", "impressions", "behaviors"):
        assert (tmp_path / "a" / f"{f}.parquet").read_bytes() == (
            tmp_path / "b" / f"{f}.parquet"
        ).read_bytes()
    with pytest.raises(ValueError, match="p_follow and p_repeat"):
        NextItemConfig(p_follow=0.7, p_repeat=0.5)


def test_tt_tarq_and_its_teacher_beat_the_base_rate(samples: Path, tmp_path: Path) -> None:
    runs = {m: _train(samples, tmp_path, m) for m in ("tt", "pooled", "tarq")}
    base = _base_logloss(runs["tt"])
    for name, r in runs.items():
        assert r["test"]["logloss"] < base - 0.01, (name, r["test"]["logloss"], base)
        assert r["test"]["auc"] > 0.6, (name, r["test"]["auc"])
    teacher = runs["tarq"]["history"][-1]["loss_terms"]["tar"]
    assert teacher < base - 0.01, (teacher, base)
