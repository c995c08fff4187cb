"""Lake URLs as DuckDB filesystems: which ones DuckDB reads natively and how the others are
registered on a connection. Kept apart from :mod:`tarq.data.lake` so that opening a warehouse
(:func:`tarq.store.warehouse.connect`) needs nothing of the lake's loading code, which itself opens
warehouses."""

from __future__ import annotations

from typing import Any

import duckdb


def is_local(url: str) -> bool:
    """Whether DuckDB reads the lake natively (a local path; anything else goes through
    fsspec)."""
    return "://" not in url


def url_fs(url: str) -> tuple[Any, str]:
    """The fsspec filesystem of ``url`` and the path within it."""
    from fsspec.core import url_to_fs

    return url_to_fs(url)


def attach(con: duckdb.DuckDBPyConnection, url: str) -> None:
    """Let ``con`` read and write the lake: register its fsspec filesystem with DuckDB
    unless DuckDB reads it natively (local paths) or it is registered already."""
    if is_local(url):
        return
    fs, _ = url_fs(url)
    name = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if not con.filesystem_is_registered(name):
        con.register_filesystem(fs)
