"""A browser check of the UIs a person looks at after the daily job (``make ui-check``).

Headless Chromium (Debian's ``chromium`` package, the system browser: nothing downloaded),
driven by Playwright, opens what a person opens and does what a person does there:

- MLflow (``mlflow ui`` started here on a free loopback port on the store): the ``tarq-daily``
  experiment (which view it opens in; then *Model training*, the day's parent run expanded,
  the ``auc`` column added), the day's parent run and its ROC figure, the compare view of
  its model runs (the parallel-coordinates figure set to model → auc, gauc, logloss; the
  metrics table scrolled to ``auc``), every model's training loss on one chart (the day
  whose runs logged the most steps: a cold one) and the registered model ``tarq``;
- Prefect (the server of ``make prefect-up`` when it runs, else one started here on the
  demo's ``.prefect/`` database, without services), V2 UI: the day's ``tarq-daily`` flow run
  with its artifacts, and the ``model-comparison`` table artifact.

It asserts on each page what a person must see there, against what the stores hold: every
model's ``auc`` (runs table, day run, compare view, Prefect table), run durations that span
the training, the figures' axes and ranges, the learning curves' points, the aliases
``champion`` / ``challenger`` on their versions, the flow run's five artifacts. Each page's
screenshot (PNG, 1400 × 900) goes to ``--shots`` (``outputs/ui-check/``), and the README's
(:data:`DOC_PAGES`, when they passed) also to ``--out`` (``docs/img/``). What a page shows
that the project did not ask for is printed as a NOTE (e.g. the GenAI view). Requests to
anything but loopback are refused in the browser and listed (nothing leaves the machine).

    python scripts/ui_check.py [--store URI] [--run-date YYYY-MM-DD] [--out docs/img]
        [--prefect-api URL | --prefect-home DIR | --no-prefect] [--report FILE]

Exit 0 when every check passed, 1 when one failed (each failure printed), 2 when something it
needs is missing (Chromium, Playwright, the demo's runs: run ``make demo`` first).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

REPO = Path(__file__).resolve().parents[1]
# The learning curves charted: the CTR log-loss term every model logs beside its total loss.
CURVE_METRIC = "train_ctr_loss"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tarq.runtime.telemetry import TELEMETRY_OFF, disable_telemetry  # noqa: E402

disable_telemetry()

VIEWPORT = {"width": 1400, "height": 900}
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# The Prefect artifacts every finished tarq-daily run leaves (flows/artifacts.py).
PREFECT_ARTIFACTS = (
    "validation-summary",
    "training-lineage",
    "model-comparison",
    "semantic-id-health",
    "publication",
)
# The pages whose screenshots the README shows (docs/img/); every page's goes to --shots.
DOC_PAGES = (
    "mlflow-runs",
    "mlflow-compare",
    "mlflow-learning-curves",
    "mlflow-registry",
    "prefect-flow-run",
    "prefect-comparison",
)
DEFAULT_STORE = f"sqlite:///{REPO / 'mlflow' / 'mlflow.db'}"
EXIT_OK, EXIT_FAILED, EXIT_MISSING = 0, 1, 2


class Missing(RuntimeError):
    """Something the check needs is not there (exit 2); the message says what to run."""


# ----------------------------------------------------------------------------- formats


def mlflow_metric(value: float) -> str:
    """A metric value as the MLflow UI prints it (``Utils.formatMetric`` of its JS)."""
    if value == 0:
        return "0"
    a = abs(value)
    if a < 0.001:
        mant, exp = f"{value:.3e}".split("e")
        return f"{mant}e{int(exp):+d}"
    scale = 1000 if a < 10 else 100 if a < 100 else 10
    text = repr(math.floor(value * scale + 0.5) / scale)  # JS Math.round: halves go up
    return text[:-2] if text.endswith(".0") else text


def mlflow_duration(ms: int) -> str:
    """A run duration as the MLflow UI prints it (``Utils.formatDuration``)."""
    if ms < 500:
        return f"{ms}ms"
    for limit, unit, div in ((60e3, "s", 1e3), (3600e3, "min", 60e3), (86400e3, "h", 3600e3)):
        if ms < limit:
            return f"{ms / div:.1f}{unit}"
    return f"{ms / 86400e3:.1f}d"


# ----------------------------------------------------------------------------- processes


def find_chromium(explicit: str | None = None) -> str:
    """The system Chromium: ``explicit``, ``$TARQ_CHROMIUM`` or the first on PATH."""
    for cand in (explicit, os.environ.get("TARQ_CHROMIUM"), *CHROMIUM_NAMES):
        if cand and (path := shutil.which(cand)):
            return path
    raise Missing(
        "no Chromium found (looked for " + ", ".join(CHROMIUM_NAMES) + "): `make ui-check` "
        "installs Debian's package as root (apt-get install chromium), or set TARQ_CHROMIUM"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_ok(url: str, timeout_s: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return resp.status < 500
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def server(
    name: str, cmd: Sequence[str], health: str, env: dict[str, str], wait_s: float, log: Path
) -> Iterator[None]:
    """Run ``cmd`` in its own session until the block ends (then SIGTERM, SIGKILL, by its
    process group); it is up when ``health`` answers."""
    with open(log, "w") as out:
        proc = subprocess.Popen(
            list(cmd), env=env, cwd="/", stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + wait_s
        while not http_ok(health):
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({proc.returncode}): {tail(log)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not up after {wait_s:.0f} s: {tail(log)}")
            time.sleep(0.5)
        yield
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=15)


def tail(path: Path, n: int = 2000) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return text[-n:]


@contextlib.contextmanager
def mlflow_ui(store: str, workdir: Path, wait_s: float = 120) -> Iterator[str]:
    """``mlflow ui`` (one worker) on a free loopback port on ``store``; yields its URL."""
    port = free_port()
    # No job runner (its task-queue consumers only serve GenAI jobs): less to start.
    env = {**os.environ, **TELEMETRY_OFF, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    for var in ("MLFLOW_TRACKING_URI", "PYTHONPATH"):  # the repo's mlflow/ is not the library
        env.pop(var, None)
    cmd = [
        sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store,
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with server("mlflow ui", cmd, f"{url}/health", env, wait_s, workdir / "mlflow-ui.log"):
        yield url


@contextlib.contextmanager
def prefect_ui(
    api: str | None, home: Path | None, workdir: Path, wait_s: float = 180
) -> Iterator[str]:
    """The Prefect API URL to read and browse: ``api`` when given, else a server started here
    (no services: it schedules and cancels nothing) on ``home``'s database."""
    if api:
        if not http_ok(f"{api.rstrip('/')}/health"):
            raise Missing(f"no Prefect server answers at {api}")
        yield api.rstrip("/")
        return
    assert home is not None
    if not (home / "prefect.db").exists():
        raise Missing(
            f"no Prefect database in {home}: run `make demo` first (its flow runs are kept "
            "there), or pass --prefect-api"
        )
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        **TELEMETRY_OFF,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
    }
    for var in ("PREFECT_PROFILE", "PYTHONPATH"):
        env.pop(var, None)
    cmd = [
        sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
        "--port", str(port), "--no-services",
    ]  # fmt: skip
    with server("prefect server", cmd, f"{api}/health", env, wait_s, workdir / "prefect.log"):
        yield api


def running_prefect_api(home: Path) -> str | None:
    """The API of ``make prefect-up``'s server (``<home>/server.pid`` alive and healthy)."""
    pid_file = home / "server.pid"
    port = os.environ.get("TARQ_PREFECT_PORT", "4200")
    if not pid_file.exists():
        return None
    try:
        os.kill(int(pid_file.read_text().strip()), 0)
    except (ValueError, OSError):
        return None
    api = f"http://127.0.0.1:{port}/api"
    return api if http_ok(f"{api}/health") else None


# ----------------------------------------------------------------------------- what the stores hold


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


# ----------------------------------------------------------------------------- the browser


@dataclass
class PageResult:
    name: str
    url: str
    screenshot: str | None = None
    seen: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


class Checker:
    """One browser page; each check opens a URL, asserts, and takes its screenshot: into
    ``shots``, and for the pages in ``doc_pages`` that passed also into ``out``."""

    def __init__(
        self,
        page: Any,
        out: Path,
        shots: Path,
        doc_pages: Sequence[str],
        timeout_ms: int,
        blocked: list[str],
    ) -> None:
        self.page, self.out, self.shots, self.doc_pages = page, out, shots, doc_pages
        self.timeout_ms = timeout_ms
        self.blocked = blocked
        self.results: list[PageResult] = []
        self.seen_assistant: bool | None = None  # MLflow's assistant panel, once looked for

    def visit(self, name: str, url: str, check: Callable[[PageResult], None]) -> PageResult:
        from playwright.sync_api import Error as PlaywrightError

        res = PageResult(name=name, url=url)
        self.results.append(res)
        print(f"  {name}: {url}", flush=True)
        first_blocked = len(self.blocked)
        try:
            self.page.goto(url, wait_until="domcontentloaded", timeout=self.timeout_ms)
            check(res)
        except (PlaywrightError, AssertionError) as exc:
            lines = str(exc).splitlines() or [""]
            waiting = next((ln.strip() for ln in lines if ln.strip().startswith("- waiting")), "")
            res.failures.append(f"{type(exc).__name__}: {lines[0][:400]} {waiting[:300]}".strip())
        with contextlib.suppress(PlaywrightError):
            self.page.wait_for_timeout(800)  # let charts finish drawing (plotly animates)
        res.blocked = sorted(set(self.blocked[first_blocked:]))
        self.shots.mkdir(parents=True, exist_ok=True)
        shot = self.shots / f"{name}.png"
        try:
            self.page.screenshot(path=str(shot), full_page=False)
            res.screenshot = str(shot)
        except PlaywrightError as exc:
            res.failures.append(f"screenshot: {exc}")
        if res.ok and name in self.doc_pages:
            self.out.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shot, self.out / shot.name)
            res.screenshot = str(self.out / shot.name)
        for f in res.failures:
            print(f"    FAIL {f}", flush=True)
        for n in res.notes:
            print(f"    NOTE {n}", flush=True)
        if res.blocked:
            print(f"    refused requests to {', '.join(res.blocked)} (not loopback)", flush=True)
        print(f"    {'ok' if res.ok else 'failed'}: {res.screenshot}", flush=True)
        return res

    # -- helpers

    def text(self, value: str, within: Any | None = None, timeout_ms: int | None = None) -> Any:
        """The first visible element with exactly ``value`` as its text (waits for it)."""
        loc = (within or self.page).get_by_text(value, exact=True).filter(visible=True).first
        loc.wait_for(state="visible", timeout=timeout_ms or self.timeout_ms)
        return loc

    def has_text(self, value: str, within: Any | None = None, timeout_ms: int = 3000) -> bool:
        try:
            self.text(value, within, timeout_ms)
            return True
        except Exception:
            return False


# ----------------------------------------------------------------------------- MLflow pages

# The values of one metric row of the compare view: its name and its values are two grids,
# whose cells line up by their ``top`` offset.
_COMPARE_ROW_JS = """
(key) => {
  const link = [...document.querySelectorAll('a[title="Plot chart"]')]
    .find(a => a.textContent.trim() === key);
  if (!link) return null;
  const top = link.parentElement.style.top;
  const box = link.closest('[class*=collapse-content-box]');
  const grids = box ? box.querySelectorAll('.ReactVirtualized__Grid') : [];
  if (grids.length < 2) return null;
  return [...grids[1].querySelectorAll('[style*="top"]')]
    .filter(d => d.style.top === top && d.style.left !== '')
    .sort((a, b) => parseFloat(a.style.left) - parseFloat(b.style.left))
    .map(d => d.textContent.trim());
}
"""


def metric_texts(value: float) -> set[str]:
    """How a metric value may be printed: MLflow's rounding, or in full."""
    return {mlflow_metric(value), repr(value), f"{value:.4f}"}


def check_mlflow(ck: Checker, base: str, f: MlflowFacts) -> None:
    exp = f.experiment_id
    page = ck.page

    exp_url = f"{base}/#/experiments/{exp}"

    def settle_view() -> str:
        """Wait for the experiment page to pick its view; returns it."""
        page.wait_for_url(re.compile(r".*#/experiments/[^/?]+/[a-z-]+.*"), timeout=ck.timeout_ms)
        ck.text("Model training")
        return "genai" if "workflowType=genai" in page.url else "model training"

    def opens(res: PageResult) -> None:
        # What a person gets on opening the experiment: MLflow 3.17 picks the view from its
        # own GenAI / Model training switch (default GenAI, remembered per browser), not
        # from the experiment's mlflow.experimentKind tag.
        res.seen["experiment_kind"] = f.experiment_kind
        res.seen["opens_as"] = view = settle_view()
        res.seen["url"] = page.url
        if view == "genai":
            res.notes.append(
                f"the experiment opens in MLflow's GenAI view (#{page.url.split('#', 1)[-1]}) "
                f"although it is tagged mlflow.experimentKind={f.experiment_kind}: MLflow "
                "3.17 follows its GenAI / Model training switch; a person clicks 'Model "
                "training' (or opens #/experiments/<id>?workflowType=machine_learning)"
            )

    ck.visit("mlflow-experiment-opens", exp_url, opens)

    def runs_table(res: PageResult) -> None:
        if settle_view() == "genai":
            dismiss(ck, "Got it")  # the GenAI overview's "Detect Issues" tip covers the page
            ck.text("Model training").click(timeout=ck.timeout_ms)
        ck.text("Run Name")
        close_assistant(ck)
        # Every day's parent run; the chosen day's expanded to its model runs.
        for name in f.parent_names[-10:]:
            ck.text(name)
        if not ck.has_text(f.children[0].name, timeout_ms=1500):
            row = page.locator(".ag-row", has_text=f.parent_name).first
            row.locator("button").first.click(timeout=ck.timeout_ms)
        # The metric column a person adds (Columns → auc): every model's auc; the empty
        # Source column goes, to make room.
        toggle_columns(ck, ["Source"], show=False)
        toggle_columns(ck, ["auc"])
        rows: dict[str, str] = {}
        for k in f.children:
            ck.text(k.name)
            rows[k.model] = row_text(ck, k.name)
        res.seen["rows"] = rows
        durations: dict[str, str] = {}
        for k in f.children:
            cells = rows[k.model].split("\t")
            if k.auc is None or not metric_texts(k.auc) & set(cells):
                res.failures.append(f"{k.name}: auc {k.auc} not in its row {cells}")
            if k.end_ms is None:
                res.failures.append(f"{k.name} has not ended ({k.status})")
                continue
            want = mlflow_duration(k.end_ms - k.start_ms)
            durations[k.model] = want
            if want not in cells:
                res.failures.append(f"{k.name}: duration {want} not in its row {cells}")
            if k.train_seconds and (k.end_ms - k.start_ms) < 1000 * k.train_seconds * 0.95:
                res.failures.append(
                    f"{k.name} lasted {want}, less than its training ({k.train_seconds:.1f} s)"
                )
        res.seen["durations"] = durations
        if f.parent_end_ms:
            res.seen["parent_duration"] = mlflow_duration(f.parent_end_ms - f.parent_start_ms)
        page.mouse.move(0, 0)

    ck.visit("mlflow-runs", exp_url, runs_table)

    def day_run(res: PageResult) -> None:
        ck.text(f.parent_name)
        close_assistant(ck)
        shown = {}
        for k in f.children:
            if k.auc is None:
                res.failures.append(f"{k.name} has no auc")
                continue
            key = f"{k.model}_auc"
            cell = ck.text(key)
            row = page.locator("tr, [role=row]", has=cell).first
            text = row.inner_text(timeout=ck.timeout_ms)
            shown[key] = text
            if not any(t in text for t in metric_texts(k.auc)):
                res.failures.append(f"{key}: {k.auc} not shown ({text!r})")
        res.seen["metrics"] = shown
        # The day's model runs are linked from it.
        for k in f.children:
            ck.text(k.name)

    ck.visit("mlflow-day-run", f"{base}/#/experiments/{exp}/runs/{f.parent_id}", day_run)

    def roc(res: PageResult) -> None:
        img = page.locator("img[alt='plots/roc.png']").first
        img.wait_for(state="visible", timeout=ck.timeout_ms)
        page.wait_for_function(
            "(el) => el.complete && el.naturalWidth > 0", arg=img.element_handle()
        )
        size = img.evaluate("(el) => [el.naturalWidth, el.naturalHeight]")
        res.seen["figure_px"] = size
        assert size[0] >= 300, f"the ROC figure is not shown ({size})"

    ck.visit(
        "mlflow-roc",
        f"{base}/#/experiments/{exp}/runs/{f.parent_id}/artifacts/plots/roc.png",
        roc,
    )

    compare_url = (
        f"{base}/#/compare-runs?runs={quote(json.dumps([k.run_id for k in f.children]))}"
        f"&experiments={quote(json.dumps([exp]))}"
    )
    by_name = {k.name: k for k in f.children}

    def compared_runs(res: PageResult) -> list[str]:
        for k in f.children:
            ck.text(k.name)
        cells = page.locator("tr", has_text="Run Name:").first.locator("td, th").all_inner_texts()
        names = [n.strip() for n in cells if n.strip() and n.strip() != "Run Name:"]
        res.seen["columns"] = names
        assert sorted(names) == sorted(by_name), f"compared runs {names}"
        return names

    def compare(res: PageResult) -> None:
        compared_runs(res)
        # The comparison figure, set up as a person would: the models on the first axis of
        # the parallel-coordinates plot, then their auc, gauc and logloss.
        page.get_by_text("Clear All", exact=True).click(timeout=ck.timeout_ms)
        pick_options(ck, "Please select parameters", ["model_name"])
        pick_options(ck, "Please select metrics", ["auc", "gauc", "logloss"])
        plot = page.locator(".js-plotly-plot").first
        plot.wait_for(state="visible", timeout=ck.timeout_ms)
        page.wait_for_function(
            "() => [...document.querySelectorAll('.js-plotly-plot .axis-title')]"
            ".map(t => t.textContent).join() === 'model_name,auc,gauc,logloss'",
            timeout=ck.timeout_ms,
        )
        axes = plot.evaluate(
            "(el) => [...el.querySelectorAll('.axis')]"
            ".map(a => [...a.querySelectorAll('text')].map(t => t.textContent))"
        )
        texts = plot.evaluate(
            "(el) => [...el.querySelectorAll('text')].map(t => t.textContent.trim())"
        )
        res.seen["figure_axes"] = plot.locator(".axis-title").all_text_contents()
        res.seen["model_axis"] = axes[0] if axes else []
        if sorted(res.seen["model_axis"]) != sorted(k.model for k in f.children):
            res.failures.append(f"the model axis shows {res.seen['model_axis']}")
        aucs = [k.auc for k in f.children if k.auc is not None]
        # The auc axis spans the models' auc: its ends are labelled with the lowest and the
        # highest (plotly prints 5 decimals).
        ends = {f"{min(aucs):.5f}", f"{max(aucs):.5f}"}
        res.seen["auc_axis_ends"] = sorted(ends)
        if not ends <= set(texts):
            res.failures.append(f"the auc axis does not run from {sorted(ends)}")

    ck.visit("mlflow-compare", compare_url, compare)

    def compare_metrics(res: PageResult) -> None:
        names = compared_runs(res)
        scroll_to_metric_row(ck, "auc")
        values = page.evaluate(f"({_COMPARE_ROW_JS})('auc')") or []
        res.seen["auc_row"] = dict(zip(names, values, strict=False))
        assert len(values) == len(names), f"auc row {values} for {names}"
        for name, value in zip(names, values, strict=True):
            k = by_name[name]
            if k.auc is not None and value not in metric_texts(k.auc):
                res.failures.append(f"{name}: auc {value!r} shown, {mlflow_metric(k.auc)} logged")

    ck.visit("mlflow-compare-metrics", compare_url, compare_metrics)

    def curves(res: PageResult) -> None:
        # Every model's training loss of the day that trained longest (logged every few
        # steps while it trained), on one chart, and its latest, lowest and highest values.
        res.seen["date"] = f.curves_date
        res.seen["curve_points"] = {k.model: k.loss_points for k in f.curves}
        res.seen["curve_points_by_day"] = f.loss_points_by_day
        res.seen["epoch_points"] = {k.model: k.epochs for k in f.curves}
        ck.text(CURVE_METRIC)
        page.locator(".js-plotly-plot").first.wait_for(state="visible", timeout=ck.timeout_ms)
        # Every model logs the same CTR log-loss term (train_ctr_loss: their totals differ in
        # what they add to it), so the curves are comparable; log scale shows the early steps.
        ck.text("Y-axis Log Scale:")
        log_scale = page.get_by_role("switch").last
        if log_scale.get_attribute("aria-checked") != "true":
            log_scale.click(timeout=ck.timeout_ms)
        page.wait_for_url(re.compile(".*y_axis_scale=log.*"), timeout=ck.timeout_ms)
        latest = {}
        for k in f.curves:
            ck.text(f"{k.name} ({CURVE_METRIC})")  # the legend
            if k.loss_points < 2 or k.loss_last is None:
                res.failures.append(f"{k.name}: no learning curve ({k.loss_points} points)")
                continue
            cell = page.get_by_role("link", name=k.name, exact=True).filter(visible=True)
            text = page.locator("tr", has=cell.first).first.inner_text(timeout=ck.timeout_ms)
            latest[k.model] = " ".join(text.split())
            step, value = k.loss_last
            if f"(step={step})" not in text or not any(
                t in text for t in (repr(value), str(value), mlflow_metric(value))
            ):
                res.failures.append(
                    f"{k.name}: latest {CURVE_METRIC} {value} (step {step}) not in {text!r}"
                )
        res.seen["latest"] = latest
        if max(f.loss_points_by_day.values(), default=0) < 5:
            res.notes.append(
                f"no day has more than a few {CURVE_METRIC} points: {f.loss_points_by_day}"
            )

    ids = [k.run_id for k in f.curves]
    ck.visit(
        "mlflow-learning-curves",
        f"{base}/#/metric?runs={quote(json.dumps(ids))}&metric={quote(json.dumps(CURVE_METRIC))}"
        f"&experiments={quote(json.dumps([exp]))}"
        f"&plot_metric_keys={quote(json.dumps([CURVE_METRIC]))}&plot_layout={{}}&x_axis=step"
        "&y_axis_scale=linear&line_smoothness=1&show_point=false&deselected_curves=[]"
        "&last_linear_y_axis_range=[]",
        curves,
    )

    def registry(res: PageResult) -> None:
        ck.text(f.model_name)
        close_assistant(ck)
        for alias in ("champion", "challenger"):
            if alias not in f.aliases:
                res.failures.append(f"the store has no alias {alias!r}")
                continue
            tag = page.locator(f"[role=status][title='{alias}']").first
            tag.wait_for(state="visible", timeout=ck.timeout_ms)
            text = page.locator("[role=row]", has=tag).first.inner_text()
            res.seen[alias] = " ".join(text.split())
            if f"Version {f.aliases[alias]}" not in text:
                res.failures.append(f"@{alias} is not on version {f.aliases[alias]}: {text!r}")

    ck.visit("mlflow-registry", f"{base}/#/models/{f.model_name}", registry)


def dismiss(ck: Checker, label: str) -> None:
    """Click away a tip that covers the page, when it is there."""
    if ck.has_text(label, timeout_ms=1500):
        ck.page.get_by_text(label, exact=True).first.click(timeout=ck.timeout_ms)


def close_assistant(ck: Checker) -> None:
    """Close the "MLflow Assistant" side panel (it opens itself on the first visit; closed,
    it stays closed in this browser)."""
    # The panel's chat box (its title also labels the button that reopens it).
    panel = ck.page.get_by_placeholder("Ask a question").filter(visible=True).first
    if ck.seen_assistant is None:
        try:
            panel.wait_for(state="visible", timeout=5000)
            ck.seen_assistant = True
        except Exception:
            ck.seen_assistant = False
    if panel.is_visible():
        close = ck.page.get_by_role("button", name="Close", exact=True).filter(visible=True)
        close.first.click(timeout=ck.timeout_ms)
        panel.wait_for(state="hidden", timeout=ck.timeout_ms)


def toggle_columns(ck: Checker, labels: Sequence[str], show: bool = True) -> None:
    """Show (or hide) the runs-table columns ``labels`` with its Columns menu: metric keys
    to show, or attribute columns (``Source``) to hide."""
    page = ck.page
    for label in labels:
        page.get_by_role("button", name="Columns").first.click(timeout=ck.timeout_ms)
        page.get_by_placeholder("Search columns").fill(label, timeout=ck.timeout_ms)
        node = page.locator("[class*=tree-treenode]").filter(has_text=re.compile(f"^{label}$"))
        node.locator("[class*=tree-checkbox]").first.click(timeout=ck.timeout_ms)
        page.keyboard.press("Escape")
        col = f"metrics.`{label}`" if show else f"attributes.`{label}`"
        header = page.locator(f'.ag-header-cell[col-id="{col}"]').first
        header.wait_for(state="visible" if show else "detached", timeout=ck.timeout_ms)


def pick_options(ck: Checker, placeholder: str, options: Sequence[str]) -> None:
    """Choose ``options`` in the multi-select showing ``placeholder`` (type, click)."""
    page = ck.page
    page.locator("[class*=-select-selector]", has_text=placeholder).first.click(
        timeout=ck.timeout_ms
    )
    for option in options:
        page.keyboard.type(option)
        item = page.locator(f"[class*=select-item-option][title='{option}']").filter(visible=True)
        item.first.click(timeout=ck.timeout_ms)
    page.keyboard.press("Escape")


def scroll_to_metric_row(ck: Checker, key: str) -> None:
    """Scroll the compare view's metrics table (with the mouse wheel, as a person does: it
    scrolls the values and the names together) until the row ``key`` is in sight."""
    page = ck.page
    page.get_by_text("Metrics", exact=True).last.scroll_into_view_if_needed()
    section = page.locator("[class*=collapse-item]").filter(
        has=page.get_by_text("Metrics", exact=True)
    )
    grid = section.last.locator(".ReactVirtualized__Grid").last
    link = page.locator('a[title="Plot chart"]').filter(has_text=re.compile(f"^{key}$")).first
    for _ in range(300):
        box = grid.bounding_box()
        assert box, "the metrics table is not shown"
        seen = link.bounding_box() if link.count() else None
        if (
            seen
            and box["y"] <= seen["y"]
            and seen["y"] + seen["height"] <= box["y"] + box["height"]
        ):
            # The names column follows the values one wheel event late (MLflow 3.17 in
            # headless Chromium, no smooth scrolling): two 1-px steps line them up again.
            page.mouse.wheel(0, 1)
            page.wait_for_timeout(100)
            page.mouse.wheel(0, -1)
            page.wait_for_timeout(100)
            return
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.wheel(0, 45)
        page.wait_for_timeout(60)
    raise AssertionError(f"no metric row {key!r} in the compare view")


def row_text(ck: Checker, name: str) -> str:
    """The cells of the runs-table row of run ``name`` (its pinned and scrolled parts),
    tab-separated."""
    row = ck.page.locator(".ag-row", has=ck.page.get_by_text(name, exact=True)).first
    index = row.get_attribute("row-index", timeout=ck.timeout_ms)
    parts = ck.page.locator(f".ag-row[row-index='{index}']").all()
    cells = [c for p in parts for c in p.locator("[role=gridcell]").all_inner_texts()]
    return "\t".join(" ".join(c.split()) for c in cells)


# ----------------------------------------------------------------------------- Prefect pages


def check_prefect(ck: Checker, base: str, f: PrefectFacts, want: Sequence[str]) -> None:
    page = ck.page

    def flow_run(res: PageResult) -> None:
        ck.text(f.flow_run_name)
        page.locator("canvas").first.wait_for(state="visible", timeout=ck.timeout_ms)
        res.seen["state"] = f.state
        res.seen["run_date"] = f.run_date
        ck.text("Artifacts")
        for key in want:
            if key not in f.artifacts:
                res.failures.append(f"the flow run has no artifact {key!r}")
                continue
            ck.text(key)
        res.seen["artifacts"] = sorted(f.artifacts)
        if f.note:
            res.notes.append(f.note)
        page.wait_for_timeout(1500)  # the run graph draws its time axis last

    # The V2 UI: where the server's front page leads (its log links open the V1 UI).
    ck.visit("prefect-flow-run", f"{base}/v2/runs/flow-run/{f.flow_run_id}?tab=Artifacts", flow_run)

    if "model-comparison" not in f.artifacts:
        return

    def comparison(res: PageResult) -> None:
        ck.text("model-comparison")
        table = page.locator("table").first
        table.wait_for(state="visible", timeout=ck.timeout_ms)
        rows = {}
        for row in f.comparison:
            name = str(row.get("model"))
            tr = table.locator("tr", has=page.get_by_text(name, exact=True)).first
            text = tr.inner_text(timeout=ck.timeout_ms)
            rows[name] = " ".join(text.split())
            auc = row.get("auc")
            if auc is not None and str(auc) not in text.split():
                res.failures.append(f"{name}: auc {auc} not in its row {text!r}")
        res.seen["rows"] = rows

    ck.visit(
        "prefect-comparison",
        f"{base}/v2/artifacts/artifact/{f.artifacts['model-comparison']}",
        comparison,
    )


# ----------------------------------------------------------------------------- main


@contextlib.contextmanager
def browser(chromium: str) -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise Missing(
            "Playwright is not installed: `make ui-check` installs the `ui` extra "
            "(pip install -e '.[ui]')"
        ) from exc
    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=chromium,
            headless=True,
            args=["--disable-dev-shm-usage", "--disable-gpu", "--no-first-run"],
        )
        try:
            ctx = b.new_context(viewport=VIEWPORT, device_scale_factor=1, locale="en-US")
            yield ctx
        finally:
            b.close()


def loopback_only(ctx: Any, blocked: list[str]) -> None:
    """Abort every request that would leave the machine (fonts, telemetry, banners)."""

    def route(r: Any) -> None:
        host = urlparse(r.request.url).hostname or ""
        if r.request.url.startswith(("data:", "blob:")) or host in ("127.0.0.1", "localhost"):
            r.continue_()
        else:
            blocked.append(host)
            r.abort()

    ctx.route("**/*", route)


def run(args: argparse.Namespace) -> int:
    out, shots = Path(args.out).resolve(), Path(args.shots).resolve()
    chromium = find_chromium(args.chromium)
    store = args.store or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_STORE
    mf = mlflow_facts(store, args.experiment, args.run_date, args.registered_model)
    print(
        f"MLflow store {store}: experiment {args.experiment} ({mf.experiment_id}), "
        f"day {mf.run_date} ({mf.parent_status}), models {[k.model for k in mf.children]}, "
        f"aliases {mf.aliases}",
        flush=True,
    )
    blocked: list[str] = []
    pf: PrefectFacts | None = None
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ui-check-")))
        ctx = stack.enter_context(browser(chromium))
        loopback_only(ctx, blocked)
        ck = Checker(ctx.new_page(), out, shots, DOC_PAGES, int(args.timeout * 1000), blocked)
        print("MLflow UI:", flush=True)
        base = stack.enter_context(mlflow_ui(store, work))
        check_mlflow(ck, base, mf)
        if not args.no_prefect:
            home = Path(args.prefect_home).resolve()
            api = args.prefect_api or running_prefect_api(home)
            where = f"the server at {api}" if api else f"a server started on {home}"
            print(f"Prefect UI ({where}):", flush=True)
            api = stack.enter_context(prefect_ui(api, None if api else home, work))
            pf = prefect_facts(api, args.run_date or mf.run_date)
            check_prefect(ck, api.removesuffix("/api"), pf, args.prefect_artifacts)
    results = ck.results
    failures = [f"{r.name}: {x}" for r in results for x in r.failures]
    notes = [f"{r.name}: {x}" for r in results for x in r.notes]
    if args.report:
        report = {
            "ok": not failures,
            "chromium": chromium,
            "mlflow": asdict(mf),
            "prefect": asdict(pf) if pf else None,
            "pages": [{**asdict(r), "ok": r.ok} for r in results],
            "blocked_hosts": sorted(set(blocked)),
        }
        Path(args.report).write_text(json.dumps(report, indent=2, default=str))
    passed = sum(r.ok for r in results)
    print(f"\nui-check: {passed}/{len(results)} pages passed; screenshots in {shots}", end="")
    print(f", the README's in {out}" if passed else "")
    if blocked:
        print(f"requests the pages made off the machine, refused: {sorted(set(blocked))}")
    for line in notes:
        print(f"NOTE {line}")
    for line in failures:
        print(f"FAIL {line}")
    return EXIT_OK if not failures else EXIT_FAILED


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="scripts/ui_check.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--store", help="MLflow tracking URI (default the demo's mlflow/mlflow.db)")
    ap.add_argument("--experiment", default="tarq-daily")
    ap.add_argument("--registered-model", default="tarq")
    ap.add_argument("--run-date", help="the day to look at (default the newest finished)")
    ap.add_argument(
        "--out",
        default=str(REPO / "docs" / "img"),
        help="where the README's screenshots go (pages that passed)",
    )
    ap.add_argument(
        "--shots",
        default=str(REPO / "outputs" / "ui-check"),
        help="where every page's screenshot goes, failed ones included",
    )
    ap.add_argument("--prefect-api", help="a Prefect server's API URL to use")
    ap.add_argument(
        "--prefect-home",
        default=str(REPO / ".prefect"),
        help="PREFECT_HOME of the runs (make demo's), served by a temporary server",
    )
    ap.add_argument("--no-prefect", action="store_true", help="check MLflow only")
    ap.add_argument(
        "--prefect-artifacts",
        type=lambda s: [x for x in s.split(",") if x],
        default=list(PREFECT_ARTIFACTS),
        help="artifact keys the flow run must show (comma-separated)",
    )
    ap.add_argument("--chromium", help="the browser executable (default: chromium on PATH)")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for a page")
    ap.add_argument("--report", help="write what was seen on every page as JSON")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return run(args)
    except Missing as exc:
        print(f"ui-check: {exc}", file=sys.stderr)
        return EXIT_MISSING
    except RuntimeError as exc:  # a server that did not come up
        print(f"ui-check: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
