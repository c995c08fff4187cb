"""Typed hand-offs between the stages of ``tarq-daily`` (instead of string-keyed dicts).

Each stage of :mod:`flows.tarq_daily` returns one of these; the next stage reads attributes.
``to_dict()`` gives the JSON written to ``summary.json`` and the Prefect artifacts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tarq.metrics import PairedInterval
from tarq.release.gate import GateDecision
from tarq.release.lineage import Lineage

if TYPE_CHECKING:  # annotations only: importing the flow's hand-offs loads no torch or DuckDB
    from tarq.data.samples import SampleBuild
    from tarq.release.publish import Publication
    from tarq.training.train import TrainResult


@dataclass(frozen=True)
class Samples:
    """The point-in-time samples of a run date (``build_samples``' report and folder)."""

    dir: Path
    report: SampleBuild

    @property
    def fingerprint(self) -> str:
        return self.report.fingerprint

    @property
    def test_day(self) -> str:
        return self.report.test_day

    @property
    def train_start(self) -> str:
        return self.report.train_start

    @property
    def train_end(self) -> str:
        return self.report.train_end

    def window(self) -> dict[str, Any]:
        """Window and row counts (MLflow tags of the day's run)."""
        r = self.report
        return {
            "train_start": r.train_start,
            "train_end": r.train_end,
            "test_day": r.test_day,
            "train_days": r.train_days,
            "train_rows": r.train_rows,
            "test_rows": r.test_rows,
        }


@dataclass(frozen=True)
class TrainedModel:
    """One model trained for the run date, with its lineage (warm or cold, and why).

    ``result`` is the training result without its per-epoch ``history`` (metrics.json in
    ``dir`` has it).
    """

    name: str
    dir: Path
    result: TrainResult
    lineage: Lineage
    # TARQ on a sticky day: its test predictions with the published IDs (else the model dir's).
    scored_with: Path | None = None

    @property
    def test(self) -> dict[str, Any]:
        return self.result.test

    @property
    def predictions(self) -> Path:
        return self.scored_with or self.dir / "predictions.parquet"

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "dir": str(self.dir),
            "test": self.test,
            "train_seconds": self.result.train_seconds,
            "rows_trained": self.result.rows_trained,
            "lineage": self.lineage.to_dict(),
        }


@dataclass(frozen=True)
class ChampionScore:
    """The current champion, re-scored on today's test day (or its recorded figures)."""

    version: str
    run_id: str
    run_date: str | None
    same_day: bool
    metrics: dict[str, Any]
    predictions: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "run_id": self.run_id,
            "run_date": self.run_date,
            "same_day": self.same_day,
            **self.metrics,
        }


@dataclass(frozen=True)
class Registration:
    """What the MLflow stage logged: the day's run, a child per model, TARQ's version."""

    parent_run_id: str
    experiment_id: str
    child_run_ids: dict[str, str]
    rows: list[dict[str, Any]]
    version: str | None = None
    model_uri: str | None = None


@dataclass(frozen=True)
class GateOutcome:
    """The gate's decision with the paired-bootstrap intervals it was given."""

    decision: GateDecision
    vs_tt: PairedInterval | None = None
    vs_champion: PairedInterval | None = None

    @property
    def promote(self) -> bool:
        return self.decision.promote

    def tags(self) -> dict[str, str]:
        """Registry version tags: decision, reason and both intervals."""
        out = {
            "gate.decision": "promote" if self.promote else "reject",
            "gate.reason": self.decision.reason,
        }
        for key, iv in (
            ("gate.tarq_minus_tt", self.vs_tt),
            ("gate.challenger_minus_champion", self.vs_champion),
        ):
            if iv is not None:
                out[key] = iv.text()
                out[f"{key}.low"], out[f"{key}.high"] = f"{iv.low:.5f}", f"{iv.high:.5f}"
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.decision.to_dict(),
            "tarq_minus_tt": self.vs_tt.to_dict() if self.vs_tt else None,
            "challenger_minus_champion": self.vs_champion.to_dict() if self.vs_champion else None,
        }


@dataclass
class DaySummary:
    """Everything a person asks about one run date (``summary.json``, the CLI digest)."""

    run_date: str
    test_day: str
    parent_run_id: str
    mlflow_run: str
    version: str | None
    model_uri: str | None
    gate: dict[str, Any]
    comparison: list[dict[str, Any]]
    lineage: dict[str, dict[str, Any]]
    churn: dict[str, Any] | None
    timings: dict[str, float]
    # Per stage, the flow process's largest resident set (tarq.runtime.resources.PeakRss), MiB.
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    publication: Publication | None = None
    # "published", "not-served" (published but another table version is served) or
    # "rejected": the day run's tarq.status.
    status: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "extra"}
        if self.publication is not None:
            out["publication"] = self.publication.to_dict()
        out.update(self.extra)
        return out
