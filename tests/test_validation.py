"""``tarq validate``: every corruption class is caught, raw rows stay untouched, reruns add nothing.

The demo generator's ``tiny`` logs (8 days) are generated once per module and each test
validates its own copy of the file; the volume and CTR collapses use a small deterministic
warehouse built here, whose numbers are known exactly. One GX context (docs dir) is shared
by the module, as a deployment shares it across days.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest

from tarq.cli import main
from tarq.data.demo import generate
from tarq.store.warehouse import RAW_TABLES, connect, table_fingerprint
from tarq.validation import DEFAULT_ACTIONS, ValidationBounds, ValidationReport, validate
from tarq.validation.core import _disagreement
from tarq.validation.suites import ExpectationOutcome

# The demo logs: 2026-10-01 .. 2026-10-08; run date 2026-10-09 checks the last day.
DEMO_DAY0 = dt.date(2026, 10, 1)
CHECK_DAY = dt.date(2026, 10, 8)
RUN_DATE = dt.date(2026, 10, 9)

# The hand-built warehouse: 10 days of PER_DAY impressions from BUILT_DAY0.
BUILT_DAY0 = dt.date(2026, 10, 1)
BUILT_DAYS = 10
BUILT_CHECK_DAY = dt.date(2026, 10, 10)
BUILT_RUN_DATE = dt.date(2026, 10, 11)
PER_DAY = 400  # every 10th row clicked, every 5th unexposed


def _build_warehouse(
    path: Path,
    volume: dict[dt.date, int] | None = None,
    click_every: dict[dt.date, int] | None = None,
) -> None:
    """Clean logs: ``volume``/``click_every`` override a day's impression count / click rate."""
    volume = volume or {}
    click_every = click_every or {}
    con = connect(path)
    con.execute(
        "INSERT INTO items SELECT range, range % 7, range % 13, 1.5, 'fx' FROM range(1, 101)"
    )
    con.execute("INSERT INTO users SELECT range, 'fx' FROM range(1, 51)")
    for k in range(BUILT_DAYS):
        day = BUILT_DAY0 + dt.timedelta(days=k)
        n = volume.get(day, PER_DAY)
        every = click_every.get(day, 10)
        # Unexposed rows are the r % 5 = 4 ones; clicks only fall on exposed rows.
        con.execute(
            "INSERT INTO impressions (user_id, item_id, ts, clicked, exposed, position, request_id, "
            "load_id) SELECT 1 + (r * 7) % 50, 1 + (r * 13) % 100, "
            "$day::TIMESTAMP + INTERVAL 1 SECOND * ((r * 211) % 86400), "
            "r % $every = 0 AND r % 5 <> 4, r % 5 <> 4, r % 20, "
            "'req-' || $k || '-' || r, 'fx' FROM range($n) AS t(r)",
            {"day": day, "n": n, "every": every, "k": k},
        )
        con.execute(
            "INSERT INTO behaviors (user_id, ts, item_id, category_id, brand_id, action, load_id) "
            "SELECT 1 + r % 50, $day::TIMESTAMP + INTERVAL 1 SECOND * ((r * 307) % 86400), "
            "1 + r % 100, (1 + r % 100) % 7, (1 + r % 100) % 13, "
            "['pv', 'pv', 'cart', 'fav', 'buy'][1 + r % 5], 'fx' FROM range(300) AS t(r)",
            {"day": day},
        )
    con.close()


@pytest.fixture(scope="module")
def base_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Demo logs (preset tiny), generated once for the module."""
    path = tmp_path_factory.mktemp("validation_base") / "demo.duckdb"
    generate(path, preset="tiny", seed=11, start_date=DEMO_DAY0)
    return path


@pytest.fixture(scope="module")
def docs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One GX context for the module (suites are created once, then reused)."""
    return tmp_path_factory.mktemp("validation_gx") / "gx"


