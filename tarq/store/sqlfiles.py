"""Named SQL statements from the repository's ``sql/`` folder.

Every statement lives in ``sql/<group>/<name>.sql`` and takes ``$named`` parameters that
DuckDB binds; nothing here formats values into SQL text. The only text substitutions allowed
are of identifiers, which go through :func:`quote_ident` (plain names only), and of file-path
lists where DuckDB takes no parameter at all (a view's definition: a view is stored as text),
which go through :func:`quote_path_list`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import duckdb

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# Paths tarq writes itself (lake files): no quotes, no control characters, no glob characters
# (a reader would expand them), no braces (they would read as a placeholder).
_PATH = re.compile(r"^[A-Za-z0-9_./:=+@~%, -]+$")
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


def sql_dir() -> Path:
    """The folder holding the named SQL files (``$TARQ_SQL_DIR`` overrides the repo's)."""
    override = os.environ.get("TARQ_SQL_DIR")
    return Path(override) if override else Path(__file__).resolve().parents[2] / "sql"


@lru_cache(maxsize=256)
def load_sql(name: str) -> str:
    """Return the text of ``sql/<name>.sql``; ``name`` is like ``"samples/build"``."""
    if not re.fullmatch(r"[a-z0-9_]+(/[a-z0-9_]+)*", name):
        raise ValueError(f"invalid SQL statement name {name!r}")
    path = sql_dir() / f"{name}.sql"
    if not path.is_file():
        raise FileNotFoundError(f"no SQL statement named {name!r} (looked for {path})")
    return path.read_text(encoding="utf-8")


def quote_ident(name: str) -> str:
    """Quote a table/column identifier after checking it is a plain name.

    Raises ValueError for anything but ``[A-Za-z_][A-Za-z0-9_]*`` so that a parameter can
    never smuggle SQL in where DuckDB cannot bind (identifiers).
    """
    if not isinstance(name, str) or not _IDENT.fullmatch(name):
        raise ValueError(f"invalid SQL identifier {name!r}")
    return f'"{name}"'


def quote_path_list(paths: Sequence[str]) -> str:
    """A DuckDB list literal of file paths, after checking each is a plain path.

    Raises ValueError for an empty list or a path with a quote, a control, glob or brace
    character: only for statements DuckDB cannot prepare (a view's stored text).
    """
    if not paths:
        raise ValueError("an empty path list cannot be read")
    for path in paths:
        if not isinstance(path, str) or not _PATH.fullmatch(path):
            raise ValueError(f"invalid path for a SQL statement {path!r}")
    return "[" + ", ".join(f"'{p}'" for p in paths) + "]"


def render(name: str, paths: Mapping[str, Sequence[str]] | None = None, **idents: str) -> str:
    """SQL text of ``name`` with ``{ident}`` placeholders replaced by validated identifiers
    (and ``{paths}`` placeholders, where given, by validated path lists)."""
    text = load_sql(name)
    fill = {key: quote_ident(value) for key, value in idents.items()}
    fill.update({key: quote_path_list(value) for key, value in (paths or {}).items()})
    if set(_PLACEHOLDER.findall(text)) - set(fill):
        raise ValueError(f"SQL {name!r} has unfilled identifier placeholders")
    # One pass, so that a filled-in value is never itself searched for placeholders.
    return _PLACEHOLDER.sub(lambda m: fill[m.group(1)], text)


def run(
    con: duckdb.DuckDBPyConnection,
    name: str,
    params: dict[str, Any] | None = None,
    paths: Mapping[str, Sequence[str]] | None = None,
    **idents: str,
) -> duckdb.DuckDBPyConnection:
    """Execute the named statement with bound ``$params``; returns the cursor for fetching."""
    text = render(name, paths, **idents) if idents or paths else load_sql(name)
    if params:
        # DuckDB rejects parameters the statement does not use; pass only those it names.
        used = {k: v for k, v in params.items() if re.search(rf"\${k}\b", text)}
        return con.execute(text, used)
    return con.execute(text)
