"""Batch scoring: evaluation rows/s, the reference path against the batch scorer, beside the
training step's samples/s on the same data, side by side in one process.

Usage::

    tarq demo-data --preset medium --seed 7 --db /tmp/bs/medium.duckdb
    tarq build-samples --db /tmp/bs/medium.duckdb --run-date latest --out /tmp/bs/samples
    python benchmarks/batch_scoring.py --samples /tmp/bs/samples \\
        --models tt tarq mvke ta inttower --json /tmp/bs/batch_scoring.json

For each model (random weights, codebooks k-means-initialised on the first batch, or the
trained weights of ``--model-dir NAME=DIR``) it times, on the SAME rows pre-read into memory
(``--rows`` of ``--split`` in evaluation batches of ``--batch-size``, as evaluation streams
them), each batch scored by:

- ``reference``: ``model(batch)`` under ``torch.no_grad`` in eval mode, what evaluation ran
  for every row before the batch scorer (``evaluate(..., reference=True)``);
- ``batch``: :func:`tarq.training.batch_scoring.score_batch` under ``torch.inference_mode`` with TARQ's
  diagnostics (the final validation, the test day, the champion re-scoring);
- ``batch_auc_only``: the same without the diagnostics (each epoch's validation);
- ``train``: the training loop's step (forward, weighted loss, backward, clipping, Adam) on
  ``--train-batch-size`` training rows, on a copy of the model.

Every part runs on every batch in turn, ``--reps`` times, and each (part, batch) keeps its
fastest time, so that the load of a shared machine hits the parts alike and a burst of it
does not count; the rows/s are rows / Σ fastest seconds, and the ratios (batch / reference,
batch / train) are the figures to compare across machines. ``mean_rows_per_s`` has the same
from the mean instead of the fastest time. Deterministic algorithms are on, as training runs
(:func:`tarq.training.train.train`).

Then :func:`tarq.training.evaluation.evaluate` runs once on all the rows by each path
(``evaluate_rows_per_s``, wall clock, metrics included), and its figures are compared
(``agree``: the largest probability difference; AUC and GAUC of both). The loader (Parquet →
tensors, :class:`tarq.data.loader.BatchStream`) is timed apart on the same rows
(``loader_rows_per_s``); ``end_to_end_rows_per_s`` = 1 / (1 / loader + 1 / batch) is what an
evaluation that reads its rows as it scores them runs at.

``--no-groups`` scores every row as a request of its own (what data whose rows never share a
user and history gets: the batch scorer's other savings alone).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _harness import Stopwatch, load_average, quiet_check, write_json

import tarq
from tarq.data.loader import BatchStream, SampleSet, model_inputs
from tarq.model import ModelConfig, build_model
from tarq.model.io import load_trained
from tarq.training import batch_scoring
from tarq.training.batch_scoring import score_batch
from tarq.training.evaluation import evaluate
from tarq.training.train import TrainConfig, training_rows

Batch = dict[str, torch.Tensor]


def read_rows(
    sset: SampleSet, split: str, batch_size: int, rows: int, reps: int = 3
) -> tuple[list[Batch], float]:
    """The first ``rows`` rows of ``split`` in evaluation batches (as evaluation streams them)
    and the loader's rows/s (the fastest of ``reps`` reads)."""
    best = float("inf")
    out: list[Batch] = []
    for _ in range(reps):
        out, n = [], 0
        clock = Stopwatch()
        for batch in BatchStream(sset, split, batch_size):
            out.append(batch)
            n += len(batch["label"])
            if n >= rows:
                break
        best = min(best, clock.seconds)
    return out, sum(len(b["label"]) for b in out) / best


def train_batches(sset: SampleSet, tcfg: TrainConfig, n: int) -> list[Batch]:
    """The first ``n`` shuffled training batches of epoch 0 (as :func:`tarq.training.train.train`)."""
    stream = training_rows(sset, tcfg, None, drop_last=True)
    out: list[Batch] = []
    for batch in stream:
        out.append(model_inputs(batch))
        if len(out) == n:
            break
    return out


