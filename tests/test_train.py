"""The training loop: artefacts, weights-only loading, resume after a crash, DDP."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from tarq.model import ModelConfig
from tarq.model.io import load_trained
from tarq.training.train import CHECKPOINT, TrainConfig, TrainResult, train
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
def test_train_writes_artifacts_and_loads_weights_only(
    samples: Path, tmp_path: Path, name: str
) -> None:
    mcfg, tcfg = _cfg()
    result = train(samples, name, tmp_path / name, mcfg, tcfg, progress=False)
    out = tmp_path / name
    for f in (
        "model.pt",
        "config.json",
        "layout.json",
        "metrics.json",
        "predictions.parquet",
        CHECKPOINT,
        "vocab/item_id.parquet",
    ):
        assert (out / f).exists(), f
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(result.to_dict()))
    # metrics.json is the result's dict (same key order) and reads back into it.
    assert list(metrics) == list(result.to_dict())
    assert TrainResult.from_dict(metrics) == result
    assert (
        TrainResult.from_dict(
            {k: v for k, v in metrics.items() if k not in ("valid_random", "rows_trained")}
        ).rows_trained
        is None
    )
    for key in ("auc", "gauc", "logloss", "gauc_skipped_users"):
        assert key in metrics["test"]
    assert metrics["epochs_run"] == 1 and len(metrics["history"]) == 1
    # Throughput is the samples of the steps taken over the time they took.
    steps = min(tcfg.max_steps_per_epoch or 10**9, metrics["rows_trained"] // tcfg.batch_size)
    assert metrics["history"][0]["samples"] == steps * tcfg.batch_size
    # (train_seconds is rounded to the ms: a few ms of training leave a percent of slack)
    assert metrics["samples_per_s"] == pytest.approx(
        steps * tcfg.batch_size / metrics["train_seconds"], rel=0.05
    )
    if name == "tarq":
        assert 0 < metrics["test"]["utilization_batch"] <= 1
        assert 0 <= metrics["test"]["collision_rate"] <= 1
    model, cfg = load_trained(out)
    assert cfg["model_name"] == name
    state = torch.load(out / "model.pt", weights_only=True)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def _tensors_equal(a: dict, b: dict) -> bool:
    """Two (nested) state dicts hold the same keys and bit-identical tensors."""
    if a.keys() != b.keys():
        return False
    for k, v in a.items():
        w = b[k]
        if isinstance(v, dict):
            if not isinstance(w, dict) or not _tensors_equal(v, w):
                return False
        elif isinstance(v, torch.Tensor):
            if not isinstance(w, torch.Tensor) or not torch.equal(v, w):
                return False
        elif v != w:
            return False
    return True


def test_resume_continues_from_last_checkpoint(samples: Path, tmp_path: Path) -> None:
    """A run that crashed after epoch 1 of 2 ends, when rerun, exactly where an uninterrupted
    run does (weights, optimizer state), keeps the crashed run's epoch-1 record bit for bit and
    trains only epoch 2; ``resume=False`` retrains from scratch instead."""
    mcfg, tcfg2 = _cfg(epochs=2, valid_split="time")
    whole = train(samples, "tt", tmp_path / "whole", mcfg, tcfg2, progress=False)
    end = torch.load(tmp_path / "whole" / CHECKPOINT, weights_only=True)

    # The crash: epoch 1 of 2 finished (its checkpoint written), then the process died.
    # An epochs=1 run trains exactly that epoch (same seed, same stream, same RNG).
    _, tcfg1 = _cfg(epochs=1, valid_split="time")
    train(samples, "tt", tmp_path / "m", mcfg, tcfg1, progress=False)
    (tmp_path / "m" / "model.pt").unlink()
    ckpt_path = tmp_path / "m" / CHECKPOINT
    ckpt = torch.load(ckpt_path, weights_only=True)
    assert int(ckpt["epoch"]) == 0
    # Mark the crashed run's record, so "kept" and "retrained alike" cannot be confused.
    kept = json.loads(ckpt["history"])
    kept[0]["marker"] = "from the checkpoint"
    ckpt["history"] = json.dumps(kept)
    torch.save(ckpt, ckpt_path)
    crashed = tmp_path / "crashed"
    shutil.copytree(tmp_path / "m", crashed)

    result = train(samples, "tt", tmp_path / "m", mcfg, tcfg2, progress=False)
    assert [h["epoch"] for h in result.history] == [0, 1]
    assert result.history[0] == kept[0]  # kept bit for bit, not retrained
    assert result.epochs_run == 2
    resumed = torch.load(ckpt_path, weights_only=True)
    assert int(resumed["epoch"]) == 1
    # The same end state as the uninterrupted run: weights, Adam moments, best state.
    assert _tensors_equal(resumed["model"], end["model"])
    assert _tensors_equal(resumed["optim"]["state"], end["optim"]["state"])
    assert _tensors_equal(resumed["best_state"], end["best_state"])
    assert _tensors_equal(
        torch.load(tmp_path / "m" / "model.pt", weights_only=True),
        torch.load(tmp_path / "whole" / "model.pt", weights_only=True),
    )
    for key in ("epoch", "loss", "samples", "valid_auc"):
        assert result.history[1][key] == whole.history[1][key]

    # resume=False ignores the checkpoint: both epochs trained anew, the record not kept.
    fresh = train(samples, "tt", crashed, mcfg, tcfg2, resume=False, progress=False)
    assert [h["epoch"] for h in fresh.history] == [0, 1]
    assert "marker" not in fresh.history[0]
    assert fresh.history != result.history
    assert fresh.history[0]["loss"] == whole.history[0]["loss"]


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
    cfg.write_text(
        json.dumps(
            {
                "model": TINY_MODEL,
                "train": {
                    "epochs": 1,
                    "batch_size": 64,
                    "eval_batch_size": 256,
                    "patience": 0,
                    "threads": 1,
                },
            }
        )
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "tarq.training.train",
            "--samples",
            str(samples),
            "--model",
            "tarq",
            "--out",
            str(tmp_path / "ddp"),
            "--config",
            str(cfg),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Rank 0 prints the result; rank 1's train() returns None and prints nothing.
    assert proc.stdout.count('"model": "tarq"') == 1, proc.stdout[-3000:]
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    # Each rank trains its half of the rows: an epoch's samples = steps × batch × 2 ranks,
    # and rank 0 alone scores the whole test day.
    steps = metrics["rows_trained"] // 64 // 2
    assert metrics["history"][0]["samples"] == steps * 64 * 2
    assert metrics["test"]["rows"] == json.loads((samples / "meta.json").read_text())["test_rows"]
    assert 0.0 < metrics["test"]["auc"] < 1.0


@pytest.mark.parametrize(
    "name", ["inttower", "mvke", "ta", "tarq_no_align", "tarq_no_teacher_align"]
)
def test_every_other_model_trains_end_to_end(samples: Path, tmp_path: Path, name: str) -> None:
    mcfg, tcfg = _cfg(max_steps_per_epoch=3)
    result = train(samples, name, tmp_path / name, mcfg, tcfg, progress=False)
    out = tmp_path / name
    for f in ("model.pt", "config.json", "layout.json", "metrics.json", "predictions.parquet"):
        assert (out / f).exists(), f
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(result.to_dict()))
    assert metrics["model"] == name and metrics["epochs_run"] == 1
    assert metrics["history"][0]["samples"] == 3 * tcfg.batch_size
    assert 0 <= metrics["test"]["auc"] <= 1 and metrics["test"]["logloss"] > 0
    if name.startswith("tarq"):  # the ablations keep the codebooks and their figures
        assert 0 < metrics["test"]["utilization_batch"] <= 1
    model, cfg = load_trained(out)
    assert cfg["model_name"] == name
    state = torch.load(out / "model.pt", weights_only=True)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def _train_rows(samples: Path) -> pd.DataFrame:
    """day (date), ts and fold of every training row."""
    t = pd.read_parquet(samples / "train", columns=["day", "ts", "fold"])
    t["day"] = pd.to_datetime(t["day"]).dt.date
    return t


def _rows_after(samples: Path, since: dt.date, valid_folds: int = 5) -> tuple[int, int]:
    """(training rows, temporal validation rows) of a warm run on the ONE day after ``since``:
    its latest quarter by time is the validation slice, the rest outside the hash folds is
    trained on."""
    import numpy as np

    t = _train_rows(samples)
    new = t[t["day"] > since]
    assert new["day"].nunique() == 1
    ts = new["ts"].to_numpy()
    cut = np.sort(ts)[int(np.ceil(0.75 * (len(ts) - 1)))]
    return int(((new["fold"] >= valid_folds) & (ts < cut)).sum()), int((ts >= cut).sum())


def test_auto_split_holds_out_the_last_day_only_when_there_are_epochs_to_choose() -> None:
    """valid_split "auto" (the default): one epoch trains on every day (the hash slice is
    reported), several epochs select on the window's last day."""
    from tarq.training.train import effective_split

    assert TrainConfig().valid_split == "auto"
    assert effective_split(TrainConfig(epochs=1)) == "hash"
    assert effective_split(TrainConfig(epochs=2)) == "time"
    assert effective_split(TrainConfig(epochs=1, valid_split="time")) == "time"
    assert effective_split(TrainConfig(epochs=3, valid_split="hash")) == "hash"
    with pytest.raises(ValueError, match="valid_split must be one of"):
        effective_split(TrainConfig(valid_split="day"))


