"""The MLflow pyfunc wrapper of :class:`tarq.serving.Scorer` (``mlflow models serve``).

The model's artifacts are the trained model directory (weights, config, layout,
vocabularies — not the training checkpoints) and a snapshot of the published semantic-ID
table as Parquet (``tarq publish``'s export or ``ids.parquet``), so the served model needs
neither the warehouse nor a network. The ``tarq`` package itself must be importable where it
is served (``pip install -e .`` of this repository; ``--env-manager local`` uses that
environment).

Saved as MLflow "models from code": the model is :mod:`tarq.serving.model_code`, run on load;
nothing is pickled or unpickled (a ``python_model.pkl`` planted in the model folder is never
read). :func:`load_scorer_model` loads a saved model only when it is this code, unchanged, with
pickle deserialization switched off. The snapshot's ID table carries the sha256 of the weights
that assigned it; loading refuses other weights (:class:`tarq.serving.ModelMismatchError`).

Request: one record per request, e.g. the body of ``POST /invocations``::

    {"dataframe_records": [{"user_profile": {"user_id": 7},
                            "history": [{"item_id": 3, "category_id": 1, "brand_id": 2,
                                         "action": "pv", "ts": "2026-10-22T09:41:07"}],
                            "candidate_item_ids": [11, 12, 13],
                            "request_ts": "2026-10-22T10:02:00",
                            "unknown": "raise"}]}

``unknown`` is optional (``"raise"`` or ``"nan"``, see :mod:`tarq.serving`); ``request_ts``
defaults to the time the request is scored when absent or null (NaT is refused). Each
behaviour's ``ts`` is required by models that embed the time since each behaviour (every model
trained since that feature exists) and may not be later than ``request_ts``. Ids are integers
(``1.9``, ``"1"``, ``true`` are refused); ``user_profile`` is an object (``{}`` for nothing
known); at most ``max_candidates`` candidates per request (model config, default
:data:`tarq.serving.MAX_CANDIDATES`; ``mlflow.pyfunc.load_model(uri, model_config=
{"max_candidates": n})`` changes it). A bad request fails as a whole with an
``INVALID_PARAMETER_VALUE`` :class:`~mlflow.exceptions.MlflowException` naming the request, the
field and the value — HTTP 400 from ``mlflow models serve``.
Response: one row per request with ``scores`` (logits, σ(logit) = click probability) in
candidate order; an unknown candidate scored with ``unknown="nan"`` is ``null``.

Signature (:func:`request_signature`, built from the model's layout; MLflow enforces it before
``predict``, over HTTP twice: when the body is parsed and again in ``predict``):
``candidate_item_ids`` (array of long) and ``user_profile`` (object) are required; the
profile's fields (``layout.user_fields``, long), ``history``, ``request_ts`` and ``unknown``
are optional. The behaviours' properties (``item_id``, ``category_id``, ``brand_id``,
``action``, ``ts``) are named but typed ``Any``: MLflow checks a typed scalar by building a
pandas Series for it, 11 ms for 50 behaviours (twice 250 scalars); the Scorer checks their
types itself, strictly. Keys the signature does not name are refused by MLflow (a misspelt
``"userid"`` is an error, not an unknown user).
Importing mlflow is confined to this module; the rest of ``tarq`` does not need it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types.schema import AnyType, Array, ColSpec, DataType, Object, Property, Schema

from tarq.data.features import SEQ_CONTEXT_FIELDS, FeatureLayout
from tarq.ids.semantic_ids import META_KEY
from tarq.serving import MAX_CANDIDATES, Scorer, ids_model_sha256

MODEL_FILES = ("model.pt", "config.json", "layout.json")
# The models-from-code file MLflow copies into the saved model and runs on load.
MODEL_CODE = Path(__file__).with_name("model_code.py")
#: sha256 of the model code of models saved before tarq's packages by concern (the file was
#: ``tarq/serving_model_code.py`` and imported ``tarq.serving_pyfunc``, which stays importable
#: for them): a model registered then loads unchanged. Their bytes are fixed, so a hash is exact.
LEGACY_MODEL_CODE_SHA256 = frozenset(
    {"591ff68487f010eadf1ad69ec5ac8163add76592611554464c89ca8f9d177bb4"}
)
IDS_ARTIFACT = "ids.parquet"


def _pip_requirements() -> list[str]:
    # Pinned like pyproject.toml; passing them also skips MLflow's slow dependency inference.
    return [
        "torch==2.13.0",
        "numpy",
        "numba==0.68.1",
        "pandas==3.1.1",
        "pyarrow==25.0.1",
        "faiss-cpu==1.15.1",
        "duckdb==2.0.0",
        "tqdm",
        f"mlflow=={mlflow.__version__}",
    ]


def _as_list(value: Any, what: str) -> list[Any]:
    if isinstance(value, np.ndarray):
        # .tolist() gives Python scalars of the array's kind: floats stay floats (refused).
        return value.tolist()
    if isinstance(value, list | tuple):
        return list(value)
    raise ValueError(f"{what} must be a list, got {type(value).__name__}")


def _candidates(value: Any, what: str) -> np.ndarray | list[Any]:
    """Candidate ids as the Scorer takes them fastest: an int64 array when every id is a plain
    integer (a JSON body's, after MLflow's schema), else the list, checked id by id."""
    if isinstance(value, np.ndarray) and value.dtype.kind in "iu":
        return value
    values = _as_list(value, what)
    # type() is exact: bool (an int subclass) and floats keep the per-id check and its message.
    if values and set(map(type, values)) == {int}:
        with contextlib.suppress(OverflowError):
            return np.array(values, dtype=np.int64)
    return values


def _jsonable(scores: np.ndarray) -> list[float | None]:
    """float32 logits → Python floats (exact), NaN → None (JSON null), without a Python loop."""
    out = scores.astype(np.float64)
    nan = np.isnan(out)
    if not nan.any():
        return out.tolist()
    obj = out.astype(object)
    obj[nan] = None
    return obj.tolist()


def _missing(value: Any) -> bool:
    # A DataFrame fills fields that some records lack with None or NaN.
    return value is None or (isinstance(value, float) and np.isnan(value))


def _is_nat(value: Any) -> bool:
    return value is pd.NaT or (isinstance(value, np.datetime64) and bool(np.isnat(value)))


def _requests(model_input: Any) -> list[dict[str, Any]]:
    if isinstance(model_input, pd.DataFrame) and model_input.columns.is_unique:
        # Column by column: what to_dict(orient="records") gives, in half its time.
        cols = list(model_input.columns)
        values = (model_input[c].tolist() for c in cols)
        records = [dict(zip(cols, row, strict=True)) for row in zip(*values, strict=True)]
    elif isinstance(model_input, pd.DataFrame):
        records = model_input.to_dict(orient="records")
    elif isinstance(model_input, dict):
        records = [model_input]
    elif isinstance(model_input, list):
        records = model_input
    else:
        raise ValueError(
            f"unsupported request type {type(model_input).__name__}; send records "
            "with user_profile, history and candidate_item_ids"
        )
    out = []
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            raise ValueError(f"request {i} must be a record, got {type(r).__name__}")
        missing = {"user_profile", "candidate_item_ids"} - set(r)
        if missing:
            raise ValueError(f"request {i} lacks {sorted(missing)}")
        profile = None if _missing(r["user_profile"]) else r["user_profile"]
        history = r.get("history")
        history = [] if _missing(history) else _as_list(history, f"request {i} history")
        if _missing(r["candidate_item_ids"]):
            raise ValueError(f"request {i} candidate_item_ids is null")
        cands = _candidates(r["candidate_item_ids"], f"request {i} candidate_item_ids")
        unknown = r.get("unknown")
        if _missing(unknown):
            unknown = "raise"
        elif not isinstance(unknown, str):
            raise ValueError(f"request {i} unknown must be 'raise' or 'nan', got {unknown!r}")
        request_ts = r.get("request_ts")
        if _is_nat(request_ts):
            raise ValueError(
                f"request {i} request_ts is NaT; omit it (or send null) to score "
                "at the time of the request"
            )
        out.append(
            {
                "user_profile": profile,
                "history": history,
                "candidate_item_ids": cands,
                "unknown": unknown,
                "request_ts": None if _missing(request_ts) else request_ts,
            }
        )
    return out


def _bad_request(message: str) -> MlflowException:
    # INVALID_PARAMETER_VALUE: the scoring server answers 400 with this message (any other
    # exception becomes a generic "unexpected error").
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


class TarqScorerModel(mlflow.pyfunc.PythonModel):
    """pyfunc model: artifacts ``model_dir`` (trained TARQ) and ``ids`` (ID table Parquet
    carrying the weights' sha256); model config ``max_candidates``."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        cfg = context.model_config or {}
        self.scorer = Scorer.from_parquet(
            Path(context.artifacts["ids"]),
            Path(context.artifacts["model_dir"]),
            max_candidates=cfg.get("max_candidates", MAX_CANDIDATES),
        )

    # No type hints on model_input on purpose: MLflow would turn them into a schema that
    # cannot express nested per-request records.
    def predict(self, context, model_input, params=None):
        """Scores per request: DataFrame with one ``scores`` list per input record.

        Raises:
            MlflowException: ``INVALID_PARAMETER_VALUE`` for a bad request, naming it.
        """
        try:
            requests = _requests(model_input)
        except ValueError as exc:
            raise _bad_request(str(exc)) from None
        scores = []
        for i, r in enumerate(requests):
            try:
                s = self.scorer.score(
                    r["user_profile"],
                    r["history"],
                    r["candidate_item_ids"],
                    unknown=r["unknown"],
                    request_ts=r["request_ts"],
                )
            except ValueError as exc:
                prefix = f"request {i}: " if len(requests) > 1 else ""
                raise _bad_request(f"{prefix}{exc}") from None
            scores.append(_jsonable(s))
        return pd.DataFrame({"scores": scores})


# Behaviour keys besides the layout's item sequence fields (time_gap is computed from ts).
BEHAVIOUR_KEYS = ("action", "ts")


def request_signature(layout: FeatureLayout) -> ModelSignature:
    """The served model's signature: what the MLflow UI shows and ``mlflow models serve``
    enforces (module docstring, "Signature")."""
    profile = Object([Property(f, DataType.long, required=False) for f in layout.user_fields])
    keys = [f for f in layout.seq_fields if f not in SEQ_CONTEXT_FIELDS] + list(BEHAVIOUR_KEYS)
    behaviour = Object([Property(k, AnyType(), required=False) for k in dict.fromkeys(keys)])
    inputs = Schema(
        [
            ColSpec(profile, "user_profile"),
            ColSpec(Array(behaviour), "history", required=False),
            ColSpec(Array(DataType.long), "candidate_item_ids"),
            ColSpec(DataType.string, "request_ts", required=False),
            ColSpec(DataType.string, "unknown", required=False),
        ]
    )
    return ModelSignature(
        inputs=inputs, outputs=Schema([ColSpec(Array(DataType.double), "scores")])
    )


def model_signature(model_dir: Path) -> ModelSignature:
    """:func:`request_signature` of a trained model directory's layout."""
    return request_signature(FeatureLayout.load(Path(model_dir) / "layout.json"))


def _stage_model_dir(model_dir: Path, dest: Path) -> Path:
    """Copy only what serving needs (weights, config, layout, vocabularies)."""
    dest.mkdir(parents=True)
    for name in MODEL_FILES:
        shutil.copy2(model_dir / name, dest / name)
    shutil.copytree(model_dir / "vocab", dest / "vocab")
    return dest


def _stage_ids(ids_path: Path, model_dir: Path, dest: Path) -> Path:
    """The ID table as the model's artifact, with the weights' sha256 in its own metadata.

    Refuses IDs of other weights, or with no hash on record (an export without its manifest),
    here rather than at serving time. An export (no ``tarq`` metadata of its own) is rewritten
    with the hash its manifest records, so the artifact proves its pairing by itself.
    """
    Scorer.from_parquet(Path(ids_path), Path(model_dir))
    table = pq.read_table(ids_path)
    meta = dict(table.schema.metadata or {})
    if META_KEY not in meta:
        (_, sha), *_ = ids_model_sha256(Path(ids_path), table)
        meta[META_KEY] = json.dumps({"model_sha256": sha}).encode()
        pq.write_table(table.replace_schema_metadata(meta), dest, compression="zstd")
    else:
        shutil.copy2(ids_path, dest)
    return dest


@contextlib.contextmanager
def staged_artifacts(model_dir: Path, ids_path: Path) -> Iterator[dict[str, str]]:
    """The pyfunc's artifacts staged in a temporary folder: ``{"model_dir", "ids"}``."""
    with tempfile.TemporaryDirectory() as tmp:
        staged = _stage_model_dir(Path(model_dir), Path(tmp) / "model_dir")
        ids = _stage_ids(Path(ids_path), Path(model_dir), Path(tmp) / IDS_ARTIFACT)
        yield {"model_dir": str(staged), "ids": str(ids)}


def model_config(max_candidates: int | None = MAX_CANDIDATES) -> dict[str, Any]:
    """The pyfunc's model config (``max_candidates``: None for no cap)."""
    return {"max_candidates": max_candidates}


def save_scorer_model(
    path: Path,
    model_dir: Path,
    ids_path: Path,
    max_candidates: int | None = MAX_CANDIDATES,
    signature: bool = False,
) -> Path:
    """Write a self-contained pyfunc model directory (``mlflow.pyfunc.load_model``-able).

    Args:
        path: new directory for the MLflow model.
        model_dir: trained TARQ model directory.
        ids_path: ``ids.parquet`` or a published Parquet export (its manifest beside it) of
            the same model's IDs.
        max_candidates: the served model's cap on candidates per request.
        signature: save :func:`model_signature` with it, as the registered model is logged
            (MLflow then enforces it before ``predict``); without one every check is the
            Scorer's.
    """
    with staged_artifacts(model_dir, ids_path) as artifacts:
        mlflow.pyfunc.save_model(
            path=str(path),
            python_model=str(MODEL_CODE),
            artifacts=artifacts,
            model_config=model_config(max_candidates),
            signature=model_signature(model_dir) if signature else None,
            pip_requirements=_pip_requirements(),
        )
    return Path(path)


def log_scorer_model(
    name: str,
    model_dir: Path,
    ids_path: Path,
    registered_model_name: str | None = None,
    max_candidates: int | None = MAX_CANDIDATES,
) -> Any:
    """``mlflow.pyfunc.log_model`` of the scorer in the active run; returns its ModelInfo."""
    with staged_artifacts(model_dir, ids_path) as artifacts:
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(MODEL_CODE),
            artifacts=artifacts,
            model_config=model_config(max_candidates),
            pip_requirements=_pip_requirements(),
            registered_model_name=registered_model_name,
        )


