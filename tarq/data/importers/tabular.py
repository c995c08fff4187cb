"""Contract-shaped Parquet or CSV files (``tarq import parquet SRC``).

``SRC`` is a directory holding any of ``items``, ``users``, ``impressions``, ``behaviors``,
each as ``<name>.parquet``, ``<name>.csv`` (comma-separated, header line) or a directory
``<name>/`` of Parquet parts (all with the same columns; their types may differ, columns are
matched by name). A table without a file is skipped and reported.

Columns are the warehouse contract's (``sql/schema/create_tables.sql``):

==============  =================================  ==========================================
table           required                           optional
==============  =================================  ==========================================
items           item_id                            category_id, brand_id, price
users           user_id                            –
impressions     user_id, item_id, ts, clicked      exposed (TRUE when absent), position,
                                                   request_id
behaviors       user_id, ts, action                item_id, category_id, brand_id
==============  =================================  ==========================================

``ts`` is a timestamp (text with an offset is converted to UTC; naive text is taken as UTC)
or Unix seconds. Extra columns of ``users``/``items`` are loaded as side features when the
feature spec names them: the warehouse ``feature_spec`` table plus an optional
``SRC/feature_spec.json`` ``{"users": {"col": "categorical"}, "items": {...}}`` (kinds:
``categorical`` → BIGINT code, integers kept and other text stable-coded; ``numeric`` →
DOUBLE; ``text`` → VARCHAR), which is registered in the warehouse. Other extra columns are
ignored and listed in the report. For Parquet, ``source_line`` in quarantine is the 1-based
row number within the part file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tarq.data.importers.common import (
    FileReport,
    ImportContext,
    SourceFormatError,
    TextFormat,
    create_stubs,
    list_files,
    load_typed,
    skipped,
    source_columns,
    stage_parquet,
    stage_text,
    staged_columns,
)
from tarq.store.sqlfiles import quote_ident, run

TABLES = ("items", "users", "impressions", "behaviors")
REQUIRED = {
    "items": ("item_id",),
    "users": ("user_id",),
    "impressions": ("user_id", "item_id", "ts", "clicked"),
    "behaviors": ("user_id", "ts", "action"),
}
OPTIONAL = {
    "items": ("category_id", "brand_id", "price"),
    "users": (),
    "impressions": ("exposed", "position", "request_id"),
    "behaviors": ("item_id", "category_id", "brand_id"),
}
#: Columns the warehouse assigns itself; present in an export, they are not imported.
ASSIGNED = ("row_id", "load_id")
KIND_TYPES = {"categorical": "BIGINT", "numeric": "DOUBLE", "text": "VARCHAR"}
SPEC_FILE = "feature_spec.json"
#: Names the staged rows use internally; a side feature cannot take them.
_RESERVED = {"source_file", "source_line", "raw", "raw_json", "reject_check", "reject_reason"}


@dataclass
class _Planned:
    table: str
    paths: list[Path]
    is_csv: bool
    names: list[str] = field(default_factory=list)


def _find(src: Path, table: str) -> _Planned | None:
    candidates = []
    if (src / f"{table}.parquet").is_file():
        candidates.append(_Planned(table, [src / f"{table}.parquet"], False))
    if (src / f"{table}.csv").is_file():
        candidates.append(_Planned(table, [src / f"{table}.csv"], True))
    if (src / table).is_dir():
        parts = sorted((src / table).rglob("*.parquet"))
        if not parts:
            raise SourceFormatError(f"{src / table}: directory holds no .parquet files")
        candidates.append(_Planned(table, parts, False))
    if len(candidates) > 1:
        found = ", ".join(str(c.paths[0].relative_to(src)) for c in candidates)
        raise SourceFormatError(f"{src}: {table} is given more than once ({found}); keep one")
    return candidates[0] if candidates else None


def read_spec_file(src: Path) -> dict[str, dict[str, str]]:
    """Parse ``SRC/feature_spec.json`` (empty when absent); clear errors for bad content."""
    path = src / SPEC_FILE
    if not path.is_file():
        return {}
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SourceFormatError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(spec, dict):
        raise SourceFormatError(f'{path}: expected an object {{"users": {{...}}, ...}}')
    out: dict[str, dict[str, str]] = {}
    for table, cols in spec.items():
        if table not in ("users", "items"):
            raise SourceFormatError(
                f"{path}: side features belong to users or items, not {table!r}"
            )
        if not isinstance(cols, dict):
            raise SourceFormatError(f"{path}: {table!r} must map column names to kinds")
        for col, kind in cols.items():
            if kind not in KIND_TYPES:
                raise SourceFormatError(
                    f"{path}: {table}.{col}: kind {kind!r} is not one of {', '.join(KIND_TYPES)}"
                )
        out[table] = dict(cols)
    return out


def plan(src: Path) -> tuple[list[_Planned], list[FileReport], dict[str, dict[str, str]]]:
    """Find the table files of ``src`` and check CSV headers (nothing is written)."""
    if not src.exists():
        raise FileNotFoundError(f"import source {src} does not exist")
    if not src.is_dir():
        raise SourceFormatError(
            f"{src}: the parquet importer takes a directory holding items/users/impressions/"
            f"behaviors as .parquet, .csv or a folder of parts"
        )
    spec = read_spec_file(src)
    todo: list[_Planned] = []
    skips: list[FileReport] = []
    used: set[Path] = {src / SPEC_FILE}
    for table in TABLES:
        found = _find(src, table)
        if found is None:
            skips.append(
                skipped(src / table, f"no {table}.parquet, {table}.csv or {table}/ in {src}")
            )
            continue
        if found.is_csv:
            fmt = TextFormat(f"{table} CSV", ",", True, REQUIRED[table])
            found.names, _ = source_columns(found.paths[0], fmt)
        used.add(found.paths[0] if found.is_csv or found.paths[0].parent == src else src / table)
        todo.append(found)
    for path in list_files(src):
        if path not in used:
            skips.append(skipped(path, "not a table file (items, users, impressions, behaviors)"))
    return todo, skips, spec


def load(
    ctx: ImportContext, todo: list[_Planned], spec: dict[str, dict[str, str]]
) -> list[FileReport]:
    """Load the planned tables in contract order (catalog first, then logs)."""
    con = ctx.con
    reports = []
    for item in todo:
        shown = item.paths[0] if len(item.paths) == 1 else item.paths[0].parent
        report = FileReport(file=str(shown), table=item.table)
        if len(item.paths) > 1:
            report.notes.append(f"{len(item.paths)} Parquet parts")
        if item.is_csv:
            stage_text(
                ctx,
                item.paths[0],
                TextFormat(f"{item.table} CSV", ",", True, REQUIRED[item.table]),
                item.names,
            )
        else:
            stage_parquet(ctx, item.paths)
        columns = staged_columns(ctx)
        missing = [c for c in REQUIRED[item.table] if c not in columns]
        if missing:
            raise SourceFormatError(
                f"{shown}: {item.table} lacks required column(s) {', '.join(missing)} "
                f"(found: {', '.join(columns)})"
            )
        run(
            con,
            f"importers/tabular_{item.table}",
            {"has_exposed": "exposed" in columns} if item.table == "impressions" else None,
        )
        known = set(REQUIRED[item.table]) | set(OPTIONAL[item.table])
        extras = [c for c in columns if c not in known and c not in ASSIGNED]
        side: dict[str, str] = {}
        if item.table in ("users", "items"):
            declared = {**_warehouse_spec(ctx, item.table), **spec.get(item.table, {})}
            for col in extras:
                if col in declared:
                    side[col] = KIND_TYPES[declared[col]]
                    _add_side(ctx, shown, col, declared[col])
        ignored = [c for c in extras if c not in side]
        if ignored:
            report.notes.append(
                f"ignored column(s) (not in the feature spec): {', '.join(ignored)}"
            )
        assigned = [c for c in columns if c in ASSIGNED]
        if assigned:
            report.notes.append(f"not imported (assigned by the warehouse): {', '.join(assigned)}")
        load_typed(ctx, report, item.table, side or None)
        if item.table == "impressions":
            create_stubs(ctx, report)
        reports.append(report)
    return reports


def _warehouse_spec(ctx: ImportContext, table: str) -> dict[str, str]:
    rows = run(ctx.con, "importers/feature_spec", {"table": table}).fetchall()
    return {col: kind for col, kind in rows if kind in KIND_TYPES}


def _add_side(ctx: ImportContext, shown: Path, col: str, kind: str) -> None:
    try:
        quote_ident(col)
    except ValueError as exc:
        raise SourceFormatError(
            f"{shown}: side-feature column {col!r} is not a plain name ([A-Za-z_][A-Za-z0-9_]*)"
        ) from exc
    if col in _RESERVED:
        raise SourceFormatError(f"{shown}: column name {col!r} is reserved by the importer")
    run(ctx.con, f"importers/tabular_side_{kind}", {"key": col}, col=col)
