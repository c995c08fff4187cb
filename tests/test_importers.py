"""Importers: Taobao, MovieLens and contract-shaped Parquet/CSV into a real DuckDB file."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from tarq.cli import main as cli_main
from tarq.data.codes import stable_code
from tarq.data.importers import ImportReport, SourceFormatError, run_import
from tarq.store.warehouse import open_db, side_features


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def q(db: Path, sql: str, params: dict | None = None) -> list[tuple]:
    with open_db(db, read_only=True) as con:
        return con.execute(sql, params or {}).fetchall()


def entry(report: ImportReport, name: str, table: str | None = None):
    found = [
        f for f in report.files if Path(f.file).name == name and (table is None or f.table == table)
    ]
    assert len(found) == 1, report.to_text()
    return found[0]


# --------------------------------------------------------------------------------------
# Taobao
# --------------------------------------------------------------------------------------

AD_FEATURE = """adgroup_id,cate_id,campaign_id,customer,brand,price
1,6406,83237,1,95471,170.0
2,1489,169,2,NULL,199.0
3,6406,83237,1,95471,oops
2,1489,169,2,7,1.0
"""
# The real user_profile.csv header ends with a space after new_user_class_level.
USER_PROFILE = (
    (
        "userid,cms_segid,cms_group_id,final_gender_code,age_level,pvalue_level,shopping_level,"
        "occupation,new_user_class_level \n"
    )
    + """100,0,5,2,5,,3,0,3
