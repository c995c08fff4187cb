"""MLflow runs of the daily job: the parent run of a run date, a child run per model with its
metrics, learning curves, samples and model directory, the comparison, and finding the runs
and parents of earlier dates."""

from __future__ import annotations

import json
import math
import sqlite3
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import mlflow
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

if TYPE_CHECKING:
    from flows.results import ChampionScore
    from tarq.training.train import TrainResult
from flows.tracking.figures import codebook_figure, markdown_table, roc_figure
from flows.tracking.registry import champion
from flows.tracking.store import (
    DATE_TAG,
    DONE_STATUSES,
    GC_TAG,
    KIND_TAG,
    METRIC_KEYS,
    MODEL_TAG,
    REGISTERED_MODEL,
    SHA_TAG,
    STATUS_TAG,
    WAREHOUSE_TAG,
    TrackingUnavailable,
    _wh,
    bind,
    check_store,
    client,
    default_tracking_uri,
    file_sha256,
    setup,
)


def open_day(
    tracking_uri: str | None,
    experiment: str,
    run_date: str,
    timeout_s: float = 5.0,
    warehouse: str = "",
    registered_model: str = "tarq",
) -> dict[str, Any]:
    """Check the store, open the experiment, bind it to ``warehouse`` (:func:`bind`) and look
    up ``run_date``'s parent run of that warehouse.

    Returns ``{"experiment_id", "run_id", "status", "version"}`` (``run_id`` None when the
    date never ran on this warehouse).

    Raises:
        TrackingUnavailable: the store is unreachable, locked or refuses the request; the
            message names the store (MLflow's own error is chained).
        ForeignWarehouse: ``registered_model`` belongs to another warehouse.
    """
    uri = tracking_uri or default_tracking_uri()
    check_store(uri, timeout_s)
    try:
        exp_id = setup(uri, experiment)
        bind(exp_id, warehouse, registered_model)
        run = find_day_run(exp_id, run_date, warehouse)
    except (MlflowException, OSError, sqlite3.Error) as exc:
        lines = [ln for ln in str(exc).splitlines() if ln.strip()]
        raise TrackingUnavailable(
            f"MLflow tracking store {uri} failed: {type(exc).__name__}: "
            f"{lines[0][:300] if lines else ''}"
        ) from exc
    except Exception as exc:  # e.g. SQLAlchemy's OperationalError on a locked or broken file
        if type(exc).__module__.split(".")[0] != "sqlalchemy":
            raise
        raise TrackingUnavailable(
            f"MLflow tracking store {uri} failed: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:300]}"
        ) from exc
    return {
        "experiment_id": exp_id,
        "run_id": run.info.run_id if run is not None else None,
        "status": run.data.tags.get(STATUS_TAG) if run is not None else None,
        "version": run.data.tags.get("tarq.model_version") if run is not None else None,
    }


def find_day_run(experiment_id: str, run_date: str, warehouse: str) -> Run | None:
    """The latest parent run of ``run_date`` on ``warehouse`` (any status), or None."""
    runs = client().search_runs(
        [experiment_id],
        filter_string=f"tags.`{KIND_TAG}` = 'daily' AND tags.`{DATE_TAG}` = '{run_date}' "
        f"AND tags.`{WAREHOUSE_TAG}` = '{_wh(warehouse)}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def start_day(
    experiment_id: str,
    run_date: str,
    window: Mapping[str, Any],
    fingerprint: str,
    params: Mapping[str, Any],
    warehouse: str,
) -> str:
    """Open (or reopen, after a crash) the parent run of ``run_date``; returns its id."""
    c = client()
    existing = find_day_run(experiment_id, run_date, warehouse)
    if existing is not None and existing.data.tags.get(STATUS_TAG) in ("running", "failed"):
        run_id = existing.info.run_id
        c.update_run(run_id, status="RUNNING")
    else:
        run_id = c.create_run(
            experiment_id,
            run_name=f"daily-{run_date}",
            tags={KIND_TAG: "daily", DATE_TAG: run_date, WAREHOUSE_TAG: _wh(warehouse)},
        ).info.run_id
    tags = {
        STATUS_TAG: "running",
        "tarq.fingerprint": fingerprint,
        **{f"tarq.{k}": str(v) for k, v in window.items()},
    }
    c.log_batch(
        run_id,
        params=_params({"window": dict(window), **params}, existing_run=run_id),
        tags=[mlflow.entities.RunTag(k, v) for k, v in tags.items()],
    )
    return run_id


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = json.dumps(value) if isinstance(value, list | tuple) else str(value)


