"""How far models are from the demo world's truth (``tarq demo-oracle``).

The demo simulator knows the click logit it drew every exposed impression's click from, and
its two parts (docs/demo-data.md, "Ground truth"): the *user-level* part (what one user
vector dotted with one item vector can express) and the *history* part (the target's
interactions with individual history behaviours). It records them in ``demo_truth``. On a run
date's test day (the day before it, as everywhere in tarq) this module reports, over the exposed
impressions:

- ``oracle_auc``: AUC of the full true logit, the ceiling no model can pass in expectation;
- ``user_level_auc``: AUC of the user-level part alone, what a model blind to the
  target–history interaction can reach at best;
- ``headroom`` = oracle − user-level: what target-specific modelling can buy on this day;
- the same two AUCs without the display position's term (``*_no_position``): models score
  candidates before they are shown and never see the position, so these are the ceilings
  that apply to them;
- for each trained model given (its ``predictions.parquet``), its AUC on the same rows.

Models are trained and tested on every impression (unexposed ones are negatives), so their
own test AUC is over more rows than this one; the figures here compare everything on the
exposed rows, where the world's clicks were drawn.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow.parquet as pq

from tarq import metrics
from tarq.dates import resolve_run_date
from tarq.store import sqlfiles

PREDICTIONS_FILE = "predictions.parquet"


class NoDemoTruth(ValueError):
    """The warehouse holds no recorded truth for the day (not demo logs, or demo logs
    generated before the truth was recorded)."""


@dataclass
class ModelVsTruth:
    """One trained model's test-day AUC on the exposed rows the oracle scores."""

    auc: float
    minus_user_level: float  # auc − user_level_auc: > 0 = beyond any user-level model
    below_oracle: float  # oracle_auc − auc
    share_of_headroom: float | None  # minus_user_level / headroom (None: no headroom)


@dataclass
class OracleReport:
    """The demo world's ground truth on one test day (see the module docstring)."""

    run_date: str
    test_day: str
    rows: int  # exposed test-day impressions scored (with recorded truth)
    clicks: int
    rows_without_truth: int  # exposed rows of the day without a demo_truth row (left out)
    oracle_auc: float
    user_level_auc: float
    history_only_auc: float  # AUC of the history part alone (ties broken by nothing)
    headroom: float  # oracle_auc − user_level_auc
    oracle_auc_no_position: float  # the true logit without the position term
    user_level_auc_no_position: float  # the user-level part without the position term
    user_level_sd: float
    history_sd: float
    models: dict[str, ModelVsTruth] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def metrics(self) -> dict[str, float]:
        """Flat metric names for a tracking store (``demo_oracle_auc`` …)."""
        out = {
            "demo_oracle_auc": self.oracle_auc,
            "demo_user_level_auc": self.user_level_auc,
            "demo_headroom": self.headroom,
            "demo_oracle_auc_no_position": self.oracle_auc_no_position,
            "demo_user_level_auc_no_position": self.user_level_auc_no_position,
        }
        for name, m in self.models.items():
            out[f"{name}_auc_exposed"] = m.auc
        return out

    def rows_table(self) -> list[dict[str, Any]]:
        """One row per model, then the truth's rows (full logit, user-level part, each also
        without the position term): (model, role, auc_exposed, …)."""
        rows: list[dict[str, Any]] = [
            {
                "model": name,
                "role": "model",
                "auc_exposed": m.auc,
                "minus_user_level": m.minus_user_level,
                "below_oracle": m.below_oracle,
                "share_of_headroom": m.share_of_headroom,
            }
            for name, m in self.models.items()
        ]
        rows.append(
            {
                "model": "demo truth: full logit",
                "role": "oracle",
                "auc_exposed": self.oracle_auc,
                "minus_user_level": self.headroom,
                "below_oracle": 0.0,
                "share_of_headroom": 1.0 if self.headroom > 0 else None,
            }
        )
        rows.append(
            {
                "model": "demo truth: user-level part",
                "role": "oracle",
                "auc_exposed": self.user_level_auc,
                "minus_user_level": 0.0,
                "below_oracle": self.headroom,
                "share_of_headroom": 0.0 if self.headroom > 0 else None,
            }
        )
        for label, a in (
            ("full logit", self.oracle_auc_no_position),
            ("user-level part", self.user_level_auc_no_position),
        ):
            rows.append(
                {
                    "model": f"demo truth: {label}, no position",
                    "role": "oracle",
                    "auc_exposed": a,
                    "minus_user_level": a - self.user_level_auc,
                    "below_oracle": self.oracle_auc - a,
                    "share_of_headroom": None,
                }
            )
        return rows

    def to_text(self) -> str:
        lines = [
            f"demo truth on test day {self.test_day} (run date {self.run_date}): "
            f"{self.rows:,} exposed impressions, {self.clicks:,} clicks"
            + (
                f", {self.rows_without_truth:,} without truth left out"
                if self.rows_without_truth
                else ""
            ),
            f"  true logit (ceiling)        AUC {self.oracle_auc:.4f}",
            f"  user-level part only        AUC {self.user_level_auc:.4f}",
            f"  history part only           AUC {self.history_only_auc:.4f}",
            f"  target-specific headroom        {self.headroom:+.4f}  "
            f"(sd of the logit's parts: user-level {self.user_level_sd:.3f}, "
            f"history {self.history_sd:.3f})",
            f"  without the position term: true logit AUC {self.oracle_auc_no_position:.4f}, "
            f"user-level part {self.user_level_auc_no_position:.4f} (models never see the "
            "position)",
        ]
        for name, m in self.models.items():
            share = "" if m.share_of_headroom is None else f", {m.share_of_headroom:.0%} of it"
            lines.append(
                f"  {name:<27} AUC {m.auc:.4f}  ({m.minus_user_level:+.4f} over user-level"
                f"{share}; {m.below_oracle:.4f} below the ceiling)"
            )
        return "\n".join(lines)


