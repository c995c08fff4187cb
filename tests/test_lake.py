"""The lake layout (tarq.data.lake): logs as day-partitioned Parquet, read through views.

Same demo seed → same samples and fingerprints as the single-file layout; validation and
quarantine work on it; loads append files and never rewrite one; a load that fails after
its flush leaves only orphans; a ``memory://`` lake works in one process; clear refusals.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
import uuid
from pathlib import Path

import duckdb
import pandas as pd
import pytest

import tarq.data.demo as demo_module
import tarq.data.importers as importers
import tarq.data.lake as lake_module
from tarq.cli import main
from tarq.data.demo import append_day, generate
from tarq.data.importers import run_import
from tarq.data.lake import LakeError, init_lake, lake_url, orphans, status
from tarq.data.samples import build_samples
from tarq.store.sqlfiles import render
from tarq.store.warehouse import open_db, raw_fingerprints
from tarq.validation import validate

from .conftest import TINY_SEED, TINY_START

RUN_DATE = TINY_START + dt.timedelta(days=8)  # tests on the tiny window's last day
LAST_DAY = RUN_DATE - dt.timedelta(days=1)


def _lake_files(db: Path) -> list[tuple[str, str]]:
    with open_db(db, read_only=True) as con:
        return con.execute("SELECT table_name, path FROM lake_files ORDER BY path").fetchall()


def _sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _tiny_lake(root: Path) -> Path:
    """The tiny demo preset (the ``tiny_db`` window) generated into a lake warehouse at
    ``root`` (``tiny.duckdb`` and ``lake/``); under a second."""
    root.mkdir(parents=True, exist_ok=True)
    db = root / "tiny.duckdb"
    generate(db, preset="tiny", seed=TINY_SEED, start_date=TINY_START, lake=str(root / "lake"))
    return db


@pytest.fixture(scope="module")
def lake_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:func:`_tiny_lake`, read-only for the tests (a test that writes makes its own)."""
    return _tiny_lake(tmp_path_factory.mktemp("lake_db"))


