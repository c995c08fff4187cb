"""The daily job: flow ``tarq-daily`` (deployment ``tarq-daily/tarq-daily``) and its backfill.

Stages (one function each below, each leaving a Prefect artifact; tasks in
:mod:`flows.tasks`, artifacts in :mod:`flows.artifacts`, typed hand-offs in
:mod:`flows.results`)::

    logs (demo preset if empty) → validate (GX; failure stops, nothing published)
      → build point-in-time samples (cached on the warehouse state)
      → train TARQ + baselines on the same samples, each warm from its parent (TARQ: the
        champion) on the new days or cold on the whole window (:mod:`tarq.release.lineage`)
      → re-score the current champion on today's test day
      → FAISS-checked semantic IDs for the whole catalog, churn against the served table
      → MLflow: parent run, a child per model (model dir + lineage), comparison, pyfunc →
        version, alias challenger
      → gate (tarq.release.gate, with paired-bootstrap intervals) → publish the ID table (atomic)
        → alias champion

A failed validation ends the run Failed("ValidationFailed"), a rejected gate
Failed("GateRejected"); neither publishes nor moves ``champion``. A run date already finished
(parent run tagged ``published`` or ``rejected``) is skipped unless ``force``: no duplicate
versions or publications.

One run per warehouse at a time (:mod:`tarq.store.locking`, the server-less twin of the
deployment's ``concurrency_limit: 1``): a second run waits up to ``lock_wait_s`` and then
finds its date done, or ends Failed("AlreadyRunning") without touching anything. An MLflow
store that is unreachable or locked is found before any work (Failed("TrackingUnavailable"),
after the task's retries). ``retry_delay_s`` tunes the pause between a task's retries.

Without a server::

    python -m flows.tarq_daily --db data/tarq.duckdb --run-date 2026-10-22 [--preset tiny]
    python -m flows.tarq_daily --db data/tarq.duckdb --run-date latest --backfill-days 2

exit 0 when the run completed (also "not-served": published while an operator serves another
table version; champion not moved), 3 when the gate rejected the challenger, 4 when another
run or process holds the warehouse, 2 on bad parameters (also a registered model that belongs
to another warehouse: set ``registered_model``), 1 on other failures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from prefect import flow, get_run_logger
from prefect.states import Completed, Failed, State

from flows import artifacts, dask_steps, tracking
from flows import tasks as daily_tasks
from flows.params import DailyParams
from flows.results import (
    ChampionScore,
    DaySummary,
    GateOutcome,
    Registration,
    Samples,
    TrainedModel,
)
from flows.tasks import RETRY_DELAY_S, ensure_logs
from tarq import defaults
from tarq.runtime.resources import PeakRss
from tarq.runtime.telemetry import disable_telemetry

if TYPE_CHECKING:
    from tarq.data.demo_oracle import OracleReport
    from tarq.release.publish import Publication

disable_telemetry()

MODEL_CHOICES, ABLATIONS = defaults.MODEL_NAMES, defaults.ABLATIONS
EXIT_OK, EXIT_FAILED, EXIT_REJECTED, EXIT_BUSY = 0, 1, 3, 4


# ----------------------------------------------------------------------------- stages
# One function per stage; each runs its task(s), leaves its artifact and returns a typed
# result (flows.results) for the next one.


@dataclass
class _Day:
    """What every stage of one run date needs."""

    p: DailyParams
    db: Path
    day: str
    log: Any
    tasks: SimpleNamespace
    warehouse: str = ""  # the warehouse's identity, the scope of every MLflow lookup
    timings: dict[str, float] = field(default_factory=dict)
    dask: str | None = None  # the Dask scheduler the data steps map on (None: here)
    peak_rss_mb: dict[str, float] = field(default_factory=dict)  # per stage, this process

    @property
    def work(self) -> Path:
        return Path(self.p.work_dir).resolve()

    @property
    def dir(self) -> Path:
        return self.work / self.day

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        with PeakRss() as rss:
            try:
                yield
            finally:
                self.timings[name] = round(time.perf_counter() - t0, 2)
        self.peak_rss_mb[name] = rss.peak_mb


def _tasks(delay: float) -> SimpleNamespace:
    """The flow's tasks with ``delay`` seconds between retries (their retry counts unchanged)."""
    if delay == RETRY_DELAY_S:
        return SimpleNamespace(**daily_tasks.ALL)
    return SimpleNamespace(
        **{k: t.with_options(retry_delay_seconds=delay) for k, t in daily_tasks.ALL.items()}
    )


