"""Serving: score a request's candidates with TARQ from the published semantic-ID table.

The scorer (:class:`Scorer`, ``scorer``) and its parts — the fused one-request user side
(``user_kernels``, numba) and the torch lean one it hands long histories to (``user_side``),
the fused candidate kernels (``kernels``), the item id → row index
(``item_index``) — the MLflow pyfunc around it (``pyfunc``, its models-from-code file
``model_code``), the lean HTTP endpoint (``server``), following the champion (``follow``) and
the server processes for tests and benchmarks (``processes``).

The scorer's public names are re-exported here (``from tarq.serving import Scorer``). May
import the shared modules, :mod:`tarq.data`, :mod:`tarq.model` and :mod:`tarq.ids`' readers;
nothing imports serving but the command line, the flows and the online evaluation.
"""

from tarq.serving.scorer import *  # noqa: F403 (the scorer's public names, listed in __all__)
from tarq.serving.scorer import __all__  # noqa: F401
