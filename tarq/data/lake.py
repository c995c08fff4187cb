"""The lake layout: ``impressions`` and ``behaviors`` as Hive-partitioned Parquet by day.

A warehouse is in lake layout when ``warehouse_meta`` holds the key ``lake``: the lake's URL,
an absolute local path or an fsspec URL (``s3://bucket/prefix``, ``memory://x``). The logs
are then files under the lake::

    <lake>/impressions/day=YYYY-MM-DD/<load_id>-<token>_<i>.parquet
    <lake>/behaviors/day=YYYY-MM-DD/...          (a NULL ts: day=__HIVE_DEFAULT_PARTITION__)
    <lake>/_staging/<load_id>-<token>/...         (a flush in progress)

and everything else (catalog, quarantine, loads, validation records, feature spec, the
manifest ``lake_files``) stays in the DuckDB file. ``impressions`` and ``behaviors`` are
persistent views there with the raw tables' columns: the landing tables
``lake_landing_<table>`` (rows of a load in progress) and the files listed in the manifest.
Every reader (validation, samples, fingerprints, the duckdb CLI) sees the same shape as in
the single-file layout.

A load inserts into the landing table (:func:`raw_target`) and, before it commits, calls
:func:`flush`: the landing rows are written to staging, each file is moved to its day folder
(never over an existing file), recorded in the manifest, the landing rows deleted and the
views recreated, all in the load's transaction. The commit of the manifest rows is the commit
point: a load that rolls back leaves files no view lists, *orphans* (:func:`orphans`), never
read and never deleted automatically. The token in the file names keeps a retried load (the
demo's load ids are deterministic) clear of its own orphans.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from pathlib import Path
from typing import Any

import duckdb

from tarq.data.lake_fs import attach, is_local, url_fs
from tarq.store.sqlfiles import run
from tarq.store.warehouse import open_db

LOG_TABLES = ("impressions", "behaviors")
_LANDING = {t: f"lake_landing_{t}" for t in LOG_TABLES}
_STAGING = "_staging"
_DEFAULT_PARTITION = "__HIVE_DEFAULT_PARTITION__"
# What a lake URL may hold: its paths are written into the views' stored SQL text and read
# literally (no glob, quote or brace characters).
_URL_CHARS = re.compile(r"^[A-Za-z0-9_./:=+@~%-]+$")
_LOAD_ID = re.compile(r"^[A-Za-z0-9_.-]+$")


class LakeError(ValueError):
    """The lake layout cannot be set up or used as asked; the message says why."""


def normalize_url(url: str | Path) -> str:
    """The lake URL as stored: an absolute local path (``file://`` stripped), or the fsspec
    URL in its canonical form, without a trailing slash.

    Raises:
        LakeError: an empty URL, or one with characters a lake path cannot hold.
    """
    text = str(url).strip()
    if not text:
        raise LakeError("the lake URL is empty")
    if text.startswith("file://"):
        text = text[len("file://") :]
    if "://" in text:
        from fsspec.core import url_to_fs

        fs, root = url_to_fs(text)
        out = fs.unstrip_protocol(root.rstrip("/"))
    else:
        out = str(Path(text).expanduser().absolute())
    out = out.rstrip("/") or "/"
    if not _URL_CHARS.fullmatch(out):
        raise LakeError(
            f"lake URL {out!r} holds characters a lake path cannot (only letters, digits "
            "and / . _ : = + @ ~ % -: no spaces, quotes, glob characters or braces)"
        )
    return out


def lake_url(con: duckdb.DuckDBPyConnection) -> str | None:
    """The warehouse's lake URL, or None in the single-file layout."""
    try:
        rows = run(con, "lake/url").fetchall()
    except duckdb.CatalogException:  # a read-only warehouse older than warehouse_meta
        return None
    return str(rows[0][0]) if rows else None


def raw_target(con: duckdb.DuckDBPyConnection, table: str) -> str:
    """The table a load inserts ``table``'s rows into: the raw table, or in lake layout its
    landing table (flushed to the lake by :func:`flush` before the load commits)."""
    if table not in LOG_TABLES:
        raise ValueError(f"only the logs ({', '.join(LOG_TABLES)}) live in a lake, not {table!r}")
    return _LANDING[table] if lake_url(con) else table


def _log_counts(con: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    ((n_imp, n_beh),) = run(con, "lake/log_counts").fetchall()
    return int(n_imp), int(n_beh)


def init_lake(db_path: str | Path, url: str | Path) -> str:
    """Put the warehouse at ``db_path`` (created if missing) in lake layout at ``url``.

    Idempotent for the same lake. Returns the stored (normalized) URL.

    Raises:
        LakeError: the warehouse already uses another lake; it holds impressions or
            behaviours in its single file (raw rows are never moved); or the lake already
            holds log files (another warehouse's).
    """
    url = normalize_url(url)
    with open_db(db_path) as con:
        current = lake_url(con)
        if current == url:
            return url
        if current is not None:
            raise LakeError(
                f"warehouse {db_path} keeps its logs in the lake {current}, not {url}; "
                "a warehouse has one lake"
            )
        n_imp, n_beh = _log_counts(con)
        if n_imp or n_beh:
            raise LakeError(
                f"warehouse {db_path} already holds {n_imp:,} impressions and {n_beh:,} "
                "behaviours in its single file; the lake layout is only set up on a warehouse "
                "without logs (raw rows are never moved or deleted): use a new --db"
            )
        fs, root = url_fs(url)
        for table in LOG_TABLES:
            if fs.exists(f"{root}/{table}") and fs.find(f"{root}/{table}"):
                raise LakeError(
                    f"the lake {url} already holds {table} files (another warehouse's lake?); "
                    "give each warehouse a lake of its own"
                )
        con.execute("BEGIN TRANSACTION")
        try:
            run(con, "lake/init")
            run(con, "lake/set_url", {"url": url})
            _create_views(con)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    return url


def _create_views(con: duckdb.DuckDBPyConnection) -> None:
    for table in LOG_TABLES:
        files = [r[0] for r in run(con, "lake/files", {"table_name": table}).fetchall()]
        if files:
            run(con, f"lake/view_{table}", paths={"files": files})
        else:
            run(con, f"lake/view_{table}_landing")


def flush(con: duckdb.DuckDBPyConnection, load_id: str) -> list[str]:
    """Move the landing rows of the load in progress into the lake (in its transaction).

    Per log table with landing rows: write them to ``<lake>/_staging/<load_id>-<token>/``
    partitioned by day, move each file to ``<lake>/<table>/day=…/`` (refusing to replace a
    file: the logs are append-only), record it in ``lake_files``, empty the landing table
    and recreate the view. Nothing is visible to others until the caller commits; if it
    rolls back, the moved files are orphans. A single-file warehouse: nothing to do.

    Returns:
        The lake paths of the files written (empty when nothing was flushed).

    Raises:
        LakeError: a file of that name already exists (nothing was replaced).
    """
    url = lake_url(con)
    if url is None:
        return []
    if not _LOAD_ID.fullmatch(load_id):
        raise ValueError(f"invalid load id {load_id!r} for a lake file name")
    attach(con, url)
    fs, root = url_fs(url)
    flush_id = f"{load_id}-{uuid.uuid4().hex[:8]}"
    written: list[str] = []
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    for table in LOG_TABLES:
        landing = _LANDING[table]
        n = int(run(con, "lake/count_landing", landing=landing).fetchall()[0][0])
        if not n:
            continue
        stage_rel = f"{_STAGING}/{flush_id}/{table}"
        fs.makedirs(f"{root}/{stage_rel}", exist_ok=True)
        run(
            con,
            "lake/copy_landing",
            {"dir": f"{url}/{stage_rel}", "pattern": f"{flush_id}_{{i}}"},
            landing=landing,
        )
        rows = 0
        for src in sorted(fs.find(f"{root}/{stage_rel}")):
            part = src[len(f"{root}/{stage_rel}/") :]  # day=…/<flush_id>_<i>.parquet
            folder = part.split("/", 1)[0]
            rel = f"{table}/{part}"
            if fs.exists(f"{root}/{rel}"):
                raise LakeError(
                    f"{url}/{rel} already exists: lake files are never replaced; "
                    "nothing of this flush is committed"
                )
            fs.makedirs(f"{root}/{table}/{folder}", exist_ok=True)
            fs.mv(src, f"{root}/{rel}")
            path = f"{url}/{rel}"
            ((n_rows, n_bytes),) = run(con, "lake/file_meta", {"path": path}).fetchall()
            day = folder.removeprefix("day=")
            run(
                con,
                "lake/record_file",
                {
                    "table_name": table,
                    "day": None if day == _DEFAULT_PARTITION else dt.date.fromisoformat(day),
                    "path": path,
                    "load_id": load_id,
                    "rows": int(n_rows),
                    "bytes": int(n_bytes),
                    "written_at": now,
                },
            )
            rows += int(n_rows)
            written.append(path)
        if rows != n:
            raise RuntimeError(
                f"flushing {table} wrote {rows:,} rows to {url}, the landing table held "
                f"{n:,}; this is a bug (nothing of this flush is committed)"
            )
        run(con, "lake/clear_landing", landing=landing)
    if written:
        _create_views(con)
        if fs.exists(f"{root}/{_STAGING}/{flush_id}") and not fs.find(
            f"{root}/{_STAGING}/{flush_id}"
        ):
            fs.rm(f"{root}/{_STAGING}/{flush_id}", recursive=True)
    return written


def orphans(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Files under the lake that the manifest does not list: files of loads that rolled back
    (or left in staging). They are never read; they are listed, never deleted, here."""
    url = lake_url(con)
    if url is None:
        return []
    fs, root = url_fs(url)
    if not fs.exists(root):
        return []
    known = {r[0] for r in run(con, "lake/all_files").fetchall()}
    found = (f"{url}/{p[len(root) + 1 :]}" for p in fs.find(root))
    return sorted(p for p in found if p not in known)


def status(db_path: str | Path) -> dict[str, Any]:
    """The lake of a warehouse: URL, committed files/rows/bytes/days per log table, rows
    waiting in the landing tables (none outside a load) and the orphan files.

    Raises:
        LakeError: the warehouse is not in lake layout.
    """
    with open_db(db_path, read_only=True) as con:
        url = lake_url(con)
        if url is None:
            raise LakeError(
                f"warehouse {db_path} keeps its logs in its single file (no lake); "
                "set one up with tarq lake init or a first load with --lake URL"
            )
        tables: dict[str, dict[str, Any]] = {
            t: {"files": 0, "rows": 0, "bytes": 0, "days": 0, "first_day": None, "last_day": None}
            for t in LOG_TABLES
        }
        for name, files, n_rows, n_bytes, days, first, last in run(con, "lake/status").fetchall():
            tables[name] = {
                "files": int(files),
                "rows": int(n_rows),
                "bytes": int(n_bytes),
                "days": int(days),
                "first_day": None if first is None else first.isoformat(),
                "last_day": None if last is None else last.isoformat(),
            }
        landing = {
            t: int(run(con, "lake/count_landing", landing=_LANDING[t]).fetchall()[0][0])
            for t in LOG_TABLES
        }
        return {"lake": url, "tables": tables, "landing_rows": landing, "orphans": orphans(con)}


def status_text(st: dict[str, Any]) -> str:
    """:func:`status` for people."""
    lines = [f"lake {st['lake']}"]
    for table, t in st["tables"].items():
        span = f", {t['first_day']} .. {t['last_day']}" if t["days"] else ""
        lines.append(
            f"{table}: {t['files']:,} files, {t['rows']:,} rows, {t['bytes']:,} bytes, "
            f"{t['days']:,} days{span}"
        )
    waiting = {t: n for t, n in st["landing_rows"].items() if n}
    if waiting:
        lines.append(
            "landing rows not flushed (visible, kept in the DuckDB file): "
            + ", ".join(f"{t} {n:,}" for t, n in waiting.items())
        )
    lines.append(f"orphans (files no load committed; never read): {len(st['orphans']):,}")
    lines += [f"  {p}" for p in st["orphans"]]
    return "\n".join(lines)


__all__ = [
    "LOG_TABLES",
    "LakeError",
    "attach",
    "flush",
    "init_lake",
    "is_local",
    "lake_url",
    "normalize_url",
    "orphans",
    "raw_target",
    "status",
    "status_text",
]
