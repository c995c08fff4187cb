"""A lean HTTP endpoint for :class:`tarq.serving.Scorer` (``tarq serve``), beside ``mlflow models
serve``.

MLflow's scoring server is the compatible, generic way to serve the registered model, but each
request pays for its generality: a pandas DataFrame built from the JSON, the signature enforced
twice value by value, the response built through pandas — ~2 ms of CPU on a request that the
Scorer answers in ~0.5 ms (N = 1,000, L = 50; benchmarks/README.md "HTTP serving"). This
endpoint is the same Scorer, the same checks and the same refusals, with nothing in between:
the standard library's threaded HTTP/1.1 server (keep-alive), ``json``, one call.

``POST /score`` with one request object (the fields of ``Scorer.score``)::

    {"user_profile": {"user_id": 7}, "history": [{"item_id": 3, "category_id": 1,
     "brand_id": 2, "action": "pv", "ts": "2026-10-22T09:41:07"}],
     "candidate_item_ids": [11, 12, 13], "request_ts": "2026-10-22T10:02:00"}

answers ``{"scores": [...]}`` (logits in candidate order, ``null`` for unknown ids with
``"unknown": "nan"``); a bad request is a 400 ``{"error": "..."}`` naming the field, as the
Scorer words it. ``GET /ping`` answers 200 once the model is loaded. Each connection is served
by its own thread; the kernels release the GIL, the request encoding does not, so one process
uses about one core — run one per core behind a balancer for more.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from tarq.serving import Scorer

log = logging.getLogger(__name__)
MAX_BODY = 64 * 1024 * 1024  # a 10k-candidate request with a long history is ~1 MB
FIELDS = {"user_profile", "history", "candidate_item_ids", "request_ts", "unknown"}


def scores_json(scores: np.ndarray) -> bytes:
    """``{"scores": [...]}`` of (N,) float32 logits, NaN (an unknown id) → null. Nine
    significant digits give back the float32 exactly and print ~3× faster than ``json.dumps``
    of the floats."""
    values = ["%.9g" % x for x in scores.tolist()]  # noqa: UP031 (the fast path)
    if not np.isfinite(scores).all():  # JSON has no NaN or infinity
        values = ["null" if v in ("nan", "inf", "-inf") else v for v in values]
    return b'{"scores":[' + ",".join(values).encode() + b"]}"


def score_body(scorer: Scorer, body: bytes) -> np.ndarray:
    """One request's JSON body → its logits (N,) float32.

    Raises:
        ValueError: not JSON, not an object, a missing or unknown field, or whatever the
            Scorer refuses (its message names the field).
    """
    try:
        req = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"the body is not JSON: {exc}") from None
    if not isinstance(req, dict):
        raise ValueError(f"the body must be one request object, got {type(req).__name__}")
    missing = {"user_profile", "candidate_item_ids"} - set(req)
    if missing:
        raise ValueError(f"the request lacks {sorted(missing)}")
    unknown_keys = set(req) - FIELDS
    if unknown_keys:
        raise ValueError(f"unknown request fields {sorted(unknown_keys)}; known: {sorted(FIELDS)}")
    return scorer.score(
        req["user_profile"],
        req.get("history") or [],
        req["candidate_item_ids"],
        unknown=req.get("unknown") or "raise",
        request_ts=req.get("request_ts"),
    )


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    # Headers and body are two writes: with Nagle's algorithm the body of a small response
    # waits for the client's delayed ACK (~40 ms per request on keep-alive connections).
    disable_nagle_algorithm = True
    scorer: Scorer

    def _send(self, status: int, payload: dict[str, Any] | bytes) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/ping":
            self._send(200, {"status": "ok", "version": self.scorer.version})
        else:
            self._send(404, {"error": f"no such path {self.path!r}; POST /score, GET /ping"})

    def do_POST(self) -> None:
        if self.path != "/score":
            self._send(404, {"error": f"no such path {self.path!r}; POST /score"})
            return
        try:
            size = int(self.headers.get("Content-Length") or -1)
        except ValueError:
            size = -1
        if not 0 <= size <= MAX_BODY:
            self.close_connection = True
            self._send(411 if size < 0 else 413, {"error": "a Content-Length up to 64 MiB"})
            return
        body = self.rfile.read(size)
        try:
            payload = scores_json(score_body(self.scorer, body))
        except ValueError as exc:  # UnknownItemError and ModelMismatchError included
            self._send(400, {"error": str(exc)})
            return
        except Exception:
            log.exception("scoring failed")
            self._send(500, {"error": "internal error (see the server's log)"})
            return
        self._send(200, payload)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


def make_server(scorer: Scorer, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """A bound (not yet serving) server; ``port`` 0 takes a free one (``server.server_port``)."""
    handler = type("ScoreHandler", (_Handler,), {"scorer": scorer})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def serve_in_thread(scorer: Scorer, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """Start :func:`make_server` in a daemon thread (tests, notebooks); ``shutdown()`` stops it."""
    server = make_server(scorer, host, port)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def load_scorer(model: str, max_candidates: int | None = None) -> Scorer:
    """The Scorer inside a registered or saved pyfunc (``models:/tarq@champion``, a run URI or
    a folder), loaded with :func:`tarq.serving_pyfunc.load_scorer_model`'s checks."""
    from tarq.serving_pyfunc import load_scorer_model

    pyfunc = load_scorer_model(model, max_candidates=max_candidates)
    return pyfunc.unwrap_python_model().scorer
