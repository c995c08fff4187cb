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
Scorer words it. Every response names the version that answered it, in the body
(``"version"``) and the ``X-Tarq-Version`` header; a request is answered wholly by one version.

``GET /ping``: liveness (200 while the process serves). ``GET /ready``: 200 with the version,
the ID table's version, the follower's last check and last error once a model is loaded, else
503. With ``--follow`` (:mod:`tarq.serving.follow`) each process polls the registry alias and
swaps in each new champion after loading and checking it beside the old one; a failed load keeps
the old version and shows on ``/ready``.

Each connection is served by its own thread; the kernels release the GIL, the request encoding
does not, so one process uses about one core. ``--workers N`` (:func:`serve`) forks N processes
that accept on one listening socket, each loading (and following) the model itself. SIGTERM
drains: the listener closes, requests in flight finish (up to ``drain_s``), then the process
exits.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import torch

from tarq.serving import Scorer
from tarq.serving.follow import Follower, Live, Loaded

log = logging.getLogger(__name__)
MAX_BODY = 64 * 1024 * 1024  # a 10k-candidate request with a long history is ~1 MB
FIELDS = {"user_profile", "history", "candidate_item_ids", "request_ts", "unknown"}


def scores_json(scores: np.ndarray, version: str | None = None) -> bytes:
    """``{"scores": [...], "version": ...}`` of (N,) float32 logits, NaN (an unknown id) →
    null. Nine significant digits give back the float32 exactly and print ~3× faster than
    ``json.dumps`` of the floats."""
    values = ["%.9g" % x for x in scores.tolist()]  # noqa: UP031 (the fast path)
    if not np.isfinite(scores).all():  # JSON has no NaN or infinity
        values = ["null" if v in ("nan", "inf", "-inf") else v for v in values]
    tail = b"]}" if version is None else b'],"version":' + json.dumps(version).encode() + b"}"
    return b'{"scores":[' + ",".join(values).encode() + tail


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
    server: ScoreServer

    def _send(
        self, status: int, payload: dict[str, Any] | bytes, version: str | None = None
    ) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        if self.server.draining.is_set():
            self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if version is not None:
            self.send_header("X-Tarq-Version", version)
        self.send_header("X-Tarq-Worker", str(os.getpid()))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        live = self.server.live
        cur = live.current
        version = None if cur is None else cur.version
        if self.path == "/ping":
            self._send(200, {"status": "ok", "version": version}, version)
        elif self.path == "/ready":
            status = live.status()
            ready = status["ready"] and not self.server.draining.is_set()
            self._send(200 if ready else 503, {**status, "ready": ready}, version)
        else:
            self._send(404, {"error": f"no such path {self.path!r}; POST /score, GET /ping|/ready"})

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
        with self.server.in_flight():
            loaded = self.server.live.current  # read once: the whole request is this version
            if loaded is None:
                self._send(503, {"error": "no model loaded yet (GET /ready)"})
                return
            try:
                payload = scores_json(score_body(loaded.scorer, body), loaded.version)
            except ValueError as exc:  # UnknownItemError and ModelMismatchError included
                self._send(400, {"error": str(exc), "version": loaded.version}, loaded.version)
                return
            except Exception:
                log.exception("scoring failed")
                self._send(500, {"error": "internal error (see the server's log)"}, loaded.version)
                return
            self._send(200, payload, loaded.version)

    def setup(self) -> None:
        # OpenMP's thread count is per thread: torch.set_num_threads in the main thread leaves
        # each connection's thread at the default (every core), measured to change results in
        # the last bits and to oversubscribe the cores under concurrent requests.
        torch.set_num_threads(self.server.threads)
        self.request.setblocking(True)  # not the listening socket's non-blocking mode
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


