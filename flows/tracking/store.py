"""The MLflow store of the daily job: where it is, checking it answers, the experiment, and
the warehouse a registered model is bound to (the names and tags every other part uses)."""

from __future__ import annotations

import os
import re
import sqlite3
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tarq.runtime.telemetry import disable_telemetry

if TYPE_CHECKING:
    pass


REPO_ROOT = Path(__file__).resolve().parents[2]


DEFAULT_EXPERIMENT = "tarq-daily"


REGISTERED_MODEL = "tarq"


METRIC_KEYS = (
    "auc",
    "gauc",
    "logloss",
    "utilization_batch",
    "utilization_catalog",
    "collision_rate",
    "train_seconds",
    "samples_per_s",
)


KIND_TAG, DATE_TAG, STATUS_TAG, MODEL_TAG = (
    "tarq.kind",
    "tarq.run_date",
    "tarq.status",
    "tarq.model",
)


SHA_TAG = "tarq.model_sha256"


# The MLflow UI shows an experiment with this kind as model training runs (runs table, charts).
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"


WAREHOUSE_TAG = "tarq.warehouse"


# Set on a model run whose model_dir/ retention deleted (flows.retention): never a parent again.
GC_TAG = "tarq.gc"


# "not-served": published, but the table was not the served one (an operator rolled it
# back); the day is finished and its champion did not move.
DONE_STATUSES = ("published", "not-served", "rejected")


REGISTER_CRASH_ENV = "TARQ_REGISTER_CRASH"


class TrackingUnavailable(RuntimeError):
    """The MLflow tracking store cannot be used: unreachable, locked or not writable."""


class ForeignWarehouse(ValueError):
    """The registered model belongs to another warehouse (its ``tarq.warehouse`` tag)."""


def _wh(warehouse: str) -> str:
    # Ids go into MLflow filter strings: only the uuid shape is accepted.
    if not re.fullmatch(r"[0-9a-fA-F-]{8,64}", warehouse or ""):
        raise ValueError(f"invalid warehouse id {warehouse!r}")
    return warehouse


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` or the repository's SQLite store."""
    return (
        os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{REPO_ROOT / 'mlflow' / 'mlflow.db'}"
    )


def _artifact_root_for(tracking_uri: str) -> Path:
    """Artifacts live beside a SQLite store (``<db dir>/artifacts``), else in the repo's
    (a tracking server keeps its own: :func:`setup`)."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri.removeprefix("sqlite:///")).parent / "artifacts"
    return REPO_ROOT / "mlflow" / "artifacts"


def setup(
    tracking_uri: str | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    artifact_root: str | Path | None = None,
) -> str:
    """Point MLflow at the store and return the experiment id (created when missing).

    Args:
        tracking_uri: store URI (default :func:`default_tracking_uri`).
        experiment: experiment name of the daily job.
        artifact_root: folder for the experiment's artifacts (default beside a SQLite store;
            a tracking server's own artifact store for an ``http(s)`` one, so that every machine
            of the team reads them through the server).
    """
    disable_telemetry()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = tracking_uri or default_tracking_uri()
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(uri, uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        location = None  # a server's default: mlflow-artifacts:/ (served) or its own root
        if artifact_root or urlparse(uri).scheme not in ("http", "https"):
            root = Path(artifact_root) if artifact_root else _artifact_root_for(uri)
            root.mkdir(parents=True, exist_ok=True)
            location = (root / experiment).as_uri()
        try:
            exp_id = client.create_experiment(experiment, artifact_location=location)
        except MlflowException:
            # Another process created it between our lookup and create.
            exp_id = client.get_experiment_by_name(experiment).experiment_id
        exp = client.get_experiment(exp_id)
    if EXPERIMENT_KIND_TAG not in exp.tags:
        # Untagged, the MLflow UI may open the experiment as a GenAI one (traces, "No data").
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return exp.experiment_id


def check_store(tracking_uri: str | None = None, timeout_s: float = 5.0) -> str:
    """Fail fast, with a clear message, when the tracking store cannot take the day's writes.

    An ``http(s)`` store must answer ``/health`` (any HTTP answer counts: the server is up);
    a ``sqlite`` store must grant a write lock within ``timeout_s`` (MLflow itself waits 20 s
    per statement on a locked file, and only fails at the first write, after training).
    Other stores are left to MLflow. Returns the URI checked.

    Raises:
        TrackingUnavailable: naming the store and what went wrong.
    """
    uri = tracking_uri or default_tracking_uri()
    scheme = urlparse(uri).scheme
    if scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s):
                pass
        except urllib.error.HTTPError:
            pass  # the server answered; authentication or routing is MLflow's business
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TrackingUnavailable(
                f"MLflow tracking server {uri} is unreachable ({reason})"
            ) from exc
    elif scheme == "sqlite":
        path = Path(uri.removeprefix("sqlite:///"))
        if path.exists():
            try:
                con = sqlite3.connect(path, timeout=timeout_s, isolation_level=None)
                try:
                    con.execute("BEGIN IMMEDIATE")  # a write lock, released at once
                    con.execute("ROLLBACK")
                finally:
                    con.close()
            except sqlite3.Error as exc:
                raise TrackingUnavailable(
                    f"MLflow tracking store {path} is locked or not writable ({exc}; waited "
                    f"{timeout_s:g}s)"
                ) from exc
    return uri


def use_store(tracking_uri: str | None = None) -> str:
    """Point this process's MLflow client at the store (no I/O); returns the URI."""
    uri = tracking_uri or default_tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def client() -> MlflowClient:
    """A client on the current tracking and registry URIs."""
    return MlflowClient(mlflow.get_tracking_uri(), mlflow.get_registry_uri())


def bind(experiment_id: str, warehouse: str, name: str = REGISTERED_MODEL) -> None:
    """Scope the store to ``warehouse``: refuse a registered model bound to another one, and
    adopt what predates the tag (the registered model, its versions, the day and model runs
    of the experiment) for this warehouse.

    Raises:
        ForeignWarehouse: ``name`` is bound to another warehouse; the message says which
            parameter to set.
    """
    wh, c = _wh(warehouse), client()
    try:
        rm = c.get_registered_model(name)
    except MlflowException:
        rm = None
    if rm is not None:
        owner = (rm.tags or {}).get(WAREHOUSE_TAG)
        if owner is not None and owner != wh:
            raise ForeignWarehouse(
                f"registered model {name!r} on this MLflow store belongs to warehouse {owner}, "
                f"not to this one ({wh}): its champion is not this warehouse's. Set "
                "registered_model (and, to keep the runs apart too, experiment) to names of "
                "this warehouse's own"
            )
        if owner is None:
            for v in c.search_model_versions(f"name = '{name}'"):
                if WAREHOUSE_TAG not in v.tags:
                    c.set_model_version_tag(name, v.version, WAREHOUSE_TAG, wh)
            c.set_registered_model_tag(name, WAREHOUSE_TAG, wh)
    for kind in ("daily", "model"):
        for r in c.search_runs(
            [experiment_id], filter_string=f"tags.`{KIND_TAG}` = '{kind}'", max_results=50000
        ):
            if WAREHOUSE_TAG not in r.data.tags:
                c.set_tag(r.info.run_id, WAREHOUSE_TAG, wh)


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file (the key that ties runs and versions to their weights)."""
    from tarq.ids.semantic_ids import file_sha256 as sha

    return sha(path)
