"""Benchmark: the scorer served over HTTP by ``mlflow models serve`` against ``Scorer.score``.

Usage::

    python benchmarks/http_load.py --json http.json                  # synthetic model, ~3 min
    python benchmarks/http_load.py --model-uri models:/tarq@champion  # after `make demo`
    python benchmarks/http_load.py --requests 200 --concurrency 1 4 --n 1000 10000 \\
        --workers 1 2 --threads 1

The model: ``--model-uri`` / ``--model-path`` (a served scorer: the demo's registered model
with MLFLOW_TRACKING_URI set, or a ``save_scorer_model`` folder), else a synthetic one built
here (no demo needed): the real TARQ class at the default ModelConfig (d = 64, m = 8 × K = 16)
with random weights — latency does not depend on training — the demo's user fields, L = 50,
and a ``--items`` (200k) table of random codes and vectors, saved with
``save_scorer_model(..., signature=True)``: the signature the daily job registers, so MLflow
enforces what it enforces for users.

Each request: every profile field, ``--history`` (50) behaviours with ISO times, N
candidates drawn from the table, ``request_ts``. Per N:

- in this process, on the loaded pyfunc and the same JSON body (medians of ``--reps``, CPU
  time, so that other load on the machine does not inflate them): the pieces of MLflow's
  scoring path — ``json.loads``, ``infer_and_parse_data`` (DataFrame +
  the schema's first enforcement), ``PyFuncModel.predict`` (second enforcement + our
  ``predict``), our ``predict`` alone, ``Scorer.score`` alone, ``predictions_to_json`` — and
  ``scoring_server.invocations`` end to end;
- over HTTP: ``mlflow models serve`` (``tarq.serving.processes.ModelServer``: loopback,
  ``--env-manager local``, ``--workers W``, OMP_NUM_THREADS = ``--threads``) takes
  ``--requests`` requests per concurrency level, each worker thread on its own keep-alive
  ``http.client`` connection; p50/p99 latency per request, requests/s over the level's wall
  time and the server's CPU time per request (its process group, from /proc). The first
  response is checked against ``Scorer.score`` (1e-5).

Beside the N grid, the smallest request (one candidate, only ``user_id``) shows the fixed cost
of a request. ``HTTP p50 / Scorer`` divides by ``Scorer.score``'s wall p50 on the same request
with the candidates as an int64 array (its fastest input); ``server CPU / Scorer CPU`` is the
same comparison in CPU time, which other load on the machine inflates far less.

With ``--lean`` (default) the same requests also go to ``tarq serve`` (:mod:`tarq.serving.server`:
the same Scorer behind the standard library's HTTP server, ``POST /score`` with the request
object itself), so the two servers' costs stand side by side in one run.

``Scorer.score`` runs with ``--threads`` torch threads, as the server's workers do.
``--json OUT`` writes every record and the environment.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import io
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from _harness import (
    Stopwatch,
    environment,
    markdown_table,
    percentiles_ms,
    quiet_check,
    write_json,
)

from tarq.data.features import TIME_GAP_BUCKETS, FeatureLayout, Vocab
from tarq.ids.semantic_ids import META_KEY, file_sha256
from tarq.model import ModelConfig, build_model
from tarq.model.io import save_atomic

USER_FIELDS = {"user_id": 100_000, "gender": 3, "age_bucket": 8, "segment": 12}
ITEM_FIELDS = {"category_id": 2_000, "brand_id": 20_000, "price_bucket": 64}
ACTIONS = ("pv", "cart", "fav", "buy")
REQUEST_TS = dt.datetime(2026, 10, 22, 10, 2, 0)
# A request kind: (label, N, L, the request object).
Case = tuple[str, int, int, dict[str, Any]]
# By case label: (the MLflow body, the scores Scorer.score gives, the in-process record).
Bodies = dict[str, tuple[bytes, np.ndarray, dict[str, Any]]]


def synthetic_model(root: Path, n_items: int, seq_len: int = 50, seed: int = 0) -> Path:
    """A served scorer (signature included) of a random-weight TARQ; returns its folder."""
    from tarq.serving.pyfunc import save_scorer_model

    model_dir = root / "model"
    (model_dir / "vocab").mkdir(parents=True)
    fields = {**USER_FIELDS, "item_id": n_items, **ITEM_FIELDS}
    sizes = {f: n + 2 for f, n in fields.items()}
    sizes.update(action=len(ACTIONS) + 2, time_gap=TIME_GAP_BUCKETS + 2)
    layout = FeatureLayout(
        user_fields=list(USER_FIELDS),
        item_fields=["item_id", *ITEM_FIELDS],
        vocab_sizes=sizes,
        seq_len=seq_len,
    )
    cfg = ModelConfig(dropout=0.0)
    torch.manual_seed(seed)
    model = build_model("tarq", layout, cfg).eval()
    save_atomic(model.state_dict(), model_dir / "model.pt")
    (model_dir / "config.json").write_text(
        json.dumps({"model_name": "tarq", "model": cfg.to_dict()}), encoding="utf-8"
    )
    layout.save(model_dir / "layout.json")
    for f, n in fields.items():
        Vocab(np.arange(n)).save(model_dir / "vocab" / f"{f}.parquet")
    # The ID table: random codes and item vectors (what tarq assign-ids writes, same schema).
    g = np.random.default_rng(seed)
    m, k, d = cfg.n_codebooks, cfg.codebook_size, cfg.d_model
    meta = {"m": m, "K": k, "d": d, "dz": d, "model_name": "tarq"}
    meta["model_sha256"] = file_sha256(model_dir / "model.pt")
    schema = pa.schema(
        [
            ("item_id", pa.int64()),
            *[(f"code_{j}", pa.int16()) for j in range(m)],
            ("v_item", pa.list_(pa.float32(), d)),
        ],
        metadata={META_KEY: json.dumps(meta).encode()},
    )
    codes = g.integers(0, k, (n_items, m), dtype=np.int16)
    v = g.standard_normal((n_items, d), dtype=np.float32)
    arrays = [pa.array(np.arange(n_items, dtype=np.int64))]
    arrays += [pa.array(codes[:, j]) for j in range(m)]
    arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), d))
    ids = root / "ids.parquet"
    pq.write_table(pa.Table.from_arrays(arrays, schema=schema), ids)
    return save_scorer_model(root / "served", model_dir, ids, signature=True)


def make_request(
    item_ids: np.ndarray, layout: FeatureLayout, n: int, length: int, seed: int = 1
) -> dict[str, Any]:
    """One request: every profile field, ``length`` behaviours (one each 3 minutes, the last a
    minute before the request), ``n`` distinct candidates (with repeats if the table is
    smaller)."""
    g = np.random.default_rng(seed)
    history = [
        {
            "item_id": int(g.choice(item_ids)),
            "category_id": int(g.integers(ITEM_FIELDS["category_id"])),
            "brand_id": int(g.integers(ITEM_FIELDS["brand_id"])),
            "action": ACTIONS[i % len(ACTIONS)],
            "ts": (REQUEST_TS - dt.timedelta(minutes=1 + 3 * (length - 1 - i))).isoformat(),
        }
        for i in range(length)
    ]
    return {
        "user_profile": {f: int(g.integers(USER_FIELDS.get(f, 10))) for f in layout.user_fields},
        "history": history,
        "candidate_item_ids": g.choice(item_ids, n, replace=n > item_ids.size).tolist(),
        "request_ts": REQUEST_TS.isoformat(),
    }


def _median_ms(
    fn: Callable[[], Any],
    reps: int,
    warmup: int = 2,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return float(np.median(times) * 1e3)


def group_cpu_s(pgid: int) -> float | None:
    """CPU seconds (user + system) of the live processes of process group ``pgid`` (Linux
    /proc; None elsewhere): the server's own cost, whatever else runs on the machine."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    ticks = 0
    for d in proc.iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def breakdown(pyfunc: Any, body: bytes, req: dict[str, Any], reps: int) -> dict[str, float]:
    """Medians of the scoring server's steps on one body, in this process: CPU ms, and the
    wall ms of ``Scorer.score`` (``scorer_score``)."""
    from mlflow.models.utils import _enforce_schema
    from mlflow.pyfunc import scoring_server as ss

    schema = pyfunc.metadata.get_input_schema()
    python_model = pyfunc.unwrap_python_model()
    scorer = python_model.scorer
    decoded = json.loads(body)
    parsed = ss.infer_and_parse_data(decoded, schema)
    enforced = _enforce_schema(parsed, schema)
    out = pyfunc.predict(parsed)

    def to_json() -> str:
        buf = io.StringIO()
        ss.predictions_to_json(out, buf)
        return buf.getvalue()

    cands = np.asarray(req["candidate_item_ids"], dtype=np.int64)

    def score(candidates: Any) -> Any:
        return scorer.score(
            req["user_profile"],
            req.get("history", []),
            candidates,
            request_ts=req.get("request_ts"),
        )

    def parse() -> Any:
        # infer_and_parse_data enforces the nested columns in place: parse a fresh decode.
        return ss.infer_and_parse_data(json.loads(body), schema)

    # CPU time (one thread does all the work here): robust to what else runs on the machine.
    cpu = time.process_time
    t = {
        "json_loads": _median_ms(lambda: json.loads(body), reps, clock=cpu),
        "parse_json_and_enforce_1": _median_ms(parse, reps, clock=cpu),
        "parse_enforce_1_and_2": _median_ms(
            lambda: _enforce_schema(parse(), schema), reps, clock=cpu
        ),
        "pyfunc_predict": _median_ms(lambda: pyfunc.predict(parse()), reps, clock=cpu),
        "tarq_predict": _median_ms(lambda: python_model.predict(None, enforced), reps, clock=cpu),
        # The reference: candidates as an int64 array (Scorer.score's fastest input), CPU
        # and wall (the HTTP p50's yardstick) ...
        "scorer_score_cpu": _median_ms(lambda: score(cands), reps, clock=cpu),
        "scorer_score": _median_ms(lambda: score(cands), reps),
        # ... and with the JSON body's list of ints.
        "scorer_score_list_cpu": _median_ms(
            lambda: score(req["candidate_item_ids"]), reps, clock=cpu
        ),
        "predictions_to_json": _median_ms(to_json, reps, clock=cpu),
        "invocations": _median_ms(
            lambda: ss.invocations(body, "application/json", pyfunc, schema), reps, clock=cpu
        ),
    }
    t["enforce_1"] = t["parse_json_and_enforce_1"] - t["json_loads"]
    t["enforce_2"] = t["parse_enforce_1_and_2"] - t["parse_json_and_enforce_1"]
    t["pyfunc_predict_minus_parse"] = t["pyfunc_predict"] - t["parse_json_and_enforce_1"]
    t["tarq_predict_overhead"] = t["tarq_predict"] - t["scorer_score_cpu"]
    return t


