"""The daily job: flow ``tarq-daily`` (deployment ``tarq-daily/tarq-daily``) and its backfill.

Stages (each a task, each leaving a Prefect artifact)::

    logs (demo preset if empty) → validate (GX; failure stops, nothing published)
      → build point-in-time samples (cached on the warehouse state)
      → train TARQ + baselines on the same samples (cached on the sample fingerprint)
      → re-score the current champion on today's test day
      → FAISS-checked semantic IDs for the whole catalog
      → MLflow: parent run, a child per model, comparison, pyfunc → version, alias challenger
      → gate (tarq.gate) → publish the ID table (atomic) → alias champion

A failed validation ends the run Failed("ValidationFailed"), a rejected gate
Failed("GateRejected"); neither publishes nor moves ``champion``. A run date already finished
(parent run tagged ``published`` or ``rejected``) is skipped unless ``force``: no duplicate
versions or publications.

One run per warehouse at a time (:mod:`tarq.locking`, the server-less twin of the
deployment's ``concurrency_limit: 1``): a second run waits up to ``lock_wait_s`` and then
finds its date done, or ends Failed("AlreadyRunning") without touching anything. An MLflow
store that is unreachable or locked is found before any work (Failed("TrackingUnavailable"),
after the task's retries). ``retry_delay_s`` tunes the pause between a task's retries.

Without a server::

    python -m flows.tarq_daily --db data/tarq.duckdb --run-date 2026-10-22 [--preset tiny]
    python -m flows.tarq_daily --db data/tarq.duckdb --run-date latest --backfill-days 2

exit 0 when the run completed, 3 when the gate rejected the challenger, 4 when another run
holds the warehouse, 2 on bad parameters, 1 on other failures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import INPUTS, TASK_SOURCE
from prefect.states import Completed, Failed, State
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tarq.telemetry import disable_telemetry

disable_telemetry()

MODEL_CHOICES = ("tarq", "tt", "inttower", "mvke", "ta", "tarq_no_align", "tarq_no_teacher_align")
ABLATIONS = ("tarq_no_align", "tarq_no_teacher_align")
EXIT_OK, EXIT_FAILED, EXIT_REJECTED, EXIT_BUSY = 0, 1, 3, 4
RETRY_DELAY_S = 5.0
CACHE = INPUTS + TASK_SOURCE
CACHE_FOR = dt.timedelta(days=7)


class DailyParams(BaseModel):
    """Parameters of one daily run (the deployment's defaults live in ``prefect.yaml``)."""

    model_config = ConfigDict(extra="forbid")

    run_date: str = Field("today", description="YYYY-MM-DD, 'today' or 'latest'; works on logs up to D-1")
    db: str = Field("data/tarq.duckdb", description="the DuckDB warehouse")
    work_dir: str = Field("outputs/daily", description="samples, models and IDs per run date")
    preset: Literal["tiny", "small", "medium", "large"] | None = Field(
        None, description="generate demo logs of this preset when the warehouse holds none")
    seed: int = 7
    train_days: int = Field(19, ge=1, description="training days before the test day")
    seq_len: int = Field(50, ge=1)
    models: list[str] = Field(default_factory=lambda: ["tarq", "tt", "inttower", "mvke", "ta"])
    ablations: bool = Field(False, description="also train the paper's Table-1 ablations")
    epochs: int = Field(2, ge=1)
    max_steps_per_epoch: int | None = Field(None, ge=1, description="cap on steps per epoch")
    batch_size: int = Field(512, ge=8)
    threads: int | None = Field(None, ge=1, description="torch threads (default: all cores)")
    model_overrides: dict[str, Any] = Field(default_factory=dict,
                                            description="ModelConfig fields to override")
    gate_metric: Literal["auc", "gauc"] = "auc"
    min_gain_over_tt: float = 0.0
    champion_tolerance: float = Field(0.005, ge=0.0)
    tracking_uri: str | None = Field(None, description="MLflow store (default mlflow/mlflow.db)")
    experiment: str = "tarq-daily"
    keep_versions: int = Field(5, ge=1, description="published versions kept for rollback")
    force: bool = Field(False, description="rerun a run date that already finished")
    lock_wait_s: float = Field(0.0, ge=0.0, description=(
        "seconds to wait when another run holds the warehouse (0: refuse at once)"))
    retry_delay_s: float = Field(RETRY_DELAY_S, ge=0.0, description=(
        "pause between a failed task's retries (the retries themselves always apply)"))
    tracking_timeout_s: float = Field(5.0, gt=0.0, description=(
        "how long one try waits for the MLflow store to answer or grant a write lock"))

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

    def model_list(self) -> list[str]:
        """Models to train, TARQ first, ablations appended when asked."""
        names = ["tarq", *[m for m in self.models if m != "tarq"]]
        if self.ablations:
            names += [a for a in ABLATIONS if a not in names]
        return names


# ----------------------------------------------------------------------------- tasks


def ensure_logs(db: Path, preset: str | None, seed: int) -> dict[str, Any]:
    """Generate demo logs when the warehouse holds no impressions and a preset is given."""
    from tarq.warehouse import open_db

    n = 0
    if db.exists():
        with open_db(db, read_only=True) as con:
            n = con.execute("SELECT count(*) FROM impressions").fetchone()[0]
    if n:
        return {"generated": False, "impressions": int(n)}
    if preset is None:
        raise ValueError(f"{db} holds no impressions: import logs or pass a demo preset")
    from tarq.data.demo import generate

    report = generate(db, preset=preset, seed=seed)
    return {"generated": True, **json.loads(json.dumps(report, default=str))}


@task(name="prepare-logs", retries=2, retry_delay_seconds=5)
def prepare_logs(db: Path, preset: str | None, seed: int) -> dict[str, Any]:
    """:func:`ensure_logs` as a task."""
    res = ensure_logs(db, preset, seed)
    if res["generated"]:
        get_run_logger().info("generated %s demo logs into %s", preset, db)
    return res


@task(name="resolve-run-date", retries=2, retry_delay_seconds=5)
def resolve_day(db: Path, run_date: str) -> str:
    """``today``/``latest``/``YYYY-MM-DD`` → the run date D as ``YYYY-MM-DD``."""
    from tarq.dates import resolve_run_date
    from tarq.warehouse import open_db

    with open_db(db, read_only=True) as con:
        return str(resolve_run_date(run_date, con))


@task(name="mlflow-connect", retries=2, retry_delay_seconds=5)
def connect_tracking(tracking_uri: str | None, experiment: str, run_date: str,
                     timeout_s: float = 5.0) -> dict[str, Any]:
    """Check the MLflow store before any work and look up the run date's parent run."""
    from flows import tracking

    return tracking.open_day(tracking_uri, experiment, run_date, timeout_s=timeout_s)


@task(name="warehouse-state", retries=2, retry_delay_seconds=5)
def warehouse_state(db: Path) -> dict[str, int]:
    """Row counts and max row ids of the raw and quarantine tables (the cache key of samples)."""
    from tarq import sqlfiles
    from tarq.warehouse import open_db

    with open_db(db, read_only=True) as con:
        cur = sqlfiles.run(con, "daily/warehouse_state")
        names = [d[0] for d in cur.description]
        return {k: int(v) for k, v in zip(names, cur.fetchone(), strict=True)}


@task(name="validate", retries=2, retry_delay_seconds=5)
def validate_logs(db: Path, run_date: str, docs_dir: Path) -> dict[str, Any]:
    """Great Expectations validation of the day D − 1 (bad rows → quarantine)."""
    from tarq.validation import validate

    report = validate(db, run_date, docs_dir=docs_dir)
    out = json.loads(json.dumps(report.to_dict(), default=str))
    out["success"] = bool(report.success)
    out["text"] = report.to_text()
    return out


@task(name="build-samples", retries=2, retry_delay_seconds=5, cache_policy=CACHE,
      cache_expiration=CACHE_FOR, persist_result=True)
def build_samples_task(db: Path, run_date: str, out_dir: Path, train_days: int, seq_len: int,
                       state: dict[str, int]) -> dict[str, Any]:
    """Point-in-time samples of the run date (cached while the warehouse state is unchanged)."""
    from tarq.data.samples import build_samples

    del state  # part of the cache key only
    return build_samples(db, run_date, out_dir, train_days=train_days, seq_len=seq_len)


@task(name="train", retries=1, retry_delay_seconds=5, cache_policy=CACHE,
      cache_expiration=CACHE_FOR, persist_result=True, task_run_name="train-{name}")
def train_task(samples_dir: Path, fingerprint: str, name: str, out_dir: Path,
               model_cfg: dict[str, Any], train_cfg: dict[str, Any]) -> dict[str, Any]:
    """Train one model; a retry resumes from its checkpoint. Cached on the sample fingerprint."""
    from tarq.model import ModelConfig
    from tarq.train import TrainConfig, train

    stamp = out_dir / ".inputs.json"
    key = json.dumps({"fingerprint": fingerprint, "model": model_cfg, "train": train_cfg},
                     sort_keys=True)
    if out_dir.exists() and (not stamp.exists() or stamp.read_text() != key):
        # A checkpoint of other samples or settings must not be resumed.
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(key)
    result = train(samples_dir, name, out_dir, ModelConfig.from_dict(model_cfg),
                   TrainConfig.from_dict(train_cfg), resume=True, progress=False)
    result.pop("history", None)
    return result


@task(name="rescore-champion", retries=2, retry_delay_seconds=5)
def rescore_champion(samples_dir: Path, work_dir: Path, tracking_uri: str | None,
                     experiment: str) -> dict[str, Any] | None:
    """The current champion's metrics on today's test day (or its recorded ones as fallback)."""
    from flows import tracking
    from tarq.evaluation import evaluate_model_dir

    log = get_run_logger()
    tracking.setup(tracking_uri, experiment)
    champ = tracking.champion()
    if champ is None:
        return None
    info = {"version": champ.version, "run_id": champ.run_id,
            "run_date": champ.tags.get(tracking.DATE_TAG)}
    try:
        mdir = tracking.download_model_dir(champ.run_id, work_dir / f"champion-v{champ.version}")
        metrics = evaluate_model_dir(mdir, samples_dir)
        return {**info, "same_day": True, **metrics}
    except Exception as exc:
        log.warning("could not re-score champion v%s on today's test day (%s); using the "
                    "figures recorded on its own test day", champ.version, exc)
        recorded = {k.removeprefix("tarq.test_"): float(v) for k, v in champ.tags.items()
                    if k.startswith("tarq.test_")}
        return {**info, "same_day": False, **recorded}


@task(name="assign-semantic-ids", retries=1, retry_delay_seconds=5)
def assign_task(db: Path, model_dir: Path, out_dir: Path) -> dict[str, Any]:
    """FAISS-checked semantic IDs for the whole catalog; a failed check returns ``ok: False``."""
    from tarq.semantic_ids import HEALTH_JSON, SemanticIdError, assign_ids

    try:
        report = assign_ids(db, model_dir, out_dir, progress=False)
    except SemanticIdError as exc:
        path = out_dir / HEALTH_JSON
        report = json.loads(path.read_text()) if path.exists() else {"ok": False, "checks": []}
        report["ok"] = False
        report["error"] = str(exc)
    return json.loads(json.dumps(report, default=str))


@task(name="mlflow-register", retries=2, retry_delay_seconds=5)
def register_task(
    tracking_uri: str | None, experiment: str, run_date: str, samples: dict[str, Any],
    samples_dir: Path, results: dict[str, dict[str, Any]], model_dirs: dict[str, str], ids_dir: Path,
    health: dict[str, Any], champion: dict[str, Any] | None, params: dict[str, Any],
) -> dict[str, Any]:
    """Log the day to MLflow and register TARQ (alias ``challenger``); idempotent per date."""
    from flows import tracking

    exp_id = tracking.setup(tracking_uri, experiment)
    window = {k: samples[k] for k in ("train_start", "train_end", "test_day", "train_days")}
    window.update(train_rows=samples["train_rows"], test_rows=samples["test_rows"])
    parent = tracking.start_day(exp_id, run_date, window, samples["fingerprint"], params)
    children = {name: tracking.log_model_run(parent, name, res, Path(model_dirs[name]), run_date)
                for name, res in results.items()}
    rows = comparison_rows(results, champion)
    preds = {n: Path(d) / "predictions.parquet" for n, d in model_dirs.items()}
    ids_path = ids_dir / "ids.parquet"
    tracking.log_comparison(parent, rows, preds, ids_path if health.get("ok") else None, health)
    out: dict[str, Any] = {"parent_run_id": parent, "child_run_ids": children, "rows": rows,
                           "experiment_id": exp_id, "version": None, "model_uri": None}
    if not health.get("ok"):
        return out  # no ID table: nothing servable to register
    tarq_run = children["tarq"]
    existing = tracking.version_for_day(run_date)
    if existing is None:
        tracking.log_model_dir(tarq_run, Path(model_dirs["tarq"]))
        model_uri = tracking.log_pyfunc(tarq_run, Path(model_dirs["tarq"]), ids_path,
                                         samples_dir)
        tags = {"tarq.fingerprint": samples["fingerprint"], "tarq.test_day": samples["test_day"],
                **{f"tarq.test_{k}": str(v) for k, v in
                   tracking.model_metrics(results["tarq"]).items()}}
        mv = tracking.register(model_uri, tarq_run, run_date, tags)
    else:
        mv = existing
    out.update(version=mv.version, model_uri=f"models:/{tracking.REGISTERED_MODEL}/{mv.version}")
    return out


@task(name="publish", retries=2, retry_delay_seconds=5)
def publish_task(db: Path, ids_dir: Path, version: str, run_date: str, model_uri: str,
                 keep: int, export_dir: Path) -> dict[str, Any]:
    """Atomically publish the ID table as the served one (idempotent per version and date)."""
    from tarq.publish import publish

    res = publish(db, ids_dir, model_name="tarq", model_version=version, run_date=run_date,
                  model_uri=model_uri, keep=keep, export_dir=export_dir)
    return json.loads(json.dumps(res, default=str))


# ----------------------------------------------------------------------------- helpers


def comparison_rows(results: dict[str, dict[str, Any]],
                    champion: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One row per model (same metric keys) plus the champion re-scored on the same day."""
    from flows.tracking import METRIC_KEYS, model_metrics

    rows = []
    for name, res in results.items():
        m = model_metrics(res)
        rows.append({"model": name, "role": "model", **{k: m.get(k) for k in METRIC_KEYS}})
    if champion is not None:
        rows.append({"model": f"champion v{champion['version']} ({champion.get('run_date')})",
                     "role": "champion" if champion.get("same_day") else "champion (own day)",
                     **{k: champion.get(k) for k in METRIC_KEYS[:6]}})
    return rows


def _table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]


@contextmanager
def _stage(timings: dict[str, float], name: str) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = round(time.perf_counter() - t0, 2)


def _ensure(result: dict[str, Any], check: Callable[[dict[str, Any]], bool],
            rerun: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A cached result whose files are gone is recomputed (Prefect cannot see the files)."""
    return result if check(result) else rerun()


def _tasks(delay: float) -> SimpleNamespace:
    """The flow's tasks with ``delay`` seconds between retries (their retry counts unchanged)."""
    tasks = {"prepare_logs": prepare_logs, "resolve_day": resolve_day,
             "connect_tracking": connect_tracking, "warehouse_state": warehouse_state,
             "validate_logs": validate_logs, "build_samples": build_samples_task,
             "train": train_task, "rescore_champion": rescore_champion, "assign": assign_task,
             "register": register_task, "publish": publish_task}
    if delay == RETRY_DELAY_S:
        return SimpleNamespace(**tasks)
    return SimpleNamespace(**{k: t.with_options(retry_delay_seconds=delay)
                              for k, t in tasks.items()})


# ----------------------------------------------------------------------------- flows


@flow(name="tarq-daily", description="Validate, train TARQ + baselines, gate and publish.",
      validate_parameters=True)
def tarq_daily(params: DailyParams | None = None) -> dict[str, Any] | State:
    """One daily run; returns a summary dict, or a Failed state on validation/gate failure."""
    from prefect.runtime import flow_run

    from tarq.locking import LockBusyError, exclusive_lock, warehouse_lock_path

    p = params or DailyParams()
    log = get_run_logger()
    db = Path(p.db).resolve()
    lock = warehouse_lock_path(db)
    with ExitStack() as held:
        t0 = time.perf_counter()
        try:
            held.enter_context(exclusive_lock(lock, wait_s=p.lock_wait_s, info={
                "run_date": p.run_date, "flow_run": str(flow_run.get_id())}))
        except LockBusyError as exc:
            msg = (f"warehouse {db} is busy: {exc}. Run date {p.run_date} was not started and "
                   "nothing was changed (lock_wait_s waits for the other run).")
            log.warning(msg)
            return Failed(name="AlreadyRunning", message=msg)
        waited = time.perf_counter() - t0
        if waited >= 1:
            log.info("waited %.0fs for another run to release %s", waited, lock)
        return _run_day(p, db, log)


def _run_day(p: DailyParams, db: Path, log: Any) -> dict[str, Any] | State:
    """The daily run proper, under the warehouse lock."""
    from flows import tracking
    from tarq.gate import GateConfig, decide

    tasks = _tasks(p.retry_delay_s)
    timings: dict[str, float] = {}
    work = Path(p.work_dir).resolve()

    with _stage(timings, "logs"):
        tasks.prepare_logs(db, p.preset, p.seed)
        day = tasks.resolve_day(db, p.run_date)
    log.info("run date %s (test day %s) on %s", day,
             dt.date.fromisoformat(day) - dt.timedelta(days=1), db)
    try:
        known = tasks.connect_tracking(p.tracking_uri, p.experiment, day, p.tracking_timeout_s)
    except tracking.TrackingUnavailable as exc:
        msg = (f"{exc}, after {connect_tracking.retries + 1} attempts; run date {day} stopped "
               "before validation: nothing was trained, registered or published")
        log.error(msg)
        return Failed(name="TrackingUnavailable", message=msg)
    exp_id = known["experiment_id"]
    tracking.use_store(p.tracking_uri)  # for the flow's own MLflow calls after the tasks
    if known["status"] in tracking.DONE_STATUSES and not p.force:
        status = known["status"]
        msg = (f"run date {day} already finished ({status}, MLflow run {known['run_id']}, "
               f"version {known['version'] or '-'}); nothing redone. "
               "Pass force=true to retrain.")
        create_markdown_artifact(key="publication", markdown=f"**Skipped.** {msg}",
                                 description=f"tarq-daily {day}")
        log.info(msg)
        return Completed(message=msg, data={"run_date": day, "status": "skipped",
                                             "previous_status": status,
                                             "parent_run_id": known["run_id"]})

    day_dir = work / day
    with _stage(timings, "validate"):
        report = tasks.validate_logs(db, day, day_dir / "gx")
    checks = report.get("checks") or report.get("results") or []
    create_table_artifact(
        key="validation-summary",
        table=_table([{k: c.get(k) for k in ("name", "table", "level", "success", "message")}
                      for c in checks]) or [{"success": report["success"]}],
        description=f"Validation of {report.get('check_day', day)}: "
                    f"{'passed' if report['success'] else 'FAILED'}; quarantined "
                    f"{report.get('quarantined', {})}; docs {report.get('docs_path') or ''}")
    if not report["success"]:
        log.error(report["text"])
        return Failed(name="ValidationFailed",
                      message=f"validation of {day} failed, nothing published:\n{report['text']}")

    with _stage(timings, "samples"):
        state = tasks.warehouse_state(db)
        sdir = day_dir / "samples"
        args = (db, day, sdir, p.train_days, p.seq_len, state)
        samples = _ensure(tasks.build_samples(*args),
                          lambda r: (sdir / "meta.json").exists(),
                          lambda: tasks.build_samples.with_options(refresh_cache=True)(*args))
    log.info("samples %s: %s train rows (%s..%s), %s test rows on %s; fingerprint %s", sdir,
             samples["train_rows"], samples["train_start"], samples["train_end"],
             samples["test_rows"], samples["test_day"], samples["fingerprint"])

    from tarq.model import ModelConfig

    model_cfg = ModelConfig.from_dict(p.model_overrides).to_dict()
    train_cfg = {"epochs": p.epochs, "batch_size": p.batch_size,
                 "max_steps_per_epoch": p.max_steps_per_epoch, "threads": p.threads,
                 "seed": p.seed}
    results: dict[str, dict[str, Any]] = {}
    model_dirs: dict[str, str] = {}
    for name in p.model_list():
        with _stage(timings, f"train:{name}"):
            mdir = day_dir / "models" / name
            targs = (sdir, samples["fingerprint"], name, mdir, model_cfg, train_cfg)
            results[name] = _ensure(
                tasks.train(*targs), lambda r, d=mdir: (d / "model.pt").exists(),
                lambda t=targs: tasks.train.with_options(refresh_cache=True)(*t))
            model_dirs[name] = str(mdir)
        t = results[name]["test"]
        log.info("%s: auc %.4f gauc %.4f logloss %.4f (%.1fs)", name, t["auc"], t["gauc"],
                 t["logloss"], results[name]["train_seconds"])

    with _stage(timings, "champion"):
        champ = tasks.rescore_champion(sdir, day_dir, p.tracking_uri, p.experiment)

    with _stage(timings, "semantic_ids"):
        ids_dir = day_dir / "ids"
        health = tasks.assign(db, Path(model_dirs["tarq"]), ids_dir)
    create_table_artifact(
        key="semantic-id-health",
        table=[{"check": c["name"], "ok": c["ok"], "detail": c["detail"]}
               for c in health.get("checks", [])]
        + [{"check": k, "ok": None, "detail": str(health.get(k))}
           for k in ("catalog_size", "coverage", "utilization_catalog", "collision_rate",
                     "largest_collision_group", "recon_error") if k in health],
        description=f"Semantic IDs of {day}: {'OK' if health.get('ok') else 'FAILED'} "
                    f"{health.get('error', '')}")

    try:
        with _stage(timings, "mlflow"):
            reg = tasks.register(p.tracking_uri, p.experiment, day, samples, sdir, results,
                                 model_dirs, ids_dir, health, champ,
                                 {"params": p.model_dump(), "model": model_cfg,
                                  "train": train_cfg})
    except BaseException:
        _mark_failed(exp_id, day)
        raise
    parent = reg["parent_run_id"]
    create_table_artifact(key="model-comparison", table=_table(reg["rows"]),
                          description=f"Test day {samples['test_day']}: every model on the same "
                                      f"samples ({samples['fingerprint']}); MLflow run "
                                      f"{tracking.run_link(parent)}")

    try:
        with _stage(timings, "gate"):
            tt_metrics = results["tt"]["test"]
            decision = decide(
                results["tarq"]["test"], tt_metrics, champ, bool(health.get("ok")),
                "; ".join(c["detail"] for c in health.get("checks", []) if not c["ok"])
                or health.get("error", ""),
                GateConfig(p.gate_metric, p.min_gain_over_tt, p.champion_tolerance),
                champion_same_day=bool(champ.get("same_day", True)) if champ else True)
            gate_tags = {"gate.decision": "promote" if decision.promote else "reject",
                         "gate.reason": decision.reason}
            if reg["version"] is not None:
                tracking.tag_version(reg["version"], gate_tags)
        log.info("gate: %s", decision.reason)
        summary: dict[str, Any] = {
            "run_date": day, "test_day": samples["test_day"], "parent_run_id": parent,
            "mlflow_run": tracking.run_link(parent), "version": reg["version"],
            "model_uri": reg["model_uri"], "gate": decision.to_dict(), "comparison": reg["rows"],
            "timings": timings,
        }
        if not decision.promote:
            tracking.finish_day(parent, "rejected", {**gate_tags,
                                                     "tarq.model_version": reg["version"] or "-"})
            _publication_artifact(day, summary, None)
            _write_summary(day_dir, summary)
            return Failed(name="GateRejected",
                          message=f"gate rejected TARQ for {day}; champion unchanged, nothing "
                                  f"published: {decision.reason}")
        with _stage(timings, "publish"):
            pub = tasks.publish(db, ids_dir, str(reg["version"]), day, reg["model_uri"],
                                p.keep_versions, db.parent / "published")
            tracking.promote(reg["version"])
            tracking.tag_version(reg["version"], {"published.table_version": pub["version"],
                                                  "published.export": pub.get("export_path")})
        summary["publication"] = pub
        tracking.finish_day(parent, "published", {**gate_tags,
                                                  "tarq.model_version": reg["version"],
                                                  "tarq.published_version": pub["version"]})
    except BaseException:
        _mark_failed(exp_id, day)
        raise
    _publication_artifact(day, summary, pub)
    _write_summary(day_dir, summary)
    log.info("published version %s (model v%s) for %s; stage seconds %s", pub["version"],
             reg["version"], day, timings)
    return summary


def _write_summary(day_dir: Path, summary: dict[str, Any]) -> None:
    """The run's summary (comparison, gate, publication, stage seconds) as summary.json."""
    day_dir.mkdir(parents=True, exist_ok=True)
    (day_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str),
                                          encoding="utf-8")


def digest(summary: dict[str, Any]) -> str:
    """A few lines for a terminal: per-model test metrics, gate, publication, stage seconds."""
    out = [f"run date {summary['run_date']} (test day {summary['test_day']}), "
           f"MLflow {summary.get('mlflow_run', '')}"]
    for r in summary.get("comparison", []):
        fig = "  ".join(f"{k} {r[k]:.4f}" for k in ("auc", "gauc", "logloss")
                        if isinstance(r.get(k), int | float))
        out.append(f"  {r.get('model', '?'):<10} {fig}")
    gate = summary.get("gate", {})
    out.append(f"  gate: {'promote' if gate.get('promote') else 'reject'} — "
               f"{gate.get('reason', '')}")
    pub = summary.get("publication")
    out.append("  published: none (champion and served table unchanged)" if not pub else
               f"  published: table version {pub.get('version')}, "
               f"{pub.get('manifest', {}).get('rows', '?')} rows, model v{summary.get('version')}")
    out.append("  seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in
                                         summary.get("timings", {}).items()))
    return "\n".join(out)