def _ensure(result: Any, check: Callable[[Any], bool], rerun: Callable[[], Any]) -> Any:
    """A cached result whose files are gone is recomputed (Prefect cannot see the files)."""
    return result if check(result) else rerun()


def validate_stage(d: _Day) -> State | None:
    """GX validation of D − 1 and of the training window's days whose rows changed since they
    were last validated; a Failed state when it fails (nothing else runs)."""
    with d.stage("validate"):
        report = d.tasks.validate_logs(
            d.db, d.day, d.dir / "gx", d.p.train_days, d.p.validation, d.dask
        )
    artifacts.validation(d.day, report)
    if report["success"]:
        return None
    d.log.error(report["text"])
    return Failed(
        name="ValidationFailed",
        message=f"validation of {d.day} failed, nothing published:\n{report['text']}",
    )


def samples_stage(d: _Day) -> Samples:
    """The run date's samples (the full window; warm runs read only their new days)."""
    p = d.p
    with d.stage("samples"):
        state = d.tasks.warehouse_state(d.db)
        sdir = d.dir / "samples"
        args = (d.db, d.day, sdir, p.train_days, p.seq_len, p.min_count, state, d.dask)
        build = (
            d.tasks.build_samples.with_options(refresh_cache=True)
            if p.force
            else d.tasks.build_samples
        )
        report = _ensure(
            build(*args),
            lambda r: (sdir / "meta.json").exists(),
            lambda: d.tasks.build_samples.with_options(refresh_cache=True)(*args),
        )
    s = Samples(sdir, report)
    d.log.info(
        "samples %s: %s train rows (%s..%s), %s test rows on %s; fingerprint %s",
        sdir,
        report.train_rows,
        s.train_start,
        s.train_end,
        report.test_rows,
        s.test_day,
        s.fingerprint,
    )
    return s


def _train_config(p: DailyParams, warm: bool) -> dict[str, Any]:
    cfg = {
        "epochs": p.warm_epochs if warm else p.epochs,
        "batch_size": p.batch_size,
        "max_steps_per_epoch": p.warm_max_steps_per_epoch if warm else p.max_steps_per_epoch,
        "threads": p.threads,
        "seed": p.seed,
    }
    if warm:
        # A warm run trains warm_epochs (1) on its new day(s): there is no epoch to choose, and
        # a temporal slice would hold out the newest rows the served model most needs. A cold
        # run with valid_split "time" selects epochs on the window's last day, which its child
        # then trains (tarq.release.lineage.trained_through).
        cfg.update(lr=p.warm_lr, valid_split="hash")
    else:
        cfg["valid_split"] = p.valid_split
    return cfg


def train_stage(d: _Day, samples: Samples, experiment_id: str) -> dict[str, TrainedModel]:
    """Every model on the same samples, each warm from its parent or cold (:mod:`tarq.release.lineage`)."""
    from tarq.data.features import FeatureLayout
    from tarq.model import ModelConfig
    from tarq.release.lineage import plan
    from tarq.training.warm_start import incompatibility

    p = d.p
    mcfg = ModelConfig.from_dict(p.model_overrides)
    layout = FeatureLayout.load(samples.dir / "layout.json")
    policy = p.lineage_policy()
    D = dt.date.fromisoformat(d.day)
    start, end = (
        dt.date.fromisoformat(samples.train_start),
        dt.date.fromisoformat(samples.train_end),
    )
    trained: dict[str, TrainedModel] = {}
    live = _live(d, samples)
    for name in p.model_list():
        with d.stage(f"train:{name}"):
            parent = None
            if policy.warm_start:
                parent = d.tasks.find_parent(
                    p.tracking_uri,
                    experiment_id,
                    name,
                    d.day,
                    d.work,
                    prefer_champion=name == "tarq",
                    warehouse=d.warehouse,
                    registered_model=p.registered_model,
                )
            why = (
                incompatibility(parent.model_dir, name, mcfg, layout)
                if parent is not None
                else None
            )
            lineage = plan(D, start, end, parent, policy, why)
            warm = None
            if lineage.warm and parent is not None:
                warm = {
                    "parent_dir": str(parent.model_dir),
                    "parent_sha256": tracking.file_sha256(parent.model_dir / "model.pt"),
                    "since_day": str(lineage.train_start - dt.timedelta(days=1)),
                    "replay_folds": lineage.replay_folds,
                    "carry_optimizer": p.carry_optimizer,
                }
            mdir = d.dir / "models" / name
            targs = (
                samples.dir,
                samples.fingerprint,
                name,
                mdir,
                mcfg.to_dict(),
                _train_config(p, lineage.warm),
                warm,
                live,
            )
            fit = d.tasks.train.with_options(refresh_cache=True) if p.force else d.tasks.train
            result = _ensure(
                fit(*targs),
                lambda r, m=mdir: (m / "model.pt").exists(),
                lambda t=targs: d.tasks.train.with_options(refresh_cache=True)(*t),
            )
            lineage = replace(lineage, rows_trained=int(result.rows_trained or 0))
            lineage.save(mdir)
        t = TrainedModel(name, mdir, result, lineage)
        trained[name] = t
        d.log.info(
            "%s (%s): auc %.4f gauc %.4f logloss %.4f, %s rows in %.1fs — %s",
            name,
            lineage.mode,
            t.test["auc"],
            t.test["gauc"],
            t.test["logloss"],
            lineage.rows_trained,
            result.train_seconds,
            lineage.reason,
        )
    artifacts.lineage(d.day, trained)
    return trained


