"""Suite-wide fixtures: one torch thread per test, the tiny demo warehouse generated once,
and the public datasets (MovieLens-100k, the Taobao sample) beside the checkout.

The per-test time limit is ``timeout`` in ``[tool.pytest.ini_options]`` (pytest-timeout).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

TINY_SEED = 7
TINY_START = dt.date(2026, 10, 1)  # the tiny_db window: 2026-10-01 .. 2026-10-08
# Where the public datasets are: TARQ_SHARED_DATA, else ../shared/data beside the checkout.
# Tests marked shared_data skip when the folder is absent, unless TARQ_SHARED_DATA names it:
# then a missing folder fails them (CI sets it, so a lost dataset cannot pass as a skip).
SHARED_DATA_ENV = "TARQ_SHARED_DATA"


def shared_data_dir() -> Path:
    """The public-datasets folder (it may not exist; see :func:`shared_data`)."""
    env = os.environ.get(SHARED_DATA_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The public datasets folder; skips the test when absent (fails when TARQ_SHARED_DATA
    names a folder that is not there)."""
    path = shared_data_dir()
    if not path.is_dir():
        if os.environ.get(SHARED_DATA_ENV):
            pytest.fail(f"{SHARED_DATA_ENV}={path} does not exist")
        pytest.skip(f"public datasets not present at {path} (set {SHARED_DATA_ENV})")
    return path


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Each test starts with ``torch.set_num_threads(1)``; the previous count is restored after.

    ``tarq.training.train.train`` sets the thread count from its ``TrainConfig.threads`` (all cores
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
    """The tiny demo preset (``generate(path, preset="tiny", seed=7, start_date=2026-10-01)``:
    logs 2026-10-01 .. 2026-10-08, a fixed window), generated once per session.

    Read-only for everyone: a test that writes to a warehouse (imports, validation's
    quarantine, samples records, publication, a flow run) copies this file first.
    """
    from tarq.data.demo import generate

    path = tmp_path_factory.mktemp("tiny_db") / "tiny.duckdb"
    generate(path, preset="tiny", seed=TINY_SEED, start_date=TINY_START)
    return path


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """One Prefect test harness (a temporary local API and database) for the whole session;
    yields its API URL. Flow tests tell their runs apart by flow-run id, never by order."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    from tarq.runtime.telemetry import disable_telemetry

    disable_telemetry()
    with prefect_test_harness():
        yield PREFECT_API_URL.value()
