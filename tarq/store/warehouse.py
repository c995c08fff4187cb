"""The DuckDB warehouse: opening it, creating the schema, and small shared helpers."""

from __future__ import annotations

import atexit
import datetime as dt
import hashlib
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import duckdb

from tarq import defaults
from tarq.data.lake_fs import attach
from tarq.store.sqlfiles import load_sql, quote_ident, run

RAW_TABLES = ("items", "users", "impressions", "behaviors")
DEFAULT_DB = Path(defaults.DEFAULT_DB)


class WarehouseBusyError(RuntimeError):
    """Another process has the DuckDB file open (one writing process, or many readers, per
    file); the message is one line naming the file and the holder."""


_HOLDER = re.compile(r"Conflicting lock is held in (.+?) \(PID (\d+)\)")


def _open(path: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
    try:
        return duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as exc:
        if "Could not set lock" not in str(exc):
            raise
        m = _HOLDER.search(str(exc))
        who = f"pid {m.group(2)} ({m.group(1)})" if m else "another process"
        raise WarehouseBusyError(
            f"warehouse {path} is in use by {who}: DuckDB lets one process write a file (or "
            "several read it); nothing was changed, retry when it is done"
        ) from None


def connect(db_path: str | Path, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open the warehouse (created with its schema when missing, unless ``read_only``); a
    warehouse whose logs are in a lake on a remote store gets that store's filesystem.

    Raises:
        WarehouseBusyError: another process holds the file open in a conflicting mode.
    """
    path = Path(db_path)
    if read_only:
        if not path.exists():
            raise FileNotFoundError(f"warehouse {path} does not exist")
        con = _open(path, read_only=True)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        con = _open(path, read_only=False)
        ensure_schema(con)
    try:
        _attach_lake(con)
    except BaseException:
        con.close()
        raise
    return con


def _attach_lake(con: duckdb.DuckDBPyConnection) -> None:
    """In lake layout on a remote store (``tarq.data.lake``), register its filesystem so
    that the views over the lake's files read on this connection."""
    try:
        rows = run(con, "lake/url").fetchall()
    except duckdb.CatalogException:  # a read-only warehouse older than warehouse_meta
        return
    if rows and "://" in rows[0][0]:
        attach(con, rows[0][0])


@contextmanager
def open_db(db_path: str | Path, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """Context-managed :func:`connect` that always closes the connection."""
    con = connect(db_path, read_only=read_only)
    try:
        yield con
    finally:
        con.close()


_spill: tuple[int, str] | None = None  # (pid, folder) of this process's spill folder


def _spill_dir() -> str:
    """This process's DuckDB spill folder on local disk, made once, removed at exit."""
    global _spill
    if _spill is None or _spill[0] != os.getpid():  # a forked child makes its own
        _spill = (os.getpid(), tempfile.mkdtemp(prefix="tarq-spill-"))
        atexit.register(_remove_spill, *_spill)
    return _spill[1]


def _remove_spill(pid: int, folder: str) -> None:
    if os.getpid() == pid:  # not a forked child's exit
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def open_for_job(db_path: str | Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection for one job of a data step (:mod:`tarq.runtime.parallel`) that spills
    to this process's folder on local disk.

    DuckDB spills next to the database file by default, in files named after the process id:
    on a cluster that folder is on shared storage, where jobs of two machines could take each
    other's files (and spilling over a network share is slow). A DuckDB instance cannot move
    its spill folder once it has spilled: a job run in a process whose instance already has
    (in-process jobs beside the coordinator's connection) keeps that folder.
    """
    with open_db(db_path, read_only=True) as con:
        spill = _spill_dir()
        if con.execute("SELECT current_setting('temp_directory')").fetchone()[0] != spill:
            with suppress(duckdb.NotImplementedException):
                con.execute("SET temp_directory = $d", {"d": spill})
        yield con


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the warehouse tables if they are missing (idempotent)."""
    con.execute(load_sql("schema/create_tables"))


def warehouse_id(db_path: str | Path) -> str:
    """The warehouse's identity (a uuid made with its schema), adopting one for a warehouse
    made before identities existed (that opens it for writing once)."""
    with open_db(db_path, read_only=True) as con:
        try:
            row = run(con, "schema/warehouse_id").fetchone()
        except duckdb.CatalogException:
            row = None
    if row is None:
        with open_db(db_path) as con:  # ensure_schema creates the table and the id
            row = run(con, "schema/warehouse_id").fetchone()
    return str(row[0])


def new_id(prefix: str) -> str:
    """A sortable, unique id such as ``load-20261122T101500-3f2a9c``."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    return f"{prefix}-{stamp}-{uuid.uuid4().hex[:6]}"


def table_columns(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, str]:
    """Column name → DuckDB type of ``table`` (empty when the table does not exist)."""
    rows = con.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = $t ORDER BY ordinal_position",
        {"t": table},
    ).fetchall()
    return {name: dtype for name, dtype in rows}


def add_side_column(
    con: duckdb.DuckDBPyConnection, table: str, column: str, dtype: str = "BIGINT"
) -> None:
    """Add a side-feature column to a raw table if missing and record it in the feature spec."""
    if table not in ("users", "items"):
        raise ValueError(f"side features live on users or items, not {table!r}")
    if dtype not in ("BIGINT", "DOUBLE", "VARCHAR"):
        raise ValueError(f"unsupported side-feature type {dtype!r}")
    if column not in table_columns(con, table):
        con.execute(f"ALTER TABLE {quote_ident(table)} ADD COLUMN {quote_ident(column)} {dtype}")
    # Model inputs are integer codes; text columns are kept for people, not fed to the model.
    kind = {"BIGINT": "categorical", "DOUBLE": "numeric", "VARCHAR": "text"}[dtype]
    con.execute(
        "INSERT INTO feature_spec VALUES ($t, $c, $k) ON CONFLICT DO NOTHING",
        {"t": table, "c": column, "k": kind},
    )


def side_features(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    """Categorical side-feature columns declared for ``users`` or ``items``."""
    rows = con.execute(
        "SELECT column_name FROM feature_spec WHERE table_name = $t AND kind = 'categorical' "
        "ORDER BY column_name",
        {"t": table},
    ).fetchall()
    return [r[0] for r in rows]


def table_fingerprint(con: duckdb.DuckDBPyConnection, table: str) -> tuple[int, str]:
    """(row count, order-independent checksum) of a table: proves a raw table is untouched."""
    if table not in RAW_TABLES and not table.startswith("quarantine_"):
        raise ValueError(f"unknown table {table!r}")
    q = quote_ident(table)
    n, h = con.execute(f"SELECT count(*), coalesce(sum(hash(t)), 0) FROM {q} AS t").fetchone()
    return int(n), hashlib.sha256(str(h).encode()).hexdigest()[:16]


def raw_fingerprints(
    con: duckdb.DuckDBPyConnection, by_load: bool = False
) -> dict[str, tuple[int, int]] | dict[tuple[str, str | None], tuple[int, int]]:
    """Row counts and order-independent checksums of the raw tables (``sql/integrity``).

    Args:
        con: an open warehouse connection.
        by_load: key the result by ``(table, load_id)`` instead of by table, so that rows
            appended by a new load can be told apart from the rows that were there before.

    Returns:
        ``{table: (rows, checksum)}`` for every raw table (``(0, 0)`` when empty), or
        ``{(table, load_id): (rows, checksum)}``. Equal fingerprints mean no row was
        changed, lost or added.
    """
    rows = run(con, "integrity/raw_fingerprint").fetchall()
    if by_load:
        return {(t, load): (int(n), int(c)) for t, load, n, c in rows}
    out: dict[str, tuple[int, int]] = dict.fromkeys(RAW_TABLES, (0, 0))
    for t, _, n, c in rows:
        # Sums of hashes add up, so per-load checksums combine into the table's.
        out[t] = (out[t][0] + int(n), out[t][1] + int(c))
    return out


def quarantine_rows(con: duckdb.DuckDBPyConnection) -> list[dict[str, object]]:
    """Every row of the four quarantine tables: table, row_id, key, run_id, stage,
    check_name, source and source_line (``sql/integrity/quarantine_rows.sql``)."""
    cur = run(con, "integrity/quarantine_rows")
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