@pytest.fixture
def copy_db(base_db: Path, tmp_path: Path) -> Callable[[], Path]:
    def make(name: str = "w.duckdb") -> Path:
        dst = tmp_path / name
        shutil.copy(base_db, dst)
        return dst

    return make


def _fingerprints(db: Path) -> dict[str, tuple[int, str]]:
    with duckdb.connect(str(db), read_only=True) as con:
        return {t: table_fingerprint(con, t) for t in RAW_TABLES}


def _quarantine(db: Path, table: str) -> set[tuple[int, str]]:
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(
            f"SELECT row_id, check_name FROM quarantine_{table} WHERE stage = 'validation'"
        ).fetchall()
    return set(rows)


def _insert(con: duckdb.DuckDBPyConnection, table: str, row: dict) -> int:
    cols = ", ".join(row)
    marks = ", ".join(f"${c}" for c in row)
    return con.execute(
        f"INSERT INTO {table} ({cols}) VALUES ({marks}) RETURNING row_id", row
    ).fetchall()[0][0]


def _failed(report: ValidationReport) -> set[str]:
    return {c.key for c in report.failed_checks}


def test_clean_day_passes_through_cli(copy_db: Callable[[], Path], docs_dir: Path) -> None:
    db = copy_db()
    before = _fingerprints(db)
    rc = main(
        [
            "validate",
            "--db",
            str(db),
            "--run-date",
            "latest",
            "--docs-dir",
            str(docs_dir),
        ]
    )
    assert rc == 0
    assert _fingerprints(db) == before
    for table in RAW_TABLES:
        assert _quarantine(db, table) == set()
    with duckdb.connect(str(db), read_only=True) as con:
        ((run_date, check_day, success, summary),) = con.execute(
            "SELECT run_date, check_day, success, summary FROM validation_runs"
        ).fetchall()
        n_side = con.execute(
            "SELECT count(*) FROM feature_spec WHERE table_name = 'users'"
        ).fetchall()[0][0]
    assert (run_date, check_day, success) == (RUN_DATE, CHECK_DAY, True)
    summary = json.loads(summary)
    checks = {f"{c['table']}.{c['name']}": c for c in summary["checks"]}
    assert checks["impressions.volume"]["status"] == "passed"
    assert 0.5 < checks["impressions.volume"]["observed"]["ratio"] < 2
    assert checks["impressions.ctr"]["status"] == "passed"
    assert checks["behaviors.click_history"]["status"] == "passed"
    assert checks["users.schema"]["observed"]["side_features"] == n_side > 0
    assert not any(c["name"] == "gx_sql_agreement" for c in summary["checks"])
    index = Path(summary["docs_path"])
    assert index.name == "index.html" and index.is_file()
    assert index.is_relative_to(docs_dir)