def test_the_last_day_is_the_validation_slice_and_the_random_slice_is_reported(
    samples: Path, tmp_path: Path
) -> None:
    """valid_split "time": early stopping and the best epoch look at the window's last day,
    which is never trained on; the hash folds of the other days are held out too and reported
    as ``valid_random``. "hash" trains on every day and selects on the folds (as before), and
    a checkpoint made under one split is not resumed under the other."""
    from tarq.training.train import CheckpointMismatch

    t = _train_rows(samples)
    last = max(t["day"])
    before = t["day"] < last
    mcfg, tcfg = _cfg(max_steps_per_epoch=2, valid_split="time")
    res = train(samples, "tt", tmp_path / "time", mcfg, tcfg, progress=False)
    assert res.valid_slice == {
        "split": "time",
        "valid_folds": 5,
        "time_from": dt.datetime.combine(last, dt.time()).isoformat(),
    }
    assert res.valid["rows"] == int((~before).sum()) > 0
    assert res.valid_random["rows"] == int((before & (t["fold"] < 5)).sum()) > 0
    assert res.rows_trained == int((before & (t["fold"] >= 5)).sum())
    assert 0 <= res.history[0]["valid_random_auc"] <= 1
    assert res.history[0]["valid_auc"] == res.valid["auc"]

    _, hcfg = _cfg(max_steps_per_epoch=2, valid_split="hash")
    with pytest.raises(CheckpointMismatch, match="valid_split"):
        train(samples, "tt", tmp_path / "time", mcfg, hcfg, progress=False)
    old = train(samples, "tt", tmp_path / "hash", mcfg, hcfg, progress=False)
    assert old.valid_slice["split"] == "hash" and old.valid_random is None
    assert old.valid["rows"] == int((t["fold"] < 5).sum())
    assert old.rows_trained == int((t["fold"] >= 5).sum()) > res.rows_trained
    assert "valid_random_auc" not in old.history[0]
    with pytest.raises(ValueError, match="valid_split must be one of"):
        train(samples, "tt", tmp_path / "bad", mcfg, _cfg(valid_split="day")[1], progress=False)


