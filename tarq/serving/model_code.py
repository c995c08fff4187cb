"""The registered pyfunc's model code (MLflow "models from code").

MLflow copies this file into the saved model and runs it on load instead of unpickling a
``python_model.pkl``: the model is rebuilt from the installed ``tarq`` package, and its weights
and ID table are read by :meth:`tarq.serving.pyfunc.TarqScorerModel.load_context` (weights-only
``torch.load``, Parquet). :func:`tarq.serving.pyfunc.load_scorer_model` refuses a saved copy of
this file that differs from this one.
"""

import mlflow

from tarq.serving.pyfunc import TarqScorerModel

mlflow.models.set_model(TarqScorerModel())
