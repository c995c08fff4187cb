"""Serving faults (issue 11, items 6 and 12): a section of ``tests/test_faults.py``.

Planted or edited pickles in a registered model are never executed; semantic IDs of one
model with the weights of another are refused (``Scorer.from_parquet``, saving and loading the
pyfunc); bad serving input — float/string/bool ids, a null profile, NaT, behaviours after the
request, too many candidates — is refused with a clear error naming the field, a 400 from the
scoring server, and nothing is scored.
"""

from __future__ import annotations

import datetime as dt
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.test_serving import USER, make_served

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """tests/test_serving.py's tiny trained and published model (see ``make_served``)."""
    return make_served(tmp_path_factory.mktemp("serve"))


class _Evil:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def _ids_parquet(served: dict) -> Path:
    return served["export"].parent.parent / "ids" / "ids.parquet"


def _altered_weights(model_dir: Path, dst: Path) -> Path:
    """A copy of the model with well-formed but different weights."""
    import torch

    shutil.copytree(model_dir, dst)
    state = torch.load(dst / "model.pt", weights_only=True)
    key = next(iter(state))
    state[key] = state[key] + 1
    torch.save(state, dst / "model.pt")
    return dst


def _request(served: dict, **changes: Any) -> dict[str, Any]:
    ids = served["items"].column("item_id").to_numpy()
    req = {"user_profile": {"user_id": USER, "gender": 1}, "history": served["history"][-5:],
           "candidate_item_ids": [int(i) for i in ids[:4]],
           "request_ts": served["request_ts"].isoformat()}
    return {**req, **changes}


@pytest.fixture
def registry(tmp_path: Path) -> Any:
    """A fresh MLflow SQLite store with its artifacts under tmp_path; restored after."""
    import mlflow

    before = mlflow.get_tracking_uri()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    exp = mlflow.create_experiment("serving-faults",
                                   artifact_location=(tmp_path / "artifacts").as_uri())
    try:
        yield exp
    finally:
        mlflow.set_tracking_uri(before)
        mlflow.set_registry_uri(before)


def test_a_planted_pickle_in_the_registered_model_is_never_executed(
        served: dict, registry: str, tmp_path: Path) -> None:
    import mlflow
    import pandas as pd
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from flows.tracking import log_pyfunc, request_example

    marker = tmp_path / "pwned"
    samples = served["export"].parent.parent / "samples"
    with mlflow.start_run(experiment_id=registry) as run:
        pass
    uri = log_pyfunc(run.info.run_id, served["model_dir"], _ids_parquet(served), samples)
    mv = mlflow.register_model(uri, "tarq")
    c = MlflowClient()
    c.set_registered_model_alias("tarq", "champion", mv.version)
    # The stored model holds no pickle at all; its loader runs the package's model code.
    art_root = tmp_path / "artifacts"
    saved = [p for p in art_root.rglob("*") if p.is_file()]
    assert not [p for p in saved if p.suffix in (".pkl", ".pickle", ".cloudpickle")], saved
    (mlmodel_path,) = [p for p in saved if p.name == "MLmodel"]
    model_dir = mlmodel_path.parent
    assert "model_code_path" in mlmodel_path.read_text()

    # A python_model.pkl planted in the registered model's folder is never read.
    (model_dir / "python_model.pkl").write_bytes(pickle.dumps(_Evil(marker)))
    req = request_example(samples)
    plain = mlflow.pyfunc.load_model("models:/tarq@champion")
    assert not marker.exists(), "the planted pickle ran on load"

    from tarq.serving_pyfunc import MODEL_CODE, load_scorer_model

    code = model_dir / MODEL_CODE.name
    for model in (plain, load_scorer_model("models:/tarq@champion")):
        out = model.predict(pd.DataFrame([req]))
        assert len(out["scores"][0]) == len(req["candidate_item_ids"])
        # The registered signature does not coerce a float id into an integer one either.
        with pytest.raises(MlflowException, match="Can not safely convert float64 to int64"):
            model.predict(pd.DataFrame([{**req, "candidate_item_ids": [1.9]}]))
    assert not marker.exists()

    # An MLmodel edited to load that pickle: load_scorer_model refuses before any unpickling.
    mlmodel = (model_dir / "MLmodel").read_text()
    edited = mlmodel.replace("loader_module: mlflow.pyfunc.loaders.code_model",
                             "loader_module: mlflow.pyfunc.model\n    python_model: "
                             "python_model.pkl")
    assert edited != mlmodel
    (model_dir / "MLmodel").write_text(edited)
    with pytest.raises(ValueError, match=r"not a models-from-code scorer.*nothing was unpickled"):
        load_scorer_model("models:/tarq@champion")
    (model_dir / "MLmodel").write_text(mlmodel)
    # Edited model code: refused too.
    code.write_text(code.read_text() + f"\nimport os; os.system('touch {marker}')\n")
    with pytest.raises(ValueError, match="saved model code differs"):
        load_scorer_model("models:/tarq@champion")
    assert not marker.exists()


