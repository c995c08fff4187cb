"""The warm/cold decision of continuous training: every cold trigger fires, and only it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from tarq.release.lineage import Lineage, LineagePolicy, ParentModel, plan, trained_through

D = dt.date(2026, 10, 23)
START, END = dt.date(2026, 10, 3), dt.date(2026, 10, 21)  # window of run date D (19 days)
POLICY = LineagePolicy()


def parent(
    run_date: dt.date = D - dt.timedelta(days=1),
    cold: dt.date | None = None,
    generation: int = 2,
    train_end: dt.date | None = None,
) -> ParentModel:
    return ParentModel(
        Path("/models/x"),
        run_date,
        train_end or run_date - dt.timedelta(days=2),
        cold or run_date - dt.timedelta(days=generation),
        generation,
        version="4",
        run_id="r1",
        source="champion",
    )


def test_a_fresh_parent_is_continued_on_the_one_new_day() -> None:
    lin = plan(D, START, END, parent(), POLICY)
    assert lin.warm and lin.train_start == lin.train_end == END and lin.days_trained == 1
    assert lin.generation == 3 and lin.cold_run_date == parent().cold_run_date
    assert lin.parent_version == "4" and lin.parent_run_date == D - dt.timedelta(days=1)
    assert lin.reason.startswith("warm: continues champion (run date 2026-10-22, version 4)")


def test_an_older_parent_trains_on_every_day_since_its_last() -> None:
    lin = plan(D, START, END, parent(run_date=D - dt.timedelta(days=3)), POLICY)
    assert lin.warm and lin.train_start == END - dt.timedelta(days=2) and lin.days_trained == 3


@pytest.mark.parametrize(
    ("case", "kwargs", "reason"),
    [
        ("first run", {"p": None}, "cold: no earlier model to continue (first run)"),
        ("switched off", {"policy": LineagePolicy(warm_start=False)}, "cold: warm_start is off"),
        (
            "too old",
            {"p": parent(run_date=D - dt.timedelta(days=8), cold=D - dt.timedelta(days=8))},
            "is 8 days old, more than max_parent_age_days=7",
        ),
        (
            "config changed",
            {"why": "model config changed: d_model 64 → 32"},
            "cold: model config changed: d_model 64 → 32",
        ),
        (
            "periodic",
            {"p": parent(cold=D - dt.timedelta(days=7), generation=6)},
            "periodic full retrain: the last cold run was 2026-10-16, 7 days ago",
        ),
        ("not older", {"p": parent(run_date=D)}, "is not before 2026-10-23"),
        ("nothing new", {"p": parent(train_end=END)}, "nothing new before 2026-10-21"),
    ],
)
def test_every_cold_trigger_fires(case: str, kwargs: dict, reason: str) -> None:
    lin = plan(
        D, START, END, kwargs.get("p", parent()), kwargs.get("policy", POLICY), kwargs.get("why")
    )
    assert lin.mode == "cold", case
    assert reason in lin.reason, (case, lin.reason)
    assert (lin.train_start, lin.train_end) == (START, END)  # the whole window
    assert lin.cold_run_date == D and lin.generation == 0 and lin.parent_version is None


def test_periodic_retrain_counts_from_the_lineages_cold_run() -> None:
    six = parent(cold=D - dt.timedelta(days=6), generation=5)
    assert plan(D, START, END, six, POLICY).warm
    assert not plan(D, START, END, six, LineagePolicy(full_retrain_every_days=6)).warm


def test_a_full_retrain_the_gate_rejected_restarts_the_clock() -> None:
    """The champion's lineage went cold 8 days ago; its full retrain 1 day ago lost to it.
    Today continues the champion (not another cold run), and the next retrain is due a period
    after the rejected one."""
    import dataclasses

    champ = parent(run_date=D - dt.timedelta(days=2), cold=D - dt.timedelta(days=8), generation=6)
    assert not plan(D, START, END, champ, POLICY).warm  # without the record: cold again
    tried = dataclasses.replace(champ, cold_tried=D - dt.timedelta(days=1))
    lin = plan(D, START, END, tried, POLICY)
    assert lin.warm and lin.cold_run_date == champ.cold_run_date
    assert f"the full retrain of {D - dt.timedelta(days=1)} was not promoted" in lin.reason
    assert f"the next is due {D + dt.timedelta(days=6)}" in lin.reason
    later = dataclasses.replace(
        tried, run_date=D + dt.timedelta(days=4), train_end=END + dt.timedelta(days=4)
    )
    assert plan(D + dt.timedelta(days=5), START, END + dt.timedelta(days=5), later, POLICY).warm
    due = plan(D + dt.timedelta(days=6), START, END + dt.timedelta(days=6), later, POLICY)
    assert not due.warm and "periodic full retrain" in due.reason


def test_lineage_round_trips_through_its_file_and_tags(tmp_path: Path) -> None:
    lin = plan(D, START, END, parent(), LineagePolicy(replay_folds=10))
    lin.save(tmp_path)
    back = Lineage.load(tmp_path)
    assert back == lin and back.replay_folds == 10 and "10% replay" in back.reason
    tags = lin.tags()
    assert tags["lineage.mode"] == "warm" and tags["lineage.parent_version"] == "4"
    assert tags["lineage.train_start"] == str(END) and tags["lineage.days_trained"] == "1"
    assert Lineage.load(tmp_path / "nowhere") is None


def test_bad_policies_are_refused() -> None:
    with pytest.raises(ValueError, match="replay_folds"):
        LineagePolicy(replay_folds=101)
    with pytest.raises(ValueError, match="max_parent_age_days"):
        LineagePolicy(max_parent_age_days=0)


def test_a_parent_that_held_out_its_last_day_is_continued_from_that_day(tmp_path: Path) -> None:
    """A cold run's temporal validation slice (its window's last day) was never trained on:
    the child must start on it, else no model of the lineage ever trains that day."""
    import json

    end = dt.date(2026, 10, 19)
    assert trained_through(tmp_path, end) == end  # no metrics.json: the whole window
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"valid_slice": {"split": "hash", "time_from": None}}))
    assert trained_through(tmp_path, end) == end
    metrics.write_text(
        json.dumps({"valid_slice": {"split": "time", "time_from": "2026-10-19T00:00:00"}})
    )
    assert trained_through(tmp_path, end) == dt.date(2026, 10, 18)
    # A slice starting inside a one-day window: the child trains that whole day again.
    metrics.write_text(
        json.dumps({"valid_slice": {"split": "time", "time_from": "2026-10-19T17:42:10"}})
    )
    assert trained_through(tmp_path, end) == dt.date(2026, 10, 18)

    parent = ParentModel(
        tmp_path, dt.date(2026, 10, 21), trained_through(tmp_path, end), dt.date(2026, 10, 21), 0
    )
    lin = plan(
        dt.date(2026, 10, 22),
        dt.date(2026, 10, 2),
        dt.date(2026, 10, 20),
        parent,
        LineagePolicy(),
        None,
    )
    assert lin.warm and (lin.train_start, lin.train_end) == (
        dt.date(2026, 10, 19),
        dt.date(2026, 10, 20),
    )
