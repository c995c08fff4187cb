"""Named SQL statements from the repository's ``sql/`` folder.

Every statement lives in ``sql/<group>/<name>.sql`` and takes ``$named`` parameters that
DuckDB binds; nothing here formats values into SQL text. The only text substitution allowed
is of identifiers, and those go through :func:`quote_ident`, which accepts plain names only.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import duckdb

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def sql_dir() -> Path:
    """The folder holding the named SQL files (``$TARQ_SQL_DIR`` overrides the repo's)."""
    override = os.environ.get("TARQ_SQL_DIR")
    return Path(override) if override else Path(__file__).resolve().parents[1] / "sql"


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


def render(name: str, **idents: str) -> str:
    """SQL text of ``name`` with ``{ident}`` placeholders replaced by validated identifiers."""
    text = load_sql(name)
    for key, value in idents.items():
        text = text.replace("{" + key + "}", quote_ident(value))
    if re.search(r"\{[a-z_]+\}", text):
        raise ValueError(f"SQL {name!r} has unfilled identifier placeholders")
    return text


def run(
    con: duckdb.DuckDBPyConnection,
    name: str,
    params: dict[str, Any] | None = None,
    **idents: str,
) -> duckdb.DuckDBPyConnection:
    """Execute the named statement with bound ``$params``; returns the cursor for fetching."""
    text = render(name, **idents) if idents else load_sql(name)
    if params:
        # DuckDB rejects parameters the statement does not use; pass only those it names.
        used = {k: v for k, v in params.items() if re.search(rf"\${k}\b", text)}
        return con.execute(text, used)
    return con.execute(text)
