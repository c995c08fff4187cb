"""The demo-log generator: determinism, invariants of the logs, refusal to append twice, and the
planted effect (clicks depend on specific history items, not only on user-level taste)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tarq.cli import main as cli_main
from tarq.data.demo import generate, generate_from_config, history_match_lift
from tarq.data.demo_world import ACTIONS, PRESETS, DemoConfig, preset_config
from tarq.store.warehouse import RAW_TABLES, connect, open_db, table_fingerprint

START = dt.date(2026, 10, 1)


def _fingerprints(db: Path) -> dict[str, tuple[int, str]]:
    with open_db(db, read_only=True) as con:
        return {t: table_fingerprint(con, t) for t in RAW_TABLES}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    db = tmp_path_factory.mktemp("demo") / "tiny.duckdb"
    return db, generate(db, preset="tiny", seed=7, start_date=START)


def test_same_seed_gives_identical_tables_and_another_seed_differs(tiny, tmp_path):
    db, _ = tiny
    again = tmp_path / "again.duckdb"
    generate(again, preset="tiny", seed=7, start_date=START)
    other = tmp_path / "other.duckdb"
    generate(other, preset="tiny", seed=8, start_date=START)
    first, second, third = _fingerprints(db), _fingerprints(again), _fingerprints(other)
    assert first == second
    for table in RAW_TABLES:
        assert first[table] != third[table], table


def test_report_matches_the_tables(tiny):
    db, report = tiny
    cfg = PRESETS["tiny"]
    with open_db(db, read_only=True) as con:
        for table in RAW_TABLES:
            n = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            assert report["rows"][table] == n, table
        n_imp, n_exp, n_clk = con.execute(
            "SELECT count(*), count(*) FILTER (exposed), count(*) FILTER (clicked) FROM impressions"
        ).fetchone()
        kind, source, stored = con.execute(
            "SELECT source_kind, source, report FROM loads WHERE load_id = $id",
            {"id": report["load_id"]},
        ).fetchone()
        load_ids = {
            r[0]
            for t in RAW_TABLES
            for r in con.execute(f"SELECT DISTINCT load_id FROM {t}").fetchall()
        }
    assert (kind, source) == ("demo", "demo:tiny:seed=7")
    assert json.loads(stored)["rows"] == report["rows"]
    assert load_ids == {report["load_id"]}
    assert report["ctr"] == pytest.approx(n_clk / n_exp)
    assert report["exposure_rate"] == pytest.approx(n_exp / n_imp)
    assert (report["first_day"], report["last_day"]) == ("2026-10-01", "2026-10-08")
    assert report["rows"]["users"] == cfg.n_users and report["rows"]["items"] == cfg.n_items
    # Sizes of the preset: ~2-4k impressions per day, a few behaviours per impression.
    assert all(2_000 <= n <= 4_500 for n in report["impressions_per_day"].values())
    assert len(report["impressions_per_day"]) == cfg.n_days
    assert 1.0 <= report["behaviors_per_impression"] <= 5.0
    assert 0.03 <= report["ctr"] <= 0.3 and 0.4 <= report["exposure_rate"] <= 0.8
    assert report["planted_effect"]["click_model"]["similarity"] > 0


def test_log_invariants(tiny):
    db, report = tiny
    with open_db(db, read_only=True) as con:

        def one(sql: str) -> object:
            return con.execute(sql).fetchone()[0]

        # No null keys; every reference resolves.
        assert (
            one(
                "SELECT count(*) FROM impressions WHERE user_id IS NULL OR item_id IS NULL "
                "OR ts IS NULL OR clicked IS NULL OR exposed IS NULL OR request_id IS NULL"
            )
            == 0
        )
        assert (
            one(
                "SELECT count(*) FROM behaviors WHERE user_id IS NULL OR ts IS NULL "
                "OR item_id IS NULL OR category_id IS NULL OR brand_id IS NULL "
                "OR action IS NULL"
            )
            == 0
        )
        assert (
            one("SELECT count(*) FROM impressions WHERE item_id NOT IN (SELECT item_id FROM items)")
            == 0
        )
        assert (
            one("SELECT count(*) FROM impressions WHERE user_id NOT IN (SELECT user_id FROM users)")
            == 0
        )
        assert (
            one(
                "SELECT count(*) FROM behaviors b LEFT JOIN items i USING (item_id) "
                "WHERE i.item_id IS NULL OR i.category_id <> b.category_id "
                "OR i.brand_id <> b.brand_id"
            )
            == 0
        )
        # Brands belong to one category.
        assert (
            one(
                "SELECT max(n) FROM (SELECT count(DISTINCT category_id) AS n FROM items "
                "GROUP BY brand_id)"
            )
            == 1
        )
        # Clicked implies exposed; exposed rows have a display position, the others none.
        assert one("SELECT count(*) FROM impressions WHERE clicked AND NOT exposed") == 0
        assert one("SELECT count(*) FROM impressions WHERE exposed <> (position IS NOT NULL)") == 0
        # A request is one user at one time, with unique items and positions 0..k-1.
        assert (
            one(
                "SELECT count(*) FROM (SELECT request_id, item_id FROM impressions "
                "GROUP BY ALL HAVING count(*) > 1)"
            )
            == 0
        )
        assert (
            one(
                "SELECT count(*) FROM (SELECT request_id FROM impressions GROUP BY ALL "
                "HAVING count(DISTINCT user_id) > 1 OR count(DISTINCT ts) > 1 "
                "OR count(position) <> coalesce(max(position) + 1, 0) "
                "OR count(DISTINCT position) <> count(position))"
            )
            == 0
        )
        assert one("SELECT count(*) FILTER (NOT exposed) FROM impressions") > 0
        # Timestamps fall inside the generated days; each day has impressions.
        days = con.execute("SELECT DISTINCT ts::DATE FROM impressions ORDER BY 1").fetchall()
        assert [d[0] for d in days] == [START + dt.timedelta(days=i) for i in range(8)]
        lo, hi = con.execute("SELECT min(ts), max(ts) FROM behaviors").fetchone()
        assert lo >= dt.datetime(2026, 10, 1) and hi < dt.datetime(2026, 10, 9)
        # Exactly Taobao's four actions, pv the most common.
        actions = dict(con.execute("SELECT action, count(*) FROM behaviors GROUP BY 1").fetchall())
        assert set(actions) == set(ACTIONS) and max(actions, key=actions.get) == "pv"
        # Every click is followed by a pv of the clicked item within five minutes.
        assert (
            one(
                "SELECT count(*) FROM impressions i WHERE clicked AND NOT EXISTS ("
                "SELECT 1 FROM behaviors b WHERE b.user_id = i.user_id AND b.item_id = i.item_id "
                "AND b.action = 'pv' AND b.ts > i.ts "
                "AND b.ts <= i.ts + INTERVAL 5 MINUTE)"
            )
            == 0
        )
        # Users browse between requests: most impressions have behaviours before them that day.
        with_history = one(
            "SELECT avg(((SELECT count(*) FROM behaviors b WHERE b.user_id = r.u "
            "AND b.ts < r.t AND b.ts >= r.t::DATE) > 0)::INT) FROM (SELECT "
            "DISTINCT request_id, user_id AS u, ts AS t FROM impressions) r"
        )
        assert with_history > 0.9
        # Part of the catalog is never shown (items launched late, cold tail).
        never = one(
            "SELECT count(*) FROM items WHERE item_id NOT IN (SELECT item_id FROM impressions)"
        )
        assert never == report["items_never_shown"] > 0
        assert one("SELECT count(*) FROM items WHERE price IS NULL OR price > 0") == 600
        # Side features are declared in the feature spec.
        spec = set(con.execute("SELECT table_name, column_name, kind FROM feature_spec").fetchall())
        assert {
            ("users", "gender", "categorical"),
            ("users", "age_bucket", "categorical"),
            ("users", "segment", "categorical"),
            ("items", "shop_id", "categorical"),
        } <= spec
        assert (
            one(
                "SELECT count(*) FROM users WHERE gender IS NULL OR age_bucket IS NULL "
                "OR segment IS NULL"
            )
            == 0
        )


def test_refuses_to_append_a_second_copy(tiny, tmp_path):
    db = tmp_path / "copy.duckdb"
    shutil.copy(tiny[0], db)
    before = _fingerprints(db)
    with pytest.raises(ValueError, match=r"already holds .* impressions"):
        generate(db, preset="tiny", seed=7)
    assert _fingerprints(db) == before
    # The CLI maps the refusal to exit code 2 and skips quietly with --if-missing.
    assert cli_main(["demo-data", "--db", str(db), "--preset", "tiny"]) == 2
    assert cli_main(["demo-data", "--db", str(db), "--preset", "tiny", "--if-missing"]) == 0
    assert _fingerprints(db) == before


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown demo preset 'huge'"):
        generate(tmp_path / "x.duckdb", preset="huge")
    with pytest.raises(ValueError, match="non-negative integer"):
        generate(tmp_path / "x.duckdb", preset="tiny", seed=-1)


def test_demo_ids_start_after_an_existing_catalog(tmp_path):
    db = tmp_path / "pre.duckdb"
    con = connect(db)
    con.execute(
        "INSERT INTO items (item_id, category_id, brand_id, price) VALUES (5000, 1, 1, 2.0)"
    )
    con.execute("INSERT INTO users (user_id) VALUES (900)")
    con.close()
    cfg = dataclasses.replace(preset_config("tiny"), n_days=2)
    generate_from_config(db, cfg, seed=1)
    with open_db(db, read_only=True) as con:
        assert (
            con.execute("SELECT min(item_id) FROM items WHERE load_id IS NOT NULL").fetchone()[0]
            == 5001
        )
        assert (
            con.execute("SELECT min(user_id) FROM users WHERE load_id IS NOT NULL").fetchone()[0]
            == 901
        )


def _effect(db: Path, cfg: DemoConfig, seed: int) -> dict[str, float]:
    generate_from_config(db, cfg, seed=seed, start_date=START)
    with open_db(db, read_only=True) as con:
        return history_match_lift(con)


def _check_planted_effect(real: dict[str, float], control: dict[str, float]) -> None:
    """The stratified CTR ratio of "target category among the last 5 behaviours" holds user
    and daily taste fixed: clearly above 1 with the history terms, ≈ 1 in the taste-only
    control. The control's raw (unstratified) ratio is above 1 too — taste alone makes recent
    categories look clickier — which is why the comparison is stratified."""
    assert control["informative_strata"] > 1_000 and real["informative_strata"] > 1_000
    assert real["mh_ctr_ratio"] >= 1.15, real
    assert 0.85 <= control["mh_ctr_ratio"] <= 1.12, control
    assert real["mh_ctr_ratio"] - control["mh_ctr_ratio"] >= 0.15
    assert control["matched_ctr"] / control["unmatched_ctr"] > 1.1, control


def _control(cfg: DemoConfig) -> DemoConfig:
    """The taste-only control of ``cfg``, its bias raised by the history part's mean (≈ 1.5
    logits) so that it has about as many clicks as the real world: the stratified ratio of a
    control with a few hundred clicks is too noisy to sit near 1."""
    click = cfg.click.taste_only()
    return dataclasses.replace(cfg, click=dataclasses.replace(click, bias=click.bias + 1.5))


def test_planted_effect_is_about_specific_history_items(tmp_path):
    # The tiny catalog with denser traffic (more requests per user-day) for statistical power.
    cfg = dataclasses.replace(preset_config("tiny"), n_users=200, impressions_per_day=10_000)
    real = _effect(tmp_path / "real.duckdb", cfg, seed=7)
    control = _effect(tmp_path / "control.duckdb", _control(cfg), seed=7)
    _check_planted_effect(real, control)


@pytest.mark.slow
def test_planted_effect_on_the_small_preset(tmp_path):
    cfg = preset_config("small")
    real = _effect(tmp_path / "real.duckdb", cfg, seed=7)
    control = _effect(tmp_path / "control.duckdb", _control(cfg), seed=7)
    _check_planted_effect(real, control)
    assert np.isfinite(real["mh_odds_ratio"])


# ----------------------------------------------------------------------------- the window

# The tiny preset's tables for seed 7 and 2026-10-01 .. 2026-10-08: rows and a sha256 of their
# repr in key order (independent of DuckDB's hash function). Pinned at commit 497574b (before
# windows could end on a given day and days could be appended); the logs were re-pinned when
# the click model gained the multi-interest term (docs/demo-data.md, "The click model": other
# clicks, hence other follow-up behaviours and histories); the catalog and users are unchanged.
TINY_CONTENT = {
    "items": (600, "2812a7a687460972"),
    "users": (300, "e25158130da0a325"),
    "impressions": (24004, "42a1baeee2c49f02"),
    "behaviors": (53017, "a0ec73dd452b6117"),
}
_KEYS = {"items": "item_id", "users": "user_id", "impressions": "row_id", "behaviors": "row_id"}


def _content(db: Path) -> dict[str, tuple[int, str]]:
    out = {}
    with open_db(db, read_only=True) as con:
        for table, key in _KEYS.items():
            rows = con.execute(f"SELECT * FROM {table} ORDER BY {key}").fetchall()
            digest = hashlib.sha256("".join(map(repr, rows)).encode()).hexdigest()[:16]
            out[table] = (len(rows), digest)
    return out


def test_end_date_gives_the_same_tables_as_before_for_the_same_window(tiny, tmp_path):
    db = tmp_path / "end.duckdb"
    report = generate(db, preset="tiny", seed=7, end_date=dt.date(2026, 10, 8))
    assert (report["first_day"], report["last_day"]) == ("2026-10-01", "2026-10-08")
    assert _fingerprints(db) == _fingerprints(tiny[0])
    assert _content(db) == TINY_CONTENT
    # Through the command line, too (its window flags are mutually exclusive).
    cli_db = tmp_path / "cli.duckdb"
    argv = ["demo-data", "--db", str(cli_db), "--preset", "tiny", "--end-date", "2026-10-08"]
    assert cli_main(argv) == 0
    assert _fingerprints(cli_db) == _fingerprints(db)
    with pytest.raises(ValueError, match="not both"):
        generate(tmp_path / "x.duckdb", preset="tiny", start_date=START, end_date=START)


def test_the_default_window_ends_yesterday_utc(tmp_path, capsys):
    from tarq.data.demo import default_end_date

    assert default_end_date(dt.datetime(2027, 3, 1, 0, 30)) == dt.date(2027, 2, 28)
    cfg = dataclasses.replace(preset_config("tiny"), n_days=2)
    before = dt.datetime.now(dt.UTC).date()
    report = generate_from_config(tmp_path / "w.duckdb", cfg, seed=7)
    after = dt.datetime.now(dt.UTC).date()
    last = dt.date.fromisoformat(report["last_day"])
    assert last in {before - dt.timedelta(days=1), after - dt.timedelta(days=1)}
    assert dt.date.fromisoformat(report["first_day"]) == last - dt.timedelta(days=1)
    with open_db(tmp_path / "w.duckdb", read_only=True) as con:
        days = con.execute("SELECT DISTINCT ts::DATE FROM impressions ORDER BY 1").fetchall()
    assert [d[0] for d in days] == [last - dt.timedelta(days=1), last]
    # The command line's default is the same: the tiny preset's 8 days ending yesterday.
    assert cli_main(["demo-data", "--db", str(tmp_path / "cli.duckdb"), "--preset", "tiny"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["last_day"] == str(dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1))
    assert printed["days"] == 8 and printed["load_id"].endswith(
        (dt.date.fromisoformat(printed["last_day"]) - dt.timedelta(days=7)).strftime("%Y%m%d")
    )


# ----------------------------------------------------------------------------- --next-day

_IMP_COLS = "row_id, user_id, item_id, ts, clicked, exposed, position, request_id"
_BEH_COLS = "row_id, user_id, ts, item_id, category_id, brand_id, action"


def _day_rows(db: Path, day: dt.date) -> dict[str, list[tuple]]:
    """Every column but load_id of the impressions and behaviours logged on ``day``."""
    lo, hi = dt.datetime.combine(day, dt.time()), dt.datetime.combine(day, dt.time.max)
    with open_db(db, read_only=True) as con:
        return {
            t: con.execute(
                f"SELECT {cols} FROM {t} WHERE ts BETWEEN $lo AND $hi ORDER BY row_id",
                {"lo": lo, "hi": hi},
            ).fetchall()
            for t, cols in (("impressions", _IMP_COLS), ("behaviors", _BEH_COLS))
        }


@pytest.fixture(scope="module")
def direct(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny world simulated for 10 days in one go (its 8-day window and 2 more days)."""
    db = tmp_path_factory.mktemp("demo_direct") / "ten.duckdb"
    generate_from_config(db, preset_config("tiny"), seed=7, start_date=START, days=10)
    return db


