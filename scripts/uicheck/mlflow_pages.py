"""The MLflow pages, in the order a person opens them after the daily job: the experiment
(which view it opens in, then its runs table), the day's parent run and its ROC figure, the
compare view of its model runs (figure, metrics table), every model's learning curve and the
registered model. One function per page: it opens the page and asserts what the store holds."""

from __future__ import annotations

import json
import re
from urllib.parse import quote

from uicheck.browser import (
    Checker,
    PageResult,
    close_assistant,
    dismiss,
    pick_options,
    row_text,
    scroll_to_metric_row,
    toggle_columns,
)
from uicheck.facts import CURVE_METRIC, MlflowFacts
from uicheck.formats import mlflow_duration, mlflow_metric

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
    """Every MLflow page, in this order (one screenshot each)."""
    check_experiment_opens(ck, base, f)
    check_runs_table(ck, base, f)
    check_day_run(ck, base, f)
    check_roc(ck, base, f)
    check_compare(ck, base, f)
    check_compare_metrics(ck, base, f)
    check_learning_curves(ck, base, f)
    check_registry(ck, base, f)


def settle_view(ck: Checker) -> str:
    """Wait for the experiment page to pick its view; returns it."""
    page = ck.page
    page.wait_for_url(re.compile(r".*#/experiments/[^/?]+/[a-z-]+.*"), timeout=ck.timeout_ms)
    ck.text("Model training")
    return "genai" if "workflowType=genai" in page.url else "model training"


def check_experiment_opens(ck: Checker, base: str, f: MlflowFacts) -> None:
    """mlflow-experiment-opens: the view the experiment opens in."""
    page = ck.page

    def opens(res: PageResult) -> None:
        # What a person gets on opening the experiment: MLflow 3.17 picks the view from its
        # own GenAI / Model training switch (default GenAI, remembered per browser), not
        # from the experiment's mlflow.experimentKind tag.
        res.seen["experiment_kind"] = f.experiment_kind
        res.seen["opens_as"] = view = settle_view(ck)
        res.seen["url"] = page.url
        if view == "genai":
            res.notes.append(
                f"the experiment opens in MLflow's GenAI view (#{page.url.split('#', 1)[-1]}) "
                f"although it is tagged mlflow.experimentKind={f.experiment_kind}: MLflow "
                "3.17 follows its GenAI / Model training switch; a person clicks 'Model "
                "training' (or opens #/experiments/<id>?workflowType=machine_learning)"
            )

    ck.visit("mlflow-experiment-opens", f"{base}/#/experiments/{f.experiment_id}", opens)


def check_runs_table(ck: Checker, base: str, f: MlflowFacts) -> None:
    """mlflow-runs: the model-training runs table, the day's run expanded, every model's auc
    and duration."""
    page = ck.page

    def runs_table(res: PageResult) -> None:
        if settle_view(ck) == "genai":
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

    ck.visit("mlflow-runs", f"{base}/#/experiments/{f.experiment_id}", runs_table)


def check_day_run(ck: Checker, base: str, f: MlflowFacts) -> None:
    """mlflow-day-run: the day's parent run, its models' auc and links to their runs."""
    exp = f.experiment_id
    page = ck.page

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


def check_roc(ck: Checker, base: str, f: MlflowFacts) -> None:
    """mlflow-roc: the day run's ROC figure, shown."""
    exp = f.experiment_id
    page = ck.page

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


def compare_url(base: str, f: MlflowFacts) -> str:
    """The compare view of the day's model runs."""
    exp = f.experiment_id
    return (
        f"{base}/#/compare-runs?runs={quote(json.dumps([k.run_id for k in f.children]))}"
        f"&experiments={quote(json.dumps([exp]))}"
    )


def compared_runs(ck: Checker, f: MlflowFacts, res: PageResult) -> list[str]:
    """The runs the compare view shows, in its order: the day's model runs."""
    page = ck.page
    by_name = {k.name: k for k in f.children}
    for k in f.children:
        ck.text(k.name)
    cells = page.locator("tr", has_text="Run Name:").first.locator("td, th").all_inner_texts()
    names = [n.strip() for n in cells if n.strip() and n.strip() != "Run Name:"]
    res.seen["columns"] = names
    assert sorted(names) == sorted(by_name), f"compared runs {names}"
    return names


def check_compare(ck: Checker, base: str, f: MlflowFacts) -> None:
    """mlflow-compare: the parallel-coordinates figure set to model → auc, gauc, logloss."""
    page = ck.page

    def compare(res: PageResult) -> None:
        compared_runs(ck, f, res)
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

    ck.visit("mlflow-compare", compare_url(base, f), compare)


def check_compare_metrics(ck: Checker, base: str, f: MlflowFacts) -> None:
    """mlflow-compare-metrics: the compare view's metrics table scrolled to every run's auc."""
    page = ck.page
    by_name = {k.name: k for k in f.children}

    def compare_metrics(res: PageResult) -> None:
        names = compared_runs(ck, f, res)
        scroll_to_metric_row(ck, "auc")
        values = page.evaluate(f"({_COMPARE_ROW_JS})('auc')") or []
        res.seen["auc_row"] = dict(zip(names, values, strict=False))
        assert len(values) == len(names), f"auc row {values} for {names}"
        for name, value in zip(names, values, strict=True):
            k = by_name[name]
            if k.auc is not None and value not in metric_texts(k.auc):
                res.failures.append(f"{name}: auc {value!r} shown, {mlflow_metric(k.auc)} logged")

    ck.visit("mlflow-compare-metrics", compare_url(base, f), compare_metrics)


def check_learning_curves(ck: Checker, base: str, f: MlflowFacts) -> None:
    """mlflow-learning-curves: every model's training loss of one day on one chart."""
    exp = f.experiment_id
    page = ck.page

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


def check_registry(ck: Checker, base: str, f: MlflowFacts) -> None:
    """mlflow-registry: the registered model, ``champion`` and ``challenger`` on their
    versions."""
    page = ck.page

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
