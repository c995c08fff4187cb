"""``tarq ab``: a simulated online A/B test of two pre-rankers over days of the daily loop.

Flow ``tarq-ab``. In a warehouse of its own (``OUT/tarq.duckdb``: demo logs of ``preset``
ending the day before the test), the daily job trains the models cold on the window; then for
each test day:

1. the day's traffic is simulated with arm A's requests pre-ranked by arm A's currently
   served model and arm B's by arm B's (:func:`tarq.data.demo_ab.append_ab_day`; users split
   by a stable hash; arm A: the two-tower model of the latest finished run, arm B: the served
   TARQ champion with its published semantic IDs — a day the gate rejects leaves the previous
   champion serving, as in production);
2. the daily job runs on the next date (``python -m flows.tarq_daily``, warm: it continues
   yesterday's models on the day both arms just shaped);
3. the day's figures — each arm's true CTR of exposed impressions and expected clicks per
   request under the world's click model, arm B's relative lift with a 95 % interval (users
   resampled) — go to a Prefect artifact, the A/B's MLflow run (experiment ``tarq-ab``: one
   step per day) and ``OUT/ab.json``.

At the end the pooled figures over all days, a plot of the lift per day with its interval
(``lift.png``) and ``ab.json`` are logged to the same MLflow run. The daily jobs log to the
same tracking store (``MLFLOW_TRACKING_URI``, default ``OUT/mlflow``) and run with their own
Prefect home (``OUT/prefect``) unless a Prefect server is configured.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from tarq import defaults
from tarq.runtime.telemetry import TELEMETRY_OFF, disable_telemetry

disable_telemetry()

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = "tarq-ab"
# The daily job's settings in the A/B, beside its defaults. Pre-ranking 1,000 candidates by a
# model instead of taking the world's 10 retrieved ones raises the day's CTR about 1.5× on
# `small`: the CTR drift check (0.8–1.25× the trailing median) would stop the first A/B day as
# it should stop an unannounced jump; an experiment that moves CTR on purpose widens that one
# band (every other check as by default). An A/B day cannot be replayed open-loop (its
# candidates came from the arms' models), so the job's replay is off.
DAILY_PARAMS = {"validation": {"ctr_ratio": [0.5, 2.0]}, "replay_pool": 0}


def _env(out: Path) -> dict[str, str]:
    env = {**os.environ, **TELEMETRY_OFF}
    env.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{out / 'mlflow' / 'mlflow.db'}")
    if "PREFECT_API_URL" not in env:
        env["PREFECT_HOME"] = str(out / "prefect")
    return env


def _daily(out: Path, run_date: dt.date, models: str, epochs: int | None, env: dict) -> float:
    """One run of the daily job (its own process, as the deployment runs it); seconds."""
    cmd = [sys.executable, "-m", "flows.tarq_daily", "--db", str(out / "tarq.duckdb")]
    cmd += ["--work-dir", str(out / "work"), "--run-date", str(run_date), "--models", models]
    cmd += ["--params", json.dumps(DAILY_PARAMS)]
    if epochs is not None:
        cmd += ["--epochs", str(epochs)]
    t0 = time.perf_counter()
    with open(out / "daily.log", "a", encoding="utf-8") as log:
        rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    if rc not in (0, 3):  # 3: finished, the gate kept the champion (the loop goes on)
        raise RuntimeError(f"the daily job for {run_date} failed (exit {rc}); see {out}/daily.log")
    return time.perf_counter() - t0


def _latest_model(work: Path, before: dt.date, name: str) -> Path:
    """The ``name`` model of the latest run date up to ``before`` that trained one."""
    for d in sorted((p for p in work.iterdir() if p.is_dir()), reverse=True):
        if d.name <= str(before) and (d / "models" / name / "model.pt").exists():
            return d / "models" / name
    raise FileNotFoundError(f"no run date in {work} up to {before} trained {name!r}")


def _rankers(out: Path, day: dt.date, arm_a: str, arm_b: str) -> tuple[tuple, dict[str, str]]:
    """Each arm's ranker for ``day`` and where it came from."""
    from tarq.online.ab import ModelRanker, served_tarq

    db, work = out / "tarq.duckdb", out / "work"
    rankers, source = [], {}
    for arm, name in (("A", arm_a), ("B", arm_b)):
        if name == "tarq":
            model_dir, codes, version = served_tarq(db, work)
            rankers.append(ModelRanker(model_dir, db, codes, name))
            source[arm] = f"tarq champion v{version} ({model_dir.parent.parent.name})"
        else:
            model_dir = _latest_model(work, day, name)
            rankers.append(ModelRanker(model_dir, db, None, name))
            source[arm] = f"{name} of {model_dir.parent.parent.name}"
    return tuple(rankers), source


