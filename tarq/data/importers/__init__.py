"""Importers: append public datasets and contract-shaped files to the warehouse.

``tarq import {taobao,movielens,parquet} SRC --db PATH`` calls :func:`run_import`. One run
is one load: a ``loads`` row with the report as JSON, and every row it inserts carries that
``load_id``. The run is a single transaction: a malformed file (missing columns, wrong
delimiter, bad encoding, a truncated line) raises :class:`SourceFormatError` naming file
and line, and nothing of the run is kept.

Row-level problems do not stop a load: a row whose key is empty (``null_key``), whose value
does not convert to its column type (``type_cast``), whose number is inf, -inf or NaN
(``non_finite``) or whose Taobao ``clk``/``nonclk`` contradict each other
(``label_conflict``) goes to ``quarantine_<table>`` (stage ``import``, with check name,
reason, source file, 1-based line and the raw fields as JSON).

Paths are literal: glob characters (``*?[``) in a source path are escaped before DuckDB reads
the file, so ``b*/`` reads that folder and nothing else. The Parquet parts of one table folder
must all have the same columns (a part with a column the others lack is refused: read by the
first part's schema it would be dropped, read by name it would become NULL).

Re-importing: raw tables are append-only. Impressions and behaviours are appended again
(repeats are validation's business); item and user ids already in the warehouse are skipped
and counted as ``rows_skipped_existing``, never replaced and not quarantined. An id repeated
inside one batch keeps its first row; the later ones are quarantined as ``duplicate_id``.

See :mod:`~tarq.data.importers.taobao`, :mod:`~tarq.data.importers.movielens` and
:mod:`~tarq.data.importers.tabular` for the formats and their mapping to the contract.
"""

from __future__ import annotations

from pathlib import Path

from tarq.data.importers.common import (
    FileReport,
    ImportContext,
    ImportReport,
    SourceFormatError,
    install_macros,
    record_load,
    utcnow,
)
from tarq.data.lake import flush, init_lake
from tarq.store.warehouse import connect, new_id

KINDS = ("taobao", "movielens", "parquet")

__all__ = ["KINDS", "FileReport", "ImportReport", "SourceFormatError", "run_import"]


def run_import(kind: str, src: Path, db_path: Path, lake: str | None = None) -> ImportReport:
    """Import the files of ``src`` (directory or file) of the given kind into ``db_path``.

    Args:
        kind: ``taobao``, ``movielens`` or ``parquet`` (contract-shaped Parquet/CSV).
        src: the source directory, or a single file for taobao/movielens.
        db_path: the DuckDB warehouse (created with its schema when missing).
        lake: keep the logs in this lake (:mod:`tarq.data.lake`): a warehouse without logs
            is set up with it; one in lake layout must use this lake. None: the layout the
            warehouse has.

    Returns:
        The report: one entry per file (loaded or skipped) with rows read, loaded,
        rejected, skipped as existing, and stubs created.

    Raises:
        ValueError: unknown ``kind``.
        FileNotFoundError: ``src`` does not exist.
        SourceFormatError: a file cannot be read as its format (nothing is loaded).
        LakeError: ``lake`` does not fit the warehouse (nothing is loaded).
    """
    from tarq.data.importers import movielens, tabular, taobao

    if kind not in KINDS:
        raise ValueError(f"unknown import kind {kind!r}; choose one of {', '.join(KINDS)}")
    src = Path(src)
    started = utcnow()
    # Everything that can be checked without writing is checked before the transaction.
    spec: dict[str, dict[str, str]] = {}
    if kind == "taobao":
        todo, skips = taobao.plan(src)
    elif kind == "movielens":
        todo, skips = movielens.plan(src)
    else:
        todo, skips, spec = tabular.plan(src)
    if src.is_file() and not todo:
        raise SourceFormatError(f"{src}: {skips[0].notes[0]}")

    if lake is not None:
        init_lake(db_path, lake)
    report = ImportReport(
        kind=kind, source=str(src.resolve()), db=str(db_path), load_id=new_id("import")
    )
    con = connect(db_path)
    try:
        install_macros(con)
        ctx = ImportContext(con=con, load_id=report.load_id, kind=kind)
        con.execute("BEGIN TRANSACTION")
        try:
            if kind == "taobao":
                loaded = taobao.load(ctx, todo)
            elif kind == "movielens":
                loaded = movielens.load(ctx, todo)
            else:
                loaded = tabular.load(ctx, todo, spec)
            report.files = loaded + skips
            if not todo:
                report.notes.append(f"no {kind} files found in {src}")
            # In lake layout the logs go to Parquet files now; they count once this commits.
            flush(con, report.load_id)
            record_load(con, report, started)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    finally:
        con.close()
    return report
