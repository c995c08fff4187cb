"""The Prefect pages (V2 UI): the day's ``tarq-daily`` flow run with its artifacts, and its
``model-comparison`` table."""

from __future__ import annotations

from collections.abc import Sequence

from uicheck.browser import Checker, PageResult
from uicheck.facts import PrefectFacts


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
