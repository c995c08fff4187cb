"""The parts of the browser check of the UIs. ``scripts/ui_check.py`` is the command (its
arguments, the run, the summary and the report): it puts ``scripts/`` on ``sys.path`` to import
this package, which puts the repo there (``tarq``, ``flows``).

- :mod:`uicheck.formats`: metric values and run durations as the MLflow UI prints them;
- :mod:`uicheck.processes`: the system Chromium, free ports, the ``mlflow ui`` and Prefect
  server processes;
- :mod:`uicheck.facts`: what the MLflow and Prefect stores hold, which the pages must show;
- :mod:`uicheck.browser`: the browser, :class:`~uicheck.browser.Checker` (one page: open,
  assert, screenshot) and the helpers that act on a page as a person does;
- :mod:`uicheck.mlflow_pages`, :mod:`uicheck.prefect_pages`: the pages checked, in order.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # tarq and flows, when run from a checkout
    sys.path.insert(0, str(REPO))


class Missing(RuntimeError):
    """Something the check needs is not there (exit 2); the message says what to run."""