def _params(data: Mapping[str, Any], existing_run: str | None = None) -> list[Any]:
    flat: dict[str, str] = {}
    _flatten("", data, flat)
    if existing_run is not None:
        # Params are immutable in MLflow: a reopened run keeps those it already has.
        have = client().get_run(existing_run).data.params
        flat = {k: v for k, v in flat.items() if k not in have}
    return [mlflow.entities.Param(k, v[:6000]) for k, v in flat.items()]


def _child(parent_run_id: str, name: str) -> str | None:
    parent = client().get_run(parent_run_id)
    runs = client().search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}' AND tags.`{MODEL_TAG}` = '{name}'",
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def model_metrics(result: TrainResult) -> dict[str, float]:
    """The common metric keys from a training result (``tarq.training.train.train``'s)."""
    test = result.test
    out = {k: test[k] for k in METRIC_KEYS if test.get(k) is not None}
    for k, v in (("train_seconds", result.train_seconds), ("samples_per_s", result.samples_per_s)):
        if v is not None:
            out[k] = v
    return {k: float(v) for k, v in out.items()}


def alignment_metrics(test: Mapping[str, Any]) -> dict[str, float]:
    """TARQ variants: the sharpness of the alignment's p and p̂ (eq. 17) in a training
    result's ``test`` metrics, per level and averaged over levels, e.g.
    ``align_p_hat_max_prob_l0``, ``align_p_entropy_mean`` (``tarq.training.evaluation.evaluate``'s
    ``align_sharpness``); empty for the other models."""
    out: dict[str, float] = {}
    for side, stats in test.get("align_sharpness", {}).items():
        for stat, levels in stats.items():
            for level, v in enumerate(levels):
                out[f"align_{side}_{stat}_l{level}"] = float(v)
            out[f"align_{side}_{stat}_mean"] = float(sum(levels) / len(levels))
    return out


def history_metrics(history: Sequence[Mapping[str, Any]], end_ms: int) -> list[Any]:
    """Metric histories of a training history (``metrics.json``'s ``history``): the training
    loss every few steps (``train_loss`` and ``train_ctr_loss``, step = global step) and per epoch the loss, its terms
    and the validation AUCs (``epoch_*``, step = epoch), stamped with the wall-clock times
    training recorded — so logging them live and again afterwards gives the same rows, which
    MLflow keeps once. Histories from before the times were recorded are spread back from
    ``end_ms`` by the epochs' durations."""
    elapsed = [0.0]
    for h in history:
        elapsed.append(elapsed[-1] + float(h.get("seconds") or 0.0))
    out = []
    for i, h in enumerate(history):
        ts = h.get("ended_ms") or end_ms - int(1000 * (elapsed[-1] - elapsed[i + 1]))
        out += epoch_metrics(h, int(ts))
        out += [
            metric
            for entry in h.get("step_losses") or []
            for metric in step_metrics(entry[0], entry[1], entry[2], *entry[3:4])
        ]
    return out