def check_model_code(local_path: Path) -> None:
    """Refuse a saved model that is not this package's models-from-code scorer, unchanged.

    Raises:
        ValueError: the MLmodel names a pickled python model or another loader, or the saved
            model code differs from :data:`MODEL_CODE` and from every :data:`LEGACY_MODEL_CODE_SHA256`.
    """
    from mlflow.models import Model

    flavor = Model.load(str(local_path)).flavors.get("python_function") or {}
    code = flavor.get("model_code_path")
    if "python_model" in flavor or not code:
        raise ValueError(
            f"{local_path}: not a models-from-code scorer (MLmodel names "
            f"{flavor.get('python_model') or 'no model code'}); refused to load, "
            "nothing was unpickled"
        )
    saved = Path(local_path) / Path(code).name
    data = saved.read_bytes() if saved.is_file() else None
    if data is None or (
        data != MODEL_CODE.read_bytes()
        and hashlib.sha256(data).hexdigest() not in LEGACY_MODEL_CODE_SHA256
    ):
        raise ValueError(
            f"{saved}: the saved model code differs from {MODEL_CODE.name} of the "
            "installed tarq (and from every earlier release's); refused to load"
        )


def alias_parts(model_uri: str) -> tuple[str, str] | None:
    """(registered model name, alias) of ``models:/<name>@<alias>``; None for any other URI."""
    match = re.fullmatch(r"models:/([^/@]+)@([^/@]+)", model_uri)
    return None if match is None else (match.group(1), match.group(2))


def load_scorer_model(model_uri: str, max_candidates: int | None = None) -> Any:
    """``mlflow.pyfunc.load_model`` of a scorer after :func:`check_model_code`, with pickle
    deserialization switched off for the load.

    Args:
        model_uri: e.g. ``models:/tarq@champion``, ``runs:/<id>/model`` or a local folder.
        max_candidates: overrides the saved cap when given.
    """
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
    check_model_code(local)
    config = None if max_candidates is None else model_config(max_candidates)
    key = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"
    before = os.environ.get(key)
    os.environ[key] = "false"
    try:
        return mlflow.pyfunc.load_model(str(local), model_config=config)
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before
