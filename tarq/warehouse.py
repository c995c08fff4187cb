"""The DuckDB warehouse: opening it, creating the schema, and small shared helpers."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from tarq.sqlfiles import load_sql, quote_ident

RAW_TABLES = ("items", "users", "impressions", "behaviors")
DEFAULT_DB = Path("data/tarq.duckdb")


def connect(db_path: str | Path, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open the warehouse (created with its schema when missing, unless ``read_only``)."""
    path = Path(db_path)
    if read_only:
        if not path.exists():
            raise FileNotFoundError(f"warehouse {path} does not exist")
        return duckdb.connect(str(path), read_only=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    ensure_schema(con)
    return con


@contextmanager
def open_db(db_path: str | Path, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """Context-managed :func:`connect` that always closes the connection."""
    con = connect(db_path, read_only=read_only)
    try:
        yield con
    finally:
        con.close()


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the warehouse tables if they are missing (idempotent)."""
    con.execute(load_sql("schema/create_tables"))


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
