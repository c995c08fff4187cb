"""The Prefect artifacts each stage of ``tarq-daily`` leaves for a person in the UI."""

from __future__ import annotations

from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.results import DaySummary, TrainedModel


def rounded(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with floats rounded to 4 decimals (tables for people)."""
    return [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]


def validation(day: str, report: dict[str, Any]) -> None:
    checks = report.get("checks") or report.get("results") or []
    create_table_artifact(
        key="validation-summary",
        table=rounded(
            [
                {k: c.get(k) for k in ("name", "table", "level", "success", "message")}
                for c in checks
            ]
        )
        or [{"success": report["success"]}],
        description=f"Validation of {report.get('check_day', day)}: "
        f"{'passed' if report['success'] else 'FAILED'}; quarantined "
        f"{report.get('quarantined', {})}; docs {report.get('docs_path') or ''}",
    )


def lineage(day: str, trained: dict[str, TrainedModel]) -> None:
    create_table_artifact(
        key="training-lineage",
        table=[
            {
                "model": t.name,
                "mode": t.lineage.mode,
                "parent": (
                    f"{t.lineage.parent_source} {t.lineage.parent_run_date}"
                    + (f" v{t.lineage.parent_version}" if t.lineage.parent_version else "")
                )
                if t.lineage.warm
                else "",
                "days": f"{t.lineage.train_start}..{t.lineage.train_end}",
                "rows": t.result.rows_trained,
                "seconds": t.result.train_seconds,
                "reason": t.lineage.reason,
            }
            for t in trained.values()
        ],
        description=f"Training of {day}: warm runs continue their parent on the new days, "
        "cold runs train the whole window from scratch",
    )


def semantic_ids(day: str, health: dict[str, Any]) -> None:
    churn = health.get("churn") or {}
    create_table_artifact(
        key="semantic-id-health",
        table=[
            {"check": c["name"], "ok": c["ok"], "detail": c["detail"]}
            for c in health.get("checks", [])
        ]
        + [
            {"check": k, "ok": None, "detail": str(health.get(k))}
            for k in (
                "catalog_size",
                "coverage",
                "utilization_catalog",
                "collision_rate",
                "collision_rate_distinct_inputs",
                "items_identical_inputs",
                "largest_collision_group",
                "recon_error",
            )
            if k in health
        ]
        + [
            {"check": f"churn_{k}", "ok": None, "detail": str(churn.get(k))}
            for k in ("against_version", "tuple_churn", "level_churn", "items_new")
            if churn
        ],
        description=f"Semantic IDs of {day}: {'OK' if health.get('ok') else 'FAILED'} "
        f"{health.get('error', '')}",
    )


def comparison(rows: list[dict[str, Any]], test_day: str, fingerprint: str, link: str) -> None:
    create_table_artifact(
        key="model-comparison",
        table=rounded(rows),
        description=f"Test day {test_day}: every model on the same samples "
        f"({fingerprint}); MLflow run {link}",
    )


def skipped(day: str, message: str) -> None:
    create_markdown_artifact(
        key="publication", markdown=f"**Skipped.** {message}", description=f"tarq-daily {day}"
    )


def publication(summary: DaySummary) -> None:
    pub = summary.publication
    gate = summary.gate
    lines = [
        f"# tarq-daily {summary.run_date}",
        "",
        f"- MLflow run: {summary.mlflow_run}",
        f"- registered model: `tarq` version {summary.version or '— (not registered)'}",
        f"- gate: **{'promote' if gate['promote'] else 'reject'}** — {gate['reason']}",
    ]
    lin = summary.lineage.get("tarq")
    if lin:
        lines.append(f"- TARQ trained {lin['mode']}: {lin['reason']}")
    if summary.churn:
        lines.append(
            f"- ID churn vs served version {summary.churn.get('against_version')}: "
            f"{summary.churn['tuple_churn']:.2%} of "
            f"{summary.churn['items_compared']:,} items changed their tuple"
        )
    if pub is None:
        lines.append("- publication: **none** (champion and served table unchanged)")
    elif not pub.served:
        lines += [
            f"- status: **not served**: table version {pub.version} is published "
            f"but version {pub.previous} is served (an operator rolled it back); "
            "`champion` not moved",
            f"- model URI: `{summary.model_uri}` (not the champion)",
        ]
    else:
        lines += [
            f"- published table version **{pub.version}** "
            f"({'new' if pub.created else 'already published'}), "
            f"view `serving_item_ids`, {(pub.manifest or {}).get('rows', '')} rows",
            f"- Parquet export: `{pub.export_path}`",
            f"- model URI: `{summary.model_uri}` (alias `champion`)",
        ]
    lines += ["", "| stage | seconds | peak RSS MB |", "|---|---|---|"]
    lines += [
        f"| {k} | {v} | {summary.peak_rss_mb.get(k, '')} |" for k, v in summary.timings.items()
    ]
    create_markdown_artifact(
        key="publication", markdown="\n".join(lines), description=f"tarq-daily {summary.run_date}"
    )
