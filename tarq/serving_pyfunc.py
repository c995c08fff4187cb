"""The MLflow pyfunc wrapper of :class:`tarq.serving.Scorer` (``mlflow models serve``).

The model's artifacts are the trained model directory (weights, config, layout,
vocabularies — not the training checkpoints) and a snapshot of the published semantic-ID
table as Parquet (``tarq publish``'s export), so the served model needs neither the
warehouse nor a network. The ``tarq`` package itself must be importable where it is served
(``pip install -e .`` of this repository; ``--env-manager local`` uses that environment).

Request: one record per request, e.g. the body of ``POST /invocations``::

    {"dataframe_records": [{"user_profile": {"user_id": 7},
                            "history": [{"item_id": 3, "category_id": 1, "brand_id": 2,
                                         "action": "pv", "ts": "2026-10-22T09:41:07"}],
                            "candidate_item_ids": [11, 12, 13],
                            "request_ts": "2026-10-22T10:02:00",
                            "unknown": "raise"}]}

``unknown`` is optional (``"raise"`` or ``"nan"``, see :mod:`tarq.serving`); ``request_ts``
defaults to the time the request is scored. Each behaviour's ``ts`` is required by models
that embed the time since each behaviour (every model trained since that feature exists).
Response: one row per request with ``scores`` (logits, σ(logit) = click probability) in candidate order.
Importing mlflow is confined to this module; the rest of ``tarq`` does not need it.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from tarq.serving import Scorer

MODEL_FILES = ("model.pt", "config.json", "layout.json")


def _pip_requirements() -> list[str]:
    # Pinned like pyproject.toml; passing them also skips MLflow's slow dependency inference.
    return ["torch==2.13.0", "numpy", "pandas==3.1.1", "pyarrow==25.0.1", "faiss-cpu==1.15.1",
            "duckdb==2.0.0", "tqdm", f"mlflow=={mlflow.__version__}"]


def _as_list(value: Any, what: str) -> list[Any]:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, list | tuple):
        return list(value)
    raise ValueError(f"{what} must be a list, got {type(value).__name__}")


def _optional(value: Any) -> Any:
    # A DataFrame fills fields that some records lack with NaN/NaT.
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NaT:
        return None
    return value


def _requests(model_input: Any) -> list[dict[str, Any]]:
    if isinstance(model_input, pd.DataFrame):
        records = model_input.to_dict(orient="records")
    elif isinstance(model_input, dict):
        records = [model_input]
    elif isinstance(model_input, list):
        records = model_input
    else:
        raise ValueError(f"unsupported request type {type(model_input).__name__}; send records "
                         "with user_profile, history and candidate_item_ids")
    out = []
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            raise ValueError(f"request {i} must be a record, got {type(r).__name__}")
        missing = {"user_profile", "candidate_item_ids"} - set(r)
        if missing:
            raise ValueError(f"request {i} lacks {sorted(missing)}")
        history = _optional(r.get("history"))
        history = [] if history is None else _as_list(history, f"request {i} history")
        out.append({
            "user_profile": dict(r["user_profile"]),
            "history": [dict(h) for h in history],
            "candidate_item_ids": [int(c) for c in _as_list(r["candidate_item_ids"],
                                                            f"request {i} candidate_item_ids")],
            # A DataFrame fills a missing "unknown" of some records with NaN.
            "unknown": r["unknown"] if isinstance(r.get("unknown"), str) else "raise",
            "request_ts": _optional(r.get("request_ts")),
        })
    return out


class TarqScorerModel(mlflow.pyfunc.PythonModel):
    """pyfunc model: artifacts ``model_dir`` (trained TARQ) and ``ids`` (ID table Parquet)."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.scorer = Scorer.from_parquet(Path(context.artifacts["ids"]),
                                          Path(context.artifacts["model_dir"]))

    # No type hints on model_input on purpose: MLflow would turn them into a schema that
    # cannot express nested per-request records.
    def predict(self, context, model_input, params=None):
        """Scores per request: DataFrame with one ``scores`` list per input record."""
        scores = []
        for r in _requests(model_input):
            s = self.scorer.score(r["user_profile"], r["history"], r["candidate_item_ids"],
                                  unknown=r["unknown"], request_ts=r["request_ts"])
            scores.append([None if np.isnan(x) else float(x) for x in s])
        return pd.DataFrame({"scores": scores})


def _stage_model_dir(model_dir: Path, dest: Path) -> Path:
    """Copy only what serving needs (weights, config, layout, vocabularies)."""
    dest.mkdir(parents=True)
    for name in MODEL_FILES:
        shutil.copy2(model_dir / name, dest / name)
    shutil.copytree(model_dir / "vocab", dest / "vocab")
    return dest


def save_scorer_model(path: Path, model_dir: Path, ids_path: Path) -> Path:
    """Write a self-contained pyfunc model directory (``mlflow.pyfunc.load_model``-able).

    Args:
        path: new directory for the MLflow model.
        model_dir: trained TARQ model directory.
        ids_path: published Parquet export (or ``ids.parquet``) of the same model's IDs.
    """
    Scorer.from_parquet(Path(ids_path), Path(model_dir))  # fail here, not at serving time
    with tempfile.TemporaryDirectory() as tmp:
        staged = _stage_model_dir(Path(model_dir), Path(tmp) / "model_dir")
        mlflow.pyfunc.save_model(
            path=str(path), python_model=TarqScorerModel(),
            artifacts={"model_dir": str(staged), "ids": str(ids_path)},
            pip_requirements=_pip_requirements(),
        )
    return Path(path)


def log_scorer_model(name: str, model_dir: Path, ids_path: Path,
                     registered_model_name: str | None = None) -> Any:
    """``mlflow.pyfunc.log_model`` of the scorer in the active run; returns its ModelInfo."""
    Scorer.from_parquet(Path(ids_path), Path(model_dir))
    with tempfile.TemporaryDirectory() as tmp:
        staged = _stage_model_dir(Path(model_dir), Path(tmp) / "model_dir")
        return mlflow.pyfunc.log_model(
            name=name, python_model=TarqScorerModel(),
            artifacts={"model_dir": str(staged), "ids": str(ids_path)},
            pip_requirements=_pip_requirements(), registered_model_name=registered_model_name,
        )