class Bench:
    """One model: the parts' fastest seconds per batch, and a training copy of the model."""

    PARTS = ("reference", "batch", "batch_auc_only", "train")

    def __init__(self, name: str, model: torch.nn.Module, tcfg: TrainConfig, k: int) -> None:
        self.name, self.model, self.k = name, model.eval(), k
        self.trainee = copy.deepcopy(model).train()
        self.optim = torch.optim.Adam(
            self.trainee.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay
        )
        self.grad_clip = tcfg.grad_clip
        self.times: dict[tuple[str, int], list[float]] = {}
        self.rows: dict[tuple[str, int], int] = {}
        self.evaluated: dict[str, tuple[dict[str, Any], float]] = {}

    def run(self, part: str, i: int, batch: Batch) -> None:
        """Time ``part`` on ``batch`` (the i-th of its kind)."""
        t0 = time.perf_counter()
        if part == "reference":
            with torch.no_grad():
                self.model(batch)
        elif part in ("batch", "batch_auc_only"):
            with torch.inference_mode():
                score_batch(self.model, batch, diagnostics=part == "batch")
        else:
            loss = self.trainee.total_loss(self.trainee(batch))
            self.optim.zero_grad(set_to_none=True)
            loss.backward()
            if self.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.trainee.parameters(), self.grad_clip)
            self.optim.step()
        self.times.setdefault((part, i), []).append(time.perf_counter() - t0)
        self.rows[part, i] = len(batch["label"])

    def evaluate(self, rows: list[Batch]) -> None:
        """:func:`evaluate` once by each path on all rows: (figures, wall seconds)."""
        for path in ("reference", "batch"):
            clock = Stopwatch()
            res = evaluate(self.model, rows, self.k, reference=path == "reference")
            self.evaluated[path] = (res, clock.seconds)

    def rate(self, part: str, stat: Any) -> float:
        keys = [key for key in self.times if key[0] == part]
        return sum(self.rows[k] for k in keys) / sum(stat(self.times[k]) for k in keys)

    def summary(self, loader_rows_per_s: float) -> dict[str, Any]:
        rate = {p: self.rate(p, min) for p in self.PARTS}
        out: dict[str, Any] = {f"{p}_rows_per_s": round(r, 1) for p, r in rate.items()}
        out["mean_rows_per_s"] = {
            p: round(self.rate(p, lambda ts: sum(ts) / len(ts)), 1) for p in self.PARTS
        }
        out["batch_over_reference"] = round(rate["batch"] / rate["reference"], 2)
        out["batch_over_train"] = round(rate["batch"] / rate["train"], 2)
        out["reference_over_train"] = round(rate["reference"] / rate["train"], 2)
        out["batch_auc_only_over_train"] = round(rate["batch_auc_only"] / rate["train"], 2)
        e2e = 1.0 / (1.0 / loader_rows_per_s + 1.0 / rate["batch"])
        out["end_to_end_rows_per_s"] = round(e2e, 1)
        out["end_to_end_over_train"] = round(e2e / rate["train"], 2)
        (ref, ref_s), (new, new_s) = self.evaluated["reference"], self.evaluated["batch"]
        out["evaluate_rows_per_s"] = {
            "reference": round(ref["rows"] / ref_s, 1),
            "batch": round(new["rows"] / new_s, 1),
        }
        dp = np.abs(ref["_arrays"]["score"] - new["_arrays"]["score"]).max()
        out["agree"] = {
            "max_abs_prob_diff": float(dp),
            "auc": [ref["auc"], new["auc"]],
            "gauc": [ref["gauc"], new["gauc"]],
            "auc_gauc_equal_to_6_decimals": round(ref["auc"], 6) == round(new["auc"], 6)
            and round(ref["gauc"], 6) == round(new["gauc"], 6),
            "same_keys": sorted(k for k in ref if not k.startswith("_"))
            == sorted(k for k in new if not k.startswith("_")),
        }
        return out


def _model(name: str, sset: SampleSet, dirs: dict[str, Path], first: Batch) -> torch.nn.Module:
    if name in dirs:
        model, _ = load_trained(dirs[name])
        return model
    torch.manual_seed(0)
    model = build_model(name, sset.layout, ModelConfig())
    model.init_codebooks(model_inputs(first))
    return model


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", required=True, type=Path)
    p.add_argument("--split", default="test")
    p.add_argument("--models", nargs="+", default=["tt", "tarq"])
    p.add_argument(
        "--model-dir",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="trained weights of a model (`tarq train` output, the samples' vocabularies)",
    )
    p.add_argument("--rows", type=int, default=40960, help="evaluation rows (pre-read)")
    p.add_argument("--batch-size", type=int, default=TrainConfig.eval_batch_size)
    p.add_argument("--train-batch-size", type=int, default=TrainConfig.batch_size)
    p.add_argument("--train-steps", type=int, default=8, help="training batches per rep")
    p.add_argument("--reps", type=int, default=3, help="times each part runs on each batch")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--no-groups",
        action="store_true",
        help="score every row as its own request (data whose rows never share a user side)",
    )
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.no_groups:
        batch_scoring.request_groups = lambda *_: None

    load_before = quiet_check()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    sset = SampleSet.open(args.samples)
    dirs = {}
    for spec in args.model_dir:
        name, _, path = spec.partition("=")
        dirs[name] = Path(path)
    rows, loader_rate = read_rows(sset, args.split, args.batch_size, args.rows, args.reps)
    inputs = [model_inputs(b) for b in rows]
    tcfg = TrainConfig(batch_size=args.train_batch_size)
    tbatches = train_batches(sset, tcfg, args.train_steps + 1)
    benches = [
        Bench(m, _model(m, sset, dirs, rows[0]), tcfg, ModelConfig().codebook_size)
        for m in args.models
    ]
    for b in benches:  # warm-up, untimed
        for part in Bench.PARTS:
            b.run(part, 0, tbatches[0] if part == "train" else inputs[0])
        b.times.clear()
    for _ in range(args.reps):
        for i in range(max(len(inputs), args.train_steps)):
            for b in benches:
                for part in Bench.PARTS:
                    if part == "train" and i < args.train_steps:
                        b.run(part, i, tbatches[1 + i])
                    elif part != "train" and i < len(inputs):
                        b.run(part, i, inputs[i])
    for b in benches:
        b.evaluate(rows)
    n_rows = sum(len(b["label"]) for b in rows)
    result: dict[str, Any] = {
        "tarq_package": str(Path(tarq.__file__).resolve().parent),
        "samples": str(args.samples.resolve()),
        "split": args.split,
        "threads": torch.get_num_threads(),
        "load_avg_before": load_before,
        "eval_rows": n_rows,
        "eval_batch_size": args.batch_size,
        "train_batch_size": args.train_batch_size,
        "train_steps": args.train_steps,
        "reps": args.reps,
        "groups": not args.no_groups,
        "loader_rows_per_s": round(loader_rate, 1),
        "models": {b.name: b.summary(loader_rate) for b in benches},
        "load_avg_after": load_average(),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
