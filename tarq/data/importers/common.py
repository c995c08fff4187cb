"""Machinery shared by the importers: reports, errors, staging, quarantine and appends.

Every source file goes through the same steps, each a named statement in ``sql/importers``:

1. **stage** – the file is read with every field as text (``stage_csv``) or as stored
   (``stage_parquet``) into the temporary table ``import_stage`` with its source file and
   1-based line (Parquet: row) number. Structural problems (field count, encoding, quoting,
   Parquet parts with different columns) abort the import with a :class:`SourceFormatError`
   naming file and line. Paths reach DuckDB literally (:func:`tarq.data.paths.duckdb_path`).
2. **type** – a format-specific statement (``taobao_raw_sample`` …) builds ``import_typed``:
   contract columns, side features, and per row ``reject_check``/``reject_reason`` when a
   key is empty (``null_key``), a non-empty value does not convert to its type
   (``type_cast``) or a number is inf, -inf or NaN (``non_finite``).
3. **quarantine** – rejected rows go to ``quarantine_<table>`` (stage ``import``, the raw
   fields as JSON, file and line).
4. **append** – good rows are inserted with the load's ``load_id``. Logs (impressions,
   behaviours) are appended as they are. For the keyed catalog (items, users) an id seen
   twice in one batch keeps its first row (the rest are quarantined as ``duplicate_id``) and
   an id already in the warehouse is skipped and counted (``rows_skipped_existing``): raw
   rows are never replaced.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from tarq.data.lake import raw_target
from tarq.data.paths import duckdb_path
from tarq.store.sqlfiles import load_sql, run
from tarq.store.warehouse import add_side_column, table_columns

#: Delimiters tried when a header parses as a single column, to say what the file looks like.
_DELIM_NAMES = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe"}
_MAX_ERRORS_SHOWN = 5


class SourceFormatError(ValueError):
    """A source file cannot be imported as the format it claims to be (nothing is loaded).

    The message names the file and, where known, the line and column.
    """


@dataclass
class FileReport:
    """What happened to one source file.

    ``rows_read = rows_loaded + rows_rejected + rows_skipped_existing`` for a loaded file;
    a skipped file (unrecognised or absent) has ``status == "skipped"`` and the reason in
    ``notes``.
    """

    file: str
    table: str | None
    status: str = "loaded"
    rows_read: int = 0
    rows_loaded: int = 0
    rows_rejected: int = 0
    rows_skipped_existing: int = 0
    stub_items: int = 0
    stub_users: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class ImportReport:
    """The outcome of one ``tarq import`` run (one ``loads`` row)."""

    kind: str
    source: str
    db: str
    load_id: str
    files: list[FileReport] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when at least one file was loaded (rejected rows are quarantined, not fatal)."""
        return any(f.status == "loaded" for f in self.files)

    @property
    def totals(self) -> dict[str, int]:
        """Sums over the loaded files, per counter."""
        keys = ("rows_read", "rows_loaded", "rows_rejected", "rows_skipped_existing")
        out = {k: sum(getattr(f, k) for f in self.files) for k in keys}
        out["stub_items"] = sum(f.stub_items for f in self.files)
        out["stub_users"] = sum(f.stub_users for f in self.files)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored in ``loads.report``)."""
        out = asdict(self)
        out["ok"] = self.ok
        out["totals"] = self.totals
        return out

    def to_text(self) -> str:
        """A readable table for the command line."""
        head = ("file", "table", "read", "loaded", "rejected", "existing", "stubs")
        rows: list[tuple[str, ...]] = []
        for f in self.files:
            if f.status != "loaded":
                continue
            stubs = []
            if f.stub_items:
                stubs.append(f"items {f.stub_items:,}")
            if f.stub_users:
                stubs.append(f"users {f.stub_users:,}")
            rows.append(
                (
                    Path(f.file).name,
                    f.table or "",
                    f"{f.rows_read:,}",
                    f"{f.rows_loaded:,}",
                    f"{f.rows_rejected:,}",
                    f"{f.rows_skipped_existing:,}",
                    ", ".join(stubs) or "-",
                )
            )
        t = self.totals
        rows.append(
            (
                "total",
                "",
                f"{t['rows_read']:,}",
                f"{t['rows_loaded']:,}",
                f"{t['rows_rejected']:,}",
                f"{t['rows_skipped_existing']:,}",
                f"items {t['stub_items']:,}, users {t['stub_users']:,}",
            )
        )
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        right = {2, 3, 4, 5}

        def fmt(r: tuple[str, ...]) -> str:
            cells = [
                c.rjust(w) if i in right else c.ljust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            ]
            return "  ".join(cells).rstrip()

        lines = [
            f"tarq import {self.kind}: {self.source} -> {self.db} (load {self.load_id})",
            fmt(head),
            "  ".join("-" * w for w in widths),
        ]
        lines += [fmt(r) for r in rows[:-1]]
        lines += ["  ".join("-" * w for w in widths), fmt(rows[-1])]
        for f in self.files:
            if f.status != "loaded":
                lines.append(f"skipped {Path(f.file).name}: {'; '.join(f.notes)}")
        for f in self.files:
            if f.status == "loaded":
                lines += [f"note {Path(f.file).name}: {n}" for n in f.notes]
        lines += [f"note: {n}" for n in self.notes]
        if t["rows_rejected"]:
            lines.append(
                f"{t['rows_rejected']:,} rejected rows are in quarantine_<table> "
                f"(run_id = {self.load_id})"
            )
        if not self.ok:
            lines.append("nothing was loaded")
        return "\n".join(lines)


@dataclass(frozen=True)
class TextFormat:
    """How to read one delimited text format.

    Attributes:
        name: human name used in messages, e.g. ``"Taobao raw_sample"``.
        delim: field separator.
        header: whether the first line names the columns.
        columns: with a header, the columns the typed step needs (others are ignored and
            reported); without one, the names of all fields in order.
        encoding: file encoding (``utf-8`` or ``latin-1``).
        quote: quote character; ``""`` disables quoting (titles may hold stray quotes).
        strip_types: drop a RecBole ``:type`` suffix from header names.
        aliases: header name → name the typed step uses.
    """

    name: str
    delim: str
    header: bool
    columns: tuple[str, ...]
    encoding: str = "utf-8"
    quote: str = '"'
    strip_types: bool = False
    aliases: tuple[tuple[str, str], ...] = ()


@dataclass
class ImportContext:
    """State of one import run: the open connection and its load id."""

    con: duckdb.DuckDBPyConnection
    load_id: str
    kind: str


def install_macros(con: duckdb.DuckDBPyConnection) -> None:
    """Create the importers' temporary SQL macros on ``con`` (``sql/importers/macros.sql``)."""
    con.execute(load_sql("importers/macros"))