def _worker(
    conn: http.client.HTTPConnection,
    body: bytes,
    warmup: int,
    count: int,
    start: threading.Barrier,
    out: list[float],
    errors: list[str],
    path: str = "/invocations",
) -> None:
    headers = {"Content-Type": "application/json"}
    try:
        for i in range(warmup + count):
            if i == warmup:
                start.wait()
            t0 = time.perf_counter()
            conn.request("POST", path, body=body, headers=headers)
            res = conn.getresponse()
            data = res.read()
            if i >= warmup:
                out.append(time.perf_counter() - t0)
            if res.status != 200:
                errors.append(f"{res.status}: {data[:300]!r}")
    except BaseException as exc:
        errors.append(repr(exc))
        start.abort()
    finally:
        conn.close()


def load(
    host: str,
    port: int,
    body: bytes,
    requests: int,
    concurrency: int,
    warmup: int = 3,
    pgid: int | None = None,
    path: str = "/invocations",
) -> dict[str, Any]:
    """``requests`` POSTs of ``body`` over ``concurrency`` keep-alive connections, each warmed
    with ``warmup`` requests first; with ``pgid`` (the server's process group) also the
    server's CPU time per timed request."""
    per = [requests // concurrency + (i < requests % concurrency) for i in range(concurrency)]
    lat: list[list[float]] = [[] for _ in per]
    errors: list[str] = []
    mark: dict[str, float | None] = {}

    def started() -> None:  # every connection warmed: the clocks start
        mark["cpu"] = group_cpu_s(pgid) if pgid is not None else None
        mark["t0"] = time.perf_counter()

    start = threading.Barrier(concurrency, action=started)
    threads = [
        threading.Thread(
            target=_worker,
            args=(
                http.client.HTTPConnection(host, port, timeout=120),
                body,
                warmup,
                n,
                start,
                lat[i],
                errors,
                path,
            ),
        )
        for i, n in enumerate(per)
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests, first: {errors[0]}")
    wall = time.perf_counter() - mark["t0"]
    cpu1 = group_cpu_s(pgid) if pgid is not None else None
    seconds = np.concatenate([np.asarray(x) for x in lat])
    cpu0 = mark["cpu"]
    return {
        "requests": int(seconds.size),
        **percentiles_ms(seconds),
        "requests_per_s": float(seconds.size / wall),
        "server_cpu_ms_per_request": (
            None if cpu0 is None or cpu1 is None else (cpu1 - cpu0) * 1e3 / seconds.size
        ),
    }


def _ping_ms(host: str, port: int, reps: int = 50) -> float:
    conn = http.client.HTTPConnection(host, port, timeout=30)
    times = []
    try:
        for _ in range(reps + 3):
            t0 = time.perf_counter()
            conn.request("GET", "/ping")
            conn.getresponse().read()
            times.append(time.perf_counter() - t0)
    finally:
        conn.close()
    return float(np.median(times[3:]) * 1e3)


def _check(
    body: bytes, host: str, port: int, want: np.ndarray, path: str = "/invocations"
) -> float:
    """POST ``body`` once and compare the scores with ``want`` (1e-5); the largest difference.
    ``/invocations`` answers MLflow's ``{"predictions": [{"scores"}]}``, ``/score`` (tarq
    serve) ``{"scores"}``."""
    conn = http.client.HTTPConnection(host, port, timeout=120)
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    res = conn.getresponse()
    data = json.loads(res.read())
    conn.close()
    if res.status != 200:
        raise RuntimeError(f"HTTP {res.status}: {str(data)[:500]}")
    scores = data["scores"] if path == "/score" else data["predictions"][0]["scores"]
    got = np.asarray(scores, dtype=np.float64)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    return float(np.abs(got - want).max())


def _levels(
    args: argparse.Namespace,
    target: tuple[str, int, int, str],
    server: dict[str, Any],
    case: tuple[str, int, int],
    body: bytes,
    inproc: dict[str, Any],
    err: float,
) -> list[dict[str, Any]]:
    """One request kind at every ``--concurrency`` level against one server: its records.

    ``target`` = (host, port, the server's process group, path); ``server`` = the record's
    server fields; ``case`` = (label, N, L); ``inproc``: the in-process record of the case."""
    host, port, pgid, path = target
    label, n, length = case
    score_p50, score_cpu = inproc["scorer_score"], inproc["scorer_score_cpu"]
    out = []
    for c in args.concurrency:
        rec = load(host, port, body, args.requests, c, pgid=pgid, path=path)
        cpu = rec["server_cpu_ms_per_request"]
        rec.update(
            kind="http",
            **server,
            case=label,
            threads=args.threads,
            n_candidates=n,
            history_len=length,
            concurrency=c,
            scorer_p50_ms=score_p50,
            scorer_cpu_ms=score_cpu,
            http_over_scorer_p50=rec["p50_ms"] / score_p50,
            server_cpu_over_scorer_cpu=None if cpu is None else cpu / score_cpu,
            max_abs_diff=err,
        )
        out.append(rec)
        print(
            f"  {server['server']} w={server['workers']} {label:>8} c={c}: p50 "
            f"{rec['p50_ms']:7.2f} ms  p99 {rec['p99_ms']:7.2f} ms  {rec['requests_per_s']:7.1f} "
            f"req/s  server CPU {_fmt(cpu)} ms/req  (Scorer.score p50 {score_p50:.2f} ms, CPU "
            f"{score_cpu:.2f} ms; p50 ×{rec['http_over_scorer_p50']:.1f})",
            flush=True,
        )
    return out


def _label(r: dict[str, Any]) -> str:
    if r["case"] == "minimal":
        return "minimal (N = 1, L = 0)"
    return f"N = {r['n_candidates']:,}, L = {r['history_len']}"


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


HTTP_HEADER = (
    "server | workers | request | concurrency | HTTP p50 ms | p99 ms | req/s | server CPU ms/req"
    " | Scorer.score p50 ms (CPU) | HTTP p50 / Scorer p50 | server CPU / Scorer CPU"
)
IN_PROCESS_HEADER = (
    "request | json.loads | enforce #1 | enforce #2 | our predict | Scorer.score (list)"
    " | predictions_to_json | invocations"
)


def _http_row(r: dict[str, Any]) -> list[str]:
    """The HTTP table's cells of one ``kind == "http"`` record."""
    ratio = r["server_cpu_over_scorer_cpu"]
    return [
        r.get("server", "mlflow"),
        str(r["workers"]),
        _label(r),
        str(r["concurrency"]),
        f"{r['p50_ms']:.2f}",
        f"{r['p99_ms']:.2f}",
        f"{r['requests_per_s']:.0f}",
        _fmt(r["server_cpu_ms_per_request"]),
        f"{r['scorer_p50_ms']:.2f} ({r['scorer_cpu_ms']:.2f})",
        f"{r['http_over_scorer_p50']:.1f}",
        "-" if ratio is None else f"{ratio:.1f}",
    ]


def _in_process_row(r: dict[str, Any]) -> list[str]:
    """The in-process table's cells of one ``kind == "in_process"`` record."""
    return [
        _label(r),
        f"{r['json_loads']:.3f}",
        f"{r['enforce_1']:.3f}",
        f"{r['enforce_2']:.3f}",
        f"{r['tarq_predict']:.3f}",
        f"{r['scorer_score_cpu']:.3f} ({r['scorer_score_list_cpu']:.3f})",
        f"{r['predictions_to_json']:.3f}",
        f"{r['invocations']:.3f}",
    ]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model-uri", help="a served scorer, e.g. models:/tarq@champion")
    src.add_argument("--model-path", type=Path, help="a save_scorer_model folder")
    p.add_argument("--items", type=int, default=200_000, help="synthetic table size")
    p.add_argument("--n", type=int, nargs="+", default=[1000, 10000], help="candidates")
    p.add_argument("--history", type=int, default=50, help="behaviours per request (L)")
    p.add_argument("--requests", type=int, default=200, help="timed requests per level")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="uvicorn workers")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--reps", type=int, default=50, help="in-process repetitions per step")
    p.add_argument(
        "--lean",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also the lean endpoint (tarq serve) on the same requests",
    )
    p.add_argument("--json", type=Path, default=None, help="write the records here")
    return p.parse_args(argv)


def _served_model(args: argparse.Namespace, tmp: str) -> tuple[str, Path]:
    """(the URI ``mlflow models serve`` takes, the model's local folder): ``--model-uri``
    downloaded into ``tmp``, ``--model-path``, or a synthetic model saved under ``tmp``."""
    import mlflow

    if args.model_uri:
        uri = args.model_uri
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
    elif args.model_path:
        uri = str(args.model_path)
        local = args.model_path
    else:
        local = synthetic_model(Path(tmp), args.items, seq_len=args.history)
        uri = str(local)
    return uri, local


def _in_process(
    args: argparse.Namespace, pyfunc: Any, scorer: Any, cases: list[Case]
) -> tuple[list[dict[str, Any]], Bodies]:
    """Per case: the in-process record (:func:`breakdown`), and (MLflow body, the scores
    ``Scorer.score`` gives, that record) by case label."""
    records: list[dict[str, Any]] = []
    bodies: Bodies = {}
    for label, n, length, req in cases:
        body = json.dumps({"dataframe_records": [req]}).encode()
        rec = breakdown(pyfunc, body, req, args.reps)
        rec.update(kind="in_process", case=label, n_candidates=n, history_len=length)
        rec["body_kb"] = len(body) / 1e3
        records.append(rec)
        want = scorer.score(
            req["user_profile"],
            req.get("history", []),
            np.asarray(req["candidate_item_ids"], dtype=np.int64),
            request_ts=req.get("request_ts"),
        )
        bodies[label] = (body, want, rec)
        print(
            f"{label:>8} in-process CPU ms: Scorer.score {rec['scorer_score_cpu']:.3f} (list "
            f"{rec['scorer_score_list_cpu']:.3f})  our predict {rec['tarq_predict']:.3f}  "
            f"json.loads {rec['json_loads']:.3f}  enforce #1 {rec['enforce_1']:.3f}  "
            f"enforce #2 {rec['enforce_2']:.3f}  predictions_to_json "
            f"{rec['predictions_to_json']:.3f}  invocations {rec['invocations']:.3f}",
            flush=True,
        )
    return records, bodies


def _mlflow_records(
    args: argparse.Namespace,
    uri: str,
    cases: list[Case],
    bodies: Bodies,
) -> list[dict[str, Any]]:
    """Every case at every concurrency level against ``mlflow models serve``, per
    ``--workers``."""
    from tarq.serving.processes import ModelServer

    records: list[dict[str, Any]] = []
    for workers in args.workers:
        env = {"OMP_NUM_THREADS": str(args.threads)}
        clock = Stopwatch()
        with ModelServer(uri, workers=workers, env=env) as server:
            started = clock.seconds
            ping = _ping_ms(server.host, server.port)
            print(f"workers={workers}: started in {started:.1f} s, /ping p50 {ping:.3f} ms")
            for label, n, length, _ in cases:
                body, want, inproc = bodies[label]
                err = _check(body, server.host, server.port, want)
                records += _levels(
                    args,
                    (server.host, server.port, server.proc.pid, "/invocations"),
                    {"server": "mlflow models serve", "workers": workers, "ping_p50_ms": ping},
                    (label, n, length),
                    body,
                    inproc,
                    err,
                )
    return records


def _lean_records(
    args: argparse.Namespace,
    local: Path,
    cases: list[Case],
    bodies: Bodies,
) -> list[dict[str, Any]]:
    """Every case at every concurrency level against ``tarq serve`` (the request object
    itself as the body)."""
    from tarq.serving.processes import LeanServer

    records: list[dict[str, Any]] = []
    env = {"OMP_NUM_THREADS": str(args.threads)}
    with LeanServer(local, env=env) as server:
        host, port = server.host, server.port
        ping = _ping_ms(host, port)
        print(f"tarq serve: /ping p50 {ping:.3f} ms")
        for label, n, length, req in cases:
            _, want, inproc = bodies[label]
            body = json.dumps(req).encode()
            err = _check(body, host, port, want, path="/score")
            records += _levels(
                args,
                (host, port, server.proc.pid, "/score"),
                {"server": "tarq serve", "workers": 1, "ping_p50_ms": ping},
                (label, n, length),
                body,
                inproc,
                err,
            )
    return records


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    import mlflow

    from tarq.serving.pyfunc import load_scorer_model

    torch.set_num_threads(args.threads)
    quiet_check()
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tarq-http-") as tmp:
        uri, local = _served_model(args, tmp)
        pyfunc = load_scorer_model(str(local))
        scorer = pyfunc.unwrap_python_model().scorer
        item_ids = pq.read_table(local / "artifacts" / "ids.parquet", columns=["item_id"])
        item_ids = item_ids.column("item_id").to_numpy()
        if pyfunc.metadata.get_input_schema() is None:
            print("note: this model has no signature (MLflow enforces none)", flush=True)
        # (label, N, L, request): the grid, and the smallest request (one candidate, only
        # user_id) for the fixed cost per request.
        first = int(item_ids[0])
        cases = [("minimal", 1, 0, {"user_profile": {"user_id": 1}, "candidate_item_ids": [first]})]
        cases += [
            (f"N={n}", n, args.history, make_request(item_ids, scorer.layout, n, args.history))
            for n in args.n
        ]
        records, bodies = _in_process(args, pyfunc, scorer, cases)
        records += _mlflow_records(args, uri, cases, bodies)
        if args.lean:
            records += _lean_records(args, local, cases, bodies)
    print(
        "\n" + markdown_table(HTTP_HEADER, [_http_row(r) for r in records if r["kind"] == "http"])
    )
    print("\nIn-process CPU ms:\n")
    print(
        markdown_table(
            IN_PROCESS_HEADER, [_in_process_row(r) for r in records if r["kind"] == "in_process"]
        )
    )
    env = environment("http_load.py", argv, t_start)
    summary = {
        "kind": "summary",
        "model": args.model_uri or (str(args.model_path) if args.model_path else "synthetic"),
        "items": int(item_ids.size),
        "threads": args.threads,
        "python": env["python"],
        "torch": env["torch"],
        "mlflow": mlflow.__version__,
        **{k: env[k] for k in ("cpu", "cpu_count", "load_average", "seconds", "command")},
    }
    print(f"\nload average {summary['load_average']}; total {summary['seconds']} s")
    if args.json:
        write_json(args.json, [*records, summary])
    return 0


if __name__ == "__main__":
    sys.exit(main())
