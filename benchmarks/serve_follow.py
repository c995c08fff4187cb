"""Benchmark: ``tarq serve`` under concurrent clients, and while the champion moves.

Usage::

    python benchmarks/serve_follow.py --json /tmp/serve-follow.json      # ~4 min on 2 cores

Two synthetic scorers (``http_load.synthetic_model``: the real TARQ class at the default
ModelConfig with random weights, a ``--items`` table, seeds 0 and 1) are registered as
versions 1 and 2 of ``tarq`` in a SQLite MLflow registry made here; ``champion`` points at 1.

1. **Concurrency**: ``tarq serve --model models:/tarq@champion --workers W`` for each ``--workers``;
   for each N of ``--n`` (L = ``--history``) and each ``--concurrency`` level, ``--requests``
   POSTs over that many keep-alive connections (``http_load.load``): p50/p99 latency and
   requests/s.
2. **Swap run**: ``--follow --poll-s 0.5`` with ``--swap-workers`` workers and
   ``--swap-clients`` clients sending the N = ``--swap-n`` request back to back for
   ``--swap-seconds``; the alias moves to version 2 after a third of it and back to 1 after two
   thirds. Every response is checked: failed (not 200, or a broken connection), mixed (its
   scores are not exactly the scores of the version it names, computed here with that
   version's ``Scorer.score``), and its latency counted *during* a swap (sent between an alias
   move and 0.5 s after the last response of the old version) or *outside*. One swap run per
   ``--load-in`` mode, back to back: the new version loaded in a child process (``tarq serve``'s
   default) or in the follower thread of each worker.

Nothing else should run on the machine (2 cores: the clients share them with the workers).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _harness import environment, markdown_table, percentiles_ms, quiet_check, write_json
from http_load import load, make_request, synthetic_model

from tarq.runtime.telemetry import TELEMETRY_OFF

os.environ.update(TELEMETRY_OFF)


def registry(root: Path, items: int, history: int) -> tuple[str, dict[str, Any]]:
    """A SQLite registry with versions 1 and 2 of ``tarq`` (champion → 1); the URI and, per
    version, the scorer loaded here."""
    from mlflow import MlflowClient

    from tarq.serving.pyfunc import load_scorer_model

    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    client.create_registered_model("tarq")
    scorers = {}
    for seed, version in ((0, "1"), (1, "2")):
        path = synthetic_model(root / f"v{version}", items, seq_len=history, seed=seed)
        client.create_model_version("tarq", str(path))
        scorers[version] = load_scorer_model(str(path)).unwrap_python_model().scorer
    client.set_registered_model_alias("tarq", "champion", "1")
    return uri, scorers


def concurrency(args: argparse.Namespace, env: dict[str, str], scorer: Any) -> list[dict]:
    from tarq.serving.processes import LeanServer

    ids = np.arange(args.items)  # the synthetic table's item ids
    rows = []
    for workers in args.workers:
        with LeanServer("models:/tarq@champion", workers=workers, env=env) as srv:
            _wait_workers(srv, workers)
            for n in args.n:
                body = json.dumps(make_request(ids, scorer.layout, n, args.history)).encode()
                for c in args.concurrency:
                    rec = load(srv.host, srv.port, body, args.requests, c, path="/score")
                    rec.update(workers=workers, n_candidates=n, concurrency=c)
                    rows.append(rec)
                    print(
                        f"workers={workers} N={n:>6} clients={c}: p50 {rec['p50_ms']:7.2f} ms  "
                        f"p99 {rec['p99_ms']:7.2f} ms  {rec['requests_per_s']:7.1f} req/s",
                        flush=True,
                    )
    return rows


def _wait_workers(srv: Any, workers: int, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while srv.log_tail(1_000_000).count("tarq serve [") < workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{workers} workers not up:\n{srv.log_tail()}")
        time.sleep(0.2)


def _client(
    host: str,
    port: int,
    body: bytes,
    stop: threading.Event,
    out: list[tuple],
    want: dict[str, np.ndarray],
) -> None:
    """Sends ``body`` back to back until ``stop``; one row per request: (sent at, latency s,
    status or -1, version, scores equal to that version's, the error or None). The latency
    ends when the response is read; the check runs after it, and no response body is kept,
    so that the client's own work (json, and the garbage collector over hundreds of
    thousands of kept scores) does not show up as server latency."""
    conn = http.client.HTTPConnection(host, port, timeout=60)
    while not stop.is_set():
        t0 = time.perf_counter()
        try:
            conn.request("POST", "/score", body=body)
            res = conn.getresponse()
            raw = res.read()
            took = time.perf_counter() - t0
        except Exception as exc:  # a refused or broken connection is a failed request
            out.append((t0, time.perf_counter() - t0, -1, None, False, repr(exc)))
            conn.close()
            conn = http.client.HTTPConnection(host, port, timeout=60)
            continue
        data = json.loads(raw)
        version = data.get("version")
        same = version in want and np.array_equal(np.float32(data.get("scores")), want[version])
        error = None if res.status == 200 else str(data)[:500]
        out.append((t0, took, res.status, version, bool(same), error))
    conn.close()


def swap_run(
    args: argparse.Namespace,
    uri: str,
    env: dict[str, str],
    scorers: dict[str, Any],
    load_in: str = "process",
) -> dict[str, Any]:
    from mlflow import MlflowClient

    from tarq.serving.processes import LeanServer

    client = MlflowClient(uri)
    s1 = scorers["1"]
    req = make_request(np.arange(args.items), s1.layout, args.swap_n, args.history)
    want = {
        v: s.score(
            req["user_profile"],
            req["history"],
            req["candidate_item_ids"],
            request_ts=req["request_ts"],
        )
        for v, s in scorers.items()
    }
    body = json.dumps(req).encode()
    with LeanServer(
        "models:/tarq@champion",
        workers=args.swap_workers,
        env=env,
        follow=True,
        poll_s=0.5,
        load_in=load_in,
    ) as srv:
        _wait_workers(srv, args.swap_workers)
        stop = threading.Event()
        outs: list[list[tuple]] = [[] for _ in range(args.swap_clients)]
        threads = [
            threading.Thread(target=_client, args=(srv.host, srv.port, body, stop, o, want))
            for o in outs
        ]
        t_start = time.perf_counter()
        for t in threads:
            t.start()
        moves = []
        for frac, version in ((1 / 3, "2"), (2 / 3, "1")):
            time.sleep(max(0.0, t_start + frac * args.swap_seconds - time.perf_counter()))
            client.set_registered_model_alias("tarq", "champion", version)
            moves.append((time.perf_counter(), version))
        time.sleep(max(0.0, t_start + args.swap_seconds - time.perf_counter()))
        stop.set()
        for t in threads:
            t.join()
    res = _swap_summary(outs, moves, t_start)
    res.update(
        workers=args.swap_workers,
        clients=args.swap_clients,
        n_candidates=args.swap_n,
        seconds=args.swap_seconds,
        load_in=load_in,
    )
    print(json.dumps(res, indent=2), flush=True)
    return res


def _swap_summary(
    outs: list[list[tuple]], moves: list[tuple[float, str]], t_start: float
) -> dict[str, Any]:
    """Failed, mixed, the swap windows and the latency during and outside them, from the
    clients' rows (:func:`_client`) and the alias moves (time, new version)."""
    rows = sorted((r for o in outs for r in o), key=lambda r: r[0])
    failed = [r for r in rows if r[2] != 200]
    ok = [r for r in rows if r[2] == 200]
    mixed = [r for r in ok if not r[4]]
    slowest = sorted(ok, key=lambda r: -r[1])[:5]
    windows = []
    for i, (t_move, new) in enumerate(moves):
        t_next = moves[i + 1][0] if i + 1 < len(moves) else float("inf")
        old_after = [r[0] + r[1] for r in ok if t_move <= r[0] < t_next and r[3] != new]
        windows.append((t_move, (max(old_after) if old_after else t_move) + 0.5))
    during = np.array([r[1] for r in ok if any(a <= r[0] <= b for a, b in windows)])
    outside = np.array([r[1] for r in ok if not any(a <= r[0] <= b for a, b in windows)])
    # Where in each swap the responses slower than the outside p99 were sent, in seconds from
    # the last answer of the old version: the load (before it) or the handover (just before 0).
    p99_out = np.percentile(outside, 99) if outside.size else np.inf
    slow_vs_swap = [
        [round(r[0] - (b - 0.5), 2) for r in ok if a <= r[0] <= b and r[1] > p99_out][:40]
        for a, b in windows
    ]
    return {
        "requests": len(rows),
        "failed": len(failed),
        "mixed": len(mixed),
        "versions_seen": sorted({r[3] for r in ok}),
        "swap_windows_s": [round(b - a, 2) for a, b in windows],
        "moves_at_s": [round(t - t_start, 2) for t, _ in moves],
        # (sent at s, ms) of the slowest responses: are they in a swap window or not?
        "slowest": [[round(r[0] - t_start, 2), round(r[1] * 1e3, 1)] for r in slowest],
        "slow_vs_swap_s": slow_vs_swap,
        "during": _pct(during),
        "outside": _pct(outside),
        "first_failure": failed[0][5] if failed else None,
    }