@pytest.fixture(scope="module")
def corrupted(
    base_db: Path, docs_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, ValidationReport, dict[str, set[tuple[int, str]]], dict]:
    """A copy with one or more rows of every row-level corruption class, validated once."""
    db = tmp_path_factory.mktemp("validation_rows") / "w.duckdb"
    shutil.copy(base_db, db)
    day = dt.datetime.combine(CHECK_DAY, dt.time(12))
    future = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(days=1)
    expected: dict[str, set[tuple[int, str]]] = {"impressions": set(), "behaviors": set()}
    with duckdb.connect(str(db)) as con:
        (u1, u2, u3, no_user), (i1, no_item) = (
            con.execute(
                "SELECT min(user_id), min(user_id) + 1, min(user_id) + 2, max(user_id) + 1000 "
                "FROM users"
            ).fetchall()[0],
            con.execute("SELECT min(item_id), max(item_id) + 1000 FROM items").fetchall()[0],
        )
        ok = {
            "user_id": u1,
            "item_id": i1,
            "ts": day,
            "clicked": False,
            "exposed": True,
            "position": 1,
        }

        def imp(check: str | None, **change: object) -> int:
            # A request id of its own, so that injected rows are not duplicates of each other.
            unique = {"request_id": f"bad-{len(expected['impressions'])}-{check}"}
            row_id = _insert(con, "impressions", {**ok, **unique, **change})
            if check:
                expected["impressions"].add((row_id, check))
            return row_id

        for col in ("user_id", "item_id", "ts", "clicked", "exposed"):
            imp(f"not_null_{col}", **{col: None})
        imp("clicked_implies_exposed", clicked=True, exposed=False)
        imp("position_non_negative", position=-2)
        imp("item_in_catalog", item_id=no_item)
        imp("user_in_users", user_id=no_user)
        imp(None, ts=future)  # not yet due: judged with its own day, not quarantined now
        # Duplicates: the first copy is kept, later ones go; NULL request ids compare equal.
        first = imp(None, request_id="dup-1", user_id=u2)
        imp("duplicate_impression", request_id="dup-1", user_id=u2)
        imp("duplicate_impression", request_id="dup-1", user_id=u2)
        first_null = imp(None, request_id=None, user_id=u3)
        imp("duplicate_impression", request_id=None, user_id=u3)
        # Same key but another request: not a duplicate.
        other_req = imp(None, request_id="dup-2", user_id=u2)

        beh_ok = {
            "user_id": u1,
            "ts": day,
            "item_id": None,
            "category_id": 1,
            "brand_id": 2,
            "action": "pv",
        }

        def beh(check: str, **change: object) -> None:
            expected["behaviors"].add((_insert(con, "behaviors", {**beh_ok, **change}), check))

        for col in ("user_id", "ts", "action"):
            beh(f"not_null_{col}", **{col: None})
        beh("action_in_set", action="click")
        _insert(con, "behaviors", {**beh_ok, "ts": future})  # not yet due
    kept = {"first": first, "first_null": first_null, "other_req": other_req}
    before = _fingerprints(db)
    report = validate(db, RUN_DATE, docs_dir=docs_dir)
    return db, report, expected, {"kept": kept, "before": before}


def test_row_level_corruptions_are_quarantined_exactly(corrupted) -> None:
    db, report, expected, _ = corrupted
    assert report.success, report.to_text()
    for table in ("impressions", "behaviors"):
        assert _quarantine(db, table) == expected[table]
    assert _quarantine(db, "items") == set() and _quarantine(db, "users") == set()
    for table in ("impressions", "behaviors"):
        by_check: dict[str, int] = {}
        for _, check in expected[table]:
            by_check[check] = by_check.get(check, 0) + 1
        for check, n in by_check.items():
            result = report.check(table, check)
            assert result.level == "row" and result.status == "failed"
            assert result.observed["flagged"] == n == result.observed["gx_unexpected"]
            assert result.observed["quarantined_new"] == n
        assert report.quarantined[table] == len(expected[table])
    assert report.check("impressions", "not_null_user_id").message.startswith("1 of ")
    assert any("1 impressions and 1 behaviours are dated after now" in n for n in report.notes)
    assert not [c for c in report.checks if c.name == "gx_sql_agreement"]
    # The day's share stays under the bound: row-level failures alone do not fail the day.
    share = report.check("impressions", "quarantined_share")
    assert share.status == "passed" and 0 < share.observed["share"] < 0.05


def test_quarantine_keeps_raw_rows_untouched(corrupted) -> None:
    db, _, expected, info = corrupted
    assert _fingerprints(db) == info["before"]
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(
            "SELECT q.row_id, q.run_id, q.reason, q.raw_row, to_json(i) FROM quarantine_impressions q "
            "JOIN impressions i USING (row_id) WHERE q.check_name = 'clicked_implies_exposed'"
        ).fetchall()
    ((row_id, run_id, reason, raw_row, current),) = rows
    assert run_id.startswith("validation-") and "unexposed" in reason
    assert json.loads(raw_row) == json.loads(current)
    assert json.loads(raw_row)["row_id"] == row_id
    kept = info["kept"]
    quarantined_ids = {r for r, _ in expected["impressions"]}
    assert not quarantined_ids & set(kept.values())