def champion_stage(d: _Day, samples: Samples) -> ChampionScore | None:
    with d.stage("champion"):
        return d.tasks.rescore_champion(
            samples.dir, d.work, d.day, d.p.tracking_uri, d.warehouse, d.p.registered_model
        )


def semantic_ids_stage(d: _Day, tarq: TrainedModel) -> dict[str, Any]:
    """IDs for the whole catalog; the churn ceiling applies to warm runs only (a cold run
    re-indexes the catalog by design, and says so)."""
    with d.stage("semantic_ids"):
        health = d.tasks.assign(
            d.db,
            tarq.dir,
            d.dir / "ids",
            d.p.max_churn if tarq.lineage.warm else None,
            d.p.max_collision_rate,
            d.dask,
            d.p.sticky_margin if tarq.lineage.warm else None,
            d.p.resolve_collisions,
        )
    artifacts.semantic_ids(d.day, health)
    return health


def published_codes_stage(
    d: _Day, samples: Samples, tarq: TrainedModel, health: dict[str, Any]
) -> TrainedModel:
    """TARQ judged with the IDs it is published with: on a sticky day some items keep a served
    code that is no longer their nearest entry, and collision resolution moves some items to a
    free tuple, so its test day is scored again with the assigned codes, and these figures (and
    predictions) are the ones compared, gated and registered. Days where every item has its
    nearest entries: the training loop's figures already are."""
    held = (health.get("sticky") or {}).get("items_held", 0)
    moved = (health.get("resolution") or {}).get("items_moved", 0)
    if not health.get("ok") or not (held or moved):
        return tarq
    with d.stage("score_published"):
        test = d.tasks.score_published(tarq.dir, samples.dir, d.dir / "ids")
    d.log.info(
        "tarq with its published IDs (%s items held by stickiness, %s moved off a shared "
        "tuple): auc %.4f (nearest %.4f)",
        held,
        moved,
        test["auc"],
        tarq.test["auc"],
    )
    test = {**tarq.test, **test, "auc_nearest_codes": tarq.test["auc"]}
    return replace(
        tarq,
        result=replace(tarq.result, test=test),
        scored_with=d.dir / "ids" / daily_tasks.PUBLISHED_PREDICTIONS,
    )


def _day_params(p: DailyParams) -> dict[str, Any]:
    """The parent run's params: the run's parameters and the resolved configs."""
    from tarq.model import ModelConfig

    return {
        "params": p.model_dump(),
        "model": ModelConfig.from_dict(p.model_overrides).to_dict(),
        "train": _train_config(p, warm=False),
        "train_warm": _train_config(p, warm=True),
    }


def _live(d: _Day, samples: Samples) -> dict[str, Any] | None:
    """The date's parent run opened before training (``live`` of the train task), or None
    when the store fails now (the registration stage then reports it)."""
    try:
        parent = d.tasks.start_day_run(
            d.p.tracking_uri, d.p.experiment, d.day, samples, _day_params(d.p), d.warehouse
        )
    except Exception as exc:
        d.log.warning("MLflow runs will be logged after training only: %s", exc)
        return None
    return {"tracking_uri": d.p.tracking_uri, "parent_run_id": parent, "run_date": d.day}


def _demo_truth(d: _Day, trained: dict[str, TrainedModel]) -> OracleReport | None:
    """The demo world's truth on the test day with every model against it (demo warehouses
    only; None elsewhere, or when it cannot be computed: it never fails the day)."""
    from tarq.data.demo_oracle import oracle_for_day

    try:
        report = oracle_for_day(d.db, d.day, {n: t.predictions for n, t in trained.items()})
    except Exception as exc:
        d.log.warning("demo truth not computed: %s", exc)
        return None
    if report is not None:
        d.log.info(
            "demo truth: ceiling AUC %.4f, user-level %.4f, headroom %+.4f (exposed rows)",
            report.oracle_auc,
            report.user_level_auc,
            report.headroom,
        )
    return report


