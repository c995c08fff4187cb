"""The registered model ``tarq``: versions of a run date, the scorer pyfunc logged and
registered with its request example, version tags and the ``champion``/``challenger`` aliases."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

if TYPE_CHECKING:
    pass
from flows.tracking.store import DATE_TAG, REGISTERED_MODEL, SHA_TAG, WAREHOUSE_TAG, client


def version_for_day(
    run_date: str,
    name: str = REGISTERED_MODEL,
    model_sha256: str | None = None,
    warehouse: str | None = None,
) -> ModelVersion | None:
    """The registered version already made for ``run_date`` — of the weights ``model_sha256``
    when given (a forced retrain with other settings is a new version), of ``warehouse`` when
    given — or None."""
    try:
        versions = client().search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None
    mine = [
        v
        for v in versions
        if v.tags.get(DATE_TAG) == run_date
        and (model_sha256 is None or v.tags.get(SHA_TAG) == model_sha256)
        and (warehouse is None or v.tags.get(WAREHOUSE_TAG) == warehouse)
    ]
    return max(mine, key=lambda v: int(v.version)) if mine else None


def logged_model_for(run_id: str, model_sha256: str) -> str | None:
    """The URI of the pyfunc already logged to ``run_id`` for the weights ``model_sha256``
    (a retried registration reuses it instead of logging the model again), or None."""
    c = client()
    exp_id = c.get_run(run_id).info.experiment_id
    found = c.search_logged_models(
        [exp_id],
        filter_string=f"source_run_id = '{run_id}' AND tags.`{SHA_TAG}` = '{model_sha256}'",
    )
    ready = [m for m in found if str(m.status) == "READY"]
    return f"models:/{ready[0].model_id}" if ready else None


def register(
    model_uri: str,
    run_id: str,
    run_date: str,
    tags: Mapping[str, str],
    name: str = REGISTERED_MODEL,
) -> ModelVersion:
    """Register ``model_uri`` as a new version of ``name`` (or return the date's existing one)
    and point the ``challenger`` alias at it. ``tags`` carry the weights' sha256 and the
    warehouse (``tarq.warehouse``); the registered model is bound to that warehouse."""
    c = client()
    existing = version_for_day(run_date, name, tags.get(SHA_TAG), tags.get(WAREHOUSE_TAG))
    if existing is not None:
        # A retry after a failure between creating the version and moving the alias
        # completes the registration instead of leaving a version without its alias.
        aliases = getattr(existing, "aliases", None) or []
        if "challenger" not in aliases:
            c.set_registered_model_alias(name, "challenger", existing.version)
        return existing
    with contextlib.suppress(MlflowException):  # already registered
        c.create_registered_model(
            name, tags={WAREHOUSE_TAG: tags[WAREHOUSE_TAG]} if tags.get(WAREHOUSE_TAG) else None
        )
    # A logged model (models:/m-…) is named by its id too: a tracking server refuses the
    # version without it (a SQLite store does not ask).
    logged = re.fullmatch(r"models:/(m-[0-9a-f]+)", model_uri)
    mv = c.create_model_version(
        name,
        model_uri,
        run_id=run_id,
        tags={DATE_TAG: run_date, **tags},
        model_id=logged.group(1) if logged else None,
    )
    c.set_registered_model_alias(name, "challenger", mv.version)
    return mv


def champion(name: str = REGISTERED_MODEL, warehouse: str | None = None) -> ModelVersion | None:
    """The version behind the ``champion`` alias (of ``warehouse`` when given), or None."""
    try:
        mv = client().get_model_version_by_alias(name, "champion")
    except MlflowException:
        return None
    if warehouse is not None and mv.tags.get(WAREHOUSE_TAG) != warehouse:
        return None
    return mv


def request_example(samples_dir: Path, n_candidates: int = 5, n_history: int = 5) -> dict[str, Any]:
    """A real scoring request from the test day (user profile, history, candidate ids).

    It is the pyfunc model's input example (shown in the MLflow UI, checked against the
    signature): ``user_profile`` {field: id}, ``history`` [{item_id, category_id, brand_id,
    action, ts}], ``candidate_item_ids`` [id], ``request_ts`` and ``unknown``.
    """
    import pyarrow.parquet as pq

    from tarq.data.features import FeatureLayout

    layout = FeatureLayout.load(samples_dir / "layout.json")
    files = sorted((samples_dir / "test").glob("*.parquet"))
    rows = pq.read_table(files[0]).slice(0, 256).to_pylist()
    # Prefer a user with a history, so the example shows the history record shape.
    row = next((r for r in rows if r["hist_item_id"]), rows[0])
    keys = ("item_id", "category_id", "brand_id", "action", "ts")
    hist = [
        dict(zip(keys, h, strict=True)) for h in zip(*(row[f"hist_{f}"] for f in keys), strict=True)
    ]
    hist = [h for h in hist if all(v is not None for v in h.values())][-n_history:]
    for h in hist:
        h["ts"] = h["ts"].isoformat()
    cands = list(dict.fromkeys(r["item_id"] for r in rows))[:n_candidates]
    return {
        "user_profile": {f: row[f] for f in layout.user_fields if row.get(f) is not None},
        "history": hist,
        "candidate_item_ids": cands,
        "request_ts": row["ts"].isoformat(),
        "unknown": "nan",
    }


def log_pyfunc(
    run_id: str,
    model_dir: Path,
    ids_path: Path,
    samples_dir: Path,
    tags: Mapping[str, str] | None = None,
) -> str:
    """Log the serving pyfunc (model dir + ID-table snapshot) with signature and input example
    to ``run_id``; returns the logged model's URI. ``tags`` are set on the logged model as it
    is created (the weights' sha256 and warehouse a retried registration finds it by)."""
    import pandas as pd

    from tarq.serving import pyfunc as sp

    example = pd.DataFrame([request_example(samples_dir)])
    # Models from code (tarq/serving/model_code.py): nothing is pickled; the staged ID table
    # carries the weights' sha256, checked again on every load. The signature is built from
    # the layout, not inferred from the example: every profile field, the history and
    # request_ts optional, the behaviours' keys named but typed by the Scorer (see
    # tarq.serving.pyfunc, "Signature"); log_model checks the example against it.
    sig = sp.model_signature(model_dir)
    with sp.staged_artifacts(model_dir, ids_path) as artifacts:
        config = sp.model_config()
        before = client().get_run(run_id).info
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(sp.MODEL_CODE),
                artifacts=artifacts,
                model_config=config,
                signature=sig,
                input_example=example,
                pip_requirements=sp._pip_requirements(),
                tags={k: str(v) for k, v in (tags or {}).items()},
            )
    if before.end_time:  # start_run reopened the training run: its end stays training's
        client().set_terminated(run_id, status=before.status, end_time=before.end_time)
    return info.model_uri


def tag_version(version: str, tags: Mapping[str, str], name: str = REGISTERED_MODEL) -> None:
    """Set tags on a registered version (gate decision, reason, publication)."""
    c = client()
    for k, v in tags.items():
        c.set_model_version_tag(name, version, k, str(v)[:5000])


def promote(version: str, name: str = REGISTERED_MODEL) -> None:
    """Move the ``champion`` alias to ``version``."""
    client().set_registered_model_alias(name, "champion", version)
