"""Stable integer codes for categorical strings.

Importers turn string categories (a MovieLens genre, an occupation, a zip prefix) into
BIGINT codes so that every categorical field of the warehouse is an integer. The code must
not depend on which rows happen to be loaded together, so that a file appended next month
gets the same code for the same string: it is a hash, not a running dictionary index.

The hash is the first 8 bytes of the string's MD5 digest read little-endian, shifted right
by one bit (non-negative, 63 bits). MD5 is used as a well-specified, fast fingerprint, not
for security; DuckDB computes the same number with ``md5_number_upper(s) >> 1``, which the
SQL macro ``tarq_code`` (``sql/importers/macros.sql``) uses, so Python and SQL agree.
Collisions among a few million strings are vanishingly unlikely (about n²/2⁶⁴).
"""

from __future__ import annotations

import hashlib
from typing import overload

import pandas as pd


def _code(text: str) -> int:
    digest = hashlib.md5(text.encode("utf-8"), usedforsecurity=False).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@overload
def stable_code(values: str) -> int: ...


@overload
def stable_code(values: pd.Series) -> pd.Series: ...


def stable_code(values: str | pd.Series) -> int | pd.Series:
    """Deterministic non-negative 63-bit code of a string, or of each string in a Series.

    Args:
        values: one string, or a Series of strings (shape ``(n,)``); missing values stay
            missing.

    Returns:
        An ``int`` for a string; for a Series, a Series of dtype ``Int64`` (nullable) with
        the same index, shape ``(n,)``.
    """
    if isinstance(values, str):
        return _code(values)
    if isinstance(values, pd.Series):
        codes = [None if pd.isna(v) else _code(str(v)) for v in values]
        # Built from Python ints directly: going through float64 would round 63-bit codes.
        return pd.Series(pd.array(codes, dtype="Int64"), index=values.index, name=values.name)
    raise TypeError(f"stable_code takes a str or a pandas Series, not {type(values).__name__}")