def _demo_replay(d: _Day, trained: dict[str, TrainedModel]) -> dict[str, Any] | None:
    """The open-loop replay of the test day (:func:`tarq.online.replay.replay`: each model's top k of
    ``replay_pool`` candidates per request against the world's true clicks); demo warehouses
    whose test day replays exactly only, None elsewhere. It never fails the day."""
    from tarq.data.demo import NoDemoLogs
    from tarq.online.replay import replay

    if not d.p.replay_pool:
        return None
    try:
        with d.stage("replay"):
            res = replay(d.db, d.work, d.day, list(trained), pool_size=d.p.replay_pool)
    except NoDemoLogs:
        return None
    except Exception as exc:
        d.log.warning("open-loop replay not computed: %s", exc)
        return None
    if "tarq" in res and "@10" in res["tarq"]:
        d.log.info(
            "open-loop replay: TARQ's top 10 gets %.3f of the oracle's expected clicks%s",
            res["tarq"]["@10"]["clicks_ratio"]["mean"],
            f", TT's {res['tt']['@10']['clicks_ratio']['mean']:.3f}" if "tt" in res else "",
        )
    return res


def register_stage(
    d: _Day,
    samples: Samples,
    trained: dict[str, TrainedModel],
    health: dict[str, Any],
    champ: ChampionScore | None,
) -> Registration:

    oracle = _demo_truth(d, trained)
    replayed = _demo_replay(d, trained)
    with d.stage("mlflow"):
        reg = d.tasks.register(
            d.p.tracking_uri,
            d.p.experiment,
            d.day,
            samples,
            trained,
            d.dir / "ids",
            health,
            champ,
            _day_params(d.p),
            d.warehouse,
            d.p.registered_model,
            oracle,
            replayed,
        )
    artifacts.comparison(
        reg.rows, samples.test_day, samples.fingerprint, tracking.run_link(reg.parent_run_id)
    )
    return reg


def gate_stage(
    d: _Day, trained: dict[str, TrainedModel], champ: ChampionScore | None, health: dict[str, Any]
) -> GateOutcome:
    """The gate with paired-bootstrap intervals of TARQ − TT and challenger − champion."""
    from tarq.release.gate import GateConfig, decide
    from tarq.training.evaluation import paired_interval

    p = d.p
    with d.stage("gate"):
        tarq, tt = trained["tarq"], trained["tt"]
        vs_tt = paired_interval(tarq.predictions, tt.predictions, p.gate_metric, seed=p.seed)
        vs_champ = None
        if champ is not None and champ.predictions is not None:
            vs_champ = paired_interval(
                tarq.predictions, champ.predictions, p.gate_metric, seed=p.seed
            )
        failed = "; ".join(c["detail"] for c in health.get("checks", []) if not c["ok"])
        decision = decide(
            tarq.test,
            tt.test,
            champ.metrics if champ else None,
            bool(health.get("ok")),
            failed or health.get("error", ""),
            GateConfig(
                p.gate_metric,
                p.min_gain_over_tt,
                p.champion_tolerance,
                tt_must_be_significant=p.tt_must_be_significant,
            ),
            champion_same_day=champ.same_day if champ else True,
            vs_tt=vs_tt,
            vs_champion=vs_champ,
        )
    d.log.info("gate: %s", decision.reason)
    return GateOutcome(decision, vs_tt, vs_champ)


def publish_stage(d: _Day, reg: Registration) -> Publication:
    """Publish the ID table, then move ``champion`` — only when the table is served."""
    name = d.p.registered_model
    with d.stage("publish"):
        pub = d.tasks.publish(
            d.db,
            d.dir / "ids",
            str(reg.version),
            d.day,
            reg.model_uri,
            d.p.keep_versions,
            d.db.parent / "published",
            name,
        )
        tracking.tag_version(
            str(reg.version),
            {
                "published.table_version": pub.version,
                "published.export": pub.export_path,
                "published.served": pub.served,
            },
            name,
        )
        if pub.served:
            tracking.promote(str(reg.version), name)
        else:  # e.g. an operator rolled the table back: the served IDs are not this model's
            d.log.warning(
                "table version %s is not the served one (version %s is); champion "
                "not moved, run date %s ends not-served",
                pub.version,
                pub.previous,
                d.day,
            )
    return pub


