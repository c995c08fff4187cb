"""Great Expectations suites as code, run on pandas frames that DuckDB hands over.

GX 1.x has no working DuckDB route (see the stack notes), so every check is a GX expectation
over a pandas frame: the rows under check for row-level checks, small SQL aggregates for
table-level ones. One file-based GX context lives in ``docs_dir``; for each frame it holds a
pandas data asset, a suite, a validation definition and a checkpoint; the run's results
are then rendered into the Data Docs site in one build. Everything is created with
add-or-update, so re-running in the same context is idempotent.

A frame can also be validated where the file context is not at hand (a mapped job in another
process): an ephemeral context (``GxRunner(None, ...)``, the same suites and checkpoints in
memory) runs it and hands back its outcomes and the validation result as JSON
(:class:`DetachedResult`); the run's file context then stores that result
(:meth:`GxRunner.attach`) as if it had run the frame itself, so Data Docs list it.

``great_expectations`` takes seconds to import and is only imported when a
:class:`GxRunner` is created.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from tarq.runtime.telemetry import disable_telemetry
from tarq.validation.checks import ExpectationSpec

if TYPE_CHECKING:
    import pandas as pd

DATASOURCE = "tarq_warehouse"
_CURRENT_CONTEXT = threading.Lock()
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


@dataclass
class DetachedResult:
    """A frame's GX validation result made by an ephemeral :class:`GxRunner` (picklable):
    the result as the validation results store serializes it, and the id of its batch."""

    result_json: str
    batch_id: str


class GxRunner:
    """A file-based GX context in ``docs_dir`` that validates named frames for one run
    (``docs_dir=None``: an ephemeral context in memory, for :meth:`validate_detached`)."""

    def __init__(self, docs_dir: Path | None, run_id: str, run_time: dt.datetime) -> None:
        disable_telemetry()
        import great_expectations as gx
        from great_expectations.core.run_identifier import RunIdentifier
        from great_expectations.data_context.types.base import ProgressBarsConfig
        from great_expectations.data_context.types.resource_identifiers import (
            ExpectationSuiteIdentifier,
            ValidationResultIdentifier,
        )

        self._gx = gx
        self._run_identifier_cls = RunIdentifier
        self._suite_identifier = ExpectationSuiteIdentifier
        self._result_identifier = ValidationResultIdentifier
        self.docs_dir = Path(docs_dir) if docs_dir is not None else None
        if self.docs_dir is None:
            self.context = _ephemeral_context(gx)
            self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        else:
            self.docs_dir.mkdir(parents=True, exist_ok=True)
            self.context = gx.get_context(mode="file", context_root_dir=str(self.docs_dir))
            bars = self.context.variables.progress_bars
            if isinstance(bars, dict):  # read back from great_expectations.yml
                bars = ProgressBarsConfig(**bars)
            if bars is None or bars.globally or bars.metric_calculations:
                # Metric progress bars would flood logs of the CLI and of Prefect tasks.
                self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
                self.context.variables.save()
        self._site_dir = (
            self.docs_dir / "uncommitted" / "data_docs" / "local_site" if self.docs_dir else None
        )
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
        if existing is not None and (existing.meta or {}).get("tarq_spec_digest") == digest:
            if self._site_dir and not (self._site_dir / "expectations" / f"{name}.html").exists():
                self._docs_pending.append(self._suite_identifier(name))
            return existing, False
        suite = self.context.suites.add_or_update(
            self._gx.ExpectationSuite(
                name=name,
                expectations=[self._expectation(s) for s in specs],
                meta={"tarq_spec_digest": digest},
            )
        )
        if self._site_dir:
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

    def set_run(self, run_id: str, run_time: dt.datetime) -> None:
        """Validate the next frames for run ``run_id`` (an ephemeral runner reused across runs)."""
        self.run_identifier = self._run_identifier_cls(run_name=run_id, run_time=run_time)

    def _run_id(self, batch_label: str | None) -> Any:
        """The GX run identifier of a frame's result: the run's, or ``<run id>.<batch_label>``."""
        if batch_label is None:
            return self.run_identifier
        return self._run_identifier_cls(
            run_name=f"{self.run_identifier.run_name}.{batch_label}",
            run_time=self.run_identifier.run_time,
        )

    def _prepared(
        self,
        frame: str,
        specs: list[ExpectationSpec],
        index_column: str | None,
        complete: bool,
    ) -> tuple[str, Any]:
        """The suite name and checkpoint of ``frame``, created or updated as needed."""
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
        return name, self._checkpoint(name, frame, suite, changed, result_format)

    def _run(
        self,
        frame: str,
        df: pd.DataFrame,
        specs: list[ExpectationSpec],
        parameters: dict[str, Any] | None,
        index_column: str | None,
        complete: bool,
        batch_label: str | None,
    ) -> tuple[list[ExpectationOutcome], Any, Any]:
        """Run the checkpoint of ``frame`` on ``df``: outcomes, result key, result."""
        _, checkpoint = self._prepared(frame, specs, index_column, complete)
        result = checkpoint.run(
            batch_parameters={"dataframe": df},
            expectation_parameters=parameters or {},
            run_id=self._run_id(batch_label),
        )
        ((key, validation),) = result.run_results.items()
        outcomes = [_outcome(r, index_column if complete else None) for r in validation.results]
        return outcomes, key, validation

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
        outcomes, key, _ = self._run(
            frame, df, specs, parameters, index_column, complete, batch_label
        )
        self._docs_pending.append(key)
        return outcomes

    def validate_detached(
        self,
        frame: str,
        df: pd.DataFrame,
        specs: list[ExpectationSpec],
        *,
        parameters: dict[str, Any] | None = None,
        index_column: str | None = None,
        complete: bool = True,
        batch_label: str | None = None,
    ) -> tuple[list[ExpectationOutcome], DetachedResult]:
        """Validate like :meth:`validate_frame`, but hand the result back instead of keeping it
        (for :meth:`attach` in the run's file context); this context's store forgets it."""
        outcomes, key, validation = self._run(
            frame, df, specs, parameters, index_column, complete, batch_label
        )
        store = self.context.validation_results_store
        detached = DetachedResult(store.serialize(validation), str(key.batch_identifier))
        store.remove_key(key)
        return outcomes, detached

    def attach(
        self,
        frame: str,
        specs: list[ExpectationSpec],
        detached: DetachedResult,
        *,
        index_column: str | None = None,
        complete: bool = True,
        batch_label: str | None = None,
    ) -> None:
        """Store a result of :meth:`validate_detached` (same frame, specs and options) in this
        context, under the key and with the validation definition and checkpoint its own run
        of the frame would have had; Data Docs then list it like any other."""
        name, checkpoint = self._prepared(frame, specs, index_column, complete)
        store = self.context.validation_results_store
        validation = store.deserialize(detached.result_json)
        (definition,) = checkpoint.validation_definitions
        validation.meta["validation_id"] = definition.id
        validation.meta["checkpoint_id"] = checkpoint.id
        key = self._result_identifier(
            expectation_suite_identifier=self._suite_identifier(name),
            run_id=self._run_id(batch_label),
            batch_identifier=detached.batch_id,
        )
        store.set(key, validation)
        self._docs_pending.append(key)

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


def _ephemeral_context(gx: Any) -> Any:
    """An in-memory GX context without a Data Docs site that does not become GX's current
    context (``get_context`` makes the context it returns the current one; a file context of
    this process keeps that place)."""
    from great_expectations.data_context.data_context.context_factory import project_manager
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
    )
    from great_expectations.exceptions import DataContextRequiredError

    # No Data Docs site: GX's default one is a new temporary directory per context.
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False)
    )
    with _CURRENT_CONTEXT:  # threads of one worker making their contexts at once
        try:
            current = project_manager.get_current_project()
        except DataContextRequiredError:
            current = None
        context = gx.get_context(mode="ephemeral", project_config=config)
        if current is not None:
            project_manager.set_project(current)
    return context


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
