"""Fault injection: every fault ends in a clear refusal or a clean recovery, and nothing is lost.

Each test injects one fault into real components (a DuckDB file, Great Expectations, the
MLflow SQLite store, Prefect under ``prefect_test_harness``, FAISS, torch) and asserts the
outcome *and* a "nothing lost" snapshot (:func:`snapshot`): raw-table row counts and
checksums per load unchanged (``sql/integrity/raw_fingerprint.sql``), the quarantine holding
exactly the bad rows, the served ID-table version and the ``champion`` alias unchanged, no
registered version or publication half made.

Faults (docs/operations.md "Nothing lost" has the table of what each one does to the run, the rows, the
champion and the served table): corrupt rows of every validation class and malformed files
through the importer; SIGKILL during training; a crash between writing an ID-table version and
switching to it; an unreachable or locked MLflow store; two runs of one date at once; tampered
or foreign model files; hostile strings where SQL could be injected. Then, by section: IMPORT
(non-finite numbers, Parquet part drift, glob paths, Taobao label conflicts, `latest` from
usable rows, failed sample rebuilds), VALIDATION (the changed days of the training window,
clock skew/leakage, day-over-day bounds, stubs, reused request ids, prices, future rows),
TRACKING AND LOCKS (warehouse-scoped MLflow, honest publication status, foreign checkpoints,
the run lock for every writer, DuckDB file locks, retried registration) and SERVING (no pickle,
IDs bound to their weights, strict request input).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import pickle
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tarq.cli import main as tarq_main
from tarq.store import sqlfiles
from tarq.store.warehouse import open_db, quarantine_rows, raw_fingerprints
from tests.procs import crash_and_resume
from tests.test_flow import TINY_MODEL, copy_flow_env, daily_cli_args, tiny_params
from tests.test_serving import USER, make_served

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
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
    from tarq.release.publish import list_versions, served_version

    with open_db(db, read_only=True) as con:
        raw = raw_fingerprints(con, by_load=True)
        quarantine = tuple(sorted((_quarantine_key(r) for r in quarantine_rows(con)), key=repr))
        records = tuple(int(v) for v in sqlfiles.run(con, "integrity/run_records").fetchone())
        has_registry = bool(
            con.execute(
                "SELECT count(*) FROM information_schema.tables "
                "WHERE table_name = 'semantic_id_versions'"
            ).fetchone()[0]
        )
    pubs = (
        tuple(
            sorted((int(v["version"]), v["status"], str(v["run_date"])) for v in list_versions(db))
        )
        if has_registry
        else ()
    )
    champion, versions = None, ()
    if store is not None:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        c = MlflowClient(store, store)
        try:
            champion = str(c.get_model_version_by_alias("tarq", "champion").version)
        except MlflowException:
            champion = None
        versions = tuple(
            sorted(
                (str(v.version), v.tags.get("tarq.run_date"))
                for v in c.search_model_versions("name = 'tarq'")
            )
        )
    return Snapshot(raw, quarantine, records, served_version(db), pubs, champion, versions)


def new_loads(before: Snapshot, after: Snapshot) -> dict[tuple[str, str | None], int]:
    """Rows per (table, load) that appeared; asserts every load that was there is unchanged."""
    for key, value in before.raw.items():
        assert after.raw.get(key) == value, (
            f"raw rows of {key} changed: {value} → {after.raw.get(key)}"
        )
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
            "ORDER BY row_id LIMIT 1",
            {"d": LAST_DAY},
        ).fetchone()
    return {
        "u1": u1,
        "u_new": u_max + 5000,
        "u_unknown": u_max + 1000,
        "i1": i1,
        "i_new": i_max + 5000,
        "i_unknown": i_max + 1000,
        "existing": row,
    }


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
    db: Path, tmp_path: Path
) -> None:
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
        f"{u1},{i1},{t},false,true,1,fault-ok-1",  # 2 good
        f"{u1},{i1},{LAST_DAY} 09:01:00,true,true,0,fault-ok-2",  # 3 good click
        f",{i1},{t},false,true,1,fault-null-user",  # 4 null_key
        f"{u1},,{t},false,true,1,fault-null-item",  # 5 null_key
        f"{u1},{i1},,false,true,1,fault-null-ts",  # 6 null_key
        f"{u1},{i1},{t},,true,1,fault-null-clicked",  # 7 null_key
        f"{u1},{i1},{t},false,,1,fault-null-exposed",  # 8 null_key
        f"abc,{i1},{t},false,true,1,fault-bad-user",  # 9 type_cast
        f"{u1},12.5,{t},false,true,1,fault-bad-item",  # 10 type_cast
        f"{u1},{i1},yesterday,false,true,1,fault-bad-ts",  # 11 type_cast
        f"{u1},{i1},{t},maybe,true,1,fault-bad-clicked",  # 12 type_cast
        f"{u1},{i1},{t},false,true,x1,fault-bad-position",  # 13 type_cast
        f"{u1},{i1},{LAST_DAY} 09:10:00,true,false,,fault-unexposed-click",  # 14 → validation
        f"{u1},{i1},{LAST_DAY} 09:11:00,false,true,-2,fault-negative-position",  # 15
        f"{u1},{i1},2099-01-01 00:00:00,false,true,1,fault-future",  # 16 not yet due
        f"{u1},{i1},{LAST_DAY} 09:30:00,false,true,3,fault-dup",  # 17 kept
        f"{u1},{i1},{LAST_DAY} 09:30:00,false,true,3,fault-dup",  # 18 duplicate
        f"{ex[0]},{ex[1]},{ex[2]},{str(ex[3]).lower()},true,{ex[5]},{ex[6]}",  # 19 repeat
        f"{u1},{ids['i_unknown']},{LAST_DAY} 09:40:00,false,true,1,fault-unknown-item",  # 20
        f"{ids['u_unknown']},{i1},{LAST_DAY} 09:41:00,false,true,1,fault-unknown-user",  # 21
    ]
    beh = [
        f"{u1},{LAST_DAY} 10:00:00,{i1},1,2,pv",  # 2 good
        f",{LAST_DAY} 10:00:00,{i1},1,2,pv",  # 3 null_key
        f"{u1},,{i1},1,2,pv",  # 4 null_key
        f"{u1},{LAST_DAY} 10:00:00,{i1},1,2,",  # 5 null_key
        f"{u1},noon,{i1},1,2,pv",  # 6 type_cast
        f"{u1},{LAST_DAY} 10:00:00,x,1,2,pv",  # 7 type_cast
        f"{u1},{LAST_DAY} 10:05:00,{i1},1,2,click",  # 8 → validation
        f"{u1},2099-01-01 00:00:00,{i1},1,2,pv",  # 9 not yet due
    ]
    src = tmp_path / "day"
    _csv(src / "impressions.csv", IMP_HEADER, imp)
    _csv(src / "behaviors.csv", BEH_HEADER, beh)
    _csv(
        src / "items.csv",
        "item_id,category_id,brand_id,price",
        [
            f"{ids['i_new']},1,2,9.5",  # 2 new item
            ",1,2,3.0",  # 3 null_key
            f"{i1},9,9,9.0",  # 4 exists: skipped, never replaced
            f"{ids['i_new']},3,3,3.0",  # 5 duplicate_id
            f"{ids['i_new'] + 1},1,2,cheap",  # 6 type_cast
        ],
    )
    _csv(src / "users.csv", "user_id", [str(ids["u_new"]), "u-1"])  # 3: type_cast

    before = snapshot(db)
    assert before.quarantine == ()
    report = run_import("parquet", src, db)
    load = report.load_id
    got = {
        (Path(f.file).name, f.rows_loaded, f.rows_rejected, f.rows_skipped_existing)
        for f in report.files
        if f.status == "loaded"
    }
    assert got == {
        ("items.csv", 1, 3, 1),
        ("users.csv", 1, 1, 0),
        ("impressions.csv", 10, 10, 0),
        ("behaviors.csv", 3, 5, 0),
    }
    imp_report = next(f for f in report.files if f.table == "impressions")
    # Unknown ids get catalog stubs (referential integrity), not a quarantine entry.
    assert (imp_report.stub_items, imp_report.stub_users) == (1, 1)

    val = validate(db, D1, docs_dir=tmp_path / "gx")
    assert val.success, val.to_text()
    after = snapshot(db)
    assert new_loads(before, after) == {
        ("impressions", load): 10,
        ("behaviors", load): 3,
        ("items", load): 2,
        ("users", load): 2,
    }

    with open_db(db, read_only=True) as con:
        by_request = con.execute(
            "SELECT request_id, list(row_id ORDER BY row_id) FROM impressions "
            "WHERE load_id = $l GROUP BY request_id",
            {"l": load},
        ).fetchall()
        bad_beh = dict(
            con.execute(
                "SELECT 'action_in_set', row_id FROM behaviors WHERE load_id = $l AND action = 'click'",
                {"l": load},
            ).fetchall()
        )
    rid = dict(by_request)
    flagged_imp = {
        ("clicked_implies_exposed", rid["fault-unexposed-click"][0]),
        ("position_non_negative", rid["fault-negative-position"][0]),
        ("duplicate_impression", rid["fault-dup"][1]),  # the later copy; the first is kept
        ("duplicate_impression", rid[ex[6]][0]),  # the repeat of an existing row
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
    assert val.quarantined == {"items": 0, "users": 0, "impressions": 4, "behaviors": 1}
    # Rows dated after now are judged with their day, not quarantined for good before it.
    assert "1 impressions and 1 behaviours are dated after now" in val.to_text()
    assert after.records == (before.records[0] + 1, before.records[1] + 1, before.records[2])


def test_an_imported_collapsed_day_fails_validation_and_quarantines_only_its_bad_rows(
    db: Path, tmp_path: Path
) -> None:
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
    # Its CTR (0 of 20 exposures, all one user's) is inside the noise of one user's clicks.
    assert failed == {"impressions.volume", "impressions.quarantined_share"}
    text = report.to_text()
    assert "20 impressions on 2026-10-09 is 0.01x the trailing median" in text
    assert (
        "10 of 30 impressions on 2026-10-09 are quarantined (33.3%; allowed at most 5.0%)" in text
    )
    after = snapshot(db)
    assert new_loads(before, after) == {("impressions", load): 30}
    with open_db(db, read_only=True) as con:
        bad = {
            r[0]
            for r in con.execute(
                "SELECT row_id FROM impressions WHERE load_id = $l AND clicked AND NOT exposed",
                {"l": load},
            ).fetchall()
        }
    assert len(bad) == 10
    assert set(after.quarantine) == {
        ("impressions", "validation", "clicked_implies_exposed", r, None, None) for r in bad
    }


def _truncated_parquet(path: Path) -> None:
    pq.write_table(
        pa.table(
            {
                "user_id": [1, 2],
                "item_id": [3, 4],
                "ts": ["2026-10-08"] * 2,
                "clicked": [True, False],
            }
        ),
        path,
    )
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


MALFORMED = {
    # name: (file, writer(path, ids), pattern the error must match)
    "truncated_csv": (
        "impressions.csv",
        lambda p, i: p.write_text(
            f"{IMP_HEADER}\n{i['u1']},{i['i1']},{LAST_DAY} 10:00:00,false,true,1,r1\n"
            f"{i['u1']},{i['i1']},{LAST_DAY} 11:00:00,fal",
            encoding="utf-8",
        ),
        r"impressions\.csv: line 3: expected 7 fields separated by comma, found 4 fields .*"
        r"no final newline: the file looks truncated",
    ),
    "wrong_delimiter": (
        "impressions.csv",
        lambda p, i: p.write_text(
            f"{IMP_HEADER.replace(',', ';')}\n{i['u1']};{i['i1']};{LAST_DAY} 10:00:00;false;"
            "true;1;r1\n",
            encoding="utf-8",
        ),
        r"impressions\.csv: line 1 \(header\) parses as a single column .*semicolon-separated",
    ),
    "non_utf8_bytes": (
        "behaviors.csv",
        lambda p, i: p.write_bytes(
            f"{BEH_HEADER}\n{i['u1']},{LAST_DAY} 10:00:00,{i['i1']},1,2,pv\n".encode()
            + f"{i['u1']},{LAST_DAY} 10:01:00,{i['i1']},1,2,".encode()
            + b"p\xffv\n"
        ),
        r"behaviors\.csv: line 3, column action: not valid utf-8 text",
    ),
    "missing_column_csv": (
        "impressions.csv",
        lambda p, i: p.write_text(
            f"user_id,item_id,ts,exposed\n{i['u1']},{i['i1']},{LAST_DAY} 10:00:00,true\n",
            encoding="utf-8",
        ),
        r"impressions\.csv: impressions CSV header lacks required column\(s\) clicked",
    ),
    "missing_column_parquet": (
        "impressions.parquet",
        lambda p, i: pq.write_table(
            pa.table({"user_id": [i["u1"]], "item_id": [i["i1"]], "clicked": [True]}), p
        ),
        r"impressions\.parquet: impressions lacks required column\(s\) ts",
    ),
    "truncated_parquet": (
        "impressions.parquet",
        lambda p, i: _truncated_parquet(p),
        r"impressions\.parquet: cannot be read as Parquet",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_files_are_refused_with_file_and_line_and_nothing_is_kept(
    case: str, db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
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
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Columns of the wrong type (a list where a timestamp belongs, a fraction for a boolean)
    are not a format error: every row is quarantined with the column named, nothing lands."""
    ids = _ids(db)
    src = tmp_path / "src"
    src.mkdir()
    pq.write_table(
        pa.table(
            {
                "user_id": [ids["u1"]] * 3,
                "item_id": [ids["i1"]] * 3,
                "ts": [[1, 2], [3], [4]],
                "clicked": [0.5, 1.0, 0.0],
            }
        ),
        src / "impressions.parquet",
    )
    before = snapshot(db)
    assert tarq_main(["import", "parquet", str(src), "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "3 rejected rows are in quarantine_<table>" in out
    after = snapshot(db)
    assert new_loads(before, after) == {}
    assert set(after.quarantine) == {
        ("impressions", "import", "type_cast", None, line, None) for line in (1, 2, 3)
    }
    with open_db(db, read_only=True) as con:
        reasons = [
            r[0]
            for r in con.execute(
                "SELECT reason FROM quarantine_impressions ORDER BY source_line"
            ).fetchall()
        ]
    assert reasons[0] == "ts: '[1,2]' is not a timestamp; clicked: '0.5' is not a boolean"
    assert all(r.startswith("ts: ") for r in reasons)


# ----------------------------------------------------------------------------- SQL inputs


def test_hostile_sql_inputs_are_refused_or_bound_and_tables_stay_intact(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import duckdb

    from flows.tarq_daily import DailyParams
    from flows.tarq_daily import main as daily_main
    from tarq.data.importers import SourceFormatError, run_import
    from tarq.dates import parse_date
    from tarq.store.warehouse import add_side_column, table_fingerprint

    before = snapshot(db)
    # Run dates: refused before any SQL runs, by every entry point.
    for argv in (
        ["validate", "--db", str(db), "--run-date", HOSTILE_DATE],
        [
            "build-samples",
            "--db",
            str(db),
            "--run-date",
            HOSTILE_DATE,
            "--out",
            str(tmp_path / "s"),
        ],
    ):
        assert tarq_main(argv) == 2
        err = capsys.readouterr().err
        assert "is not a date of the form YYYY-MM-DD" in err and "Traceback" not in err
    assert (
        daily_main(
            [
                "--db",
                str(db),
                "--run-date",
                HOSTILE_DATE,
                "--work-dir",
                str(tmp_path / "w"),
                "--models",
                "tarq,tt",
            ]
        )
        == 2
    )
    assert "not YYYY-MM-DD, 'today' or 'latest'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not YYYY-MM-DD"):
        DailyParams(run_date="2026-13-45")
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        parse_date("2026-10-09 OR 1=1")

    # Identifiers (the only text ever put into SQL) accept plain names only.
    hostile_ident = 'items"; DROP TABLE impressions; --'
    with open_db(db) as con:
        for call in (
            lambda: table_fingerprint(con, hostile_ident),
            lambda: table_fingerprint(con, "quarantine_x; DROP TABLE items; --"),
            lambda: add_side_column(con, "users", hostile_ident),
            lambda: add_side_column(con, hostile_ident, "segment"),
            lambda: sqlfiles.render("publish/read_version", table=hostile_ident),
            lambda: sqlfiles.run(con, "publish/export", {"path": "x"}, table=hostile_ident),
        ):
            with pytest.raises(
                ValueError,
                match=r"invalid SQL identifier|side features live|"
                r"unknown table",
            ):
                call()
    with pytest.raises(ValueError, match="invalid SQL statement name"):
        sqlfiles.load_sql("../../etc/passwd")

    # A side-feature column named like SQL, declared through the importer's feature spec.
    spec_src = tmp_path / "spec"
    _csv(spec_src / "users.csv", "user_id,seg; DROP TABLE items; --", ["90001,1"])
    (spec_src / "feature_spec.json").write_text(
        json.dumps({"users": {"seg; DROP TABLE items; --": "categorical"}})
    )
    with pytest.raises(SourceFormatError, match="is not a plain name"):
        run_import("parquet", spec_src, db)
    assert snapshot(db) == before

    # Values and paths are bound, never spliced: a hostile source directory, data values,
    # a hostile warehouse file name and output folder all work as plain data.
    ids = _ids(db)
    value = "x'); DROP TABLE impressions; --"
    src = tmp_path / "src'; DROP TABLE items; --"
    _csv(
        src / "impressions.csv",
        IMP_HEADER,
        [f"{ids['u1']},{ids['i1']},{LAST_DAY} 12:00:00,false,true,1,{value}"],
    )
    load = run_import("parquet", src, db).load_id
    hostile_db = tmp_path / "w'; DROP TABLE items; --.duckdb"
    shutil.copy(db, hostile_db)
    out = tmp_path / "samples'; DROP TABLE impressions; --"
    assert (
        tarq_main(
            [
                "build-samples",
                "--db",
                str(hostile_db),
                "--run-date",
                D1,
                "--out",
                str(out),
                "--seq-len",
                "5",
            ]
        )
        == 0
    )
    assert (out / "meta.json").is_file()
    with duckdb.connect(str(db), read_only=True) as con:
        stored = con.execute(
            "SELECT request_id FROM impressions WHERE load_id = $l", {"l": load}
        ).fetchall()
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
    from tarq.ids.semantic_ids import file_sha256

    return {
        str(p.relative_to(root)): file_sha256(p) for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.mark.slow
def test_sigkill_during_training_resumes_from_the_last_checkpoint(
    samples: Path, tmp_path: Path, tiny_db: Path
) -> None:
    from tarq.model.io import load_trained
    from tarq.training.train import CHECKPOINT

    cfg = tmp_path / "cfg.json"
    cfg.write_text(
        json.dumps(
            {
                "model": TINY_MODEL,
                "train": {
                    "epochs": 3,
                    "batch_size": 32,
                    "max_steps_per_epoch": 150,
                    "eval_batch_size": 4096,
                    "patience": 0,
                    "threads": 1,
                },
            }
        )
    )
    out = tmp_path / "model"
    cmd = [
        sys.executable,
        "-m",
        "tarq.training.train",
        "--samples",
        str(samples),
        "--model",
        "tarq",
        "--out",
        str(out),
        "--config",
        str(cfg),
    ]
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
    assert cfg_out["model_name"] == "tarq" and 0.0 < metrics["test"]["auc"] < 1.0
    assert metrics["test"]["rows"] == json.loads((samples / "meta.json").read_text())["test_rows"]
    assert _tree_sha(samples) == data_before and snapshot(tiny_db) == raw_before


# ----------------------------------------------------------------------------- the daily flow


@pytest.fixture(scope="module")
def flow_baseline(tmp_path_factory: pytest.TempPathFactory, tiny_db: Path, prefect_api: str) -> Any:
    """A warehouse and MLflow store with one published, promoted run date (D1), made once
    under the session's Prefect test harness. Read only: tests take a copy (:func:`flow_env`).
    (Not test_flow's baseline: these tests run the days around D1 with their own gate and
    retry settings.)"""
    root = tmp_path_factory.mktemp("faults_flow")
    db = root / "w.duckdb"
    shutil.copy(tiny_db, db)
    env = {
        "root": root,
        "db": db,
        "store": f"sqlite:///{root / 'mlflow' / 'mlflow.db'}",
        "work": root / "work",
    }
    env["api_url"] = prefect_api
    state = _run(env, run_date=D1)
    assert state.is_completed(), state.message
    return env


@pytest.fixture
def flow_env(flow_baseline: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """This test's own copy of the baseline's warehouse, MLflow store and work dir (the
    MLflow artifacts stay shared), so no test sees what another one published or broke."""
    return copy_flow_env(flow_baseline, tmp_path / "env")


def _daily_args(env: dict[str, Any], run_date: str, **over: Any) -> list[str]:
    """``python -m flows.tarq_daily`` arguments for :func:`_params`."""
    return daily_cli_args(_params(env, **over), run_date)


def _params(env: dict[str, Any], **over: Any) -> dict[str, Any]:
    # A wide champion tolerance keeps promotion deterministic after a few training steps;
    # short retry pauses keep the retries (still 2 per task) quick.
    p = tiny_params(
        env["db"],
        env["work"],
        env["store"],
        champion_tolerance=1.0,
        retry_delay_s=0.2,
        tracking_timeout_s=0.5,
    )
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
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
            )
        )
    return {r.name: r.run_count for r in runs}


def _wait_running(
    n: int, since: dt.datetime, procs: list[subprocess.Popen], timeout_s: float = 240
) -> None:
    """Block until ``n`` flow runs started after ``since`` are Running on the API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterStartTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    flt = FlowRunFilter(
        start_time=FlowRunFilterStartTime(after_=since),
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING])),
    )
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
    return c.search_runs(
        [exp.experiment_id], f"tags.`tarq.kind` = 'daily' AND tags.`tarq.run_date` = '{day}'"
    )


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["unreachable", "locked"])
def test_mlflow_unreachable_or_locked_fails_clearly_after_retries_and_registers_nothing(
    flow_env: dict[str, Any], fault: str
) -> None:
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
def test_a_registration_cut_off_before_its_alias_is_completed_by_the_retry(tmp_path: Path) -> None:
    """The store failed right after creating the version (the state that leaves behind, made
    with the real client): the register task's retry completes it, without a second version."""
    from flows import tracking

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = tracking.setup(store, "faults")
    c = tracking.client()
    run = c.create_run(exp)
    source = f"{run.info.artifact_uri}/model"
    c.create_registered_model(tracking.REGISTERED_MODEL)
    half = c.create_model_version(
        tracking.REGISTERED_MODEL, source, run_id=run.info.run_id, tags={tracking.DATE_TAG: D2}
    )
    mv = tracking.register(source, run.info.run_id, D2, {"tarq.test_auc": "0.5"})
    assert str(mv.version) == str(half.version)
    assert str(c.get_model_version_by_alias("tarq", "challenger").version) == str(half.version)
    assert len(c.search_model_versions("name = 'tarq'")) == 1 and tracking.champion() is None


@pytest.mark.slow
def test_a_second_run_is_refused_while_another_holds_the_warehouse(
    flow_env: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    from flows.tarq_daily import EXIT_BUSY
    from flows.tarq_daily import main as daily_main
    from tarq.store.locking import exclusive_lock, warehouse_lock_path

    env = flow_env
    before = snapshot(env["db"], env["store"])
    lock = warehouse_lock_path(env["db"])
    with exclusive_lock(lock, info={"run_date": D2}):
        state = _run(env, run_date=D2, lock_wait_s=0.5)
        rc = daily_main(_daily_args(env, D2, lock_wait_s=0))
    assert state.is_failed() and state.name == "AlreadyRunning", state.message
    assert f"another run holds {lock} (pid {os.getpid()}" in state.message
    assert "after waiting" in state.message and "nothing was changed" in state.message
    assert rc == EXIT_BUSY and "AlreadyRunning" in capsys.readouterr().err
    assert snapshot(env["db"], env["store"]) == before
    assert not (env["work"] / D2).exists() and _day_runs(env["store"], D2) == []


@pytest.mark.slow
def test_tampered_or_foreign_model_files_are_refused_never_unpickled(
    flow_env: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import mlflow
    import torch
    from mlflow.tracking import MlflowClient

    from flows.tracking import download_model_dir
    from tarq.ids.semantic_ids import assign_ids
    from tarq.model import ModelConfig
    from tarq.model.io import UntrustedModelError, load_trained
    from tarq.serving import Scorer
    from tarq.training.evaluation import evaluate_model_dir
    from tarq.training.train import CHECKPOINT, TrainConfig, train

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
    for call in (
        lambda: load_trained(foreign),
        lambda: evaluate_model_dir(foreign, day_samples),
        lambda: Scorer.from_paths(env["db"], foreign, check_model=False),
        lambda: assign_ids(env["db"], foreign, tmp_path / "ids", progress=False),
    ):
        with pytest.raises(UntrustedModelError, match=refused):
            call()
    assert (
        tarq_main(
            [
                "assign-ids",
                "--db",
                str(env["db"]),
                "--model",
                str(foreign),
                "--out",
                str(tmp_path / "ids2"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "refused to load" in err and "Traceback" not in err
    # A checkpoint to resume from, tampered: refused before any training step.
    ckpt_dir = tmp_path / "resume"
    (ckpt_dir / CHECKPOINT).parent.mkdir(parents=True)
    torch.save({"model_name": "tarq", "epoch": Evil()}, ckpt_dir / CHECKPOINT)
    with pytest.raises(UntrustedModelError, match=r"last\.pt: refused to load"):
        train(
            day_samples,
            "tarq",
            ckpt_dir,
            ModelConfig.from_dict(TINY_MODEL),
            TrainConfig(epochs=1, threads=1),
            progress=False,
        )
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
    flow_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tarq.release.publish import CRASH_ENV

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
    assert exports == {
        f"semantic_ids_v{v}.parquet" for v, s in finished.items() if s == "published"
    }  # the crashed attempts' exports were removed
    (run,) = _day_runs(env["store"], D2)  # the same parent run, reopened and finished
    assert run.data.tags["tarq.status"] == "published"

    again = _run(env, run_date=D2)
    assert again.is_completed() and "already finished" in again.message
    assert snapshot(env["db"], env["store"]) == after


@pytest.mark.slow
def test_two_runs_of_a_date_started_at_once_publish_and_register_once(
    flow_env: dict[str, Any], tmp_path: Path
) -> None:
    from tarq.store.locking import exclusive_lock, warehouse_lock_path

    env = flow_env
    before = snapshot(env["db"], env["store"])
    cmd = [sys.executable, "-m", "flows.tarq_daily", *_daily_args(env, D3, lock_wait_s=300)]
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
                    procs.append(
                        subprocess.Popen(cmd, env=proc_env, cwd=REPO, stdout=out, stderr=err)
                    )
            _wait_running(2, started, procs)
        for k, proc in enumerate(procs):
            proc.wait(timeout=400)
            outs.append(
                (
                    proc.returncode,
                    (tmp_path / f"out{k}").read_text(),
                    (tmp_path / f"err{k}").read_text(),
                )
            )
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert [rc for rc, _, _ in outs] == [0, 0], [err[-3000:] for _, _, err in outs]
    results = [json.loads(out[out.index("{") :]) for _, out, _ in outs]
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


# ==================================================================================================
# IMPORT: non-finite numbers, stored non-finite prices, `latest` from usable rows,
# Parquet part drift, literal paths, contradictory Taobao labels, a failed sample rebuild.
# ==================================================================================================


def _quarantined(db: Path, table: str) -> list[tuple[str, str, int]]:
    with open_db(db, read_only=True) as con:
        return con.execute(
            f"SELECT check_name, reason, source_line FROM quarantine_{table} "
            "ORDER BY source, source_line"
        ).fetchall()


# ----------------------------------------------------------------------------- non-finite


def test_non_finite_numbers_are_quarantined_at_import_by_every_importer(
    db: Path, tmp_path: Path
) -> None:
    """inf, -inf, NaN (and an overflow to inf) in a DOUBLE column: one item priced inf used to
    stop build-samples and assign-ids for good (the catalog is append-only). Every importer
    now quarantines such rows as ``non_finite``, naming the column."""
    from tarq.data.importers import run_import

    ids = _ids(db)
    new = ids["i_new"]
    # Contract CSV.
    src = tmp_path / "csv"
    _csv(
        src / "items.csv",
        "item_id,category_id,brand_id,price",
        [
            f"{new},1,2,9.5",  # 2 good
            f"{new + 1},1,2,inf",  # 3
            f"{new + 2},1,2,-Infinity",  # 4
            f"{new + 3},1,2,nan",  # 5
            f"{new + 4},1,2,1e400",  # 6 overflows to inf
            f"{new + 5},1,2,",  # 7 good: empty is missing, not bad
        ],
    )
    # Contract Parquet: a stored DOUBLE inf / NaN, and an infinite timestamp text.
    pq_src = tmp_path / "parquet"
    pq_src.mkdir()
    pq.write_table(
        pa.table({"item_id": [new + 10, new + 11, new + 12], "price": [1.5, math.inf, math.nan]}),
        pq_src / "items.parquet",
    )
    _csv(
        pq_src / "behaviors.csv",
        BEH_HEADER,
        [
            f"{ids['u1']},{LAST_DAY} 10:00:00,{ids['i1']},1,2,pv",  # 2 good
            f"{ids['u1']},infinity,{ids['i1']},1,2,pv",  # 3 not a time
        ],
    )
    before = snapshot(db)
    first = run_import("parquet", src, db)
    second = run_import("parquet", pq_src, db)
    after = snapshot(db)
    assert new_loads(before, after) == {
        ("items", first.load_id): 2,
        ("items", second.load_id): 1,
        ("behaviors", second.load_id): 1,
    }
    items = _quarantined(db, "items")
    assert [(c, line) for c, _, line in items] == [
        ("non_finite", line) for line in (3, 4, 5, 6)
    ] + [("non_finite", 2), ("non_finite", 3)]
    reasons = [r for _, r, _ in items]
    assert reasons[:4] == [
        "price: 'inf' is not a finite number",
        "price: '-Infinity' is not a finite number",
        "price: 'nan' is not a finite number",
        "price: '1e400' is not a finite number",
    ]
    assert reasons[4:] == [
        "price: 'Infinity' is not a finite number",
        "price: 'NaN' is not a finite number",
    ]
    assert _quarantined(db, "behaviors") == [("type_cast", "ts: 'infinity' is not a timestamp", 3)]
    with open_db(db, read_only=True) as con:
        assert (
            con.execute("SELECT count(*) FROM items WHERE NOT isfinite(price)").fetchone()[0] == 0
        )

    # A numeric side feature, Taobao ad_feature and MovieLens ratings (own warehouses: they
    # add side columns to the catalog).
    side = _csv(tmp_path / "side" / "items.csv", "item_id,weight", ["1,1.0", "2,inf", "3,"]).parent
    (side / "feature_spec.json").write_text(json.dumps({"items": {"weight": "numeric"}}))
    side_db = tmp_path / "side.duckdb"
    assert run_import("parquet", side, side_db).totals["rows_loaded"] == 2
    assert _quarantined(side_db, "items") == [
        ("non_finite", "weight: 'inf' is not a finite number", 3)
    ]
    tb = _csv(
        tmp_path / "tb" / "ad_feature.csv",
        "adgroup_id,cate_id,campaign_id,customer,brand,price",
        ["1,6406,83237,1,95471,170.0", "2,6406,83237,1,95471,inf", "3,6406,83237,1,95471,NaN"],
    ).parent
    tb_db = tmp_path / "tb.duckdb"
    report = run_import("taobao", tb, tb_db)
    assert report.totals["rows_loaded"] == 1
    assert [(c, line) for c, _, line in _quarantined(tb_db, "items")] == [
        ("non_finite", 3),
        ("non_finite", 4),
    ]
    ml = tmp_path / "ml"
    ml.mkdir()
    (ml / "ml.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "1\t10\t5\t881250949\n1\t11\tnan\t881250950\n1\t12\tinf\t881250951\n",
        encoding="utf-8",
    )
    ml_db = tmp_path / "ml.duckdb"
    report = run_import("movielens", ml, ml_db)
    # NaN >= 4 is true in DuckDB: the 'nan' rating used to become a click.
    assert [(f.table, f.rows_loaded, f.rows_rejected) for f in report.files] == [
        ("impressions", 1, 2),
        ("behaviors", 1, 2),
    ]
    assert [(c, r) for c, r, _ in _quarantined(ml_db, "impressions")] == [
        ("non_finite", "rating: 'nan' is not a finite number"),
        ("non_finite", "rating: 'inf' is not a finite number"),
    ]


def _poison_prices(db: Path, day: dt.date) -> list[int]:
    """Give three items shown on ``day`` an inf, -inf and NaN price, as an importer before the
    non_finite check stored them (the catalog is append-only: nothing can fix them later)."""
    with open_db(db) as con:
        items = [
            r[0]
            for r in con.execute(
                "SELECT DISTINCT item_id FROM impressions WHERE ts::DATE = $d ORDER BY item_id "
                "LIMIT 3",
                {"d": day},
            ).fetchall()
        ]
        for item, value in zip(items, ("inf", "-inf", "nan"), strict=True):
            con.execute(
                "UPDATE items SET price = CAST($v AS DOUBLE) WHERE item_id = $i",
                {"v": value, "i": item},
            )
    return items


def test_a_stored_non_finite_price_is_an_unknown_bucket_in_samples(
    db: Path, tmp_path: Path
) -> None:
    from tarq.data.samples import build_samples

    day = LAST_DAY - dt.timedelta(days=2)
    items = _poison_prices(db, day)
    report = build_samples(db, D1, tmp_path / "s", seq_len=5)
    assert report.items_price_non_finite == 3
    rows = pq.read_table(tmp_path / "s" / "train", columns=["item_id", "price_bucket"]).to_pylist()
    shown = [r for r in rows if r["item_id"] in items]
    assert shown and all(r["price_bucket"] is None for r in shown)
    assert any(r["price_bucket"] is not None for r in rows)


def test_a_stored_non_finite_price_is_an_unknown_bucket_in_semantic_ids(tmp_path: Path) -> None:
    from tarq.ids.semantic_ids import assign_ids
    from tests.test_semantic_ids import make_trained

    db, model_dir = make_trained(tmp_path / "m")
    with open_db(db) as con:
        con.execute("UPDATE items SET price = 'inf'::DOUBLE WHERE item_id IN (1001, 1002)")
        con.execute("UPDATE items SET price = 'nan'::DOUBLE WHERE item_id = 1003")
        n_items = con.execute("SELECT count(*) FROM items").fetchone()[0]
    report = assign_ids(db, model_dir, tmp_path / "ids", progress=False, max_collision_rate=None)
    assert report.ok and report.items_assigned == n_items
    assert report.items_price_non_finite == 3


# ----------------------------------------------------------------------------- latest


def test_latest_ignores_quarantined_and_future_impressions(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One impression stamped 2099 made `latest` 2099-01-02 (and every later run failed); a
    day whose impressions are all quarantined is no test day either."""
    from tarq.data.importers import run_import
    from tarq.data.samples import build_samples
    from tarq.dates import latest_run_date, resolve_run_date

    ids = _ids(db)
    u1, i1 = ids["u1"], ids["i1"]
    day = LAST_DAY + dt.timedelta(days=1)
    _csv(
        tmp_path / "src" / "impressions.csv",
        IMP_HEADER,
        [
            f"{u1},{i1},2099-01-01 00:00:00,false,true,1,from-the-future",
            f"{u1},{i1},{day} 10:00:00,true,false,1,bad-1",
            f"{u1},{i1},{day} 11:00:00,true,false,1,bad-2",
        ],
    )
    load = run_import("parquet", tmp_path / "src", db).load_id
    # Validation quarantines the clicked-but-unexposed rows of that day (as its check would).
    with open_db(db) as con:
        con.execute(
            "INSERT INTO quarantine_impressions (row_id, run_id, stage, check_name, reason) "
            "SELECT row_id, 'validation-x', 'validation', 'clicked_implies_exposed', 'test' "
            "FROM impressions WHERE load_id = $l AND ts::DATE = $d",
            {"l": load, "d": day},
        )
        assert latest_run_date(con) == LAST_DAY + dt.timedelta(days=1)
        assert resolve_run_date("latest", con) == LAST_DAY + dt.timedelta(days=1)
        # Seen from 2099-06-01 the far row is usable: the rule is "not after now".
        assert latest_run_date(con, dt.datetime(2099, 6, 1)) == dt.date(2099, 1, 2)
    report = build_samples(db, "latest", tmp_path / "s", seq_len=5)
    assert (report.run_date, report.test_day) == (D1, str(LAST_DAY))
    assert (
        tarq_main(
            [
                "build-samples",
                "--db",
                str(db),
                "--run-date",
                "latest",
                "--out",
                str(tmp_path / "s2"),
            ]
        )
        == 0
    ), capsys.readouterr().err


# ----------------------------------------------------------------------------- Parquet drift


def test_parquet_parts_that_disagree_on_columns_are_refused(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A column only later parts have was dropped (the schema came from the first part):
    `exposed = false` was stored as TRUE. Parts must now have the same columns."""
    ids = _ids(db)
    src = tmp_path / "src"
    (src / "impressions").mkdir(parents=True)
    base = {
        "user_id": [ids["u1"]],
        "item_id": [ids["i1"]],
        "ts": [dt.datetime(2026, 10, 9, 10)],
        "clicked": [False],
    }
    pq.write_table(pa.table(base), src / "impressions" / "part-0.parquet")
    pq.write_table(pa.table({**base, "exposed": [False]}), src / "impressions" / "part-1.parquet")
    before = snapshot(db)
    assert tarq_main(["import", "parquet", str(src), "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(
        f"tarq import: error: {src / 'impressions' / 'part-1.parquet'}: "
        "Parquet parts of one table must have the same columns, but it has "
        "exposed that part-0.parquet lacks"
    ), err
    assert snapshot(db) == before


def test_parquet_parts_of_other_types_are_read_by_name_not_cast_to_the_first(
    db: Path, tmp_path: Path
) -> None:
    """Parts were cast to the first part's types: an item id 1.5 in a DOUBLE part became 2."""
    from tarq.data.importers import run_import

    ids = _ids(db)
    src = tmp_path / "src"
    (src / "impressions").mkdir(parents=True)
    row = {"user_id": [ids["u1"]], "ts": ["2026-10-09 10:00:00"], "clicked": [False]}
    pq.write_table(
        pa.table({**row, "item_id": pa.array([ids["i1"]], pa.int64())}),
        src / "impressions" / "part-0.parquet",
    )
    pq.write_table(
        pa.table({**row, "item_id": pa.array([ids["i1"] + 0.5], pa.float64())}),
        src / "impressions" / "part-1.parquet",
    )
    before = snapshot(db)
    load = run_import("parquet", src, db).load_id
    assert new_loads(before, snapshot(db)) == {("impressions", load): 1}
    assert [(c, r) for c, r, _ in _quarantined(db, "impressions")] == [
        ("type_cast", f"item_id: '{ids['i1'] + 0.5}' is not an integer id")
    ]


# ----------------------------------------------------------------------------- glob paths


def test_glob_characters_in_import_paths_are_taken_literally(db: Path, tmp_path: Path) -> None:
    """Importing `b*/` also loaded `bx/impressions.csv`; `c[1]/` read `c1/` instead."""
    from tarq.data.importers import run_import

    ids = _ids(db)

    def imp(folder: str, tag: str) -> None:
        _csv(
            tmp_path / folder / "impressions.csv",
            IMP_HEADER,
            [f"{ids['u1']},{ids['i1']},{LAST_DAY} 10:00:00,false,true,1,{tag}"],
        )

    imp("b*", "star-dir")
    imp("bx", "other-dir")
    (tmp_path / "c[1]" / "impressions").mkdir(parents=True)
    (tmp_path / "c1" / "impressions").mkdir(parents=True)
    for folder, tag in (("c[1]", "bracket-dir"), ("c1", "plain-dir")):
        for k in range(2):  # two parts: a folder of parts is a list of paths
            pq.write_table(
                pa.table(
                    {
                        "user_id": [ids["u1"]],
                        "item_id": [ids["i1"]],
                        "ts": [f"{LAST_DAY} 11:0{k}:00"],
                        "clicked": [False],
                        "request_id": [tag],
                    }
                ),
                tmp_path / folder / "impressions" / f"part-{k}.parquet",
            )
    _csv(
        tmp_path / "t?" / "raw_sample.csv",
        "user,time_stamp,adgroup_id,pid,nonclk,clk",
        ["100,1494137644,1,430548_1007,1,0"],
    )
    _csv(
        tmp_path / "tx" / "raw_sample.csv",
        "user,time_stamp,adgroup_id,pid,nonclk,clk",
        ["200,1494137644,2,430548_1007,1,0"],
    )

    loads = [
        run_import("parquet", tmp_path / "b*", db).load_id,
        run_import("parquet", tmp_path / "c[1]", db).load_id,
    ]
    with open_db(db, read_only=True) as con:
        got = con.execute(
            "SELECT request_id, count(*) FROM impressions WHERE list_contains($l, load_id) "
            "GROUP BY ALL ORDER BY ALL",
            {"l": loads},
        ).fetchall()
    assert got == [("bracket-dir", 2), ("star-dir", 1)]
    tb_db = tmp_path / "tb.duckdb"
    run_import("taobao", tmp_path / "t?", tb_db)
    with open_db(tb_db, read_only=True) as con:
        assert con.execute("SELECT user_id FROM impressions").fetchall() == [(100,)]


# ----------------------------------------------------------------------------- Taobao labels


def test_taobao_rows_with_both_or_neither_clk_and_nonclk_are_quarantined(tmp_path: Path) -> None:
    from tarq.data.importers import run_import

    src = _csv(
        tmp_path / "tb" / "raw_sample.csv",
        "user,time_stamp,adgroup_id,pid,nonclk,clk",
        [
            "100,1494137644,1,430548_1007,1,0",  # 2 not clicked
            "100,1494137645,2,430548_1007,0,1",  # 3 clicked
            "100,1494137646,3,430548_1007,1,1",  # 4 both
            "100,1494137647,4,430548_1007,0,0",  # 5 neither
            "100,1494137648,5,430548_1007,2,0",  # 6 not a flag
        ],
    ).parent
    db = tmp_path / "w.duckdb"
    report = run_import("taobao", src, db)
    assert (report.totals["rows_loaded"], report.totals["rows_rejected"]) == (2, 3)
    assert _quarantined(db, "impressions") == [
        ("label_conflict", "clk 1 and nonclk 1: exactly one of them must be 1", 4),
        ("label_conflict", "clk 0 and nonclk 0: exactly one of them must be 1", 5),
        ("type_cast", "nonclk: '2' is not 0 or 1", 6),
    ]
    with open_db(db, read_only=True) as con:
        assert con.execute(
            "SELECT item_id, clicked FROM impressions ORDER BY item_id"
        ).fetchall() == [(1, False), (2, True)]


# ----------------------------------------------------------------------------- sample rebuild


def test_a_failed_sample_rebuild_keeps_the_previous_samples(db: Path, tmp_path: Path) -> None:
    """build_samples deleted the old train/test files before it knew the new build had rows:
    a rebuild that found no training rows left the folder without samples."""
    from tarq.data.samples import build_samples

    out = tmp_path / "s"
    first = build_samples(db, D1, out, train_days=1, seq_len=5)
    kept = _tree_sha(out)
    (out / "notes.txt").write_text("not ours")  # other files in the folder are left alone
    train_day = LAST_DAY - dt.timedelta(days=1)
    with open_db(db) as con:
        con.execute(
            "INSERT INTO quarantine_impressions (row_id, run_id, stage, check_name, reason) "
            "SELECT row_id, 'validation-x', 'validation', 'test_fault', 'test' "
            "FROM impressions WHERE ts::DATE = $d",
            {"d": train_day},
        )
    before = snapshot(db)
    with pytest.raises(ValueError, match=f"no train rows for run date {D1}"):
        build_samples(db, D1, out, train_days=1, seq_len=5)
    assert {k: v for k, v in _tree_sha(out).items() if k != "notes.txt"} == kept
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["train", "test", "vocab", "layout.json", "meta.json", "notes.txt"]
    )
    assert json.loads((out / "meta.json").read_text())["fingerprint"] == first.fingerprint
    assert snapshot(db) == before  # no build recorded


# ==================================================================================================
# VALIDATION: every changed day of the training window, clock skew between the logs
# (label leakage), day-over-day volume/CTR, stub items, reused request ids, item prices, rows
# dated in the future.
# ==================================================================================================


WINDOW = 19  # the daily job's train_days: every changed day of it is validated
OLD_DAY = dt.date(2026, 10, 5)  # a training-window day with three trailing days before it
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _export(db: Path, table: str, day: dt.date, out: Path, select: str) -> Path:
    """Write ``select`` over ``table``'s rows of ``day`` (in row order) as a contract CSV."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(db), read_only=True) as con:
        con.execute(
            f"COPY (SELECT {select} FROM {table} WHERE ts::DATE = $d ORDER BY row_id) "
            f"TO '{out}' (HEADER)",
            {"d": day},
        )
    return out


IMP_COLS = "user_id, item_id, ts, clicked, exposed, position, request_id"
BEH_COLS = "user_id, ts, item_id, category_id, brand_id, action"


def _unload_day(db: Path, table: str, day: dt.date) -> None:
    """Test setup only: a warehouse whose ``table`` rows of ``day`` have not arrived yet (the
    product never deletes a raw row; the fault is then delivered through the importer)."""
    with duckdb.connect(str(db)) as con:
        con.execute(f"DELETE FROM {table} WHERE ts::DATE = $d", {"d": day})


def _validate(db: Path, tmp_path: Path, window: int = WINDOW, run_date: str = D1):
    """The flow's validate task: the test day and the changed days of the training window."""
    from flows.tasks import validate_logs

    if not window:  # the task's signature before the window existed
        return validate_logs.fn(db, run_date, tmp_path / "gx")
    return validate_logs.fn(db, run_date, tmp_path / "gx", window)


def _failed(report: dict) -> set[str]:
    return set(report["failed"])


# ----------------------------------------------------------------------------- clock skew


def test_behaviour_clock_ten_minutes_early_fails_validation_as_leakage(
    db: Path, tmp_path: Path
) -> None:
    """The last day's behaviours arrive with a clock 10 minutes early: each click's follow-up
    view lands before the impression, inside the click's own history. Every row is valid on
    its own; the cross-log check fails the day (it passed 10/10 before), nothing is
    quarantined and the raw rows are untouched."""
    from tarq.data.importers import run_import

    src = _export(
        db,
        "behaviors",
        LAST_DAY,
        tmp_path / "skew" / "behaviors.csv",
        "user_id, ts - INTERVAL 10 MINUTE AS ts, item_id, category_id, brand_id, action",
    )
    _unload_day(db, "behaviors", LAST_DAY)
    before = snapshot(db)
    load = run_import("parquet", src.parent, db).load_id
    report = _validate(db, tmp_path, window=0)
    assert not report["success"]
    assert _failed(report) == {"behaviors.click_history"}
    check = next(
        c for c in report["checks"] if c["name"] == "click_history" and c["day"] == str(LAST_DAY)
    )
    assert check["observed"]["share"] > 0.9 > 0.2 > check["observed"]["trailing_median"]
    assert "leakage" in check["message"]
    after = snapshot(db)
    assert new_loads(before, after) == {("behaviors", load): before_rows(src)}
    assert after.quarantine == before.quarantine == ()


def before_rows(csv: Path) -> int:
    return sum(1 for _ in csv.open(encoding="utf-8")) - 1


# ----------------------------------------------------------------------------- the window


def test_a_redelivered_old_day_is_validated_and_its_copies_quarantined(
    db: Path, tmp_path: Path
) -> None:
    """An old day of the training window is imported again (a re-delivery): it used to double
    the day's training rows unvalidated (only D − 1 was checked; behaviours had no duplicate
    check). Now the changed day is validated again, every copy is quarantined as a duplicate
    (the first copy is kept and used, so the day passes), and an unchanged day is not
    validated twice."""
    from tarq.data.importers import run_import

    first = _validate(db, tmp_path)
    assert first["success"], first["text"]
    assert first["days"][0] == "2026-10-01" and first["days"][-1] == str(LAST_DAY)
    again = _validate(db, tmp_path)
    assert again["days"] == [str(LAST_DAY)]  # nothing changed: only the test day

    src = tmp_path / "redelivery"
    _export(db, "impressions", OLD_DAY, src / "impressions.csv", IMP_COLS)
    _export(db, "behaviors", OLD_DAY, src / "behaviors.csv", BEH_COLS)
    before = snapshot(db)
    load = run_import("parquet", src, db).load_id
    report = _validate(db, tmp_path)
    assert report["success"], report["text"]
    assert report["days"] == [str(OLD_DAY), str(LAST_DAY)]
    after = snapshot(db)
    added = new_loads(before, after)
    n_imp, n_beh = added[("impressions", load)], added[("behaviors", load)]
    with open_db(db, read_only=True) as con:
        dup = dict(
            con.execute(
                "SELECT check_name, count(*) FROM (SELECT check_name, row_id FROM quarantine_impressions "
                "UNION ALL SELECT check_name, row_id FROM quarantine_behaviors) "
                "GROUP BY check_name"
            ).fetchall()
        )
        copies = con.execute(
            "SELECT count(*) FROM (SELECT row_id FROM impressions WHERE load_id = $l UNION ALL "
            "SELECT row_id FROM behaviors WHERE load_id = $l) AS t WHERE NOT EXISTS ("
            "SELECT 1 FROM quarantine_impressions q WHERE q.row_id = t.row_id) AND NOT EXISTS ("
            "SELECT 1 FROM quarantine_behaviors q WHERE q.row_id = t.row_id)",
            {"l": load},
        ).fetchone()[0]
    assert dup.get("duplicate_impression") == n_imp
    assert dup.get("duplicate_behavior") >= n_beh  # and any repeats the day already had
    assert copies == 0  # every re-delivered row is set aside: the day's usable rows unchanged


def test_a_doubled_old_day_fails_volume_day_over_day(db: Path, tmp_path: Path) -> None:
    """An old day of the window receives as many new (not identical) impressions again: no
    row is a duplicate, and the day-over-day volume check fails on that day (the old bounds,
    0.2x–5x of the test day only, let a doubling through)."""
    from tarq.data.importers import run_import

    src = tmp_path / "double"
    _export(
        db,
        "impressions",
        OLD_DAY,
        src / "impressions.csv",
        "user_id, item_id, ts + INTERVAL 1 SECOND AS ts, clicked, exposed, position, "
        "request_id || '-again' AS request_id",
    )
    run_import("parquet", src, db)
    report = _validate(db, tmp_path)
    assert not report["success"]
    assert _failed(report) == {f"impressions.volume@{OLD_DAY}"}
    assert f"impressions.volume@{OLD_DAY}" in report["text"]


def test_thirty_percent_of_a_days_clicks_flipped_fails_ctr(db: Path, tmp_path: Path) -> None:
    """The last day arrives with 30 % of its clicks logged as non-clicks (a partial label
    flip): CTR 0.65x the trailing median, z = −5 with users as clusters. The old band
    (0.25x–4x) let it through; 20 % (0.74x, inside the noise of ~190 clicks) still passes."""
    from tarq.data.importers import run_import

    src = _export(
        db,
        "impressions",
        LAST_DAY,
        tmp_path / "flip" / "impressions.csv",
        "user_id, item_id, ts, clicked AND hash(row_id) % 1000 >= 300 AS clicked, "
        "exposed, position, request_id",
    )
    _unload_day(db, "impressions", LAST_DAY)
    run_import("parquet", src.parent, db)
    report = _validate(db, tmp_path, window=0)
    assert not report["success"]
    assert _failed(report) == {"impressions.ctr"}
    ctr = next(c for c in report["checks"] if c["name"] == "ctr")
    assert ctr["observed"]["ratio"] < 0.7 and ctr["observed"]["z"] < -4


# ----------------------------------------------------------------------------- item 14


def test_a_day_of_items_known_only_as_stubs_fails(db: Path, tmp_path: Path) -> None:
    """A new day whose impressions show item ids the catalog lacks: the importer gives them
    stubs, so ``item_in_catalog`` passes; the share of stub impressions day over day fails."""
    from tarq.data.importers import run_import

    ids = _ids(db)
    day = LAST_DAY + dt.timedelta(days=1)
    src = _export(
        db,
        "impressions",
        LAST_DAY,
        tmp_path / "stubs" / "impressions.csv",
        "user_id, CASE WHEN row_id % 2 = 0 THEN item_id + $new ELSE item_id END "
        "AS item_id, ts + INTERVAL 1 DAY AS ts, clicked, exposed, position, "
        "request_id || '-next' AS request_id".replace("$new", str(ids["i_new"])),
    )
    run_import("parquet", src.parent, db)
    report = _validate(db, tmp_path, window=0, run_date=str(day + dt.timedelta(days=1)))
    assert _failed(report) == {"impressions.stub_share"}
    assert not any(
        c["name"] == "item_in_catalog" and c["status"] == "failed" for c in report["checks"]
    )


def test_reused_request_ids_are_quarantined(db: Path, tmp_path: Path) -> None:
    """Impressions that reuse the request id of another user's request, or of an earlier day,
    are quarantined as ``request_id_reused``; the request's own first rows are kept."""
    from tarq.data.importers import run_import

    ids = _ids(db)
    with open_db(db, read_only=True) as con:
        ((old_req, old_user),) = con.execute(
            "SELECT request_id, user_id FROM impressions WHERE ts::DATE = $d "
            "ORDER BY row_id LIMIT 1",
            {"d": LAST_DAY - dt.timedelta(days=2)},
        ).fetchall()
        ((req, user),) = con.execute(
            "SELECT request_id, user_id FROM impressions WHERE ts::DATE = $d "
            "ORDER BY row_id LIMIT 1",
            {"d": LAST_DAY},
        ).fetchall()
    other = ids["u1"] if ids["u1"] not in (user, old_user) else ids["u1"] + 1
    t = f"{LAST_DAY} 12:00:00"
    _csv(
        tmp_path / "req" / "impressions.csv",
        IMP_HEADER,
        [
            f"{other},{ids['i1']},{t},false,true,1,{req}",  # another user's request
            f"{old_user},{ids['i1']},{t},false,true,1,{old_req}",  # a request of an earlier day
            f"{other},{ids['i1']},{t},false,true,2,fault-fresh",  # a fresh id: fine
        ],
    )
    before = snapshot(db)
    load = run_import("parquet", tmp_path / "req", db).load_id
    report = _validate(db, tmp_path, window=0)
    assert report["success"], report["text"]
    with open_db(db, read_only=True) as con:
        flagged = con.execute(
            "SELECT i.request_id FROM quarantine_impressions q JOIN impressions i USING (row_id) "
            "WHERE q.check_name = 'request_id_reused' ORDER BY i.request_id"
        ).fetchall()
    assert sorted(r[0] for r in flagged) == sorted([req, old_req])
    assert new_loads(before, snapshot(db)) == {("impressions", load): 3}


def test_invalid_item_prices_are_quarantined(db: Path, tmp_path: Path) -> None:
    """The catalog check used to be ``item_id`` not NULL, which the primary key makes
    impossible. Now a negative or non-finite price (one stored by an older importer or
    another writer) is quarantined as ``price_valid``; a missing price is allowed."""
    ids = _ids(db)
    new = ids["i_new"]
    with duckdb.connect(str(db)) as con:  # a catalog written by another tool
        con.execute(
            "INSERT INTO items (item_id, category_id, brand_id, price, load_id) VALUES "
            "($a, 1, 2, -3.0, 'other'), ($b, 1, 2, 'inf'::DOUBLE, 'other'), "
            "($c, 1, 2, 'nan'::DOUBLE, 'other'), ($d, 1, 2, NULL, 'other')",
            {"a": new, "b": new + 1, "c": new + 2, "d": new + 3},
        )
    before = snapshot(db)
    report = _validate(db, tmp_path, window=0)
    assert report["success"], report["text"]
    with open_db(db, read_only=True) as con:
        flagged = con.execute(
            "SELECT item_id FROM quarantine_items WHERE check_name = 'price_valid' ORDER BY item_id"
        ).fetchall()
    assert [r[0] for r in flagged] == [new, new + 1, new + 2]
    assert new_loads(before, snapshot(db)) == {}


# ----------------------------------------------------------------------------- no false alarms


@pytest.mark.shared_data
@pytest.mark.parametrize("kind", ["movielens", "taobao"])
def test_real_imports_pass_the_window_validation(kind: str, tmp_path: Path) -> None:
    """The shared MovieLens-100k and Taobao slices pass the whole window's day-over-day and
    cross-log checks (MovieLens's volume is skipped: not a steady daily feed)."""
    from tarq.data.importers import run_import

    src = SHARED / {"movielens": "movielens-100k", "taobao": "taobao-samples"}[kind]
    if not src.is_dir():
        pytest.skip(f"shared data not present at {src}")
    db = tmp_path / "w.duckdb"
    run_import(kind, src, db)
    report = _validate(db, tmp_path, run_date="latest")
    assert report["success"], report["text"]
    assert len(report["days"]) > 5
    assert all(c["status"] != "failed" for c in report["checks"] if c["name"] == "click_history")


def test_a_copy_of_the_tiny_db_passes_the_window(tiny_db: Path, tmp_path: Path) -> None:
    """The clean demo passes every day of its window (no false alarm from the new checks)."""
    db = tmp_path / "w.duckdb"
    shutil.copy(tiny_db, db)
    report = _validate(db, tmp_path)
    assert report["success"], report["text"]
    assert len(report["days"]) == 8


def test_a_row_dated_in_the_future_is_judged_with_its_day_not_quarantined_for_good(
    db: Path, tmp_path: Path
) -> None:
    """A row dated a few seconds ahead used to be quarantined as ``ts_not_in_future`` by the
    next validation and stay excluded for good. Now a row of a day not yet checked is left
    alone (a note counts it; no sample reads a day before it is over) and, once its day is
    checked and the row is no longer in the future, the ordinary checks judge it: it is
    clean, so it is used. A row of the checked day that is still in the future is flagged."""
    import time

    from tarq.data.importers import run_import

    ids = _ids(db)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    soon = now + dt.timedelta(seconds=2)
    if soon.date() != now.date():
        pytest.skip("too close to midnight UTC")
    later = now + dt.timedelta(days=1)
    _csv(
        tmp_path / "ahead" / "impressions.csv",
        IMP_HEADER,
        [
            f"{ids['u1']},{ids['i1']},{soon:%Y-%m-%d %H:%M:%S.%f},false,true,1,fault-soon",
            f"{ids['u1']},{ids['i1']},{later:%Y-%m-%d %H:%M:%S.%f},false,true,1,fault-later",
        ],
    )
    run_import("parquet", tmp_path / "ahead", db)
    report = _validate(db, tmp_path, window=0)
    assert report["success"], report["text"]
    assert "2 impressions and 0 behaviours are dated after now" in report["text"]
    time.sleep(
        max(0.0, (soon - dt.datetime.now(dt.UTC).replace(tzinfo=None)).total_seconds()) + 0.5
    )
    # The day of `soon` (today, UTC) is checked once `soon` has passed: judged, and clean.
    today = _validate(db, tmp_path, window=0, run_date=str(now.date() + dt.timedelta(days=1)))
    assert today["check_day"] == str(now.date())
    with open_db(db, read_only=True) as con:
        flagged = con.execute(
            "SELECT i.request_id, q.check_name FROM quarantine_impressions q "
            "JOIN impressions i USING (row_id)"
        ).fetchall()
    assert flagged == []
    # Checking the day of `later` before it is over flags that row (its day is not over).
    _validate(db, tmp_path, window=0, run_date=str(later.date() + dt.timedelta(days=1)))
    with open_db(db, read_only=True) as con:
        flagged = con.execute(
            "SELECT i.request_id, q.check_name FROM quarantine_impressions q "
            "JOIN impressions i USING (row_id)"
        ).fetchall()
    assert flagged == [("fault-later", "ts_not_in_future")]


# ==================================================================================================
# TRACKING AND LOCKS: trust scoped to the warehouse, an honest status when a publication is
# not served, checkpoints of other inputs, writers and the run lock, DuckDB file locks, a
# retried registration.
# ==================================================================================================


def _holder(code: str) -> subprocess.Popen:
    """Another process running ``code`` until killed (it prints ``ready`` once set up)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", code + "\nprint('ready', flush=True)\nimport time\ntime.sleep(600)"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def _stop(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait()


# ----------------------------------------------------------------------------- locks


def test_every_writing_command_is_refused_while_another_process_holds_the_run_lock(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An import between a run's validation and its sample build would train on rows nobody
    validated: every command that writes takes the run lock the daily run holds."""
    u, i, ts, clicked, _, pos, _ = _ids(db)["existing"]
    src = _csv(
        tmp_path / "src" / "impressions.csv",
        IMP_HEADER,
        [f"{u},{i},{ts},{int(clicked)},1,{pos},r-late"],
    ).parent
    before = snapshot(db)
    holder = _holder(
        "from tarq.store.locking import exclusive_lock, warehouse_lock_path\n"
        f"cm = exclusive_lock(warehouse_lock_path({str(db)!r}), "
        "info={'run_date': '2026-10-09'})\ncm.__enter__()"
    )
    try:
        commands = [
            ["import", "parquet", str(src), "--db", str(db)],
            ["validate", "--db", str(db), "--run-date", D1],
            ["build-samples", "--db", str(db), "--run-date", D1, "--out", str(tmp_path / "s")],
            ["publish", "--db", str(db), "--rollback"],
            ["demo-data", "--db", str(db), "--preset", "tiny"],
        ]
        for argv in commands:
            rc = tarq_main(argv)
            err = capsys.readouterr().err.strip()
            assert rc == 4, (argv, err)
            assert err.startswith(
                f"tarq: error: warehouse {db} is in use by another run (pid {holder.pid}"
            ), err
            assert "run_date 2026-10-09" in err and len(err.splitlines()) == 1
    finally:
        _stop(holder)
    assert snapshot(db) == before and not (tmp_path / "s").exists()


def test_a_backfill_that_would_generate_demo_logs_waits_for_the_run_lock(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--backfill-days`` generated demo logs before any run took the lock."""
    from flows.tarq_daily import EXIT_BUSY
    from flows.tarq_daily import main as daily_main

    db = tmp_path / "new.duckdb"
    holder = _holder(
        "from tarq.store.locking import exclusive_lock, warehouse_lock_path\n"
        f"cm = exclusive_lock(warehouse_lock_path({str(db)!r}))\ncm.__enter__()"
    )
    try:
        rc = daily_main(
            [
                "--db",
                str(db),
                "--run-date",
                "latest",
                "--preset",
                "tiny",
                "--backfill-days",
                "1",
                "--work-dir",
                str(tmp_path / "work"),
            ]
        )
    finally:
        _stop(holder)
    err = capsys.readouterr().err.strip()
    assert rc == EXIT_BUSY and err.startswith(f"tarq-daily: error: warehouse {db} is busy"), err
    assert not db.exists()


def test_publish_while_another_process_has_the_duckdb_file_open_is_one_line(
    flow_env: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    env = flow_env
    before = snapshot(env["db"], env["store"])
    holder = _holder(f"import duckdb\ncon = duckdb.connect({str(env['db'])!r}, read_only=True)")
    try:
        rc = tarq_main(
            [
                "publish",
                "--db",
                str(env["db"]),
                "--ids",
                str(env["work"] / D1 / "ids"),
                "--model-version",
                "manual",
                "--run-date",
                D1,
            ]
        )
        err = capsys.readouterr().err.strip()
    finally:
        _stop(holder)
    assert rc == 4 and len(err.splitlines()) == 1, err
    assert err.startswith(f"tarq: error: warehouse {env['db']} is in use by pid {holder.pid}"), err
    assert "Traceback" not in err and snapshot(env["db"], env["store"]) == before


@pytest.mark.slow
def test_the_daily_run_meets_a_duckdb_file_lock_with_one_line(flow_env: dict[str, Any]) -> None:
    env = flow_env
    before = snapshot(env["db"], env["store"])
    holder = _holder(f"import duckdb\ncon = duckdb.connect({str(env['db'])!r})")
    try:
        state = _run(env, run_date=D2)
    finally:
        _stop(holder)
    assert state.is_failed() and state.name == "WarehouseBusy", (state.name, state.message)
    assert state.message.startswith(f"warehouse {env['db']} is in use by pid {holder.pid}")
    assert len(state.message.splitlines()) == 1
    assert snapshot(env["db"], env["store"]) == before and _day_runs(env["store"], D2) == []


# ----------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def other_samples(tiny_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Samples of another run date (other rows, another fingerprint)."""
    import shutil

    from tarq.data.samples import build_samples

    root = tmp_path_factory.mktemp("faults_other_samples")
    shutil.copy(tiny_db, root / "w.duckdb")
    build_samples(root / "w.duckdb", D2, root / "s", seq_len=10)
    return root / "s"


def test_train_refuses_a_checkpoint_of_other_samples_or_settings(
    samples: Path, other_samples: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A checkpoint resumed from other samples or settings kept the old weights while
    config.json and metrics.json named the new run."""
    from tarq.model import ModelConfig
    from tarq.training.train import CheckpointMismatch, TrainConfig, train

    mcfg = ModelConfig.from_dict(TINY_MODEL)
    tcfg = {"epochs": 1, "batch_size": 64, "max_steps_per_epoch": 3, "threads": 1}
    out = tmp_path / "m"
    train(samples, "tt", out, mcfg, TrainConfig.from_dict(tcfg), progress=False)
    made = _tree_sha(out)

    with pytest.raises(CheckpointMismatch, match=r"train\.lr 0\.002 vs 0\.01.*--fresh"):
        train(samples, "tt", out, mcfg, TrainConfig.from_dict({**tcfg, "lr": 0.01}), progress=False)
    with pytest.raises(CheckpointMismatch, match=r"samples "):
        train(other_samples, "tt", out, mcfg, TrainConfig.from_dict(tcfg), progress=False)
    assert _tree_sha(out) == made  # refused before anything was written

    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"model": TINY_MODEL, "train": tcfg}))
    argv = [
        "train",
        "--samples",
        str(other_samples),
        "--model",
        "tt",
        "--out",
        str(out),
        "--config",
        str(cfg),
    ]
    assert tarq_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "will not resume" in err and "--fresh" in err
    assert _tree_sha(out) == made

    assert tarq_main([*argv, "--fresh"]) == 0  # explicit: start over in this folder
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["samples"] == str(other_samples.resolve())
    assert _tree_sha(out)["model.pt"] != made["model.pt"]
    # The same inputs again resume (nothing left to train) and keep the weights.
    again = _tree_sha(out)["model.pt"]
    assert tarq_main(argv) == 0 and _tree_sha(out)["model.pt"] == again


# ----------------------------------------------------------------------------- MLflow scope


def _new_warehouse(tiny_db: Path, root: Path) -> Path:
    """Another warehouse with the same logs: a copy made before identities existed, so it
    adopts an identity of its own on first use (a copied file would keep the original's)."""
    import shutil

    from tarq.store.warehouse import open_db

    root.mkdir(parents=True)
    db = root / "w.duckdb"
    shutil.copy(tiny_db, db)
    with open_db(db) as con:
        con.execute("DROP TABLE IF EXISTS warehouse_meta")
    return db


@pytest.mark.slow
def test_a_second_warehouse_on_the_same_store_never_takes_the_firsts_results(
    flow_env: dict[str, Any], tiny_db: Path, tmp_path: Path
) -> None:
    """Warehouse A finished D1 on the store; warehouse B on the same store was told "already
    finished… skipped" and nothing was validated or served on B."""
    from mlflow.tracking import MlflowClient

    a = flow_env
    a_before = snapshot(a["db"], a["store"])
    b_db = _new_warehouse(tiny_db, tmp_path / "b")
    b = {**a, "db": b_db, "work": tmp_path / "b" / "work", "root": tmp_path / "b"}
    b_before = snapshot(b_db)

    state = _run(b, run_date=D1)
    assert state.is_failed() and state.name == "ForeignWarehouse", (state.name, state.message)
    assert "registered model 'tarq'" in state.message and "registered_model" in state.message
    # Refused once: a retry cannot make the store B's.
    assert [n for k, n in _task_attempts(state).items() if k.startswith("mlflow-connect")] == [1]
    assert snapshot(a["db"], a["store"]) == a_before and snapshot(b_db) == b_before
    assert len(_day_runs(a["store"], D1)) == 1

    # With a registered model of its own, B validates, trains cold and serves its own table.
    state = _run(b, run_date=D1, registered_model="tarq-b")
    assert state.is_completed(), state.message
    res = state.result()
    assert res["status"] == "published" and res["lineage"]["tarq"]["mode"] == "cold"
    assert snapshot(b_db).served == 1 and (b["work"] / D1 / "gx").exists()
    assert snapshot(a["db"], a["store"]) == a_before  # A's champion, versions, table untouched
    c = MlflowClient(a["store"], a["store"])
    b_champ = c.get_model_version_by_alias("tarq-b", "champion")
    a_champ = c.get_model_version_by_alias("tarq", "champion")
    assert b_champ.tags["tarq.warehouse"] != a_champ.tags["tarq.warehouse"]
    runs = _day_runs(a["store"], D1)
    assert len(runs) == 2 and len({r.data.tags["tarq.warehouse"] for r in runs}) == 2

    # Every lookup is scoped: B sees neither A's champion nor A's runs as a parent.
    from flows import tracking

    tracking.use_store(a["store"])
    exp = c.get_experiment_by_name("tarq-daily").experiment_id
    wa, wb = a_champ.tags["tarq.warehouse"], b_champ.tags["tarq.warehouse"]
    later = "2026-10-10"
    assert (
        tracking.find_parent_run("tt", later, exp, False, wb, "tarq-b")[0].data.tags[
            "tarq.warehouse"
        ]
        == wb
    )
    assert tracking.find_parent_run("tarq", later, exp, True, wa, "tarq")[1] == str(a_champ.version)
    assert tracking.champion("tarq", wb) is None
    assert tracking.version_for_day(D1, "tarq", warehouse=wb) is None
    assert (
        tracking.find_day_run(exp, D1, wb).info.run_id
        != tracking.find_day_run(exp, D1, wa).info.run_id
    )


@pytest.mark.slow
def test_a_store_made_before_warehouse_tags_is_adopted_on_first_use(
    flow_env: dict[str, Any],
) -> None:
    """Runs, versions and the registered model without tarq.warehouse are adopted by the
    first warehouse that opens the store: its finished date is still finished."""
    from mlflow.tracking import MlflowClient

    from flows import tracking
    from tarq.store.warehouse import warehouse_id

    env = flow_env
    c = MlflowClient(env["store"], env["store"])
    exp = c.get_experiment_by_name("tarq-daily").experiment_id
    for r in c.search_runs([exp]):
        if "tarq.warehouse" in r.data.tags:
            c.delete_tag(r.info.run_id, "tarq.warehouse")
    for v in c.search_model_versions("name = 'tarq'"):
        c.delete_model_version_tag("tarq", v.version, "tarq.warehouse")
    c.delete_registered_model_tag("tarq", "tarq.warehouse")

    known = tracking.open_day(env["store"], "tarq-daily", D1, warehouse=warehouse_id(env["db"]))
    assert known["status"] == "published" and known["version"] == "1"
    assert c.get_registered_model("tarq").tags["tarq.warehouse"] == warehouse_id(env["db"])
    assert all(r.data.tags.get("tarq.warehouse") for r in c.search_runs([exp]))


# ----------------------------------------------------------------------------- publication


@pytest.mark.slow
def test_republishing_when_another_table_is_served_ends_not_served_not_published(
    flow_env: dict[str, Any],
) -> None:
    """The operator served another table (a hotfix; the same after a rollback): the forced
    rerun of D1 finds its table version published but not served. It must not move champion
    and must not call itself published."""
    from mlflow.tracking import MlflowClient

    from tarq.release.publish import publish

    env = flow_env
    hotfix = publish(
        env["db"],
        env["work"] / D1 / "ids",
        model_version="hotfix",
        run_date=D1,
        export_dir=env["root"] / "published",
    )
    assert hotfix.served and hotfix.version == 2
    before = snapshot(env["db"], env["store"])

    state = _run(env, run_date=D1, force=True)
    assert state.is_completed(), state.message
    res = state.result()
    assert res["status"] == "not-served" and res["publication"]["served"] is False
    after = snapshot(env["db"], env["store"])  # the rerun adds its validation and build records
    assert replace(after, records=before.records) == before  # served v2, champion, versions
    c = MlflowClient(env["store"], env["store"])
    newest = max(_day_runs(env["store"], D1), key=lambda r: r.info.start_time)
    assert newest.data.tags["tarq.status"] == "not-served"
    assert newest.data.tags["tarq.served_version"] == "2"
    assert json.loads((env["work"] / D1 / "summary.json").read_text())["status"] == "not-served"
    from flows.tarq_daily import digest
    from tests.test_flow import _artifacts

    assert "NOT SERVED" in digest(res)
    md = _artifacts(state.state_details.flow_run_id)["publication"].data
    assert "not served" in md and "champion` not moved" in md
    assert str(c.get_model_version_by_alias("tarq", "champion").version) == before.champion


# ----------------------------------------------------------------------------- registration


@pytest.mark.slow
def test_a_registration_retried_after_logging_the_model_logs_it_once(
    flow_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store failed between logging the pyfunc and registering it; the register task's
    retry reuses the logged model: one logged model, one version."""
    from mlflow.tracking import MlflowClient

    env = flow_env
    monkeypatch.setenv("TARQ_REGISTER_CRASH", "after_log_model")
    state = _run(env, run_date=D2)
    assert state.is_completed(), state.message
    attempts = {k: v for k, v in _task_attempts(state).items() if k.startswith("mlflow-register")}
    assert list(attempts.values()) == [2]  # the injected failure, then the retry
    c = MlflowClient(env["store"], env["store"])
    exp = c.get_experiment_by_name("tarq-daily").experiment_id
    (child,) = c.search_runs(
        [exp],
        "tags.`tarq.kind` = 'model' AND tags.`tarq.model` = 'tarq' "
        f"AND tags.`tarq.run_date` = '{D2}'",
    )
    logged = c.search_logged_models([exp], f"source_run_id = '{child.info.run_id}'")
    assert len(logged) == 1
    versions = [
        v for v in c.search_model_versions("name = 'tarq'") if v.tags.get("tarq.run_date") == D2
    ]
    assert len(versions) == 1 and logged[0].model_id in versions[0].source


# ==================================================================================================
# SERVING: planted or edited pickles never run (models from code), IDs of other weights
# refused, bad request input refused by name (HTTP 400), nothing coerced.
# ==================================================================================================


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """tests/test_serving.py's tiny trained and published model (see ``make_served``)."""
    return make_served(tmp_path_factory.mktemp("serve"))


class _Evil:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def _ids_parquet(served: dict) -> Path:
    return served["export"].parent.parent / "ids" / "ids.parquet"


def _altered_weights(model_dir: Path, dst: Path) -> Path:
    """A copy of the model with well-formed but different weights."""
    import torch

    shutil.copytree(model_dir, dst)
    state = torch.load(dst / "model.pt", weights_only=True)
    key = next(iter(state))
    state[key] = state[key] + 1
    torch.save(state, dst / "model.pt")
    return dst


def _request(served: dict, **changes: Any) -> dict[str, Any]:
    ids = served["items"].column("item_id").to_numpy()
    req = {
        "user_profile": {"user_id": USER, "gender": 1},
        "history": served["history"][-5:],
        "candidate_item_ids": [int(i) for i in ids[:4]],
        "request_ts": served["request_ts"].isoformat(),
    }
    return {**req, **changes}


@pytest.fixture
def registry(tmp_path: Path) -> Any:
    """A fresh MLflow SQLite store with its artifacts under tmp_path; restored after."""
    import mlflow

    before = mlflow.get_tracking_uri()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    exp = mlflow.create_experiment(
        "serving-faults", artifact_location=(tmp_path / "artifacts").as_uri()
    )
    try:
        yield exp
    finally:
        mlflow.set_tracking_uri(before)
        mlflow.set_registry_uri(before)


def test_a_planted_pickle_in_the_registered_model_is_never_executed(
    served: dict, registry: str, tmp_path: Path
) -> None:
    import mlflow
    import pandas as pd
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from flows.tracking import log_pyfunc, request_example

    marker = tmp_path / "pwned"
    samples = served["export"].parent.parent / "samples"
    with mlflow.start_run(experiment_id=registry) as run:
        pass
    uri = log_pyfunc(run.info.run_id, served["model_dir"], _ids_parquet(served), samples)
    mv = mlflow.register_model(uri, "tarq")
    c = MlflowClient()
    c.set_registered_model_alias("tarq", "champion", mv.version)
    # The stored model holds no pickle at all; its loader runs the package's model code.
    art_root = tmp_path / "artifacts"
    saved = [p for p in art_root.rglob("*") if p.is_file()]
    assert not [p for p in saved if p.suffix in (".pkl", ".pickle", ".cloudpickle")], saved
    (mlmodel_path,) = [p for p in saved if p.name == "MLmodel"]
    model_dir = mlmodel_path.parent
    assert "model_code_path" in mlmodel_path.read_text()

    # A python_model.pkl planted in the registered model's folder is never read.
    (model_dir / "python_model.pkl").write_bytes(pickle.dumps(_Evil(marker)))
    req = request_example(samples)
    plain = mlflow.pyfunc.load_model("models:/tarq@champion")
    assert not marker.exists(), "the planted pickle ran on load"

    from tarq.serving.pyfunc import MODEL_CODE, load_scorer_model

    code = model_dir / MODEL_CODE.name
    for model in (plain, load_scorer_model("models:/tarq@champion")):
        out = model.predict(pd.DataFrame([req]))
        assert len(out["scores"][0]) == len(req["candidate_item_ids"])
        # The registered signature does not coerce a float id into an integer one either.
        with pytest.raises(MlflowException, match="Can not safely convert float64 to int64"):
            model.predict(pd.DataFrame([{**req, "candidate_item_ids": [1.9]}]))
    assert not marker.exists()

    # An MLmodel edited to load that pickle: load_scorer_model refuses before any unpickling.
    mlmodel = (model_dir / "MLmodel").read_text()
    edited = mlmodel.replace(
        "loader_module: mlflow.pyfunc.loaders.code_model",
        "loader_module: mlflow.pyfunc.model\n    python_model: python_model.pkl",
    )
    assert edited != mlmodel
    (model_dir / "MLmodel").write_text(edited)
    with pytest.raises(ValueError, match=r"not a models-from-code scorer.*nothing was unpickled"):
        load_scorer_model("models:/tarq@champion")
    (model_dir / "MLmodel").write_text(mlmodel)
    # Edited model code: refused too.
    code.write_text(code.read_text() + f"\nimport os; os.system('touch {marker}')\n")
    with pytest.raises(ValueError, match="saved model code differs"):
        load_scorer_model("models:/tarq@champion")
    assert not marker.exists()


def test_ids_of_other_weights_or_of_no_known_weights_are_refused(
    served: dict, tmp_path: Path
) -> None:
    import mlflow

    from tarq.serving import Scorer
    from tarq.serving.pyfunc import save_scorer_model

    ids = _ids_parquet(served)
    altered = _altered_weights(served["model_dir"], tmp_path / "altered")
    # IDs of model A (ids.parquet metadata, or the export's manifest) with weights of model B.
    for path in (ids, served["export"]):
        with pytest.raises(
            ValueError,
            match=r"was assigned by another model .* than "
            r".*altered/model\.pt",
        ):
            Scorer.from_parquet(path, altered)
        assert Scorer.from_parquet(path, served["model_dir"]).n_items == len(served["items"])

    from tarq.serving import ModelMismatchError

    # An export without its manifest (or beside a manifest of other bytes) proves nothing.
    bare = tmp_path / "bare" / served["export"].name
    bare.parent.mkdir()
    shutil.copy(served["export"], bare)
    with pytest.raises(ModelMismatchError, match="records no model sha256"):
        Scorer.from_parquet(bare, served["model_dir"])
    manifest = served["export"].with_name(f"{served['export'].stem}.manifest.json")
    shutil.copy(manifest, bare.with_name(manifest.name))
    bare.write_bytes(bare.read_bytes())  # same bytes: the manifest applies
    assert Scorer.from_parquet(bare, served["model_dir"]).n_items == len(served["items"])
    shutil.copy(ids, bare)  # other bytes than the manifest's: ignored, and ids.parquet's own
    assert Scorer.from_parquet(bare, served["model_dir"]).n_items  # metadata proves the pair
    assert Scorer.from_parquet(
        tmp_path / "bare" / served["export"].name, served["model_dir"], allow_unverified=True
    ).n_items
    with pytest.raises(ModelMismatchError, match="another model"):
        Scorer.from_parquet(ids, served["model_dir"], model_sha256="0" * 64)

    # Saving the pyfunc refuses the mismatch and writes nothing.
    with pytest.raises(ModelMismatchError, match="another model"):
        save_scorer_model(tmp_path / "mixed", altered, ids)
    assert not (tmp_path / "mixed").exists()
    # Weights swapped inside a saved pyfunc (from an export): its load refuses them.
    path = save_scorer_model(tmp_path / "pyfunc", served["model_dir"], served["export"])
    shutil.copy(altered / "model.pt", path / "artifacts" / "model_dir" / "model.pt")
    with pytest.raises(Exception, match="was assigned by another model"):
        mlflow.pyfunc.load_model(str(path))


@pytest.fixture(scope="module")
def pyfunc(served: dict, tmp_path_factory: pytest.TempPathFactory) -> Any:
    import mlflow

    from tarq.serving.pyfunc import save_scorer_model

    path = save_scorer_model(
        tmp_path_factory.mktemp("pyfunc") / "m", served["model_dir"], served["export"]
    )
    # The cap is the model's config (default 10,000); a load may set another.
    return mlflow.pyfunc.load_model(str(path), model_config={"max_candidates": 50})


def _bad_requests(served: dict) -> list[tuple[dict[str, Any], str]]:
    import pandas as pd

    hist = [dict(h) for h in served["history"][-5:]]
    # One second after the request: leakage, not a behaviour "under a minute" old.
    later = [*hist[:-1], {**hist[-1], "ts": served["request_ts"] + dt.timedelta(seconds=1)}]
    nat_ts = [*hist[:-1], {**hist[-1], "ts": np.datetime64("NaT")}]
    none_ts = [*hist[:-1], {**hist[-1], "ts": None}]

    cands = _request(served)["candidate_item_ids"]
    return [
        (
            _request(served, candidate_item_ids=[*cands, 1.9]),
            r"candidate_item_ids\[4\] must be an integer id, got 1\.9",
        ),
        (
            _request(served, candidate_item_ids=["1"]),
            r"candidate_item_ids\[0\] must be an integer id, got '1'",
        ),
        (
            _request(served, candidate_item_ids=[cands[0], True]),
            r"candidate_item_ids\[1\] must be an integer id, got True",
        ),
        (
            _request(served, user_profile={"user_id": 1.9}),
            r"user_profile\['user_id'\] must be an integer id or null, got 1\.9",
        ),
        (_request(served, user_profile=None), r"user_profile is null: send \{\}"),
        (_request(served, history=later), r"history\[4\]\['ts'\] = .* is after request_ts"),
        (_request(served, history=nat_ts), r"history\[4\]\['ts'\] must be a timestamp, got NaT"),
        (_request(served, history=none_ts), r"history\[4\] lacks 'ts'"),
        (_request(served, request_ts=pd.NaT), "request_ts is NaT"),
        (
            _request(served, candidate_item_ids=[cands[0]] * 51),
            "candidate_item_ids has 51 ids, more than the cap of 50 per request",
        ),
    ]


def test_bad_serving_input_is_refused_by_name_never_coerced(served: dict, pyfunc: Any) -> None:
    import pandas as pd
    from mlflow.exceptions import MlflowException

    good = pyfunc.predict([_request(served)])
    assert len(good["scores"][0]) == 4
    for req, message in _bad_requests(served):
        with pytest.raises(MlflowException, match=message) as err:
            pyfunc.predict([_request(served), req])
        assert err.value.error_code == "INVALID_PARAMETER_VALUE"
        assert str(err.value).startswith("request 1: ") or "request 1 " in str(err.value)
    # The same through a DataFrame, as `mlflow models serve` hands it over.
    with pytest.raises(MlflowException, match=r"candidate_item_ids\[0\] must be an integer"):
        pyfunc.predict(pd.DataFrame([_request(served, candidate_item_ids=[1.9, 2.5])]))
    assert pyfunc.metadata.flavors["python_function"]["config"]["max_candidates"] == 50


def test_bad_serving_input_is_a_400_from_the_scoring_server(served: dict, pyfunc: Any) -> None:
    from fastapi.testclient import TestClient
    from mlflow.pyfunc import scoring_server

    def _request_json(**changes: Any) -> dict[str, Any]:
        req = _request(served, **changes)
        return {**req, "history": [{**h, "ts": h["ts"].isoformat()} for h in req["history"]]}

    client = TestClient(scoring_server.init(pyfunc))
    ok = client.post("/invocations", json={"dataframe_records": [_request_json()]})
    assert ok.status_code == 200, ok.text
    ids = _request(served)["candidate_item_ids"]
    for bad, message in (
        ({"candidate_item_ids": [ids[0], 1.9]}, "candidate_item_ids[1] must be an integer id"),
        ({"candidate_item_ids": [True]}, "candidate_item_ids[0] must be an integer id, got True"),
        ({"user_profile": None}, "user_profile is null"),
        ({"candidate_item_ids": ids * 20}, "more than the cap of 50"),
    ):
        res = client.post("/invocations", json={"dataframe_records": [_request_json(**bad)]})
        assert res.status_code == 400, (bad, res.status_code, res.text)
        assert message in res.json()["message"], res.text
