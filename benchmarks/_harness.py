"""What the benchmarks share: the environment of a daily-job process, the demo warehouse,
the quiet-machine check, what a result was measured on (machine, versions, git commit),
stopwatches, latency percentiles, the results JSON and markdown tables.

Imported by the scripts beside it (``python benchmarks/<name>.py`` puts this folder on the
path); not part of the ``tarq`` package.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tarq.runtime.telemetry import TELEMETRY_OFF

if TYPE_CHECKING:
    import numpy as np

ENV = {**TELEMETRY_OFF, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
ROOT = Path(__file__).resolve().parents[1]


def job_env(root: Path) -> dict[str, str]:
    """The environment of one isolated daily-job process under ``root``: its own Prefect home
    (a temporary server, no ``PREFECT_API_URL`` inherited) and SQLite MLflow store, telemetry
    off."""
    env = {
        **os.environ,
        **ENV,
        "PREFECT_HOME": str(root / "prefect"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow' / 'mlflow.db'}",
    }
    env.pop("PREFECT_API_URL", None)
    return env


def demo_warehouse(db: Path, preset: str, seed: int) -> None:
    """Generate the demo logs of ``preset`` (``seed``, from the fixed reference start day)
    into a new warehouse ``db``, as ``tarq demo-data`` does."""
    from tarq.defaults import DEMO_REFERENCE_START

    db.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "tarq.cli", "demo-data", "--db", str(db), "--preset", preset]
    cmd += ["--seed", str(seed), "--start-date", DEMO_REFERENCE_START]
    subprocess.run(cmd, cwd=ROOT, check=True, env={**os.environ, **ENV}, stdout=subprocess.DEVNULL)


def base_warehouse(out: Path, preset: str, seed: int) -> Path:
    """``out/warehouse.duckdb``, the demo logs every mode of a benchmark copies, generated on
    first use (``out`` created)."""
    out.mkdir(parents=True, exist_ok=True)
    base = out / "warehouse.duckdb"
    if not base.exists():
        demo_warehouse(base, preset, seed)
    return base


def load_average(ndigits: int | None = 2) -> list[float] | None:
    """The 1-, 5- and 15-minute load averages, rounded to ``ndigits`` (None: as the system
    gives them); None where the system has none."""
    try:
        load = os.getloadavg()
    except (AttributeError, OSError):
        return None
    return [x if ndigits is None else round(x, ndigits) for x in load]


def quiet_check(max_load: float | None = None, *, ndigits: int | None = 2) -> list[float] | None:
    """The load averages before a run (as :func:`load_average`); a warning on stderr naming
    the 1-minute load when it exceeds ``max_load`` (default: half the cores). A benchmark
    measured on a busy machine must be rerun on a quiet one before its figures are quoted:
    this warns, it never stops the run."""
    load = load_average(ndigits)
    if load is None:
        return None
    limit = (os.cpu_count() or 1) / 2 if max_load is None else max_load
    if load[0] > limit:
        print(
            f"warning: busy machine, 1-minute load average {load[0]:.2f} > {limit:.2f} "
            f"({os.cpu_count()} cores): rerun on a quiet machine before quoting these figures",
            file=sys.stderr,
            flush=True,
        )
    return load


def git_state(root: Path = ROOT) -> dict[str, Any]:
    """The checkout's ``commit`` (HEAD, "" when git cannot tell) and whether tracked files
    differ from it (``dirty``)."""

    def run(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "commit": run("rev-parse", "HEAD"),
        "dirty": bool(run("status", "--porcelain", "--untracked-files=no")),
    }


def machine(**extra: object) -> dict[str, object]:
    """The platform, cores, Python and torch versions, then ``extra`` (in that order)."""
    import torch

    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        **extra,
    }


def machine_line() -> str:
    """The machine in a few words: ``"x86_64, 2 cores"``."""
    return f"{platform.machine()}, {os.cpu_count()} cores"


def run_meta() -> dict[str, object]:
    """The ``meta`` of a results file: platform, cores and the script's arguments."""
    return {"machine": platform.platform(), "cpus": os.cpu_count(), "argv": sys.argv[1:]}


