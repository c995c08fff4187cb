"""Training and evaluation of TARQ and the baselines on the sample Parquet files.

``tarq train --samples DIR --model NAME --out DIR [--config FILE]`` writes::

    model.pt          the weights (state_dict; load with ``torch.load(..., weights_only=True)``)
    config.json       {"model_name", "model": ModelConfig, "train": TrainConfig}
    layout.json       the FeatureLayout, and vocab/ with the vocabularies (for serving)
    metrics.json      test-day and validation metrics, timings, history per epoch
    predictions.parquet  test-day (user_id, item_id, label, score) for plots and comparisons
    checkpoints/last.pt  the state after the last finished epoch (resume after a crash)

Early stopping and the choice of the best epoch look only at a validation slice held out of
the training window, never at the test day: its last day (``valid_split = "time"``, the day
before the test day is the closest to it), or a random hash of rows (``fold`` <
``valid_folds``). The default ``"auto"`` is ``"time"`` when there are epochs to choose between
and ``"hash"`` for a single epoch, which then trains on the freshest day instead of holding it
out for nothing (measured on a next-item log: TT .576 → .610 test AUC with that day trained). Under ``torchrun`` the loop runs
DistributedDataParallel (gloo on CPU); rank 0 evaluates and writes.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import os
import shutil
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.distributed as dist
from tqdm import tqdm

from tarq.data.loader import Batch, BatchStream, SampleSet, model_inputs, temporal_cutoff
from tarq.model import MODEL_NAMES, ModelConfig, build_model
from tarq.model.io import load_weights, save_atomic
from tarq.training.evaluation import evaluate, public_metrics
from tarq.training.train_args import add_train_arguments
from tarq.training.warm_start import (
    OPTIMIZER_FILE,
    Parent,
    WarmStart,
    extend_sample_set,
    load_parent,
    load_state,
    pad_optimizer_state,
)

CHECKPOINT = "checkpoints/last.pt"
# The training loss is recorded (history "step_losses", on_progress) as the mean of every
# STEP_LOG_EVERY optimizer steps: a learning curve, not one point per epoch.
STEP_LOG_EVERY = 20


class CheckpointMismatch(ValueError):
    """The output folder's checkpoint was made from other samples, settings or parent."""


# Settings a resumed run may change: more epochs continue training; threads and the
# evaluation batch size do not change what is trained on.
_RESUMABLE = ("epochs", "threads", "eval_batch_size")


def _samples_fingerprint(samples: Path) -> str:
    meta = samples / "meta.json"
    if meta.is_file():
        fp = json.loads(meta.read_text(encoding="utf-8")).get("fingerprint")
        if fp:
            return str(fp)
    # Samples without build metadata: their files' names and sizes stand in for it.
    files = sorted(samples.glob("*/*.parquet"))
    return "files:" + ",".join(f"{f.parent.name}/{f.name}:{f.stat().st_size}" for f in files)


def checkpoint_inputs(
    samples: str | Path,
    model_name: str,
    mcfg: ModelConfig,
    tcfg: TrainConfig,
    warm: WarmStart | None,
) -> dict[str, Any]:
    """What a checkpoint was made from (samples fingerprint, model, settings, parent): a
    resume must match it, or it would continue other weights under the new run's name."""
    from tarq.ids.semantic_ids import file_sha256

    train_cfg = {k: v for k, v in asdict(tcfg).items() if k not in _RESUMABLE}
    # "auto" means another slice when the epochs change: compare what it meant for this run.
    train_cfg["valid_split"] = effective_split(tcfg)
    parent = None
    if warm is not None:
        parent = {
            **warm.to_dict(),
            "parent_dir": None,
            "parent_sha256": file_sha256(Path(warm.parent_dir) / "model.pt"),
        }
    out = {
        "samples": _samples_fingerprint(Path(samples)),
        "model_name": model_name,
        "model": mcfg.to_dict(),
        "train": train_cfg,
        "warm": parent,
    }
    return json.loads(json.dumps(out, sort_keys=True, default=str))  # as stored (JSON)


def _differences(have: dict[str, Any], want: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(have) | set(want)):
        a, b = have.get(k), want.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k} {str(a)[:16]} vs {str(b)[:16]}")
    return out


