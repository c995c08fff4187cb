"""Profile: where a training step's time goes, TARQ against the two-tower, side by side.

Usage::

    tarq demo-data --preset small --seed 7 --db /tmp/f3/small.duckdb
    tarq build-samples --db /tmp/f3/small.duckdb --run-date latest --out /tmp/f3/samples
    python benchmarks/profile_train.py --samples /tmp/f3/samples --models tt tarq \\
        --steps 60 --threads 2 --profile tarq --json /tmp/f3/after.json

It runs exactly the step of :func:`tarq.training.train.train` (forward, weighted loss, backward,
gradient clipping, Adam; deterministic algorithms on, the default configs) on the SAME
training batches for every model, pre-read into memory so that the loader's cost is measured
apart (``loader_ms_per_batch``). The models take turns in ``--rounds`` chunks of steps, so a
change of machine load during the run hits them alike; the ratio to the first model is the
figure to compare across commits and machines.

``--nan-fill both`` runs each model twice, with and without deterministic mode's NaN-fill of
new tensors (training runs without it since it changes no weight), taking turns likewise.

``--profile MODEL`` then runs ``--profile-steps`` more steps of that model under
``torch.profiler`` and prints the top operators by self CPU time (forward and backward) and
the forward time of each part of the model (labelled regions).

To measure an older commit with this script, put its checkout first on the path::

    git worktree add --detach /tmp/base <commit>
    PYTHONPATH=/tmp/base python benchmarks/profile_train.py --samples ... --json before.json

(the output names the ``tarq`` package it imported). The per-step ``losses`` in the JSON let
two commits be checked for the same loss curve.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _harness import Stopwatch, load_average, quiet_check, write_json
from train_models import parse_variant  # benchmarks/ is the script's directory

import tarq
from tarq.data.loader import SampleSet
from tarq.model import ModelConfig, build_model
from tarq.training.train import TrainConfig, training_rows

Batch = dict[str, torch.Tensor]


def _inputs(batch: Batch) -> Batch:
    return {k: v for k, v in batch.items() if k not in ("user_key", "item_key")}


def load_batches(sset: SampleSet, tcfg: TrainConfig, n: int) -> tuple[list[Batch], float]:
    """The first ``n`` training batches of epoch 0 as :func:`tarq.training.train.train` streams them,
    and the loader's seconds per batch."""
    stream = training_rows(sset, tcfg, None, drop_last=True)
    stream.set_epoch(0)
    out: list[Batch] = []
    clock = Stopwatch()
    for batch in stream:
        out.append(_inputs(batch))
        if len(out) == n:
            break
    seconds = clock.seconds
    if len(out) < n:
        raise SystemExit(f"only {len(out)} training batches, asked for {n}")
    return out, seconds / n


class Runner:
    """One model, its optimizer and the timings of its steps (the training loop's step)."""

    def __init__(
        self,
        name: str,
        sset: SampleSet,
        mcfg: ModelConfig,
        tcfg: TrainConfig,
        first: Batch,
        nan_fill: bool = False,
        label: str | None = None,
    ) -> None:
        torch.manual_seed(tcfg.seed)
        label = label or name
        self.name = label + ("+nan-fill" if nan_fill else "")
        # Deterministic mode's NaN-fill of new tensors, for this runner's steps only (training
        # turns it off: tarq.training.train.FILL_UNINITIALIZED_MEMORY).
        self.nan_fill = nan_fill
        self.model = build_model(name, sset.layout, mcfg)
        self.model.init_codebooks(first)
        self.model.train()
        self.optim = torch.optim.Adam(
            self.model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay
        )
        self.grad_clip = tcfg.grad_clip
        self.seconds = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0}
        self.steps = 0
        self.losses: list[float] = []

    def step(self, batch: Batch) -> None:
        torch.utils.deterministic.fill_uninitialized_memory = self.nan_fill
        t0 = time.perf_counter()
        out = self.model(batch)
        loss = self.model.total_loss(out)
        t1 = time.perf_counter()
        self.optim.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optim.step()
        t3 = time.perf_counter()
        self.seconds["forward"] += t1 - t0
        self.seconds["backward"] += t2 - t1
        self.seconds["optimizer"] += t3 - t2
        self.steps += 1
        self.losses.append(float(loss.detach()))

    def summary(self, batch_size: int) -> dict[str, Any]:
        total = sum(self.seconds.values())
        return {
            "steps": self.steps,
            "samples_per_s": round(self.steps * batch_size / total, 1),
            "ms_per_step": {k: round(1000 * v / self.steps, 2) for k, v in self.seconds.items()},
            "loss_first": round(self.losses[0], 5),
            "loss_last10": round(sum(self.losses[-10:]) / min(10, len(self.losses)), 5),
        }