def _day_markdown(day: str, s: dict[str, Any], source: dict[str, str]) -> str:
    rows = [
        f"# tarq-ab {day}",
        "",
        "| arm | model | requests | exposed | true CTR | expected clicks / request |",
        "|---|---|---:|---:|---|---|",
    ]
    for arm in ("A", "B"):
        a = s[arm]
        rows.append(
            f"| {arm} | {source[arm]} | {a['requests']:,} | {a['exposed']:,} | "
            f"{_fmt(a['ctr'], '.4f')} | {_fmt(a['clicks_per_request'], '.3f')} |"
        )
    lift = s["lift"]
    rows += [
        "",
        f"Lift B / A − 1: true CTR {_fmt(lift['ctr'], '+.2%')}, "
        f"clicks per request {_fmt(lift['clicks_per_request'], '+.2%')} (95 % intervals, users "
        "resampled).",
    ]
    return "\n".join(rows)


def _fmt(f: dict[str, float], spec: str) -> str:
    return f"{format(f['mean'], spec)} [{format(f['low'], spec)}, {format(f['high'], spec)}]"


def _metrics(prefix: str, s: dict[str, Any]) -> dict[str, float]:
    out = {}
    for arm in ("A", "B"):
        out[f"{prefix}ctr_{arm}"] = s[arm]["ctr"]["mean"]
        out[f"{prefix}clicks_per_request_{arm}"] = s[arm]["clicks_per_request"]["mean"]
    for k in ("ctr", "clicks_per_request"):
        for b in ("mean", "low", "high"):
            out[f"{prefix}lift_{k}" + ("" if b == "mean" else f"_{b}")] = s["lift"][k][b]
    return out


def _log_metrics(client: Any, run_id: str, values: dict[str, float], step: int) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in values.items()])


