"""Suite-wide fixtures: one torch thread per test, and the tiny demo warehouse generated once.

The per-test time limit is ``timeout`` in ``[tool.pytest.ini_options]`` (pytest-timeout).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

TINY_SEED = 7


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Each test starts with ``torch.set_num_threads(1)``; the previous count is restored after.

    ``tarq.train.train`` sets the thread count from its ``TrainConfig.threads`` (all cores
    when None) and never restores it, so without this a test's count leaked into the next
    (test_model.py: 37 s after a many-thread test, 2.7 s with one thread). Tests that pass
    ``threads`` explicitly still get what they ask for inside ``train``.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny demo preset (``generate(path, preset="tiny", seed=7)``: logs 2026-10-01 ..
    2026-10-08), generated once per session.

    Read-only for everyone: a test that writes to a warehouse (imports, validation's
    quarantine, samples records, publication, a flow run) copies this file first.
    """
    from tarq.data.demo import generate

    path = tmp_path_factory.mktemp("tiny_db") / "tiny.duckdb"
    generate(path, preset="tiny", seed=TINY_SEED)
    return path
