"""Telemetry off for every library we use (no network on the machines we run on)."""

from __future__ import annotations

import os

# Opt-outs for every library we use; also set by subprocesses' environments (TELEMETRY_OFF).
TELEMETRY_OFF = {
    "DO_NOT_TRACK": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "GX_ANALYTICS_ENABLED": "false",
    "HF_HUB_OFFLINE": "1",
}


def disable_telemetry() -> None:
    """Set the opt-out variables unless the user already chose a value."""
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)
