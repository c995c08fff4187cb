"""Publication: checks before serving, one-transaction switch, crash safety, rollback, export."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tarq.ids.semantic_ids import IDS_FILE, assign_ids, file_sha256
from tarq.release.publish import (
    CRASH_ENV,
    PublishError,
    list_versions,
    publish,
    rollback,
    served_version,
)
from tarq.runtime.drills import InjectedCrash
from tarq.store.warehouse import connect, table_fingerprint
from tests.test_semantic_ids import make_trained


@pytest.fixture(scope="module")
def assigned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(pristine warehouse with a trained model's catalog, ids dir)."""
    root = tmp_path_factory.mktemp("pub")
    db, model_dir = make_trained(root)
    # The tiny model's 4 × 2 codebooks hold 16 tuples: collisions are forced, not collapse.
    assign_ids(db, model_dir, root / "ids", progress=False, max_collision_rate=None)
    return db, root / "ids"


@pytest.fixture
def db(assigned: tuple[Path, Path], tmp_path: Path) -> Path:
    """A private copy of the warehouse per test."""
    copy = tmp_path / "w.duckdb"
    copy.write_bytes(assigned[0].read_bytes())
    return copy


def _served_rows(db: Path) -> tuple[int, set[int]]:
    with duckdb.connect(str(db), read_only=True) as con:
        n, versions = con.execute(
            "SELECT count(*), list(DISTINCT version) FROM serving_item_ids"
        ).fetchall()[0]
    return n, set(versions)


def _catalog(db: Path) -> int:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute("SELECT count(*) FROM items").fetchall()[0][0]


def test_publish_serves_exports_and_is_idempotent(
    db: Path, assigned: tuple[Path, Path], tmp_path: Path
) -> None:
    ids = assigned[1]
    with connect(db) as con:
        before = table_fingerprint(con, "items")
    assert served_version(db) is None
    res = publish(
        db,
        ids,
        model_version="3",
        run_date="2026-10-06",
        model_uri="models:/tarq/3",
        export_dir=tmp_path / "exp",
    )
    assert res.created and res.version == 1 and res.previous is None
    assert all(c["ok"] for c in res.checks)
    assert served_version(db) == 1
    assert _served_rows(db) == (_catalog(db), {1})
    with duckdb.connect(str(db), read_only=True) as con:
        cols = [d[0] for d in con.execute("SELECT * FROM serving_item_ids LIMIT 0").description]
        assert {
            "item_id",
            "code_0",
            "code_2",
            "v_item",
            "model_name",
            "model_version",
            "run_date",
            "published_at",
            "version",
        } <= set(cols)
    manifest = json.loads(Path(res.manifest_path).read_text())
    exported = Path(res.export_path)
    assert manifest["rows"] == _catalog(db) == pq.ParquetFile(exported).metadata.num_rows
    assert manifest["sha256"] == file_sha256(exported)
    assert manifest["model_uri"] == "models:/tarq/3" and manifest["version"] == 1

    again = publish(db, ids, model_version="3", run_date="2026-10-06", export_dir=tmp_path / "exp")
    assert not again.created and again.version == 1
    # Each case keeps the keys it has always had: an existing version has its registry
    # status and no manifest.
    assert list(res.to_dict()) == [
        "version",
        "created",
        "served",
        "previous",
        "table",
        "checks",
        "export_path",
        "manifest_path",
        "manifest",
        "pruned",
    ]
    assert again.to_dict() == {
        "version": 1,
        "created": False,
        "served": True,
        "previous": 1,
        "table": "semantic_ids_v1",
        "checks": [],
        "export_path": res.export_path,
        "status": "published",
        "pruned": [],
    }
    assert [v["version"] for v in list_versions(db)] == [1]
    with connect(db) as con:
        assert table_fingerprint(con, "items") == before


def test_crash_between_write_and_switch_keeps_previous_version(
    db: Path, assigned: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = assigned[1]
    publish(db, ids, model_version="1", run_date="2026-10-06", export_dir=tmp_path)
    monkeypatch.setenv(CRASH_ENV, "before_switch")
    with pytest.raises(InjectedCrash):
        publish(db, ids, model_version="2", run_date="2026-10-07", export_dir=tmp_path)
    assert served_version(db) == 1
    assert _served_rows(db) == (_catalog(db), {1})
    status = {v["version"]: v["status"] for v in list_versions(db)}
    assert status == {1: "published", 2: "staged"}

    # A crash inside the switch transaction rolls the whole switch back.
    monkeypatch.setenv(CRASH_ENV, "in_switch")
    with pytest.raises(InjectedCrash):
        publish(db, ids, model_version="2", run_date="2026-10-07", export_dir=tmp_path)
    assert served_version(db) == 1 and _served_rows(db) == (_catalog(db), {1})

    monkeypatch.delenv(CRASH_ENV)
    res = publish(db, ids, model_version="2", run_date="2026-10-07", export_dir=tmp_path)
    assert res.created and served_version(db) == res.version == 4
    again = publish(db, ids, model_version="2", run_date="2026-10-07", export_dir=tmp_path)
    assert not again.created and again.version == 4
    status = {v["version"]: v["status"] for v in list_versions(db)}
    assert status == {1: "published", 2: "abandoned", 3: "abandoned", 4: "published"}
    with duckdb.connect(str(db), read_only=True) as con:
        tables = {
            r[0]
            for r in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_name LIKE 'semantic_ids_v%'"
            ).fetchall()
        }
    assert tables == {"semantic_ids_v1", "semantic_ids_v4"}