def step_metrics(step: int, loss: float, t_ms: int, ctr_loss: float | None = None) -> list[Any]:
    """``train_loss`` (the model's total, whose terms differ by model) and ``train_ctr_loss``
    (the CTR log-loss term every model has: the curve to compare models on) at one step;
    histories from before the CTR term was recorded have ``train_loss`` only."""
    out = [mlflow.entities.Metric("train_loss", float(loss), int(t_ms), int(step))]
    if ctr_loss is not None and math.isfinite(ctr_loss):
        out.append(mlflow.entities.Metric("train_ctr_loss", float(ctr_loss), int(t_ms), int(step)))
    return out


def epoch_metrics(h: Mapping[str, Any], ts: int) -> list[Any]:
    """One epoch record's figures as metrics at step = epoch, timestamp ``ts`` (ms)."""
    figures = {
        "epoch_loss": h.get("loss"),
        "epoch_valid_auc": h.get("valid_auc"),
        "epoch_valid_random_auc": h.get("valid_random_auc"),
    }
    figures.update({f"epoch_loss_{k}": v for k, v in (h.get("loss_terms") or {}).items()})
    return [
        mlflow.entities.Metric(k, float(v), ts, int(h["epoch"]))
        for k, v in figures.items()
        if v is not None
    ]


def _history_metrics(model_dir: Path) -> list[Any]:
    done = json.loads((model_dir / "metrics.json").read_text(encoding="utf-8"))
    end_ms = int((model_dir / "metrics.json").stat().st_mtime * 1000)
    return history_metrics(done.get("history") or [], end_ms)


def samples_input(samples_dir: Path) -> Any | None:
    """The run's training samples as an MLflow dataset input: digest = the samples'
    fingerprint (``meta.json``), source = their folder; None when the folder has no meta."""
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    meta_path = Path(samples_dir) / "meta.json"
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    profile = {
        k: meta.get(k) for k in ("train_start", "train_end", "test_day", "train_rows", "test_rows")
    }
    dataset = Dataset(
        name=f"samples-{meta.get('run_date')}",
        digest=str(meta.get("fingerprint", ""))[:36],
        source_type="local",
        source=json.dumps({"uri": str(Path(samples_dir).resolve())}),
        profile=json.dumps(profile),
    )
    return DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, "training")])


def _child_tags(parent: Run, name: str, run_date: str) -> dict[str, str]:
    return {
        "mlflow.parentRunId": parent.info.run_id,
        MODEL_TAG: name,
        DATE_TAG: run_date,
        KIND_TAG: "model",
        WAREHOUSE_TAG: parent.data.tags.get(WAREHOUSE_TAG, ""),
    }


def _log_samples_once(run_id: str, samples_dir: Path) -> None:
    c = client()
    if not c.get_run(run_id).inputs.dataset_inputs:
        samples = samples_input(samples_dir)
        if samples is not None:
            c.log_inputs(run_id, datasets=[samples])


def open_model_run(parent_run_id: str, name: str, run_date: str, samples_dir: Path) -> str:
    """The child run of ``name`` opened before it trains (status RUNNING, the samples as its
    dataset input), so the runs table shows it training and its learning curves grow; a retry
    or re-run of the date reopens the same child. Returns its id."""
    c = client()
    run_id = _child(parent_run_id, name)
    if run_id is None:
        parent = c.get_run(parent_run_id)
        run_id = c.create_run(
            parent.info.experiment_id,
            run_name=f"{name}-{run_date}",
            tags=_child_tags(parent, name, run_date),
        ).info.run_id
    else:
        c.update_run(run_id, status="RUNNING")
    _log_samples_once(run_id, samples_dir)
    return run_id