def _open_text(path: Path) -> BinaryIO:
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")


def first_line(path: Path, encoding: str) -> str:
    """The first line of a text file, decoded; clear errors for empty or undecodable files."""
    try:
        with _open_text(path) as fh:
            raw = fh.readline(1 << 20)
    except OSError as exc:
        raise SourceFormatError(f"{path}: cannot read the file ({exc})") from exc
    if not raw.strip():
        raise SourceFormatError(f"{path}: the file is empty (line 1 has no data)")
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise SourceFormatError(
            f"{path}: line 1, byte {exc.start + 1}: not valid {encoding} text "
            f"(byte 0x{raw[exc.start]:02x})"
        ) from exc
    return text.lstrip("\ufeff").rstrip("\r\n")


def _delimiter_hint(line: str, expected: str) -> str:
    counts = {d: line.count(d) for d in _DELIM_NAMES if d != expected}
    best = max(counts, key=counts.__getitem__)
    if counts[best]:
        return f"; it looks {_DELIM_NAMES[best]}-separated ({best!r}), wrong delimiter?"
    return ""


def _normalize(name: str, fmt: TextFormat) -> str:
    out = name.strip().strip('"').strip()
    if fmt.strip_types:
        out = out.split(":", 1)[0]
    return dict(fmt.aliases).get(out, out)