def test_revalidation_adds_no_duplicate_quarantine_rows(
    corrupted, tmp_path: Path, docs_dir: Path
) -> None:
    src, _, expected, _ = corrupted
    db = tmp_path / "again.duckdb"
    shutil.copy(src, db)
    with duckdb.connect(str(db), read_only=True) as con:
        n_before = con.execute("SELECT count(*) FROM quarantine_impressions").fetchall()[0][0]
    # complete_result_limit=0: GX returns summaries, and GX/SQL are compared by counts.
    bounds = ValidationBounds(complete_result_limit=0)
    report = validate(db, RUN_DATE, docs_dir=docs_dir, bounds=bounds)
    assert report.success
    assert not [c for c in report.checks if c.name == "gx_sql_agreement"]
    assert report.quarantined == dict.fromkeys(RAW_TABLES, 0)
    assert report.flagged["impressions"] == len({r for r, _ in expected["impressions"]})
    with duckdb.connect(str(db), read_only=True) as con:
        n_after = con.execute("SELECT count(*) FROM quarantine_impressions").fetchall()[0][0]
        n_runs = con.execute("SELECT count(*) FROM validation_runs").fetchall()[0][0]
    assert n_after == n_before == len(expected["impressions"])
    assert _quarantine(db, "behaviors") == expected["behaviors"]
    assert n_runs == 2