def _mark_failed(experiment_id: str, day: str) -> None:
    """Close the day's parent run as failed (a re-run reopens it) without masking the error."""
    from flows import tracking

    try:
        run = tracking.find_day_run(experiment_id, day)
        if run is not None and run.data.tags.get(tracking.STATUS_TAG) == "running":
            tracking.finish_day(run.info.run_id, "failed")
    except Exception as exc:
        get_run_logger().warning("could not mark the MLflow run of %s failed: %s", day, exc)


def _publication_artifact(day: str, summary: dict[str, Any], pub: dict[str, Any] | None) -> None:
    lines = [f"# tarq-daily {day}", "",
             f"- MLflow run: {summary['mlflow_run']}",
             f"- registered model: `tarq` version {summary['version'] or '— (not registered)'}",
             f"- gate: **{'promote' if summary['gate']['promote'] else 'reject'}** — "
             f"{summary['gate']['reason']}"]
    if pub is None:
        lines.append("- publication: **none** (champion and served table unchanged)")
    else:
        lines += [f"- published table version **{pub['version']}** "
                  f"({'new' if pub.get('created', True) else 'already published'}), "
                  f"view `serving_item_ids`, {pub.get('manifest', {}).get('rows', '')} rows",
                  f"- Parquet export: `{pub.get('export_path')}`",
                  f"- model URI: `{summary['model_uri']}` (alias `champion`)"]
    lines += ["", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in summary["timings"].items()]
    create_markdown_artifact(key="publication", markdown="\n".join(lines),
                             description=f"tarq-daily {day}")