# Forward regions labelled in the profile: (dotted attribute path from the model, method).
REGIONS = (
    ("emb", "sequence"),
    ("emb", "x_user"),
    ("emb", "x_item"),
    ("user_tower", "forward"),
    ("item_tower", "forward"),
    ("autoencoder", "encode"),
    ("autoencoder", "recon_loss"),
    ("quantizer", "quantize"),
    ("quantizer", "loss"),
    ("rq_attention", "personal_codebooks"),
    ("rq_attention.seq", "forward"),
    ("rq_attention.attn", "forward"),
    ("rq_attention", "lookup"),
    ("teacher", "forward"),
    ("teacher.seq", "forward"),
)


def _label(model: torch.nn.Module) -> None:
    """Wrap the methods of REGIONS (where the model has them) in ``record_function``."""

    def wrap(obj: Any, meth: str, label: str) -> None:
        fn: Callable[..., Any] = getattr(obj, meth)

        def labelled(*args: Any, **kwargs: Any) -> Any:
            with torch.profiler.record_function(label):
                return fn(*args, **kwargs)

        setattr(obj, meth, labelled)

    for path, meth in REGIONS:
        obj: Any = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if obj is not None and hasattr(obj, meth):
            wrap(obj, meth, f"fwd:{path}.{meth}")
    import tarq.model.tarq as tarq_module

    for fname in ("alignment_loss", "level_distributions"):
        fn = getattr(tarq_module, fname, None)
        if fn is None or getattr(fn, "_labelled", False):
            continue

        def labelled_fn(
            *args: Any, _fn: Callable[..., Any] = fn, _name: str = fname, **kwargs: Any
        ) -> Any:
            with torch.profiler.record_function(f"fwd:{_name}"):
                return _fn(*args, **kwargs)

        labelled_fn._labelled = True  # type: ignore[attr-defined]
        setattr(tarq_module, fname, labelled_fn)