def source_columns(path: Path, fmt: TextFormat) -> tuple[list[str], list[str]]:
    """Check a file's first line against ``fmt``; return (names in file order, ignored).

    Raises:
        SourceFormatError: empty file, bad encoding on line 1, header parsing as one column
            (wrong delimiter), missing required columns (named), duplicate column names,
            or a headerless file whose first line has the wrong number of fields.
    """
    line = first_line(path, fmt.encoding)
    fields = line.split(fmt.delim)
    sep = _DELIM_NAMES.get(fmt.delim, repr(fmt.delim))
    if not fmt.header:
        if len(fields) != len(fmt.columns):
            raise SourceFormatError(
                f"{path}: line 1 has {len(fields)} {sep}-separated field(s), a {fmt.name} "
                f"file has {len(fmt.columns)} ({', '.join(fmt.columns)})"
                + _delimiter_hint(line, fmt.delim)
            )
        return list(fmt.columns), []
    names = [_normalize(f, fmt) for f in fields]
    if len(names) == 1 and len(fmt.columns) > 1:
        raise SourceFormatError(
            f"{path}: line 1 (header) parses as a single column with the {sep} delimiter "
            f"expected for {fmt.name}" + _delimiter_hint(line, fmt.delim)
        )
    missing = [c for c in fmt.columns if c not in names]
    if missing:
        raise SourceFormatError(
            f"{path}: {fmt.name} header lacks required column(s) {', '.join(missing)} "
            f"(found: {', '.join(names)})"
        )
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SourceFormatError(f"{path}: header names column(s) twice: {', '.join(dupes)}")
    if any(not n for n in names):
        raise SourceFormatError(f"{path}: header has an empty column name")
    return names, [n for n in names if n not in fmt.columns]


def _ends_with_newline(path: Path) -> bool:
    if path.suffix == ".gz":
        return True  # cannot seek cheaply; a truncated gzip fails in the reader anyway
    with path.open("rb") as fh:
        fh.seek(0, 2)
        if fh.tell() == 0:
            return True
        fh.seek(-1, 2)
        return fh.read(1) == b"\n"


def stage_text(ctx: ImportContext, path: Path, fmt: TextFormat, names: list[str]) -> int:
    """Stage a delimited file into ``import_stage`` (text fields); return its data rows.

    Raises:
        SourceFormatError: a line has the wrong number of fields, bytes that are not valid
            in ``fmt.encoding``, or an unterminated quote (file, line and column named;
            the first few problems listed).
    """
    con = ctx.con
    run(con, "importers/drop_stage")
    params = {
        "source": str(path),
        "path": duckdb_path(path),
        "columns": {n: "VARCHAR" for n in names},
        "skip": 1 if fmt.header else 0,
        "delim": fmt.delim,
        "quote": fmt.quote,
        "encoding": fmt.encoding,
    }
    try:
        run(con, "importers/stage_csv", params)
    except duckdb.Error as exc:
        raise SourceFormatError(
            f"{path}: cannot be read as {fmt.name}: {_first_line(exc)}"
        ) from exc
    errors = run(con, "importers/stage_errors", {"limit": _MAX_ERRORS_SHOWN}).fetchall()
    if errors:
        total, last = run(con, "importers/stage_error_summary").fetchone()
        problems = [_describe(fmt, names, e, last, _ends_with_newline(path)) for e in errors]
        more = f" (and {total - len(errors)} more)" if total > len(errors) else ""
        raise SourceFormatError(f"{path}: {'; '.join(problems)}{more}")
    return int(run(con, "importers/count_stage").fetchone()[0])


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0]


