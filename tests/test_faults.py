"""Fault injection: every fault ends in a clear refusal or a clean recovery, and nothing is lost.

Each test injects one fault into real components (a DuckDB file, Great Expectations, the
MLflow SQLite store, Prefect under ``prefect_test_harness``, FAISS, torch) and asserts the
outcome *and* a "nothing lost" snapshot (:func:`snapshot`): raw-table row counts and
checksums per load unchanged (``sql/integrity/raw_fingerprint.sql``), the quarantine holding
exactly the bad rows, the served ID-table version and the ``champion`` alias unchanged, no
registered version or publication half made.

Faults: corrupt rows of every validation class and malformed files through the importer;
SIGKILL during training; a crash between writing an ID-table version and switching to it;
an unreachable or locked MLflow store; two runs of one date at once; tampered or foreign
model files; hostile strings where SQL could be injected.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tarq import sqlfiles
from tarq.cli import main as tarq_main
from tarq.warehouse import open_db, quarantine_rows, raw_fingerprints
from tests.procs import crash_and_resume
from tests.test_flow import TINY_MODEL, copy_flow_env, tiny_params

REPO = Path(__file__).resolve().parents[1]
# The tiny demo logs span 2026-10-01 .. 2026-10-08; run date D checks and tests on D - 1.
LAST_DAY = dt.date(2026, 10, 8)
D1, D2, D3 = "2026-10-09", "2026-10-08", "2026-10-07"
HOSTILE_DATE = "2026-10-09'; DROP TABLE impressions; --"


# ----------------------------------------------------------------------------- snapshot


@dataclass(frozen=True)
class Snapshot:
    """Everything a fault must not lose or half-change."""

    raw: dict[tuple[str, str | None], tuple[int, int]]  # (table, load_id) → (rows, checksum)
    quarantine: tuple[tuple[Any, ...], ...]
    records: tuple[int, ...]  # loads, validation runs, sample builds
    served: int | None
    publications: tuple[tuple[int, str, str], ...]  # (version, status, run date)
    champion: str | None
    versions: tuple[tuple[str, str | None], ...]  # (registered version, run date)


def _quarantine_key(r: dict[str, Any]) -> tuple[Any, ...]:
    return (r["table_name"], r["stage"], r["check_name"], r["row_id"], r["source_line"], r["key"])


def snapshot(db: Path, store: str | None = None) -> Snapshot:
    """The "nothing lost" state of a warehouse (and of an MLflow store, when given)."""
    from tarq.publish import list_versions, served_version

    with open_db(db, read_only=True) as con:
        raw = raw_fingerprints(con, by_load=True)
        quarantine = tuple(sorted((_quarantine_key(r) for r in quarantine_rows(con)), key=repr))
        records = tuple(int(v) for v in sqlfiles.run(con, "integrity/run_records").fetchone())
        has_registry = bool(con.execute(
            "SELECT count(*) FROM information_schema.tables "
            "WHERE table_name = 'semantic_id_versions'").fetchone()[0])
    pubs = tuple(sorted((int(v["version"]), v["status"], str(v["run_date"]))
                        for v in list_versions(db))) if has_registry else ()
    champion, versions = None, ()
    if store is not None:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        c = MlflowClient(store, store)
        try:
            champion = str(c.get_model_version_by_alias("tarq", "champion").version)
        except MlflowException:
            champion = None
        versions = tuple(sorted((str(v.version), v.tags.get("tarq.run_date"))
                                for v in c.search_model_versions("name = 'tarq'")))
    return Snapshot(raw, quarantine, records, served_version(db), pubs, champion, versions)


def new_loads(before: Snapshot, after: Snapshot) -> dict[tuple[str, str | None], int]:
    """Rows per (table, load) that appeared; asserts every load that was there is unchanged."""
    for key, value in before.raw.items():
        assert after.raw.get(key) == value, f"raw rows of {key} changed: {value} → {after.raw.get(key)}"
    return {k: v[0] for k, v in after.raw.items() if k not in before.raw}


# tiny_db (tests/conftest.py): the tiny demo preset (8 days), generated once per session;
# tests use copies.


@pytest.fixture
def db(tiny_db: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "w.duckdb"
    shutil.copy(tiny_db, copy)
    return copy


def _ids(db: Path) -> dict[str, Any]:
    """Known and unknown ids, and one clean impression of the last day to repeat."""
    with open_db(db, read_only=True) as con:
        u1, u_max = con.execute("SELECT min(user_id), max(user_id) FROM users").fetchone()
        i1, i_max = con.execute("SELECT min(item_id), max(item_id) FROM items").fetchone()
        row = con.execute(
            "SELECT user_id, item_id, ts, clicked, exposed, position, request_id FROM impressions "
            "WHERE ts::DATE = $d AND exposed AND request_id IS NOT NULL AND position IS NOT NULL "
            "ORDER BY row_id LIMIT 1", {"d": LAST_DAY}).fetchone()
    return {"u1": u1, "u_new": u_max + 5000, "u_unknown": u_max + 1000, "i1": i1,
            "i_new": i_max + 5000, "i_unknown": i_max + 1000, "existing": row}


def _csv(path: Path, header: str, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    return path


def _load_id(db: Path, before: Snapshot) -> str:
    with open_db(db, read_only=True) as con:
        loads = [r[0] for r in con.execute("SELECT load_id FROM loads").fetchall()]
    known = {k[1] for k in before.raw}
    (load,) = [x for x in loads if x not in known]
    return load


# ----------------------------------------------------------------------------- importer path

IMP_HEADER = "user_id,item_id,ts,clicked,exposed,position,request_id"
BEH_HEADER = "user_id,ts,item_id,category_id,brand_id,action"


def test_every_corruption_class_through_the_importer_is_quarantined_exactly(
        db: Path, tmp_path: Path) -> None:
    """Bad rows of every class in a day's logs, imported as files: the importer rejects what
    does not parse, validation flags what parses but is wrong, and the quarantine holds
    exactly those rows; the rows that were there before are untouched."""
    from tarq.data.importers import run_import
    from tarq.validation import validate

    ids = _ids(db)
    u1, i1 = ids["u1"], ids["i1"]
    t = f"{LAST_DAY} 09:00:00"
    ex = ids["existing"]
    # Line numbers in the file are the quarantine's source_line (the header is line 1).
    imp = [
        f"{u1},{i1},{t},false,true,1,fault-ok-1",                       # 2 good
        f"{u1},{i1},{LAST_DAY} 09:01:00,true,true,0,fault-ok-2",        # 3 good click
        f",{i1},{t},false,true,1,fault-null-user",                      # 4 null_key
        f"{u1},,{t},false,true,1,fault-null-item",                      # 5 null_key
        f"{u1},{i1},,false,true,1,fault-null-ts",                       # 6 null_key
        f"{u1},{i1},{t},,true,1,fault-null-clicked",                    # 7 null_key
        f"{u1},{i1},{t},false,,1,fault-null-exposed",                   # 8 null_key
        f"abc,{i1},{t},false,true,1,fault-bad-user",                    # 9 type_cast
        f"{u1},12.5,{t},false,true,1,fault-bad-item",                   # 10 type_cast
        f"{u1},{i1},yesterday,false,true,1,fault-bad-ts",               # 11 type_cast
        f"{u1},{i1},{t},maybe,true,1,fault-bad-clicked",                # 12 type_cast
        f"{u1},{i1},{t},false,true,x1,fault-bad-position",              # 13 type_cast
        f"{u1},{i1},{LAST_DAY} 09:10:00,true,false,,fault-unexposed-click",  # 14 → validation
        f"{u1},{i1},{LAST_DAY} 09:11:00,false,true,-2,fault-negative-position",  # 15
        f"{u1},{i1},2099-01-01 00:00:00,false,true,1,fault-future",     # 16
        f"{u1},{i1},{LAST_DAY} 09:30:00,false,true,3,fault-dup",        # 17 kept
        f"{u1},{i1},{LAST_DAY} 09:30:00,false,true,3,fault-dup",        # 18 duplicate
        f"{ex[0]},{ex[1]},{ex[2]},{str(ex[3]).lower()},true,{ex[5]},{ex[6]}",  # 19 repeat
        f"{u1},{ids['i_unknown']},{LAST_DAY} 09:40:00,false,true,1,fault-unknown-item",  # 20
        f"{ids['u_unknown']},{i1},{LAST_DAY} 09:41:00,false,true,1,fault-unknown-user",  # 21
    ]
    beh = [
        f"{u1},{LAST_DAY} 10:00:00,{i1},1,2,pv",                        # 2 good
        f",{LAST_DAY} 10:00:00,{i1},1,2,pv",                            # 3 null_key
        f"{u1},,{i1},1,2,pv",                                           # 4 null_key
        f"{u1},{LAST_DAY} 10:00:00,{i1},1,2,",                          # 5 null_key
        f"{u1},noon,{i1},1,2,pv",                                       # 6 type_cast
        f"{u1},{LAST_DAY} 10:00:00,x,1,2,pv",                           # 7 type_cast
        f"{u1},{LAST_DAY} 10:05:00,{i1},1,2,click",                     # 8 → validation
        f"{u1},2099-01-01 00:00:00,{i1},1,2,pv",                        # 9 → validation
    ]
    src = tmp_path / "day"
    _csv(src / "impressions.csv", IMP_HEADER, imp)
    _csv(src / "behaviors.csv", BEH_HEADER, beh)
    _csv(src / "items.csv", "item_id,category_id,brand_id,price", [
        f"{ids['i_new']},1,2,9.5",      # 2 new item
        ",1,2,3.0",                     # 3 null_key
        f"{i1},9,9,9.0",                # 4 exists: skipped, never replaced
        f"{ids['i_new']},3,3,3.0",      # 5 duplicate_id
        f"{ids['i_new'] + 1},1,2,cheap",  # 6 type_cast
    ])
    _csv(src / "users.csv", "user_id", [str(ids["u_new"]), "u-1"])  # 3: type_cast

    before = snapshot(db)
    assert before.quarantine == ()
    report = run_import("parquet", src, db)
    load = report.load_id
    got = {(Path(f.file).name, f.rows_loaded, f.rows_rejected, f.rows_skipped_existing)
           for f in report.files if f.status == "loaded"}
    assert got == {("items.csv", 1, 3, 1), ("users.csv", 1, 1, 0),
                   ("impressions.csv", 10, 10, 0), ("behaviors.csv", 3, 5, 0)}
    imp_report = next(f for f in report.files if f.table == "impressions")
    # Unknown ids get catalog stubs (referential integrity), not a quarantine entry.
    assert (imp_report.stub_items, imp_report.stub_users) == (1, 1)

    val = validate(db, D1, docs_dir=tmp_path / "gx")
    assert val.success, val.to_text()
    after = snapshot(db)
    assert new_loads(before, after) == {("impressions", load): 10, ("behaviors", load): 3,
                                        ("items", load): 2, ("users", load): 2}

    with open_db(db, read_only=True) as con:
        by_request = con.execute(
            "SELECT request_id, list(row_id ORDER BY row_id) FROM impressions "
            "WHERE load_id = $l GROUP BY request_id", {"l": load}).fetchall()
        bad_beh = dict(con.execute(
            "SELECT CASE WHEN action = 'click' THEN 'action_in_set' ELSE 'ts_not_in_future' END, "
            "row_id FROM behaviors WHERE load_id = $l AND (action = 'click' OR year(ts) = 2099)",
            {"l": load}).fetchall())
    rid = dict(by_request)
    flagged_imp = {
        ("clicked_implies_exposed", rid["fault-unexposed-click"][0]),
        ("position_non_negative", rid["fault-negative-position"][0]),
        ("ts_not_in_future", rid["fault-future"][0]),
        ("duplicate_impression", rid["fault-dup"][1]),   # the later copy; the first is kept
        ("duplicate_impression", rid[ex[6]][0]),          # the repeat of an existing row
    }
    expected = {
        *(("impressions", "import", "null_key", None, line, None) for line in range(4, 9)),
        *(("impressions", "import", "type_cast", None, line, None) for line in range(9, 14)),
        *(("behaviors", "import", "null_key", None, line, None) for line in (3, 4, 5)),
        *(("behaviors", "import", "type_cast", None, line, None) for line in (6, 7)),
        ("items", "import", "null_key", None, 3, None),
        ("items", "import", "duplicate_id", None, 5, ids["i_new"]),
        ("items", "import", "type_cast", None, 6, ids["i_new"] + 1),
        ("users", "import", "type_cast", None, 3, None),
        *(("impressions", "validation", check, row, None, None) for check, row in flagged_imp),
        *(("behaviors", "validation", check, row, None, None) for check, row in bad_beh.items()),
    }
    assert set(after.quarantine) == expected
    assert len(after.quarantine) == len(expected)  # and nothing twice
    assert val.quarantined == {"items": 0, "users": 0, "impressions": 5, "behaviors": 2}
    assert after.records == (before.records[0] + 1, before.records[1] + 1, before.records[2])


def test_an_imported_collapsed_day_fails_validation_and_quarantines_only_its_bad_rows(
        db: Path, tmp_path: Path) -> None:
    """The table-level classes (volume, CTR, too many bad rows) through the importer: a new
    day of 30 impressions, none clicked, a third of them clicked-but-unexposed."""
    from tarq.data.importers import run_import
    from tarq.validation import validate

    ids = _ids(db)
    day = LAST_DAY + dt.timedelta(days=1)
    lines = []
    for k in range(30):
        clicked, exposed = ("true", "false") if k % 3 == 0 else ("false", "true")
        lines.append(f"{ids['u1']},{ids['i1']},{day} 10:{k:02d}:00,{clicked},{exposed},1,c-{k}")
    _csv(tmp_path / "src" / "impressions.csv", IMP_HEADER, lines)
    before = snapshot(db)
    load = run_import("parquet", tmp_path / "src", db).load_id
    report = validate(db, day + dt.timedelta(days=1), docs_dir=tmp_path / "gx")
    assert not report.success
    failed = {c.key for c in report.failed_checks}
    assert failed == {"impressions.volume", "impressions.ctr", "impressions.quarantined_share"}
    text = report.to_text()
    assert "20 impressions on 2026-10-09 is 0.01x the trailing median" in text
    assert "10 of 30 impressions on 2026-10-09 are quarantined (33.3%; allowed at most 5.0%)" in text
    after = snapshot(db)
    assert new_loads(before, after) == {("impressions", load): 30}
    with open_db(db, read_only=True) as con:
        bad = {r[0] for r in con.execute(
            "SELECT row_id FROM impressions WHERE load_id = $l AND clicked AND NOT exposed",
            {"l": load}).fetchall()}
    assert len(bad) == 10
    assert set(after.quarantine) == {("impressions", "validation", "clicked_implies_exposed",
                                      r, None, None) for r in bad}


def _truncated_parquet(path: Path) -> None:
    pq.write_table(pa.table({"user_id": [1, 2], "item_id": [3, 4], "ts": ["2026-10-08"] * 2,
                             "clicked": [True, False]}), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


MALFORMED = {
    # name: (file, writer(path, ids), pattern the error must match)
    "truncated_csv": (
        "impressions.csv",
        lambda p, i: p.write_text(
            f"{IMP_HEADER}\n{i['u1']},{i['i1']},{LAST_DAY} 10:00:00,false,true,1,r1\n"
            f"{i['u1']},{i['i1']},{LAST_DAY} 11:00:00,fal", encoding="utf-8"),
        r"impressions\.csv: line 3: expected 7 fields separated by comma, found 4 fields .*"
        r"no final newline: the file looks truncated"),
    "wrong_delimiter": (
        "impressions.csv",
        lambda p, i: p.write_text(
            f"{IMP_HEADER.replace(',', ';')}\n{i['u1']};{i['i1']};{LAST_DAY} 10:00:00;false;"
            "true;1;r1\n", encoding="utf-8"),
        r"impressions\.csv: line 1 \(header\) parses as a single column .*semicolon-separated"),
    "non_utf8_bytes": (
        "behaviors.csv",
        lambda p, i: p.write_bytes(
            f"{BEH_HEADER}\n{i['u1']},{LAST_DAY} 10:00:00,{i['i1']},1,2,pv\n".encode()
            + f"{i['u1']},{LAST_DAY} 10:01:00,{i['i1']},1,2,".encode() + b"p\xffv\n"),
        r"behaviors\.csv: line 3, column action: not valid utf-8 text"),
    "missing_column_csv": (
        "impressions.csv",
        lambda p, i: p.write_text(
            f"user_id,item_id,ts,exposed\n{i['u1']},{i['i1']},{LAST_DAY} 10:00:00,true\n",
            encoding="utf-8"),
        r"impressions\.csv: impressions CSV header lacks required column\(s\) clicked"),
    "missing_column_parquet": (
        "impressions.parquet",
        lambda p, i: pq.write_table(pa.table({"user_id": [i["u1"]], "item_id": [i["i1"]],
                                              "clicked": [True]}), p),
        r"impressions\.parquet: impressions lacks required column\(s\) ts"),
    "truncated_parquet": (
        "impressions.parquet",
        lambda p, i: _truncated_parquet(p),
        r"impressions\.parquet: cannot be read as Parquet"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_files_are_refused_with_file_and_line_and_nothing_is_kept(
        case: str, db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    name, write, pattern = MALFORMED[case]
    ids = _ids(db)
    src = tmp_path / "src"
    # A good file in the same run: the run is one transaction, so it must not be kept either.
    _csv(src / "users.csv", "user_id", [str(ids["u_new"])])
    write(src / name, ids)
    before = snapshot(db)
    rc = tarq_main(["import", "parquet", str(src), "--db", str(db)])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("tarq import: error: ") and str(src / name) in err
    assert "Traceback" not in err
    assert re.search(pattern, err), err
    assert snapshot(db) == before


def test_a_file_of_wrong_types_goes_to_quarantine_row_by_row(
        db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Columns of the wrong type (a list where a timestamp belongs, a fraction for a boolean)
    are not a format error: every row is quarantined with the column named, nothing lands."""
    ids = _ids(db)
    src = tmp_path / "src"
    src.mkdir()
    pq.write_table(pa.table({"user_id": [ids["u1"]] * 3, "item_id": [ids["i1"]] * 3,
                             "ts": [[1, 2], [3], [4]], "clicked": [0.5, 1.0, 0.0]}),
                   src / "impressions.parquet")
    before = snapshot(db)
    assert tarq_main(["import", "parquet", str(src), "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "3 rejected rows are in quarantine_<table>" in out
    after = snapshot(db)
    assert new_loads(before, after) == {}
    assert set(after.quarantine) == {("impressions", "import", "type_cast", None, line, None)
                                     for line in (1, 2, 3)}
    with open_db(db, read_only=True) as con:
        reasons = [r[0] for r in con.execute(
            "SELECT reason FROM quarantine_impressions ORDER BY source_line").fetchall()]
    assert reasons[0] == "ts: '[1,2]' is not a timestamp; clicked: '0.5' is not a boolean"
    assert all(r.startswith("ts: ") for r in reasons)


# ----------------------------------------------------------------------------- SQL inputs


def test_hostile_sql_inputs_are_refused_or_bound_and_tables_stay_intact(
        db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import duckdb

    from flows.tarq_daily import DailyParams
    from flows.tarq_daily import main as daily_main
    from tarq.data.importers import SourceFormatError, run_import
    from tarq.dates import parse_date
    from tarq.warehouse import add_side_column, table_fingerprint

    before = snapshot(db)
    # Run dates: refused before any SQL runs, by every entry point.
    for argv in (["validate", "--db", str(db), "--run-date", HOSTILE_DATE],
                 ["build-samples", "--db", str(db), "--run-date", HOSTILE_DATE,
                  "--out", str(tmp_path / "s")]):
        assert tarq_main(argv) == 2
        err = capsys.readouterr().err
        assert "is not a date of the form YYYY-MM-DD" in err and "Traceback" not in err
    assert daily_main(["--db", str(db), "--run-date", HOSTILE_DATE, "--work-dir",
                       str(tmp_path / "w"), "--models", "tarq,tt"]) == 2
    assert "not YYYY-MM-DD, 'today' or 'latest'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not YYYY-MM-DD"):
        DailyParams(run_date="2026-13-45")
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        parse_date("2026-10-09 OR 1=1")

    # Identifiers (the only text ever put into SQL) accept plain names only.
    hostile_ident = 'items"; DROP TABLE impressions; --'
    with open_db(db) as con:
        for call in (lambda: table_fingerprint(con, hostile_ident),
                     lambda: table_fingerprint(con, "quarantine_x; DROP TABLE items; --"),
                     lambda: add_side_column(con, "users", hostile_ident),
                     lambda: add_side_column(con, hostile_ident, "segment"),
                     lambda: sqlfiles.render("publish/read_version", table=hostile_ident),
                     lambda: sqlfiles.run(con, "publish/export", {"path": "x"},
                                          table=hostile_ident)):
            with pytest.raises(ValueError, match=r"invalid SQL identifier|side features live|"
                                                 r"unknown table"):
                call()
    with pytest.raises(ValueError, match="invalid SQL statement name"):
        sqlfiles.load_sql("../../etc/passwd")

    # A side-feature column named like SQL, declared through the importer's feature spec.
    spec_src = tmp_path / "spec"
    _csv(spec_src / "users.csv", "user_id,seg; DROP TABLE items; --", ["90001,1"])
    (spec_src / "feature_spec.json").write_text(
        json.dumps({"users": {"seg; DROP TABLE items; --": "categorical"}}))
    with pytest.raises(SourceFormatError, match="is not a plain name"):
        run_import("parquet", spec_src, db)
    assert snapshot(db) == before

    # Values and paths are bound, never spliced: a hostile source directory, data values,
    # a hostile warehouse file name and output folder all work as plain data.
    ids = _ids(db)
    value = "x'); DROP TABLE impressions; --"
    src = tmp_path / "src'; DROP TABLE items; --"
    _csv(src / "impressions.csv", IMP_HEADER,
         [f"{ids['u1']},{ids['i1']},{LAST_DAY} 12:00:00,false,true,1,{value}"])
    load = run_import("parquet", src, db).load_id
    hostile_db = tmp_path / "w'; DROP TABLE items; --.duckdb"
    shutil.copy(db, hostile_db)
    out = tmp_path / "samples'; DROP TABLE impressions; --"
    assert tarq_main(["build-samples", "--db", str(hostile_db), "--run-date", D1,
                      "--out", str(out), "--seq-len", "5"]) == 0
    assert (out / "meta.json").is_file()
    with duckdb.connect(str(db), read_only=True) as con:
        stored = con.execute("SELECT request_id FROM impressions WHERE load_id = $l",
                             {"l": load}).fetchall()
    assert stored == [(value,)]
    after = snapshot(db)
    assert new_loads(before, after) == {("impressions", load): 1}
    assert after.quarantine == before.quarantine
    hostile_after = snapshot(hostile_db)
    assert hostile_after.raw == after.raw
    assert hostile_after.records[2] == after.records[2] + 1  # its sample build was recorded


# ----------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def samples(tiny_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tarq.data.samples import build_samples

    root = tmp_path_factory.mktemp("faults_samples")
    db = root / "w.duckdb"
    shutil.copy(tiny_db, db)
    build_samples(db, D1, root / "s", seq_len=10)
    return root / "s"


def _tree_sha(root: Path) -> dict[str, str]:
    from tarq.semantic_ids import file_sha256

    return {str(p.relative_to(root)): file_sha256(p) for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.mark.slow
def test_sigkill_during_training_resumes_from_the_last_checkpoint(
        samples: Path, tmp_path: Path, tiny_db: Path) -> None:
    from tarq.train import CHECKPOINT, load_trained

    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"model": TINY_MODEL, "train": {
        "epochs": 3, "batch_size": 32, "max_steps_per_epoch": 150, "eval_batch_size": 4096,
        "patience": 0, "threads": 1}}))
    out = tmp_path / "model"
    cmd = [sys.executable, "-m", "tarq.train", "--samples", str(samples), "--model", "tarq",
           "--out", str(out), "--config", str(cfg)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    data_before, raw_before = _tree_sha(samples), snapshot(tiny_db)

    # The worker dies mid-run; the rerun's progress bars start after the checkpoint.
    done, history_at_kill, rerun = crash_and_resume(cmd, out / CHECKPOINT, env)
    for epoch in range(1, done + 2):
        assert f"tarq epoch {epoch}/3" not in rerun.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [0, 1, 2]
    assert metrics["epochs_run"] == 3
    assert metrics["history"][: done + 1] == history_at_kill  # kept, not retrained
    _, cfg_out = load_trained(out)
    assert cfg_out["model_name"] == "tarq" and metrics["test"]["auc"] > 0
    assert _tree_sha(samples) == data_before and snapshot(tiny_db) == raw_before


# ----------------------------------------------------------------------------- the daily flow


@pytest.fixture(scope="module")
def flow_baseline(tmp_path_factory: pytest.TempPathFactory, tiny_db: Path) -> Any:
    """A warehouse and MLflow store with one published, promoted run date (D1), made once
    under the module's Prefect test harness. Read only: tests take a copy (:func:`flow_env`)."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    from tarq.telemetry import disable_telemetry

    disable_telemetry()
    root = tmp_path_factory.mktemp("faults_flow")
    db = root / "w.duckdb"
    shutil.copy(tiny_db, db)
    env = {"root": root, "db": db, "store": f"sqlite:///{root / 'mlflow' / 'mlflow.db'}",
           "work": root / "work"}
    with prefect_test_harness():
        env["api_url"] = PREFECT_API_URL.value()
        state = _run(env, run_date=D1)
        assert state.is_completed(), state.message
        yield env


@pytest.fixture
def flow_env(flow_baseline: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """This test's own copy of the baseline's warehouse, MLflow store and work dir (the
    MLflow artifacts stay shared), so no test sees what another one published or broke."""
    return copy_flow_env(flow_baseline, tmp_path / "env")


def _params(env: dict[str, Any], **over: Any) -> dict[str, Any]:
    # A wide champion tolerance keeps promotion deterministic after a few training steps;
    # short retry pauses keep the retries (still 2 per task) quick.
    p = tiny_params(env["db"], env["work"], env["store"], champion_tolerance=1.0,
                    retry_delay_s=0.2, tracking_timeout_s=0.5)
    p.update(over)
    return p


def _run(env: dict[str, Any], **over: Any):
    from flows.tarq_daily import DailyParams, tarq_daily

    return tarq_daily(DailyParams(**_params(env, **over)), return_state=True)


def _task_attempts(state) -> dict[str, int]:
    """Attempts per task run of a flow run (task run name → run_count)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    return {r.name: r.run_count for r in runs}


def _wait_running(n: int, since: dt.datetime, procs: list[subprocess.Popen],
                  timeout_s: float = 240) -> None:
    """Block until ``n`` flow runs started after ``since`` are Running on the API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterStartTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    flt = FlowRunFilter(start_time=FlowRunFilterStartTime(after_=since),
                        state=FlowRunFilterState(type=FlowRunFilterStateType(
                            any_=[StateType.RUNNING])))
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while len(client.read_flow_runs(flow_run_filter=flt)) < n:
            for proc in procs:
                assert proc.poll() is None, f"a run ended early (rc {proc.returncode})"
            assert time.monotonic() < deadline, f"{n} flow runs not running after {timeout_s}s"
            time.sleep(0.5)


def _day_runs(store: str, day: str) -> list[Any]:
    from mlflow.tracking import MlflowClient

    c = MlflowClient(store, store)
    exp = c.get_experiment_by_name("tarq-daily")
    return c.search_runs([exp.experiment_id],
                         f"tags.`tarq.kind` = 'daily' AND tags.`tarq.run_date` = '{day}'")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["unreachable", "locked"])
def test_mlflow_unreachable_or_locked_fails_clearly_after_retries_and_registers_nothing(
        flow_env: dict[str, Any], fault: str) -> None:
    env = flow_env
    before = snapshot(env["db"], env["store"])
    assert before.champion is not None and before.served == 1
    store_file = Path(env["store"].removeprefix("sqlite:///"))
    if fault == "unreachable":
        uri = f"http://127.0.0.1:{_closed_port()}"
        state = _run(env, run_date=D2, tracking_uri=uri)
        expected = f"MLflow tracking server {uri} is unreachable"
    else:
        holder = sqlite3.connect(store_file, isolation_level=None, timeout=0)
        holder.execute("BEGIN EXCLUSIVE")  # another process holds the store's write lock
        try:
            state = _run(env, run_date=D2)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        expected = f"MLflow tracking store {store_file} is locked or not writable"
    assert state.is_failed() and state.name == "TrackingUnavailable", state.message
    assert expected in state.message, state.message
    assert "after 3 attempts" in state.message
    assert "nothing was trained, registered or published" in state.message
    attempts = {k: v for k, v in _task_attempts(state).items() if k.startswith("mlflow-connect")}
    assert list(attempts.values()) == [3]  # one try and both retries
    assert snapshot(env["db"], env["store"]) == before
    assert not (env["work"] / D2).exists() and _day_runs(env["store"], D2) == []


@pytest.mark.slow
def test_a_registration_cut_off_before_its_alias_is_completed_by_the_retry(
        tmp_path: Path) -> None:
    """The store failed right after creating the version (the state that leaves behind, made
    with the real client): the register task's retry completes it, without a second version."""
    from flows import tracking

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = tracking.setup(store, "faults")
    c = tracking.client()
    run = c.create_run(exp)
    source = f"{run.info.artifact_uri}/model"
    c.create_registered_model(tracking.REGISTERED_MODEL)
    half = c.create_model_version(tracking.REGISTERED_MODEL, source, run_id=run.info.run_id,
                                  tags={tracking.DATE_TAG: D2})
    mv = tracking.register(source, run.info.run_id, D2, {"tarq.test_auc": "0.5"})
    assert str(mv.version) == str(half.version)
    assert str(c.get_model_version_by_alias("tarq", "challenger").version) == str(half.version)
    assert len(c.search_model_versions("name = 'tarq'")) == 1 and tracking.champion() is None


@pytest.mark.slow
def test_a_second_run_is_refused_while_another_holds_the_warehouse(
        flow_env: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    from flows.tarq_daily import EXIT_BUSY
    from flows.tarq_daily import main as daily_main
    from tarq.locking import exclusive_lock, warehouse_lock_path

    env = flow_env
    before = snapshot(env["db"], env["store"])
    lock = warehouse_lock_path(env["db"])
    with exclusive_lock(lock, info={"run_date": D2}):
        state = _run(env, run_date=D2, lock_wait_s=0.5)
        p = _params(env, lock_wait_s=0)
        rc = daily_main(["--db", str(env["db"]), "--run-date", D2, "--work-dir", str(env["work"]),
                         "--params", json.dumps({k: v for k, v in p.items()
                                                 if k not in ("db", "run_date", "work_dir")})])
    assert state.is_failed() and state.name == "AlreadyRunning", state.message
    assert f"another run holds {lock} (pid {os.getpid()}" in state.message
    assert "after waiting" in state.message and "nothing was changed" in state.message
    assert rc == EXIT_BUSY and "AlreadyRunning" in capsys.readouterr().err
    assert snapshot(env["db"], env["store"]) == before
    assert not (env["work"] / D2).exists() and _day_runs(env["store"], D2) == []


@pytest.mark.slow
def test_tampered_or_foreign_model_files_are_refused_never_unpickled(
        flow_env: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import mlflow
    import torch
    from mlflow.tracking import MlflowClient

    from flows.tracking import download_model_dir
    from tarq.evaluation import evaluate_model_dir
    from tarq.model import ModelConfig
    from tarq.semantic_ids import assign_ids
    from tarq.serving import Scorer
    from tarq.train import CHECKPOINT, TrainConfig, UntrustedModelError, load_trained, train

    env = flow_env
    before = snapshot(env["db"], env["store"])
    served_dir = env["work"] / D1 / "models" / "tarq"
    day_samples = env["work"] / D1 / "samples"
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple:
            return (os.system, (f"touch {marker}",))

    assert Scorer.from_paths(env["db"], served_dir).version == 1  # the genuine files serve

    # Foreign weights in a folder from anywhere: refused by weights-only loading everywhere.
    foreign = tmp_path / "foreign"
    shutil.copytree(served_dir, foreign)
    torch.save({"x": Evil()}, foreign / "model.pt")
    refused = r"model\.pt: refused to load: weights only loading refused it"
    for call in (lambda: load_trained(foreign),
                 lambda: evaluate_model_dir(foreign, day_samples),
                 lambda: Scorer.from_paths(env["db"], foreign, check_model=False),
                 lambda: assign_ids(env["db"], foreign, tmp_path / "ids", progress=False)):
        with pytest.raises(UntrustedModelError, match=refused):
            call()
    assert tarq_main(["assign-ids", "--db", str(env["db"]), "--model", str(foreign),
                      "--out", str(tmp_path / "ids2")]) == 2
    err = capsys.readouterr().err
    assert "refused to load" in err and "Traceback" not in err
    # A checkpoint to resume from, tampered: refused before any training step.
    ckpt_dir = tmp_path / "resume"
    (ckpt_dir / CHECKPOINT).parent.mkdir(parents=True)
    torch.save({"model_name": "tarq", "epoch": Evil()}, ckpt_dir / CHECKPOINT)
    with pytest.raises(UntrustedModelError, match=r"last\.pt: refused to load"):
        train(day_samples, "tarq", ckpt_dir, ModelConfig.from_dict(TINY_MODEL),
              TrainConfig(epochs=1, threads=1), progress=False)
    assert not (ckpt_dir / "model.pt").exists()

    # Well-formed but different weights: serving refuses them for the published table.
    altered = tmp_path / "altered"
    shutil.copytree(served_dir, altered)
    state = torch.load(altered / "model.pt", weights_only=True)
    key = next(iter(state))
    state[key] = state[key] + 1
    torch.save(state, altered / "model.pt")
    with pytest.raises(ValueError, match="assigned by another model"):
        Scorer.from_paths(env["db"], altered)

    # The champion's copy in the MLflow artifact store, tampered: what re-scoring it reads.
    c = MlflowClient(env["store"], env["store"])
    champ = c.get_model_version_by_alias("tarq", "champion")
    mlflow.set_tracking_uri(env["store"])
    stored = Path(c.get_run(champ.run_id).info.artifact_uri.removeprefix("file://"))
    target = stored / "model_dir" / "model.pt"
    original = target.read_bytes()
    try:
        torch.save({"x": Evil()}, target)
        fetched = download_model_dir(champ.run_id, tmp_path / "champion")
        with pytest.raises(UntrustedModelError, match=refused):
            evaluate_model_dir(fetched, day_samples)
    finally:
        target.write_bytes(original)
    assert not marker.exists()
    assert snapshot(env["db"], env["store"]) == before


@pytest.mark.slow
def test_crash_between_id_table_write_and_switch_then_the_rerun_publishes_once(
        flow_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from tarq.publish import CRASH_ENV

    env = flow_env
    before = snapshot(env["db"], env["store"])
    monkeypatch.setenv(CRASH_ENV, "before_switch")
    state = _run(env, run_date=D2)
    assert state.is_failed() and "injected crash at 'before_switch'" in state.message
    assert [v for k, v in _task_attempts(state).items() if k.startswith("publish")] == [3]

    crashed = snapshot(env["db"], env["store"])
    assert crashed.raw == before.raw and crashed.quarantine == before.quarantine
    assert crashed.served == before.served == 1  # the old version is still served
    assert crashed.champion == before.champion
    new_pubs = sorted(set(crashed.publications) - set(before.publications))
    assert [s for _, s, _ in new_pubs] == ["abandoned", "abandoned", "staged"]
    assert all(d == D2 for _, _, d in new_pubs)
    # The model version was registered (as challenger) before the crash, and only once.
    mine = [v for v, d in crashed.versions if d == D2]
    assert len(mine) == 1 and len(crashed.versions) == len(before.versions) + 1
    (run,) = _day_runs(env["store"], D2)
    assert run.data.tags["tarq.status"] == "failed"

    monkeypatch.delenv(CRASH_ENV)
    state = _run(env, run_date=D2)
    assert state.is_completed(), state.message
    res = state.result()
    assert res["publication"]["created"] and str(res["version"]) == mine[0]
    after = snapshot(env["db"], env["store"])
    assert after.raw == before.raw and after.quarantine == before.quarantine
    assert after.versions == crashed.versions  # no second registration
    assert after.champion == mine[0] and after.served == res["publication"]["version"]
    finished = {v: s for v, s, _ in after.publications}
    published_d2 = [v for v, s, d in after.publications if d == D2 and s == "published"]
    assert published_d2 == [after.served]
    assert "staged" not in finished.values()
    exports = {p.name for p in (env["db"].parent / "published").glob("*.parquet")}
    assert exports == {f"semantic_ids_v{v}.parquet" for v, s in finished.items()
                       if s == "published"}  # the crashed attempts' exports were removed
    (run,) = _day_runs(env["store"], D2)  # the same parent run, reopened and finished
    assert run.data.tags["tarq.status"] == "published"

    again = _run(env, run_date=D2)
    assert again.is_completed() and "already finished" in again.message
    assert snapshot(env["db"], env["store"]) == after


@pytest.mark.slow
def test_two_runs_of_a_date_started_at_once_publish_and_register_once(
        flow_env: dict[str, Any], tmp_path: Path) -> None:
    from tarq.locking import exclusive_lock, warehouse_lock_path

    env = flow_env
    before = snapshot(env["db"], env["store"])
    p = _params(env, run_date=D3, lock_wait_s=300)
    cmd = [sys.executable, "-m", "flows.tarq_daily", "--db", str(env["db"]), "--run-date", D3,
           "--work-dir", str(env["work"]),
           "--params", json.dumps({k: v for k, v in p.items()
                                   if k not in ("db", "run_date", "work_dir")})]
    # Both talk to the harness's Prefect server (no temporary server each).
    proc_env = {**os.environ, "PREFECT_API_URL": env["api_url"], "OMP_NUM_THREADS": "1"}
    started = dt.datetime.now(dt.UTC)
    procs = []
    outs = []
    try:
        # The test holds the warehouse until both flow runs are running, so that they really
        # overlap however slowly each process starts; then they race for it.
        with exclusive_lock(warehouse_lock_path(env["db"]), info={"holder": "test"}):
            for k in range(2):  # output to files: a full pipe would stall a process
                with open(tmp_path / f"out{k}", "w") as out, open(tmp_path / f"err{k}", "w") as err:
                    procs.append(subprocess.Popen(cmd, env=proc_env, cwd=REPO, stdout=out,
                                                  stderr=err))
            _wait_running(2, started, procs)
        for k, proc in enumerate(procs):
            proc.wait(timeout=400)
            outs.append((proc.returncode, (tmp_path / f"out{k}").read_text(),
                         (tmp_path / f"err{k}").read_text()))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert [rc for rc, _, _ in outs] == [0, 0], [err[-3000:] for _, _, err in outs]
    results = [json.loads(out[out.index("{"):]) for _, out, _ in outs]
    published = [r for r in results if "publication" in r]
    skipped = [r for r in results if r.get("status") == "skipped"]
    assert len(published) == 1 and len(skipped) == 1, results
    # The loser waited for the winner, then found the date done.
    assert sum("waited" in err and "already finished" in err for _, _, err in outs) >= 1

    after = snapshot(env["db"], env["store"])
    assert after.raw == before.raw and after.quarantine == before.quarantine
    mine = [v for v, d in after.versions if d == D3]
    assert len(mine) == 1 and len(after.versions) == len(before.versions) + 1
    pubs = [v for v, s, d in after.publications if d == D3]
    assert pubs == [published[0]["publication"]["version"]] == [after.served]
    assert after.champion == mine[0] == str(published[0]["version"])
    assert len(_day_runs(env["store"], D3)) == 1
