"""The ``tarq`` command line. Heavy libraries are imported inside each command."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tarq import defaults
from tarq.defaults import MAX_COLLISION_RATE, MIN_COUNT
from tarq.runtime.telemetry import disable_telemetry
from tarq.training.train_args import add_train_arguments

EXIT_BUSY = 4


def _add_db(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", type=Path, default=Path(defaults.DEFAULT_DB), help="DuckDB warehouse")


def _add_lake(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--lake",
        default=None,
        metavar="URL",
        help="keep impressions/behaviors as day-partitioned Parquet in this lake (a local "
        "folder or an fsspec URL); a warehouse without logs is set up with it, one in lake "
        "layout must name its own lake (docs/design.md, Lake layout)",
    )


class WarehouseInUse(RuntimeError):
    """The warehouse's run lock is held by another process (the daily run or a command)."""


@contextmanager
def _run_lock(args: argparse.Namespace) -> Iterator[None]:
    """Hold the warehouse's run lock (:mod:`tarq.store.locking`, the one the daily run takes)
    while a command writes, so no import or publication lands in the middle of a run."""
    from tarq.store.locking import LockBusyError, exclusive_lock, warehouse_lock_path

    try:
        with exclusive_lock(warehouse_lock_path(args.db), info={"command": args.command}):
            yield
    except LockBusyError as exc:
        who = ", ".join(f"{k} {v}" for k, v in exc.holder.items()) or "holder unknown"
        raise WarehouseInUse(
            f"warehouse {args.db} is in use by another run ({who}; lock "
            f"{exc.path}); nothing was changed"
        ) from None