def test_schema_drift_fails_with_named_columns(
    copy_db: Callable[[], Path], docs_dir: Path, capsys
) -> None:
    db = copy_db()
    with duckdb.connect(str(db)) as con:
        con.execute("ALTER TABLE impressions ALTER position TYPE VARCHAR")
        con.execute("ALTER TABLE behaviors DROP COLUMN brand_id")
        con.execute("ALTER TABLE items ADD COLUMN colour VARCHAR")  # not declared in feature_spec
    before = _fingerprints(db)
    rc = main(
        [
            "validate",
            "--db",
            str(db),
            "--run-date",
            RUN_DATE.isoformat(),
            "--docs-dir",
            str(docs_dir),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 1
    assert "FAILED impressions.schema" in out
    assert "impressions.position is VARCHAR, contract says INTEGER" in out
    assert "behaviors.brand_id is missing" in out
    assert "items.colour (VARCHAR) is not in the contract nor declared in feature_spec" in out
    assert "FAILED users.schema" not in out  # users.gender is a declared side feature
    assert _fingerprints(db) == before


def test_unregistered_column_allowed_by_bound(copy_db: Callable[[], Path], docs_dir: Path) -> None:
    db = copy_db()
    with duckdb.connect(str(db)) as con:
        con.execute("ALTER TABLE items ADD COLUMN colour VARCHAR")
    report = validate(
        db, RUN_DATE, docs_dir=docs_dir, bounds=ValidationBounds(allow_unregistered_columns=True)
    )
    assert report.success, report.to_text()


def test_empty_day_fails(copy_db: Callable[[], Path], docs_dir: Path) -> None:
    db = copy_db()
    report = validate(db, RUN_DATE + dt.timedelta(days=1), docs_dir=docs_dir)  # checks 10-09
    assert not report.success
    assert "impressions.day_not_empty" in _failed(report)
    assert report.check("impressions", "day_not_empty").message == "no impressions on 2026-10-09"
    assert report.check("impressions", "volume").status == "skipped"
    assert "FAILED impressions.day_not_empty: no impressions on 2026-10-09" in report.to_text()


def test_volume_collapse_fails_with_numbers(tmp_path: Path, docs_dir: Path) -> None:
    db = tmp_path / "collapse.duckdb"
    _build_warehouse(db, volume={BUILT_CHECK_DAY: 12})
    report = validate(db, BUILT_RUN_DATE, docs_dir=docs_dir)
    assert _failed(report) == {"impressions.volume"}
    msg = report.check("impressions", "volume").message
    assert msg == (
        "12 impressions on 2026-10-10 is 0.03x the trailing median 400 (allowed 0.5x–1.6x; "
        "previous day 400)"
    )
    assert report.check("impressions", "volume").observed["ratio"] == pytest.approx(12 / 400)


def test_ctr_collapse_fails_with_numbers(tmp_path: Path, docs_dir: Path) -> None:
    db = tmp_path / "ctr.duckdb"
    _build_warehouse(db, click_every={BUILT_CHECK_DAY: 200})
    report = validate(db, BUILT_RUN_DATE, docs_dir=docs_dir)
    assert _failed(report) == {"impressions.ctr"}
    ctr = report.check("impressions", "ctr")
    # Trailing days: 40 clicks / 320 exposed = 0.125; the checked day: 2 / 320.
    assert ctr.observed["trailing_median"] == pytest.approx(0.125)
    assert ctr.observed["ratio"] == pytest.approx((2 / 320) / 0.125)
    assert ctr.message == (
        "CTR 0.0063 (2 clicks / 320 exposed) on 2026-10-10 is 0.05x the trailing median "
        "0.1250 (allowed 0.8x–1.25x; z = -6.0)"
    )


def test_too_many_bad_rows_fail_the_day(copy_db: Callable[[], Path], docs_dir: Path) -> None:
    db = copy_db()
    with duckdb.connect(str(db)) as con:
        n_day = con.execute(
            "SELECT count(*) FROM impressions WHERE ts::DATE = $d", {"d": CHECK_DAY}
        ).fetchall()[0][0]
        n_bad = n_day // 10
        con.execute(
            "INSERT INTO impressions (user_id, item_id, ts, clicked, exposed, load_id) "
            "SELECT (SELECT min(user_id) FROM users), (SELECT min(item_id) FROM items), "
            "$ts::TIMESTAMP + INTERVAL 1 SECOND * r, true, false, 'bad' FROM range($n) t(r)",
            {"ts": dt.datetime.combine(CHECK_DAY, dt.time(8)), "n": n_bad},
        )
    report = validate(db, RUN_DATE, docs_dir=docs_dir)
    assert _failed(report) == {"impressions.quarantined_share"}
    total = n_day + n_bad
    assert report.check("impressions", "quarantined_share").message == (
        f"{n_bad:,} of {total:,} impressions on 2026-10-08 are quarantined "
        f"({n_bad / total:.1%}; allowed at most 5.0%)"
    )
    assert report.quarantined["impressions"] == n_bad


def test_few_trailing_days_skip_and_extended_actions(
    copy_db: Callable[[], Path], docs_dir: Path
) -> None:
    db = copy_db()
    with duckdb.connect(str(db)) as con:
        click = _insert(
            con,
            "behaviors",
            {
                "user_id": con.execute("SELECT min(user_id) FROM users").fetchall()[0][0],
                "ts": dt.datetime.combine(DEMO_DAY0 + dt.timedelta(days=1), dt.time(9)),
                "action": "click",
            },
        )
    bounds = ValidationBounds(actions=(*DEFAULT_ACTIONS, "click"))
    report = validate(db, DEMO_DAY0 + dt.timedelta(days=2), docs_dir=docs_dir, bounds=bounds)
    assert report.success, report.to_text()
    assert report.check("impressions", "volume").status == "skipped"
    assert "only 1 trailing day(s)" in report.check("impressions", "volume").message
    assert report.check("behaviors", "action_in_set").status == "passed"
    assert (click, "action_in_set") not in _quarantine(db, "behaviors")
    # The same row under the default vocabulary is quarantined.
    report = validate(db, DEMO_DAY0 + dt.timedelta(days=2), docs_dir=docs_dir)
    assert _quarantine(db, "behaviors") == {(click, "action_in_set")}


def test_gx_sql_disagreement_is_reported() -> None:
    def outcome(success: bool, count: int, ids: list[int] | None) -> ExpectationOutcome:
        return ExpectationOutcome(
            "c", "ExpectColumnValuesToNotBeNull", success, 10, count, ids, [], None
        )

    assert _disagreement(outcome(False, 2, [3, 5]), 2, [3, 5]) == ""
    assert _disagreement(outcome(True, 0, []), 0, []) == ""
    assert "SQL flagged 1 rows" in _disagreement(outcome(True, 0, []), 1, [3])
    assert "GX flagged 2 rows, SQL 1" in _disagreement(outcome(False, 2, [3, 4]), 1, [3])
    assert "only GX: [4], only SQL: [5]" in _disagreement(outcome(False, 2, [3, 4]), 2, [3, 5])
    assert _disagreement(outcome(False, 2, None), 2, [3, 5]) == ""  # summary: counts only
    assert _disagreement(None, 0, []) == "no GX result"


def test_bad_arguments_have_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        validate(tmp_path / "nope.duckdb", RUN_DATE)
    with pytest.raises(ValueError, match="volume_ratio"):
        ValidationBounds(volume_ratio=(5, 0.2))
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        db = tmp_path / "w.duckdb"
        connect(db).close()
        validate(db, "10/11/2026")


# ----------------------------------------------------------------------------- the window


def test_window_checked_by_day_chunks_quarantines_what_one_chunk_does(
    copy_db: Callable[[], Path], docs_dir: Path
) -> None:
    """Row-level checks read the window a chunk of days at a time, or days too big for one
    chunk in parts by user: the same rows quarantined, GX and SQL agreeing chunk by chunk, as
    when the whole window is one chunk."""
    dbs = {
        "one": copy_db("one.duckdb"),
        "by_day": copy_db("by_day.duckdb"),
        "split": copy_db("split.duckdb"),
    }
    for db in dbs.values():
        with duckdb.connect(str(db)) as con:
            u, i = con.execute("SELECT min(user_id), min(item_id) FROM users, items").fetchall()[0]
            ok = {"user_id": u, "item_id": i, "clicked": False, "exposed": True, "position": 1}
            rows = [
                (1, {"clicked": True, "exposed": False}),
                (2, {"position": -1}),
                (3, {"ts": None}),
                (1, {"request_id": "twice"}),  # reused on another day, so in another chunk
                (2, {"request_id": "twice"}),
                *[(3, {"request_id": "dup"})] * 3,  # two duplicates of the first
            ]
            for k, (offset, change) in enumerate(rows):
                ts = dt.datetime.combine(DEMO_DAY0 + dt.timedelta(days=offset), dt.time(7))
                _insert(con, "impressions", {**ok, "ts": ts, "request_id": f"c{k}", **change})
            _insert(
                con,
                "behaviors",
                {
                    "user_id": u,
                    "ts": dt.datetime.combine(DEMO_DAY0 + dt.timedelta(days=2), dt.time(9)),
                    "action": "click",
                },
            )
    reports = {
        name: validate(
            db,
            RUN_DATE,
            docs_dir=docs_dir,
            window_days=19,
            bounds=ValidationBounds(max_chunk_rows={"by_day": 0, "split": 1_000}.get(name, 10**9)),
        )
        for name, db in dbs.items()
    }
    one, by_day, split = reports["one"], reports["by_day"], reports["split"]
    assert len(by_day.days) == len(one.days) == 8
    for table in ("impressions", "behaviors"):
        assert _quarantine(dbs["by_day"], table) == _quarantine(dbs["one"], table) != set()
        assert _quarantine(dbs["split"], table) == _quarantine(dbs["one"], table)
        assert by_day.flagged[table] == one.flagged[table] == split.flagged[table]
    flagged = {
        c.key: (c.observed["flagged"], c.observed["gx_unexpected"], c.observed["row_ids"])
        for c in one.checks
        if c.level == "row"
    }
    for report in (by_day, split):
        assert {
            c.key: (c.observed["flagged"], c.observed["gx_unexpected"], c.observed["row_ids"])
            for c in report.checks
            if c.level == "row"
        } == flagged
    assert flagged["impressions.duplicate_impression"][0] == 2
    assert flagged["impressions.request_id_reused"][0] == 1  # its first row is another chunk's
    assert flagged["impressions.not_null_ts"][0] == 1  # the undated row: in the last chunk
    assert by_day.check("impressions", "position_non_negative").observed["chunks"] == 8
    assert one.check("impressions", "position_non_negative").observed["chunks"] == 1
    assert not [c for c in by_day.checks + split.checks if c.name == "gx_sql_agreement"]
    assert by_day.success == one.success == split.success
    assert any("impressions ran in 8 chunks" in n for n in by_day.notes)
    # Tiny's days hold ~3k impressions: each is split in parts of at most 1,000 by user.
    parts = split.check("impressions", "position_non_negative").observed["chunks"]
    assert parts >= 3 * 8
    assert any(
        f"impressions ran in {parts} chunks" in n and "split by user" in n for n in split.notes
    )
    assert by_day.docs_path is not None and by_day.docs_path.is_file()


ACCEPT_DAY = dt.date(2026, 10, 5)  # 4 trailing days: its volume is judged


def test_an_accepted_old_day_passes_until_its_rows_change(
    tmp_path: Path, docs_dir: Path, capsys
) -> None:
    db = tmp_path / "accept.duckdb"
    _build_warehouse(db, volume={ACCEPT_DAY: 12})
    window = [
        "--db",
        str(db),
        "--run-date",
        BUILT_RUN_DATE.isoformat(),
        "--docs-dir",
        str(docs_dir),
        "--train-days",
        "19",
    ]
    # A window day that fails a table-level check fails every run while it is in the window.
    for _ in range(2):
        assert main(["validate", *window]) == 1
        assert "FAILED impressions.volume@2026-10-05" in capsys.readouterr().out
    accept = ["validate", "--db", str(db), "--accept-day", ACCEPT_DAY.isoformat()]
    assert main(accept) == 2
    assert "needs --reason" in capsys.readouterr().err
    assert main([*accept, "--reason", "feed outage, confirmed", "--accepted-by", "ops-ann"]) == 0
    assert "accepted 2026-10-05" in capsys.readouterr().out
    assert main([*accept, "--reason", "again"]) == 2  # its latest verdict passes now
    assert "already accepted" in capsys.readouterr().err
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(
            "SELECT table_name, success, accepted_by, reason FROM validated_days "
            "WHERE accepted_by IS NOT NULL ORDER BY table_name"
        ).fetchall()
    assert rows == [
        ("behaviors", True, "ops-ann", "feed outage, confirmed"),
        ("impressions", True, "ops-ann", "feed outage, confirmed"),
    ]

    report = validate(db, BUILT_RUN_DATE, docs_dir=docs_dir, window_days=19)
    assert report.success, report.to_text()
    assert ACCEPT_DAY not in report.days
    ((acc),) = report.accepted
    assert (acc["day"], acc["accepted_by"], acc["reason"]) == (
        "2026-10-05",
        "ops-ann",
        "feed outage, confirmed",
    )
    assert acc["failed_run_id"].startswith("validation-")
    assert "accepted by an operator: 2026-10-05 by ops-ann" in report.to_text()
    assert report.to_dict()["accepted"] == [acc]

    # New rows on the day (one of them bad): the day is validated afresh, rows quarantined,
    # the volume judged and failed again, and the acceptance no longer applies.
    with duckdb.connect(str(db)) as con:
        bad = _insert(
            con,
            "impressions",
            {
                "user_id": 1,
                "item_id": 1,
                "ts": dt.datetime.combine(ACCEPT_DAY, dt.time(5)),
                "clicked": True,
                "exposed": False,
                "position": 1,
                "request_id": "late-1",
            },
        )
    report = validate(db, BUILT_RUN_DATE, docs_dir=docs_dir, window_days=19)
    assert not report.success
    assert ACCEPT_DAY in report.days and report.accepted == []
    assert "impressions.volume@2026-10-05" in report.to_dict()["failed"]
    assert (bad, "clicked_implies_exposed") in _quarantine(db, "impressions")
    assert main([*accept, "--reason", "still the outage"]) == 0
    assert validate(db, BUILT_RUN_DATE, docs_dir=docs_dir, window_days=19).success


def test_accept_day_refuses_what_it_cannot_accept(tmp_path: Path, docs_dir: Path) -> None:
    from tarq.validation import accept_day

    db = tmp_path / "refuse.duckdb"
    _build_warehouse(db, volume={ACCEPT_DAY: 12})
    with pytest.raises(ValueError, match="never validated"):
        accept_day(db, ACCEPT_DAY, "why")
    assert not validate(db, BUILT_RUN_DATE, docs_dir=docs_dir, window_days=19).success
    with pytest.raises(ValueError, match="passed in its latest validation"):
        accept_day(db, ACCEPT_DAY + dt.timedelta(days=1), "why")
    with pytest.raises(ValueError, match="no impressions or behaviours"):
        accept_day(db, dt.date(2026, 9, 1), "why")
    with pytest.raises(ValueError, match="needs a reason"):
        accept_day(db, ACCEPT_DAY, "  ")
    with duckdb.connect(str(db)) as con:
        con.execute(
            "INSERT INTO behaviors (user_id, ts, action) VALUES (1, $ts, 'pv')",
            {"ts": dt.datetime.combine(ACCEPT_DAY, dt.time(3))},
        )
    with pytest.raises(ValueError, match="changed since its last validation"):
        accept_day(db, ACCEPT_DAY, "why")


# ----------------------------------------------------------------------------- the flow


def test_flow_validation_bounds_take_effect_and_bad_keys_are_named(
    copy_db: Callable[[], Path], docs_dir: Path
) -> None:
    from pydantic import ValidationError

    from flows.tarq_daily import DailyParams
    from flows.tasks import validate_logs

    tight = DailyParams(validation={"volume_ratio": [0.999, 1.001]})
    for params, success in ((DailyParams(), True), (tight, False)):
        report = validate_logs.fn(
            copy_db(f"{success}.duckdb"),
            RUN_DATE.isoformat(),
            docs_dir,
            params.train_days,
            params.validation,
        )
        assert report["success"] is success, report["text"]
    assert "impressions.volume" in report["failed"]
    assert "allowed 0.999x–1.001x" in report["text"]
    with pytest.raises(ValidationError, match=r"unknown validation bound\(s\) \['volume_ratoi'\]"):
        DailyParams(validation={"volume_ratoi": [0.5, 2]})
    with pytest.raises(ValidationError, match="volume_ratio must be a pair"):
        DailyParams(validation={"volume_ratio": "wide"})
    with pytest.raises(ValidationError, match="must satisfy 0 <= low < high"):
        DailyParams(validation={"volume_ratio": [2, 1]})


def test_an_accepted_test_day_is_not_judged_on_a_rerun(tmp_path: Path, docs_dir: Path) -> None:
    from tarq.validation import accept_day

    db = tmp_path / "accept_test_day.duckdb"
    _build_warehouse(db, volume={BUILT_CHECK_DAY: 12})
    assert _failed(validate(db, BUILT_RUN_DATE, docs_dir=docs_dir)) == {"impressions.volume"}
    accept_day(db, BUILT_CHECK_DAY, "a half-day feed, known", accepted_by="ops-bo")
    for _ in range(2):  # the acceptance outlives the reruns that check the day again
        report = validate(db, BUILT_RUN_DATE, docs_dir=docs_dir)
        assert report.success, report.to_text()
        volume = report.check("impressions", "volume")
        assert volume.status == "skipped"
        assert "accepted by an operator (ops-bo on " in volume.message
        assert "a half-day feed, known" in volume.message
        assert [a["day"] for a in report.accepted] == [BUILT_CHECK_DAY.isoformat()]
