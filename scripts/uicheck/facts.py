"""What the stores hold, which the pages must show: the MLflow day run, its model runs, their
learning curves and the registered model's aliases (:func:`mlflow_facts`); the Prefect
``tarq-daily`` flow run and its artifacts (:func:`prefect_facts`)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from uicheck import Missing

# The learning curves charted: the CTR log-loss term every model logs beside its total loss.
CURVE_METRIC = "train_ctr_loss"


@dataclass
class ChildRun:
    model: str
    run_id: str
    name: str
    auc: float | None
    start_ms: int
    end_ms: int | None
    train_seconds: float | None
    status: str
    # The learning curve: CURVE_METRIC points (steps) and the last one.
    loss_points: int = 0
    loss_last: tuple[int, float] | None = None
    epochs: int = 0  # points of epoch_loss


@dataclass
class MlflowFacts:
    store: str
    experiment_id: str
    experiment_kind: str | None
    run_date: str
    parent_id: str
    parent_name: str
    parent_status: str
    parent_start_ms: int
    parent_end_ms: int | None
    parent_names: list[str]
    children: list[ChildRun]
    model_name: str
    aliases: dict[str, str]
    versions: list[str]
    # The learning curves shown: the day (of the newest ten) whose TARQ run logged the most
    # CURVE_METRIC points (a cold day; a warm day continues on one new day: a few points).
    curves_date: str = ""
    curves: list[ChildRun] = field(default_factory=list)
    loss_points_by_day: dict[str, int] = field(default_factory=dict)


def _children(c: Any, experiment_id: str, parent_id: str) -> list[ChildRun]:
    from flows.tracking import MODEL_TAG

    kids = c.search_runs(
        [experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'", max_results=100
    )
    out = []
    for r in kids:
        loss = c.get_metric_history(r.info.run_id, CURVE_METRIC)
        last = max(loss, key=lambda m: (m.step, m.timestamp)) if loss else None
        out.append(
            ChildRun(
                model=r.data.tags.get(MODEL_TAG, r.info.run_name),
                run_id=r.info.run_id,
                name=r.info.run_name,
                auc=r.data.metrics.get("auc"),
                start_ms=r.info.start_time,
                end_ms=r.info.end_time,
                train_seconds=r.data.metrics.get("train_seconds"),
                status=r.info.status,
                loss_points=len(loss),
                loss_last=(last.step, last.value) if last else None,
                epochs=len(c.get_metric_history(r.info.run_id, "epoch_loss")),
            )
        )
    return sorted(out, key=lambda k: k.model)


def mlflow_facts(store: str, experiment: str, run_date: str | None, model_name: str) -> MlflowFacts:
    """What the store holds for ``run_date`` (default: the newest finished day)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from flows.tracking import DATE_TAG, DONE_STATUSES, KIND_TAG, STATUS_TAG

    path = urlparse(store).path if store.startswith("sqlite:") else None
    if path is not None and not Path(path).exists():
        raise Missing(f"no MLflow store at {path}: run `make demo` first")
    c = MlflowClient(store, store)
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        raise Missing(f"no experiment {experiment!r} in {store}: run `make demo` first")
    parents = c.search_runs([exp.experiment_id], f"tags.`{KIND_TAG}` = 'daily'", max_results=1000)
    done = sorted(
        (r for r in parents if r.data.tags.get(STATUS_TAG) in DONE_STATUSES),
        key=lambda r: (r.data.tags.get(DATE_TAG, ""), r.info.start_time),
    )
    if run_date:
        day = [r for r in parents if r.data.tags.get(DATE_TAG) == run_date]
        if not day:
            raise Missing(f"no day run of {run_date} in experiment {experiment!r}")
        parent = max(day, key=lambda r: r.info.start_time)
    elif done:
        parent = done[-1]
    else:
        raise Missing(f"no finished day run in experiment {experiment!r}: run `make demo`")
    children = _children(c, exp.experiment_id, parent.info.run_id)
    if not children:
        raise Missing(f"the day run {parent.info.run_name} has no model runs")
    by_day = {parent.data.tags.get(DATE_TAG, ""): children}
    for r in done[-10:]:
        by_day.setdefault(
            r.data.tags.get(DATE_TAG, ""), _children(c, exp.experiment_id, r.info.run_id)
        )

    def points(kids: list[ChildRun]) -> int:
        tarq = [k for k in kids if k.model == "tarq"] or kids
        return max((k.loss_points for k in tarq), default=0)

    curves_date = max(by_day, key=lambda d: (points(by_day[d]), d))
    aliases: dict[str, str] = {}
    versions: list[str] = []
    with contextlib.suppress(MlflowException):
        rm = c.get_registered_model(model_name)
        aliases = {a: str(v) for a, v in (rm.aliases or {}).items()}
        versions = sorted(
            (str(v.version) for v in c.search_model_versions(f"name = '{model_name}'")),
            key=int,
        )
    return MlflowFacts(
        store=store,
        experiment_id=exp.experiment_id,
        experiment_kind=exp.tags.get("mlflow.experimentKind"),
        run_date=parent.data.tags.get(DATE_TAG, ""),
        parent_id=parent.info.run_id,
        parent_name=parent.info.run_name,
        parent_status=parent.data.tags.get(STATUS_TAG, ""),
        parent_start_ms=parent.info.start_time,
        parent_end_ms=parent.info.end_time,
        parent_names=sorted(r.info.run_name for r in parents),
        children=children,
        model_name=model_name,
        aliases=aliases,
        versions=versions,
        curves_date=curves_date,
        curves=by_day[curves_date],
        loss_points_by_day={d: points(k) for d, k in sorted(by_day.items())},
    )


