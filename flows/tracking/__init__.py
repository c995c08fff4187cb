"""MLflow for the daily job: one experiment, a parent run per run date, a child run per model.

Layout in the tracking store (default ``sqlite:///<repo>/mlflow/mlflow.db``, artifacts under
``<repo>/mlflow/artifacts``; ``MLFLOW_TRACKING_URI`` or the flow parameter override it):

- experiment ``tarq-daily`` with an explicit artifact location (never ``./mlruns``);
- parent run ``daily-<run date>``: window, dataset fingerprint, full config, the comparison
  table, ROC curves of every model on one figure, per-level codebook usage, gate decision;
  tags ``tarq.kind=daily``, ``tarq.run_date``, ``tarq.status`` (``running``, ``published``,
  ``not-served``, ``rejected``, ``failed``) — the tags that make re-runs of a date idempotent;
- child run per model with the same metric keys (:data:`METRIC_KEYS`), its config as params,
  ``metrics.json`` and ``config.json``; the TARQ child also holds the model directory
  (``model_dir/``, for re-scoring it as a champion later) and the pyfunc model, registered as
  ``tarq`` with alias ``challenger``; ``champion`` moves only through :func:`promote`.

Everything is scoped to one warehouse (``tarq.warehouse``, the uuid in its ``warehouse_meta``
table): day runs, child runs, logged models and registered versions carry it, every lookup
filters on it, and the registered model is bound to one warehouse by the same tag, so its
``champion`` alias is that warehouse's. A second warehouse on the same store is refused
(:class:`ForeignWarehouse`) until it names a registered model of its own. Runs, versions and
a registered model without the tag (made before it existed) are adopted on first use.

The helpers live in :mod:`flows.tracking.store` (the store, experiment and warehouse
binding), :mod:`flows.tracking.runs` (day and model runs, metrics, parents),
:mod:`flows.tracking.registry` (versions, the pyfunc, aliases) and
:mod:`flows.tracking.figures`; every public name is re-exported here.
"""

from flows.tracking.figures import (  # noqa: F401
    codebook_figure,
    markdown_table,
    roc_figure,
)
from flows.tracking.registry import (  # noqa: F401
    champion,
    log_pyfunc,
    logged_model_for,
    promote,
    register,
    request_example,
    tag_version,
    version_for_day,
)
from flows.tracking.runs import (  # noqa: F401
    LiveRun,
    alignment_metrics,
    cold_tried,
    comparison_rows,
    download_model_dir,
    epoch_metrics,
    find_day_run,
    find_parent_run,
    finish_day,
    history_metrics,
    log_comparison,
    log_metrics,
    log_model_dir,
    log_model_run,
    model_metrics,
    open_day,
    open_model_run,
    parent_model_dir,
    run_link,
    samples_input,
    start_day,
    step_metrics,
)
from flows.tracking.store import (  # noqa: F401
    DATE_TAG,
    DEFAULT_EXPERIMENT,
    DONE_STATUSES,
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    GC_TAG,
    KIND_TAG,
    METRIC_KEYS,
    MODEL_TAG,
    REGISTER_CRASH_ENV,
    REGISTERED_MODEL,
    REPO_ROOT,
    SHA_TAG,
    STATUS_TAG,
    WAREHOUSE_TAG,
    ForeignWarehouse,
    TrackingUnavailable,
    bind,
    check_store,
    client,
    default_tracking_uri,
    file_sha256,
    setup,
    use_store,
)
