"""The daily job's parameters (:class:`DailyParams`): every field of a run of ``tarq-daily``,
validated by pydantic, with its default and what it does (the Prefect deployment's parameter
form and ``--params`` take the same fields)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from flows.tasks import RETRY_DELAY_S
from tarq import defaults
from tarq.release.lineage import LineagePolicy

MODEL_CHOICES, ABLATIONS = defaults.MODEL_NAMES, defaults.ABLATIONS


class DailyParams(BaseModel):
    """Parameters of one daily run (the deployment's defaults live in ``prefect.yaml``)."""

    model_config = ConfigDict(extra="forbid")

    run_date: str = Field(
        "today", description="YYYY-MM-DD, 'today' or 'latest'; works on logs up to D-1"
    )
    db: str = Field(defaults.DEFAULT_DB, description="the DuckDB warehouse")
    work_dir: str = Field("outputs/daily", description="samples, models and IDs per run date")
    preset: Literal[defaults.PRESETS] | None = Field(
        None,
        description="generate demo logs of this preset (ending yesterday, UTC) when the "
        "warehouse holds none",
    )
    seed: int = defaults.DEMO_SEED
    train_days: int = Field(
        defaults.TRAIN_DAYS, ge=1, description="training days before the test day"
    )
    validation: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            'ValidationBounds fields to override, e.g. {"volume_ratio": [0.7, 1.4]} '
            "(tarq.validation.bounds)"
        ),
    )
    seq_len: int = Field(defaults.SEQ_LEN, ge=1)
    models: list[str] = Field(default_factory=lambda: list(defaults.DAILY_MODELS))
    ablations: bool = Field(False, description="also train the paper's Table-1 ablations")
    epochs: int = Field(2, ge=1, description="epochs of a cold run (the whole window)")
    max_steps_per_epoch: int | None = Field(None, ge=1, description="cold: cap on steps per epoch")
    warm_start: bool = Field(
        True,
        description=("continue each model's parent on the new days (false: every run trains cold)"),
    )
    warm_epochs: int = Field(1, ge=1, description="epochs of a warm run over its new days")
    warm_max_steps_per_epoch: int | None = Field(
        None, ge=1, description="warm: cap on steps per epoch"
    )
    warm_lr: float = Field(
        defaults.WARM_LR,
        gt=0.0,
        description=(
            "Adam learning rate of a warm run (a tenth of a cold run's: measured to keep the day's "
            "gain without drifting away from what the parent learned)"
        ),
    )
    max_parent_age_days: int = Field(7, ge=1, description="an older parent means a cold run")
    full_retrain_every_days: int = Field(
        7, ge=1, description=("a cold run when the lineage's last cold run is this many days old")
    )
    replay_folds: int = Field(
        defaults.REPLAY_FOLDS,
        ge=0,
        le=100,
        description=("warm runs also replay this % of the older days of the window"),
    )
    carry_optimizer: bool = Field(True, description="warm runs continue the parent's Adam state")
    valid_split: Literal["hash", "time"] = Field(
        "hash",
        description=(
            "cold runs: the slice epochs are chosen on. 'time' holds out the window's last day "
            "(its warm child then trains it: two days of ID churn at once); 'hash' a 5% hash slice"
        ),
    )
    min_count: int = Field(
        defaults.MIN_COUNT,
        ge=1,
        description=(
            "user/item ids seen fewer times in the window map to OOV (no row of their own)"
        ),
    )
    batch_size: int = Field(512, ge=8)
    threads: int | None = Field(None, ge=1, description="torch threads (default: all cores)")
    model_overrides: dict[str, Any] = Field(
        default_factory=dict, description="ModelConfig fields to override"
    )
    gate_metric: Literal["auc", "gauc"] = "auc"
    min_gain_over_tt: float = 0.0
    champion_tolerance: float = Field(
        0.005,
        ge=0.0,
        description=(
            "a challenger worse than the champion by more than this, significantly, is refused"
        ),
    )
    tt_must_be_significant: bool = Field(
        False, description=("also require the TARQ − TT bootstrap interval to lie above 0")
    )
    max_churn: float | None = Field(
        defaults.MAX_CHURN,
        ge=0.0,
        le=1.0,
        description=(
            "warm runs: most items whose ID tuple may change against the served table; the "
            "sticky margin is doubled (up to keeping every served tuple) until the churn fits "
            "(a cold run re-indexes and is not limited)"
        ),
    )
    sticky_margin: float | None = Field(
        defaults.STICKY_MARGIN,
        ge=0.0,
        description=(
            "warm runs: an item keeps its served code at a level unless the nearest entry is "
            "closer by more than this × the residual's norm (None: plain nearest-entry codes)"
        ),
    )
    max_collision_rate: float | None = Field(
        defaults.MAX_COLLISION_RATE,
        ge=0.0,
        le=1.0,
        description=("most items that may share their ID tuple with another"),
    )
    resolve_collisions: bool = Field(
        True,
        description=(
            "move items with distinct inputs that share a tuple to the nearest free tuple "
            "differing in the last 1-3 levels (False: plain nearest-entry codes)"
        ),
    )
    keep_days: int | None = Field(
        defaults.KEEP_DAYS,
        ge=1,
        description=(
            "retention at the end of each finished day: the work folders and model artifacts of run "
            "dates older than this many run dates are deleted, never the champion's, "
            "challenger's, served or a parent's (tarq gc); None keeps everything"
        ),
    )
    replay_pool: int = Field(
        1000,
        ge=0,
        description=(
            "demo warehouses: the open-loop replay of the test day (tarq replay) with this many "
            "candidates per request, its figures logged to each model's MLflow run; 0 skips it"
        ),
    )
    tracking_uri: str | None = Field(None, description="MLflow store (default mlflow/mlflow.db)")
    experiment: str = "tarq-daily"
    registered_model: str = Field(
        "tarq",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$",
        description=(
            "MLflow registered model (and its champion alias) of this warehouse; it is bound "
            "to the first warehouse that registers it, another warehouse needs its own"
        ),
    )
    keep_versions: int = Field(5, ge=1, description="published versions kept for rollback")
    force: bool = Field(False, description="rerun a run date that already finished")
    lock_wait_s: float = Field(
        0.0,
        ge=0.0,
        description=("seconds to wait when another run holds the warehouse (0: refuse at once)"),
    )
    retry_delay_s: float = Field(
        RETRY_DELAY_S,
        ge=0.0,
        description=("pause between a failed task's retries (the retries themselves always apply)"),
    )
    dask: bool = Field(
        False,
        description=(
            "map the data steps (validation by chunks of days, samples by user bucket, IDs by "
            "catalog chunk) as Prefect tasks on a Dask cluster: a local one sized to the "
            "machine unless dask_address names one"
        ),
    )
    dask_address: str | None = Field(
        None,
        description=(
            "scheduler of an existing Dask cluster (tcp://host:8786) for the data steps "
            "(implies dask); its workers need the warehouse and the work dir on shared storage"
        ),
    )
    dask_workers: int | None = Field(
        None, ge=1, description="workers of the local Dask cluster (default: one per core)"
    )
    tracking_timeout_s: float = Field(
        5.0,
        gt=0.0,
        description=("how long one try waits for the MLflow store to answer or grant a write lock"),
    )

    @field_validator("run_date")
    @classmethod
    def _run_date(cls, v: str) -> str:
        # Refused here, before any task runs (and is retried): a run date only ever becomes
        # a bound parameter, but an ill-formed one is an operator's mistake to name at once.
        if v in ("today", "latest"):
            return v
        try:
            if re.fullmatch(r"\d{4}-\d{2}-\d{2}", v):
                dt.date.fromisoformat(v)  # a real calendar day
                return v
        except ValueError:
            pass
        raise ValueError(f"run date {v!r} is not YYYY-MM-DD, 'today' or 'latest'")

    @field_validator("validation")
    @classmethod
    def _validation_bounds(cls, v: dict[str, Any]) -> dict[str, Any]:
        # Checked here, before any task runs: an unknown key or a bad value names itself.
        from tarq.validation.bounds import ValidationBounds

        ValidationBounds.from_overrides(v)
        return v

    @field_validator("models")
    @classmethod
    def _known_models(cls, v: list[str]) -> list[str]:
        unknown = [m for m in v if m not in MODEL_CHOICES]
        if unknown:
            raise ValueError(f"unknown models {unknown}; choose from {MODEL_CHOICES}")
        missing = [m for m in ("tarq", "tt") if m not in v]
        if missing:
            raise ValueError(f"models must include {missing}: the gate compares TARQ with TT")
        return list(dict.fromkeys(v))

    def lineage_policy(self) -> LineagePolicy:
        return LineagePolicy(
            self.warm_start,
            self.max_parent_age_days,
            self.full_retrain_every_days,
            self.replay_folds,
        )

    def model_list(self) -> list[str]:
        """Models to train, TARQ first, ablations appended when asked."""
        names = ["tarq", *[m for m in self.models if m != "tarq"]]
        if self.ablations:
            names += [a for a in ABLATIONS if a not in names]
        return names