def _check_resume(ckpt_path: Path, ckpt: dict[str, Any], inputs: dict[str, Any]) -> None:
    have = json.loads(ckpt["inputs"]) if "inputs" in ckpt else None
    if have == inputs:
        return
    what = (
        "it records no inputs (made by an older version)"
        if have is None
        else "it was made from other inputs: " + "; ".join(_differences(have, inputs)[:4])
    )
    raise CheckpointMismatch(
        f"{ckpt_path}: will not resume: {what}. Train into another --out, or pass --fresh "
        "(train(resume=False)) to start over in this folder"
    )


VALID_SPLITS = ("auto", "time", "hash")


@dataclass
class TrainConfig:
    """Optimisation settings shared by every model (one loop for all, as the paper's setup).

    Validation (what early stopping and the best epoch are chosen on):
        valid_split: ``"auto"`` (default): ``"time"`` with more than one epoch, ``"hash"``
            with one (nothing to choose; the newest day is trained, not held out).
            ``"time"`` holds out the training window's last day (when the window is one day,
            e.g. a warm run on one new day: its latest quarter of rows by time;
            :func:`tarq.data.loader.temporal_cutoff`) and selects on it, reported as
            ``valid``. ``"hash"`` selects on the random slice below and trains on every day
            (the behaviour before the temporal slice existed).
        valid_folds: rows whose ``fold`` (a 0–99 hash of the row) is below it are held out
            too; with ``"time"`` they are reported as ``valid_random`` (same days and users
            as training, so it measures fit, not the next day); 0 holds out none.
    """

    epochs: int = 2
    batch_size: int = 512
    lr: float = 2e-3
    weight_decay: float = 0.0
    grad_clip: float = 5.0
    valid_folds: int = 5
    valid_split: str = "auto"
    patience: int = 1
    seed: int = 0
    max_steps_per_epoch: int | None = None
    shuffle_buffer: int = 65536
    eval_batch_size: int = 4096
    threads: int | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown train config keys: {sorted(unknown)}")
        return cls(**data)


def load_config(path: str | Path | None) -> tuple[ModelConfig, TrainConfig]:
    """Read ``{"model": {...}, "train": {...}}`` from a JSON or TOML file (both optional)."""
    if path is None:
        return ModelConfig(), TrainConfig()
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    data = tomllib.loads(text) if p.suffix == ".toml" else json.loads(text)
    unknown = set(data) - {"model", "train", "model_name"}
    if unknown:
        raise ValueError(f"{p}: unknown config sections {sorted(unknown)}")
    return ModelConfig.from_dict(data.get("model", {})), TrainConfig.from_dict(
        data.get("train", {})
    )