def test_next_day_continues_the_world_exactly(tiny, direct, tmp_path, capsys):
    """Appending day 9 (then day 10) to the 8-day warehouse gives exactly the rows of the
    world simulated for 10 days in one go: the same users, catalog, drifted interests and
    histories, the same row ids. Nothing that was there changes."""
    from tarq.data.demo import append_day
    from tarq.store.warehouse import raw_fingerprints

    db = tmp_path / "w.duckdb"
    shutil.copy(tiny[0], db)
    with open_db(db, read_only=True) as con:
        before = raw_fingerprints(con, by_load=True)
    report = append_day(db)
    day9, day10 = dt.date(2026, 10, 9), dt.date(2026, 10, 10)
    base = "demo-tiny-seed7-20261001"
    assert report["load_id"] == f"{base}-20261009" and report["continues"] == base
    assert (report["first_day"], report["last_day"], report["days"]) == (str(day9), str(day9), 1)
    assert cli_main(["demo-data", "--db", str(db), "--next-day"]) == 0
    assert "appended 2026-10-10" in capsys.readouterr().out

    for day in (day9, day10):
        got, want = _day_rows(db, day), _day_rows(direct, day)
        assert len(got["impressions"]) > 2_000 and len(got["behaviors"]) > 2_000
        assert got == want, day
    with open_db(db, read_only=True) as con:
        after = raw_fingerprints(con, by_load=True)
        loads = dict(
            con.execute(
                "SELECT load_id, report::VARCHAR FROM loads WHERE source_kind = 'demo'"
            ).fetchall()
        )
        # Same users; the catalog grows: items held back from the window go live.
        outsiders = con.execute(
            "SELECT count(*) FROM impressions WHERE ts >= '2026-10-09' AND (user_id NOT IN "
            "(SELECT user_id FROM users) OR item_id NOT IN (SELECT item_id FROM items))"
        ).fetchone()[0]
        new_items = con.execute(
            "SELECT count(DISTINCT item_id) FROM impressions WHERE ts >= '2026-10-09' AND "
            "item_id NOT IN (SELECT item_id FROM impressions WHERE ts < '2026-10-09')"
        ).fetchone()[0]
    # Append-only: the window's rows are untouched, each day is a load of its own.
    assert {k: v for k, v in after.items() if k[1] == base} == before
    assert {lid for _, lid in after} == {base, f"{base}-20261009", f"{base}-20261010"}
    assert (
        after[("items", base)] == before[("items", base)]
        and ("items", report["load_id"]) not in after
    )
    stored = json.loads(loads[f"{base}-20261009"])
    assert stored["rows"]["impressions"] == len(_day_rows(db, day9)["impressions"])
    assert outsiders == 0 and new_items > 0 and report["items_launched"] > 0
    # The planted effect goes on: the same click model, a history part of the same size.
    window = json.loads(loads[base])["planted_effect"]
    assert json.loads(json.dumps(report["planted_effect"]["click_model"])) == window["click_model"]
    assert report["planted_effect"]["history_logit_sd"] > 0.5 * window["history_logit_sd"] > 0


