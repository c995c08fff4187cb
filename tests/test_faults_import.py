"""Fault injection, import side: non-finite numbers, dates from unusable rows, Parquet schema
drift, glob characters in paths, contradictory Taobao labels and a failed sample rebuild.

A section of ``tests/test_faults.py`` (its helpers are imported from there).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tarq.cli import main as tarq_main
from tarq.warehouse import open_db
from tests import test_faults
from tests.test_faults import (
    BEH_HEADER,
    D1,
    IMP_HEADER,
    LAST_DAY,
    _csv,
    _ids,
    _tree_sha,
    new_loads,
    snapshot,
)

db = test_faults.db  # the fixture: a copy of the tiny demo warehouse


def _quarantined(db: Path, table: str) -> list[tuple[str, str, int]]:
    with open_db(db, read_only=True) as con:
        return con.execute(
            f"SELECT check_name, reason, source_line FROM quarantine_{table} "
            "ORDER BY source, source_line").fetchall()


# ----------------------------------------------------------------------------- non-finite


def test_non_finite_numbers_are_quarantined_at_import_by_every_importer(
        db: Path, tmp_path: Path) -> None:
    """inf, -inf, NaN (and an overflow to inf) in a DOUBLE column: one item priced inf used to
    stop build-samples and assign-ids for good (the catalog is append-only). Every importer
    now quarantines such rows as ``non_finite``, naming the column."""
    from tarq.data.importers import run_import

    ids = _ids(db)
    new = ids["i_new"]
    # Contract CSV.
    src = tmp_path / "csv"
    _csv(src / "items.csv", "item_id,category_id,brand_id,price", [
        f"{new},1,2,9.5",          # 2 good
        f"{new + 1},1,2,inf",      # 3
        f"{new + 2},1,2,-Infinity",  # 4
        f"{new + 3},1,2,nan",      # 5
        f"{new + 4},1,2,1e400",    # 6 overflows to inf
        f"{new + 5},1,2,",         # 7 good: empty is missing, not bad
    ])
    # Contract Parquet: a stored DOUBLE inf / NaN, and an infinite timestamp text.
    pq_src = tmp_path / "parquet"
    pq_src.mkdir()
    pq.write_table(pa.table({"item_id": [new + 10, new + 11, new + 12],
                             "price": [1.5, math.inf, math.nan]}), pq_src / "items.parquet")
    _csv(pq_src / "behaviors.csv", BEH_HEADER, [
        f"{ids['u1']},{LAST_DAY} 10:00:00,{ids['i1']},1,2,pv",   # 2 good
        f"{ids['u1']},infinity,{ids['i1']},1,2,pv",              # 3 not a time
    ])
    before = snapshot(db)
    first = run_import("parquet", src, db)
    second = run_import("parquet", pq_src, db)
    after = snapshot(db)
    assert new_loads(before, after) == {("items", first.load_id): 2,
                                        ("items", second.load_id): 1,
                                        ("behaviors", second.load_id): 1}
    items = _quarantined(db, "items")
    assert [(c, line) for c, _, line in items] == [
        ("non_finite", line) for line in (3, 4, 5, 6)] + [
        ("non_finite", 2), ("non_finite", 3)]
    reasons = [r for _, r, _ in items]
    assert reasons[:4] == ["price: 'inf' is not a finite number",
                           "price: '-Infinity' is not a finite number",
                           "price: 'nan' is not a finite number",
                           "price: '1e400' is not a finite number"]
    assert reasons[4:] == ["price: 'Infinity' is not a finite number",
                           "price: 'NaN' is not a finite number"]
    assert _quarantined(db, "behaviors") == [
        ("type_cast", "ts: 'infinity' is not a timestamp", 3)]
    with open_db(db, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM items WHERE NOT isfinite(price)"
                           ).fetchone()[0] == 0

    # A numeric side feature, Taobao ad_feature and MovieLens ratings (own warehouses: they
    # add side columns to the catalog).
    side = _csv(tmp_path / "side" / "items.csv", "item_id,weight",
                ["1,1.0", "2,inf", "3,"]).parent
    (side / "feature_spec.json").write_text(json.dumps({"items": {"weight": "numeric"}}))
    side_db = tmp_path / "side.duckdb"
    assert run_import("parquet", side, side_db).totals["rows_loaded"] == 2
    assert _quarantined(side_db, "items") == [
        ("non_finite", "weight: 'inf' is not a finite number", 3)]
    tb = _csv(tmp_path / "tb" / "ad_feature.csv",
              "adgroup_id,cate_id,campaign_id,customer,brand,price",
              ["1,6406,83237,1,95471,170.0", "2,6406,83237,1,95471,inf",
               "3,6406,83237,1,95471,NaN"]).parent
    tb_db = tmp_path / "tb.duckdb"
    report = run_import("taobao", tb, tb_db)
    assert report.totals["rows_loaded"] == 1
    assert [(c, line) for c, _, line in _quarantined(tb_db, "items")] == [
        ("non_finite", 3), ("non_finite", 4)]
    ml = tmp_path / "ml"
    ml.mkdir()
    (ml / "ml.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "1\t10\t5\t881250949\n1\t11\tnan\t881250950\n1\t12\tinf\t881250951\n",
        encoding="utf-8")
    ml_db = tmp_path / "ml.duckdb"
    report = run_import("movielens", ml, ml_db)
    # NaN >= 4 is true in DuckDB: the 'nan' rating used to become a click.
    assert [(f.table, f.rows_loaded, f.rows_rejected) for f in report.files] == [
        ("impressions", 1, 2), ("behaviors", 1, 2)]
    assert [(c, r) for c, r, _ in _quarantined(ml_db, "impressions")] == [
        ("non_finite", "rating: 'nan' is not a finite number"),
        ("non_finite", "rating: 'inf' is not a finite number")]


def _poison_prices(db: Path, day: dt.date) -> list[int]:
    """Give three items shown on ``day`` an inf, -inf and NaN price, as an importer before the
    non_finite check stored them (the catalog is append-only: nothing can fix them later)."""
    with open_db(db) as con:
        items = [r[0] for r in con.execute(
            "SELECT DISTINCT item_id FROM impressions WHERE ts::DATE = $d ORDER BY item_id "
            "LIMIT 3", {"d": day}).fetchall()]
        for item, value in zip(items, ("inf", "-inf", "nan"), strict=True):
            con.execute("UPDATE items SET price = CAST($v AS DOUBLE) WHERE item_id = $i",
                        {"v": value, "i": item})
    return items


def test_a_stored_non_finite_price_is_an_unknown_bucket_in_samples(
        db: Path, tmp_path: Path) -> None:
    from tarq.data.samples import build_samples

    day = LAST_DAY - dt.timedelta(days=2)
    items = _poison_prices(db, day)
    report = build_samples(db, D1, tmp_path / "s", seq_len=5)
    assert report["items_price_non_finite"] == 3
    rows = pq.read_table(tmp_path / "s" / "train",
                         columns=["item_id", "price_bucket"]).to_pylist()
    shown = [r for r in rows if r["item_id"] in items]
    assert shown and all(r["price_bucket"] is None for r in shown)
    assert any(r["price_bucket"] is not None for r in rows)


def test_a_stored_non_finite_price_is_an_unknown_bucket_in_semantic_ids(tmp_path: Path) -> None:
    from tarq.semantic_ids import assign_ids
    from tests.test_semantic_ids import make_trained

    db, model_dir = make_trained(tmp_path / "m")
    with open_db(db) as con:
        con.execute("UPDATE items SET price = 'inf'::DOUBLE WHERE item_id IN (1001, 1002)")
        con.execute("UPDATE items SET price = 'nan'::DOUBLE WHERE item_id = 1003")
        n_items = con.execute("SELECT count(*) FROM items").fetchone()[0]
    report = assign_ids(db, model_dir, tmp_path / "ids", progress=False, max_collision_rate=None)
    assert report["ok"] and report["items_assigned"] == n_items
    assert report["items_price_non_finite"] == 3


# ----------------------------------------------------------------------------- latest


def test_latest_ignores_quarantined_and_future_impressions(
        db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One impression stamped 2099 made `latest` 2099-01-02 (and every later run failed); a
    day whose impressions are all quarantined is no test day either."""
    from tarq.data.importers import run_import
    from tarq.data.samples import build_samples
    from tarq.dates import latest_run_date, resolve_run_date

    ids = _ids(db)
    u1, i1 = ids["u1"], ids["i1"]
    day = LAST_DAY + dt.timedelta(days=1)
    _csv(tmp_path / "src" / "impressions.csv", IMP_HEADER, [
        f"{u1},{i1},2099-01-01 00:00:00,false,true,1,from-the-future",
        f"{u1},{i1},{day} 10:00:00,true,false,1,bad-1",
        f"{u1},{i1},{day} 11:00:00,true,false,1,bad-2",
    ])
    load = run_import("parquet", tmp_path / "src", db).load_id
    # Validation quarantines the clicked-but-unexposed rows of that day (as its check would).
    with open_db(db) as con:
        con.execute(
            "INSERT INTO quarantine_impressions (row_id, run_id, stage, check_name, reason) "
            "SELECT row_id, 'validation-x', 'validation', 'clicked_implies_exposed', 'test' "
            "FROM impressions WHERE load_id = $l AND ts::DATE = $d", {"l": load, "d": day})
        assert latest_run_date(con) == LAST_DAY + dt.timedelta(days=1)
        assert resolve_run_date("latest", con) == LAST_DAY + dt.timedelta(days=1)
        # Seen from 2099-06-01 the far row is usable: the rule is "not after now".
        assert latest_run_date(con, dt.datetime(2099, 6, 1)) == dt.date(2099, 1, 2)
    report = build_samples(db, "latest", tmp_path / "s", seq_len=5)
    assert (report["run_date"], report["test_day"]) == (D1, str(LAST_DAY))
    assert tarq_main(["build-samples", "--db", str(db), "--run-date", "latest",
                      "--out", str(tmp_path / "s2")]) == 0, capsys.readouterr().err


