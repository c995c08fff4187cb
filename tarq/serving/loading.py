"""How a serving process gets a registered version: :func:`registry_source` for the follower,
and :class:`ChildLoader`, loads run in a child process so that the serving threads never wait
for them.

A load is mostly Python: MLflow's artifact download and pyfunc machinery, the checks
(:func:`tarq.serving.pyfunc.check_model_code`, the weights↔IDs sha256), reading the ID table,
building the item index. Run in a thread of the serving process, it holds the GIL for most of
that time, and requests arriving meanwhile wait for it; lowering that thread's CPU priority
made it worse at times, as a low-priority thread preempted while it holds the GIL keeps every
serving thread waiting (benchmarks/README.md, "Following the champion"). Here a child process
kept beside the serving process (:class:`ChildLoader`: ``python -m tarq.serving.loading``, at
:data:`LOAD_NICENESS` lower priority) does the whole checked load and writes what the serving
process needs as plain files
(:meth:`tarq.serving.Scorer.export`): the model directory, and the unit item vectors, codes
and item ids as ``.npy``. The serving process then only reads them
(:meth:`tarq.serving.Scorer.from_export`).

A failed child load raises :class:`IsolatedLoadError` naming the child's exception, e.g.
``ModelMismatchError: … assigned by another model``; the follower keeps the old version.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from tarq.serving.follow import LOAD_NICENESS
from tarq.serving.scorer import Scorer

if TYPE_CHECKING:
    from tarq.serving.follow import Loaded

#: A child load that takes longer than this is killed and reported as failed.
LOAD_TIMEOUT_S = 900.0


class IsolatedLoadError(RuntimeError):
    """The child process could not load the version (its exception's type and message)."""


def registry_source(
    model_uri: str, max_candidates: int | None = None, in_child: bool = False
) -> tuple[Callable[[], str], Callable[[str], Loaded]]:
    """What :class:`tarq.serving.follow.Follower` polls and loads for a registry alias.

    Args:
        model_uri: ``models:/<name>@<alias>``, e.g. ``models:/tarq@champion``.
        max_candidates: overrides the saved cap when given.
        in_child: load each version in a :class:`ChildLoader`'s process (started now)
            instead of in the calling thread.
    Returns:
        (resolve: the alias's model version now, load: a version → its :class:`Loaded`,
        loaded with :func:`tarq.serving.pyfunc.load_scorer_model`'s checks).

    Raises:
        ValueError: ``model_uri`` names no alias.
    """
    from mlflow import MlflowClient

    from tarq.serving.follow import Loaded
    from tarq.serving.pyfunc import alias_parts, load_scorer_model

    parts = alias_parts(model_uri)
    if parts is None:
        raise ValueError(
            f"following needs a registry alias such as models:/tarq@champion, got {model_uri!r}"
        )
    name, alias = parts
    client = MlflowClient()

    def resolve() -> str:
        return str(client.get_model_version_by_alias(name, alias).version)

    child = ChildLoader() if in_child else None
    if child is not None:
        child.start()

    def load(version: str) -> Loaded:
        uri = f"models:/{name}/{version}"
        if child is not None:
            scorer = child.load(uri, max_candidates)
        else:
            scorer = load_scorer_model(uri, max_candidates=max_candidates)
            scorer = scorer.unwrap_python_model().scorer
        return Loaded(scorer, str(version), scorer.version)

    return resolve, load


class ChildLoader:
    """A loading process kept beside a serving process: ``python -m tarq.serving.loading`` at
    ``niceness`` lower priority, which imports MLflow, torch and the kernels once when it
    starts (about 3 s of CPU: at a low priority on a busy machine that alone would take tens
    of seconds per load) and then loads one version per request.

    Each :meth:`load` sends the child one JSON line (the model URI, an export folder, the cap);
    the child runs :func:`tarq.serving.pyfunc.load_scorer_model` with all its checks, writes
    :meth:`tarq.serving.Scorer.export` and answers one JSON line; this process rebuilds the
    scorer from the export (:meth:`tarq.serving.Scorer.from_export`). A child that died or
    timed out is killed and started again on the next load. The child exits when this
    process closes its end (its standard input reaches EOF), so it never outlives it.

    Args:
        niceness: added to the child's nice value.
        timeout_s: a load that takes longer fails and its child is killed.
        tracking_uri: the MLflow tracking URI for the child (default: this process's, also
            when it was set with ``mlflow.set_tracking_uri`` rather than the environment).
    """

    def __init__(
        self,
        niceness: int = LOAD_NICENESS,
        timeout_s: float = LOAD_TIMEOUT_S,
        tracking_uri: str | None = None,
    ) -> None:
        self.niceness, self.timeout_s, self.tracking_uri = niceness, timeout_s, tracking_uri
        self._proc: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the child now (if it is not running) and wait until it has imported what it
        needs, so that this is done before the first load is needed.

        Raises:
            IsolatedLoadError: the child did not come up within ``timeout_s``.
        """
        with self._lock:
            self._ensure()

    def _ensure(self) -> subprocess.Popen[str]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        uri = self.tracking_uri
        if uri is None:
            import mlflow

            uri = mlflow.get_tracking_uri()
        env = {**os.environ, "MLFLOW_TRACKING_URI": str(uri)}
        cmd = [sys.executable, "-m", "tarq.serving.loading", "--nice", str(self.niceness)]
        self._proc = subprocess.Popen(
            cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        self._answer("start")  # its imports done: {"ready": pid}
        return self._proc

    def load(self, model_uri: str, max_candidates: int | None = None) -> Scorer:
        """A registered scorer loaded and checked by the child, rebuilt here from its export.

        Args:
            model_uri: e.g. ``models:/tarq/3`` (what
                :func:`tarq.serving.pyfunc.load_scorer_model` takes).
            max_candidates: overrides the saved cap when given.
        Returns:
            A Scorer equal to one loaded here (the same weights, unit vectors and codes).
        Raises:
            IsolatedLoadError: the child's load failed (its exception), timed out or died.
        """
        with self._lock, tempfile.TemporaryDirectory(prefix="tarq-load-") as tmp:
            out = Path(tmp) / "export"
            ask = {"model_uri": model_uri, "out": str(out), "max_candidates": max_candidates}
            answer = self._ask(ask)
            if "error" in answer:
                raise IsolatedLoadError(f"{answer['error']}: {answer['message']}")
            return Scorer.from_export(out)

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        proc = self._ensure()
        assert proc.stdin is not None
        try:
            proc.stdin.write(json.dumps(request) + "\n")
            proc.stdin.flush()
        except OSError as exc:
            self._kill()
            raise IsolatedLoadError(f"the loading child is gone: {exc}") from None
        return self._answer(f"loading {request['model_uri']}")

    def _answer(self, what: str) -> dict[str, Any]:
        """The child's next answer line, within ``timeout_s``; else the child is stopped."""
        assert self._proc is not None and self._proc.stdout is not None
        ready, _, _ = select.select([self._proc.stdout], [], [], self.timeout_s)
        line = self._proc.stdout.readline() if ready else ""
        if not line:
            code = self._kill()
            why = f"exited with {code}" if ready else f"took over {self.timeout_s:.0f} s"
            raise IsolatedLoadError(
                f"{what}: the loading child {why} and was stopped (its output is in this "
                "server's log)"
            )
        return json.loads(line)

    def _kill(self) -> int | None:
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.kill()
        return proc.wait()

    def close(self) -> None:
        """Stop the child (it would also exit on its own when this process does)."""
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _serve_loads(answers: TextIO) -> None:
    """The child's loop: one JSON request per line of standard input, one answer line each."""
    from tarq.serving.pyfunc import load_scorer_model  # imported once, before any request

    answers.write(json.dumps({"ready": os.getpid()}) + "\n")
    answers.flush()
    for line in sys.stdin:
        ask = json.loads(line)
        out = Path(ask["out"])
        pyfunc = None
        try:
            pyfunc = load_scorer_model(ask["model_uri"], max_candidates=ask["max_candidates"])
            pyfunc.unwrap_python_model().scorer.export(out)
            answer: dict[str, Any] = {"ok": str(out)}
        except Exception as exc:
            shutil.rmtree(out, ignore_errors=True)
            traceback.print_exc()
            answer = {"error": type(exc).__name__, "message": str(exc)}
        del pyfunc  # the loaded arrays: not kept until the next request
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


def main(argv: list[str] | None = None) -> int:
    """The loading child of :class:`ChildLoader`: ``python -m tarq.serving.loading [--nice N]``.
    Requests come on standard input; answers go to the original standard output, and anything
    else written there (progress bars, warnings) goes to standard error instead."""
    p = argparse.ArgumentParser(prog="python -m tarq.serving.loading", description=__doc__)
    p.add_argument("--nice", type=int, default=0)
    args = p.parse_args(argv)
    if args.nice:
        with contextlib.suppress(AttributeError, OSError):  # elsewhere, or refused: as is
            os.nice(args.nice)
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    _serve_loads(answers)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
