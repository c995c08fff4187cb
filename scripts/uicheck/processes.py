"""The processes the check needs: the system Chromium (found, not started), free loopback
ports, and the UI servers (``mlflow ui`` on the store, a Prefect server on the demo's
database, or the one ``make prefect-up`` runs)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

from tarq.runtime.telemetry import TELEMETRY_OFF
from uicheck import Missing

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium(explicit: str | None = None) -> str:
    """The system Chromium: ``explicit``, ``$TARQ_CHROMIUM`` or the first on PATH."""
    for cand in (explicit, os.environ.get("TARQ_CHROMIUM"), *CHROMIUM_NAMES):
        if cand and (path := shutil.which(cand)):
            return path
    raise Missing(
        "no Chromium found (looked for " + ", ".join(CHROMIUM_NAMES) + "): `make ui-check` "
        "installs Debian's package as root (apt-get install chromium), or set TARQ_CHROMIUM"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_ok(url: str, timeout_s: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return resp.status < 500
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def server(
    name: str, cmd: Sequence[str], health: str, env: dict[str, str], wait_s: float, log: Path
) -> Iterator[None]:
    """Run ``cmd`` in its own session until the block ends (then SIGTERM, SIGKILL, by its
    process group); it is up when ``health`` answers."""
    with open(log, "w") as out:
        proc = subprocess.Popen(
            list(cmd), env=env, cwd="/", stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + wait_s
        while not http_ok(health):
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({proc.returncode}): {tail(log)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not up after {wait_s:.0f} s: {tail(log)}")
            time.sleep(0.5)
        yield
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=15)


def tail(path: Path, n: int = 2000) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return text[-n:]


@contextlib.contextmanager
def mlflow_ui(store: str, workdir: Path, wait_s: float = 120) -> Iterator[str]:
    """``mlflow ui`` (one worker) on a free loopback port on ``store``; yields its URL."""
    port = free_port()
    # No job runner (its task-queue consumers only serve GenAI jobs): less to start.
    env = {**os.environ, **TELEMETRY_OFF, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    for var in ("MLFLOW_TRACKING_URI", "PYTHONPATH"):  # the repo's mlflow/ is not the library
        env.pop(var, None)
    cmd = [
        sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store,
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with server("mlflow ui", cmd, f"{url}/health", env, wait_s, workdir / "mlflow-ui.log"):
        yield url


@contextlib.contextmanager
def prefect_ui(
    api: str | None, home: Path | None, workdir: Path, wait_s: float = 180
) -> Iterator[str]:
    """The Prefect API URL to read and browse: ``api`` when given, else a server started here
    (no services: it schedules and cancels nothing) on ``home``'s database."""
    if api:
        if not http_ok(f"{api.rstrip('/')}/health"):
            raise Missing(f"no Prefect server answers at {api}")
        yield api.rstrip("/")
        return
    assert home is not None
    if not (home / "prefect.db").exists():
        raise Missing(
            f"no Prefect database in {home}: run `make demo` first (its flow runs are kept "
            "there), or pass --prefect-api"
        )
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        **TELEMETRY_OFF,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
    }
    for var in ("PREFECT_PROFILE", "PYTHONPATH"):
        env.pop(var, None)
    cmd = [
        sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
        "--port", str(port), "--no-services",
    ]  # fmt: skip
    with server("prefect server", cmd, f"{api}/health", env, wait_s, workdir / "prefect.log"):
        yield api


def running_prefect_api(home: Path) -> str | None:
    """The API of ``make prefect-up``'s server (``<home>/server.pid`` alive and healthy)."""
    pid_file = home / "server.pid"
    port = os.environ.get("TARQ_PREFECT_PORT", "4200")
    if not pid_file.exists():
        return None
    try:
        os.kill(int(pid_file.read_text().strip()), 0)
    except (ValueError, OSError):
        return None
    api = f"http://127.0.0.1:{port}/api"
    return api if http_ok(f"{api}/health") else None