def _summary(
    d: _Day,
    samples: Samples,
    trained: dict[str, TrainedModel],
    health: dict[str, Any],
    reg: Registration,
    gate: GateOutcome,
) -> DaySummary:
    return DaySummary(
        run_date=d.day,
        test_day=samples.test_day,
        parent_run_id=reg.parent_run_id,
        mlflow_run=tracking.run_link(reg.parent_run_id),
        version=reg.version,
        model_uri=reg.model_uri,
        gate=gate.to_dict(),
        comparison=reg.rows,
        lineage={n: t.lineage.to_dict() for n, t in trained.items()},
        churn=health.get("churn"),
        timings=d.timings,
        peak_rss_mb=d.peak_rss_mb,
    )


def _write_summary(day_dir: Path, summary: DaySummary) -> None:
    """The run's summary (comparison, gate, lineage, churn, publication, stage seconds)."""
    day_dir.mkdir(parents=True, exist_ok=True)
    (day_dir / "summary.json").write_text(
        json.dumps(summary.to_dict(), indent=2, default=str), encoding="utf-8"
    )


def digest(summary: dict[str, Any]) -> str:
    """A few lines for a terminal: per-model metrics and lineage, gate, churn, publication."""
    out = [
        f"run date {summary['run_date']} (test day {summary['test_day']}), "
        f"MLflow {summary.get('mlflow_run', '')}"
    ]
    lineage = summary.get("lineage") or {}
    for r in summary.get("comparison", []):
        fig = "  ".join(
            f"{k} {r[k]:.4f}"
            # auc_exposed: on the exposed rows the demo truth is scored on (demo warehouses)
            for k in ("auc", "gauc", "logloss", "auc_exposed")
            if isinstance(r.get(k), int | float)
        )
        lin = lineage.get(r.get("model"), {})
        how = (
            f"  [{lin['mode']}, {lin.get('rows_trained')} rows, {lin['train_start']}.."
            f"{lin['train_end']}]"
            if lin
            else ""
        )
        out.append(f"  {r.get('model', '?'):<10} {fig}{how}")
    gate = summary.get("gate", {})
    out.append(
        f"  gate: {'promote' if gate.get('promote') else 'reject'} — {gate.get('reason', '')}"
    )
    churn = summary.get("churn")
    if churn:
        out.append(
            f"  ID churn vs version {churn.get('against_version')}: "
            f"{churn['tuple_churn']:.2%} of tuples, {churn['items_new']} new items"
        )
    pub = summary.get("publication")
    if not pub:
        out.append("  published: none (champion and served table unchanged)")
    elif pub.get("served", True):
        out.append(
            f"  published: table version {pub.get('version')}, "
            f"{pub.get('manifest', {}).get('rows', '?')} rows, model v{summary.get('version')}"
        )
    else:
        out.append(
            f"  NOT SERVED: table version {pub.get('version')} of model "
            f"v{summary.get('version')} is published but version {pub.get('previous')} is "
            "served (rolled back); champion not moved"
        )
    ret = summary.get("retention")
    if ret:
        out.append(
            f"  retention (keep {ret['keep_days']} run dates): "
            + (
                f"FAILED: {ret['error']}"
                if "error" in ret
                else f"{ret['bytes_freed'] / 2**20:,.1f} MB freed of {ret['bytes_before'] / 2**20:,.1f} MB"
            )
        )
    out.append(
        "  seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in summary.get("timings", {}).items())
    )
    if summary.get("peak_rss_mb"):
        out.append(
            "  peak RSS MB: "
            + ", ".join(f"{k} {v:,.0f}" for k, v in summary["peak_rss_mb"].items())
        )
    return "\n".join(out)


def _mark_failed(experiment_id: str, day: str, warehouse: str) -> None:
    """Close the day's parent run as failed (a re-run reopens it) without masking the error."""
    try:
        run = tracking.find_day_run(experiment_id, day, warehouse)
        if run is not None and run.data.tags.get(tracking.STATUS_TAG) == "running":
            tracking.finish_day(run.info.run_id, "failed")
    except Exception as exc:
        get_run_logger().warning("could not mark the MLflow run of %s failed: %s", day, exc)


# ----------------------------------------------------------------------------- flows