@dataclass
class PrefectFacts:
    api: str
    flow_run_id: str
    flow_run_name: str
    state: str
    run_date: str | None
    artifacts: dict[str, str]  # key -> artifact id
    comparison: list[dict[str, Any]]
    note: str = ""


def prefect_facts(api: str, run_date: str | None, flow_name: str = "tarq-daily") -> PrefectFacts:
    """The ``tarq-daily`` flow run of ``run_date`` (its ``params.run_date``, or the test day
    its comparison names), else the newest completed one with a comparison artifact."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowFilter,
        FlowFilterName,
    )
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        temporary_settings({PREFECT_API_URL: api}),
        get_client(sync_client=True) as client,
    ):
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
            sort=FlowRunSort.START_TIME_DESC,
            limit=200,
        )
        if not runs:
            raise Missing(f"no {flow_name} flow runs on the Prefect server {api}: run `make demo`")

        def artifacts_of(run: Any) -> dict[str, Any]:
            found = client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
            )
            out: dict[str, Any] = {}
            for a in sorted(found, key=lambda a: a.created or dt.datetime.min):
                if a.key:
                    out[a.key] = a  # the newest per key
            return out

        def date_of(run: Any) -> str | None:
            p = (run.parameters or {}).get("params") or {}
            d = p.get("run_date") if isinstance(p, dict) else None
            return d if d and re.fullmatch(r"\d{4}-\d{2}-\d{2}", d) else None

        completed = [r for r in runs if r.state and r.state.is_completed()]
        chosen, note = None, ""
        if run_date:
            chosen = next((r for r in completed if date_of(r) == run_date), None)
            if chosen is None:
                test_day = str(dt.date.fromisoformat(run_date) - dt.timedelta(days=1))
                for r in completed:
                    cmp_ = artifacts_of(r).get("model-comparison")
                    if cmp_ and f"Test day {test_day}:" in (cmp_.description or ""):
                        chosen = r
                        break
        if chosen is None:
            chosen = next((r for r in completed if "model-comparison" in artifacts_of(r)), None)
            if chosen is None:
                raise Missing(f"no completed {flow_name} run with a model comparison on {api}")
            if run_date:
                note = f"no {flow_name} run of {run_date}; the newest completed one instead"
        arts = artifacts_of(chosen)
        data = arts["model-comparison"].data if "model-comparison" in arts else None
        rows = json.loads(data) if isinstance(data, str) else (data or [])
        return PrefectFacts(
            api=api,
            flow_run_id=str(chosen.id),
            flow_run_name=chosen.name,
            state=chosen.state.name if chosen.state else "",
            run_date=date_of(chosen),
            artifacts={k: str(a.id) for k, a in arts.items()},
            comparison=rows,
            note=note,
        )