200,0,2,2,2,1,3,0,
"""
)
RAW_SAMPLE = """user,time_stamp,adgroup_id,pid,nonclk,clk
100,1494137644,1,430548_1007,1,0
200,1494638778,2,430548_1007,0,1
300,1494650879,9,430539_1007,1,0
,1494650880,1,430548_1007,1,0
100,1494650881,1,430548_1007,1,x
"""
BEHAVIOR_LOG = """user,time_stamp,btag,cate,brand
100,1493741625,pv,6250,91286
100,1493741626,cart,6250,NULL
200,1493741627,click,6250,91286
"""
USER_BEHAVIOR = """1,2268318,2520377,pv,1511544070
1,2333346,2520771,buy,1511561733
"""


@pytest.fixture()
def taobao_dir(tmp_path: Path) -> Path:
    src = tmp_path / "taobao"
    write(src / "ad_feature.csv", AD_FEATURE)
    write(src / "user_profile.csv", USER_PROFILE)
    write(src / "raw_sample.csv", RAW_SAMPLE)
    write(src / "behavior_log.csv", BEHAVIOR_LOG)
    write(src / "UserBehavior.csv", USER_BEHAVIOR)
    write(src / "deepctr_alimama_sample.txt", "cont_btag,cont_btag\n1,1\n")
    return src


def test_taobao_full_directory(taobao_dir: Path, tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    report = run_import("taobao", taobao_dir, db)
    assert report.ok

    ads = entry(report, "ad_feature.csv")
    assert (ads.table, ads.rows_read, ads.rows_loaded, ads.rows_rejected) == ("items", 4, 2, 2)
    raw = entry(report, "raw_sample.csv")
    assert (raw.rows_read, raw.rows_loaded, raw.rows_rejected) == (5, 3, 2)
    # adgroup 9 has no ad_feature row, user 300 no profile: stubs keep the catalog complete.
    assert (raw.stub_items, raw.stub_users) == (1, 1)
    assert "ignored column(s): pid" in raw.notes
    beh = entry(report, "behavior_log.csv")
    assert (beh.rows_loaded, beh.rows_rejected) == (2, 1)
    assert entry(report, "UserBehavior.csv").rows_loaded == 2
    skip = entry(report, "deepctr_alimama_sample.txt")
    assert skip.status == "skipped" and "DeepCTR" in skip.notes[0]

    assert q(
        db,
        "SELECT item_id, category_id, brand_id, price, campaign_id, customer FROM items "
        "ORDER BY item_id",
    ) == [
        (1, 6406, 95471, 170.0, 83237, 1),
        (2, 1489, None, 199.0, 169, 2),  # brand 'NULL' → NULL; the later id-2 row is a duplicate
        (9, None, None, None, None, None),  # stub
    ]
    assert q(db, "SELECT user_id, pvalue_level, new_user_class_level FROM users ORDER BY 1") == [
        (100, None, 3),
        (200, 1, None),
        (300, None, None),
    ]
    assert set(side_features_of(db, "users")) >= {"cms_segid", "new_user_class_level"}
    assert set(side_features_of(db, "items")) == {"campaign_id", "customer"}

    rows = q(
        db,
        "SELECT user_id, item_id, ts, clicked, exposed, position, request_id "
        "FROM impressions ORDER BY row_id",
    )
    assert rows[0] == (
        100,
        1,
        pd.Timestamp("2017-05-07 06:14:04").to_pydatetime(),
        False,
        True,
        None,
        None,
    )
    assert [r[3] for r in rows] == [False, True, False]
    assert q(db, "SELECT action, item_id, brand_id FROM behaviors ORDER BY row_id") == [
        ("pv", None, 91286),
        ("cart", None, None),
        ("pv", 2268318, None),
        ("buy", 2333346, None),
    ]

    # Every inserted row carries the load id, and the load is recorded with its report.
    for table in ("items", "users", "impressions", "behaviors"):
        assert q(db, f"SELECT DISTINCT load_id FROM {table}") == [(report.load_id,)]
    (stored,) = q(db, "SELECT report FROM loads WHERE load_id = $l", {"l": report.load_id})[0]
    assert json.loads(stored)["totals"]["rows_loaded"] == report.totals["rows_loaded"]


def side_features_of(db: Path, table: str) -> list[str]:
    with open_db(db, read_only=True) as con:
        return side_features(con, table)


def test_taobao_rejects_land_in_quarantine_with_line_and_reason(
    taobao_dir: Path, tmp_path: Path
) -> None:
    db = tmp_path / "w.duckdb"
    report = run_import("taobao", taobao_dir, db)
    imp = q(
        db,
        "SELECT row_id, run_id, stage, check_name, reason, source, source_line, raw_row "
        "FROM quarantine_impressions ORDER BY source_line",
    )
    assert [(r[3], r[6]) for r in imp] == [("null_key", 5), ("type_cast", 6)]
    assert all(r[0] is None and r[1] == report.load_id and r[2] == "import" for r in imp)
    assert imp[0][4] == "user is empty"
    assert imp[1][4] == "clk: 'x' is not 0 or 1"
    assert imp[1][5] == str(taobao_dir / "raw_sample.csv")
    assert json.loads(imp[1][7]) == {
        "user": "100",
        "time_stamp": "1494650881",
        "adgroup_id": "1",
        "pid": "430548_1007",
        "nonclk": "1",
        "clk": "x",
    }
    items = q(
        db,
        "SELECT item_id, check_name, reason, source_line FROM quarantine_items "
        "ORDER BY source_line",
    )
    assert items[0] == (3, "type_cast", "price: 'oops' is not a number", 4)
    assert items[1][:2] == (2, "duplicate_id") and items[1][3] == 5
    assert "already appears at line 3" in items[1][2]
    beh = q(db, "SELECT check_name, reason, source_line FROM quarantine_behaviors")
    assert beh == [("type_cast", "btag: 'click' is not one of pv, cart, fav, buy", 4)]


def test_taobao_missing_files_and_single_file(tmp_path: Path) -> None:
    src = write(tmp_path / "only" / "raw_sample_part.csv", RAW_SAMPLE)
    db = tmp_path / "w.duckdb"
    report = run_import("taobao", src, db)  # a single file as SRC
    raw = entry(report, "raw_sample_part.csv")
    assert (raw.stub_items, raw.stub_users) == (3, 3)
    assert q(db, "SELECT count(*), count(category_id) FROM items") == [(3, 0)]
    assert q(db, "SELECT count(*) FROM users") == [(3,)]
    with pytest.raises(SourceFormatError, match="not a recognised Taobao file"):
        run_import("taobao", write(tmp_path / "notes.csv", "a,b\n"), db)


def test_taobao_reimport_is_append_only(taobao_dir: Path, tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    first = run_import("taobao", taobao_dir, db)
    before = q(db, "SELECT * FROM impressions ORDER BY row_id")
    items_before = q(db, "SELECT * FROM items ORDER BY item_id")
    second = run_import("taobao", taobao_dir, db)
    assert second.load_id != first.load_id
    # Logs are appended again; the first load's rows are untouched.
    assert (
        q(db, "SELECT * FROM impressions WHERE load_id = $l ORDER BY row_id", {"l": first.load_id})
        == before
    )
    assert q(db, "SELECT count(*) FROM impressions") == [(2 * len(before),)]
    # Catalog ids already present are skipped, not replaced and not quarantined.
    ads = entry(second, "ad_feature.csv")
    assert (ads.rows_loaded, ads.rows_skipped_existing, ads.rows_rejected) == (0, 2, 2)
    assert entry(second, "user_profile.csv").rows_skipped_existing == 2
    assert q(db, "SELECT * FROM items ORDER BY item_id") == items_before
    assert entry(second, "raw_sample.csv").stub_items == 0
    assert q(db, "SELECT count(*) FROM loads") == [(2,)]


def test_stub_then_feature_file_is_reported(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    run_import("taobao", write(tmp_path / "a" / "raw_sample.csv", RAW_SAMPLE), db)
    report = run_import("taobao", write(tmp_path / "b" / "ad_feature.csv", AD_FEATURE), db)
    ads = entry(report, "ad_feature.csv")
    assert ads.rows_skipped_existing == 2
    assert any("featureless stubs" in n for n in ads.notes)


@pytest.mark.parametrize(
    ("name", "content", "pattern"),
    [
        (
            "raw_sample.csv",
            "user,time_stamp,adgroup_id,pid,nonclk\n1,2,3,4,5\n",
            r"raw_sample\.csv: Taobao raw_sample header lacks required column\(s\) clk",
        ),
        (
            "raw_sample.csv",
            "user;time_stamp;adgroup_id;pid;nonclk;clk\n1;2;3;4;5;0\n",
            r"raw_sample\.csv: line 1 \(header\) parses as a single column .*semicolon-separated",
        ),
        (
            "raw_sample.csv",
            RAW_SAMPLE[:-1] + "\n100,1494650882,1,430",
            r"raw_sample\.csv: line 7: expected 6 fields .* found 4 fields .*truncated",
        ),
        (
            "raw_sample.csv",
            RAW_SAMPLE + "100,1494650882,1,430548_1007,1,0,9\n100,1,1,1,1,1\n",
            r"raw_sample\.csv: line 7: expected 6 fields separated by comma, found 7 fields",
        ),
        (
            "UserBehavior.csv",
            "1;2;3;pv;1511544070\n",
            r"UserBehavior\.csv: line 1 has 1 comma-separated field\(s\).*semicolon-separated",
        ),
        ("behavior_log.csv", "", r"behavior_log\.csv: the file is empty"),
    ],
)
def test_taobao_malformed_files_fail_cleanly(
    tmp_path: Path, name: str, content: str, pattern: str
) -> None:
    src = tmp_path / "src"
    write(src / "ad_feature.csv", AD_FEATURE)  # a good file in the same run
    write(src / name, content)
    db = tmp_path / "w.duckdb"
    with pytest.raises(SourceFormatError, match=pattern):
        run_import("taobao", src, db)
    # The run is one transaction: nothing of it was kept.
    if db.exists():
        assert q(db, "SELECT (SELECT count(*) FROM items) + (SELECT count(*) FROM loads)") == [(0,)]


def test_non_utf8_bytes_name_file_and_line(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "behavior_log.csv").write_bytes(
        b"user,time_stamp,btag,cate,brand\n1,1493741625,pv,1,2\n2,1493741625,pv,\xff\xfe,2\n"
    )
    with pytest.raises(
        SourceFormatError, match=r"behavior_log\.csv: line 3, column cate: not valid utf-8"
    ):
        run_import("taobao", src, tmp_path / "w.duckdb")
    (src / "behavior_log.csv").write_bytes(b"user,time_\xe9stamp,btag,cate,brand\n")
    with pytest.raises(SourceFormatError, match=r"line 1, byte 11: not valid utf-8"):
        run_import("taobao", src, tmp_path / "w.duckdb")


def test_cli_reports_errors_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    src = write(tmp_path / "src" / "raw_sample.csv", "user,time_stamp\n1,2\n").parent
    rc = cli_main(["import", "taobao", str(src), "--db", str(tmp_path / "w.duckdb")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("tarq import: error: ") and "adgroup_id, nonclk, clk" in err
    assert "Traceback" not in err
    write(src / "raw_sample.csv", RAW_SAMPLE)
    assert cli_main(["import", "taobao", str(src), "--db", str(tmp_path / "w.duckdb")]) == 0
    assert "raw_sample.csv" in capsys.readouterr().out
    assert (
        cli_main(["import", "taobao", str(tmp_path / "nope"), "--db", str(tmp_path / "w.duckdb")])
        == 2
    )


# --------------------------------------------------------------------------------------
# MovieLens
# --------------------------------------------------------------------------------------


def _flags(*on: int) -> str:
    flags = ["0"] * 19
    for i in on:
        flags[i] = "1"
    return "|".join(flags)


def write_classic(src: Path) -> None:
    write(
        src / "u.item",
        f"1|Toy Story (1995)|01-Jan-1995||http://x|{_flags(3, 4, 5)}\n"
        f"2|Amélie (2001)|01-Jan-2001||http://x|{_flags(5, 14)}\n"
        f"3|unknown|||http://x|{_flags(0)}\n",
        encoding="latin-1",
    )
    write(src / "u.user", "1|24|M|technician|85711\n2|53|F|other|94043\n3|x|M|writer|32067\n")
    write(
        src / "u.data",
        "1\t1\t5\t881250949\n1\t2\t3\t881250950\n2\t1\t4\t881250951\n2\t3\t1\t881250952\n"
        "2\t7\t4\t881250953\n2\tabc\t4\t881250954\n",
    )
    write(src / "u1.base", "1\t1\t5\t881250949\n")
    write(src / "README", "MovieLens\n")


def test_movielens_classic(tmp_path: Path) -> None:
    src, db = tmp_path / "ml", tmp_path / "w.duckdb"
    write_classic(src)
    report = run_import("movielens", src, db)
    assert entry(report, "u.item").rows_loaded == 3
    users = entry(report, "u.user")
    assert (users.rows_loaded, users.rows_rejected) == (2, 1)  # age 'x'
    imp = entry(report, "u.data", "impressions")
    assert (imp.rows_read, imp.rows_loaded, imp.rows_rejected) == (6, 5, 1)
    assert (imp.stub_items, imp.stub_users) == (1, 0)  # item 7 is not in u.item
    assert entry(report, "u.data", "behaviors").rows_loaded == 5
    assert "train/test split" in entry(report, "u1.base").notes[0]
    assert entry(report, "README").status == "skipped"

    items = dict((r[0], r[1:]) for r in q(db, "SELECT item_id, category_id, brand_id FROM items"))
    assert items[1] == (stable_code("Animation"), stable_code("1990s"))
    assert items[2] == (stable_code("Comedy"), stable_code("2000s"))
    assert items[3] == (stable_code("unknown"), None)
    assert items[7] == (None, None)
    assert q(db, "SELECT user_id, age_bucket, gender, zip3 FROM users WHERE user_id = 2") == [
        (2, 50, stable_code("F"), stable_code("940"))
    ]
    assert q(db, "SELECT clicked, count(*) FROM impressions GROUP BY 1 ORDER BY 1") == [
        (False, 2),
        (True, 3),
    ]
    assert q(
        db, "SELECT user_id, item_id, action, category_id FROM behaviors ORDER BY row_id LIMIT 2"
    ) == [(1, 1, "fav", stable_code("Animation")), (1, 2, "pv", stable_code("Comedy"))]
    # impressions and behaviours of one rating share the timestamp
    assert q(
        db, "SELECT count(*) FROM impressions i JOIN behaviors b USING (user_id, item_id, ts)"
    ) == [(5,)]
    rejected = q(db, "SELECT reason, source_line FROM quarantine_impressions")
    assert rejected == [("item_id: 'abc' is not an integer id", 6)]


def test_movielens_recbole_codes_match_classic(tmp_path: Path) -> None:
    src, db = tmp_path / "rb", tmp_path / "w.duckdb"
    write(
        src / "ml.item",
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "1\tToy Story\t1995\tAnimation Children's Comedy\n"
        "267\tunkonwn\tunkonwn\tunknown\n",
    )
    write(
        src / "ml.user",
        "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
        "1\t24\tM\ttechnician\t85711\n",
    )
    write(
        src / "ml.inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "1\t1\t4.0\t881250949.5\n1\t267\t2\t881250950\n",
    )
    report = run_import("movielens", src, db)
    assert report.totals["rows_rejected"] == 0
    assert q(db, "SELECT item_id, category_id, brand_id FROM items ORDER BY 1") == [
        (1, stable_code("Animation"), stable_code("1990s")),
        (267, stable_code("unknown"), None),
    ]
    assert q(db, "SELECT age_bucket, occupation FROM users") == [(18, stable_code("technician"))]
    assert q(db, "SELECT clicked, ts FROM impressions ORDER BY row_id")[0] == (
        True,
        pd.Timestamp("1997-12-04 15:55:49.5").to_pydatetime(),
    )
    with pytest.raises(
        SourceFormatError,
        match=r"ml\.inter: RecBole \.inter header lacks required column\(s\) rating",
    ):
        write(src / "ml.inter", "user_id:token\titem_id:token\ttimestamp:float\n1\t1\t5\n")
        run_import("movielens", src, tmp_path / "w2.duckdb")


def test_stable_code_python_matches_sql() -> None:
    values = ["Drama", "Children's", "1990s", "Amélie", ""]
    con = duckdb.connect()
    sql = [
        con.execute("SELECT CAST(md5_number_upper($s) >> 1 AS BIGINT)", {"s": v}).fetchone()[0]
        for v in values
    ]
    assert [stable_code(v) for v in values] == sql
    series = stable_code(pd.Series(["Drama", None]))
    assert series.dtype == "Int64" and series.iloc[0] == sql[0] and pd.isna(series.iloc[1])
    assert all(0 <= c < 2**63 for c in sql)


# --------------------------------------------------------------------------------------
# Contract-shaped Parquet / CSV
# --------------------------------------------------------------------------------------


def test_parquet_tables_side_features_and_rejects(tmp_path: Path) -> None:
    src, db = tmp_path / "pq", tmp_path / "w.duckdb"
    src.mkdir()
    pd.DataFrame(
        {
            "item_id": [10, 11, 12, 10],
            "category_id": [1, 2, None, 5],
            "brand_id": [7, 8, 9, 9],
            "price": [1.5, None, 3.0, 4.0],
            "color": ["red", "blue", "7", None],
            "junk": ["a", "b", "c", "d"],
        }
    ).to_parquet(src / "items.parquet")
    write(src / "users.csv", "user_id,segment,score\n1,3,0.5\n2,gold,x\n")
    write(
        src / "feature_spec.json",
        json.dumps(
            {
                "items": {"color": "categorical"},
                "users": {"segment": "categorical", "score": "numeric"},
            }
        ),
    )
    (src / "impressions").mkdir()
    pd.DataFrame(
        {
            "user_id": [1, 1],
            "item_id": [10, 99],
            "ts": ["2024-03-01 10:00:00", "2024-03-01T12:00:00+02:00"],
            "clicked": [True, False],
        }
    ).to_parquet(src / "impressions" / "part-0.parquet")
    pd.DataFrame(
        {
            "user_id": [2, 3],
            "item_id": [11, 11],
            "ts": ["2024-03-02 10:00:00", "yesterday"],
            "clicked": [False, True],
        }
    ).to_parquet(src / "impressions" / "part-1.parquet")
    write(src / "notes.txt", "hello\n")

    report = run_import("parquet", src, db)
    items = entry(report, "items.parquet")
    assert (items.rows_read, items.rows_loaded, items.rows_rejected) == (4, 3, 1)  # id 10 twice
    assert any("junk" in n for n in items.notes)
    assert entry(report, "behaviors").status == "skipped"
    assert entry(report, "notes.txt").status == "skipped"
    imp = entry(report, "impressions")
    assert (imp.rows_read, imp.rows_loaded, imp.rows_rejected) == (4, 3, 1)
    # item 99 is in no items file; user 2's users.csv row was rejected, so it gets a stub
    assert (imp.stub_items, imp.stub_users) == (1, 1)
    users = entry(report, "users.csv")
    assert (users.rows_loaded, users.rows_rejected) == (1, 1)  # score 'x' is not a number

    assert q(db, "SELECT item_id, color FROM items ORDER BY 1") == [
        (10, stable_code("red")),
        (11, stable_code("blue")),
        (12, 7),
        (99, None),
    ]
    assert q(db, "SELECT user_id, segment, score FROM users ORDER BY 1") == [
        (1, 3, 0.5),
        (2, None, None),
    ]
    assert q(db, "SELECT ts, exposed FROM impressions ORDER BY row_id") == [
        (pd.Timestamp("2024-03-01 10:00").to_pydatetime(), True),
        (pd.Timestamp("2024-03-01 10:00").to_pydatetime(), True),  # +02:00 → UTC
        (pd.Timestamp("2024-03-02 10:00").to_pydatetime(), True),
    ]
    bad = q(db, "SELECT check_name, reason, source, source_line FROM quarantine_impressions")
    assert bad == [
        (
            "type_cast",
            "ts: 'yesterday' is not a timestamp",
            str(src / "impressions" / "part-1.parquet"),
            2,
        )
    ]
    spec = dict(((t, c), k) for t, c, k in q(db, "SELECT * FROM feature_spec"))
    assert spec == {
        ("items", "color"): "categorical",
        ("users", "segment"): "categorical",
        ("users", "score"): "numeric",
    }


def test_parquet_missing_column_and_not_a_directory(tmp_path: Path) -> None:
    src = tmp_path / "pq"
    src.mkdir()
    pd.DataFrame({"user_id": [1], "item_id": [2], "clicked": [True]}).to_parquet(
        src / "impressions.parquet"
    )
    with pytest.raises(
        SourceFormatError, match=r"impressions\.parquet: impressions lacks required column\(s\) ts"
    ):
        run_import("parquet", src, tmp_path / "w.duckdb")
    with pytest.raises(SourceFormatError, match="takes a directory"):
        run_import("parquet", src / "impressions.parquet", tmp_path / "w.duckdb")
    write(src / "behaviors.csv", "user_id,ts\n1,2\n")
    (src / "impressions.parquet").unlink()
    with pytest.raises(
        SourceFormatError,
        match=r"behaviors\.csv: behaviors CSV header lacks required column\(s\) action",
    ):
        run_import("parquet", src, tmp_path / "w.duckdb")


def test_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown import kind"):
        run_import("csv", Path("."), Path("x.duckdb"))


# --------------------------------------------------------------------------------------
# The shared real samples (skipped when absent)
# --------------------------------------------------------------------------------------


def _data_rows(path: Path, header: bool) -> int:
    with path.open("rb") as fh:
        n = sum(1 for line in fh if line.strip())
    return n - (1 if header else 0)


@pytest.mark.shared_data
def test_shared_taobao_samples(tmp_path: Path, shared_data: Path) -> None:
    src = shared_data / "taobao-samples"
    db = tmp_path / "w.duckdb"
    report = run_import("taobao", src, db)
    expected = {
        "hit_raw_sample_head10k.csv": ("impressions", True),
        "hit_behavior_log_head10k.csv": ("behaviors", True),
        "fattydelivery_UserBehavior_4k.csv": ("behaviors", False),
    }
    for name, (table, header) in expected.items():
        f = entry(report, name)
        assert f.table == table
        assert f.rows_read == _data_rows(src / name, header)
        assert f.rows_loaded == f.rows_read - f.rows_rejected
    assert entry(report, "deepctr_alimama_sample.txt").status == "skipped"
    n_imp = entry(report, "hit_raw_sample_head10k.csv").rows_loaded
    assert q(db, "SELECT count(*) FROM impressions") == [(n_imp,)]
    # referential integrity through stubs
    assert q(
        db,
        "SELECT count(*) FROM impressions i WHERE NOT EXISTS "
        "(SELECT 1 FROM items c WHERE c.item_id = i.item_id)",
    ) == [(0,)]


@pytest.mark.shared_data
def test_shared_movielens_100k(tmp_path: Path, shared_data: Path) -> None:
    src = shared_data / "movielens-100k"
    db = tmp_path / "w.duckdb"
    report = run_import("movielens", src, db)
    assert report.totals["rows_rejected"] == 0
    ((n, ctr),) = q(db, "SELECT count(*), avg(clicked::INT) FROM impressions")
    assert n == 100_000 and abs(ctr - 0.55) < 0.01
    assert q(db, "SELECT count(*) FROM users") == [(943,)]
    assert q(db, "SELECT count(*) FROM items") == [(1682,)]
    assert q(db, "SELECT count(*) FROM behaviors WHERE category_id IS NOT NULL") == [(100_000,)]