@flow(
    name="tarq-daily",
    description="Validate, train TARQ + baselines, gate and publish.",
    validate_parameters=True,
)
def tarq_daily(params: DailyParams | None = None) -> dict[str, Any] | State:
    """One daily run; returns a summary dict, or a Failed state on validation/gate failure."""
    from prefect.runtime import flow_run

    from tarq.store.locking import LockBusyError, exclusive_lock, warehouse_lock_path
    from tarq.store.warehouse import WarehouseBusyError

    p = params or DailyParams()
    log = get_run_logger()
    db = Path(p.db).resolve()
    lock = warehouse_lock_path(db)
    with ExitStack() as held:
        t0 = time.perf_counter()
        try:
            held.enter_context(
                exclusive_lock(
                    lock,
                    wait_s=p.lock_wait_s,
                    info={"run_date": p.run_date, "flow_run": str(flow_run.get_id())},
                )
            )
        except LockBusyError as exc:
            msg = (
                f"warehouse {db} is busy: {exc}. Run date {p.run_date} was not started and "
                "nothing was changed (lock_wait_s waits for the other run)."
            )
            log.warning(msg)
            return Failed(name="AlreadyRunning", message=msg)
        waited = time.perf_counter() - t0
        if waited >= 1:
            log.info("waited %.0fs for another run to release %s", waited, lock)
        try:
            address = held.enter_context(dask_steps.cluster(p.dask_address, p.dask, p.dask_workers))
            if address:
                log.info("data steps map on the Dask cluster at %s", address)
            return _run_day(p, db, log, address)
        except WarehouseBusyError as exc:
            # Another process (a reader, a tool) has the DuckDB file open: one line, not a
            # traceback; what the run had changed is left as a failed run leaves it.
            msg = f"{exc} (run date {p.run_date})"
            log.error(msg)
            return Failed(name="WarehouseBusy", message=msg)


def _run_day(p: DailyParams, db: Path, log: Any, dask: str | None = None) -> dict[str, Any] | State:
    """The daily run proper, under the warehouse lock: the stages in order (the data steps
    mapped on the Dask scheduler ``dask`` when given)."""
    tasks = _tasks(p.retry_delay_s)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    with PeakRss() as rss:
        tasks.prepare_logs(db, p.preset, p.seed)
        day = tasks.resolve_day(db, p.run_date)
    from tarq.store.warehouse import warehouse_id

    d = _Day(p, db, day, log, tasks, warehouse_id(db), timings, dask)
    d.timings["logs"] = round(time.perf_counter() - t0, 2)
    d.peak_rss_mb["logs"] = rss.peak_mb
    log.info(
        "run date %s (test day %s) on %s",
        day,
        dt.date.fromisoformat(day) - dt.timedelta(days=1),
        db,
    )
    known = _connect_tracking(d)
    if isinstance(known, State):
        return known
    exp_id = known["experiment_id"]
    tracking.use_store(p.tracking_uri)  # for the flow's own MLflow calls after the tasks
    if known["status"] in tracking.DONE_STATUSES and not p.force:
        return _already_done(d, known)

    failed = validate_stage(d)
    if failed is not None:
        return failed
    samples = samples_stage(d)
    trained = train_stage(d, samples, exp_id)
    champ = champion_stage(d, samples)
    health = semantic_ids_stage(d, trained["tarq"])
    trained["tarq"] = published_codes_stage(d, samples, trained["tarq"], health)
    try:
        reg = register_stage(d, samples, trained, health, champ)
        summary = _gate_and_publish(d, samples, trained, health, champ, reg)
    except BaseException:
        _mark_failed(exp_id, day, d.warehouse)
        raise
    if isinstance(summary, State):
        return summary
    retention_stage(d, summary)
    artifacts.publication(summary)
    _write_summary(d.dir, summary)
    log.info(
        "%s table version %s (model v%s) for %s; stage seconds %s",
        summary.status,
        summary.publication.version,
        reg.version,
        day,
        d.timings,
    )
    return summary.to_dict()


def retention_stage(d: _Day, summary: DaySummary) -> None:
    """Retention at the end of a finished day, published or rejected (``keep_days``; None
    keeps everything). The day's outcome is already recorded: a failure here is logged in the
    summary and fails nothing."""
    if d.p.keep_days is None:
        return
    with d.stage("retention"):
        try:
            summary.extra["retention"] = d.tasks.retention(
                d.db,
                d.work,
                d.p.keep_days,
                d.p.tracking_uri,
                d.p.experiment,
                d.p.registered_model,
            )
        except Exception as exc:
            d.log.warning("retention failed (nothing else is affected): %s", exc)
            summary.extra["retention"] = {"keep_days": d.p.keep_days, "error": str(exc)}


def _connect_tracking(d: _Day) -> dict[str, Any] | State:
    """The MLflow store's record of the run date, or a Failed state when the store belongs to
    another warehouse or cannot be reached (nothing started, nothing changed)."""
    p, day = d.p, d.day
    try:
        return d.tasks.connect_tracking(
            p.tracking_uri, p.experiment, day, p.tracking_timeout_s, d.warehouse, p.registered_model
        )
    except tracking.ForeignWarehouse as exc:
        msg = f"{exc}; run date {day} was not started and nothing was changed"
        d.log.error(msg)
        return Failed(name="ForeignWarehouse", message=msg)
    except tracking.TrackingUnavailable as exc:
        msg = (
            f"{exc}, after {daily_tasks.connect_tracking.retries + 1} attempts; run date "
            f"{day} stopped before validation: nothing was trained, registered or published"
        )
        d.log.error(msg)
        return Failed(name="TrackingUnavailable", message=msg)


