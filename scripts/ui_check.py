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
import json
import os
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

# The parts of the check are in uicheck/ beside this file (run as a script, or loaded from its
# path by tests/test_ui.py); uicheck puts the repo on the path (tarq, flows).
HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from uicheck import REPO, Missing  # noqa: E402
from uicheck.browser import Checker, browser, loopback_only  # noqa: E402
from uicheck.facts import PrefectFacts, mlflow_facts, prefect_facts  # noqa: E402
from uicheck.formats import mlflow_duration, mlflow_metric  # noqa: E402
from uicheck.mlflow_pages import check_mlflow  # noqa: E402
from uicheck.prefect_pages import check_prefect  # noqa: E402
from uicheck.processes import (  # noqa: E402
    find_chromium,
    free_port,
    mlflow_ui,
    prefect_ui,
    running_prefect_api,
    server,
)

from tarq.runtime.telemetry import disable_telemetry  # noqa: E402

disable_telemetry()

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

# What tests/test_ui.py uses of this script, beside main.
__all__ = [
    "DOC_PAGES",
    "PREFECT_ARTIFACTS",
    "Missing",
    "find_chromium",
    "free_port",
    "main",
    "mlflow_duration",
    "mlflow_metric",
    "server",
]


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
