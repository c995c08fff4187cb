"""Start ``mlflow models serve`` for a scorer model on loopback, wait until it answers, stop it.

What ``make serve`` runs, as a context manager for the HTTP test and ``benchmarks/http_load.py``::

    with ModelServer("models:/tarq@champion") as server:
        urllib.request.urlopen(server.url + "/ping")

The server is started the way ``make serve`` serves the registered model (docs/operations.md,
"Serving"): ``--env-manager local`` (this environment, where ``tarq`` is installed) with this
interpreter's ``bin`` folder first on ``PATH`` (MLflow starts ``uvicorn`` by name), pickle
deserialization off (:data:`FORCED_ENV`), telemetry off and one torch thread per worker process
(:data:`SERVE_ENV`). Nothing here imports MLflow.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

# Always: an edited MLmodel cannot make MLflow unpickle anything.
FORCED_ENV = {"MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"}
# Defaults (the caller's environment wins). The scorer's per-request work is small matrix
# products: a second intra-op thread per worker buys nothing and, beside another busy process,
# made Scorer.score take 208 ms instead of 1.2 ms (benchmarks/README.md, "HTTP serving").
SERVE_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "OMP_NUM_THREADS": "1",
}


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def serve_env(bin_dir: Path | None = None, base: dict[str, str] | None = None) -> dict[str, str]:
    """The server's environment: ``base`` (default ``os.environ``) with ``bin_dir`` (default
    this interpreter's folder, e.g. ``.venv/bin``) first on ``PATH``, :data:`SERVE_ENV` where
    ``base`` does not set it, and :data:`FORCED_ENV`."""
    env = dict(os.environ if base is None else base)
    bin_dir = Path(sys.executable).parent if bin_dir is None else Path(bin_dir)
    env["PATH"] = os.pathsep.join([str(bin_dir), env.get("PATH", "")]).rstrip(os.pathsep)
    for key, value in SERVE_ENV.items():
        env.setdefault(key, value)
    return {**env, **FORCED_ENV}


class ModelServer:
    """``mlflow models serve -m MODEL_URI`` on ``host:port`` as a child process group.

    Args:
        model_uri: a model folder, ``runs:/…``, ``models:/tarq@champion`` (the tracking URI
            from the environment).
        port: default a free one.
        workers: uvicorn worker processes (each loads the model).
        env: extra environment for the server (over :func:`serve_env`; :data:`FORCED_ENV`
            always wins).
        start_timeout_s: how long to wait for ``/ping`` before giving up.
    """

    name = "mlflow models serve"

    def __init__(
        self,
        model_uri: str | Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        workers: int = 1,
        env: dict[str, str] | None = None,
        start_timeout_s: float = 180.0,
    ) -> None:
        self.model_uri = str(model_uri)
        self.host = host
        self.port = free_port(host) if port is None else int(port)
        self.workers = workers
        self.env = {**serve_env(), **(env or {}), **FORCED_ENV}
        self.start_timeout_s = start_timeout_s
        self.url = f"http://{host}:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None

    def command(self) -> list[str]:
        mlflow_bin = Path(self.env["PATH"].split(os.pathsep)[0]) / "mlflow"
        return [
            str(mlflow_bin),
            "models",
            "serve",
            "-m",
            self.model_uri,
            "--env-manager",
            "local",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
        ]

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the server's output so far (its log is removed by :meth:`stop`)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]

    def start(self) -> ModelServer:
        """Start the server and wait until ``/ping`` answers 200.

        Raises:
            RuntimeError: the server exited, or did not answer within ``start_timeout_s``
                (it is stopped; the message ends with its log).
        """
        # Its own process group: stop() ends the CLI, uvicorn and its workers together.
        fd, name = tempfile.mkstemp(prefix="tarq-serve-", suffix=".log")
        os.close(fd)
        self.log_path = Path(name)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.command(),
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            if self.proc.poll() is not None:
                tail = self.log_tail()
                self.stop()
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{tail}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(self.url + "/ping", timeout=2) as res,
            ):
                if res.status == 200:
                    return self
            if time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise RuntimeError(
                    f"{self.name} did not answer /ping on {self.url} within "
                    f"{self.start_timeout_s:.0f} s:\n{tail}"
                )
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM the server's process group (the CLI, uvicorn and its workers), SIGKILL what
        is left after 15 s; removes the log. Idempotent."""
        proc = self.proc
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            proc.poll()  # reap the CLI, so that a finished group reads as gone
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)
        if self.log_path is not None:
            self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LeanServer(ModelServer):
    """``tarq serve`` (:mod:`tarq.serving.server`) of the same saved or registered scorer, with the
    same environment, start and stop as :class:`ModelServer`: ``workers`` processes on one
    socket, a thread per connection in each; ``follow`` polls the alias of ``model_uri`` every
    ``poll_s`` seconds and loads new versions in a child process or the follower thread
    (``load_in``)."""

    name = "tarq serve"

    def __init__(
        self,
        model_uri: str | Path,
        *args: Any,
        follow: bool = False,
        poll_s: float = 10.0,
        load_in: str = "process",
        **kwargs: Any,
    ) -> None:
        super().__init__(model_uri, *args, **kwargs)
        self.follow, self.poll_s, self.load_in = follow, poll_s, load_in

    def command(self) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "tarq.cli",
            "serve",
            "--model",
            self.model_uri,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--threads",
            self.env.get("OMP_NUM_THREADS", "1"),
            "--workers",
            str(self.workers),
        ]
        if self.follow:
            cmd += ["--follow", "--poll-s", str(self.poll_s), "--load-in", self.load_in]
        return cmd
