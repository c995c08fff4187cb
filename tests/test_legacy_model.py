"""A scorer saved before tarq's packages by concern (its model code was
``tarq/serving_model_code.py``, importing ``tarq.serving_pyfunc``) still loads and scores."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from tarq.serving import Scorer
from tarq.serving.pyfunc import LEGACY_MODEL_CODE_SHA256, load_scorer_model, save_scorer_model
from tests.test_serving import USER, make_served

# The saved model code of every release before the move, byte for byte.
LEGACY_CODE = '''"""The registered pyfunc's model code (MLflow "models from code").

MLflow copies this file into the saved model and runs it on load instead of unpickling a
``python_model.pkl``: the model is rebuilt from the installed ``tarq`` package, and its weights
and ID table are read by :meth:`tarq.serving_pyfunc.TarqScorerModel.load_context` (weights-only
``torch.load``, Parquet). :func:`tarq.serving_pyfunc.load_scorer_model` refuses a saved copy of
this file that differs from this one.
"""

import mlflow

from tarq.serving_pyfunc import TarqScorerModel

mlflow.models.set_model(TarqScorerModel())
'''


def _as_saved_before_the_move(path: Path) -> None:
    """Turn a scorer saved now into what the earlier releases saved: the model code file
    ``serving_model_code.py`` with the old content, named so in ``MLmodel``."""
    (path / "model_code.py").unlink()
    (path / "serving_model_code.py").write_text(LEGACY_CODE, encoding="utf-8")
    mlmodel = (path / "MLmodel").read_text()
    edited = re.sub(
        r"model_code_path: \S*model_code\.py", "model_code_path: serving_model_code.py", mlmodel
    )
    assert edited != mlmodel
    (path / "MLmodel").write_text(edited)


def test_a_scorer_saved_before_the_packages_loads_and_scores(tmp_path: Path) -> None:
    import mlflow

    assert hashlib.sha256(LEGACY_CODE.encode()).hexdigest() in LEGACY_MODEL_CODE_SHA256
    served = make_served(tmp_path / "w")
    path = save_scorer_model(tmp_path / "old", served["model_dir"], served["export"])
    _as_saved_before_the_move(path)
    want = Scorer.from_parquet(served["export"], served["model_dir"])
    ids = served["items"].column("item_id").to_numpy()[:20]
    for model in (load_scorer_model(str(path)), mlflow.pyfunc.load_model(str(path))):
        scorer = model.unwrap_python_model().scorer
        np.testing.assert_array_equal(
            scorer.score({"user_id": USER}, [], ids), want.score({"user_id": USER}, [], ids)
        )
    # Only the exact old bytes pass: an edited copy is refused.
    (path / "serving_model_code.py").write_text(LEGACY_CODE + "\nimport os\n", encoding="utf-8")
    with pytest.raises(ValueError, match="saved model code differs"):
        load_scorer_model(str(path))
