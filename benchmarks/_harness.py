"""What the benchmarks that run the daily job as a process of its own share.

Imported by the scripts beside it (``python benchmarks/<name>.py`` puts this folder on the
path); not part of the ``tarq`` package.
"""

from __future__ import annotations

import os
from pathlib import Path

from tarq.telemetry import TELEMETRY_OFF

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
