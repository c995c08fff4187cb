"""Great Expectations suites as code, run on pandas frames that DuckDB hands over.

GX 1.x has no working DuckDB route (see the stack notes), so every check is a GX expectation
over a pandas frame: the rows under check for row-level checks, small SQL aggregates for
table-level ones. One file-based GX context lives in ``docs_dir``; for each frame it holds a
pandas data asset, a suite, a validation definition and a checkpoint; the run's results
are then rendered into the Data Docs site in one build. Everything is created with
add-or-update, so re-running in the same context is idempotent.

``great_expectations`` takes seconds to import and is only imported when a
:class:`GxRunner` is created.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from tarq.telemetry import disable_telemetry
from tarq.validation.checks import ExpectationSpec

if TYPE_CHECKING:
    import pandas as pd

DATASOURCE = "tarq_warehouse"
BATCH_DEFINITION = "whole_frame"


@dataclass
class ExpectationOutcome:
    """What GX said about one expectation.

    ``unexpected_ids`` lists the ``index_column`` values of the unexpected rows when the run
    used result format COMPLETE with an index column, else None.
    """

    check: str
    type: str
    success: bool
    element_count: int | None
    unexpected_count: int | None
    unexpected_ids: list[Any] | None
    unexpected_values: list[Any]
    error: str | None


class GxRunner:
    """A file-based GX context in ``docs_dir`` that validates named frames for one run."""

    def __init__(self, docs_dir: Path, run_id: str, run_time: dt.datetime) -> None:
        disable_telemetry()
        import great_expectations as gx
        from great_expectations.core.run_identifier import RunIdentifier
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self._gx = gx
        self._run_identifier_cls = RunIdentifier
        self.docs_dir = Path(docs_dir)
        self.docs_dir.mkdir(parents=True, exist_ok=True)
        self.context = gx.get_context(mode="file", context_root_dir=str(self.docs_dir))
        bars = self.context.variables.progress_bars
        if isinstance(bars, dict):  # read back from great_expectations.yml
            bars = ProgressBarsConfig(**bars)
        if bars is None or bars.globally or bars.metric_calculations:
            # Metric progress bars would flood logs of the CLI and of Prefect tasks.
            self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
            self.context.variables.save()
        from great_expectations.data_context.types.resource_identifiers import (
            ExpectationSuiteIdentifier,
        )

        self._suite_identifier = ExpectationSuiteIdentifier
        self._site_dir = self.docs_dir / "uncommitted" / "data_docs" / "local_site"
        self._docs_pending: list[Any] = []
        self.run_identifier = RunIdentifier(run_name=run_id, run_time=run_time)
        try:
            self.datasource = self.context.data_sources.get(DATASOURCE)
        except (KeyError, ValueError, LookupError):
            self.datasource = self.context.data_sources.add_pandas(DATASOURCE)

    def _batch_definition(self, frame: str) -> Any:
        try:
            asset = self.datasource.get_asset(frame)
        except LookupError:
            asset = self.datasource.add_dataframe_asset(frame)
        try:
            return asset.get_batch_definition(BATCH_DEFINITION)
        except (KeyError, ValueError, LookupError):
            return asset.add_batch_definition_whole_dataframe(BATCH_DEFINITION)

    def _suite(self, name: str, specs: list[ExpectationSpec]) -> tuple[Any, bool]:
        """The suite ``name`` holding ``specs`` and whether it had to be (re)written.

        A suite is rewritten, and its Data Docs page queued, only when the specs changed.
        """
        digest = hashlib.sha256(
            json.dumps(
                [(s.check, s.type, s.kwargs) for s in specs], sort_keys=True, default=str
            ).encode()
        ).hexdigest()
        try:
            existing = self.context.suites.get(name)
        except Exception:  # GX raises its own not-found error types across versions
            existing = None
        page = self._site_dir / "expectations" / f"{name}.html"
        if existing is not None and (existing.meta or {}).get("tarq_spec_digest") == digest:
            if not page.exists():
                self._docs_pending.append(self._suite_identifier(name))
            return existing, False
        suite = self.context.suites.add_or_update(
            self._gx.ExpectationSuite(
                name=name,
                expectations=[self._expectation(s) for s in specs],
                meta={"tarq_spec_digest": digest},
            )
        )
        self._docs_pending.append(self._suite_identifier(name))
        return suite, True

    def _checkpoint(
        self, name: str, frame: str, suite: Any, changed: bool, result_format: dict
    ) -> Any:
        """The checkpoint ``name`` (one validation definition, no actions), reused when unchanged.

        Rewriting the validation definition and checkpoint on each run costs ~0.2 s a frame.
        """
        gx = self._gx
        if not changed:
            try:
                checkpoint = self.context.checkpoints.get(name)
            except Exception:  # not found: created below
                checkpoint = None
            if (
                checkpoint is not None
                and checkpoint.result_format == result_format
                and not checkpoint.actions
                and [v.name for v in checkpoint.validation_definitions] == [name]
            ):
                return checkpoint
        definition = self.context.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=name, data=self._batch_definition(frame), suite=suite)
        )
        # No per-checkpoint UpdateDataDocsAction: each one re-renders the index and the suite
        # page (~1.7 s apiece); build_docs() renders all of a run's pages once instead.
        return self.context.checkpoints.add_or_update(
            gx.Checkpoint(
                name=name,
                validation_definitions=[definition],
                actions=[],
                result_format=result_format,
            )
        )

    def _expectation(self, spec: ExpectationSpec) -> Any:
        cls = getattr(self._gx.expectations, spec.type)
        return cls(**spec.kwargs, meta={"check": spec.check})

    def validate_frame(
        self,
        frame: str,
        df: pd.DataFrame,
        specs: list[ExpectationSpec],
        *,
        parameters: dict[str, Any] | None = None,
        index_column: str | None = None,
        complete: bool = True,
        batch_label: str | None = None,
    ) -> list[ExpectationOutcome]:
        """Validate ``df`` (the batch of asset ``frame``) against ``specs``; update Data Docs.

        Args:
            frame: asset/suite/checkpoint name stem, e.g. ``"impressions_day"``.
            df: the frame, shape (rows, columns); must hold every column the specs name.
            specs: the expectations of the suite ``tarq_<frame>``.
            parameters: run-time values of ``{"$PARAMETER": name}`` placeholders.
            index_column: column identifying rows in unexpected-row listings (``row_id``).
            complete: return every unexpected row (COMPLETE) rather than a sample (SUMMARY).
            batch_label: one chunk of a frame validated in several batches in one run: its
                result is stored (and shown in Data Docs) under the run name
                ``<run id>.<batch_label>``, so that the chunks' results do not replace each other.
        """
        name = f"tarq_{frame}"
        suite, changed = self._suite(name, specs)
        result_format: dict[str, Any] = {
            "result_format": "COMPLETE" if complete else "SUMMARY",
            "partial_unexpected_count": 20,
        }
        if index_column:
            result_format["unexpected_index_column_names"] = [index_column]
            # The pandas query GX would print adds nothing (the rows are in DuckDB).
            result_format["return_unexpected_index_query"] = False
        checkpoint = self._checkpoint(name, frame, suite, changed, result_format)
        result = checkpoint.run(
            batch_parameters={"dataframe": df},
            expectation_parameters=parameters or {},
            run_id=self.run_identifier
            if batch_label is None
            else self._run_identifier_cls(
                run_name=f"{self.run_identifier.run_name}.{batch_label}",
                run_time=self.run_identifier.run_time,
            ),
        )
        self._docs_pending.extend(result.run_results.keys())
        (validation,) = result.run_results.values()
        return [_outcome(r, index_column if complete else None) for r in validation.results]

    def build_docs(self) -> Path | None:
        """Render the Data Docs pages of this run's results (and changed suites), and the index.

        Returns the local site's ``index.html``.
        """
        if self._docs_pending:
            self.context.build_data_docs(resource_identifiers=list(self._docs_pending))
            self._docs_pending.clear()
        return self.docs_index()

    def docs_index(self) -> Path | None:
        """The Data Docs ``index.html`` of the local site (None when none was built)."""
        for site in self.context.get_docs_sites_urls():
            url = site.get("site_url")
            if url and url.startswith("file://"):
                path = Path(unquote(urlparse(url).path))
                if path.exists():
                    return path
        return None


def _outcome(r: Any, index_column: str | None) -> ExpectationOutcome:
    config = r.expectation_config
    res = r.result or {}
    ids = None
    if index_column and "unexpected_index_list" in res:
        ids = [_plain(row[index_column]) for row in res["unexpected_index_list"] or []]
    elif index_column and res.get("unexpected_count", 0) == 0:
        ids = []
    info = r.exception_info or {}
    error = info.get("exception_message") if info.get("raised_exception") else None
    values = res.get("partial_unexpected_list") or res.get("unexpected_list") or []
    return ExpectationOutcome(
        check=(config.meta or {}).get("check", config.type),
        type=config.type,
        success=bool(r.success),
        element_count=res.get("element_count"),
        unexpected_count=res.get("unexpected_count"),
        unexpected_ids=ids,
        unexpected_values=[_plain(v) for v in values[:20]],
        error=error,
    )


def _plain(value: Any) -> Any:
    """numpy/pandas scalars → Python values (for comparisons and JSON)."""
    if hasattr(value, "item"):
        try:
            return value.item()
        except (ValueError, AttributeError):
            return value
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return value