# ----------------------------------------------------------------------------- Parquet drift


def test_parquet_parts_that_disagree_on_columns_are_refused(
        db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A column only later parts have was dropped (the schema came from the first part):
    `exposed = false` was stored as TRUE. Parts must now have the same columns."""
    ids = _ids(db)
    src = tmp_path / "src"
    (src / "impressions").mkdir(parents=True)
    base = {"user_id": [ids["u1"]], "item_id": [ids["i1"]],
            "ts": [dt.datetime(2026, 10, 9, 10)], "clicked": [False]}
    pq.write_table(pa.table(base), src / "impressions" / "part-0.parquet")
    pq.write_table(pa.table({**base, "exposed": [False]}), src / "impressions" / "part-1.parquet")
    before = snapshot(db)
    assert tarq_main(["import", "parquet", str(src), "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"tarq import: error: {src / 'impressions' / 'part-1.parquet'}: "
                          "Parquet parts of one table must have the same columns, but it has "
                          "exposed that part-0.parquet lacks"), err
    assert snapshot(db) == before


def test_parquet_parts_of_other_types_are_read_by_name_not_cast_to_the_first(
        db: Path, tmp_path: Path) -> None:
    """Parts were cast to the first part's types: an item id 1.5 in a DOUBLE part became 2."""
    from tarq.data.importers import run_import

    ids = _ids(db)
    src = tmp_path / "src"
    (src / "impressions").mkdir(parents=True)
    row = {"user_id": [ids["u1"]], "ts": ["2026-10-09 10:00:00"], "clicked": [False]}
    pq.write_table(pa.table({**row, "item_id": pa.array([ids["i1"]], pa.int64())}),
                   src / "impressions" / "part-0.parquet")
    pq.write_table(pa.table({**row, "item_id": pa.array([ids["i1"] + 0.5], pa.float64())}),
                   src / "impressions" / "part-1.parquet")
    before = snapshot(db)
    load = run_import("parquet", src, db).load_id
    assert new_loads(before, snapshot(db)) == {("impressions", load): 1}
    assert [(c, r) for c, r, _ in _quarantined(db, "impressions")] == [
        ("type_cast", f"item_id: '{ids['i1'] + 0.5}' is not an integer id")]


# ----------------------------------------------------------------------------- glob paths


def test_glob_characters_in_import_paths_are_taken_literally(
        db: Path, tmp_path: Path) -> None:
    """Importing `b*/` also loaded `bx/impressions.csv`; `c[1]/` read `c1/` instead."""
    from tarq.data.importers import run_import

    ids = _ids(db)

    def imp(folder: str, tag: str) -> None:
        _csv(tmp_path / folder / "impressions.csv", IMP_HEADER,
             [f"{ids['u1']},{ids['i1']},{LAST_DAY} 10:00:00,false,true,1,{tag}"])

    imp("b*", "star-dir")
    imp("bx", "other-dir")
    (tmp_path / "c[1]" / "impressions").mkdir(parents=True)
    (tmp_path / "c1" / "impressions").mkdir(parents=True)
    for folder, tag in (("c[1]", "bracket-dir"), ("c1", "plain-dir")):
        for k in range(2):  # two parts: a folder of parts is a list of paths
            pq.write_table(
                pa.table({"user_id": [ids["u1"]], "item_id": [ids["i1"]],
                          "ts": [f"{LAST_DAY} 11:0{k}:00"], "clicked": [False],
                          "request_id": [tag]}),
                tmp_path / folder / "impressions" / f"part-{k}.parquet")
    _csv(tmp_path / "t?" / "raw_sample.csv", "user,time_stamp,adgroup_id,pid,nonclk,clk",
         ["100,1494137644,1,430548_1007,1,0"])
    _csv(tmp_path / "tx" / "raw_sample.csv", "user,time_stamp,adgroup_id,pid,nonclk,clk",
         ["200,1494137644,2,430548_1007,1,0"])

    loads = [run_import("parquet", tmp_path / "b*", db).load_id,
             run_import("parquet", tmp_path / "c[1]", db).load_id]
    with open_db(db, read_only=True) as con:
        got = con.execute(
            "SELECT request_id, count(*) FROM impressions WHERE list_contains($l, load_id) "
            "GROUP BY ALL ORDER BY ALL", {"l": loads}).fetchall()
    assert got == [("bracket-dir", 2), ("star-dir", 1)]
    tb_db = tmp_path / "tb.duckdb"
    run_import("taobao", tmp_path / "t?", tb_db)
    with open_db(tb_db, read_only=True) as con:
        assert con.execute("SELECT user_id FROM impressions").fetchall() == [(100,)]


# ----------------------------------------------------------------------------- Taobao labels


def test_taobao_rows_with_both_or_neither_clk_and_nonclk_are_quarantined(
        tmp_path: Path) -> None:
    from tarq.data.importers import run_import

    src = _csv(tmp_path / "tb" / "raw_sample.csv", "user,time_stamp,adgroup_id,pid,nonclk,clk", [
        "100,1494137644,1,430548_1007,1,0",   # 2 not clicked
        "100,1494137645,2,430548_1007,0,1",   # 3 clicked
        "100,1494137646,3,430548_1007,1,1",   # 4 both
        "100,1494137647,4,430548_1007,0,0",   # 5 neither
        "100,1494137648,5,430548_1007,2,0",   # 6 not a flag
    ]).parent
    db = tmp_path / "w.duckdb"
    report = run_import("taobao", src, db)
    assert (report.totals["rows_loaded"], report.totals["rows_rejected"]) == (2, 3)
    assert _quarantined(db, "impressions") == [
        ("label_conflict", "clk 1 and nonclk 1: exactly one of them must be 1", 4),
        ("label_conflict", "clk 0 and nonclk 0: exactly one of them must be 1", 5),
        ("type_cast", "nonclk: '2' is not 0 or 1", 6),
    ]
    with open_db(db, read_only=True) as con:
        assert con.execute("SELECT item_id, clicked FROM impressions ORDER BY item_id"
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
            "FROM impressions WHERE ts::DATE = $d", {"d": train_day})
    before = snapshot(db)
    with pytest.raises(ValueError, match=f"no train rows for run date {D1}"):
        build_samples(db, D1, out, train_days=1, seq_len=5)
    assert {k: v for k, v in _tree_sha(out).items() if k != "notes.txt"} == kept
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["train", "test", "vocab", "layout.json", "meta.json", "notes.txt"])
    assert json.loads((out / "meta.json").read_text())["fingerprint"] == first["fingerprint"]
    assert snapshot(db) == before  # no build recorded