class LiveRun:
    """The training loop's progress callback (``tarq.training.train.train``'s ``on_progress``) logging
    to a child run: ``train_loss`` per logged step, the ``epoch_*`` figures per epoch — with
    the times training recorded, so that :func:`log_model_run` logging the whole history
    afterwards adds nothing twice. A tracking failure is logged once and ends the live
    logging, never the training (the history is logged again at registration)."""

    def __init__(self, run_id: str, log: Any | None = None) -> None:
        self.run_id = run_id
        self.log = log
        self.failed = False

    def __call__(self, event: Mapping[str, Any]) -> None:
        if self.failed:
            return
        if event["kind"] == "step":
            metrics = step_metrics(
                event["step"], event["loss"], event["time_ms"], event.get("ctr_loss")
            )
        elif event["kind"] == "epoch":
            record = event["record"]
            metrics = epoch_metrics(record, int(record["ended_ms"]))
        else:
            return
        try:
            client().log_batch(self.run_id, metrics=metrics)
        except Exception as exc:  # the store may hiccup; training goes on
            self.failed = True
            if self.log is not None:
                self.log.warning("live MLflow logging to run %s stopped: %s", self.run_id, exc)


def log_model_run(
    parent_run_id: str,
    name: str,
    result: TrainResult,
    model_dir: Path,
    run_date: str,
    lineage_tags: Mapping[str, str] | None = None,
    extra_metrics: Mapping[str, float] | None = None,
) -> str:
    """Log one model as a child of the day's run and end it; returns its run id.

    The child is the one :func:`open_model_run` opened while the model trained, or, when
    training did not run in this flow run (a cached result), a new one whose start and end
    are the training's recorded times. It keeps the whole model directory (``model_dir/``:
    weights, optimizer state, vocabularies, lineage; not the resume checkpoints) so a later
    run date can continue it (warm start) or re-score it, and the lineage as tags
    (``lineage.*``).
    """
    c = client()
    parent = c.get_run(parent_run_id)
    run_id = _child(parent_run_id, name)
    if run_id is None:
        run_id = c.create_run(
            parent.info.experiment_id,
            run_name=f"{name}-{run_date}",
            tags=_child_tags(parent, name, run_date),
            start_time=result.started_ms,
        ).info.run_id
    sha = file_sha256(model_dir / "model.pt")
    have = c.get_run(run_id).data.tags
    if have.get(SHA_TAG) != sha:
        log_model_dir(run_id, model_dir)
    tags = {SHA_TAG: sha, **(lineage_tags or {})}
    c.log_batch(run_id, tags=[mlflow.entities.RunTag(k, str(v)[:5000]) for k, v in tags.items()])
    cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    metrics = [
        mlflow.entities.Metric(k, v, 0, 0)
        for k, v in {**model_metrics(result), **alignment_metrics(result.test)}.items()
    ]
    # valid: the slice epochs were chosen on (a cold run's last window day); valid_random: the
    # hash slice of the training days (same users and days as training: fit, not the next day).
    extra = {
        f"{slice_}_{k}": float(v)
        for slice_, figures in (("valid", result.valid), ("valid_random", result.valid_random))
        for k, v in (figures or {}).items()
        if k in ("auc", "gauc", "logloss") and v is not None
    }
    metrics += [mlflow.entities.Metric(k, v, 0, 0) for k, v in extra.items()]
    metrics += [mlflow.entities.Metric(k, float(v), 0, 0) for k, v in (extra_metrics or {}).items()]
    metrics += _history_metrics(model_dir)  # what live logging sent is kept once
    _log_samples_once(run_id, Path(result.samples))
    params = _params(
        {
            "model_name": name,
            "model": cfg["model"],
            "train": cfg["train"],
            "n_params": result.n_params,
            "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch,
        },
        existing_run=run_id,
    )
    c.log_batch(run_id, metrics=metrics, params=params)
    for f in ("metrics.json", "config.json", "layout.json"):
        c.log_artifact(run_id, str(model_dir / f))
    c.set_terminated(run_id, end_time=result.finished_ms)
    return run_id