def test_ids_of_other_weights_or_of_no_known_weights_are_refused(
        served: dict, tmp_path: Path) -> None:
    import mlflow

    from tarq.serving import Scorer
    from tarq.serving_pyfunc import save_scorer_model

    ids = _ids_parquet(served)
    altered = _altered_weights(served["model_dir"], tmp_path / "altered")
    # IDs of model A (ids.parquet metadata, or the export's manifest) with weights of model B.
    for path in (ids, served["export"]):
        with pytest.raises(ValueError, match=r"was assigned by another model .* than "
                                             r".*altered/model\.pt"):
            Scorer.from_parquet(path, altered)
        assert Scorer.from_parquet(path, served["model_dir"]).n_items == len(served["items"])

    from tarq.serving import ModelMismatchError
    # An export without its manifest (or beside a manifest of other bytes) proves nothing.
    bare = tmp_path / "bare" / served["export"].name
    bare.parent.mkdir()
    shutil.copy(served["export"], bare)
    with pytest.raises(ModelMismatchError, match="records no model sha256"):
        Scorer.from_parquet(bare, served["model_dir"])
    manifest = served["export"].with_name(f"{served['export'].stem}.manifest.json")
    shutil.copy(manifest, bare.with_name(manifest.name))
    bare.write_bytes(bare.read_bytes())  # same bytes: the manifest applies
    assert Scorer.from_parquet(bare, served["model_dir"]).n_items == len(served["items"])
    shutil.copy(ids, bare)  # other bytes than the manifest's: ignored, and ids.parquet's own
    assert Scorer.from_parquet(bare, served["model_dir"]).n_items  # metadata proves the pair
    assert Scorer.from_parquet(tmp_path / "bare" / served["export"].name, served["model_dir"],
                               allow_unverified=True).n_items
    with pytest.raises(ModelMismatchError, match="another model"):
        Scorer.from_parquet(ids, served["model_dir"], model_sha256="0" * 64)

    # Saving the pyfunc refuses the mismatch and writes nothing.
    with pytest.raises(ModelMismatchError, match="another model"):
        save_scorer_model(tmp_path / "mixed", altered, ids)
    assert not (tmp_path / "mixed").exists()
    # Weights swapped inside a saved pyfunc (from an export): its load refuses them.
    path = save_scorer_model(tmp_path / "pyfunc", served["model_dir"], served["export"])
    shutil.copy(altered / "model.pt", path / "artifacts" / "model_dir" / "model.pt")
    with pytest.raises(Exception, match="was assigned by another model"):
        mlflow.pyfunc.load_model(str(path))


@pytest.fixture(scope="module")
def pyfunc(served: dict, tmp_path_factory: pytest.TempPathFactory) -> Any:
    import mlflow

    from tarq.serving_pyfunc import save_scorer_model

    path = save_scorer_model(tmp_path_factory.mktemp("pyfunc") / "m", served["model_dir"],
                             served["export"])
    # The cap is the model's config (default 10,000); a load may set another.
    return mlflow.pyfunc.load_model(str(path), model_config={"max_candidates": 50})


