"""Load a script of the repository (benchmarks/, scripts/) as a module by its path: they are
run as ``python benchmarks/<name>.py``, not imported from a package."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def load_script(rel_path: str, name: str) -> ModuleType:
    """The module of ``REPO / rel_path``, registered as ``name`` in ``sys.modules`` (its
    dataclasses and pickles look their module up there)."""
    spec = importlib.util.spec_from_file_location(name, REPO / rel_path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod
