"""Retention: bounded storage for a daily job that runs for months (``tarq gc``).

Every run date leaves a work folder (samples, GX docs, model folders, ids: ~70 MB a day on
``small``, ~460 MB on ``medium``) and, in the MLflow store, each model's ``model_dir/`` and the
TARQ pyfunc (~5 MB a model a day on ``small``). :func:`plan` lists what may go and
:func:`apply` deletes it:

- **Age** is counted in run dates, back from the newest run date this warehouse has in the
  store: ``keep_days = 7`` keeps the last 7 run dates whole. A backfill or the demo's simulated
  dates age exactly as a daily schedule does.
- **What goes**, for run dates before that: the model runs' artifacts (``model_dir/``) and the
  pyfunc models logged by them, their registered versions, and the work folders.
- **What never goes**, whatever its age (each kept item says why in the plan):

  - the version behind any alias (``champion``, ``challenger``, …) and its run;
  - every model of a publication still kept in the warehouse (the served table and the older
    tables :func:`tarq.release.publish.rollback` may serve again);
  - each model's warm-start parent (the newest finished run of each model: the next run date
    continues it), and TARQ's champion;
  - every run of a run date still in progress (and the CLI holds the warehouse lock, so no run
    starts while it deletes).

  Of a protected run date's work folder only ``summary.json``, ``ids/`` (the codes the
  champion is re-scored with) and the protected models' folders stay.
- **MLflow keeps the record**: runs, their metrics, params and small artifacts (``metrics.json``,
  ``config.json``, figures) stay; a run whose model went is tagged ``tarq.gc`` and is never
  chosen as a parent again.

``--dry-run`` prints the plan and deletes nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb
from mlflow.exceptions import MlflowException

from flows import tracking

GC_TAG = tracking.GC_TAG
# A protected run date's work folder keeps these (and the protected models' folders).
KEPT_IN_PROTECTED_DAY = ("summary.json", "ids")


@dataclass(frozen=True)
class Item:
    """One thing to delete.

    Attributes:
        kind: ``run-artifacts`` (a model run's ``model_dir/``), ``logged-model`` (a pyfunc and
            its files), ``model-version`` (a registered version) or ``work`` (a path).
        ref: the run id, logged model id, version number or path.
        run_date: the run date it belongs to.
        nbytes: bytes it frees (0 for a registry entry).
        what: one line for the report.
    """

    kind: str
    ref: str
    run_date: str
    nbytes: int
    what: str


@dataclass
class RetentionPlan:
    """What :func:`apply` deletes and what it keeps on purpose.

    Attributes:
        keep_days: run dates kept whole, counted back from ``newest``.
        newest: the newest run date of the warehouse in the store (None: no runs yet).
        cutoff: run dates before this one are eligible (None: nothing is).
        registered_model: the registered model whose versions it names.
        delete: the items to delete.
        protected: ``run date/what`` → why it stays (only the eligible dates' items).
        bytes_before: bytes of the work folder and of this warehouse's model artifacts.
    """

    keep_days: int
    newest: str | None
    cutoff: str | None
    registered_model: str = tracking.REGISTERED_MODEL
    delete: list[Item] = field(default_factory=list)
    protected: dict[str, str] = field(default_factory=dict)
    bytes_before: int = 0

    @property
    def nbytes(self) -> int:
        return sum(i.nbytes for i in self.delete)

    def to_dict(self) -> dict[str, Any]:
        return {
            "keep_days": self.keep_days,
            "newest_run_date": self.newest,
            "cutoff": self.cutoff,
            "bytes_before": self.bytes_before,
            "bytes_freed": self.nbytes,
            "delete": [asdict(i) for i in self.delete],
            "protected": self.protected,
        }

    def text(self) -> str:
        if self.cutoff is None:
            return f"nothing to delete: fewer than {self.keep_days + 1} run dates in the store"
        mb = 1024 * 1024
        lines = [
            f"keep the {self.keep_days} run dates {self.cutoff}..{self.newest}; before them: "
            f"{len(self.delete)} items, {self.nbytes / mb:,.1f} MB of "
            f"{self.bytes_before / mb:,.1f} MB"
        ]
        lines += [f"  delete {i.kind:<15} {i.what} ({i.nbytes / mb:,.1f} MB)" for i in self.delete]
        lines += [f"  keep   {k}: {why}" for k, why in sorted(self.protected.items())]
        return "\n".join(lines)


@dataclass
class _Store:
    """The facts a plan is made from (one warehouse's runs, versions and publications)."""

    days: dict[str, str]  # run date -> day status
    models: list[Any]  # model child runs (mlflow Run)
    versions: list[Any]  # registered versions of this warehouse
    aliases: dict[str, list[str]]  # version -> its aliases
    published_shas: dict[str, str]  # model sha256 -> why (kept publication)


def dir_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (or of the file ``path``)."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / f).stat().st_size
    return total


def _artifact_bytes(repo: Any, path: str | None = None) -> int:
    total = 0
    for info in repo.list_artifacts(path):
        total += _artifact_bytes(repo, info.path) if info.is_dir else int(info.file_size or 0)
    return total


def _repo(uri: str) -> Any:
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    return get_artifact_repository(uri)


def _publications(db: Path) -> dict[str, str]:
    """Model sha256 of every publication whose table is kept (served or a rollback target)."""
    from tarq.store import sqlfiles
    from tarq.store.warehouse import open_db

    with open_db(db, read_only=True) as con:
        try:
            cur = sqlfiles.run(con, "publish/list_versions")
            cols = [c[0] for c in cur.description]
            rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
            served_row = sqlfiles.run(con, "publish/served").fetchone()
        except duckdb.CatalogException:  # nothing was ever published
            return {}
    served = served_row[0] if served_row else None
    out: dict[str, str] = {}
    for r in rows:  # newest first
        if r["status"] == "published" and r["model_sha256"]:
            why = "served" if r["version"] == served else "kept for rollback"
            out.setdefault(r["model_sha256"], f"model of publication v{r['version']} ({why})")
    return out


def _store(experiment: str, registered_model: str, warehouse: str, db: Path) -> _Store:
    c = tracking.client()
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        return _Store({}, [], [], {}, {})
    wh = f"tags.`{tracking.WAREHOUSE_TAG}` = '{warehouse}'"
    days = {
        r.data.tags.get(tracking.DATE_TAG, ""): r.data.tags.get(tracking.STATUS_TAG, "")
        for r in _search(c, exp.experiment_id, f"tags.`{tracking.KIND_TAG}` = 'daily' AND {wh}")
    }
    models = _search(c, exp.experiment_id, f"tags.`{tracking.KIND_TAG}` = 'model' AND {wh}")
    aliases: dict[str, list[str]] = {}
    try:
        versions = [
            v
            for v in c.search_model_versions(f"name = '{registered_model}'")
            if v.tags.get(tracking.WAREHOUSE_TAG) == warehouse
        ]
        # search_model_versions leaves ModelVersion.aliases empty; the registered model has them
        for alias, version in c.get_registered_model(registered_model).aliases.items():
            aliases.setdefault(str(version), []).append(alias)
    except MlflowException:  # no registered model yet
        versions = []
    return _Store(days, models, versions, aliases, _publications(db))


def _search(c: Any, experiment_id: str, filter_string: str) -> list[Any]:
    out, token = [], None
    while True:
        page = c.search_runs(
            [experiment_id], filter_string=filter_string, max_results=1000, page_token=token
        )
        out += list(page)
        token = page.token
        if not token:
            return out


def _protected_runs(s: _Store) -> dict[str, str]:
    """Run id → why it stays, whatever its age."""
    keep: dict[str, str] = {}
    for v in s.versions:
        for alias in s.aliases.get(str(v.version), []):
            keep.setdefault(v.run_id, f"registered v{v.version}, alias {alias}")
    for r in s.models:
        sha = r.data.tags.get(tracking.SHA_TAG)
        if sha in s.published_shas:
            keep.setdefault(r.info.run_id, s.published_shas[sha])
        if s.days.get(r.data.tags.get(tracking.DATE_TAG, "")) == "running":
            keep.setdefault(r.info.run_id, "its run date is in progress")
    # Each model's warm-start parent: the newest run of a finished day that kept its model.
    newest: dict[str, Any] = {}
    for r in s.models:
        t = r.data.tags
        if (
            s.days.get(t.get(tracking.DATE_TAG, "")) in tracking.DONE_STATUSES
            and t.get(tracking.SHA_TAG)
            and not t.get(GC_TAG)
        ):
            cur = newest.get(t.get(tracking.MODEL_TAG, ""))
            if cur is None or t[tracking.DATE_TAG] > cur.data.tags[tracking.DATE_TAG]:
                newest[t.get(tracking.MODEL_TAG, "")] = r
    for name, r in newest.items():
        keep.setdefault(r.info.run_id, f"warm-start parent of {name}")
    return keep


def plan(
    db: Path,
    work_dir: Path,
    keep_days: int,
    experiment: str = tracking.DEFAULT_EXPERIMENT,
    registered_model: str = tracking.REGISTERED_MODEL,
) -> RetentionPlan:
    """What retention would delete now (nothing is changed). Uses the current MLflow store
    (:func:`flows.tracking.use_store` first).

    Raises:
        ValueError: ``keep_days`` < 1, or ``db`` is not a file.
    """
    if keep_days < 1:
        raise ValueError(
            f"keep_days must be >= 1 (the newest run date is always kept), got {keep_days}"
        )
    if not Path(db).is_file():
        raise ValueError(f"no warehouse at {db}")
    from tarq.store.warehouse import warehouse_id

    s = _store(experiment, registered_model, warehouse_id(db), Path(db))
    work_days = sorted(p.name for p in Path(work_dir).glob("????-??-??") if p.is_dir())
    newest = max([*s.days, *work_days], default=None)
    out = RetentionPlan(keep_days, newest, None, registered_model)
    # Each model run's model_dir/ is listed once (over HTTP a listing is a request per folder).
    model_bytes = {
        r.info.run_id: _artifact_bytes(_repo(r.info.artifact_uri), "model_dir")
        for r in s.models
        if not r.data.tags.get(GC_TAG)
    }
    out.bytes_before = dir_bytes(Path(work_dir)) if Path(work_dir).exists() else 0
    out.bytes_before += sum(model_bytes.values())
    if newest is None:
        return out
    cutoff = str(dt.date.fromisoformat(newest) - dt.timedelta(days=keep_days - 1))
    if not any(d < cutoff for d in [*s.days, *work_days]):
        return out
    out.cutoff = cutoff
    keep_runs = _protected_runs(s)
    kept_models: dict[str, set[str]] = {}  # run date -> protected model names
    by_run = {r.info.run_id: r for r in s.models}
    for run_id, why in keep_runs.items():
        r = by_run.get(run_id)
        if r is None:
            continue
        day, name = r.data.tags.get(tracking.DATE_TAG, ""), r.data.tags.get(tracking.MODEL_TAG, "")
        if day < cutoff:
            kept_models.setdefault(day, set()).add(name)
            out.protected[f"{day}/{name}"] = why
    doomed: set[str] = set()
    for r in s.models:
        day = r.data.tags.get(tracking.DATE_TAG, "")
        if day >= cutoff or r.info.run_id in keep_runs or r.data.tags.get(GC_TAG):
            continue
        doomed.add(r.info.run_id)
        name = r.data.tags.get(tracking.MODEL_TAG, "")
        out.delete.append(
            Item(
                "run-artifacts",
                r.info.run_id,
                day,
                model_bytes[r.info.run_id],
                f"{day} {name} model_dir/",
            )
        )
    for v in s.versions:
        if v.run_id in doomed and not s.aliases.get(str(v.version)):
            day = v.tags.get(tracking.DATE_TAG, "")
            out.delete.append(
                Item(
                    "model-version",
                    str(v.version),
                    day,
                    0,
                    f"{day} {registered_model} v{v.version}",
                )
            )
    out.delete += _logged_models(doomed, {r.info.run_id: r for r in s.models})
    out.delete += _work_items(Path(work_dir), work_days, cutoff, kept_models, s.days)
    return out


def _logged_models(doomed: set[str], runs: dict[str, Any]) -> list[Item]:
    c = tracking.client()
    items = []
    for exp_id in {runs[r].info.experiment_id for r in doomed}:
        token = None
        while True:
            page = c.search_logged_models([exp_id], max_results=100, page_token=token)
            for m in page:
                if m.source_run_id in doomed:
                    day = runs[m.source_run_id].data.tags.get(tracking.DATE_TAG, "")
                    nbytes = _artifact_bytes(_repo(m.artifact_location))
                    items.append(
                        Item("logged-model", m.model_id, day, nbytes, f"{day} pyfunc {m.model_id}")
                    )
            token = page.token
            if not token:
                break
    return items


def _work_items(
    work_dir: Path,
    work_days: Sequence[str],
    cutoff: str,
    kept_models: dict[str, set[str]],
    day_status: dict[str, str],
) -> list[Item]:
    items = []
    for day in work_days:
        if day >= cutoff:
            continue
        d = work_dir / day
        if day_status.get(day) == "running":
            continue
        if day not in kept_models:
            items.append(Item("work", str(d), day, dir_bytes(d), f"{d}/"))
            continue
        for child in sorted(d.iterdir()):
            if child.name in KEPT_IN_PROTECTED_DAY:
                continue
            if child.name == "models":
                for m in sorted(child.iterdir()):
                    if m.name not in kept_models[day]:
                        items.append(Item("work", str(m), day, dir_bytes(m), f"{m}/"))
                continue
            items.append(Item("work", str(child), day, dir_bytes(child), str(child)))
    return items


def apply(p: RetentionPlan) -> dict[str, Any]:
    """Delete what ``p`` lists; returns counts and bytes freed. Registry entries go first, so
    an interruption never leaves a version pointing at deleted files."""
    c = tracking.client()
    note = f"model_dir deleted by retention (keep_days {p.keep_days}) on {dt.date.today()}"
    freed, done = 0, {"model-version": 0, "logged-model": 0, "run-artifacts": 0, "work": 0}
    order = {"model-version": 0, "logged-model": 1, "run-artifacts": 2, "work": 3}
    for item in sorted(p.delete, key=lambda i: order[i.kind]):
        if item.kind == "model-version":
            with contextlib.suppress(MlflowException):  # already gone
                c.delete_model_version(p.registered_model, item.ref)
        elif item.kind == "logged-model":
            m = c.get_logged_model(item.ref)
            _repo(m.artifact_location).delete_artifacts()
            with contextlib.suppress(MlflowException):
                c.delete_logged_model(item.ref)
        elif item.kind == "run-artifacts":
            c.set_tag(item.ref, GC_TAG, note)
            _repo(c.get_run(item.ref).info.artifact_uri).delete_artifacts("model_dir")
        else:
            path = Path(item.ref)
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        freed += item.nbytes
        done[item.kind] += 1
    return {"deleted": done, "bytes_freed": freed}


def collect(
    db: Path,
    work_dir: Path,
    keep_days: int,
    dry_run: bool = False,
    experiment: str = tracking.DEFAULT_EXPERIMENT,
    registered_model: str = tracking.REGISTERED_MODEL,
) -> tuple[RetentionPlan, dict[str, Any]]:
    """Plan and (unless ``dry_run``) apply retention on the current MLflow store. The caller
    holds the warehouse lock (the daily flow does; :func:`main` takes it)."""
    p = plan(db, work_dir, keep_days, experiment, registered_model)
    if dry_run:
        return p, {"deleted": {}, "bytes_freed": 0, "dry_run": True}
    return p, apply(p)


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``tarq gc``."""
    ap = argparse.ArgumentParser(
        prog="tarq gc",
        description=__doc__.split("\n\n")[0],
        epilog="Age counts run dates back from the newest one; see flows/retention.py.",
    )
    ap.add_argument("--db", type=Path, default=Path("data/tarq.duckdb"))
    ap.add_argument("--work-dir", type=Path, default=Path("outputs/daily"))
    ap.add_argument("--keep-days", type=int, required=True, help="run dates kept whole (>= 1)")
    ap.add_argument("--dry-run", action="store_true", help="print the plan, delete nothing")
    ap.add_argument(
        "--tracking-uri", default=None, help="default: MLFLOW_TRACKING_URI or mlflow/mlflow.db"
    )
    ap.add_argument("--experiment", default=tracking.DEFAULT_EXPERIMENT)
    ap.add_argument("--registered-model", default=tracking.REGISTERED_MODEL)
    ap.add_argument("--json", type=Path, default=None, help="also write the plan and result here")
    return ap


def main(argv: Iterable[str] | None = None) -> int:
    """``tarq gc``: exit 0 done (or nothing to do), 2 bad arguments, 4 the warehouse is busy."""
    from tarq.store.locking import LockBusyError, exclusive_lock, warehouse_lock_path

    args = build_parser().parse_args(list(argv) if argv is not None else None)
    tracking.use_store(args.tracking_uri)
    try:
        with exclusive_lock(warehouse_lock_path(args.db), info={"command": "tarq gc"}):
            p, result = collect(
                args.db,
                args.work_dir,
                args.keep_days,
                args.dry_run,
                args.experiment,
                args.registered_model,
            )
    except LockBusyError as exc:
        print(
            f"tarq gc: {exc}; nothing deleted (run it when the daily job is done)", file=sys.stderr
        )
        return 4
    except ValueError as exc:
        print(f"tarq gc: error: {exc}", file=sys.stderr)
        return 2
    print(p.text())
    mb = 1024 * 1024
    if args.dry_run:
        print(f"dry run: nothing deleted ({p.nbytes / mb:,.1f} MB would be freed)")
    else:
        print(f"deleted {result['deleted']}: {result['bytes_freed'] / mb:,.1f} MB freed")
    if args.json:
        args.json.write_text(
            json.dumps({"plan": p.to_dict(), "result": result}, indent=2), encoding="utf-8"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