def test_next_day_through_a_day_catches_up_in_order(tiny, direct, tmp_path, capsys):
    from tarq.data.demo import append_days

    db = tmp_path / "w.duckdb"
    shutil.copy(tiny[0], db)
    argv = ["demo-data", "--db", str(db), "--next-day", "--through", "2026-10-10"]
    assert cli_main(argv) == 0
    out = capsys.readouterr().out
    assert out.index("appended 2026-10-09") < out.index("appended 2026-10-10")
    for day in (dt.date(2026, 10, 9), dt.date(2026, 10, 10)):
        assert _day_rows(db, day) == _day_rows(direct, day)
    # Already there: nothing to append, not an error.
    assert append_days(db, dt.date(2026, 10, 9)) == []
    assert cli_main(argv) == 0
    assert "already reach 2026-10-10; nothing appended" in capsys.readouterr().out
    # A day not over yet is refused whole: its later hours have not happened.
    before = _fingerprints(db)
    with pytest.raises(ValueError, match=r"today or later \(UTC\).*through yesterday"):
        append_days(db, "today")
    assert _fingerprints(db) == before


def test_next_day_continues_logs_generated_before_the_config_was_recorded(tiny, direct, tmp_path):
    """Warehouses generated by an earlier release have no ``config`` in their report: the
    preset's config (and the recorded click model) continues them the same way."""
    from tarq.data.demo import append_day

    db = tmp_path / "old.duckdb"
    shutil.copy(tiny[0], db)
    with open_db(db) as con:
        (raw,) = con.execute("SELECT report::VARCHAR FROM loads").fetchone()
        old = json.loads(raw)
        del old["config"]
        con.execute("UPDATE loads SET report = $r::JSON", {"r": json.dumps(old)})
    append_day(db)
    assert _day_rows(db, dt.date(2026, 10, 9)) == _day_rows(direct, dt.date(2026, 10, 9))