def environment(
    script: str, argv: list[str] | None, t0: float, *, git: bool = False
) -> dict[str, object]:
    """What a result was measured on: the machine, its load, the versions, the seconds since
    ``t0`` and the command (``script`` with ``argv``, or the process's arguments); with
    ``git``, the commit and dirty flag of the checkout too (:func:`git_state`)."""
    import torch

    env: dict[str, object] = {
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average": load_average(None),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "seconds": round(time.perf_counter() - t0, 1),
        "command": f"python benchmarks/{script} " + " ".join(argv or sys.argv[1:]),
    }
    if git:
        env["git"] = git_state()
    return env


class Stopwatch:
    """Wall seconds (``time.perf_counter``) since it was made; frozen once stopped (also on
    leaving its ``with`` block)."""

    def __init__(self) -> None:
        self.stopped: float | None = None
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        """Seconds from the start to now, or to the stop."""
        end = time.perf_counter() if self.stopped is None else self.stopped
        return end - self.start

    def stop(self) -> float:
        """Stop the clock; the seconds it ran."""
        self.stopped = time.perf_counter()
        return self.stopped - self.start

    def __enter__(self) -> Stopwatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def timed() -> Stopwatch:
    """A started :class:`Stopwatch` (``with timed() as t: ...``, then ``t.seconds``)."""
    return Stopwatch()


def percentiles_ms(
    seconds: Sequence[float] | np.ndarray,
    qs: Sequence[int] = (50, 90, 99),
    *,
    method: str = "linear",
) -> dict[str, float]:
    """``{"p50_ms": ..., "p90_ms": ..., "p99_ms": ...}`` of latencies in ``seconds``:
    ``numpy.percentile`` (its ``method``, linear interpolation by default) of the values in
    milliseconds (``seconds × 1e3``), as http_load and serve_follow computed them."""
    import numpy as np

    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    return {f"p{q}_ms": float(np.percentile(ms, q, method=method)) for q in qs}


def write_json(path: Path, payload: object, *, default: Any = None) -> Path:
    """``payload`` as indented JSON (2 spaces, a final newline) into ``path`` (its folder
    made); ``default`` as :func:`json.dumps` takes it. Returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=default) + "\n", encoding="utf-8")
    return path


ALIGN = {"l": "---", "r": "---:", "c": ":---:"}


def markdown_table(
    header: Sequence[str] | str,
    rows: Iterable[Sequence[object] | str],
    align: str | None = None,
) -> str:
    """A markdown table: ``| a | b |`` lines of ``header`` (the column names, or one string
    of them separated by ``|``) and each row's cells (``str()`` of each; a row given as a
    string is a line of its own, as it is), under a separator with ``align``'s letter per
    column (``l`` ``---``, ``r`` ``---:``, ``c`` ``:---:``; default all ``l``). No final
    newline."""
    if isinstance(header, str):
        header = [name.strip() for name in header.split("|")]
    spec = align or "l" * len(header)
    if len(spec) != len(header):
        raise ValueError(f"align {spec!r} has {len(spec)} columns, the header {len(header)}")
    lines = ["| " + " | ".join(header) + " |", "|" + "".join(ALIGN[a] + "|" for a in spec)]
    for row in rows:
        lines.append(row if isinstance(row, str) else "| " + " | ".join(map(str, row)) + " |")
    return "\n".join(lines)


def assignment(text: str) -> tuple[str, Any]:
    """``key=value`` → (key, value), the value read as JSON (numbers, true/false, null,
    lists) or else kept as text (``rq_history=user``). Raises ValueError without ``=``."""
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def add_catalog_arguments(ap: object) -> None:
    """``--db`` (the warehouse holding the catalog), ``--samples`` (its built samples) and
    ``--out`` of the benchmarks that train or judge TARQ on a warehouse's catalog."""
    ap.add_argument("--db", type=Path, required=True, help="warehouse holding the item catalog")
    ap.add_argument("--samples", type=Path, required=True, help="built samples of that warehouse")
    ap.add_argument("--out", type=Path, required=True)
