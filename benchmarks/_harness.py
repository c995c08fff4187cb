"""What the benchmarks that run the daily job as a process of its own share.

Imported by the scripts beside it (``python benchmarks/<name>.py`` puts this folder on the
path); not part of the ``tarq`` package.
"""

from __future__ import annotations

import os
from pathlib import Path

from tarq.runtime.telemetry import TELEMETRY_OFF

ENV = {**TELEMETRY_OFF, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


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
    import subprocess
    import sys

    from tarq.defaults import DEMO_REFERENCE_START

    db.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "tarq.cli", "demo-data", "--db", str(db), "--preset", preset]
    cmd += ["--seed", str(seed), "--start-date", DEMO_REFERENCE_START]
    root = Path(__file__).resolve().parents[1]
    subprocess.run(cmd, cwd=root, check=True, env={**os.environ, **ENV}, stdout=subprocess.DEVNULL)


def base_warehouse(out: Path, preset: str, seed: int) -> Path:
    """``out/warehouse.duckdb``, the demo logs every mode of a benchmark copies, generated on
    first use (``out`` created)."""
    out.mkdir(parents=True, exist_ok=True)
    base = out / "warehouse.duckdb"
    if not base.exists():
        demo_warehouse(base, preset, seed)
    return base


def environment(script: str, argv: list[str] | None, t0: float) -> dict[str, object]:
    """What a result was measured on: the machine, its load, the versions, the seconds since
    ``t0`` and the command (``script`` with ``argv``, or the process's arguments)."""
    import platform
    import sys
    import time

    import torch

    return {
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "seconds": round(time.perf_counter() - t0, 1),
        "command": f"python benchmarks/{script} " + " ".join(argv or sys.argv[1:]),
    }


def add_catalog_arguments(ap: object) -> None:
    """``--db`` (the warehouse holding the catalog), ``--samples`` (its built samples) and
    ``--out`` of the benchmarks that train or judge TARQ on a warehouse's catalog."""
    ap.add_argument("--db", type=Path, required=True, help="warehouse holding the item catalog")
    ap.add_argument("--samples", type=Path, required=True, help="built samples of that warehouse")
    ap.add_argument("--out", type=Path, required=True)