def _plot(
    days: list[dict[str, Any]], overall: dict[str, Any], path: Path, arms: tuple[str, str]
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = list(range(len(days)))
    lift = [d["summary"]["lift"]["ctr"] for d in days]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.errorbar(
        x,
        [100 * f["mean"] for f in lift],
        yerr=[
            [100 * (f["mean"] - f["low"]) for f in lift],
            [100 * (f["high"] - f["mean"]) for f in lift],
        ],
        fmt="o",
        capsize=4,
        label="per day",
    )
    o = overall["lift"]["ctr"]
    ax.axhspan(100 * o["low"], 100 * o["high"], alpha=0.2, color="C1")
    ax.axhline(100 * o["mean"], color="C1", label=f"all days {o['mean']:+.2%}")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(x, [d["day"][5:] for d in days])
    ax.set_ylabel("true-CTR lift B / A − 1 (%)")
    ax.set_title(f"simulated online A/B: arm B ({arms[1]}) vs arm A ({arms[0]}), 95 % intervals")
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@flow(name="tarq-ab", description="Simulated online A/B of two pre-rankers over daily runs.")
def tarq_ab(
    out: str = "outputs/ab",
    days: int = 7,
    preset: str = "small",
    seed: int = 7,
    pool_size: int = 1000,
    salt: int = 0,
    arm_a: str = "tt",
    arm_b: str = "tarq",
    epochs: int | None = None,
    first_day: str | None = None,
) -> dict[str, Any]:
    """Run the A/B (module docstring); returns what ``OUT/ab.json`` holds."""
    from tarq.data.demo import generate
    from tarq.data.demo_ab import arm_summary

    logger = get_run_logger()
    root = Path(out).resolve()
    if (root / "tarq.duckdb").exists():
        raise ValueError(f"{root} already holds an A/B (tarq.duckdb): choose a new --out")
    root.mkdir(parents=True, exist_ok=True)
    env = _env(root)
    today = dt.datetime.now(dt.UTC).date()
    first = dt.date.fromisoformat(first_day) if first_day else today - dt.timedelta(days=days)
    if first + dt.timedelta(days=days) > today:
        raise ValueError(f"the A/B's last day must be yesterday or earlier (first day {first})")
    models = ",".join(dict.fromkeys(["tarq", "tt", arm_a, arm_b]))
    t0 = time.perf_counter()
    generate(root / "tarq.duckdb", preset, seed, end_date=first - dt.timedelta(days=1))
    logger.info("demo logs (%s, seed %s) through %s", preset, seed, first - dt.timedelta(days=1))
    cold_s = _daily(root, first, models, epochs, env)
    logger.info("cold daily job for %s: %.0f s", first, cold_s)

    result: dict[str, Any] = {
        "settings": {
            "days": days,
            "preset": preset,
            "seed": seed,
            "pool_size": pool_size,
            "salt": salt,
            "arm_a": arm_a,
            "arm_b": arm_b,
            "first_day": str(first),
        },
        "days": [],
        "cold_s": round(cold_s, 1),
    }
    client, run_id = _start_run(env, result["settings"], arm_a, arm_b, first)
    result["mlflow_run_id"] = run_id
    run = _ABRun(root, env, models, epochs, (arm_a, arm_b), pool_size, salt, client, run_id, t0)
    try:
        ab_days = [_ab_day(run, i, first + dt.timedelta(days=i), result) for i in range(days)]
        overall = arm_summary(ab_days)
        result["overall"] = overall
        result["wall_s"] = round(time.perf_counter() - t0, 1)
        _log_metrics(client, run_id, _metrics("overall_", overall), step=0)
        (root / "ab.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
        _plot(result["days"], overall, root / "lift.png", (arm_a, arm_b))
        client.log_artifact(run_id, str(root / "ab.json"))
        client.log_artifact(run_id, str(root / "lift.png"))
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    last = first + dt.timedelta(days=days - 1)
    create_markdown_artifact(
        key="tarq-ab",
        markdown=_day_markdown(
            f"{first} .. {last} (all days)", overall, result["days"][-1]["source"]
        ),
        description="the whole A/B",
    )
    return result


def _start_run(
    env: dict[str, str], settings: dict[str, Any], arm_a: str, arm_b: str, first: dt.date
) -> tuple[Any, str]:
    """The A/B's MLflow run (experiment :data:`EXPERIMENT`) with its settings as params.

    An ``MlflowClient``, not mlflow's fluent API: no process-wide active run or experiment is
    left behind for other flows in the same process (a worker, a test session)."""
    from mlflow import MlflowClient
    from mlflow.entities import Param

    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name(EXPERIMENT)
    exp_id = exp.experiment_id if exp is not None else client.create_experiment(EXPERIMENT)
    run_id = client.create_run(exp_id, run_name=f"ab {arm_b} vs {arm_a} {first}").info.run_id
    try:
        client.log_batch(run_id, params=[Param(k, str(v)) for k, v in settings.items()])
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    return client, run_id


@dataclass(frozen=True)
class _ABRun:
    """What every day of one A/B shares."""

    root: Path
    env: dict[str, str]
    models: str
    epochs: int | None
    arms: tuple[str, str]
    pool_size: int
    salt: int
    client: Any
    run_id: str
    t0: float


def _ab_day(run: _ABRun, i: int, day: dt.date, result: dict[str, Any]) -> Any:
    """Day ``i`` of the A/B: simulate ``day`` with each arm's ranker, append it, run the daily
    job on it; log the day (MLflow step ``i``, a Prefect artifact, ``ab.json``). Returns the
    day's :class:`tarq.data.demo_ab.ABDay`."""
    from tarq.data.demo_ab import append_ab_day, arm_summary

    t_day = time.perf_counter()
    rankers, source = _rankers(run.root, day, *run.arms)
    ab = append_ab_day(run.root / "tarq.duckdb", day, rankers, run.pool_size, run.salt)
    sim_s = time.perf_counter() - t_day
    job_s = _daily(run.root, day + dt.timedelta(days=1), run.models, run.epochs, run.env)
    s = arm_summary([ab])
    result["days"].append(
        {
            "day": str(day),
            "source": source,
            "summary": s,
            "simulate_s": round(sim_s, 1),
            "daily_job_s": round(job_s, 1),
        }
    )
    _log_metrics(run.client, run.run_id, _metrics("", s), step=i)
    create_markdown_artifact(
        key="tarq-ab-day", markdown=_day_markdown(str(day), s, source), description=str(day)
    )
    (run.root / "ab.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    lift = s["lift"]["ctr"]
    print(
        f"[{time.perf_counter() - run.t0:6.0f} s] {day}: A {s['A']['ctr']['mean']:.4f} "
        f"B {s['B']['ctr']['mean']:.4f} true CTR, lift {_fmt(lift, '+.2%')} "
        f"(simulate {sim_s:.0f} s, daily job {job_s:.0f} s)",
        flush=True,
    )
    return ab


def main(argv: list[str] | None = None) -> int:
    """``tarq ab``: exit 0 done, 1 the A/B failed, 2 bad arguments."""
    ap = argparse.ArgumentParser(
        prog="tarq ab", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", default="outputs/ab", help="folder of the A/B's own warehouse")
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--preset", choices=defaults.PRESETS, default="small")
    ap.add_argument("--seed", type=int, default=7, help="the demo world's seed")
    ap.add_argument("--pool-size", type=int, default=1000, help="candidates pre-ranked per request")
    ap.add_argument("--salt", type=int, default=0, help="the user split's hash salt")
    ap.add_argument("--arm-a", default="tt", help="model of arm A (control)")
    ap.add_argument("--arm-b", default="tarq", help="model of arm B (treatment)")
    ap.add_argument("--epochs", type=int, default=None, help="epochs of the cold first run")
    ap.add_argument("--first-day", default=None, help="YYYY-MM-DD (default: DAYS days ago)")
    args = ap.parse_args(argv)
    if args.days < 1:
        ap.error("--days must be at least 1")
    try:
        result = tarq_ab(**vars(args))  # the flags are the flow's parameters
    except (ValueError, RuntimeError, FileNotFoundError) as exc:
        print(f"tarq ab: {exc}", file=sys.stderr)
        return 1
    o = result["overall"]
    print(
        f"all {args.days} days: true CTR A {_fmt(o['A']['ctr'], '.4f')}, "
        f"B {_fmt(o['B']['ctr'], '.4f')}; lift {_fmt(o['lift']['ctr'], '+.2%')}; "
        f"clicks per request lift {_fmt(o['lift']['clicks_per_request'], '+.2%')} "
        f"({result['wall_s']:.0f} s; {Path(args.out) / 'ab.json'}, MLflow experiment {EXPERIMENT})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