def test_next_day_refuses_a_day_that_exists(tiny, tmp_path, capsys):
    from tarq.data.demo import NoDemoLogs, append_day

    db = tmp_path / "w.duckdb"
    shutil.copy(tiny[0], db)
    before = _fingerprints(db)
    for day in (dt.date(2026, 10, 8), START):
        with pytest.raises(
            ValueError,
            match=f"{day} already exists: the demo logs of .* run "
            "2026-10-01 .. 2026-10-08; nothing was written",
        ):
            append_day(db, day)
    with pytest.raises(ValueError, match=r"2026-10-11 is not the next day.* is 2026-10-09"):
        append_day(db, dt.date(2026, 10, 11))
    assert _fingerprints(db) == before
    # A day the warehouse holds from another load (e.g. imported logs) is refused too.
    with open_db(db) as con:
        con.execute(
            "INSERT INTO impressions (user_id, item_id, ts, clicked, exposed, position, "
            "request_id, load_id) SELECT user_id, item_id, ts + INTERVAL 1 DAY, clicked, "
            "exposed, position, 'r-other', 'other' FROM impressions ORDER BY ts DESC LIMIT 1"
        )
    before = _fingerprints(db)
    assert cli_main(["demo-data", "--db", str(db), "--next-day"]) == 2
    err = capsys.readouterr().err
    assert "2026-10-09 already exists" in err and "1 impressions" in err, err
    assert _fingerprints(db) == before
    # No demo logs (or no warehouse) to continue; --next-day takes no generation flags.
    empty = tmp_path / "empty.duckdb"
    connect(empty).close()  # the schema, no demo load
    with pytest.raises(NoDemoLogs, match="holds no demo logs"):
        append_day(empty)
    assert cli_main(["demo-data", "--db", str(tmp_path / "none.duckdb"), "--next-day"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "none.duckdb").exists()
    assert cli_main(["demo-data", "--db", str(db), "--next-day", "--preset", "tiny"]) == 2
    assert "no --preset" in capsys.readouterr().err


# ----------------------------------------------------------------------------- ground truth


def _truth_rows(db: Path) -> dict[str, np.ndarray]:
    with open_db(db, read_only=True) as con:
        return con.execute(
            "SELECT i.user_id, i.item_id, epoch_us(i.ts) AS ts, i.position, i.clicked, "
            "i.exposed, t.logit, t.user_part, t.hist_part, t.request_key IS NOT NULL AS has, "
            "i.ts::DATE AS day "
            "FROM impressions AS i LEFT JOIN demo_truth AS t "
            "ON printf('%016x', t.request_key) = i.request_id AND t.item_id = i.item_id "
            "ORDER BY i.row_id"
        ).fetchnumpy()


def test_truth_is_the_logit_the_simulator_drew_the_clicks_from(tiny):
    """demo_truth holds one row per exposed impression (none for the others), and its logits
    are the simulator's: recomputed from the world rebuilt from (config, seed) and the user's
    logged history before the impression, for rows of the last day; the clicks follow them."""
    from tarq.data.demo import _Ring, _Simulator
    from tarq.data.demo_world import build_world

    db, report = tiny
    t = _truth_rows(db)
    exposed, has = t["exposed"].astype(bool), t["has"].astype(bool)
    assert np.array_equal(exposed, has)
    with open_db(db, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM demo_truth").fetchone()[0] == exposed.sum()
    logit = np.asarray(t["logit"][exposed], dtype=np.float64)
    user_part = np.asarray(t["user_part"][exposed], dtype=np.float64)
    hist_part = np.asarray(t["hist_part"][exposed], dtype=np.float64)
    assert np.array_equal(logit, user_part + hist_part)
    assert report["planted_effect"]["history_logit_sd"] == pytest.approx(hist_part.std(), rel=1e-9)
    # The clicks were drawn from sigmoid(logit): calibrated, and ranked by it.
    clicked = t["clicked"][exposed].astype(float)
    p = 1.0 / (1.0 + np.exp(-logit))
    assert abs(clicked.sum() - p.sum()) < 4 * np.sqrt((p * (1 - p)).sum())
    from tarq.metrics import auc

    assert auc(clicked, logit) > auc(clicked, user_part) > 0.6

    # Recompute the last day's logits of some exposed rows from the world and the logs.
    cfg = preset_config("tiny")
    world = build_world(cfg, 7)
    sim = _Simulator(cfg, world, 7, START)
    last = cfg.n_days - 1
    for d in range(1, last):
        sim.drift(d)
    sim.start_day(last)
    index_of = np.empty(world.n_items, dtype=np.int64)
    index_of[world.item_id - 1] = np.arange(world.n_items)
    day = np.asarray(t["day"]) == np.datetime64(START + dt.timedelta(days=last))
    rows = np.flatnonzero(exposed & day)[::25]
    assert len(rows) > 40
    h = cfg.click.history_len
    want_u, want_h, got_u, got_h = [], [], [], []
    with open_db(db, read_only=True) as con:
        for r in rows:
            user, ts = int(t["user_id"][r]), int(t["ts"][r])
            hist = con.execute(
                "SELECT item_id, epoch_us(ts) AS us, list_position($a, action) - 1 AS act FROM ("
                " SELECT * FROM behaviors WHERE user_id = $u AND epoch_us(ts) < $t"
                " ORDER BY ts DESC, row_id DESC LIMIT $h) ORDER BY ts, row_id",
                {"u": user, "t": ts, "h": h, "a": list(ACTIONS)},
            ).fetchnumpy()
            n = len(hist["item_id"])
            sim.ring = _Ring.from_rows(
                world.n_users,
                h,
                np.full(n, user - 1, dtype=np.int64),
                index_of[np.asarray(hist["item_id"], dtype=np.int64) - 1],
                np.asarray(hist["us"], dtype=np.int64),
                np.asarray(hist["act"], dtype=np.int8),
            )
            u_part, h_part = sim._logits(
                np.array([user - 1]),
                index_of[np.array([[int(t["item_id"][r]) - 1]])],
                np.array([ts]),
                np.array([0]),
                np.array([0]),
                np.array([int(t["position"][r])]),
            )
            got_u.append(u_part[0])
            got_h.append(h_part[0])
            want_u.append(t["user_part"][r])
            want_h.append(t["hist_part"][r])
    np.testing.assert_allclose(got_u, want_u, rtol=0, atol=1e-9)
    np.testing.assert_allclose(got_h, want_h, rtol=0, atol=1e-9)
    assert np.std(want_h) > 0.1  # rows with a history part, not only zeros


def _write_predictions(path: Path, t: dict[str, np.ndarray], score: np.ndarray) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Users in any order, each user's rows in time order (as the test stream has them).
    shuffled = np.random.default_rng(0).permutation(int(t["user_id"].max()) + 1)
    order = np.argsort(shuffled[t["user_id"]], kind="stable")
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.table(
            {
                "label": t["clicked"].astype(np.float32)[order],
                "score": score[order],
                "user_id": t["user_id"][order],
                "item_id": t["item_id"][order],
            }
        ),
        path / "predictions.parquet",
    )
    return path


def test_demo_oracle_scores_the_truth_and_models_on_the_exposed_rows(tiny, tmp_path, capsys):
    from tarq.data.demo_oracle import demo_oracle, model_predictions

    db, report = tiny
    test_day = dt.date.fromisoformat(report["last_day"])
    t = _truth_rows(db)
    on_day = np.asarray(t["day"]) == np.datetime64(test_day)
    t = {k: v[on_day] for k, v in t.items()}
    assert len(np.unique(np.stack([t["user_id"], t["item_id"]]), axis=1)[0]) < len(t["user_id"])
    exposed = t["exposed"].astype(bool)
    fill = np.random.default_rng(1).normal(size=len(exposed))
    truth = np.where(exposed, np.nan_to_num(t["logit"].astype(float)), fill)
    user_level = np.where(exposed, np.nan_to_num(t["user_part"].astype(float)), fill)
    preds = model_predictions(
        [
            _write_predictions(tmp_path / "knows", t, truth),
            _write_predictions(tmp_path / "taste", t, user_level),
        ]
    )
    with open_db(db, read_only=True) as con:
        rep = demo_oracle(con, test_day + dt.timedelta(days=1), preds)
    assert rep.test_day == str(test_day) and rep.rows == exposed.sum() > 1_000
    assert rep.rows_without_truth == 0 and rep.clicks == t["clicked"][exposed].sum()
    assert rep.oracle_auc > rep.user_level_auc and rep.headroom > 0.02
    assert rep.headroom == pytest.approx(rep.oracle_auc - rep.user_level_auc)
    assert rep.models["knows"].auc == pytest.approx(rep.oracle_auc, abs=1e-12)
    assert rep.models["taste"].auc == pytest.approx(rep.user_level_auc, abs=1e-12)
    assert rep.models["taste"].share_of_headroom == pytest.approx(0.0, abs=1e-9)
    assert set(rep.metrics()) >= {"demo_oracle_auc", "demo_user_level_auc", "knows_auc_exposed"}
    # Predictions of another day are refused, not silently mis-aligned.
    other = ~on_day
    assert (
        cli_main(
            [
                "demo-oracle",
                "--db",
                str(db),
                "--run-date",
                "latest",
                "--predictions",
                str(tmp_path / "knows"),
            ]
        )
        == 0
    )
    assert "true logit (ceiling)" in capsys.readouterr().out
    with open_db(db, read_only=True) as con, pytest.raises(ValueError, match="test day"):
        demo_oracle(con, test_day, preds)
    assert other.any()


def test_a_world_without_history_terms_has_no_target_specific_headroom(tmp_path):
    """The taste-only control: the history part is zero, so the ceiling is the user-level
    AUC exactly; the real tiny world has a clear headroom on the same day."""
    from tarq.data.demo_oracle import demo_oracle

    cfg = preset_config("tiny")
    control = tmp_path / "control.duckdb"
    rep_c = generate_from_config(
        control, dataclasses.replace(cfg, click=cfg.click.taste_only()), seed=7, start_date=START
    )
    run_date = dt.date.fromisoformat(rep_c["last_day"]) + dt.timedelta(days=1)
    with open_db(control, read_only=True) as con:
        c = demo_oracle(con, run_date)
    assert c.history_sd == 0.0 and c.headroom == 0.0 and c.oracle_auc == c.user_level_auc
    real = tmp_path / "real.duckdb"
    generate_from_config(real, cfg, seed=7, start_date=START)
    with open_db(real, read_only=True) as con:
        r = demo_oracle(con, run_date)
    assert r.headroom > 0.03 and r.history_sd > 0.5


def test_logs_recorded_before_the_interest_term_continue_without_it(tiny, tmp_path):
    """A window whose recorded click model has no ``interest`` (generated before the term
    existed) is continued with the term off: the model its logs were drawn from."""
    from tarq.data.demo import append_day

    db = tmp_path / "old.duckdb"
    shutil.copy(tiny[0], db)
    with open_db(db) as con:
        (raw,) = con.execute("SELECT report::VARCHAR FROM loads").fetchone()
        old = json.loads(raw)
        del old["config"]["click"]["interest"]
        del old["planted_effect"]["click_model"]["interest"]
        con.execute("UPDATE loads SET report = $r::JSON", {"r": json.dumps(old)})
    report = append_day(db)
    assert report["planted_effect"]["click_model"]["interest"] == 0.0
    assert report["planted_effect"]["click_model"]["similarity"] > 0