def _already_done(d: _Day, known: dict[str, Any]) -> State:
    """A run date that already finished is not redone (unless ``force``)."""
    msg = (
        f"run date {d.day} already finished ({known['status']}, MLflow run "
        f"{known['run_id']}, version {known['version'] or '-'}); nothing redone. "
        "Pass force=true to retrain."
    )
    artifacts.skipped(d.day, msg)
    d.log.info(msg)
    return Completed(
        message=msg,
        data={
            "run_date": d.day,
            "status": "skipped",
            "previous_status": known["status"],
            "parent_run_id": known["run_id"],
        },
    )


def _gate_and_publish(
    d: _Day,
    samples: Samples,
    trained: dict[str, TrainedModel],
    health: dict[str, Any],
    champ: ChampionScore | None,
    reg: Registration,
) -> DaySummary | State:
    """The gate's decision, then the publication when it promotes: the day's summary, or
    Failed(GateRejected) with the rejected day's summary written."""
    p, day = d.p, d.day
    gate = gate_stage(d, trained, champ, health)
    if reg.version is not None:
        tracking.tag_version(reg.version, gate.tags(), p.registered_model)
    summary = _summary(d, samples, trained, health, reg, gate)
    if not gate.promote:
        summary.status = "rejected"
        tracking.finish_day(
            reg.parent_run_id,
            "rejected",
            {**gate.tags(), "tarq.model_version": reg.version or "-"},
        )
        retention_stage(d, summary)  # a rejected day's files age like any other's
        artifacts.publication(summary)
        _write_summary(d.dir, summary)
        return Failed(
            name="GateRejected",
            message=f"gate rejected TARQ for {day}; champion unchanged, nothing "
            f"published: {gate.decision.reason}",
        )
    pub = summary.publication = publish_stage(d, reg)
    summary.status = "published" if pub.served else "not-served"
    tracking.finish_day(
        reg.parent_run_id,
        summary.status,
        {
            **gate.tags(),
            "tarq.model_version": reg.version,
            "tarq.published_version": pub.version,
            "tarq.served_version": pub.version if pub.served else pub.previous,
        },
    )
    return summary


@flow(name="tarq-daily-backfill", description="Run tarq-daily for a range of dates, in order.")
def tarq_backfill(
    start: str, end: str, params: DailyParams | None = None, keep_going: bool = False
) -> list[dict[str, Any]]:
    """Run the daily flow for every run date from ``start`` to ``end`` (inclusive), in order.

    A rejected gate is a normal outcome and the backfill goes on; any other failure stops it
    unless ``keep_going``. Returns one ``{"run_date", "state", "message"}`` per date.
    """
    log = get_run_logger()
    p = params or DailyParams()
    d0, d1 = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    if d1 < d0:
        raise ValueError(f"backfill end {end} is before its start {start}")
    out = []
    day = d0
    while day <= d1:
        state = tarq_daily(p.model_copy(update={"run_date": str(day)}), return_state=True)
        out.append({"run_date": str(day), "state": state.name, "message": state.message or ""})
        log.info("backfill %s: %s %s", day, state.name, state.message or "")
        if state.is_failed() and state.name != "GateRejected" and not keep_going:
            raise RuntimeError(f"backfill stopped at {day}: {state.message}")
        day += dt.timedelta(days=1)
    return out


# ----------------------------------------------------------------------------- CLI