@flow(name="tarq-daily-backfill", description="Run tarq-daily for a range of dates, in order.")
def tarq_backfill(start: str, end: str, params: DailyParams | None = None,
                  keep_going: bool = False) -> list[dict[str, Any]]:
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


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m flows.tarq_daily", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", default="data/tarq.duckdb")
    ap.add_argument("--run-date", default="today", help="YYYY-MM-DD, 'today' or 'latest'")
    ap.add_argument("--preset", choices=["tiny", "small", "medium", "large"], default=None)
    ap.add_argument("--work-dir", default="outputs/daily")
    ap.add_argument("--models", default=None, help="comma-separated (must include tarq,tt)")
    ap.add_argument("--ablations", action="store_true")
    ap.add_argument("--train-days", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--max-steps", type=int, default=None, help="max steps per epoch")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--tracking-uri", default=None)
    ap.add_argument("--force", action="store_true", help="rerun a finished run date")
    ap.add_argument("--params", default=None, help="JSON of further DailyParams fields")
    ap.add_argument("--backfill-days", type=int, default=0,
                    help="first run the N run dates before --run-date, in order")
    return ap


def params_from_args(args: argparse.Namespace) -> DailyParams:
    """DailyParams from the CLI flags (``--params`` JSON first, flags on top)."""
    data: dict[str, Any] = json.loads(args.params) if args.params else {}
    data.update(db=args.db, run_date=args.run_date, work_dir=args.work_dir, force=args.force)
    for flag, field in (("preset", "preset"), ("train_days", "train_days"), ("epochs", "epochs"),
                        ("max_steps", "max_steps_per_epoch"), ("batch_size", "batch_size"),
                        ("tracking_uri", "tracking_uri")):
        if getattr(args, flag) is not None:
            data[field] = getattr(args, flag)
    if args.models:
        data["models"] = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.ablations:
        data["ablations"] = True
    return DailyParams(**data)


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Run the flow (or a backfill ending at the run date) without a server."""
    # SIGTERM (kill, a supervisor, Ctrl-C's sibling) unwinds like an exit, so the temporary
    # Prefect API server this process started is stopped instead of being left orphaned.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    args = _parser().parse_args(argv)
    try:
        p = params_from_args(args)
    except ValueError as exc:
        print(f"tarq-daily: error: {exc}", file=sys.stderr)
        return 2
    if args.backfill_days:
        from tarq.dates import resolve_run_date
        from tarq.warehouse import open_db

        if p.preset:
            ensure_logs(Path(p.db), p.preset, p.seed)
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
    return {"GateRejected": EXIT_REJECTED, "AlreadyRunning": EXIT_BUSY}.get(state.name,
                                                                          EXIT_FAILED)


if __name__ == "__main__":
    sys.exit(main())