def profile(runner: Runner, batches: list[Batch], steps: int, top: int) -> dict[str, Any]:
    """Profile ``steps`` steps; the top operators and the labelled forward regions (ms/step)."""
    _label(runner.model)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for i in range(steps):
            runner.step(batches[i % len(batches)])
    events = prof.key_averages()
    ops = sorted(
        (e for e in events if not e.key.startswith("fwd:")),
        key=lambda e: e.self_cpu_time_total,
        reverse=True,
    )
    total_self = sum(e.self_cpu_time_total for e in events)
    regions = sorted(
        (e for e in events if e.key.startswith("fwd:")),
        key=lambda e: e.cpu_time_total,
        reverse=True,
    )
    return {
        "steps": steps,
        "self_cpu_ms_per_step": round(total_self / 1000 / steps, 2),
        "top_ops": [
            {
                "op": e.key,
                "self_ms_per_step": round(e.self_cpu_time_total / 1000 / steps, 2),
                "share": round(e.self_cpu_time_total / total_self, 3),
                "calls_per_step": round(e.count / steps, 1),
            }
            for e in ops[:top]
        ],
        "forward_regions": [
            {"region": e.key[4:], "ms_per_step": round(e.cpu_time_total / 1000 / steps, 2)}
            for e in regions
        ],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", required=True, type=Path)
    p.add_argument("--models", nargs="+", default=["tt", "tarq"])
    p.add_argument(
        "--variant",
        type=parse_variant,
        action="append",
        default=[],
        metavar="LABEL=MODEL:key=value,...",
        help="also time MODEL with these ModelConfig overrides, as LABEL (as train_models.py)",
    )
    p.add_argument("--steps", type=int, default=60, help="timed steps per model")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps per model first")
    p.add_argument("--rounds", type=int, default=4, help="turns the models take")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", default=None, help="model to profile after the timing")
    p.add_argument("--profile-steps", type=int, default=10)
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument(
        "--nan-fill",
        choices=["off", "on", "both"],
        default="off",
        help="deterministic mode's NaN-fill of new tensors: off (as training runs), on, or "
        "both (each model twice, taking turns: the fill's cost as a ratio)",
    )
    return p.parse_args(argv)


def _runners(
    args: argparse.Namespace, sset: SampleSet, mcfg: ModelConfig, tcfg: TrainConfig, first: Batch
) -> list[Runner]:
    """One Runner per model of ``--models`` and per ``--variant``, each once per NaN-fill
    setting of ``--nan-fill``."""
    fills = {"off": [False], "on": [True], "both": [False, True]}[args.nan_fill]
    runners = [Runner(m, sset, mcfg, tcfg, first, f) for m in args.models for f in fills]
    runners += [
        Runner(base, sset, ModelConfig.from_dict({**mcfg.to_dict(), **ov}), tcfg, first, f, label)
        for label, base, ov in args.variant
        for f in fills
    ]
    return runners


def _time_in_turns(
    runners: list[Runner], batches: list[Batch], warmup: int, rounds: int
) -> list[Batch]:
    """``warmup`` untimed steps per runner, then the rest of the batches in ``rounds`` turns
    (each runner a chunk of steps per turn); returns the timed batches."""
    for r in runners:
        for b in batches[:warmup]:
            r.step(b)
        r.seconds = dict.fromkeys(r.seconds, 0.0)
        r.steps = 0
        r.losses.clear()
    timed = batches[warmup:]
    chunk = -(-len(timed) // rounds)
    for start in range(0, len(timed), chunk):
        for r in runners:
            for b in timed[start : start + chunk]:
                r.step(b)
    return timed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    load_before = quiet_check()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    sset = SampleSet.open(args.samples)
    tcfg = TrainConfig(batch_size=args.batch_size, seed=args.seed)
    mcfg = ModelConfig()
    batches, loader_s = load_batches(sset, tcfg, args.warmup + args.steps)
    runners = _runners(args, sset, mcfg, tcfg, batches[0])
    timed = _time_in_turns(runners, batches, args.warmup, args.rounds)
    result: dict[str, Any] = {
        "tarq_package": str(Path(tarq.__file__).resolve().parent),
        "threads": torch.get_num_threads(),
        "load_avg_before": load_before,
        "batch_size": args.batch_size,
        "loader_ms_per_batch": round(1000 * loader_s, 2),
        "models": {r.name: r.summary(args.batch_size) for r in runners},
    }
    base = result["models"][runners[0].name]["samples_per_s"]
    for r in runners:
        result["models"][r.name][f"ratio_to_{runners[0].name}"] = round(
            result["models"][r.name]["samples_per_s"] / base, 3
        )
    result["load_avg_after"] = load_average()
    if args.profile:
        runner = next(r for r in runners if r.name.split("+")[0] == args.profile)
        result["profile"] = {args.profile: profile(runner, timed, args.profile_steps, args.top)}
    for r in runners:
        result["models"][r.name]["losses"] = [round(x, 6) for x in r.losses]
    short = {k: v for k, v in result.items() if k != "models"}
    short["models"] = {
        k: {kk: vv for kk, vv in v.items() if kk != "losses"} for k, v in result["models"].items()
    }
    print(json.dumps(short, indent=2))
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