def _describe(fmt: TextFormat, names: list[str], err: tuple, last_line: int, nl: bool) -> str:
    line, column, kind, text, message = err
    shown = (text or "")[:120]
    if kind == "INVALID ENCODING":
        return f"line {line}, column {column}: not valid {fmt.encoding} text"
    if kind in ("MISSING COLUMNS", "TOO MANY COLUMNS", "UNQUOTED VALUE"):
        m = re.search(r"Found: (\d+)", message or "")
        found = f"{m.group(1)} fields" if m else "a malformed row"
        what = (
            f"line {line}: expected {len(names)} fields separated by "
            f"{_DELIM_NAMES.get(fmt.delim, repr(fmt.delim))}, found {found} ({shown!r})"
        )
        if kind == "UNQUOTED VALUE":
            what = f"line {line}: unterminated quote ({shown!r})"
        if line == last_line and not nl:
            what += " - the last line has no final newline: the file looks truncated"
        return what
    return f"line {line}, column {column}: {message}"


def check_part_columns(paths: list[Path]) -> None:
    """Refuse a folder of Parquet parts whose parts do not all have the same columns.

    Read naively, DuckDB takes the columns of the first part: a column only later parts have
    was dropped (``exposed = false`` stored as TRUE), and read by name, a column some parts
    lack would silently become NULL or the importer's default. Neither is the export's data.

    Raises:
        SourceFormatError: a part cannot be read, or parts disagree (both parts named).
    """
    first: tuple[Path, list[str]] | None = None
    for path in paths:
        try:
            names = pq.read_schema(path).names
        except (OSError, pa.ArrowException) as exc:
            raise SourceFormatError(
                f"{path}: cannot be read as Parquet: {_first_line(exc)}"
            ) from exc
        if first is None:
            first = (path, names)
            continue
        missing = [c for c in first[1] if c not in names]
        extra = [c for c in names if c not in first[1]]
        if missing or extra:
            what = "; ".join(
                part
                for part in (
                    f"it lacks {', '.join(missing)}" if missing else "",
                    f"it has {', '.join(extra)} that {first[0].name} lacks" if extra else "",
                )
                if part
            )
            raise SourceFormatError(
                f"{path}: Parquet parts of one table must have the same columns, but {what} "
                f"(columns of {first[0]}: {', '.join(first[1])}); re-export the parts with "
                "one schema"
            )


def stage_parquet(ctx: ImportContext, paths: list[Path]) -> int:
    """Stage Parquet file(s) into ``import_stage``; return the number of rows.

    Parts of one folder are checked to have the same columns first
    (:func:`check_part_columns`); their types may differ (DuckDB unifies them by name, and the
    typed step checks every value anyway).

    Raises:
        SourceFormatError: a part cannot be read, or the parts' columns differ.
    """
    if len(paths) > 1:
        check_part_columns(paths)
    run(ctx.con, "importers/drop_stage")
    try:
        run(ctx.con, "importers/stage_parquet", {"paths": [duckdb_path(p) for p in paths]})
    except duckdb.Error as exc:
        where = paths[0] if len(paths) == 1 else f"{paths[0].parent} ({len(paths)} parts)"
        raise SourceFormatError(f"{where}: cannot be read as Parquet: {_first_line(exc)}") from exc
    return int(run(ctx.con, "importers/count_stage").fetchone()[0])


def staged_columns(ctx: ImportContext) -> list[str]:
    """Field names of the staged rows (the keys of the ``raw`` struct), in file order."""
    cur = run(ctx.con, "importers/stage_fields")
    return [d[0] for d in cur.description]


CATALOG_KEYS = {"items": "item_id", "users": "user_id"}
CATALOG_BASE = {"items": ["item_id", "category_id", "brand_id", "price"], "users": ["user_id"]}


