"""File paths handed to DuckDB's readers, taken literally.

DuckDB's ``read_csv``/``read_parquet`` treat ``*``, ``?`` and ``[...]`` in a path as a glob,
so a folder named ``b*`` would also read ``bx/``, and ``c[1]`` would read ``c1`` instead of
itself. Every path tarq hands to a reader goes through :func:`duckdb_path`.
"""

from __future__ import annotations

import re
from pathlib import Path

# DuckDB's glob knows *, ?, ** and [...] classes (no {a,b} braces); a one-character class
# such as [*] matches that character literally, including [[] for "[".
_GLOB_CHARS = re.compile(r"([*?\[])")


def duckdb_path(path: str | Path) -> str:
    """``path`` as absolute text that DuckDB's file readers match literally.

    Absolute, so that a relative name starting with ``~`` or looking like ``s3://`` is not
    read as a home directory or a remote URL; glob characters escaped as one-character
    classes.
    """
    return _GLOB_CHARS.sub(r"[\1]", str(Path(path).absolute()))
