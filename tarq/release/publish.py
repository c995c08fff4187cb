"""Versioned, atomic publication of the ready-to-serve semantic-ID table.

``tarq publish --db PATH --ids DIR`` runs :func:`publish`:

1. **write** — the ids file of :func:`tarq.ids.semantic_ids.assign_ids` becomes a new table
   ``semantic_ids_v<N>`` (item_id, code_0 … code_{m-1}, v_item FLOAT[d], version, model name
   and version, run date, published_at), registered as *staged*, in one transaction;
2. **check** — row count = catalog size, every catalog item present once and no other, no
   null codes, codes within [0, K), every vector of width d and finite. A failed check drops
   the table, marks the attempt *rejected* and publishes nothing;
3. **export** — the version to ``<export_dir>/semantic_ids_v<N>.parquet`` with a manifest
   (row count, sha256, model URI), each written to a temporary name and renamed;
4. **switch** — in ONE DuckDB transaction: the version becomes *published*, the pointer
   ``serving_state`` names it and the view ``serving_item_ids`` selects from its table.
   Readers see the old version or the new one, never a mix;
5. **prune** — published versions beyond the newest ``keep`` lose their tables (*pruned*).

A publication is idempotent per (model name, model version, run date): publishing the same
one again returns the existing version. An attempt that stopped between writing and
switching (a crash) leaves the previous version served; the next run abandons the staged
table and publishes once. ``TARQ_PUBLISH_CRASH=before_switch`` injects such a crash (tests,
drills). :func:`rollback` serves an older kept version again.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq

from tarq.dates import parse_date
from tarq.ids.semantic_ids import HEALTH_JSON, IDS_FILE, META_KEY, file_sha256
from tarq.runtime.drills import crash_point
from tarq.store import sqlfiles
from tarq.store.warehouse import open_db

CRASH_ENV = "TARQ_PUBLISH_CRASH"
VIEW = "serving_item_ids"


class PublishError(ValueError):
    """Publication refused: a failed check, inconsistent inputs or nothing to roll back to."""


@dataclass(frozen=True)
class Publication:
    """The record of one :func:`publish` call: a new version, or the one already published
    under the same (model name, model version, run date) key (``created`` False).

    Attributes:
        version: the publication version N (table ``semantic_ids_v<N>``).
        created: True when this call wrote the version; False when the key was already
            published (nothing written, ``checks`` and ``pruned`` empty).
        served: whether ``version`` is the served one (always True for a new version; an
            earlier one may have been rolled back since).
        previous: the version served when the call started (None: nothing was served).
        table: the version's DuckDB table.
        checks: the pre-publication checks, one ``{"name", "ok", "detail"}`` each
            (:func:`check_version`; empty when not created).
        export_path: the version's Parquet export (as recorded in the registry).
        manifest_path: the export's manifest file; None when not created.
        manifest: the manifest (version, table, file, rows, sha256, bytes, model name,
            version and URI, run date, m, K, dim, ids sha256, published_at, churn,
            collision_rate); None when not created.
        pruned: versions whose tables this call dropped (older than the ``keep`` newest).
        status: the registry status of the already-published version (``published``,
            ``pruned`` …); None for a new version (it is published and served).

    ``to_dict()`` gives the keys each case has always returned: a new version without
    ``status``, an already-published one without ``manifest_path`` and ``manifest``.
    """

    version: int
    created: bool
    served: bool
    previous: int | None
    table: str
    checks: list[dict[str, Any]]
    export_path: str | None
    manifest_path: str | None
    manifest: dict[str, Any] | None
    pruned: list[int]
    status: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the CLI's output, the daily run's ``summary.json``)."""
        out = asdict(self)
        if self.created:
            del out["status"]
            return out
        return {
            k: out[k]
            for k in (
                "version",
                "created",
                "served",
                "previous",
                "table",
                "checks",
                "export_path",
                "status",
                "pruned",
            )
        }


def table_name(version: int) -> str:
    """The table holding publication ``version``."""
    return f"semantic_ids_v{int(version)}"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    sqlfiles.run(con, "publish/create_tables")