def has_demo_truth(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the warehouse has a ``demo_truth`` table (demo logs recorded with it)."""
    return bool(sqlfiles.run(con, "demo/has_truth").fetchone()[0])


def _day_rows(con: duckdb.DuckDBPyConnection, test_day: dt.date) -> dict[str, np.ndarray]:
    """The test day's impressions as samples see them (row_id order), with their truth."""
    return sqlfiles.run(
        con,
        "demo/oracle_rows",
        {
            "lo": dt.datetime.combine(test_day, dt.time()),
            "hi": dt.datetime.combine(test_day + dt.timedelta(days=1), dt.time()),
        },
    ).fetchnumpy()


def _occurrence_keys(user: np.ndarray, item: np.ndarray) -> np.ndarray:
    """(N,) the rows' order sorted by (user, item, k-th occurrence of the pair in row order)."""
    return np.lexsort((np.arange(len(user)), item, user))


def align_predictions(
    user: np.ndarray, item: np.ndarray, label: np.ndarray, path: str | Path
) -> np.ndarray:
    """Scores of a predictions file put in the order of the day's rows ``(user, item,
    label)`` (row_id order).

    A predictions file holds one row per test-day impression (user_id, item_id, label,
    score); a (user, item) pair seen several times that day is matched occurrence by
    occurrence (both sides keep each user's rows in time order).

    Raises:
        ValueError: the file does not score exactly these rows (another day or warehouse).
    """
    t = pq.read_table(path, columns=["user_id", "item_id", "label", "score"])
    pu = t.column("user_id").to_numpy().astype(np.int64)
    pi = t.column("item_id").to_numpy().astype(np.int64)
    if len(pu) != len(user):
        raise ValueError(
            f"{path} scores {len(pu):,} rows, the test day has {len(user):,} impressions: "
            "not this warehouse's test day"
        )
    wo, po = _occurrence_keys(user, item), _occurrence_keys(pu, pi)
    if not (np.array_equal(user[wo], pu[po]) and np.array_equal(item[wo], pi[po])):
        raise ValueError(f"{path} scores other (user, item) pairs than the test day's")
    plabel = t.column("label").to_numpy()
    if not np.array_equal(label[wo].astype(np.int64), plabel[po].astype(np.int64)):
        raise ValueError(f"{path}: labels differ from the test day's clicks")
    score = t.column("score").to_numpy().astype(np.float64)
    out = np.empty(len(user), dtype=np.float64)
    out[wo] = score[po]
    return out


def model_predictions(paths: list[str | Path]) -> dict[str, Path]:
    """Model name → predictions file, from model directories (their ``config.json`` names the
    model, else the directory's name) or predictions files (named by their folder)."""
    out: dict[str, Path] = {}
    for p in map(Path, paths):
        f = p / PREDICTIONS_FILE if p.is_dir() else p
        if not f.is_file():
            raise FileNotFoundError(f"no {PREDICTIONS_FILE} at {p}")
        name = f.parent.name
        cfg = f.parent / "config.json"
        if cfg.is_file():
            name = json.loads(cfg.read_text(encoding="utf-8")).get("model_name", name)
        base, k = name, 2
        while name in out:
            name, k = f"{base}_{k}", k + 1
        out[name] = f
    return out


def demo_oracle(
    con: duckdb.DuckDBPyConnection,
    run_date: str | dt.date,
    predictions: Mapping[str, str | Path] | None = None,
) -> OracleReport:
    """The demo world's ground truth on the test day of ``run_date`` (its day before), and each
    model's AUC on the same exposed rows.

    Args:
        con: a warehouse connection (read-only is enough) holding demo logs with their truth.
        run_date: ``YYYY-MM-DD``, a date or ``latest`` (:func:`tarq.dates.resolve_run_date`).
        predictions: model name → ``predictions.parquet`` of that run date's test day.

    Raises:
        NoDemoTruth: no recorded truth on the test day.
        ValueError: a predictions file of another day, or a day with one click class only.
    """
    rd = resolve_run_date(run_date, con)
    test_day = rd - dt.timedelta(days=1)
    if not has_demo_truth(con):
        raise NoDemoTruth("the warehouse has no demo_truth table: not demo logs with truth")
    rows = _day_rows(con, test_day)
    user = np.asarray(rows["user_id"], dtype=np.int64)
    item = np.asarray(rows["item_id"], dtype=np.int64)
    label = np.asarray(rows["clicked"], dtype=np.int64)
    exposed = np.asarray(rows["exposed"], dtype=bool)
    logit = np.ma.filled(np.ma.asarray(rows["logit"], dtype=np.float64), np.nan)
    user_part = np.ma.filled(np.ma.asarray(rows["user_part"], dtype=np.float64), np.nan)
    hist_part = np.ma.filled(np.ma.asarray(rows["hist_part"], dtype=np.float64), np.nan)
    pos_part = np.ma.filled(np.ma.asarray(rows["position_part"], dtype=np.float64), np.nan)
    keep = exposed & ~np.isnan(logit)
    if not keep.any():
        raise NoDemoTruth(f"no exposed impression of {test_day} has a recorded truth")
    y = label[keep]
    oracle_auc = metrics.auc(y, logit[keep])
    user_auc = metrics.auc(y, user_part[keep])
    headroom = oracle_auc - user_auc
    models: dict[str, ModelVsTruth] = {}
    for name, path in (predictions or {}).items():
        score = align_predictions(user, item, label, path)[keep]
        a = metrics.auc(y, score)
        models[name] = ModelVsTruth(
            auc=a,
            minus_user_level=a - user_auc,
            below_oracle=oracle_auc - a,
            share_of_headroom=(a - user_auc) / headroom if headroom > 0 else None,
        )
    return OracleReport(
        run_date=rd.isoformat(),
        test_day=test_day.isoformat(),
        rows=int(keep.sum()),
        clicks=int(y.sum()),
        rows_without_truth=int((exposed & np.isnan(logit)).sum()),
        oracle_auc=oracle_auc,
        user_level_auc=user_auc,
        history_only_auc=metrics.auc(y, hist_part[keep]),
        headroom=headroom,
        oracle_auc_no_position=metrics.auc(y, logit[keep] - pos_part[keep]),
        user_level_auc_no_position=metrics.auc(y, user_part[keep] - pos_part[keep]),
        user_level_sd=float(np.std(user_part[keep])),
        history_sd=float(np.std(hist_part[keep])),
        models=models,
    )


def oracle_for_day(
    db_path: str | Path,
    run_date: str | dt.date,
    predictions: Mapping[str, str | Path] | None = None,
) -> OracleReport | None:
    """:func:`demo_oracle` on the warehouse at ``db_path`` (opened read-only), or None when it
    holds no recorded truth for the test day (not a demo warehouse): what the daily flow logs
    beside its model comparison."""
    from tarq.store.warehouse import open_db

    with open_db(db_path, read_only=True) as con:
        if not has_demo_truth(con):
            return None
        try:
            return demo_oracle(con, run_date, predictions)
        except NoDemoTruth:
            return None


def with_truth(rows: list[dict[str, Any]], report: OracleReport | None) -> list[dict[str, Any]]:
    """A model-comparison table with the truth beside it: each model row gains
    ``auc_exposed`` (its AUC on the exposed test-day rows the truth is scored on), and the
    truth's two rows (full logit, user-level part) follow. ``report`` None: ``rows`` as given."""
    if report is None:
        return rows
    out = []
    for r in rows:
        m = report.models.get(str(r.get("model")))
        out.append({**r, "auc_exposed": m.auc if m is not None else None})
    keys = dict.fromkeys(k for r in out for k in r)  # every row gets the same columns
    for r in report.rows_table():
        if r["role"] == "oracle":
            truth = {"model": r["model"], "role": "oracle", "auc_exposed": r["auc_exposed"]}
            out.append({k: truth.get(k) for k in {**keys, **truth}})
    return out
