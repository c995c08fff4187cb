"""The Prefect tasks of ``tarq-daily``: thin wrappers that call :mod:`tarq` and MLflow.

One policy for all (:func:`daily_task`): two retries (one for training and the ID assignment,
whose retry resumes or recomputes), ``retry_delay_s`` between them; the two expensive,
deterministic stages (samples, training) are cached on their inputs for a week, everything
else is never cached (``NO_CACHE``: it reads or writes state that changes between runs).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import get_run_logger, task
from prefect.cache_policies import INPUTS, NO_CACHE, TASK_SOURCE

from flows import dask_steps
from flows.results import ChampionScore, Registration, Samples, TrainedModel

if TYPE_CHECKING:  # the tasks import tarq when they run
    from tarq.data.demo_oracle import OracleReport
    from tarq.data.samples import SampleBuild
    from tarq.ids.churn import ItemCodes
    from tarq.release.publish import Publication
    from tarq.training.train import TrainResult

RETRY_DELAY_S = 5.0
CACHE_FOR = dt.timedelta(days=7)


# TARQ's test-day predictions with its published IDs (the ids dir; :func:`score_published`).
PUBLISHED_PREDICTIONS = "tarq_predictions.parquet"


def daily_task(
    name: str,
    *,
    retries: int = 2,
    cached: bool = False,
    not_keyed: tuple[str, ...] = (),
    **kw: Any,
) -> Any:
    """``@task`` with the flow's one retry and cache policy; ``not_keyed``: arguments that
    do not change the result (left out of the cache key)."""
    inputs = INPUTS
    for arg in not_keyed:
        inputs = inputs - arg
    cache = (
        {
            "cache_policy": inputs + TASK_SOURCE,
            "cache_expiration": CACHE_FOR,
            "persist_result": True,
        }
        if cached
        else {"cache_policy": NO_CACHE}
    )
    return task(name=name, retries=retries, retry_delay_seconds=RETRY_DELAY_S, **cache, **kw)


def ensure_logs(db: Path, preset: str | None, seed: int) -> dict[str, Any]:
    """Generate demo logs (the preset's days ending yesterday, UTC) when the warehouse holds no
    impressions and a preset is given."""
    from tarq.store.warehouse import open_db

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


@daily_task("prepare-logs")
def prepare_logs(db: Path, preset: str | None, seed: int) -> dict[str, Any]:
    """:func:`ensure_logs` as a task."""
    res = ensure_logs(db, preset, seed)
    if res["generated"]:
        get_run_logger().info("generated %s demo logs into %s", preset, db)
    return res


@daily_task("resolve-run-date")
def resolve_day(db: Path, run_date: str) -> str:
    """``today``/``latest``/``YYYY-MM-DD`` → the run date D as ``YYYY-MM-DD``."""
    from tarq.dates import resolve_run_date
    from tarq.store.warehouse import open_db

    with open_db(db, read_only=True) as con:
        return str(resolve_run_date(run_date, con))


def _unless_foreign(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a failed MLflow connect unless the store belongs to another warehouse (a retry
    cannot change that)."""
    from flows.tracking import ForeignWarehouse

    return not isinstance(state.result(raise_on_failure=False), ForeignWarehouse)


@daily_task("mlflow-connect", retry_condition_fn=_unless_foreign)
def connect_tracking(
    tracking_uri: str | None,
    experiment: str,
    run_date: str,
    timeout_s: float,
    warehouse: str,
    registered_model: str,
) -> dict[str, Any]:
    """Check the MLflow store before any work, bind it to the warehouse and look up the run
    date's parent run of that warehouse."""
    from flows import tracking

    return tracking.open_day(
        tracking_uri,
        experiment,
        run_date,
        timeout_s=timeout_s,
        warehouse=warehouse,
        registered_model=registered_model,
    )


@daily_task("warehouse-state")
def warehouse_state(db: Path) -> dict[str, int]:
    """Row counts and max row ids of the raw and quarantine tables (the cache key of samples)."""
    from tarq.store import sqlfiles
    from tarq.store.warehouse import open_db

    with open_db(db, read_only=True) as con:
        cur = sqlfiles.run(con, "daily/warehouse_state")
        names = [d[0] for d in cur.description]
        return {k: int(v) for k, v in zip(names, cur.fetchone(), strict=True)}


@daily_task("validate")
def validate_logs(
    db: Path,
    run_date: str,
    docs_dir: Path,
    window_days: int = 0,
    bounds: dict[str, Any] | None = None,
    dask: str | None = None,
) -> dict[str, Any]:
    """Great Expectations validation of the day D − 1 and of each of the ``window_days`` days
    before it whose rows changed since they were last validated (bad rows → quarantine);
    ``bounds`` overrides fields of :class:`tarq.validation.ValidationBounds`; ``dask``: the
    scheduler address to map the chunks of days on (``flows.dask_steps``)."""
    from tarq.validation import ValidationBounds

    report = dask_steps.run_step(
        dask,
        "validate",
        db_path=db,
        run_date=run_date,
        docs_dir=docs_dir,
        window_days=window_days,
        bounds=ValidationBounds.from_overrides(bounds),
    )
    out = json.loads(json.dumps(report.to_dict(), default=str))
    out["success"] = bool(report.success)
    out["text"] = report.to_text()
    return out


@daily_task("build-samples", cached=True, not_keyed=("dask",))
def build_samples(
    db: Path,
    run_date: str,
    out_dir: Path,
    train_days: int,
    seq_len: int,
    min_count: int,
    state: dict[str, int],
    dask: str | None = None,
) -> SampleBuild:
    """Point-in-time samples of the run date (cached while the warehouse state is unchanged;
    built here or, with ``dask`` a scheduler address, one user bucket per task on that
    cluster: the same files either way, so the cache does not tell them apart)."""
    del state  # part of the cache key only
    return dask_steps.run_step(
        dask,
        "samples",
        db_path=db,
        run_date=run_date,
        out_dir=out_dir,
        train_days=train_days,
        seq_len=seq_len,
        min_count=min_count,
    )


@daily_task("find-parent", task_run_name="find-parent-{name}")
def find_parent(
    tracking_uri: str | None,
    experiment_id: str,
    name: str,
    run_date: str,
    work_dir: Path,
    prefer_champion: bool,
    warehouse: str,
    registered_model: str,
) -> Any:
    """The model ``name`` continues on ``run_date`` (a :class:`tarq.release.lineage.ParentModel`), or
    None. Its directory is the local one of its run date when unchanged, else downloaded."""
    from flows import tracking
    from tarq.release.lineage import Lineage, ParentModel, trained_through

    tracking.use_store(tracking_uri)
    found = tracking.find_parent_run(
        name, run_date, experiment_id, prefer_champion, warehouse, registered_model
    )
    if found is None:
        return None
    run, version, source = found
    pdate = run.data.tags[tracking.DATE_TAG]
    mdir = tracking.parent_model_dir(
        run, work_dir / pdate / "models" / name, work_dir / run_date / "parents" / name
    )
    lin = Lineage.load(mdir)
    d = dt.date.fromisoformat(pdate)
    if lin is None:  # a model trained before lineage was recorded: a cold run of its date
        return ParentModel(
            mdir, d, d - dt.timedelta(days=2), d, 0, version, run.info.run_id, source
        )
    tried = tracking.cold_tried(name, str(lin.cold_run_date), run_date, experiment_id, warehouse)
    return ParentModel(
        mdir,
        d,
        trained_through(mdir, lin.train_end),
        lin.cold_run_date,
        lin.generation,
        version,
        run.info.run_id,
        source,
        dt.date.fromisoformat(tried) if tried else None,
    )


@daily_task("train", retries=1, cached=True, not_keyed=("live",), task_run_name="train-{name}")
def train(
    samples_dir: Path,
    fingerprint: str,
    name: str,
    out_dir: Path,
    model_cfg: dict[str, Any],
    train_cfg: dict[str, Any],
    warm: dict[str, Any] | None,
    live: dict[str, Any] | None = None,
) -> TrainResult:
    """Train one model (cold, or warm from ``warm``); a retry resumes from its checkpoint.

    Cached on the sample fingerprint, the configs and the parent (its weights' sha256). The
    result's ``history`` is left empty (the cached result stays small; metrics.json has it).
    ``live`` (``{"tracking_uri", "parent_run_id", "run_date"}``, not part of the cache key):
    the model's MLflow child run is opened before training and follows it
    (:class:`flows.tracking.LiveRun`); a tracking failure there only ends the live logging.
    """
    from tarq.model import ModelConfig
    from tarq.training.train import TrainConfig
    from tarq.training.train import train as fit
    from tarq.training.warm_start import WarmStart

    stamp = out_dir / ".inputs.json"
    key = json.dumps(
        {"fingerprint": fingerprint, "model": model_cfg, "train": train_cfg, "warm": warm},
        sort_keys=True,
    )
    if out_dir.exists() and (not stamp.exists() or stamp.read_text() != key):
        # A checkpoint of other samples, settings or parent must not be resumed.
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(key)
    spec = None
    if warm is not None:
        spec = WarmStart(
            Path(warm["parent_dir"]),
            dt.date.fromisoformat(warm["since_day"]) if warm["since_day"] else None,
            replay_folds=int(warm["replay_folds"]),
            carry_optimizer=bool(warm["carry_optimizer"]),
        )
    result = fit(
        samples_dir,
        name,
        out_dir,
        ModelConfig.from_dict(model_cfg),
        TrainConfig.from_dict(train_cfg),
        resume=True,
        progress=False,
        warm=spec,
        on_progress=_live_run(live, name, samples_dir),
    )
    if result is None:  # only a DDP rank other than 0 gets no result; the task runs alone
        raise RuntimeError(f"training {name} returned no result (WORLD_SIZE/RANK set?)")
    return dataclasses.replace(result, history=[])


def _live_run(live: dict[str, Any] | None, name: str, samples_dir: Path) -> Any:
    """The progress callback logging ``name``'s training to its child run, or None."""
    if live is None:
        return None
    from flows import tracking

    logger = get_run_logger()
    try:
        tracking.use_store(live["tracking_uri"])
        run_id = tracking.open_model_run(live["parent_run_id"], name, live["run_date"], samples_dir)
    except Exception as exc:  # the registration logs the run after training anyway
        logger.warning("no live MLflow run for %s: %s", name, exc)
        return None
    return tracking.LiveRun(run_id, logger)


@daily_task("mlflow-start-day")
def start_day_run(
    tracking_uri: str | None,
    experiment: str,
    run_date: str,
    samples: Samples,
    params: dict[str, Any],
    warehouse: str,
) -> str:
    """Open (or reopen) the date's parent run before training, so that each model's child
    run can follow its training; returns the run id (the registration reuses the run)."""
    from flows import tracking

    exp_id = tracking.setup(tracking_uri, experiment)
    return tracking.start_day(
        exp_id, run_date, samples.window(), samples.fingerprint, params, warehouse
    )


@daily_task("rescore-champion")
def rescore_champion(
    samples_dir: Path,
    work_dir: Path,
    run_date: str,
    tracking_uri: str | None,
    warehouse: str,
    registered_model: str,
) -> ChampionScore | None:
    """The current champion's metrics (and predictions) on today's test day; its recorded
    figures when re-scoring is impossible (``same_day`` False, said in the gate's reason)."""
    from flows import tracking
    from tarq.training.evaluation import evaluate_model_dir

    log = get_run_logger()
    tracking.use_store(tracking_uri)
    champ = tracking.champion(registered_model, warehouse)
    if champ is None:
        return None
    cdate = champ.tags.get(tracking.DATE_TAG)
    try:
        run = tracking.client().get_run(champ.run_id)
        mdir = tracking.parent_model_dir(
            run,
            work_dir / str(cdate) / "models" / "tarq",
            work_dir / run_date / f"champion-v{champ.version}",
        )
        preds = work_dir / run_date / "champion_predictions.parquet"
        metrics = evaluate_model_dir(
            mdir,
            samples_dir,
            predictions_out=preds,
            item_codes=_published_codes(work_dir / str(cdate) / "ids", mdir),
        )
        return ChampionScore(str(champ.version), champ.run_id, cdate, True, metrics, preds)
    except Exception as exc:
        log.warning(
            "could not re-score champion v%s on today's test day (%s); using the "
            "figures recorded on its own test day",
            champ.version,
            exc,
        )
        recorded = {
            k.removeprefix("tarq.test_"): float(v)
            for k, v in champ.tags.items()
            if k.startswith("tarq.test_")
        }
        return ChampionScore(str(champ.version), champ.run_id, cdate, False, recorded)


def _published_codes(ids_dir: Path, model_dir: Path) -> ItemCodes | None:
    """The codes of a day's ids file made by ``model_dir``'s weights (what that day published;
    a warm day's are sticky), or None when the folder no longer has it or it belongs to other
    weights (the champion is then scored with its nearest entries, a cold day's published
    codes but for the items collision resolution moved)."""
    from tarq.ids.semantic_ids import IDS_FILE, file_sha256, read_item_codes

    path = ids_dir / IDS_FILE
    if not path.exists():
        return None
    meta, codes = read_item_codes(path)
    return codes if meta.get("model_sha256") == file_sha256(model_dir / "model.pt") else None


@daily_task("assign-semantic-ids", retries=1)
def assign(
    db: Path,
    model_dir: Path,
    out_dir: Path,
    max_churn: float | None,
    max_collision_rate: float | None,
    dask: str | None = None,
    sticky_margin: float | None = None,
    resolve: bool = True,
) -> dict[str, Any]:
    """FAISS-checked semantic IDs for the whole catalog with churn against the served table;
    a failed check returns ``ok: False`` (and no ids file). ``dask``: the scheduler address
    to map the catalog's chunks on (the same file as here). ``sticky_margin``: a warm day's
    sticky IDs; ``resolve``: collision resolution (:func:`tarq.ids.semantic_ids.assign_ids`)."""
    from tarq.ids.semantic_ids import HEALTH_JSON, SemanticIdError

    try:
        report = dask_steps.run_step(
            dask,
            "assign",
            db_path=db,
            model_dir=model_dir,
            out_dir=out_dir,
            progress=False,
            max_churn=max_churn,
            max_collision_rate=max_collision_rate,
            sticky_margin=sticky_margin,
            resolve=resolve,
        ).to_dict()
    except SemanticIdError as exc:
        path = out_dir / HEALTH_JSON
        report = json.loads(path.read_text()) if path.exists() else {"ok": False, "checks": []}
        report["ok"] = False
        report["error"] = str(exc)
    return json.loads(json.dumps(report, default=str))


@daily_task("score-published-ids")
def score_published(model_dir: Path, samples_dir: Path, ids_dir: Path) -> dict[str, Any]:
    """TARQ's test-day metrics with the semantic IDs it is published with (a warm day's
    sticky codes, not every item's nearest entries); predictions beside the ids file."""
    from tarq.ids.semantic_ids import IDS_FILE, read_item_codes
    from tarq.training.evaluation import evaluate_model_dir

    _, codes = read_item_codes(ids_dir / IDS_FILE)
    return evaluate_model_dir(
        model_dir, samples_dir, predictions_out=ids_dir / PUBLISHED_PREDICTIONS, item_codes=codes
    )


@daily_task("mlflow-register")
def register(
    tracking_uri: str | None,
    experiment: str,
    run_date: str,
    samples: Samples,
    trained: dict[str, TrainedModel],
    ids_dir: Path,
    health: dict[str, Any],
    champion: ChampionScore | None,
    params: dict[str, Any],
    warehouse: str,
    registered_model: str,
    oracle: OracleReport | None = None,
    replayed: dict[str, Any] | None = None,
) -> Registration:
    """Log the day to MLflow and register TARQ (alias ``challenger``); idempotent per date
    and weights: a retry reuses the pyfunc it already logged and the version it made.
    ``oracle`` (demo warehouses): the world's truth on the test day, logged beside the
    comparison (``demo_oracle_auc``, ``demo_user_level_auc`` on the parent run, its rows in
    the table). ``replayed`` (demo warehouses): the open-loop replay of the test day
    (:func:`tarq.online.replay.replay`), each model's figures logged to its run
    (:func:`tarq.online.replay.metrics`)."""
    from flows import tracking
    from tarq.online.replay import metrics as replay_metrics
    from tarq.runtime.drills import crash_point

    exp_id = tracking.setup(tracking_uri, experiment)
    parent = tracking.start_day(
        exp_id, run_date, samples.window(), samples.fingerprint, params, warehouse
    )
    churn = health.get("churn") or None
    children = {}
    for name, t in trained.items():
        extra = {
            "rows_trained": float(t.result.rows_trained or 0),
            "warm_start": 1.0 if t.lineage.warm else 0.0,
        }
        if name == "tarq" and churn:
            from tarq.ids.churn import IdChurn

            extra.update(IdChurn(**churn).metrics())
        if replayed is not None:
            extra.update(replay_metrics(replayed, name))
        children[name] = tracking.log_model_run(
            parent,
            name,
            t.result,
            t.dir,
            run_date,
            lineage_tags=t.lineage.tags(),
            extra_metrics=extra,
        )
    from tarq.data.demo_oracle import with_truth

    rows = tracking.comparison_rows({n: t.result for n, t in trained.items()}, champion)
    rows = with_truth(rows, oracle)
    preds = {n: t.predictions for n, t in trained.items()}
    ids_path = ids_dir / "ids.parquet"
    tracking.log_comparison(parent, rows, preds, ids_path if health.get("ok") else None, health)
    if oracle is not None:
        tracking.log_metrics(parent, oracle.metrics())
    if not health.get("ok"):
        return Registration(parent, exp_id, children, rows)  # nothing servable to register
    tarq = trained["tarq"]
    sha = tracking.file_sha256(tarq.dir / "model.pt")
    existing = tracking.version_for_day(run_date, registered_model, sha, warehouse)
    if existing is None:
        scope = {tracking.SHA_TAG: sha, tracking.WAREHOUSE_TAG: warehouse}
        model_uri = tracking.logged_model_for(children["tarq"], sha)
        if model_uri is None:
            model_uri = tracking.log_pyfunc(
                children["tarq"], tarq.dir, ids_path, samples.dir, tags=scope
            )
        crash_point(tracking.REGISTER_CRASH_ENV, "after_log_model", once=True)
        tags = {
            "tarq.fingerprint": samples.fingerprint,
            "tarq.test_day": samples.test_day,
            **{f"tarq.test_{k}": str(v) for k, v in tracking.model_metrics(tarq.result).items()},
            **tarq.lineage.tags(),
            **scope,
        }
        if churn:
            tags["ids.churn_tuple"] = f"{churn['tuple_churn']:.5f}"
        mv = tracking.register(model_uri, children["tarq"], run_date, tags, registered_model)
    else:
        mv = existing
    return Registration(
        parent, exp_id, children, rows, str(mv.version), f"models:/{registered_model}/{mv.version}"
    )


@daily_task("publish")
def publish(
    db: Path,
    ids_dir: Path,
    version: str,
    run_date: str,
    model_uri: str,
    keep: int,
    export_dir: Path,
    model_name: str = "tarq",
) -> Publication:
    """Atomically publish the ID table as the served one (idempotent per version and date)."""
    from tarq.release.publish import publish as publish_ids

    return publish_ids(
        db,
        ids_dir,
        model_name=model_name,
        model_version=version,
        run_date=run_date,
        model_uri=model_uri,
        keep=keep,
        export_dir=export_dir,
    )


@daily_task("retention", retries=0)
def retention(
    db: Path,
    work_dir: Path,
    keep_days: int,
    tracking_uri: str | None,
    experiment: str,
    registered_model: str,
) -> dict[str, Any]:
    """Delete the work folders and model artifacts of run dates older than ``keep_days`` run
    dates (never the champion's, challenger's, served or a parent's: :mod:`flows.retention`).
    Called under the flow's warehouse lock, after the day's gate decision (and publication)."""
    from flows import retention as policy
    from flows import tracking

    tracking.use_store(tracking_uri)
    plan, result = policy.collect(db, work_dir, keep_days, False, experiment, registered_model)
    get_run_logger().info("retention: %s", plan.text())
    return {
        "keep_days": keep_days,
        "cutoff": plan.cutoff,
        "bytes_before": plan.bytes_before,
        **result,
    }


ALL = {
    "prepare_logs": prepare_logs,
    "resolve_day": resolve_day,
    "connect_tracking": connect_tracking,
    "warehouse_state": warehouse_state,
    "validate_logs": validate_logs,
    "build_samples": build_samples,
    "find_parent": find_parent,
    "start_day_run": start_day_run,
    "train": train,
    "rescore_champion": rescore_champion,
    "assign": assign,
    "score_published": score_published,
    "register": register,
    "publish": publish,
    "retention": retention,
}