def _rows(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def _served(con: duckdb.DuckDBPyConnection) -> int | None:
    rows = sqlfiles.run(con, "publish/served").fetchall()
    return int(rows[0][0]) if rows else None


def _ids_meta(ids_path: Path) -> dict[str, Any]:
    raw = (pq.read_schema(ids_path).metadata or {}).get(META_KEY)
    if not raw:
        raise PublishError(f"{ids_path}: no tarq metadata; write it with `tarq assign-ids`")
    meta = json.loads(raw)
    for key in ("m", "K", "d", "model_name", "model_sha256"):
        if key not in meta:
            raise PublishError(f"{ids_path}: metadata lacks {key!r}")
    return meta


def check_version(
    con: duckdb.DuckDBPyConnection, table: str, k: int, dim: int, m: int
) -> list[dict[str, Any]]:
    """Run the pre-publication checks on a written version table.

    Returns one ``{"name", "ok", "detail"}`` per check.
    """
    s = _rows(sqlfiles.run(con, "publish/check_version", {"dim": dim}, table=table))[0]
    checks = []

    def add(name: str, ok: bool, detail: str) -> None:
        checks.append({"name": name, "ok": bool(ok), "detail": detail})

    add(
        "row_count",
        s["n_rows"] == s["catalog_size"] and s["catalog_size"] > 0,
        f"{s['n_rows']:,} rows for a catalog of {s['catalog_size']:,} items",
    )
    add(
        "one_row_per_item",
        s["n_distinct"] == s["n_rows"] and s["null_item_ids"] == 0,
        f"{s['n_rows'] - s['n_distinct']:,} duplicate rows, {s['null_item_ids']} null ids",
    )
    add(
        "catalog_coverage",
        s["missing_items"] == 0 and s["unknown_items"] == 0,
        f"{s['missing_items']:,} catalog items missing, {s['unknown_items']:,} rows for items "
        "not in the catalog",
    )
    add(
        "vectors",
        s["bad_vectors"] == 0 and s["nonfinite_vectors"] == 0,
        f"{s['bad_vectors']:,} null or not of width {dim}, {s['nonfinite_vectors']:,} non-finite",
    )
    cur = sqlfiles.run(con, "publish/check_codes", table=table)
    names = [d[0] for d in cur.description]
    row = cur.fetchall()[0]
    # The statement returns count(code_j)…, min(code_j)…, max(code_j)… in column order.
    n_cols = len(names) // 3
    cols = names[:n_cols]
    stats = {c: (row[i], row[n_cols + i], row[2 * n_cols + i]) for i, c in enumerate(cols)}
    n_rows = s["n_rows"]
    nulls, out_of_range = 0, 0
    expected = [f"code_{j}" for j in range(m)]
    add(
        "code_columns",
        sorted(cols) == sorted(expected),
        f"code columns {cols}, expected code_0..code_{m - 1}",
    )
    for col in expected:
        if col not in stats:
            continue
        cnt, lo, hi = stats[col]
        nulls += n_rows - int(cnt)
        if lo is not None and (lo < 0 or hi >= k):
            out_of_range += 1
    add("no_null_codes", nulls == 0, f"{nulls:,} null codes")
    add(
        "codes_in_range",
        out_of_range == 0,
        f"{out_of_range} code columns with values outside [0, {k})",
    )
    return checks


def publish(
    db_path: Path,
    ids_dir: Path,
    model_name: str = "tarq",
    model_version: str = "",
    run_date: dt.date | str | None = None,
    model_uri: str = "",
    keep: int = 5,
    export_dir: Path | None = None,
) -> Publication:
    """Publish ``ids_dir/ids.parquet`` as the served semantic-ID table (see the module doc).

    Args:
        db_path: the DuckDB warehouse.
        ids_dir: output folder of ``tarq assign-ids`` (``ids.parquet``, ``health.json``).
        model_name: registered model name recorded with the version.
        model_version: registry version of the model; empty: ``sha-<model.pt sha256[:12]>``.
        run_date: the run date (``YYYY-MM-DD`` or a date); None: today (UTC).
        model_uri: e.g. ``models:/tarq/7``, recorded in the registry and the manifest.
        keep: published versions whose tables are kept for rollback (≥ 1).
        export_dir: where the Parquet export and manifest go; None: ``<db dir>/published``.

    Returns:
        The :class:`Publication`; ``created`` is False when the same (model name, model
        version, run date) was already published.

    Raises:
        PublishError: failed checks (nothing published), a failed assignment report, or the
            same publication key with different contents.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    ids_path, health = _read_assignment(Path(ids_dir))
    meta = _ids_meta(ids_path)
    model_version = model_version or f"sha-{meta['model_sha256'][:12]}"
    day = dt.datetime.now(dt.UTC).date() if run_date is None else parse_date(run_date)
    key = {"model_name": model_name, "model_version": model_version, "run_date": day}
    ids_sha = file_sha256(ids_path)
    out_dir = Path(export_dir) if export_dir is not None else Path(db_path).parent / "published"

    with open_db(db_path) as con:
        _ensure_tables(con)
        existing = _rows(sqlfiles.run(con, "publish/find_publication", key))
        served = _served(con)
        if existing:
            return _already_published(existing[0], served, key, ids_sha)
        _abandon_staged(con)
        version = int(sqlfiles.run(con, "publish/next_version").fetchall()[0][0])
        table = table_name(version)
        now = _now()
        _write_version(con, key, version, table, ids_path, ids_sha, meta, model_uri, now)
        checks = _checked_or_rejected(
            con, version, table, int(meta["K"]), int(meta["d"]), int(meta["m"])
        )
        manifest_fields = {
            **key,
            "run_date": str(day),
            "model_uri": model_uri,
            "model_sha256": meta["model_sha256"],
            "m": int(meta["m"]),
            "K": int(meta["K"]),
            "dim": int(meta["d"]),
            "ids_sha256": ids_sha,
            "published_at": now.isoformat() + "Z",
            # How far this table moved the IDs against the one it replaces.
            "churn": health.get("churn"),
            "collision_rate": health.get("collision_rate"),
            "collision_rate_distinct_inputs": health.get("collision_rate_distinct_inputs"),
        }
        export_path, manifest_path, manifest = _export(
            con, out_dir, version, table, manifest_fields
        )
        sqlfiles.run(
            con,
            "publish/set_export",
            {"version": version, "export_path": str(export_path), "manifest": json.dumps(manifest)},
        )
        crash_point(CRASH_ENV, "before_switch")
        _switch(con, version, table, mark_published=True)
        pruned = _prune(con, keep)
    return Publication(
        version=version,
        created=True,
        served=True,
        previous=served,
        table=table,
        checks=checks,
        export_path=str(export_path),
        manifest_path=str(manifest_path),
        manifest=manifest,
        pruned=pruned,
    )


def _already_published(
    row: dict[str, Any], served: int | None, key: dict[str, Any], ids_sha: str
) -> Publication:
    """The publication of a key published before (idempotent), if it holds the same IDs."""
    if row["ids_sha256"] != ids_sha:
        raise PublishError(
            f"{key['model_name']} {key['model_version']} for {key['run_date']} is already "
            f"published as version {row['version']} with different IDs (sha256 "
            f"{row['ids_sha256'][:12]} vs {ids_sha[:12]}); publish under a new model_version"
        )
    return Publication(
        version=int(row["version"]),
        created=False,
        served=served == row["version"],
        previous=served,
        table=row["table_name"],
        checks=[],
        export_path=row["export_path"],
        manifest_path=None,
        manifest=None,
        pruned=[],
        status=row["status"],
    )


def _write_version(
    con: duckdb.DuckDBPyConnection,
    key: dict[str, Any],
    version: int,
    table: str,
    ids_path: Path,
    ids_sha: str,
    meta: dict[str, Any],
    model_uri: str,
    now: dt.datetime,
) -> None:
    """Register ``version`` (status staged) and write its table from the ids file, in one
    transaction."""
    con.begin()
    sqlfiles.run(
        con,
        "publish/register",
        {
            **key,
            "version": version,
            "table_name": table,
            "model_uri": model_uri,
            "model_sha256": meta["model_sha256"],
            "ids_sha256": ids_sha,
            "n_items": pq.ParquetFile(ids_path).metadata.num_rows,
            "m": int(meta["m"]),
            "k": int(meta["K"]),
            "dim": int(meta["d"]),
            "created_at": now,
        },
    )
    sqlfiles.run(
        con,
        "publish/write_version",
        {**key, "version": version, "published_at": now, "path": str(ids_path)},
        table=table,
    )
    con.commit()


def _read_assignment(ids_dir: Path) -> tuple[Path, dict[str, Any]]:
    """(the ids file, its health report or {}); refuses a missing file or a failed report."""
    ids_path = ids_dir / IDS_FILE
    if not ids_path.is_file():
        raise FileNotFoundError(
            f"{ids_path} not found: run `tarq assign-ids` first "
            "(it writes no ids file when its checks fail)"
        )
    health_path = ids_dir / HEALTH_JSON
    if not health_path.is_file():
        return ids_path, {}
    health = json.loads(health_path.read_text(encoding="utf-8"))
    if not health.get("ok", False):
        raise PublishError(f"{health_path} reports a failed assignment; not publishing")
    return ids_path, health


def _abandon_staged(con: duckdb.DuckDBPyConnection) -> None:
    """Clean up after an attempt that stopped between writing and switching: its table and
    export removed, its registry row marked ``abandoned``."""
    for stale in _rows(sqlfiles.run(con, "publish/staged_versions")):
        if stale["export_path"]:
            exported = Path(stale["export_path"])
            exported.unlink(missing_ok=True)
            exported.with_name(f"{stale['table_name']}.manifest.json").unlink(missing_ok=True)
        con.begin()
        sqlfiles.run(con, "publish/drop_version", table=stale["table_name"])
        sqlfiles.run(
            con,
            "publish/set_status",
            {
                "version": stale["version"],
                "status": "abandoned",
                "note": "stopped between writing and switching; cleaned up by a later run",
            },
        )
        con.commit()


def _checked_or_rejected(
    con: duckdb.DuckDBPyConnection, version: int, table: str, k: int, dim: int, m: int
) -> list[dict[str, Any]]:
    """The written version's checks; on a failure its table is dropped, its registry row
    marked ``rejected`` and PublishError raised (nothing published)."""
    checks = check_version(con, table, k, dim, m)
    failed = [c for c in checks if not c["ok"]]
    if failed:
        con.begin()
        sqlfiles.run(con, "publish/drop_version", table=table)
        note = "; ".join(f"{c['name']}: {c['detail']}" for c in failed)
        sqlfiles.run(
            con, "publish/set_status", {"version": version, "status": "rejected", "note": note}
        )
        con.commit()
        raise PublishError(f"version {version} failed its checks, nothing published ({note})")
    return checks


def _switch(con: duckdb.DuckDBPyConnection, version: int, table: str, mark_published: bool) -> None:
    """Serve ``version``: registry status, pointer and view in ONE transaction."""
    now = _now()
    con.begin()
    try:
        if mark_published:
            sqlfiles.run(con, "publish/mark_published", {"version": version, "published_at": now})
        sqlfiles.run(con, "publish/set_served", {"version": version, "switched_at": now})
        sqlfiles.run(con, "publish/served_view", table=table)
        crash_point(CRASH_ENV, "in_switch")
        con.commit()
    except BaseException:
        con.rollback()
        raise


def _prune(con: duckdb.DuckDBPyConnection, keep: int) -> list[int]:
    pruned = []
    for row in _rows(sqlfiles.run(con, "publish/to_prune", {"keep": keep})):
        con.begin()
        sqlfiles.run(con, "publish/drop_version", table=row["table_name"])
        sqlfiles.run(
            con,
            "publish/set_status",
            {
                "version": row["version"],
                "status": "pruned",
                "note": f"older than the {keep} kept versions",
            },
        )
        con.commit()
        pruned.append(int(row["version"]))
    return pruned


def _export(
    con: duckdb.DuckDBPyConnection, out_dir: Path, version: int, table: str, info: dict[str, Any]
) -> tuple[Path, Path, dict[str, Any]]:
    """Write the version's Parquet export and manifest (temporary names, then renamed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{table}.parquet"
    tmp = out_dir / f".{table}.parquet.tmp"
    tmp.unlink(missing_ok=True)
    sqlfiles.run(con, "publish/export", {"path": str(tmp)}, table=table)
    rows = pq.ParquetFile(tmp).metadata.num_rows
    manifest = {
        "version": version,
        "table": table,
        "file": path.name,
        "rows": rows,
        "sha256": file_sha256(tmp),
        "bytes": tmp.stat().st_size,
        **info,
    }
    tmp.replace(path)
    manifest_path = out_dir / f"{table}.manifest.json"
    tmp_m = out_dir / f".{table}.manifest.json.tmp"
    tmp_m.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    tmp_m.replace(manifest_path)
    return path, manifest_path, manifest


def rollback(db_path: Path, to_version: int | None = None) -> dict[str, Any]:
    """Serve an older kept version again (one transaction, like a publication's switch).

    Args:
        db_path: the DuckDB warehouse.
        to_version: the version to serve; None: the newest published version older than
            the served one.

    Returns:
        ``{"from_version", "to_version", "table"}``.

    Raises:
        PublishError: nothing is served, or the target is not a kept published version.
    """
    with open_db(db_path) as con:
        _ensure_tables(con)
        current = _served(con)
        if current is None:
            raise PublishError("nothing is published yet: there is no version to roll back from")
        kept = {
            int(r["version"]): r
            for r in _rows(sqlfiles.run(con, "publish/list_versions"))
            if r["status"] == "published"
        }
        if to_version is None:
            older = [v for v in kept if v < current]
            if not older:
                raise PublishError(f"version {current} is served and no older version is kept")
            to_version = max(older)
        if to_version not in kept:
            raise PublishError(
                f"version {to_version} cannot be served: kept published versions are {sorted(kept)}"
            )
        table = kept[to_version]["table_name"]
        if to_version != current:
            _switch(con, to_version, table, mark_published=False)
    return {"from_version": current, "to_version": int(to_version), "table": table}


def served_version(db_path: Path) -> int | None:
    """The served publication version, or None when nothing was published yet."""
    path = Path(db_path)
    if not path.exists():
        return None
    with open_db(path, read_only=True) as con:
        exists = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'serving_state'"
        ).fetchall()[0][0]
        return _served(con) if exists else None


def list_versions(db_path: Path) -> list[dict[str, Any]]:
    """Every publication attempt (registry rows, newest first) with a ``served`` flag."""
    with open_db(db_path) as con:
        _ensure_tables(con)
        served = _served(con)
        rows = _rows(sqlfiles.run(con, "publish/list_versions"))
    for r in rows:
        r["served"] = r["version"] == served
    return rows