def load_typed(
    ctx: ImportContext,
    report: FileReport,
    table: str,
    side: dict[str, str] | None = None,
) -> None:
    """Quarantine the rejects of ``import_typed`` and append its good rows to ``table``.

    Args:
        ctx: the run's connection and load id.
        report: the file's report; its counters are filled in.
        table: ``items``, ``users``, ``impressions`` or ``behaviors``.
        side: side-feature column → DuckDB type (``BIGINT``/``DOUBLE``/``VARCHAR``) present
            in ``import_typed`` for a catalog table; registered with ``add_side_column``.
    """
    con = ctx.con
    params = {"load_id": ctx.load_id}
    if table in CATALOG_KEYS:
        key = CATALOG_KEYS[table]
        run(con, "importers/mark_duplicates", {"key_name": key}, key=key)
    rows_read, rows_rejected = run(con, "importers/count_typed").fetchone()
    report.rows_read, report.rows_rejected = int(rows_read), int(rows_rejected)
    if table in CATALOG_KEYS:
        key = CATALOG_KEYS[table]
        run(con, "importers/quarantine_keyed", params, qtable=f"quarantine_{table}", key=key)
        for column, dtype in (side or {}).items():
            add_side_column(con, table, column, dtype)
        has_features = set(table_columns(con, table)) - {key, "load_id"}
        stmt = "importers/count_existing" if has_features else "importers/count_existing_plain"
        existing, existing_stubs = run(con, stmt, table=table, key=key).fetchone()
        report.rows_skipped_existing = int(existing)
        if existing_stubs:
            report.notes.append(
                f"{existing_stubs:,} of the skipped {key}s exist only as featureless stubs "
                f"from an earlier load; import feature files before or with the logs"
            )
        columns = CATALOG_BASE[table] + list(side or {})
        inserted = run(
            con, "importers/insert_catalog", {**params, "columns": columns}, table=table, key=key
        ).fetchone()[0]
    else:
        run(con, "importers/quarantine_log", params, qtable=f"quarantine_{table}")
        target = raw_target(con, table)
        inserted = run(con, f"importers/insert_{table}", params, target=target).fetchone()[0]
    report.rows_loaded = int(inserted)
    if report.rows_loaded + report.rows_rejected + report.rows_skipped_existing != report.rows_read:
        raise RuntimeError(
            f"{report.file}: row accounting does not add up ({report}); this is a bug"
        )
    if report.rows_rejected:
        checks = run(con, "importers/reject_summary").fetchall()
        summary = ", ".join(f"{c} {n:,}" for c, n in checks)
        report.notes.append(f"rejected to quarantine_{table}: {summary}")


def create_stubs(ctx: ImportContext, report: FileReport) -> None:
    """Add catalog stubs for the items and users of this load's impressions that lack one."""
    params = {"load_id": ctx.load_id}
    report.stub_items += int(run(ctx.con, "importers/stub_items", params).fetchone()[0])
    report.stub_users += int(run(ctx.con, "importers/stub_users", params).fetchone()[0])


def record_load(
    con: duckdb.DuckDBPyConnection, report: ImportReport, started_at: dt.datetime
) -> None:
    """Write the run's row in ``loads`` with the full report as JSON."""
    run(
        con,
        "importers/record_load",
        {
            "load_id": report.load_id,
            "source_kind": report.kind,
            "source": report.source,
            "started_at": started_at,
            "finished_at": utcnow(),
            "report": json.dumps(report.to_dict(), default=str),
        },
    )


def utcnow() -> dt.datetime:
    """The current time as a naive UTC datetime (the warehouse's TIMESTAMP convention)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def skipped(path: Path, reason: str) -> FileReport:
    """A report entry for a file that is not imported."""
    return FileReport(file=str(path), table=None, status="skipped", notes=[reason])


def list_files(src: Path) -> list[Path]:
    """The regular files of ``src`` (a directory, non-recursive, sorted) or ``[src]``."""
    if not src.exists():
        raise FileNotFoundError(f"import source {src} does not exist")
    if src.is_file():
        return [src]
    return sorted(p for p in src.iterdir() if p.is_file() and not p.name.startswith("."))