class ScoreServer(ThreadingHTTPServer):
    """The threaded HTTP server of one process: its :class:`Live` version, a count of the
    requests in flight, and :meth:`drain` for a graceful stop."""

    daemon_threads = True

    def __init__(
        self,
        live: Live,
        host: str = "127.0.0.1",
        port: int = 0,
        sock: socket.socket | None = None,
        threads: int | None = None,
    ) -> None:
        self.live = live
        # torch threads of each connection's thread (default: the creating thread's count)
        self.threads = threads or torch.get_num_threads()
        self.draining = threading.Event()
        self._busy = 0
        self._idle = threading.Condition()
        super().__init__((host, port), _Handler, bind_and_activate=sock is None)
        if sock is not None:  # a worker: accept on the parent's listening socket
            self.socket.close()
            self.socket = sock
            self.server_address = sock.getsockname()[:2]
            self.server_name, self.server_port = str(self.server_address[0]), sock.getsockname()[1]

    def in_flight(self) -> _InFlight:
        return _InFlight(self)

    def drain(self, timeout_s: float = 30.0) -> bool:
        """Stop accepting, then wait until no request is in flight (at most ``timeout_s``).
        Call from another thread than ``serve_forever``'s. True when none was left running."""
        self.stop_accepting()
        return self.wait_idle(timeout_s)

    def stop_accepting(self) -> None:
        """Refuse new connections (``serve_forever`` returns) and close kept-alive ones after
        their next response. Call from another thread than ``serve_forever``'s."""
        self.draining.set()
        self.shutdown()

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no request is in flight, at most ``timeout_s``; True when none is."""
        deadline = time.monotonic() + timeout_s
        with self._idle:
            while self._busy and time.monotonic() < deadline:
                self._idle.wait(deadline - time.monotonic())
            return self._busy == 0


class _InFlight:
    def __init__(self, server: ScoreServer) -> None:
        self.server = server

    def __enter__(self) -> None:
        with self.server._idle:
            self.server._busy += 1

    def __exit__(self, *exc: object) -> None:
        with self.server._idle:
            self.server._busy -= 1
            self.server._idle.notify_all()


def static_live(scorer: Scorer, version: str | None = None, source: str = "") -> Live:
    """A :class:`Live` that keeps one scorer (no follower): version = the ID table's."""
    v = version if version is not None else str(scorer.version)
    return Live(Loaded(scorer, v, scorer.version), source)


def make_server(
    scorer: Scorer | Live, host: str = "127.0.0.1", port: int = 0, sock: socket.socket | None = None
) -> ScoreServer:
    """A bound (not yet serving) server; ``port`` 0 takes a free one (``server.server_port``)."""
    live = scorer if isinstance(scorer, Live) else static_live(scorer)
    return ScoreServer(live, host, port, sock)


def serve_in_thread(scorer: Scorer | Live, host: str = "127.0.0.1", port: int = 0) -> ScoreServer:
    """Start :func:`make_server` in a daemon thread (tests, notebooks); ``shutdown()`` stops it."""
    server = make_server(scorer, host, port)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


#: Builds a process's live version and its follower (None: a fixed model); runs in each worker.
LiveFactory = Callable[[], tuple[Live, Follower | None]]


def _serve_process(
    make_live: LiveFactory,
    host: str,
    port: int,
    sock: socket.socket | None,
    drain_s: float,
    ready: Callable[[ScoreServer], None] | None = None,
) -> int:
    """Load, serve until SIGTERM/SIGINT, drain; one process (a worker or the only one)."""
    live, follower = make_live()
    server = make_server(live, host, port, sock)
    done = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if not done.is_set():
            done.set()
            log.info("signal %s: draining (in flight finish, at most %.0f s)", signum, drain_s)
            threading.Thread(target=server.stop_accepting, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if follower is not None:
        follower.start()
    if ready is not None:
        ready(server)
    try:
        server.serve_forever()
    finally:
        if follower is not None:
            follower.stop()
        server.wait_idle(drain_s)  # the requests in flight finish
        server.server_close()
    return 0


def serve(
    make_live: LiveFactory,
    host: str = "127.0.0.1",
    port: int = 5002,
    workers: int = 1,
    drain_s: float = 30.0,
    ready: Callable[[ScoreServer], None] | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT with ``workers`` processes on one listening socket.

    One worker: this process. Several: the parent binds the socket, forks the workers (each
    builds its own :class:`Live` after the fork: no torch state crosses it), restarts one that
    dies, and on SIGTERM/SIGINT passes the signal on and waits for them to drain.
    """
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    if workers == 1:
        return _serve_process(make_live, host, port, None, drain_s, ready)
    sock = socket.create_server((host, port), backlog=1024)
    # Every worker's select() wakes on a new connection and one accept() wins: the others must
    # not block in accept() (a worker stuck there never sees its shutdown request).
    sock.setblocking(False)
    children: set[int] = set()
    stopping = threading.Event()

    def spawn() -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                code = _serve_process(make_live, host, port, sock, drain_s, ready)
            except BaseException:
                log.exception("worker %s failed", os.getpid())
            finally:
                os._exit(code)
        children.add(pid)

    def on_signal(signum: int, _frame: object) -> None:
        stopping.set()
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    for _ in range(workers):
        spawn()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info(
        "%d workers on %s:%d (pids %s)", workers, host, sock.getsockname()[1], sorted(children)
    )
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        children.discard(pid)
        if not stopping.is_set():
            log.error("worker %s exited (status %s): starting another", pid, status)
            time.sleep(1.0)
            spawn()
    sock.close()
    return 0


def load_scorer(model: str, max_candidates: int | None = None) -> Scorer:
    """The Scorer inside a registered or saved pyfunc (``models:/tarq@champion``, a run URI or
    a folder), loaded with :func:`tarq.serving.pyfunc.load_scorer_model`'s checks."""
    from tarq.serving.pyfunc import load_scorer_model

    pyfunc = load_scorer_model(model, max_candidates=max_candidates)
    return pyfunc.unwrap_python_model().scorer
