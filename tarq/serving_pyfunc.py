"""Where models saved before tarq's packages by concern import their pyfunc from.

Their models-from-code file runs ``from tarq.serving_pyfunc import TarqScorerModel`` on load
(:data:`tarq.serving.pyfunc.LEGACY_MODEL_CODE_SHA256`); new code imports
:mod:`tarq.serving.pyfunc`. Kept for one release after the move (2026-12-05).
"""

from tarq.serving.pyfunc import TarqScorerModel

__all__ = ["TarqScorerModel"]