def _csv_impressions(folder: Path, rows: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    header = "user_id,item_id,ts,clicked,exposed,position,request_id"
    (folder / "impressions.csv").write_text("\n".join([header, *rows]) + "\n")
    return folder


def test_same_seed_gives_the_same_tables_and_samples_as_one_file(
    tiny_db: Path, lake_db: Path, tmp_path: Path
) -> None:
    with open_db(tiny_db, read_only=True) as con:
        single = raw_fingerprints(con), raw_fingerprints(con, by_load=True)
    with open_db(lake_db, read_only=True) as con:
        assert (raw_fingerprints(con), raw_fingerprints(con, by_load=True)) == single
        kinds = dict(
            con.execute(
                "SELECT table_name, table_type FROM information_schema.tables "
                "WHERE table_name IN ('impressions', 'behaviors')"
            ).fetchall()
        )
        assert kinds == {"impressions": "VIEW", "behaviors": "VIEW"}
        assert con.execute("SELECT count(*) FROM lake_landing_impressions").fetchone()[0] == 0
    days = {(t, p.split("/day=")[1].split("/")[0]) for t, p in _lake_files(lake_db)}
    assert len(days) == 16  # 8 days x 2 tables, one folder each
    a = build_samples(tiny_db, RUN_DATE, tmp_path / "single", seq_len=8)
    b = build_samples(lake_db, RUN_DATE, tmp_path / "lake", seq_len=8)
    assert a.fingerprint == b.fingerprint
    assert a.train_rows == b.train_rows > 0


def test_validation_quarantines_a_bad_row_and_samples_exclude_it(tmp_path: Path) -> None:
    db = _tiny_lake(tmp_path / "w")
    lake = str(tmp_path / "w" / "lake")
    with open_db(db, read_only=True) as con:
        user, item = con.execute("SELECT min(user_id), min(item_id) FROM items, users").fetchone()
    ts = f"{LAST_DAY} 12:00:00"
    src = _csv_impressions(
        tmp_path / "src",
        [
            f"{user},{item},{ts},true,false,1,bad-clicked-unexposed",  # validation's
            f"{user},{item},,false,true,1,bad-no-ts",  # the importer's (null key)
            f"{user},{item},{ts},false,true,2,good",
        ],
    )
    report = run_import("parquet", src, db, lake=lake)
    assert report.totals["rows_loaded"] == 2 and report.totals["rows_rejected"] == 1
    with open_db(db, read_only=True) as con:
        bad = con.execute(
            "SELECT row_id FROM impressions WHERE request_id = 'bad-clicked-unexposed'"
        ).fetchall()
        assert len(bad) == 1
        bad_id = bad[0][0]
        landed = con.execute(
            "SELECT path FROM lake_files WHERE load_id = $l", {"l": report.load_id}
        ).fetchall()
        assert [p.split("/")[-2] for (p,) in landed] == [f"day={LAST_DAY}"]
        assert all(p.startswith(lake + "/impressions/") for (p,) in landed)
    before = _fingerprints_of(db)
    result = validate(db, RUN_DATE, docs_dir=tmp_path / "docs")
    checks = {f"{c['table']}.{c['name']}": c for c in result.to_dict()["checks"]}
    assert checks["impressions.schema"]["status"] == "passed"
    assert checks["behaviors.schema"]["status"] == "passed"
    with open_db(db) as con:  # opened for writing: ensure_schema leaves the views alone
        kinds = con.execute(
            "SELECT table_name, table_type FROM information_schema.tables "
            "WHERE table_name IN ('impressions', 'behaviors') ORDER BY table_name"
        ).fetchall()
    assert kinds == [("behaviors", "VIEW"), ("impressions", "VIEW")]
    with open_db(db, read_only=True) as con:
        flagged = con.execute(
            "SELECT row_id, check_name FROM quarantine_impressions WHERE stage = 'validation'"
        ).fetchall()
        assert (bad_id, "clicked_implies_exposed") in flagged
        rejected = con.execute(
            "SELECT check_name, source_line FROM quarantine_impressions WHERE stage = 'import'"
        ).fetchall()
        assert rejected == [("null_key", 3)]
    assert _fingerprints_of(db) == before  # quarantine never touches the raw rows
    out = tmp_path / "samples"
    build = build_samples(db, RUN_DATE, out, seq_len=8)
    rows = pd.concat([pd.read_parquet(out / "train"), pd.read_parquet(out / "test")])
    assert bad_id not in set(rows.row_id)
    assert build.excluded_rows >= 1


def _fingerprints_of(db: Path) -> dict:
    with open_db(db, read_only=True) as con:
        return raw_fingerprints(con)


def test_loads_append_files_and_never_rewrite_one(tiny_db: Path, tmp_path: Path) -> None:
    db = _tiny_lake(tmp_path / "w")
    lake = tmp_path / "w" / "lake"
    before = {p: _sha256(p) for _, p in _lake_files(db)}
    appended = append_day(db)
    assert appended["first_day"] == str(RUN_DATE)
    user, item = 1, 1
    run_import(
        "parquet",
        _csv_impressions(tmp_path / "src", [f"{user},{item},{LAST_DAY} 09:00:00,false,true,0,x"]),
        db,
    )
    after = _lake_files(db)
    assert set(before) < {p for _, p in after}
    assert {p: _sha256(p) for p in before} == before
    new = [p for _, p in after if p not in before]
    assert any(f"day={RUN_DATE}" in p for p in new) and any(f"day={LAST_DAY}" in p for p in new)
    assert all(Path(p).is_file() and p.startswith(str(lake)) for p in new)
    # The same next day on the single-file layout gives the same rows.
    single = tmp_path / "single.duckdb"
    shutil.copy(tiny_db, single)
    append_day(single)
    with open_db(single, read_only=True) as a, open_db(db, read_only=True) as b:
        q = "SELECT * FROM {} WHERE ts >= $d ORDER BY row_id"
        day = {"d": dt.datetime.combine(RUN_DATE, dt.time())}
        for t in ("impressions", "behaviors"):
            assert a.execute(q.format(t), day).fetchall() == b.execute(q.format(t), day).fetchall()
        assert orphans(b) == []


def test_a_load_failing_after_its_flush_leaves_only_orphans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db, lake = tmp_path / "w.duckdb", tmp_path / "lake"
    src = _csv_impressions(tmp_path / "src", ["1,2,2026-10-01 10:00:00,true,true,0,r1"])
    run_import("parquet", src, db, lake=str(lake))
    committed = _lake_files(db)
    before = _fingerprints_of(db)

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("injected: the load dies after its flush, before its commit")

    later = _csv_impressions(tmp_path / "src2", ["1,2,2026-10-02 10:00:00,true,true,0,r2"])
    with monkeypatch.context() as m:
        m.setattr(importers, "record_load", fail)
        with pytest.raises(RuntimeError, match="injected"):
            run_import("parquet", later, db)
    assert _lake_files(db) == committed
    assert _fingerprints_of(db) == before
    with open_db(db, read_only=True) as con:
        left = orphans(con)
        assert (
            con.execute("SELECT count(*) FROM impressions WHERE request_id = 'r2'").fetchone()[0]
            == 0
        )
    assert len(left) == 1 and "/impressions/day=2026-10-02/import-" in left[0]
    assert Path(left[0]).is_file()  # kept: never deleted automatically
    # A retry of the same rows commits beside the orphan, which stays unread.
    run_import("parquet", later, db)
    with open_db(db, read_only=True) as con:
        assert orphans(con) == left
        assert con.execute("SELECT count(*) FROM impressions").fetchone()[0] == 2
    st = status(db)
    assert st["orphans"] == left and st["tables"]["impressions"]["rows"] == 2


def test_a_file_is_never_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A demo day's load id is the same on a retry; the token in the file names keeps the
    retry clear of the failed try's orphans, and should two flushes ever pick the same name,
    the second is refused rather than replacing the first's file."""
    db = _tiny_lake(tmp_path / "w")
    fixed = uuid.UUID(int=7)

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("injected: the day dies after its flush")

    with monkeypatch.context() as m:
        m.setattr(lake_module.uuid, "uuid4", lambda: fixed)
        m.setattr(demo_module, "_record_load", fail)
        with pytest.raises(RuntimeError, match="injected"):
            append_day(db)
    with open_db(db, read_only=True) as con:
        left = orphans(con)
    assert len(left) == 2 and all(f"-{fixed.hex[:8]}_0.parquet" in p for p in left)
    digests = {p: _sha256(p) for p in left}
    with monkeypatch.context() as m:
        m.setattr(lake_module.uuid, "uuid4", lambda: fixed)
        with pytest.raises(LakeError, match="already exists: lake files are never replaced"):
            append_day(db)
    assert {p: _sha256(p) for p in left} == digests
    with open_db(db, read_only=True) as con:
        staged = [p for p in orphans(con) if p not in left]
    assert len(staged) == 1 and "/_staging/" in staged[0]  # the refused file, left in staging
    report = append_day(db)  # a fresh token: committed beside the orphans
    with open_db(db, read_only=True) as con:
        assert orphans(con) == sorted([*left, *staged])
        n = con.execute(
            "SELECT count(*) FROM impressions WHERE load_id = $l", {"l": report["load_id"]}
        ).fetchone()[0]
    assert n == report["rows"]["impressions"] > 0


def test_a_memory_lake_works_in_one_process(tmp_path: Path) -> None:
    url = f"memory://tarq-test-{uuid.uuid4().hex[:8]}/lake"
    db = tmp_path / "w.duckdb"
    generate(db, preset="tiny", seed=TINY_SEED, start_date=TINY_START, lake=url)
    src = _csv_impressions(tmp_path / "src", [f"1,1,{LAST_DAY} 09:00:00,false,true,0,mem"])
    run_import("parquet", src, db, lake=url)
    with open_db(db, read_only=True) as con:
        stored = lake_url(con)
        assert stored is not None and stored.startswith("memory://")
        paths = [r[0] for r in con.execute("SELECT path FROM lake_files").fetchall()]
        assert paths and all(p.startswith(stored + "/") for p in paths)
        assert (
            con.execute("SELECT count(*) FROM impressions WHERE request_id = 'mem'").fetchone()[0]
            == 1
        )
    build = build_samples(db, RUN_DATE, tmp_path / "samples", seq_len=8)
    assert build.train_rows > 0
    assert status(db)["tables"]["behaviors"]["days"] == 8


def test_refusals_name_the_problem(
    tiny_db: Path, lake_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    single = tmp_path / "single.duckdb"
    shutil.copy(tiny_db, single)
    with pytest.raises(LakeError, match=r"already holds 24,004 impressions and 53,017 behaviours"):
        init_lake(single, tmp_path / "lake")
    src = _csv_impressions(tmp_path / "src", ["1,1,2026-10-02 10:00:00,false,true,0,x"])
    assert main(["import", "parquet", str(src), "--db", str(single), "--lake", "x"]) == 2
    assert "holds 24,004 impressions" in capsys.readouterr().err
    with open_db(single, read_only=True) as con:
        assert lake_url(con) is None
    db = _tiny_lake(tmp_path / "w")
    other = tmp_path / "elsewhere"
    with pytest.raises(LakeError, match=r"keeps its logs in the lake .*/lake, not .*elsewhere"):
        run_import("parquet", src, db, lake=str(other))
    assert main(["demo-data", "--next-day", "--db", str(db), "--lake", str(other)]) == 2
    assert "keeps its logs in the lake" in capsys.readouterr().err
    # A lake that already holds another warehouse's files.
    with pytest.raises(LakeError, match="already holds impressions files"):
        init_lake(tmp_path / "new.duckdb", lake_db.parent / "lake")
    # Lake paths are written into the views' stored text: no quote, glob or brace gets in.
    for bad in ("it's", "l*ke", "lake{x}"):
        with pytest.raises(LakeError, match="holds characters a lake path cannot"):
            init_lake(tmp_path / "bad.duckdb", tmp_path / bad)
    with pytest.raises(ValueError, match="invalid path"):
        render("lake/view_impressions", paths={"files": ["/x/a.parquet'); DROP TABLE items; --"]})
    fresh, url = tmp_path / "fresh.duckdb", tmp_path / "fresh-lake"
    assert main(["lake", "init", str(url), "--db", str(fresh)]) == 0
    assert main(["lake", "init", str(url), "--db", str(fresh)]) == 0  # the same lake: a no-op
    assert f"kept in the lake {url}" in capsys.readouterr().out
    assert main(["lake", "status", "--db", str(single)]) == 2
    assert "single file (no lake)" in capsys.readouterr().err
    assert main(["lake", "status", "--db", str(lake_db)]) == 0
    out = capsys.readouterr().out
    assert "impressions: 8 files, 24,004 rows" in out and "orphans" in out
    with duckdb.connect(str(db)) as con, pytest.raises(duckdb.Error):
        con.execute("INSERT INTO impressions (user_id) VALUES (1)")  # a view: no row goes in
