"""Continuous training policy: does run date D continue a parent model (warm) or train cold?

Pure decision logic (no torch, Prefect or MLflow), like :mod:`tarq.release.gate`. The daily job finds
each model's parent (TARQ: the champion; a baseline: its newest model from an earlier run
date that finished) and asks :func:`plan` what to do. A run is **cold** — trained from
scratch on the whole window, vocabularies rebuilt, codebooks re-initialised by k-means — when

1. there is no parent (the first run of a model);
2. warm starts are switched off (``warm_start = false``);
3. the parent is older than ``max_parent_age_days`` (its run date);
4. the model config or the feature layout changed (:func:`tarq.training.warm_start.incompatibility`);
5. the lineage's last cold run is ``full_retrain_every_days`` or more before D (a periodic full
   retrain bounds drift: a warm lineage only ever adds rows and trains on recent days); a
   full retrain that was tried and not promoted (``ParentModel.cold_tried``: the continued
   champion was better) counts as the last one, so it is tried again a period later, not daily;
6. the parent has already trained on every day of D's window (a re-run of an older date).

Otherwise it is **warm**: the parent's weights, vocabularies (extended), codebooks and optimizer
state continue on the days after the parent's last training day — normally one — plus an
optional replay sample of the older days of the window. A parent that held out its window's
last day for validation (a cold run's temporal slice) did not train on it: :func:`trained_through`
makes that day the child's first, so no day of the logs is left out of a lineage.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from tarq.defaults import REPLAY_FOLDS

LINEAGE_FILE = "lineage.json"


@dataclass(frozen=True)
class LineagePolicy:
    """When to warm-start (the daily job's ``warm_start``, ``max_parent_age_days``,
    ``full_retrain_every_days`` and ``replay_folds`` parameters)."""

    warm_start: bool = True
    max_parent_age_days: int = 7
    full_retrain_every_days: int = 7
    replay_folds: int = REPLAY_FOLDS

    def __post_init__(self) -> None:
        if self.max_parent_age_days < 1 or self.full_retrain_every_days < 1:
            raise ValueError("max_parent_age_days and full_retrain_every_days must be >= 1")
        if not 0 <= self.replay_folds <= 100:
            raise ValueError(f"replay_folds must be in [0, 100], got {self.replay_folds}")


@dataclass(frozen=True)
class ParentModel:
    """A candidate parent: a trained model directory and where it sits in its lineage.

    Attributes:
        model_dir: the local model directory.
        run_date: the run date it was trained for.
        train_end: the last day it trained on.
        cold_run_date: the run date of its lineage's last cold run (its own, if cold).
        generation: warm runs since that cold run (0 = it was trained cold).
        version: its registered version (TARQ), if any.
        run_id: its MLflow run, if any.
        source: how it was found (``champion``, ``latest``), for the logs.
        cold_tried: the newest run date after ``cold_run_date`` on which this model was
            trained cold and did not become this parent (TARQ: a periodic full retrain that
            the gate rejected because the continued champion was better), or None.
    """

    model_dir: Path
    run_date: dt.date
    train_end: dt.date
    cold_run_date: dt.date
    generation: int = 0
    version: str | None = None
    run_id: str | None = None
    source: str = "latest"
    cold_tried: dt.date | None = None


@dataclass(frozen=True)
class Lineage:
    """What run date D does for one model, and why (written as ``lineage.json``).

    Attributes:
        mode: ``warm`` or ``cold``.
        reason: one sentence naming the trigger (cold) or the parent (warm).
        run_date: D.
        train_start, train_end: the days trained on (the warm run's new days; the replay
            sample of older days, if any, is ``replay_folds`` % of the window before them).
        cold_run_date: the run date of this lineage's last cold run (D itself when cold).
        generation: warm runs since that cold run.
        parent_*: the parent's run date, version, run id and source (None when cold).
        replay_folds: replayed percentage of the older days (warm only).
        rows_trained: training rows actually streamed (filled in after training).
    """

    mode: Literal["warm", "cold"]
    reason: str
    run_date: dt.date
    train_start: dt.date
    train_end: dt.date
    cold_run_date: dt.date
    generation: int = 0
    parent_run_date: dt.date | None = None
    parent_version: str | None = None
    parent_run_id: str | None = None
    parent_source: str | None = None
    parent_train_end: dt.date | None = None
    replay_folds: int = 0
    rows_trained: int | None = None

    @property
    def warm(self) -> bool:
        return self.mode == "warm"

    @property
    def days_trained(self) -> int:
        return (self.train_end - self.train_start).days + 1

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for k, v in out.items():
            if isinstance(v, dt.date):
                out[k] = v.isoformat()
        out["days_trained"] = self.days_trained
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Lineage:
        fields = set(cls.__dataclass_fields__)
        kw = {k: v for k, v in data.items() if k in fields}
        for k in (
            "run_date",
            "train_start",
            "train_end",
            "cold_run_date",
            "parent_run_date",
            "parent_train_end",
        ):
            if kw.get(k):
                kw[k] = dt.date.fromisoformat(str(kw[k]))
        return cls(**kw)

    def tags(self, prefix: str = "lineage.") -> dict[str, str]:
        """Flat string tags for MLflow (runs and model versions)."""
        return {f"{prefix}{k}": "" if v is None else str(v) for k, v in self.to_dict().items()}

    def save(self, model_dir: Path) -> None:
        (Path(model_dir) / LINEAGE_FILE).write_text(
            json.dumps(self.to_dict(), indent=2), encoding="utf-8"
        )

    @classmethod
    def load(cls, model_dir: Path) -> Lineage | None:
        path = Path(model_dir) / LINEAGE_FILE
        if not path.is_file():
            return None
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))


def trained_through(model_dir: Path, window_end: dt.date) -> dt.date:
    """The last day a model in ``model_dir`` trained on in full, its window ending ``window_end``.

    A run with a temporal validation slice (``metrics.json`` ``valid_slice.time_from``) held
    out the rows from that time on and never trained on them: it trained through the day
    before the slice's day, so its child starts there (a slice that begins inside a day makes
    the child train that whole day again rather than lose its held-out part).
    """
    path = Path(model_dir) / "metrics.json"
    if not path.is_file():
        return window_end
    time_from = (json.loads(path.read_text(encoding="utf-8")).get("valid_slice") or {}).get(
        "time_from"
    )
    if not time_from:
        return window_end
    return min(window_end, dt.datetime.fromisoformat(time_from).date() - dt.timedelta(days=1))


def plan(
    run_date: dt.date,
    train_start: dt.date,
    train_end: dt.date,
    parent: ParentModel | None,
    policy: LineagePolicy,
    incompatibility: str | None = None,
) -> Lineage:
    """Warm or cold for run date ``run_date`` whose window is ``train_start … train_end``.

    Args:
        run_date: D.
        train_start, train_end: the full training window of D.
        parent: the model to continue, or None.
        policy: the thresholds.
        incompatibility: why the parent cannot be continued with today's config and
            features (:func:`tarq.training.warm_start.incompatibility`), or None.

    Returns:
        The :class:`Lineage`; ``reason`` names the cold trigger or the parent.
    """

    def cold(reason: str) -> Lineage:
        return Lineage(
            "cold", f"cold: {reason}", run_date, train_start, train_end, cold_run_date=run_date
        )

    if not policy.warm_start:
        return cold("warm_start is off")
    if parent is None:
        return cold("no earlier model to continue (first run)")
    age = (run_date - parent.run_date).days
    if age < 1:
        return cold(f"the parent's run date {parent.run_date} is not before {run_date}")
    if age > policy.max_parent_age_days:
        return cold(
            f"the parent ({parent.source}, run date {parent.run_date}) is {age} days "
            f"old, more than max_parent_age_days={policy.max_parent_age_days}"
        )
    if incompatibility:
        return cold(incompatibility)
    # A full retrain the gate rejected (the continued champion was better) restarts the
    # clock: retrying it every day would train cold daily and never move the champion.
    last_cold = max(parent.cold_run_date, parent.cold_tried or parent.cold_run_date)
    since_cold = (run_date - last_cold).days
    if since_cold >= policy.full_retrain_every_days:
        return cold(
            f"periodic full retrain: the last cold run was {last_cold}, "
            f"{since_cold} days ago (full_retrain_every_days="
            f"{policy.full_retrain_every_days})"
        )
    if parent.train_end >= train_end:
        return cold(f"the parent trained up to {parent.train_end}, nothing new before {train_end}")
    start = max(parent.train_end + dt.timedelta(days=1), train_start)
    days = (train_end - start).days + 1
    return Lineage(
        "warm",
        f"warm: continues {parent.source} (run date {parent.run_date}"
        + (f", version {parent.version}" if parent.version else "")
        + f") on {days} new day{'s' if days != 1 else ''} {start}..{train_end}"
        + (f" + {policy.replay_folds}% replay of older days" if policy.replay_folds else "")
        + (
            f"; the full retrain of {parent.cold_tried} was not promoted, the next is due "
            f"{parent.cold_tried + dt.timedelta(days=policy.full_retrain_every_days)}"
            if parent.cold_tried and parent.cold_tried > parent.cold_run_date
            else ""
        ),
        run_date,
        start,
        train_end,
        cold_run_date=parent.cold_run_date,
        generation=parent.generation + 1,
        parent_run_date=parent.run_date,
        parent_version=parent.version,
        parent_run_id=parent.run_id,
        parent_source=parent.source,
        parent_train_end=parent.train_end,
        replay_folds=policy.replay_folds,
    )