def comparison_rows(
    results: dict[str, TrainResult], champion: ChampionScore | None
) -> list[dict[str, Any]]:
    """One row per model (same metric keys) plus the champion re-scored on the same day."""
    rows = []
    for name, res in results.items():
        m = model_metrics(res)
        rows.append({"model": name, "role": "model", **{k: m.get(k) for k in METRIC_KEYS}})
    if champion is not None:
        rows.append(
            {
                "model": f"champion v{champion.version} ({champion.run_date})",
                "role": "champion" if champion.same_day else "champion (own day)",
                **{k: champion.metrics.get(k) for k in METRIC_KEYS[:6]},
            }
        )
    return rows


def log_model_dir(run_id: str, model_dir: Path) -> None:
    """Keep the model directory (weights, optimizer state, layout, vocab, lineage) with the
    run, for re-scoring and warm starts; the resume checkpoints stay behind."""
    c = client()
    for f in sorted(Path(model_dir).iterdir()):
        if f.name == "checkpoints" or f.name.startswith("."):
            continue
        if f.is_dir():
            c.log_artifacts(run_id, str(f), artifact_path=f"model_dir/{f.name}")
        else:
            c.log_artifact(run_id, str(f), artifact_path="model_dir")


def find_parent_run(
    name: str,
    run_date: str,
    experiment_id: str,
    prefer_champion: bool,
    warehouse: str,
    registered_model: str = REGISTERED_MODEL,
) -> tuple[Run, str | None, str] | None:
    """The run of the model that run date ``run_date`` continues on ``warehouse``, or None.

    ``prefer_champion`` (TARQ): the run behind the ``champion`` alias when its run date is
    before ``run_date``. Otherwise, and as TARQ's fallback: the newest child run of model
    ``name`` from an earlier run date whose day finished (published, not served or rejected)
    and that kept its model directory. Only this warehouse's runs and versions count.

    Returns:
        (run, registered version or None, source: ``champion`` or ``latest``).
    """
    c = client()
    if prefer_champion:
        champ = champion(registered_model, warehouse)
        if champ is not None and champ.run_id and champ.tags.get(DATE_TAG, "") < run_date:
            return c.get_run(champ.run_id), str(champ.version), "champion"
    runs = c.search_runs(
        [experiment_id],
        filter_string=f"tags.`{KIND_TAG}` = 'model' AND tags.`{MODEL_TAG}` = '{name}' "
        f"AND tags.`{WAREHOUSE_TAG}` = '{_wh(warehouse)}'",
        max_results=500,
        order_by=["attributes.start_time DESC"],
    )
    earlier = sorted(
        (
            r
            for r in runs
            if r.data.tags.get(DATE_TAG, "") < run_date
            and r.data.tags.get(SHA_TAG)
            and not r.data.tags.get(GC_TAG)
        ),
        key=lambda r: r.data.tags[DATE_TAG],
        reverse=True,
    )
    status: dict[str, str | None] = {}
    for r in earlier:
        pid = r.data.tags.get("mlflow.parentRunId")
        if pid not in status:
            status[pid] = c.get_run(pid).data.tags.get(STATUS_TAG) if pid else None
        if status[pid] in DONE_STATUSES:
            return r, None, "latest"
    return None


def cold_tried(
    name: str, after: str, run_date: str, experiment_id: str, warehouse: str
) -> str | None:
    """The newest run date strictly between ``after`` and ``run_date`` on which model ``name``
    was trained cold (``lineage.mode = cold``) in a day that finished, or None: for TARQ a
    full retrain the gate did not promote (:class:`tarq.release.lineage.ParentModel` ``cold_tried``)."""
    c = client()
    runs = c.search_runs(
        [experiment_id],
        filter_string=f"tags.`{KIND_TAG}` = 'model' AND tags.`{MODEL_TAG}` = '{name}' "
        f"AND tags.`{WAREHOUSE_TAG}` = '{_wh(warehouse)}' AND tags.`lineage.mode` = 'cold'",
        max_results=500,
    )
    dates = []
    for r in runs:
        day = r.data.tags.get(DATE_TAG, "")
        pid = r.data.tags.get("mlflow.parentRunId")
        if (
            after < day < run_date
            and pid
            and c.get_run(pid).data.tags.get(STATUS_TAG) in DONE_STATUSES
        ):
            dates.append(day)
    return max(dates, default=None)