def _pct(seconds: np.ndarray) -> dict[str, float | int | None]:
    """Count, p50/p99 and max latency (ms) of response times in seconds."""
    if seconds.size == 0:
        return {"requests": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "requests": int(seconds.size),
        **percentiles_ms(seconds, (50, 99)),
        "max_ms": float((seconds * 1e3).max()),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--items", type=int, default=200_000)
    p.add_argument("--history", type=int, default=50)
    p.add_argument("--n", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--swap-workers", type=int, default=2)
    p.add_argument("--swap-clients", type=int, default=4)
    p.add_argument("--swap-n", type=int, default=1000)
    p.add_argument("--swap-seconds", type=float, default=45.0)
    p.add_argument(
        "--load-in",
        nargs="+",
        choices=("process", "thread"),
        default=["process", "thread"],
        help="swap runs, one per way the follower loads a new version (tarq serve --load-in)",
    )
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    quiet_check()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tarq-follow-") as tmp:
        uri, scorers = registry(Path(tmp), args.items, args.history)
        env = {"MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": "1"}
        rows = concurrency(args, env, scorers["1"]) if args.requests else []
        swap = None
        if args.swap_seconds > 0:
            swap = [swap_run(args, uri, env, scorers, mode) for mode in args.load_in]
    header = "workers | N | clients | p50 ms | p99 ms | req/s"
    cells = [
        [
            r["workers"],
            f"{r['n_candidates']:,}",
            r["concurrency"],
            f"{r['p50_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            f"{r['requests_per_s']:.0f}",
        ]
        for r in rows
    ]
    print("\n" + markdown_table(header, cells, "rrrrrr"))
    summary = environment("serve_follow.py", argv, t0)
    print(f"\nload average {summary['load_average']}; total {summary['seconds']} s")
    if args.json:
        write_json(args.json, {"concurrency": rows, "swap": swap, **summary})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