def _bad_requests(served: dict) -> list[tuple[dict[str, Any], str]]:
    import pandas as pd

    hist = [dict(h) for h in served["history"][-5:]]
    # One second after the request: leakage, not a behaviour "under a minute" old.
    later = [*hist[:-1], {**hist[-1], "ts": served["request_ts"] + dt.timedelta(seconds=1)}]
    nat_ts = [*hist[:-1], {**hist[-1], "ts": np.datetime64("NaT")}]
    none_ts = [*hist[:-1], {**hist[-1], "ts": None}]

    cands = _request(served)["candidate_item_ids"]
    return [
        (_request(served, candidate_item_ids=[*cands, 1.9]),
         r"candidate_item_ids\[4\] must be an integer id, got 1\.9"),
        (_request(served, candidate_item_ids=["1"]),
         r"candidate_item_ids\[0\] must be an integer id, got '1'"),
        (_request(served, candidate_item_ids=[cands[0], True]),
         r"candidate_item_ids\[1\] must be an integer id, got True"),
        (_request(served, user_profile={"user_id": 1.9}),
         r"user_profile\['user_id'\] must be an integer id or null, got 1\.9"),
        (_request(served, user_profile=None), r"user_profile is null: send \{\}"),
        (_request(served, history=later), r"history\[4\]\['ts'\] = .* is after request_ts"),
        (_request(served, history=nat_ts), r"history\[4\]\['ts'\] must be a timestamp, got NaT"),
        (_request(served, history=none_ts), r"history\[4\] lacks 'ts'"),
        (_request(served, request_ts=pd.NaT), "request_ts is NaT"),
        (_request(served, candidate_item_ids=[cands[0]] * 51),
         "candidate_item_ids has 51 ids, more than the cap of 50 per request"),
    ]


def test_bad_serving_input_is_refused_by_name_never_coerced(served: dict, pyfunc: Any) -> None:
    import pandas as pd
    from mlflow.exceptions import MlflowException

    good = pyfunc.predict([_request(served)])
    assert len(good["scores"][0]) == 4
    for req, message in _bad_requests(served):
        with pytest.raises(MlflowException, match=message) as err:
            pyfunc.predict([_request(served), req])
        assert err.value.error_code == "INVALID_PARAMETER_VALUE"
        assert str(err.value).startswith("request 1: ") or "request 1 " in str(err.value)
    # The same through a DataFrame, as `mlflow models serve` hands it over.
    with pytest.raises(MlflowException, match=r"candidate_item_ids\[0\] must be an integer"):
        pyfunc.predict(pd.DataFrame([_request(served, candidate_item_ids=[1.9, 2.5])]))
    assert pyfunc.metadata.flavors["python_function"]["config"]["max_candidates"] == 50


def test_bad_serving_input_is_a_400_from_the_scoring_server(served: dict, pyfunc: Any) -> None:
    from fastapi.testclient import TestClient
    from mlflow.pyfunc import scoring_server

    def _request_json(**changes: Any) -> dict[str, Any]:
        req = _request(served, **changes)
        return {**req, "history": [{**h, "ts": h["ts"].isoformat()} for h in req["history"]]}

    client = TestClient(scoring_server.init(pyfunc))
    ok = client.post("/invocations", json={"dataframe_records": [_request_json()]})
    assert ok.status_code == 200, ok.text
    ids = _request(served)["candidate_item_ids"]
    for bad, message in (
            ({"candidate_item_ids": [ids[0], 1.9]}, "candidate_item_ids[1] must be an integer id"),
            ({"candidate_item_ids": [True]}, "candidate_item_ids[0] must be an integer id, got "
                                             "True"),
            ({"user_profile": None}, "user_profile is null"),
            ({"candidate_item_ids": ids * 20}, "more than the cap of 50")):
        res = client.post("/invocations", json={"dataframe_records": [_request_json(**bad)]})
        assert res.status_code == 400, (bad, res.status_code, res.text)
        assert message in res.json()["message"], res.text