def test_tarq_train_cli_cold_then_warm_from_since_day(
    samples: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tarq.cli import main as cli_main

    cfg = tmp_path / "cfg.json"
    cfg.write_text(
        json.dumps(
            {
                "model": TINY_MODEL,
                "train": {
                    "epochs": 1,
                    "batch_size": 64,
                    "eval_batch_size": 256,
                    "patience": 0,
                    "threads": 1,
                    "valid_split": "time",
                },
            }
        )
    )
    cold = tmp_path / "cold"
    assert (
        cli_main(
            [
                "train",
                "--samples",
                str(samples),
                "--model",
                "tt",
                "--out",
                str(cold),
                "--config",
                str(cfg),
                "--max-steps",
                "3",
            ]
        )
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed["model"] == "tt" and 0 <= printed["auc"] <= 1
    cold_metrics = json.loads((cold / "metrics.json").read_text())
    assert cold_metrics["warm_start"] == {"mode": "cold"}
    assert cold_metrics["test"]["auc"] == printed["auc"]
    assert (cold / "optimizer.pt").exists()

    meta = json.loads((samples / "meta.json").read_text())
    since = dt.date.fromisoformat(str(meta["train_end"])) - dt.timedelta(days=1)
    warm = tmp_path / "warm"
    assert (
        cli_main(
            [
                "train",
                "--samples",
                str(samples),
                "--model",
                "tt",
                "--out",
                str(warm),
                "--config",
                str(cfg),
                "--warm-from",
                str(cold),
                "--since-day",
                str(since),
            ]
        )
        == 0
    )
    capsys.readouterr()
    metrics = json.loads((warm / "metrics.json").read_text())
    ws = metrics["warm_start"]
    assert ws["mode"] == "warm" and ws["parent_dir"] == str(cold)
    assert ws["since_day"] == str(since) and ws["optimizer_carried"] is True
    # Only the day after --since-day is trained on (the last of the window), less its last
    # hours, which are the warm run's validation slice.
    rows, held = _rows_after(samples, since)
    assert 0 < metrics["rows_trained"] == rows
    assert metrics["valid"]["rows"] == held > 0
    assert metrics["valid_slice"]["time_from"] > str(since + dt.timedelta(days=1))
    assert metrics["rows_trained"] < cold_metrics["rows_trained"]
    assert metrics["history"][0]["samples"] == (metrics["rows_trained"] // 64) * 64

    with pytest.raises(SystemExit, match="--since-day needs --warm-from"):
        cli_main(
            [
                "train",
                "--samples",
                str(samples),
                "--model",
                "tt",
                "--out",
                str(tmp_path / "x"),
                "--config",
                str(cfg),
                "--since-day",
                str(since),
            ]
        )
    # A parent of another model is refused by name, nothing trained.
    assert (
        cli_main(
            [
                "train",
                "--samples",
                str(samples),
                "--model",
                "tarq",
                "--out",
                str(tmp_path / "y"),
                "--config",
                str(cfg),
                "--warm-from",
                str(cold),
            ]
        )
        == 2
    )
    assert "is a 'tt' model, not 'tarq'" in capsys.readouterr().err
    assert not (tmp_path / "y" / "model.pt").exists()


def test_each_test_starts_with_one_torch_thread_and_train_honours_its_config(
    samples: Path, tmp_path: Path
) -> None:
    """tests/conftest.py pins one thread per test; ``train`` uses what it is told while it
    runs and gives the process its thread count back afterwards."""
    assert torch.get_num_threads() == 1
    mcfg, tcfg = _cfg(threads=2, max_steps_per_epoch=1)
    result = train(samples, "tt", tmp_path / "m", mcfg, tcfg, progress=False)
    assert result.threads == 2 and torch.get_num_threads() == 1


def test_the_same_logs_give_the_same_sample_bytes_and_the_same_model(tmp_path: Path) -> None:
    """Reruns are reproducible: sample files byte for byte (DuckDB's partitioned COPY alone
    wrote its parts in thread order), hence the fingerprint, hence the seeded training."""
    from tarq.data.demo import generate
    from tarq.data.samples import build_samples
    from tarq.ids.semantic_ids import file_sha256
    from tarq.model.io import load_weights

    # The `small` preset: parts big enough for DuckDB's writer to run in parallel (the tiny
    # fixtures fit one thread's chunk and were ordered by luck).
    generate(tmp_path / "w.duckdb", preset="small", seed=7)
    builds = []
    for i in range(2):
        rep = build_samples(
            tmp_path / "w.duckdb", "latest", tmp_path / f"s{i}", seq_len=6, threads=4
        )
        files = sorted((tmp_path / f"s{i}").glob("*/part-*.parquet"))
        builds.append(
            (
                rep.fingerprint,
                [(f.relative_to(tmp_path / f"s{i}").as_posix(), file_sha256(f)) for f in files],
            )
        )
    assert builds[0] == builds[1]
    weights = []
    for i in range(2):
        # The default model on two threads: its multi-threaded CPU kernels differed run to run
        # before train() asked torch for deterministic algorithms.
        tcfg = TrainConfig(
            epochs=1, seed=7, max_steps_per_epoch=40, threads=2, eval_batch_size=4096, patience=0
        )
        train(tmp_path / f"s{i}", "tarq", tmp_path / f"m{i}", ModelConfig(), tcfg, progress=False)
        weights.append(load_weights(tmp_path / f"m{i}" / "model.pt"))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_progress_reports_the_step_losses_and_epochs_metrics_json_keeps(
    samples: Path, tmp_path: Path
) -> None:
    from tarq.training.train import STEP_LOG_EVERY

    mcfg, tcfg = _cfg(epochs=2, batch_size=16, max_steps_per_epoch=45)
    events: list[dict] = []
    result = train(
        samples, "tt", tmp_path / "tt", mcfg, tcfg, progress=False, on_progress=events.append
    )
    history = json.loads((tmp_path / "tt" / "metrics.json").read_text())["history"]
    steps = [e for e in events if e["kind"] == "step"]
    epochs = [e["record"] for e in events if e["kind"] == "epoch"]
    assert [h["epoch"] for h in epochs] == [0, 1] and len(history) == 2
    # What the callback saw is what metrics.json keeps: the same losses at the same times.
    assert [[e["step"], e["loss"], e["time_ms"], e["ctr_loss"]] for e in steps] == [
        s for h in history for s in h["step_losses"]
    ]
    n = history[0]["steps"]
    assert n == 45
    # Every STEP_LOG_EVERY steps and the epoch's last, numbered globally across epochs.
    per_epoch = [*range(STEP_LOG_EVERY, n, STEP_LOG_EVERY), n]
    assert [e["step"] for e in steps] == per_epoch + [n + s for s in per_epoch]
    # Each logged loss is the mean of its window; the epoch's loss the mean of all steps.
    windows = [b - a for a, b in zip([0, *per_epoch], per_epoch, strict=False)]
    losses = [s[1] for s in history[0]["step_losses"]]
    assert sum(w * v for w, v in zip(windows, losses, strict=True)) / n == pytest.approx(
        history[0]["loss"]
    )
    # The CTR term (TT's whole loss) logged beside it, as the epoch's mean term.
    ctr = [s[3] for s in history[0]["step_losses"]]
    assert sum(w * v for w, v in zip(windows, ctr, strict=True)) / n == pytest.approx(
        history[0]["loss_terms"]["ctr"]
    )
    times = [e["time_ms"] for e in steps]
    assert times == sorted(times) and result.started_ms <= times[0]
    assert history[0]["ended_ms"] <= times[len(per_epoch)] and result.finished_ms >= times[-1]
    assert epochs[-1] == history[-1]
