"""The data steps on Dask (flows/dask_steps.py): the same samples and semantic IDs as the
single-process path, on the ``small`` demo preset, with a 2-worker local Dask cluster and the
jobs as Prefect tasks (the session's Prefect test harness)."""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_validation_mapped import _comparable, _rows, _validate, dirty_db  # noqa: F401

SMALL_START = dt.date(2026, 10, 1)  # small: 22 days, 2026-10-01 .. 2026-10-22
RUN_DATE = "2026-10-22"  # test day 2026-10-21, 19 training days
ROWS_PER_BUCKET = 60_000  # ~200k rows of the window → 4 user buckets, 4 mapped jobs
CHUNK = 2_048  # 10k catalog items → 5 mapped chunks


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files(folder: Path) -> dict[str, str]:
    """Relative path → sha256 of every file under ``folder``."""
    return {str(p.relative_to(folder)): _sha(p) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tarq.data.demo import generate

    path = tmp_path_factory.mktemp("small") / "small.duckdb"
    generate(path, preset="small", seed=7, start_date=SMALL_START)
    return path


@pytest.fixture(scope="module")
def dask_cluster(prefect_api: str) -> Iterator[str]:
    """A local Dask cluster of 2 single-threaded worker processes, as ``tarq-daily --dask``
    starts one (flows.dask_steps.cluster)."""
    from flows.dask_steps import cluster

    with cluster(None, True, 2) as address:
        assert address is not None
        yield address


def _in_flow(fn: Callable[[], Any], address: str) -> Any:
    """Run ``fn()`` as the body of a flow whose tasks go to the Dask cluster at ``address``
    (what the subflows of flows/dask_steps.py are)."""
    from prefect import flow

    from flows.dask_steps import _runner

    @flow(name="dask-test")
    def body() -> Any:
        return fn()

    return body.with_options(task_runner=_runner(address))()


def _samples_on_dask(db: Path, out: Path, address: str, **kw: Any) -> Any:
    """The samples of RUN_DATE in 4 user buckets, each job a Prefect task on the cluster."""
    from flows.dask_steps import prefect_mapper
    from tarq.data.samples import build_samples

    return _in_flow(
        lambda: build_samples(
            db, RUN_DATE, out, rows_per_bucket=ROWS_PER_BUCKET, mapper=prefect_mapper, **kw
        ),
        address,
    )


@pytest.fixture(scope="module")
def built(small_db: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """The single-process samples of RUN_DATE in 4 user buckets: (warehouse copy, report)."""
    from tarq.data.samples import build_samples

    root = tmp_path_factory.mktemp("here")
    db = root / "w.duckdb"
    shutil.copy(small_db, db)
    report = build_samples(db, RUN_DATE, root / "samples", rows_per_bucket=ROWS_PER_BUCKET)
    assert report.buckets == 4
    return db, report


def test_samples_on_dask_are_the_single_process_samples(
    built: tuple[Path, Any], dask_cluster: str, tmp_path: Path
) -> None:
    from flows import dask_steps

    db, here = built
    res = dask_steps.worker_resources(dask_cluster)
    assert res.threads == 1 and res.memory_limit is not None
    # Shuffled first, as the flow builds on Dask (jobs of ~300k rows: several per table).
    there = _samples_on_dask(
        db,
        tmp_path / "there",
        dask_cluster,
        threads=res.threads,
        memory_limit=res.memory_limit,
        shuffle_rows=300_000,
    )
    assert there.buckets == 4
    assert there.fingerprint == here.fingerprint
    assert (there.rows, there.per_day, there.vocab_sizes) == (
        here.rows,
        here.per_day,
        here.vocab_sizes,
    )
    for part in ("train", "test", "vocab", "layout.json"):
        a, b = tmp_path / "there" / part, db.parent / "samples" / part
        assert (_files(a) if a.is_dir() else _sha(a)) == (_files(b) if b.is_dir() else _sha(b))
    # No staging is left behind, on either side.
    assert not list((tmp_path / "there").glob(".*"))


def test_samples_on_dask_from_a_lake_are_the_same_samples(
    built: tuple[Path, Any], dask_cluster: str, tmp_path: Path
) -> None:
    """The same demo logs kept in the lake layout (Parquet by day), built on the cluster: the
    workers read the lake through the warehouse's views; the samples are the same files."""
    from tarq.data.demo import generate

    _, here = built
    db = tmp_path / "lake.duckdb"
    generate(db, preset="small", seed=7, start_date=SMALL_START, lake=str(tmp_path / "lake"))
    assert list((tmp_path / "lake" / "impressions").glob("day=*/*.parquet"))
    there = _samples_on_dask(db, tmp_path / "there", dask_cluster, threads=1)
    assert there.fingerprint == here.fingerprint and there.rows == here.rows


@pytest.fixture(scope="module")
def model_dir(built: tuple[Path, Any]) -> Path:
    """A TARQ model trained for a few steps on the samples (enough to have codebooks)."""
    import torch

    from tarq.model import ModelConfig
    from tarq.training.train import TrainConfig, train

    db, _ = built
    torch.set_num_threads(1)
    out = db.parent / "model"
    train(
        db.parent / "samples",
        "tarq",
        out,
        ModelConfig.from_dict(
            {"emb_dim": 8, "d_model": 16, "n_heads": 2, "codebook_size": 8, "n_codebooks": 3}
        ),
        TrainConfig(epochs=1, batch_size=256, max_steps_per_epoch=10, patience=0, threads=1),
        progress=False,
    )
    return out


def test_ids_on_dask_are_the_single_process_ids(
    built: tuple[Path, Any], model_dir: Path, dask_cluster: str, tmp_path: Path
) -> None:
    from flows import dask_steps
    from tarq.ids.semantic_ids import IDS_FILE, assign_ids

    db, _ = built
    kw = {"chunk_size": CHUNK, "progress": False, "max_collision_rate": None}
    here = assign_ids(db, model_dir, tmp_path / "here", **kw)
    there = _in_flow(
        lambda: assign_ids(
            db, model_dir, tmp_path / "there", mapper=dask_steps.prefect_mapper, threads=1, **kw
        ),
        dask_cluster,
    )
    assert here.items_assigned == there.items_assigned == 10_000
    assert _sha(tmp_path / "there" / IDS_FILE) == _sha(tmp_path / "here" / IDS_FILE)
    a, b = here.to_dict(), there.to_dict()
    a.pop("timing"), b.pop("timing")
    assert a == b
    assert not list((tmp_path / "there").glob(".*"))


def test_a_chunk_that_changed_since_it_was_planned_is_refused(
    built: tuple[Path, Any], model_dir: Path, tmp_path: Path
) -> None:
    from tarq.ids.semantic_ids import CatalogChunk, SemanticIdError, assign_chunk

    db, _ = built
    job = CatalogChunk(
        db_path=str(db),
        model_dir=str(model_dir),
        part_path=str(tmp_path / "part.parquet"),
        lo=1,
        hi=100,
        rows=99,
    )
    with pytest.raises(SemanticIdError, match="catalog changed while IDs were assigned"):
        assign_chunk(job)
    ok = assign_chunk(CatalogChunk(**{**job.__dict__, "rows": 100}))
    assert ok.catalog()[0].tolist() == list(range(1, 101))


def test_validation_on_dask_is_the_single_process_validation(
    dirty_db: Path,  # noqa: F811  (the fixture of test_validation_mapped, imported above)
    dask_cluster: str,
    tmp_path: Path,
) -> None:
    """Bad rows on several days, one chunk (one job) per day: the verdicts, counts and the
    quarantine are the same when the jobs run as Prefect tasks on the cluster."""
    from flows import dask_steps

    here, there = tmp_path / "here.duckdb", tmp_path / "there.duckdb"
    shutil.copy(dirty_db, here)
    shutil.copy(dirty_db, there)
    serial = _validate(here, tmp_path / "gx-here")
    mapped = _in_flow(
        lambda: _validate(there, tmp_path / "gx-there", dask_steps.prefect_mapper), dask_cluster
    )
    assert sum(serial.quarantined.values()) > 0
    assert _comparable(mapped) == _comparable(serial)
    assert _rows(there) == _rows(here)


def test_the_command_line_sets_the_dask_parameters() -> None:
    from flows.tarq_daily import DailyParams, _parser, params_from_args

    assert DailyParams().dask is False and DailyParams().dask_address is None
    p = params_from_args(_parser().parse_args(["--dask", "--dask-workers", "3"]))
    assert (p.dask, p.dask_workers, p.dask_address) == (True, 3, None)
    p = params_from_args(_parser().parse_args(["--dask-address", "tcp://10.0.0.5:8786"]))
    assert (p.dask, p.dask_address) == (False, "tcp://10.0.0.5:8786")  # the address implies it
    with pytest.raises(ValueError, match="dask_workers"):
        params_from_args(_parser().parse_args(["--dask", "--dask-workers", "0"]))