@dataclass(frozen=True)
class TrainResult:
    """What one training run measured (:func:`train`), also written to ``metrics.json``.

    The metric dicts are :func:`tarq.training.evaluation.evaluate`'s figures without its arrays:
    ``rows``, ``positives``, ``auc``, ``gauc``, ``gauc_users``, ``gauc_skipped_users``,
    ``logloss`` and, for TARQ variants, codebook figures (``utilization_batch``,
    ``utilization_catalog``, ``collision_rate``, ``align_sharpness``, …).

    Attributes:
        model: the model name (:data:`tarq.model.MODEL_NAMES`).
        test: metrics of the selected model on the test day.
        valid: metrics on the validation slice epochs were selected on.
        valid_random: metrics on the random hash slice of the training days, reported beside
            a temporal ``valid`` slice; None when there is none (not in ``metrics.json``).
        valid_slice: what ``valid`` is: ``{"split": "time"|"hash", "valid_folds",
            "time_from": ISO timestamp or None}`` (None in files from before it was recorded).
        best_epoch: the epoch whose weights were kept (best validation AUC; -1: none).
        epochs_run: epochs in ``history`` (early stopping may end before ``epochs``).
        train_seconds: wall time of the training epochs (all ranks in step, resumes included).
        samples_per_s: training samples per second over all processes (None: no time spent).
        world_size: processes that trained (DDP).
        threads: torch threads per process.
        n_params: parameters of the model.
        samples: the sample folder trained on (resolved path).
        rows_trained: training rows the stream held (None in files from before it was
            recorded).
        warm_start: ``{"mode": "cold"}``, or ``{"mode": "warm", ...}`` with the
            :class:`tarq.training.warm_start.WarmStart` settings, ``vocab_added``, ``grown_tables`` and
            ``optimizer_carried``.
        history: one record per epoch: ``epoch``, ``seconds``, ``samples``, ``loss``,
            ``loss_terms``, ``valid_auc`` (and ``valid_random_auc``).
    """

    model: str
    test: dict[str, Any]
    valid: dict[str, Any]
    valid_random: dict[str, Any] | None
    valid_slice: dict[str, Any] | None
    best_epoch: int
    epochs_run: int
    train_seconds: float
    samples_per_s: float | None
    world_size: int
    threads: int
    n_params: int
    samples: str
    rows_trained: int | None
    warm_start: dict[str, Any]
    history: list[dict[str, Any]]
    started_ms: int | None = None
    finished_ms: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The result as written to ``metrics.json`` (``valid_random`` only when present)."""
        out = asdict(self)
        if out["valid_random"] is None:
            del out["valid_random"]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainResult:
        """A result read back from ``metrics.json``. Keys that older runs did not write:
        ``valid_random``, ``valid_slice``, ``rows_trained``, ``started_ms`` and ``finished_ms``
        become None, ``warm_start`` ``{"mode": "cold"}`` (every run was cold then); unknown keys
        are ignored.

        Raises:
            ValueError: another key is missing (not a training result).
        """
        old: dict[str, Any] = {
            "valid_random": None,
            "valid_slice": None,
            "rows_trained": None,
            "warm_start": {"mode": "cold"},
            "started_ms": None,
            "finished_ms": None,
        }
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in data and n not in old]
        if missing:
            raise ValueError(f"not a training result: no {', '.join(missing)}")
        return cls(**{n: data[n] if n in data else old[n] for n in names})


def _now_ms() -> int:
    return int(time.time() * 1000)


def _dist_info() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return rank, world


def train(
    samples: str | Path,
    model_name: str,
    out_dir: str | Path,
    model_config: ModelConfig | None = None,
    train_config: TrainConfig | None = None,
    resume: bool = True,
    progress: bool | None = None,
    warm: WarmStart | None = None,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult | None:
    """Train ``model_name`` on the samples in ``samples`` and write the artefacts to ``out_dir``.

    With ``warm`` the model continues a parent (:mod:`tarq.training.warm_start`): its vocabularies
    extended by today's ids, its weights (codebooks included, no k-means) and optionally its
    optimizer state, trained on the sample days after ``warm.since_day`` plus a replay sample.
    A crash during a warm run resumes from the run's own checkpoint.

    ``on_progress`` (rank 0) is called with ``{"kind": "step", "step", "loss", "time_ms",
    "ctr_loss"}``
    every :data:`STEP_LOG_EVERY` optimizer steps (the mean loss of those steps; global step
    numbers) and ``{"kind": "epoch", "record"}`` after each epoch's validation, the record as
    the history keeps it — e.g. to log a tracking run live. Both are in ``metrics.json`` too
    (``history[i]["step_losses"]``, ``history[i]["ended_ms"]``), with the same times.

    Returns the :class:`TrainResult` whose ``to_dict()`` is written to ``metrics.json``, on
    rank 0; the other ranks of a DDP run (which evaluate and write nothing) get None.
    The process's torch thread count is set for the run and restored after it. Training uses
    torch's deterministic algorithms (the same samples, settings and thread count give the same
    weights bit for bit; measured at no cost on CPU), restored after the run too.
    """
    threads_before = torch.get_num_threads()
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        return _train(
            samples,
            model_name,
            out_dir,
            model_config,
            train_config,
            resume,
            progress,
            warm,
            on_progress,
        )
    finally:
        torch.set_num_threads(threads_before)
        torch.use_deterministic_algorithms(deterministic_before)


def _train(
    samples: str | Path,
    model_name: str,
    out_dir: str | Path,
    model_config: ModelConfig | None,
    train_config: TrainConfig | None,
    resume: bool,
    progress: bool | None,
    warm: WarmStart | None,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult | None:
    if model_name not in MODEL_NAMES:
        raise ValueError(f"unknown model {model_name!r}; choose one of {', '.join(MODEL_NAMES)}")
    mcfg, tcfg, out = model_config or ModelConfig(), train_config or TrainConfig(), Path(out_dir)
    rank, world = _dist_info()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
    torch.set_num_threads(tcfg.threads or max(1, (os.cpu_count() or 1) // world))
    torch.manual_seed(tcfg.seed)
    started_ms = _now_ms()
    sset, parent, warm_info = _open_samples(samples, model_name, mcfg, warm)
    model = build_model(model_name, sset.layout, mcfg)
    since = warm.since_day if warm is not None else None
    streams = _streams(samples, sset, tcfg, since, warm.replay_folds if warm else 0, rank, world)
    train_stream, steps = streams.train, streams.steps

    optim = torch.optim.Adam(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    ckpt_path = out / CHECKPOINT
    inputs = checkpoint_inputs(samples, model_name, mcfg, tcfg, warm)
    run = _starting_point(
        model,
        optim,
        model_name,
        tcfg,
        sset,
        streams.cutoff,
        ckpt_path,
        inputs if resume else None,
        parent,
        warm_info,
    )
    history = run.history
    net: torch.nn.Module = (
        model
        if world == 1
        else torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    )
    model.train()
    train_seconds = float(sum(h["seconds"] for h in history))
    samples_seen = int(sum(h["samples"] for h in history))
    bad_epochs = len(history) - 1 - run.best_epoch if history else 0
    show = (rank == 0) if progress is None else (progress and rank == 0)
    report = on_progress if rank == 0 else None
    if history and history[0].get("ended_ms"):  # resumed: training began before this process
        started_ms = min(started_ms, history[0]["ended_ms"] - int(1000 * history[0]["seconds"]))

    for epoch in range(run.epoch, tcfg.epochs):
        if tcfg.patience and bad_epochs >= tcfg.patience:
            break  # early stop: validation AUC has not improved for `patience` epochs
        train_stream.set_epoch(epoch)
        t0 = time.perf_counter()
        bar = tqdm(
            total=steps,
            desc=f"{model_name} epoch {epoch + 1}/{tcfg.epochs}",
            disable=not show,
            file=sys.stderr,
            mininterval=2.0,
        )
        record = _train_epoch(
            net,
            model,
            optim,
            train_stream,
            steps,
            tcfg.grad_clip,
            bar,
            f"{model_name} epoch {epoch}",
            sum(int(h.get("steps", 0)) for h in history),
            report,
        )
        bar.close()
        seconds = time.perf_counter() - t0
        n_samples = record["steps"] * tcfg.batch_size * world
        train_seconds += seconds
        samples_seen += n_samples
        record = {"epoch": epoch, "seconds": round(seconds, 3), "samples": n_samples, **record}
        if rank == 0:
            improved = _end_epoch(
                model,
                optim,
                model_name,
                mcfg,
                streams,
                run,
                record,
                epoch,
                ckpt_path,
                inputs,
                full=epoch == tcfg.epochs - 1,
            )
            bad_epochs = 0 if improved else bad_epochs + 1
            if report is not None:
                report({"kind": "epoch", "record": record})
        if world > 1:  # every rank stops early together: rank 0 decides
            flag = torch.tensor([bad_epochs], dtype=torch.int64)
            dist.broadcast(flag, 0)
            bad_epochs = int(flag.item())
            dist.barrier()

    if rank != 0:
        dist.barrier()
        return None
    if run.best_state is not None:
        model.load_state_dict(run.best_state)
    metrics, arrays = _final_metrics(model, model_name, mcfg, tcfg, streams, run)
    result = TrainResult(
        **metrics,
        train_seconds=round(train_seconds, 3),
        samples_per_s=round(samples_seen / train_seconds, 1) if train_seconds else None,
        world_size=world,
        threads=torch.get_num_threads(),
        n_params=int(sum(p.numel() for p in model.parameters())),
        samples=str(Path(samples).resolve()),
        rows_trained=train_stream.rows(),
        warm_start=warm_info,
        history=history,
        started_ms=started_ms,
        finished_ms=_now_ms(),
    )
    _write_artifacts(out, model, model_name, mcfg, tcfg, sset, result, arrays)
    save_atomic(optim.state_dict(), out / OPTIMIZER_FILE)
    if world > 1:
        dist.barrier()
    return result


@dataclass
class _Streams:
    """The batch streams of one run: training rows, the validation slice that selects epochs,
    the random hash slice reported beside a temporal one (None when absent), the test day."""

    train: BatchStream
    valid: BatchStream
    random: BatchStream | None
    test: BatchStream
    cutoff: dt.datetime | None  # the temporal slice starts here (never trained on)
    steps: int  # optimizer steps per epoch (max_steps_per_epoch applied)


def effective_split(tcfg: TrainConfig) -> str:
    """``"time"`` or ``"hash"``: what ``tcfg.valid_split`` means for this run (``"auto"`` is
    ``"time"`` only when there are several epochs to choose between)."""
    if tcfg.valid_split not in VALID_SPLITS:
        raise ValueError(f"valid_split must be one of {VALID_SPLITS}, got {tcfg.valid_split!r}")
    if tcfg.valid_split == "auto":
        return "time" if tcfg.epochs > 1 else "hash"
    return tcfg.valid_split


def training_rows(
    sset: SampleSet, tcfg: TrainConfig, cutoff: dt.datetime | None, **kwargs: Any
) -> BatchStream:
    """The shuffled training rows (the folds outside the hash validation slice, before the
    temporal cutoff); ``kwargs``: DDP sharding, warm-run days and replay (BatchStream's)."""
    return BatchStream(
        sset,
        "train",
        tcfg.batch_size,
        folds=(tcfg.valid_folds, 100),
        shuffle=True,
        seed=tcfg.seed,
        buffer_rows=tcfg.shuffle_buffer,
        ts_before=cutoff,
        **kwargs,
    )


def _streams(
    samples: str | Path,
    sset: SampleSet,
    tcfg: TrainConfig,
    since: dt.date | None,
    replay: int,
    rank: int,
    world: int,
) -> _Streams:
    split = effective_split(tcfg)
    if split == "hash" and tcfg.valid_folds < 1:
        raise ValueError(f"valid_split {tcfg.valid_split!r} (here 'hash') needs valid_folds >= 1")
    # Rows from the cutoff on are the temporal slice: never trained on, replay included.
    cutoff = temporal_cutoff(sset, "train", since) if split == "time" else None
    train_stream = training_rows(
        sset,
        tcfg,
        cutoff,
        rank=rank,
        world=world,
        drop_last=True,
        since_day=since,
        replay_folds=replay,
    )
    random_stream: BatchStream | None = None
    if tcfg.valid_folds:
        random_stream = BatchStream(
            sset,
            "train",
            tcfg.eval_batch_size,
            folds=(0, tcfg.valid_folds),
            since_day=since,
            ts_before=cutoff,
        )
        if since is not None and random_stream.rows() == 0:
            random_stream = BatchStream(
                sset, "train", tcfg.eval_batch_size, folds=(0, tcfg.valid_folds), ts_before=cutoff
            )
        if random_stream.rows() == 0:
            random_stream = None
    if cutoff is not None:
        valid_stream = BatchStream(sset, "train", tcfg.eval_batch_size, ts_from=cutoff)
    elif random_stream is not None:
        valid_stream, random_stream = random_stream, None
    else:
        raise ValueError(
            f"{samples}: no validation rows (valid_split {tcfg.valid_split!r}, "
            f"valid_folds {tcfg.valid_folds})"
        )
    steps = len(train_stream)
    if tcfg.max_steps_per_epoch:
        steps = min(steps, tcfg.max_steps_per_epoch)
    if steps == 0:
        raise ValueError(
            f"{samples}: {train_stream.rows()} training rows are fewer than one batch "
            f"of {tcfg.batch_size} per process"
        )
    return _Streams(
        train_stream,
        valid_stream,
        random_stream,
        BatchStream(sset, "test", tcfg.eval_batch_size),
        cutoff,
        steps,
    )


def _open_samples(
    samples: str | Path, model_name: str, mcfg: ModelConfig, warm: WarmStart | None
) -> tuple[SampleSet, Parent | None, dict[str, Any]]:
    """The sample set (a warm run's vocabularies extended by today's ids), the warm parent
    (None when cold) and the ``warm_start`` record of metrics.json."""
    sset = SampleSet.open(samples)
    if warm is None:
        return sset, None, {"mode": "cold"}
    parent = load_parent(
        warm.parent_dir, model_name, mcfg, sset.layout, with_optimizer=warm.carry_optimizer
    )
    sset, added = extend_sample_set(sset, parent)
    return sset, parent, {"mode": "warm", **warm.to_dict(), "vocab_added": added}


@dataclass
class _Start:
    """Where the epoch loop starts: epoch 0 of a fresh or warm model, or after a checkpoint."""

    epoch: int = 0
    best_auc: float = -math.inf
    best_epoch: int = -1
    best_state: dict[str, torch.Tensor] | None = None
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    # The validation figures of best_state when its epoch evaluated them in full (the last
    # epoch: diagnostics included), so the final metrics need not score the slices again;
    # (valid, valid_random or None). Not checkpointed: a resumed run scores them again.
    best_valid: tuple[dict[str, Any], dict[str, Any] | None] | None = None


def _train_epoch(
    net: torch.nn.Module,
    model: torch.nn.Module,
    optim: torch.optim.Optimizer,
    stream: BatchStream,
    steps: int,
    grad_clip: float | None,
    bar: tqdm,
    where: str,
    step_offset: int = 0,
    report: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """One epoch of at most ``steps`` optimizer steps (``net`` is ``model`` or its DDP wrapper).

    Returns {"steps", "loss" (mean weighted total), "loss_terms" (mean unweighted terms),
    "step_losses" ([global step, mean loss of the last STEP_LOG_EVERY steps, time ms, mean CTR
    log-loss term of those steps] every STEP_LOG_EVERY steps and at the epoch's last step)};
    each step-loss entry also goes to ``report``. The CTR term is what every model's total
    has in common (IntTower adds a contrastive term, TARQ distillation and the RQ terms), so
    its curve is the one comparable across models.
    """
    loss_sum, n_batches, parts_sum = 0.0, 0, {}
    window_sum, window_ctr, window_n, step_losses = 0.0, 0.0, 0, []
    for step, batch in enumerate(stream):
        if step >= steps:
            break
        out = net(model_inputs(batch))
        loss = model.total_loss(out)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{where}: non-finite loss at step {step}")
        optim.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optim.step()
        value = float(loss.detach())
        loss_sum += value
        window_sum += value
        if "ctr" in out.losses:  # every model's training forward has it
            window_ctr += float(out.losses["ctr"].detach())
        window_n += 1
        for k, v in out.losses.items():
            parts_sum[k] = parts_sum.get(k, 0.0) + float(v.detach())
        n_batches += 1
        bar.update(1)
        if n_batches % STEP_LOG_EVERY == 0 or n_batches == steps:
            bar.set_postfix(loss=f"{loss_sum / n_batches:.4f}")
            entry = [
                step_offset + n_batches,
                window_sum / window_n,
                _now_ms(),
                window_ctr / window_n,
            ]
            step_losses.append(entry)
            window_sum, window_ctr, window_n = 0.0, 0.0, 0
            if report is not None:
                report(
                    {
                        "kind": "step",
                        "step": entry[0],
                        "loss": entry[1],
                        "time_ms": entry[2],
                        "ctr_loss": entry[3],
                    }
                )
    if window_n:  # the stream ended before `steps`
        step_losses.append(
            [step_offset + n_batches, window_sum / window_n, _now_ms(), window_ctr / window_n]
        )
    return {
        "steps": n_batches,
        "loss": loss_sum / max(n_batches, 1),
        "loss_terms": {k: v / max(n_batches, 1) for k, v in parts_sum.items()},
        "step_losses": step_losses,
    }


def _final_metrics(
    model: torch.nn.Module,
    model_name: str,
    mcfg: ModelConfig,
    tcfg: TrainConfig,
    streams: _Streams,
    run: _Start,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The selected model's validation and test metrics (the first :class:`TrainResult`
    fields, ``valid_random`` None without a random slice) and the test day's arrays (labels,
    scores, user and item keys) for predictions.parquet."""
    if run.best_valid is not None:
        val, val_random = run.best_valid
    else:
        val = public_metrics(evaluate(model, streams.valid, mcfg.codebook_size))
        val_random = (
            public_metrics(evaluate(model, streams.random, mcfg.codebook_size))
            if streams.random is not None
            else None
        )
    test = evaluate(model, streams.test, mcfg.codebook_size)
    result = {
        "model": model_name,
        "test": public_metrics(test),
        "valid": val,
        "valid_random": val_random,
        "valid_slice": {
            "split": effective_split(tcfg),
            "valid_folds": tcfg.valid_folds,
            "time_from": (streams.cutoff.isoformat() if streams.cutoff is not None else None),
        },
        "best_epoch": run.best_epoch,
        "epochs_run": len(run.history),
    }
    return result, test["_arrays"]


def _end_epoch(
    model: torch.nn.Module,
    optim: torch.optim.Optimizer,
    model_name: str,
    mcfg: ModelConfig,
    streams: _Streams,
    run: _Start,
    record: dict[str, Any],
    epoch: int,
    ckpt_path: Path,
    inputs: dict[str, Any],
    full: bool = False,
) -> bool:
    """Score the validation slice(s), keep the best state, append ``record`` to the history
    and checkpoint the run (rank 0). Returns whether the validation AUC improved.

    Epochs need only the AUC (no diagnostics); with ``full`` (the last epoch) the slices are
    scored as the final metrics report them, kept in ``run.best_valid`` when this epoch is
    the best (the same weights give the same figures at the end).
    """
    valid = evaluate(model, streams.valid, mcfg.codebook_size, diagnostics=full)
    auc = valid["auc"]
    record["valid_auc"] = auc
    valid_random = None
    if streams.random is not None:
        valid_random = evaluate(model, streams.random, mcfg.codebook_size, diagnostics=full)
        record["valid_random_auc"] = valid_random["auc"]
    record["ended_ms"] = _now_ms()
    improved = auc > run.best_auc
    if improved:
        run.best_auc, run.best_epoch = auc, epoch
        run.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        run.best_valid = (
            (
                public_metrics(valid),
                public_metrics(valid_random) if valid_random is not None else None,
            )
            if full
            else None
        )
    run.history.append(record)
    save_atomic(
        {
            "model_name": model_name,
            "epoch": epoch,
            "model": model.state_dict(),
            "optim": optim.state_dict(),
            "best_auc": run.best_auc,
            "best_epoch": run.best_epoch,
            "best_state": run.best_state,
            "history": json.dumps(run.history),
            "rng": torch.get_rng_state(),
            "inputs": json.dumps(inputs, sort_keys=True),
        },
        ckpt_path,
    )
    return improved


def _starting_point(
    model: torch.nn.Module,
    optim: torch.optim.Optimizer,
    model_name: str,
    tcfg: TrainConfig,
    sset: SampleSet,
    cutoff: dt.datetime | None,
    ckpt_path: Path,
    resume_inputs: dict[str, Any] | None,
    parent: Parent | None,
    warm_info: dict[str, Any],
) -> _Start:
    """Load the run's checkpoint (when ``resume_inputs`` is given and one exists), else the
    warm parent's weights (and optimizer), else k-means-initialise the codebooks."""
    if parent is not None:
        model.hold_codebooks()  # a warm run (resumed or not) never re-seeds its parent's entries
    if resume_inputs is not None and ckpt_path.is_file():
        ckpt = load_weights(ckpt_path)
        if ckpt["model_name"] != model_name:
            raise CheckpointMismatch(f"{ckpt_path} belongs to model {ckpt['model_name']!r}")
        _check_resume(ckpt_path, ckpt, resume_inputs)
        model.load_state_dict(ckpt["model"])
        optim.load_state_dict(ckpt["optim"])
        torch.set_rng_state(ckpt["rng"])
        return _Start(
            int(ckpt["epoch"]) + 1,
            float(ckpt["best_auc"]),
            int(ckpt["best_epoch"]),
            ckpt["best_state"],
            json.loads(ckpt["history"]),
        )
    if parent is not None:
        # Continue the parent: its rows and codebooks as they are (no k-means re-init).
        warm_info["grown_tables"] = {k: list(v) for k, v in load_state(model, parent.state).items()}
        if parent.optimizer is not None:
            optim.load_state_dict(pad_optimizer_state(parent.optimizer, model))
            for group in optim.param_groups:
                group["lr"], group["weight_decay"] = tcfg.lr, tcfg.weight_decay
        warm_info["optimizer_carried"] = parent.optimizer is not None
        return _Start()
    # k-means initialisation of the codebooks on a sample of the training rows, before DDP
    # broadcasts rank 0's state to every rank; the score bias from the first batch.
    rows = iter(training_rows(sset, tcfg, cutoff))
    first = next(rows)
    model.init_codebooks(model_inputs(codebook_sample(first, rows, model.config.kmeans_init_rows)))
    model.init_score_bias(first["label"])
    return _Start()


def codebook_sample(first: Batch, rows: Iterator[Batch], n_rows: int) -> Batch:
    """The rows of distinct items among the first ``n_rows`` training rows (``first`` and what
    ``rows`` yields after it), in stream order; just ``first`` when ``n_rows`` ≤ its size."""
    batches, seen = [first], len(first["label"])
    for batch in rows:
        if seen >= n_rows:
            break
        batches.append(batch)
        seen += len(batch["label"])
    if len(batches) == 1:
        return first
    cat = {k: torch.cat([b[k] for b in batches])[:n_rows] for k in first}
    _, inverse = torch.unique(cat["item"], dim=0, return_inverse=True)
    keep = torch.full((int(inverse.max()) + 1,), len(inverse), dtype=torch.long)
    keep.scatter_reduce_(0, inverse, torch.arange(len(inverse)), reduce="amin")
    return {k: v[keep.sort().values] for k, v in cat.items()}


def _write_artifacts(
    out: Path,
    model: torch.nn.Module,
    model_name: str,
    mcfg: ModelConfig,
    tcfg: TrainConfig,
    sset: SampleSet,
    result: TrainResult,
    arrays: dict[str, np.ndarray],
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    save_atomic(model.state_dict(), out / "model.pt")
    (out / "config.json").write_text(
        json.dumps(
            {"model_name": model_name, "model": mcfg.to_dict(), "train": asdict(tcfg)}, indent=2
        ),
        encoding="utf-8",
    )
    sset.layout.save(out / "layout.json")
    # The vocabularies the model was trained with (a warm start's extended ones, which are
    # not the sample folder's).
    if (out / "vocab").exists():
        shutil.rmtree(out / "vocab")
    (out / "vocab").mkdir(parents=True)
    for name, vocab in sset.vocabs.items():
        vocab.save(out / "vocab" / f"{name}.parquet")
    pq.write_table(pa.table(arrays), out / "predictions.parquet")
    (out / "metrics.json").write_text(json.dumps(result.to_dict(), indent=2), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """``python -m tarq.training.train`` (what ``torchrun`` launches); same flags as ``tarq train``."""
    p = argparse.ArgumentParser(prog="tarq train")
    add_train_arguments(p)
    args = p.parse_args(argv)
    return run_from_args(args)


def run_from_args(args: argparse.Namespace) -> int:
    """Run training from parsed ``tarq train`` flags and print the test metrics."""
    mcfg, tcfg = load_config(args.config)
    if args.epochs is not None:
        tcfg.epochs = args.epochs
    if args.max_steps is not None:
        tcfg.max_steps_per_epoch = args.max_steps
    warm = None
    if args.warm_from is not None:
        warm = WarmStart(
            args.warm_from,
            dt.date.fromisoformat(args.since_day) if args.since_day else None,
            replay_folds=args.replay,
            carry_optimizer=not args.fresh_optimizer,
        )
    elif args.since_day:
        raise SystemExit("tarq train: --since-day needs --warm-from")
    result = train(
        args.samples, args.model, args.out, mcfg, tcfg, resume=not args.no_resume, warm=warm
    )
    if result is not None:  # rank 0
        print(
            json.dumps(
                {
                    "model": result.model,
                    **result.test,
                    "train_seconds": result.train_seconds,
                    "samples_per_s": result.samples_per_s,
                },
                indent=2,
            )
        )
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