def test_failed_check_publishes_nothing(
    db: Path, assigned: tuple[Path, Path], tmp_path: Path
) -> None:
    ids = assigned[1]
    publish(db, ids, model_version="1", run_date="2026-10-06", export_dir=tmp_path / "e")
    # The catalog grew after the assignment: row count no longer equals the catalog size.
    with connect(db) as con:
        con.execute("INSERT INTO items VALUES (5000, 1, 1, 1.0, 'late')")
    with pytest.raises(PublishError, match="row_count"):
        publish(db, ids, model_version="2", run_date="2026-10-07", export_dir=tmp_path / "e")
    assert served_version(db) == 1
    rejected = [v for v in list_versions(db) if v["status"] == "rejected"]
    assert len(rejected) == 1 and "catalog_coverage" in rejected[0]["note"]
    assert not (tmp_path / "e" / f"{rejected[0]['table_name']}.parquet").exists()


def test_codes_out_of_range_are_refused(
    db: Path, assigned: tuple[Path, Path], tmp_path: Path
) -> None:
    table = pq.read_table(assigned[1] / IDS_FILE)
    codes = table.column("code_1").to_pylist()
    codes[3] = 99
    bad = table.set_column(
        table.column_names.index("code_1"), "code_1", pa.array(codes, pa.int16())
    )
    (tmp_path / "bad").mkdir()
    pq.write_table(bad, tmp_path / "bad" / IDS_FILE)
    with pytest.raises(PublishError, match="codes_in_range"):
        publish(db, tmp_path / "bad", run_date="2026-10-06", export_dir=tmp_path / "e")
    assert served_version(db) is None


def test_failed_assignment_report_blocks_publication(
    db: Path, assigned: tuple[Path, Path], tmp_path: Path
) -> None:
    (tmp_path / "ids").mkdir()
    (tmp_path / "ids" / IDS_FILE).write_bytes((assigned[1] / IDS_FILE).read_bytes())
    (tmp_path / "ids" / "health.json").write_text(json.dumps({"ok": False}))
    with pytest.raises(PublishError, match="failed assignment"):
        publish(db, tmp_path / "ids", run_date="2026-10-06", export_dir=tmp_path / "e")


def test_readers_see_old_or_new_never_a_mix(
    db: Path, assigned: tuple[Path, Path], tmp_path: Path
) -> None:
    ids = assigned[1]
    publish(db, ids, model_version="1", run_date="2026-10-06", export_dir=tmp_path)
    reader = duckdb.connect(str(db))
    try:
        reader.begin()
        first = reader.execute(
            "SELECT count(*), list(DISTINCT version) FROM serving_item_ids"
        ).fetchall()[0]
        publish(db, ids, model_version="2", run_date="2026-10-07", export_dir=tmp_path)
        # The open transaction still reads its snapshot: the old version, whole.
        during = reader.execute(
            "SELECT count(*), list(DISTINCT version) FROM serving_item_ids"
        ).fetchall()[0]
        reader.commit()
        after = reader.execute(
            "SELECT count(*), list(DISTINCT version) FROM serving_item_ids"
        ).fetchall()[0]
    finally:
        reader.close()
    n = _catalog(db)
    assert first == during == (n, [1])
    assert after == (n, [2])


def test_keep_and_rollback(db: Path, assigned: tuple[Path, Path], tmp_path: Path) -> None:
    ids = assigned[1]
    with pytest.raises(PublishError, match="nothing is published"):
        rollback(db)
    for day in ("2026-10-06", "2026-10-07", "2026-10-08"):
        publish(db, ids, model_version=day, run_date=day, keep=2, export_dir=tmp_path)
    status = {v["version"]: v["status"] for v in list_versions(db)}
    assert status == {1: "pruned", 2: "published", 3: "published"}
    res = rollback(db)
    assert res == {"from_version": 3, "to_version": 2, "table": "semantic_ids_v2"}
    assert served_version(db) == 2 and _served_rows(db)[1] == {2}
    with pytest.raises(PublishError, match="no older version"):
        rollback(db)
    with pytest.raises(PublishError, match="cannot be served"):
        rollback(db, to_version=1)
    assert rollback(db, to_version=3)["to_version"] == 3
    assert served_version(db) == 3


def test_same_key_with_different_ids_is_refused(
    db: Path, assigned: tuple[Path, Path], tmp_path: Path
) -> None:
    publish(db, assigned[1], model_version="1", run_date="2026-10-06", export_dir=tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    table = pq.read_table(assigned[1] / IDS_FILE)
    pq.write_table(table, other / IDS_FILE, compression="snappy")
    with pytest.raises(PublishError, match="different IDs"):
        publish(db, other, model_version="1", run_date="2026-10-06", export_dir=tmp_path)


def test_cli_assign_publish_rollback(
    db: Path, assigned: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tarq.cli import main

    model_dir = assigned[1].parent / "model"
    assert (
        main(
            [
                "assign-ids",
                "--db",
                str(db),
                "--model",
                str(model_dir),
                "--out",
                str(tmp_path / "ids"),
                "--max-collision-rate",
                "1",
            ]
        )
        == 0
    )
    assert "semantic IDs: OK" in capsys.readouterr().out
    for day in ("2026-10-06", "2026-10-07"):
        assert (
            main(
                [
                    "publish",
                    "--db",
                    str(db),
                    "--ids",
                    str(tmp_path / "ids"),
                    "--run-date",
                    day,
                    "--export-dir",
                    str(tmp_path / "e"),
                ]
            )
            == 0
        )
    assert json.loads(capsys.readouterr().out.split("\n}\n")[-2] + "\n}")["version"] == 2
    assert main(["publish", "--db", str(db), "--rollback"]) == 0
    assert served_version(db) == 1
    capsys.readouterr()
    assert main(["publish", "--db", str(db), "--rollback"]) == 2
    assert "no older version" in capsys.readouterr().err