def _parser(prog: str = "python -m flows.tarq_daily") -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog=prog,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--db", default=defaults.DEFAULT_DB)
    ap.add_argument("--run-date", default="today", help="YYYY-MM-DD, 'today' or 'latest'")
    ap.add_argument("--preset", choices=defaults.PRESETS, default=None)
    ap.add_argument("--work-dir", default="outputs/daily")
    ap.add_argument("--models", default=None, help="comma-separated (must include tarq,tt)")
    ap.add_argument("--ablations", action="store_true")
    ap.add_argument("--train-days", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--max-steps", type=int, default=None, help="cold runs: max steps per epoch")
    ap.add_argument("--warm-epochs", type=int, default=None, help="epochs of a warm run")
    ap.add_argument(
        "--cold", action="store_true", help="train every model from scratch (warm_start=false)"
    )
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--tracking-uri", default=None)
    ap.add_argument("--force", action="store_true", help="rerun a finished run date")
    ap.add_argument("--params", default=None, help="JSON of further DailyParams fields")
    ap.add_argument(
        "--dask",
        action="store_true",
        help="map the data steps on a local Dask cluster (one worker per core)",
    )
    ap.add_argument(
        "--dask-address", default=None, help="map the data steps on this Dask scheduler"
    )
    ap.add_argument("--dask-workers", type=int, default=None, help="local Dask cluster size")
    ap.add_argument(
        "--keep-days",
        type=int,
        default=None,
        help=f"retention: run dates kept whole (default {defaults.KEEP_DAYS}; 0 keeps everything)",
    )
    ap.add_argument(
        "--backfill-days",
        type=int,
        default=0,
        help="first run the N run dates before --run-date, in order",
    )
    return ap


def params_from_args(args: argparse.Namespace) -> DailyParams:
    """DailyParams from the CLI flags (``--params`` JSON first, flags on top)."""
    data: dict[str, Any] = json.loads(args.params) if args.params else {}
    data.update(db=args.db, run_date=args.run_date, work_dir=args.work_dir, force=args.force)
    for flag, name in (
        ("preset", "preset"),
        ("train_days", "train_days"),
        ("epochs", "epochs"),
        ("max_steps", "max_steps_per_epoch"),
        ("batch_size", "batch_size"),
        ("tracking_uri", "tracking_uri"),
        ("warm_epochs", "warm_epochs"),
        ("dask_address", "dask_address"),
        ("dask_workers", "dask_workers"),
    ):
        if getattr(args, flag) is not None:
            data[name] = getattr(args, flag)
    if args.cold:
        data["warm_start"] = False
    if args.keep_days is not None:
        data["keep_days"] = args.keep_days or None
    if args.dask:
        data["dask"] = True
    if args.models:
        data["models"] = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.ablations:
        data["ablations"] = True
    return DailyParams(**data)


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None, prog: str = "python -m flows.tarq_daily") -> int:
    """Run the flow (or a backfill ending at the run date) without a server (also
    ``tarq daily``, :mod:`flows.cli`)."""
    # SIGTERM (kill, a supervisor, Ctrl-C's sibling) unwinds like an exit, so the temporary
    # Prefect API server this process started is stopped instead of being left orphaned.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    args = _parser(prog).parse_args(argv)
    try:
        p = params_from_args(args)
    except ValueError as exc:
        print(f"tarq-daily: error: {exc}", file=sys.stderr)
        return 2
    if args.backfill_days:
        from tarq.dates import resolve_run_date
        from tarq.store.locking import LockBusyError, exclusive_lock, warehouse_lock_path
        from tarq.store.warehouse import open_db

        if p.preset:  # demo logs are written under the run lock, like every other writer
            try:
                with exclusive_lock(
                    warehouse_lock_path(p.db),
                    wait_s=p.lock_wait_s,
                    info={"run_date": p.run_date, "step": "demo logs"},
                ):
                    ensure_logs(Path(p.db), p.preset, p.seed)
            except LockBusyError as exc:
                print(f"tarq-daily: error: warehouse {p.db} is busy: {exc}", file=sys.stderr)
                return EXIT_BUSY
        with open_db(p.db, read_only=True) as con:
            end = resolve_run_date(p.run_date, con)
        start = end - dt.timedelta(days=args.backfill_days)
        state = tarq_backfill(str(start), str(end), p, return_state=True)
        if state.is_completed():
            for r in state.result():
                print(f"{r['run_date']}: {r['state']} {r['message']}".rstrip())
                path = Path(p.work_dir) / r["run_date"] / "summary.json"
                skipped = r["state"] == "Completed" and "skipped" in r["message"]
                if path.exists() and not skipped:
                    print(digest(json.loads(path.read_text(encoding="utf-8"))))
            return EXIT_OK
        print(f"tarq-daily-backfill: {state.name}: {state.message}", file=sys.stderr)
        return EXIT_FAILED
    state = tarq_daily(p, return_state=True)
    if state.is_completed():
        res = state.result()
        print(json.dumps(res, indent=2, default=str))
        return EXIT_OK
    print(f"tarq-daily: {state.name}: {state.message}", file=sys.stderr)
    return {
        "GateRejected": EXIT_REJECTED,
        "AlreadyRunning": EXIT_BUSY,
        "WarehouseBusy": EXIT_BUSY,
        "ForeignWarehouse": 2,
    }.get(state.name, EXIT_FAILED)


if __name__ == "__main__":
    sys.exit(main())