def _writes(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A command that writes the warehouse: runs under its run lock."""

    def locked(args: argparse.Namespace) -> int:
        with _run_lock(args):
            return func(args)

    locked.__doc__ = func.__doc__
    return locked


@_writes
def _cmd_demo_data(args: argparse.Namespace) -> int:
    from tarq.data.demo import generate, parse_day

    if args.next_day:
        if args.lake is not None:
            from tarq.data.lake import init_lake

            init_lake(args.db, args.lake)  # the same lake, or a clear refusal
        return _demo_next_days(args)
    if args.through is not None:
        raise ValueError("--through goes with --next-day")
    start = None if args.start_date is None else parse_day(args.start_date)
    end = None if args.end_date is None else parse_day(args.end_date)
    if args.if_missing and args.db.exists():
        from tarq.store.warehouse import open_db

        with open_db(args.db, read_only=True) as con:
            n = con.execute("SELECT count(*) FROM impressions").fetchone()[0]
        if n > 0:
            print(f"{args.db} already holds {n:,} impressions; not regenerating (--if-missing)")
            return 0
    report = generate(
        args.db,
        preset=args.preset or "small",
        seed=defaults.DEMO_SEED if args.seed is None else args.seed,
        start_date=start,
        end_date=end,
        lake=args.lake,
    )
    print(json.dumps(report, indent=2, default=str))
    return 0


def _demo_next_days(args: argparse.Namespace) -> int:
    """``demo-data --next-day [--through DAY]``: append the demo logs' next day(s)."""
    from tarq.data.demo import append_day, append_days, parse_day

    given = [
        flag
        for flag, value in (
            ("--preset", args.preset),
            ("--seed", args.seed),
            ("--start-date", args.start_date),
            ("--end-date", args.end_date),
            ("--if-missing", args.if_missing or None),
        )
        if value is not None
    ]
    if given:
        raise ValueError(
            f"--next-day continues the warehouse's demo logs with their own preset, seed and "
            f"days: no {', '.join(given)}"
        )
    through = None if args.through is None else parse_day(args.through)
    reports = [append_day(args.db)] if through is None else append_days(args.db, through)
    for r in reports:
        print(
            f"appended {r['first_day']} to {args.db}: {r['rows']['impressions']:,} impressions, "
            f"{r['rows']['behaviors']:,} behaviours, CTR {r['ctr']:.1%}, "
            f"{r['items_launched']} items launched (load {r['load_id']})"
        )
    if not reports:
        print(f"the demo logs of {args.db} already reach {through}; nothing appended")
    return 0


def _cmd_demo_oracle(args: argparse.Namespace) -> int:
    from tarq.data.demo_oracle import demo_oracle, model_predictions
    from tarq.store.warehouse import open_db

    preds = model_predictions(args.predictions)
    with open_db(args.db, read_only=True) as con:
        report = demo_oracle(con, args.run_date, preds)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.to_text())
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    from tarq.online.replay import replay, text

    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    ks = [int(k) for k in args.k.split(",")]
    result = replay(args.db, args.work_dir, args.run_date, models, args.pool, args.seed, ks)
    print(text(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


@_writes
def _cmd_import(args: argparse.Namespace) -> int:
    from tarq.data.importers import run_import

    report = run_import(args.kind, args.src, args.db, lake=args.lake)
    print(report.to_text())
    return 0 if report.ok else 1


@_writes
def _cmd_lake_init(args: argparse.Namespace) -> int:
    from tarq.data.lake import init_lake

    url = init_lake(args.db, args.url)
    print(f"{args.db}: impressions and behaviors are kept in the lake {url}")
    return 0


def _cmd_lake_status(args: argparse.Namespace) -> int:
    from tarq.data.lake import status, status_text

    st = status(args.db)
    print(json.dumps(st, indent=2) if args.json else status_text(st))
    return 0


@_writes
def _cmd_build_samples(args: argparse.Namespace) -> int:
    from tarq.data.samples import build_samples

    report = build_samples(
        args.db,
        args.run_date,
        args.out,
        train_days=args.train_days,
        seq_len=args.seq_len,
        min_count=args.min_count,
        test_days=args.test_days,
    )
    print(json.dumps(report.to_dict(), indent=2, default=str))
    return 0


@_writes
def _cmd_validate(args: argparse.Namespace) -> int:
    from tarq.validation import accept_day, validate

    if args.accept_day is not None:
        if args.reason is None:
            raise ValueError("--accept-day needs --reason TEXT (why the failure is acceptable)")
        if args.run_date is not None:
            raise ValueError("--accept-day records a verdict and validates nothing: no --run-date")
        acc = accept_day(args.db, args.accept_day, args.reason, accepted_by=args.accepted_by)
        print(
            f"accepted {acc['day']} (failed in run {acc['failed_run_id']}) by "
            f"{acc['accepted_by']} at {acc['accepted_at']}: {acc['reason']}; its table-level "
            "checks are not judged again until its rows change"
        )
        return 0
    if args.run_date is None:
        raise ValueError("--run-date is required (or --accept-day DAY --reason TEXT)")
    report = validate(args.db, args.run_date, docs_dir=args.docs_dir, window_days=args.train_days)
    print(report.to_text())
    return 0 if report.success else 1


def _cmd_train(args: argparse.Namespace) -> int:
    from tarq.training.train import run_from_args

    return run_from_args(args)


def _cmd_assign_ids(args: argparse.Namespace) -> int:
    from tarq.ids.semantic_ids import SemanticIdError, assign_ids, health_text

    try:
        report = assign_ids(
            args.db,
            args.model,
            args.out,
            chunk_size=args.chunk_size,
            max_collision_rate=args.max_collision_rate,
            max_churn=args.max_churn,
            resolve=not args.no_resolve,
        )
    except SemanticIdError as exc:
        print(f"tarq assign-ids: {exc}", file=sys.stderr)
        return 1
    print(health_text(report), end="")
    return 0


@_writes
def _cmd_publish(args: argparse.Namespace) -> int:
    from tarq.release.publish import publish, rollback

    if args.rollback:
        result = rollback(args.db, to_version=args.to_version)
    else:
        if args.ids is None:
            raise ValueError("--ids DIR is required (or --rollback)")
        result = publish(
            args.db,
            args.ids,
            model_name=args.model_name,
            model_version=args.model_version,
            run_date=args.run_date,
            model_uri=args.model_uri,
            keep=args.keep,
            export_dir=args.export_dir,
        ).to_dict()
    print(json.dumps(result, indent=2, default=str))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import logging

    from tarq.serving.server import ScoreServer, serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.model_dir is not None and args.ids is None:
        raise ValueError("--model-dir needs --ids (the ids.parquet or export it assigned)")
    if args.follow and args.model_dir is not None:
        raise ValueError("--follow follows a registry alias (--model models:/NAME@ALIAS)")
    source = f"{args.model_dir} + {args.ids}" if args.model_dir is not None else args.model

    def ready(server: ScoreServer) -> None:
        st = server.live.status()
        print(
            f"tarq serve [{os.getpid()}]: {source} version {st['version']} ({st['items']:,} "
            f"items){' following' if args.follow else ''} on "
            f"http://{args.host}:{server.server_port} — POST /score, GET /ping, GET /ready",
            flush=True,
        )

    return serve(
        lambda: _serve_live(args, source), args.host, args.port, args.workers, args.drain_s, ready
    )


def _serve_live(args: argparse.Namespace, source: str) -> tuple[Any, Any]:
    """A serving process's live version (and follower): runs in each worker, after the fork."""
    import torch

    from tarq.serving import Scorer
    from tarq.serving.follow import Follower, Live
    from tarq.serving.server import load_scorer, static_live

    # One intra-op thread: a request is sub-millisecond work, and a thread pool per request
    # beside other processes costs far more than it saves (benchmarks/README.md).
    torch.set_num_threads(args.threads)
    if args.model_dir is not None:
        scorer = Scorer.from_parquet(args.ids, args.model_dir, max_candidates=args.max_candidates)
        return static_live(scorer, source=source), None
    from tarq.serving.follow import LOAD_NICENESS
    from tarq.serving.loading import registry_source  # MLflow: not for --model-dir
    from tarq.serving.pyfunc import alias_parts

    if alias_parts(args.model) is None:
        if args.follow:
            raise ValueError(f"--follow needs a registry alias (models:/NAME@ALIAS), not {source}")
        return static_live(load_scorer(args.model, args.max_candidates), source=source), None
    resolve, load = registry_source(args.model, args.max_candidates)
    live = Live(load(resolve()), source)  # the first version: nothing is served yet
    if not args.follow:
        return live, None
    in_child = args.load_in == "process"
    _, load_next = registry_source(args.model, args.max_candidates, in_child=in_child)
    niceness = 0 if in_child else LOAD_NICENESS  # a child is niced itself
    return live, Follower(live, resolve, load_next, args.poll_s, niceness=niceness)


#: The commands the console script runs from ``flows/`` (:data:`flows.cli.COMMANDS`), with
#: their help in ``tarq --help``.
FLOW_COMMANDS = {
    "daily": "run the daily flow (the flags of python -m flows.tarq_daily; tarq daily --help)",
    "gc": "retention: delete old run dates' work folders and model artifacts, never the "
    "champion, challenger, served or a parent (tarq gc --keep-days N [--dry-run])",
    "rollback": "serve an older kept publication again and move the champion alias to its "
    "model (tarq rollback --db PATH [--to-version N])",
}


def _cmd_flows(args: argparse.Namespace) -> int:
    # Reached only through tarq.cli.main itself: the console script (flows.cli) runs these.
    print(
        f"tarq: '{args.command}' is run by the tarq command (flows.cli.main); from Python call "
        f"flows.cli.main(['{args.command}', ...])",
        file=sys.stderr,
    )
    return 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``tarq`` command."""
    parser = argparse.ArgumentParser(
        prog="tarq", description="TARQ pre-ranking: warehouse, training and serving tools."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_data_commands(sub)
    _add_model_commands(sub)
    # Listed here, run by the console script (flows.cli): the flow needs Prefect, tarq does not.
    for name, text in FLOW_COMMANDS.items():
        p = sub.add_parser(name, add_help=False, help=text)
        p.add_argument("flow_args", nargs=argparse.REMAINDER)
        p.set_defaults(func=_cmd_flows)
    return parser


def _add_data_commands(sub: Any) -> None:
    """demo-data, replay, demo-oracle, import, lake, build-samples, validate."""
    _add_demo_data_command(sub)
    _add_replay_command(sub)
    _add_demo_oracle_command(sub)
    _add_import_command(sub)
    _add_lake_command(sub)
    _add_build_samples_command(sub)
    _add_validate_command(sub)


def _add_demo_data_command(sub: Any) -> None:
    p = sub.add_parser(
        "demo-data",
        help="generate realistic multi-day demo click logs (or append their next day)",
        description="Generate the demo logs of a preset into a warehouse without impressions "
        "(by default the preset's days ending yesterday, UTC), or with --next-day append the "
        "next simulated day of the demo logs it holds (docs/demo-data.md).",
    )
    _add_db(p)
    p.add_argument("--preset", choices=defaults.PRESETS, default=None, help="default small")
    p.add_argument("--seed", type=int, default=None, help=f"default {defaults.DEMO_SEED}")
    window = p.add_mutually_exclusive_group()
    window.add_argument(
        "--end-date",
        default=None,
        metavar="YYYY-MM-DD",
        help="the last logged day (default: yesterday, UTC); a fixed day gives a "
        "reproducible window",
    )
    window.add_argument(
        "--start-date", default=None, metavar="YYYY-MM-DD", help="the first logged day instead"
    )
    p.add_argument("--if-missing", action="store_true", help="skip when the warehouse has logs")
    p.add_argument(
        "--next-day",
        action="store_true",
        help="append the day after the demo logs' last day, continuing the same world (a day "
        "the warehouse already holds is refused)",
    )
    p.add_argument(
        "--through",
        default=None,
        metavar="DAY",
        help="with --next-day: append every day after the last one through DAY "
        "(YYYY-MM-DD, 'yesterday' or 'today', UTC); nothing when the logs reach it",
    )
    _add_lake(p)
    p.set_defaults(func=_cmd_demo_data)


def _add_replay_command(sub: Any) -> None:
    p = sub.add_parser(
        "replay",
        help="open-loop replay of a demo test day: each model's top k against the true clicks",
        description="Every request of the run date's test day gets a pool of --pool candidates "
        "from the demo world's own candidate generation with their true click probabilities; "
        "each of the date's trained models (TARQ with the codes it published) scores the pools; "
        "reported per model and k: expected clicks of its top k / the oracle's, recall of the "
        "oracle's top k, agreement with TA's top k, with bootstrap intervals over users and "
        "paired differences to TT (tarq.online.replay).",
    )
    _add_db(p)
    p.add_argument("--run-date", required=True, metavar="YYYY-MM-DD")
    p.add_argument("--work-dir", type=Path, default=Path("outputs/daily"))
    p.add_argument("--models", default=None, help="comma-separated (default: every trained)")
    p.add_argument("--pool", type=int, default=1000, help="candidates per request")
    p.add_argument("--k", default="10,50", help="comma-separated top-k sizes")
    p.add_argument("--seed", type=int, default=0, help="the pools' random stream")
    p.add_argument("--json", type=Path, default=None, help="also write the result here")
    p.set_defaults(func=_cmd_replay)


def _add_demo_oracle_command(sub: Any) -> None:
    p = sub.add_parser(
        "demo-oracle",
        help="the demo world's ground truth on a test day, and trained models against it",
        description="AUC of the true click logit (the ceiling), of its user-level part alone "
        "(the best a model blind to the target-history interaction can reach) and their "
        "difference (the target-specific headroom) over the exposed impressions of the run "
        "date's test day (the day before it); with --predictions, each model's AUC on the "
        "same rows (docs/demo-data.md, Ground truth).",
    )
    _add_db(p)
    p.add_argument(
        "--run-date",
        required=True,
        metavar="YYYY-MM-DD",
        help="or 'latest'; tests on the day before",
    )
    p.add_argument(
        "--predictions",
        nargs="*",
        default=[],
        type=Path,
        metavar="DIR",
        help="trained model directories (or their predictions.parquet) of that run date",
    )
    p.add_argument("--json", action="store_true", help="the report as JSON")
    p.set_defaults(func=_cmd_demo_oracle)


def _add_import_command(sub: Any) -> None:
    p = sub.add_parser("import", help="append logs from public datasets or contract-shaped files")
    p.add_argument("kind", choices=["taobao", "movielens", "parquet"])
    p.add_argument("src", type=Path, help="source directory (or file)")
    _add_db(p)
    _add_lake(p)
    p.set_defaults(func=_cmd_import)


def _add_lake_command(sub: Any) -> None:
    p = sub.add_parser("lake", help="the lake layout of the logs: set it up, or its status")
    lake = p.add_subparsers(dest="lake_command", required=True)
    q = lake.add_parser("init", help="keep this warehouse's logs in a lake (no logs yet)")
    q.add_argument("url", help="a local folder or an fsspec URL (s3://bucket/prefix, ...)")
    _add_db(q)
    q.set_defaults(func=_cmd_lake_init)
    q = lake.add_parser("status", help="files, rows and days per table; orphan files")
    _add_db(q)
    q.add_argument("--json", action="store_true", help="as JSON")
    q.set_defaults(func=_cmd_lake_status)


def _add_build_samples_command(sub: Any) -> None:
    p = sub.add_parser("build-samples", help="point-in-time training/test samples as Parquet")
    _add_db(p)
    p.add_argument("--run-date", required=True, help="YYYY-MM-DD, 'today' or 'latest'")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--train-days", type=int, default=defaults.TRAIN_DAYS)
    p.add_argument("--seq-len", type=int, default=defaults.SEQ_LEN)
    p.add_argument(
        "--min-count",
        type=int,
        default=MIN_COUNT,
        help="user/item ids seen fewer times in the window map to OOV",
    )
    p.add_argument(
        "--test-days",
        type=int,
        default=1,
        help="test window: the N days ending the run date - 1 (default 1, the daily job's); "
        "training ends the day before it",
    )
    p.set_defaults(func=_cmd_build_samples)


def _add_validate_command(sub: Any) -> None:
    p = sub.add_parser("validate", help="validate the logs of a run date (Great Expectations)")
    _add_db(p)
    p.add_argument("--run-date", default=None, help="YYYY-MM-DD, 'today' or 'latest'")
    p.add_argument(
        "--train-days",
        type=int,
        default=defaults.TRAIN_DAYS,
        help="also validate each of the N days before D - 1 whose rows changed since "
        "their last validation (the training window; 0: D - 1 only)",
    )
    p.add_argument("--docs-dir", type=Path, default=None, help="where GX Data Docs are built")
    p.add_argument(
        "--accept-day",
        default=None,
        metavar="YYYY-MM-DD",
        help="instead of validating: accept this day's failed table-level checks for "
        "its current rows (judged again once its rows change)",
    )
    p.add_argument("--reason", default=None, help="with --accept-day: why (kept and reported)")
    p.add_argument(
        "--accepted-by",
        default=None,
        help="with --accept-day: who accepts (default: the login name)",
    )
    p.set_defaults(func=_cmd_validate)


def _add_model_commands(sub: Any) -> None:
    """train, assign-ids, publish."""
    p = sub.add_parser("train", help="train TARQ or a baseline on built samples")
    add_train_arguments(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("assign-ids", help="FAISS-checked semantic IDs for the whole catalog")
    _add_db(p)
    p.add_argument("--model", type=Path, required=True, help="trained TARQ model directory")
    p.add_argument("--out", type=Path, required=True, help="for ids.parquet and health.json/txt")
    p.add_argument("--chunk-size", type=int, default=65536)
    p.add_argument(
        "--max-collision-rate",
        type=float,
        default=MAX_COLLISION_RATE,
        help="fail above this share of items sharing their tuple (1 = no ceiling)",
    )
    p.add_argument(
        "--max-churn",
        type=float,
        default=None,
        help="fail when more items than this changed their tuple vs the served table",
    )
    p.add_argument(
        "--no-resolve",
        action="store_true",
        help="plain nearest-entry codes: items with distinct inputs may share a tuple "
        "(default: each is moved to the nearest free tuple differing in its last 1-3 levels)",
    )
    p.set_defaults(func=_cmd_assign_ids)

    p = sub.add_parser("publish", help="publish semantic IDs as the served table (or roll back)")
    _add_db(p)
    p.add_argument("--ids", type=Path, help="output folder of assign-ids")
    p.add_argument("--model-name", default="tarq")
    p.add_argument("--model-version", default="", help="default: sha of the model weights")
    p.add_argument("--run-date", default=None, help="YYYY-MM-DD (default: today)")
    p.add_argument("--model-uri", default="")
    p.add_argument("--keep", type=int, default=5, help="published versions kept for rollback")
    p.add_argument("--export-dir", type=Path, default=None)
    p.add_argument("--rollback", action="store_true", help="serve the previous kept version")
    p.add_argument("--to-version", type=int, default=None, help="with --rollback")
    p.set_defaults(func=_cmd_publish)

    p = sub.add_parser(
        "serve", help="a lean HTTP endpoint for the scorer (POST /score; tarq.serving.server)"
    )
    p.add_argument(
        "--model",
        default="models:/tarq@champion",
        help="a registered or saved scorer pyfunc (uses MLFLOW_TRACKING_URI)",
    )
    p.add_argument("--model-dir", type=Path, default=None, help="or a trained model folder …")
    p.add_argument("--ids", type=Path, default=None, help="… with the ID table it assigned")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5002)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--max-candidates", type=int, default=None, help="default: the model's cap")
    p.add_argument(
        "--follow",
        action="store_true",
        help="follow the alias of --model: load each new version beside the old, swap it in",
    )
    p.add_argument("--poll-s", type=float, default=10.0, help="with --follow: seconds per check")
    p.add_argument(
        "--load-in",
        choices=("process", "thread"),
        default="process",
        help="with --follow: load each new version in a child process at lower priority "
        "(default; the serving threads never wait for the load) or in the follower thread",
    )
    p.add_argument(
        "--workers", type=int, default=1, help="processes accepting on one socket (one per core)"
    )
    p.add_argument(
        "--drain-s", type=float, default=30.0, help="SIGTERM: longest wait for requests in flight"
    )
    p.set_defaults(func=_cmd_serve)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tarq`` console script."""
    disable_telemetry()
    args = build_parser().parse_args(argv)
    from tarq.store.warehouse import WarehouseBusyError

    try:
        return int(args.func(args) or 0)
    except (WarehouseInUse, WarehouseBusyError) as exc:
        print(f"tarq: error: {exc}", file=sys.stderr)
        return EXIT_BUSY
    except (ValueError, FileNotFoundError) as exc:
        print(f"tarq {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
