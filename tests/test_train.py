"""The training loop: artefacts, weights-only loading, resume after a crash, DDP."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tarq.model import ModelConfig
from tarq.train import CHECKPOINT, TrainConfig, load_trained, train
from tests.test_samples import DAY0, N_DAYS, _make_warehouse

TINY_MODEL = {"emb_dim": 8, "d_model": 16, "n_heads": 2, "codebook_size": 4, "n_codebooks": 2}


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tarq.data.samples import build_samples

    root = tmp_path_factory.mktemp("train")
    _make_warehouse(root / "w.duckdb")
    build_samples(root / "w.duckdb", DAY0 + dt.timedelta(days=N_DAYS), root / "s", seq_len=6)
    return root / "s"


def _cfg(**train: object) -> tuple[ModelConfig, TrainConfig]:
    mcfg = ModelConfig.from_dict(TINY_MODEL)
    tcfg = TrainConfig(epochs=1, batch_size=64, eval_batch_size=256, patience=0, threads=1)
    for k, v in train.items():
        setattr(tcfg, k, v)
    return mcfg, tcfg


@pytest.mark.parametrize("name", ["tarq", "tt"])
def test_train_writes_artifacts_and_loads_weights_only(samples: Path, tmp_path: Path, name: str) -> None:
    mcfg, tcfg = _cfg()
    result = train(samples, name, tmp_path / name, mcfg, tcfg, progress=False)
    out = tmp_path / name
    for f in ("model.pt", "config.json", "layout.json", "metrics.json", "predictions.parquet",
              CHECKPOINT, "vocab/item_id.parquet"):
        assert (out / f).exists(), f
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(result))
    for key in ("auc", "gauc", "logloss", "gauc_skipped_users"):
        assert key in metrics["test"]
    assert metrics["samples_per_s"] > 0 and metrics["epochs_run"] == 1
    if name == "tarq":
        assert 0 < metrics["test"]["utilization_batch"] <= 1
        assert 0 <= metrics["test"]["collision_rate"] <= 1
    model, cfg = load_trained(out)
    assert cfg["model_name"] == name
    state = torch.load(out / "model.pt", weights_only=True)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_resume_continues_from_last_checkpoint(samples: Path, tmp_path: Path) -> None:
    mcfg, tcfg = _cfg(epochs=1)
    train(samples, "tt", tmp_path / "m", mcfg, tcfg, progress=False)
    # A crash after epoch 1 of 2 leaves the checkpoint; the rerun only runs epoch 2.
    (tmp_path / "m" / "model.pt").unlink()
    _, tcfg2 = _cfg(epochs=2)
    result = train(samples, "tt", tmp_path / "m", mcfg, tcfg2, progress=False)
    assert [h["epoch"] for h in result["history"]] == [0, 1]
    ckpt = torch.load(tmp_path / "m" / CHECKPOINT, weights_only=True)
    assert int(ckpt["epoch"]) == 1


def test_tampered_weights_are_refused(samples: Path, tmp_path: Path) -> None:
    mcfg, tcfg = _cfg()
    train(samples, "tt", tmp_path / "m", mcfg, tcfg, progress=False)

    class Evil:
        def __reduce__(self) -> tuple:
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    torch.save({"x": Evil()}, tmp_path / "m" / "model.pt")
    with pytest.raises(Exception, match=r"[Ww]eights only"):
        load_trained(tmp_path / "m")
    assert not (tmp_path / "pwned").exists()


@pytest.mark.slow
def test_ddp_two_processes(samples: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"model": TINY_MODEL, "train": {
        "epochs": 1, "batch_size": 64, "eval_batch_size": 256, "patience": 0, "threads": 1}}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "tarq.train", "--samples", str(samples), "--model", "tarq",
         "--out", str(tmp_path / "ddp"), "--config", str(cfg)],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert metrics["test"]["auc"] > 0