def parent_model_dir(run: Run, local: Path, dst: Path) -> Path:
    """The parent run's model directory: ``local`` when its ``model.pt`` is the one the run
    logged (same sha256), else the run's ``model_dir/`` artifacts downloaded into ``dst``."""
    want = run.data.tags.get(SHA_TAG)
    if want and (local / "model.pt").is_file() and file_sha256(local / "model.pt") == want:
        return local
    if dst.exists():
        import shutil

        shutil.rmtree(dst)
    return download_model_dir(run.info.run_id, dst)


def log_comparison(
    parent_run_id: str,
    rows: Sequence[Mapping[str, Any]],
    predictions: Mapping[str, Path],
    ids_path: Path | None,
    health: Mapping[str, Any] | None,
) -> None:
    """The comparison table, ROC figure and codebook-usage figure on the parent run."""
    import pandas as pd

    c = client()
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        df = pd.DataFrame(list(rows))
        df.to_csv(t / "comparison.csv", index=False)
        (t / "comparison.md").write_text(markdown_table(rows), encoding="utf-8")
        c.log_artifact(parent_run_id, str(t / "comparison.csv"))
        c.log_artifact(parent_run_id, str(t / "comparison.md"))
        if predictions:
            roc_figure(predictions, t / "roc.png")
            c.log_artifact(parent_run_id, str(t / "roc.png"), artifact_path="plots")
        if ids_path is not None and Path(ids_path).exists():
            codebook_figure(Path(ids_path), t / "codebook_usage.png")
            c.log_artifact(parent_run_id, str(t / "codebook_usage.png"), artifact_path="plots")
        if health is not None:
            (t / "semantic_ids_health.json").write_text(json.dumps(health, indent=2, default=str))
            c.log_artifact(parent_run_id, str(t / "semantic_ids_health.json"))
    for row in rows:
        if row.get("role") == "model" and row.get("auc") is not None:
            c.log_metric(parent_run_id, f"{row['model']}_auc", float(row["auc"]))


def log_metrics(run_id: str, values: Mapping[str, float]) -> None:
    """Metrics on a run (e.g. the demo truth's figures on the day's parent run)."""
    c = client()
    for k, v in values.items():
        c.log_metric(run_id, k, float(v))


def download_model_dir(run_id: str, dst: Path) -> Path:
    """Fetch a child run's ``model_dir/`` artifacts into ``dst``; returns the folder."""
    dst.mkdir(parents=True, exist_ok=True)
    return Path(
        mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="model_dir", dst_path=str(dst)
        )
    )


def finish_day(parent_run_id: str, status: str, tags: Mapping[str, str] | None = None) -> None:
    """Tag the parent run with its final status and close it."""
    c = client()
    for k, v in {STATUS_TAG: status, **(tags or {})}.items():
        c.set_tag(parent_run_id, k, str(v)[:5000])
    c.set_terminated(parent_run_id, "FINISHED" if status in DONE_STATUSES else "FAILED")


def run_link(run_id: str) -> str:
    """Where a person finds the run: the UI address when the store is a server, else a hint."""
    uri = mlflow.get_tracking_uri()
    run = client().get_run(run_id)
    # MLflow 3.17's UI opens experiments in its GenAI view whatever mlflow.experimentKind says;
    # the parameter picks the model-training view.
    path = f"#/experiments/{run.info.experiment_id}/runs/{run_id}?workflowType=machine_learning"
    if urlparse(uri).scheme in ("http", "https"):
        return f"{uri.rstrip('/')}/{path}"
    return f"http://127.0.0.1:5000/{path} (after `make mlflow-ui`; store {uri})"
