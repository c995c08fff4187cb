"""Semantic IDs for the whole item catalog, assigned with FAISS and checked against torch.

``tarq assign-ids --db PATH --model DIR --out DIR`` runs :func:`assign_ids`: every item of the
``items`` table (items never shown and items added after training included: ids the training
vocabulary has not seen map to the OOV embedding, their category/brand/price may still be
known) goes item features → embedding → encoder → z → greedy residual assignment over the
trained codebooks (paper eq. 7), in bounded-memory chunks.

The assignment is done with FAISS — one ``IndexFlatL2`` per level searched with the level's
residuals, which is exactly greedy residual quantization (``faiss.ResidualQuantizer`` with
``max_beam_size=1`` is the same thing; its default beam search gives different codes) — and
cross-checked against the model's own torch assignment on the same z. An item whose codes
differ is a *tie* when, at the first level where they part, the two chosen entries are at the
same distance from the (shared) residual within float tolerance; ties are listed in the report
and the FAISS codes are kept. Any other disagreement raises :class:`SemanticIdError`.

Output (``out_dir``)::

    ids.parquet    item_id, code_0 … code_{m-1} (int16), v_item (FixedSizeList<float32>[d]);
                   schema metadata ``tarq`` = JSON (m, K, d, model name, model sha256)
    health.json    the health report (:class:`IdHealth`, returned)
    health.txt     the same as a short table for people

``ids.parquet`` is written only when every check passes, so a failed assignment can never
be published; ``health.json`` is always written so the failure can be read.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from tarq import metrics
from tarq.data.features import OOV, FeatureLayout, Vocab
from tarq.data.loader import encode_fields
from tarq.defaults import MAX_COLLISION_RATE
from tarq.ids.churn import IdChurn, ItemCodes, id_churn, served_codes
from tarq.ids.id_resolution import Resolution, resolve_collisions
from tarq.runtime.parallel import Mapper
from tarq.store import sqlfiles
from tarq.store.warehouse import open_db, open_for_job

IDS_FILE = "ids.parquet"
HEALTH_JSON = "health.json"
HEALTH_TXT = "health.txt"
META_KEY = b"tarq"
TIE_RTOL = 1e-5
MAX_LISTED = 1000


class SemanticIdError(ValueError):
    """The assignment failed a check: FAISS/torch disagreement beyond ties, or coverage."""


#: The catalog-wide figures of :class:`IdHealth`: None (and not in ``health.json``) when no
#: item was assigned.
CATALOG_FIGURES = (
    "utilization_per_level",
    "utilization_catalog",
    "entropy_bits_per_level",
    "entropy_normalized_per_level",
    "distinct_tuples",
    "collision_rate",
    "largest_collision_group",
    "collision_rate_distinct_inputs",
    "items_identical_inputs",
    "recon_error",
    "recon_error_relative",
)


@dataclass(frozen=True)
class IdHealth:
    """The health report of one semantic-ID assignment (:func:`assign_ids`), also written to
    ``health.json`` (``to_dict()``) and, for people, ``health.txt`` (:func:`health_text`).

    Attributes:
        ok: every check passed (only then is ``ids.parquet`` written).
        checks: one ``{"name", "ok", "detail"}`` per check (``coverage``,
            ``faiss_torch_agreement`` and the optional ``min_utilization``,
            ``max_collision_rate``, ``max_churn``).
        model: what the IDs were made with, as in ids.parquet's metadata: ``m``, ``K``, ``d``,
            ``dz``, ``model_name``, ``model_sha256``.
        catalog_size: items in the ``items`` table.
        items_assigned: rows assigned (one per catalog row read).
        coverage: distinct assigned items / catalog size (0.0 for an empty catalog).
        items_oov_id: items whose id the training vocabulary has not seen (OOV embedding).
        items_price_non_finite: items whose stored price is inf/NaN (unknown price bucket).
        m: codebook levels.
        K: entries per codebook.
        utilization_per_level: (m,) share of each level's K entries used by the catalog.
        utilization_catalog: mean of ``utilization_per_level``.
        entropy_bits_per_level: (m,) entropy of each level's code distribution, in bits.
        entropy_normalized_per_level: (m,) the same divided by log2 K.
        distinct_tuples: distinct (code_0 … code_{m-1}) tuples in the catalog.
        collision_rate: share of items sharing their tuple with another item.
        largest_collision_group: items in the largest group sharing one tuple.
        collision_rate_distinct_inputs: share of items sharing their tuple with an item whose
            encoded inputs differ: the collisions a model could avoid, and what
            ``max_collision_rate`` bounds (:func:`tarq.metrics.collision_rate_distinct`).
        items_identical_inputs: items whose encoded inputs equal another item's (e.g. unseen
            ids with equal category, brand, price bucket and shop): equal tuples by necessity.
        recon_error: mean ‖z − ẑ‖² over the catalog.
        recon_error_relative: Σ‖z − ẑ‖² / Σ‖z‖².
        agreement: FAISS vs torch: ``method``, ``disagreements``, ``ties``, ``failures``,
            ``tie_rtol``, ``ties_listed``, ``failures_listed`` (first MAX_LISTED of each:
            ``item_id``, ``level``, ``faiss_code``, ``torch_code``, ``faiss_dist``,
            ``torch_dist``).
        timing: ``seconds``, ``items_per_s``, ``torch_seconds``, ``faiss_seconds``,
            ``faiss_items_per_s``, ``torch_threads``, ``faiss_threads``, ``chunk_size``,
            ``resolve_seconds`` (collision resolution and the codes' rewrite).
        churn: :meth:`tarq.ids.churn.IdChurn.to_dict` against the served table, None when none is
            served (or it has another m).
        sticky: a sticky assignment (``sticky_margin``): ``against_version``, ``margin``,
            ``items_with_served_code``, ``items_held`` (items whose published tuple is not
            their nearest-entry tuple) and ``held_per_level``; None for plain codes.
        resolution: what collision resolution did (:meth:`tarq.ids.id_resolution.Resolution.to_dict`:
            classes contested and moved, items moved, by depth, unresolved, the squared error
            added); None when it was off. The catalog figures are those of the resolved codes.

    The :data:`CATALOG_FIGURES` (utilization … recon_error_relative) are None when no item
    was assigned; ``to_dict()`` then leaves them out, as ``health.json`` always has.
    """

    ok: bool
    checks: list[dict[str, Any]]
    model: dict[str, Any]
    catalog_size: int
    items_assigned: int
    coverage: float
    items_oov_id: int
    items_price_non_finite: int
    m: int
    K: int
    utilization_per_level: list[float] | None
    utilization_catalog: float | None
    entropy_bits_per_level: list[float] | None
    entropy_normalized_per_level: list[float] | None
    distinct_tuples: int | None
    collision_rate: float | None
    largest_collision_group: int | None
    collision_rate_distinct_inputs: float | None
    items_identical_inputs: int | None
    recon_error: float | None
    recon_error_relative: float | None
    agreement: dict[str, Any]
    timing: dict[str, Any]
    churn: dict[str, Any] | None
    sticky: dict[str, Any] | None = None
    resolution: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The report as written to ``health.json`` (catalog figures only when present)."""
        return {k: v for k, v in asdict(self).items() if not (k in CATALOG_FIGURES and v is None)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IdHealth:
        """A report read back from ``health.json``. Absent catalog figures (an empty catalog)
        become None; keys older reports lack get None (``churn``) or 0
        (``items_price_non_finite``); unknown keys are ignored.

        Raises:
            ValueError: another key is missing (not a health report).
        """
        old: dict[str, Any] = {
            "churn": None,
            "sticky": None,
            "resolution": None,
            "items_price_non_finite": 0,
            **dict.fromkeys(CATALOG_FIGURES),
        }
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in data and n not in old]
        if missing:
            raise ValueError(f"not a semantic-ID health report: no {', '.join(missing)}")
        return cls(**{n: data[n] if n in data else old[n] for n in names})


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_catalog_model(
    model_dir: Path,
) -> tuple[torch.nn.Module, dict[str, Any], FeatureLayout, dict[str, Vocab]]:
    """A trained TARQ model in eval mode, its config, layout and item vocabularies.

    Raises ``ValueError`` when ``model_dir`` holds a model without semantic IDs (a baseline).
    """
    from tarq.model.io import load_trained

    model_dir = Path(model_dir)
    if not (model_dir / "model.pt").is_file():
        raise FileNotFoundError(f"{model_dir} holds no trained model (model.pt missing)")
    model, cfg = load_trained(model_dir)
    if not hasattr(model, "catalog_codes"):
        raise ValueError(
            f"{model_dir} holds a {cfg['model_name']!r} model, which has no semantic IDs; "
            "assign IDs with a TARQ model"
        )
    layout = FeatureLayout.load(model_dir / "layout.json")
    vocabs = {f: Vocab.load(model_dir / "vocab" / f"{f}.parquet") for f in layout.item_fields}
    return model, cfg, layout, vocabs


def faiss_assign(
    z: np.ndarray,
    codebooks: np.ndarray,
    prior: np.ndarray | None = None,
    margin: float = 0.0,
) -> np.ndarray:
    """Greedy residual assignment with one ``faiss.IndexFlatL2`` per level.

    With ``prior`` the sticky rule of :func:`tarq.model.quantizer.sticky_choice` decides
    between FAISS's nearest entry and the prior one, in float32 numpy (the twin of the torch
    quantizer's, checked against it item by item).

    Args:
        z: (N, dz) float32 latents.  codebooks: (m, K, dz) float32.
        prior: (N, m) int64 served codes (−1: none), or None.  margin: the sticky margin.
    Returns:
        codes (N, m) int64.
    """
    r = np.ascontiguousarray(z, dtype=np.float32)
    m, _, dz = codebooks.shape
    codes = np.empty((r.shape[0], m), dtype=np.int64)
    for level in range(m):
        book = np.ascontiguousarray(codebooks[level], dtype=np.float32)
        index = faiss.IndexFlatL2(dz)
        index.add(book)
        _, idx = index.search(r, 1)
        c = idx[:, 0].astype(np.int64)
        if prior is not None:
            c = _sticky_np(r, book, c, prior[:, level], margin)
        codes[:, level] = c
        r = r - book[c]
    return codes


def _sticky_np(
    r: np.ndarray, book: np.ndarray, nearest: np.ndarray, prior: np.ndarray, margin: float
) -> np.ndarray:
    """numpy twin of :func:`tarq.model.quantizer.sticky_choice`: (N, dz), (K, dz), (N,), (N,)."""
    has = prior >= 0
    p = np.where(has, prior, 0)
    if math.isinf(margin):
        return np.where(has, p, nearest)
    d_prior = np.linalg.norm(r - book[p], axis=1)
    d_near = np.linalg.norm(r - book[nearest], axis=1)
    keep = has & (d_prior - d_near <= np.float32(margin) * np.linalg.norm(r, axis=1))
    return np.where(keep, p, nearest)


def residual_at(z: np.ndarray, codebooks: np.ndarray, codes: np.ndarray, level: int) -> np.ndarray:
    """The level-``level`` residual (dz,) of one latent z (dz,) given its codes (m,).

    Subtracts the chosen entries in level order in float32, the same operations as
    :func:`faiss_assign`, so the result is bit-identical to what that level searched with.
    """
    r = np.asarray(z, dtype=np.float32)
    for lv in range(level):
        r = r - codebooks[lv, codes[lv]].astype(np.float32)
    return r


def _tie_or_failure(
    item_id: int,
    level: int,
    r: np.ndarray,
    book: np.ndarray,
    c_faiss: int,
    c_torch: int,
    rtol: float,
    prior: int = -1,
    margin: float = 0.0,
) -> tuple[bool, dict[str, Any]]:
    """Classify one disagreement at its first differing level by exact float64 distances.

    A tie: the two entries are equally near, or (sticky assignment, ``prior`` one of them)
    the nearer is closer than the prior by the margin itself, where float32 rounding decides.
    """
    r64 = r.astype(np.float64)
    ef, et = book[c_faiss].astype(np.float64), book[c_torch].astype(np.float64)
    df, dt_ = float(((r64 - ef) ** 2).sum()), float(((r64 - et) ** 2).sum())
    # Both libraries expand ‖r‖² − 2 r·e + ‖e‖² in float32: its rounding error scales with
    # the norms, not with the (possibly tiny) distance itself.
    scale = float((r64**2).sum() + (ef**2).sum() + (et**2).sum())
    tie = abs(df - dt_) <= rtol * max(scale, 1e-12)
    if not tie and prior in (c_faiss, c_torch) and not math.isinf(margin):
        d_prior, d_other = (math.sqrt(df), math.sqrt(dt_))[:: 1 if prior == c_faiss else -1]
        at = margin * math.sqrt(float((r64**2).sum()))
        tie = abs(d_prior - d_other - at) <= rtol * max(math.sqrt(scale), 1e-12)
    return tie, {
        "item_id": item_id,
        "level": level,
        "faiss_code": c_faiss,
        "torch_code": c_torch,
        "faiss_dist": df,
        "torch_dist": dt_,
    }


def _entropy_bits(codes: np.ndarray, k: int) -> list[float]:
    out = []
    for level in range(codes.shape[1]):
        p = np.bincount(codes[:, level], minlength=k) / codes.shape[0]
        p = p[p > 0]
        out.append(float(-(p * np.log2(p)).sum()))
    return out


def assign_ids(
    db_path: Path,
    model_dir: Path,
    out_dir: Path,
    chunk_size: int = 65536,
    progress: bool | None = None,
    tie_rtol: float = TIE_RTOL,
    min_utilization: float | None = None,
    max_collision_rate: float | None = MAX_COLLISION_RATE,
    max_churn: float | None = None,
    compare_served: bool = True,
    mapper: Mapper | None = None,
    threads: int | None = None,
    sticky_margin: float | None = None,
    resolve: bool = True,
) -> IdHealth:
    """Assign semantic IDs to every catalog item and write ``ids.parquet`` + the health report.

    Args:
        db_path: the DuckDB warehouse (opened read-only).
        model_dir: a trained TARQ model directory (``tarq train`` output).
        out_dir: where ``ids.parquet``, ``health.json`` and ``health.txt`` go.
        chunk_size: items per chunk; memory is bounded by one chunk of features and vectors
            plus the (N, m) int16 codes kept for the catalog-wide health figures.
        progress: show a tqdm bar (None: when stderr is a terminal).
        tie_rtol: tolerance of an exact-distance tie, relative to ‖r‖² + ‖e_a‖² + ‖e_b‖².
        min_utilization: optional floor on every level's catalog utilization (fails below).
        max_collision_rate: ceiling on the tuple collision rate (fails above; None: no
            ceiling). The default refuses a collapsed assignment (most items sharing their
            tuple with another) while allowing the honest collisions of items the model
            cannot tell apart (same category, brand and price bucket, id unseen in training).
        max_churn: ceiling on the share of items whose tuple changed against the served
            table (fails above; None: no ceiling). The daily job sets it on warm runs only:
            a cold retrain re-indexes the catalog by design.
        compare_served: compute the churn against the served table (``churn`` in the
            report) when the warehouse serves one.
        mapper: when given, the catalog is cut into chunks of ``chunk_size`` items in item_id
            order, each assigned by a job (:class:`CatalogChunk`, :func:`assign_chunk`) that
            the mapper may run in other processes or machines (they read the warehouse and
            the model, and write beside ``out_dir``); the result is the same file, byte for
            byte. None (default): one pass over one snapshot of the warehouse, here.
        threads: torch threads of each mapped job (None: torch's default there).
        sticky_margin: a warm day's sticky IDs: an item served with a tuple of this model's
            shape keeps each level's served entry unless the nearest entry is closer by more
            than ``sticky_margin`` × ‖r_l‖ (:func:`tarq.model.quantizer.sticky_choice`); new
            items get plain codes. None (default): plain nearest-entry codes. Only for a model
            that continues the served one (its codebooks): a cold model's entries are new.
        resolve: give items with distinct inputs that share a greedy tuple the nearest free
            tuple that differs in the last 1–3 levels (:mod:`tarq.ids.id_resolution`; on a warm
            sticky day a moved item takes back its served tuple first). False: the plain
            greedy (or sticky) codes, collisions and all.

    Returns:
        The :class:`IdHealth` report (``to_dict()`` is ``health.json``): ``ok``, ``checks``,
        coverage, per-level utilization and entropy, collisions, reconstruction error,
        FAISS/torch agreement (disagreements, ties listed), timings and churn.

    Raises:
        SemanticIdError: a failed check (the report is written first; ``ids.parquet`` is not).
    """
    t_start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ids_path = out / IDS_FILE
    # A stale ids.parquet next to a new, failing report could be published by mistake.
    ids_path.unlink(missing_ok=True)
    tmp_path = out / (IDS_FILE + ".tmp")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")

    model, cfg, layout, vocabs = load_catalog_model(Path(model_dir))
    codebooks = model.codebooks.float().cpu().numpy()  # (m, K, dz)
    meta = _ids_meta(model, cfg, codebooks, Path(model_dir))
    m, k, d = meta["m"], meta["K"], meta["d"]
    job = _AssignJob(
        db_path=Path(db_path),
        model_dir=Path(model_dir),
        tmp_path=tmp_path,
        schema=_ids_schema(m, d, meta),
        model_parts=(model, layout, vocabs),
        codebooks=codebooks,
        chunk_size=chunk_size,
        show=sys.stderr.isatty() if progress is None else progress,
        compare_served=compare_served,
        mapper=mapper,
        threads=threads,
        tie_rtol=tie_rtol,
        resolve=resolve,
    )
    ladder = sticky_ladder(sticky_margin, max_churn)
    escalated: list[dict[str, Any]] = []
    for margin in ladder:
        run = _assign_pass(job, margin)
        churn = run.churn
        fits = max_churn is None or churn is None or churn.tuple_churn <= max_churn
        if run.acc.sticky is None or fits:
            break
        if margin != ladder[-1]:
            escalated.append({"margin": _json_margin(margin), "tuple_churn": churn.tuple_churn})
    acc, resolution, resolve_s = run.acc, run.resolution, run.resolve_s
    if resolution is not None and resolution.classes_moved:
        t_resolve = time.perf_counter()
        _rewrite_codes(tmp_path, job.schema, run.codes)
        acc.sq_err_sum += resolution.sq_err_added
        resolve_s += time.perf_counter() - t_resolve
    n, n_unique = int(run.item_ids.size), int(np.unique(run.item_ids).size)
    timing = acc.timing(time.perf_counter() - t_start, n, chunk_size)
    timing["resolve_seconds"] = round(resolve_s, 3)
    sticky = acc.sticky_report()
    if sticky is not None:
        sticky["escalated_from"] = escalated
    report = IdHealth(
        ok=True,
        checks=[],
        model=meta,
        catalog_size=run.catalog_size,
        items_assigned=n,
        coverage=n_unique / run.catalog_size if run.catalog_size else 0.0,
        items_oov_id=acc.n_oov_items,
        items_price_non_finite=run.bad_prices,
        m=m,
        K=k,
        **(_catalog_figures(run.codes, k, acc) if n else dict.fromkeys(CATALOG_FIGURES)),
        agreement=acc.agreement(),
        timing=timing,
        churn=churn.to_dict() if churn is not None else None,
        sticky=sticky,
        resolution=resolution.to_dict() if resolution is not None else None,
    )
    checks = _health_checks(report, n_unique, churn, min_utilization, max_collision_rate, max_churn)
    report = replace(report, checks=checks, ok=all(c["ok"] for c in checks))
    _write_report(out, report, tmp_path, ids_path)
    return report


def _write_report(out: Path, report: IdHealth, tmp_path: Path, ids_path: Path) -> None:
    """health.json and health.txt always; ids.parquet only when every check passed.

    Raises:
        SemanticIdError: a check failed (the temporary ids file is removed).
    """
    (out / HEALTH_JSON).write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")
    (out / HEALTH_TXT).write_text(health_text(report), encoding="utf-8")
    if not report.ok:
        tmp_path.unlink(missing_ok=True)
        failed = "; ".join(f"{c['name']}: {c['detail']}" for c in report.checks if not c["ok"])
        raise SemanticIdError(
            f"semantic-ID assignment failed its checks ({failed}); see {out / HEALTH_JSON}"
        )
    tmp_path.replace(ids_path)


@dataclass(frozen=True)
class _AssignJob:
    """What every pass of :func:`assign_ids` over the catalog shares (see its arguments)."""

    db_path: Path
    model_dir: Path
    tmp_path: Path
    schema: pa.Schema
    model_parts: tuple[torch.nn.Module, FeatureLayout, dict[str, Vocab]]
    codebooks: np.ndarray
    chunk_size: int
    show: bool
    compare_served: bool
    mapper: Mapper | None
    threads: int | None
    tie_rtol: float
    resolve: bool


@dataclass
class _Pass:
    """One pass over the catalog at one sticky margin: the codes written to the temporary
    file (resolved when asked; the file's code columns are rewritten only for the pass kept)
    and what the report needs."""

    acc: _Assignment
    catalog_size: int
    bad_prices: int
    item_ids: np.ndarray
    codes: np.ndarray
    resolution: Resolution | None
    resolve_s: float
    churn: IdChurn | None


def _assign_pass(job: _AssignJob, margin: float | None) -> _Pass:
    """Assign the whole catalog at one sticky ``margin`` (None: plain codes), resolve its
    collisions (``job.resolve``) and measure the churn against the served table."""
    acc = _Assignment(job.codebooks, job.tie_rtol)
    if job.mapper is None:
        catalog_size, bad_prices, served = _assign_catalog(
            job.db_path,
            job.tmp_path,
            job.schema,
            acc,
            job.model_parts,
            job.chunk_size,
            job.show,
            job.compare_served,
            margin,
        )
    else:
        catalog_size, bad_prices, served = _assign_catalog_mapped(
            job.db_path,
            job.model_dir,
            job.tmp_path,
            job.schema,
            acc,
            job.chunk_size,
            job.compare_served,
            job.mapper,
            job.threads,
            margin,
        )
    item_ids, codes = acc.catalog()
    resolution, t_resolve = None, time.perf_counter()
    if job.resolve and item_ids.size:
        resolution = _resolve(job.model_parts[0], acc, item_ids, codes)
        codes = resolution.codes.astype(np.int16)
    resolve_s = time.perf_counter() - t_resolve
    churn = None
    if served is not None and served[2].shape[1] == codes.shape[1]:
        churn = id_churn(item_ids, codes, served[1], served[2], against_version=served[0])
    return _Pass(acc, catalog_size, bad_prices, item_ids, codes, resolution, resolve_s, churn)


def _resolve(
    model: torch.nn.Module, acc: _Assignment, item_ids: np.ndarray, codes: np.ndarray
) -> Resolution:
    """:func:`tarq.ids.id_resolution.resolve_collisions` of the catalog's (N, m) codes, the
    latents of contested items recomputed from their inputs, a sticky day's served codes
    as the prior."""

    def latent(feats: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            parts = [
                model.latent(torch.from_numpy(feats[i : i + 65536])).float().numpy()
                for i in range(0, len(feats), 65536)
            ]
        return np.concatenate(parts)

    prior = acc.sticky.lookup(item_ids) if acc.sticky is not None else None
    return resolve_collisions(codes, acc.inputs(), latent, acc.codebooks, prior)


def _rewrite_codes(path: Path, schema: pa.Schema, codes: np.ndarray) -> None:
    """Replace the code columns of ``path`` (an ids.parquet being written) by ``codes``
    (N, m), rows in file order, keeping its row groups (the file stays a function of the
    catalog and the model, mapped or not)."""
    src = pq.ParquetFile(path)
    tmp = path.with_name(path.name + ".resolved")
    start = 0
    with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        for g in range(src.num_row_groups):
            t = src.read_row_group(g)
            rows = codes[start : start + t.num_rows]
            for j in range(codes.shape[1]):
                t = t.set_column(1 + j, f"code_{j}", pa.array(rows[:, j].astype(np.int16)))
            writer.write_table(t.replace_schema_metadata(schema.metadata))
            start += t.num_rows
    src.close()
    if start != codes.shape[0]:
        tmp.unlink(missing_ok=True)
        raise SemanticIdError(f"{path} holds {start} rows, the assignment {codes.shape[0]}")
    tmp.replace(path)


def sticky_ladder(margin: float | None, max_churn: float | None) -> list[float | None]:
    """The margins a warm assignment tries in turn: ``margin``, then doubled while the churn
    exceeds ``max_churn`` (×2 to ×16), then ∞ (every served item keeps its served tuple).

    A fixed margin only delays the moves: the model drifts a little every day while a held code
    stays, so the share of items whose nearest entry is closer by more than the margin grows
    day after day (measured over seven warm dates, benchmarks/README "Sticky IDs over seven
    dates"), and a day above ``max_churn`` published nothing while its champion, and so the next
    day's parent, stayed put. The ladder moves the items with the largest relative gains first,
    as many as the churn budget allows; every step is the exact per-level rule that FAISS and
    torch are cross-checked on. No margin or no ceiling: ``[margin]``.
    """
    if margin is None or max_churn is None:
        return [margin]
    return [margin * 2**i for i in range(5)] + [math.inf]


def _json_margin(margin: float) -> float | str:
    return "inf" if math.isinf(margin) else margin


def _ids_meta(
    model: torch.nn.Module, cfg: dict[str, Any], codebooks: np.ndarray, model_dir: Path
) -> dict[str, Any]:
    """What ids.parquet's metadata says of the model: m, K, d, dz, its name and weights' sha256.

    No paths: the file's bytes identify the IDs (publication is idempotent on its sha256).
    """
    m, k, dz = codebooks.shape
    if k > np.iinfo(np.int16).max:
        raise ValueError(f"codebook size K={k} does not fit the int16 code columns")
    return {
        "m": m,
        "K": k,
        "d": int(model.config.d_model),
        "dz": dz,
        "model_name": cfg["model_name"],
        "model_sha256": file_sha256(model_dir / "model.pt"),
    }


def _assign_catalog(
    db_path: Path,
    tmp_path: Path,
    schema: pa.Schema,
    acc: _Assignment,
    model_parts: tuple[torch.nn.Module, FeatureLayout, dict[str, Vocab]],
    chunk_size: int,
    show: bool,
    compare_served: bool,
    sticky_margin: float | None,
) -> tuple[int, int, tuple[int, np.ndarray, np.ndarray] | None]:
    """Stream the catalog in chunks through ``acc`` into ``tmp_path`` (removed on failure).

    Returns (catalog size, items with a non-finite price, the served codes or None), all read
    from one snapshot of the warehouse; with ``sticky_margin`` the served codes are each
    chunk's prior (``acc.sticky``).
    """
    model, layout, vocabs = model_parts
    d = schema.field("v_item").type.list_size
    writer = pq.ParquetWriter(tmp_path, schema, compression="zstd")
    try:
        with open_db(db_path, read_only=True) as con:
            con.begin()  # one snapshot for the size, the rows and the served table
            catalog_size = int(sqlfiles.run(con, "semantic_ids/catalog_size").fetchall()[0][0])
            # inf/NaN prices stored before import rejected them: unknown bucket (catalog.sql).
            bad_prices = int(sqlfiles.run(con, "samples/non_finite_prices").fetchall()[0][0])
            served = served_codes(con) if compare_served or sticky_margin is not None else None
            acc.sticky = _sticky_prior(served, sticky_margin, acc.codebooks.shape)
            # A relation streams Arrow batches without the DB-API copy of the whole result.
            reader = con.sql(
                sqlfiles.load_sql("semantic_ids/catalog"), params={"lo": None, "hi": None}
            ).to_arrow_reader(chunk_size)
            with tqdm(
                total=catalog_size,
                desc="semantic IDs",
                unit="item",
                disable=not show,
                file=sys.stderr,
                mininterval=1.0,
            ) as bar:
                for rb in reader:
                    if rb.num_rows == 0:
                        continue
                    item_ids, codes_f, v_np = acc.add(model, rb, layout, vocabs)
                    writer.write_batch(_ids_batch(schema, item_ids, codes_f, v_np, d))
                    bar.update(len(item_ids))
            con.commit()
    except BaseException:
        writer.close()
        tmp_path.unlink(missing_ok=True)
        raise
    writer.close()
    return catalog_size, bad_prices, served


@dataclass(frozen=True)
class CatalogChunk:
    """One chunk of the catalog to assign (:func:`assign_chunk`): the items ``lo`` ..
    ``hi`` (item ids, inclusive), ``rows`` of them when the assignment was planned; a
    picklable job that any process able to read the warehouse and the model can run.

    Attributes:
        db_path: the warehouse (opened read-only).
        model_dir: the trained TARQ model directory.
        part_path: where the job writes its rows of ``ids.parquet``.
        lo: first item id of the chunk.
        hi: last item id of the chunk.
        rows: items in the chunk when it was planned.
        tie_rtol: tolerance of an exact-distance tie (see :func:`assign_ids`).
        threads: torch threads of the job (None: torch's default).
        sticky_margin: stick to the served codes (see :func:`assign_ids`); None: plain.
    """

    db_path: str
    model_dir: str
    part_path: str
    lo: int
    hi: int
    rows: int
    tie_rtol: float = TIE_RTOL
    threads: int | None = None
    sticky_margin: float | None = None

    def __str__(self) -> str:  # the job's name in logs and task runs
        return f"items {self.lo}..{self.hi}"


def assign_chunk(job: CatalogChunk) -> _Assignment:
    """Assign one chunk of the catalog and write its rows to ``job.part_path``.

    Returns:
        The chunk's :class:`_Assignment` (ids, codes, agreement and error sums) to merge.

    Raises:
        SemanticIdError: the chunk no longer holds the items it was planned with (the catalog
            changed while IDs were assigned), or an item's vectors are not finite.
    """
    if job.threads:
        torch.set_num_threads(job.threads)
    model, _, layout, vocabs = load_catalog_model(Path(job.model_dir))
    codebooks = model.codebooks.float().cpu().numpy()
    acc = _Assignment(codebooks, job.tie_rtol)
    with open_for_job(job.db_path) as con:
        if job.sticky_margin is not None:
            acc.sticky = _sticky_prior(served_codes(con), job.sticky_margin, codebooks.shape)
        table = con.sql(
            sqlfiles.load_sql("semantic_ids/catalog"), params={"lo": job.lo, "hi": job.hi}
        ).to_arrow_table()
    if table.num_rows != job.rows:
        raise SemanticIdError(
            f"the catalog changed while IDs were assigned: items {job.lo}..{job.hi} were "
            f"{job.rows} when the assignment started, {table.num_rows} now; assign again"
        )
    item_ids, codes_f, v_np = acc.add(model, table.combine_chunks().to_batches()[0], layout, vocabs)
    schema = _ids_schema(codebooks.shape[0], v_np.shape[1], {})
    pq.write_table(
        pa.Table.from_batches([_ids_batch(schema, item_ids, codes_f, v_np, v_np.shape[1])]),
        job.part_path,
        compression="zstd",
    )
    acc.codebooks = np.zeros((0,), np.float32)  # the caller has them: not sent back
    return acc


def _assign_catalog_mapped(
    db_path: Path,
    model_dir: Path,
    tmp_path: Path,
    schema: pa.Schema,
    acc: _Assignment,
    chunk_size: int,
    compare_served: bool,
    mapper: Mapper,
    threads: int | None,
    sticky_margin: float | None,
) -> tuple[int, int, tuple[int, np.ndarray, np.ndarray] | None]:
    """:func:`_assign_catalog` with the chunks as jobs of ``mapper``; their parts are merged
    into ``tmp_path`` in item_id order (the same row groups as the single pass).

    The plan's read-only connection stays open while the jobs run: no other process can
    write the warehouse meanwhile (DuckDB: one writer or many readers), so every chunk is
    read from the catalog the plan saw (each job still checks its chunk's size).
    """
    with open_db(db_path, read_only=True) as con:
        con.begin()
        catalog_size = int(sqlfiles.run(con, "semantic_ids/catalog_size").fetchall()[0][0])
        bad_prices = int(sqlfiles.run(con, "samples/non_finite_prices").fetchall()[0][0])
        served = served_codes(con) if compare_served or sticky_margin is not None else None
        acc.sticky = _sticky_prior(served, sticky_margin, acc.codebooks.shape)
        bounds = sqlfiles.run(
            con, "semantic_ids/chunk_bounds", {"chunk_size": chunk_size}
        ).fetchall()
        con.commit()
        _map_chunks(
            db_path, model_dir, tmp_path, schema, acc, bounds, mapper, threads, sticky_margin
        )
    return catalog_size, bad_prices, served


def _map_chunks(
    db_path: Path,
    model_dir: Path,
    tmp_path: Path,
    schema: pa.Schema,
    acc: _Assignment,
    bounds: list[tuple[Any, ...]],
    mapper: Mapper,
    threads: int | None,
    sticky_margin: float | None,
) -> None:
    """Run one :func:`assign_chunk` job per chunk ``(lo, hi, n)`` of ``bounds``; merge."""
    parts = tmp_path.parent / f".parts-{tmp_path.stem}-{time.time_ns()}"
    parts.mkdir()
    try:
        jobs = [
            CatalogChunk(
                db_path=str(Path(db_path).absolute()),
                model_dir=str(model_dir.absolute()),
                part_path=str((parts / f"part-{k:05d}.parquet").absolute()),
                lo=int(lo),
                hi=int(hi),
                rows=int(n),
                tie_rtol=acc.tie_rtol,
                threads=threads,
                sticky_margin=None if acc.sticky is None else sticky_margin,
            )
            for k, (lo, hi, n) in enumerate(bounds)
        ]
        results = mapper(assign_chunk, jobs, name="assign-chunk")
        with pq.ParquetWriter(tmp_path, schema, compression="zstd") as writer:
            for job, part in zip(jobs, results, strict=True):
                acc.merge(part)
                # One write per part, as the single pass writes one batch per chunk: the same
                # row groups (read_table's batches are of another size).
                writer.write_table(pq.read_table(job.part_path))
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(parts, ignore_errors=True)


def _ids_schema(m: int, d: int, meta: dict[str, Any]) -> pa.Schema:
    """ids.parquet's schema: item_id, code_0 … code_{m-1} (int16), v_item [d], meta as JSON."""
    return pa.schema(
        [
            ("item_id", pa.int64()),
            *[(f"code_{j}", pa.int16()) for j in range(m)],
            ("v_item", pa.list_(pa.float32(), d)),
        ],
        metadata={META_KEY: json.dumps(meta).encode()},
    )


def _ids_batch(
    schema: pa.Schema, item_ids: np.ndarray, codes: np.ndarray, v: np.ndarray, d: int
) -> pa.RecordBatch:
    """One chunk of ids.parquet: ids (n,), codes (n, m), item vectors (n, d)."""
    arrays = [pa.array(item_ids)]
    arrays += [pa.array(codes[:, j].astype(np.int16)) for j in range(codes.shape[1])]
    arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(v).ravel()), d))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _sticky_prior(
    served: tuple[int, np.ndarray, np.ndarray] | None,
    margin: float | None,
    book_shape: tuple[int, ...],
) -> StickyPrior | None:
    """The prior of a sticky assignment, or None: no margin, nothing served, or a served
    table of another shape (m levels, codes under K) that this model's codes cannot continue."""
    if margin is None or served is None:
        return None
    m, k = book_shape[0], book_shape[1]
    codes = served[2]
    if codes.shape[1] != m or codes.size == 0 or codes.min() < 0 or codes.max() >= k:
        return None
    return StickyPrior.from_served(served, margin)


@dataclass(frozen=True)
class StickyPrior:
    """The served codes a warm day's assignment sticks to (:func:`assign_ids`).

    Attributes:
        version: the served table's version.
        served: the served codes by item id.
        margin: a level keeps its served entry unless the nearest is closer by more than
            ``margin`` × ‖r_l‖ (:func:`tarq.model.quantizer.sticky_choice`).
    """

    version: int
    served: ItemCodes
    margin: float

    @classmethod
    def from_served(cls, served: tuple[int, np.ndarray, np.ndarray], margin: float) -> StickyPrior:
        return cls(served[0], ItemCodes.of(served[1], served[2]), margin)

    def lookup(self, item_ids: np.ndarray) -> np.ndarray:
        """(n, m) int64 served codes of ``item_ids`` (n,); −1 rows for items not served."""
        return self.served.lookup(item_ids)

    def to_dict(self) -> dict[str, Any]:
        return {"against_version": self.version, "margin": _json_margin(self.margin)}


class _Assignment:
    """Assigns chunks of the catalog and accumulates what the health report needs.

    Keeps the (N,) ids, (N, m) int16 codes and (N, Fi) encoded inputs of the whole catalog
    (for the catalog-wide figures), the FAISS/torch disagreements (ties and failures, the
    first MAX_LISTED of each listed), the reconstruction error sums, the time spent in torch
    and FAISS, and with ``sticky`` how many items kept a served code that is no longer the
    nearest entry (per level).
    """

    def __init__(
        self, codebooks: np.ndarray, tie_rtol: float, sticky: StickyPrior | None = None
    ) -> None:
        self.codebooks, self.tie_rtol, self.sticky = codebooks, tie_rtol, sticky
        m = codebooks.shape[0] if codebooks.ndim == 3 else 0
        self.n_prior = self.n_held = 0
        self.held_per_level = np.zeros(m, np.int64)
        self.ids: list[np.ndarray] = []
        self.codes: list[np.ndarray] = []
        self.feats: list[np.ndarray] = []
        self.n_oov_items = self.n_disagree = self.n_ties = 0
        self.ties: list[dict[str, Any]] = []
        self.failures: list[dict[str, Any]] = []
        self.sq_err_sum = self.z_sq_sum = 0.0
        self.t_torch = self.t_faiss = 0.0

    def add(
        self,
        model: torch.nn.Module,
        rb: pa.RecordBatch,
        layout: FeatureLayout,
        vocabs: dict[str, Vocab],
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Assign one chunk of catalog rows: (item ids (n,), FAISS codes (n, m), v_item (n, d))."""
        item_ids = rb.column("item_id").to_numpy(zero_copy_only=False).astype(np.int64)
        feats = encode_fields(rb, layout.item_fields, vocabs)  # (n, Fi)
        self.n_oov_items += int((feats[:, 0] == OOV).sum())
        t0 = time.perf_counter()
        prior = self.sticky.lookup(item_ids) if self.sticky is not None else None
        margin = self.sticky.margin if self.sticky is not None else 0.0
        with torch.inference_mode():
            x = torch.from_numpy(feats)
            v_item, nearest = model.item_side(x)
            z = model.latent(x).float()
            codes_t = nearest
            if prior is not None:
                codes_t = model.quantizer.encode(z, torch.from_numpy(prior), margin)
        t1 = time.perf_counter()
        z_np, v_np = z.numpy(), v_item.float().numpy()
        if not (np.isfinite(z_np).all() and np.isfinite(v_np).all()):
            bad = item_ids[~(np.isfinite(z_np).all(1) & np.isfinite(v_np).all(1))]
            raise SemanticIdError(f"non-finite latent or item vector for items {bad[:20].tolist()}")
        codes_f = faiss_assign(z_np, self.codebooks, prior, margin)
        self.t_torch += t1 - t0
        self.t_faiss += time.perf_counter() - t1
        self._compare(item_ids, z_np, codes_f, codes_t.numpy(), prior, margin)
        if prior is not None:
            self.n_prior += int((prior[:, 0] >= 0).sum())
            moved = codes_f != nearest.numpy()
            self.n_held += int(moved.any(1).sum())
            self.held_per_level += moved.sum(0)
        m = self.codebooks.shape[0]
        z_hat = self.codebooks[np.arange(m)[None, :], codes_f].sum(1)
        self.sq_err_sum += metrics.reconstruction_error(z_np, z_hat) * len(item_ids)
        self.z_sq_sum += float((z_np.astype(np.float64) ** 2).sum())
        self.ids.append(item_ids)
        self.codes.append(codes_f.astype(np.int16))
        self.feats.append(feats)
        return item_ids, codes_f, v_np

    def _compare(
        self,
        item_ids: np.ndarray,
        z: np.ndarray,
        codes_f: np.ndarray,
        codes_t: np.ndarray,
        prior: np.ndarray | None,
        margin: float,
    ) -> None:
        """Classify every item whose FAISS and torch codes differ as a tie or a failure."""
        for i in np.flatnonzero((codes_f != codes_t).any(1)).tolist():
            level = int(np.flatnonzero(codes_f[i] != codes_t[i])[0])
            r = residual_at(z[i], self.codebooks, codes_f[i], level)
            tie, rec = _tie_or_failure(
                int(item_ids[i]),
                level,
                r,
                self.codebooks[level],
                int(codes_f[i, level]),
                int(codes_t[i, level]),
                self.tie_rtol,
                int(prior[i, level]) if prior is not None else -1,
                margin,
            )
            self.n_disagree += 1
            if tie:
                self.n_ties += 1
                if len(self.ties) < MAX_LISTED:
                    self.ties.append(rec)
            elif len(self.failures) < MAX_LISTED:
                self.failures.append(rec)

    def merge(self, other: _Assignment) -> None:
        """Add the assignment of the next chunk (done elsewhere, :func:`assign_chunk`)."""
        self.ids += other.ids
        self.codes += other.codes
        self.feats += other.feats
        self.n_prior += other.n_prior
        self.n_held += other.n_held
        self.held_per_level = self.held_per_level + other.held_per_level
        self.n_oov_items += other.n_oov_items
        self.n_disagree += other.n_disagree
        self.n_ties += other.n_ties
        self.ties += other.ties[: MAX_LISTED - len(self.ties)]
        self.failures += other.failures[: MAX_LISTED - len(self.failures)]
        self.sq_err_sum += other.sq_err_sum
        self.z_sq_sum += other.z_sq_sum
        self.t_torch += other.t_torch
        self.t_faiss += other.t_faiss

    def catalog(self) -> tuple[np.ndarray, np.ndarray]:
        """(item ids (N,) int64, codes (N, m) int16) of every chunk so far."""
        m = self.codebooks.shape[0]
        return (
            np.concatenate(self.ids) if self.ids else np.zeros(0, np.int64),
            np.concatenate(self.codes) if self.codes else np.zeros((0, m), np.int16),
        )

    def inputs(self) -> np.ndarray:
        """(N, Fi) encoded item features of every chunk so far, in :meth:`catalog`'s order."""
        return np.concatenate(self.feats)

    def sticky_report(self) -> dict[str, Any] | None:
        if self.sticky is None:
            return None
        return {
            **self.sticky.to_dict(),
            "items_with_served_code": self.n_prior,
            "items_held": self.n_held,
            "held_per_level": [int(x) for x in self.held_per_level],
        }

    def agreement(self) -> dict[str, Any]:
        return {
            "method": "faiss.IndexFlatL2 per level (greedy residual) vs torch quantizer.encode",
            "disagreements": self.n_disagree,
            "ties": self.n_ties,
            "failures": self.n_disagree - self.n_ties,
            "tie_rtol": self.tie_rtol,
            "ties_listed": self.ties,
            "failures_listed": self.failures,
        }

    def timing(self, elapsed: float, n: int, chunk_size: int) -> dict[str, Any]:
        return {
            "seconds": round(elapsed, 3),
            "items_per_s": round(n / elapsed, 1) if elapsed > 0 else None,
            "torch_seconds": round(self.t_torch, 3),
            "faiss_seconds": round(self.t_faiss, 3),
            "faiss_items_per_s": round(n / self.t_faiss, 1) if self.t_faiss > 0 else None,
            "torch_threads": torch.get_num_threads(),
            "faiss_threads": faiss.omp_get_max_threads(),
            "chunk_size": chunk_size,
        }


def _catalog_figures(codes: np.ndarray, k: int, acc: _Assignment) -> dict[str, Any]:
    """Utilization, entropy, collisions and reconstruction error of the (N, m) catalog codes
    (the :data:`CATALOG_FIGURES` of :class:`IdHealth`)."""
    util = metrics.utilization_per_level(codes, k)
    rate, largest = metrics.collision_rate(codes)
    rate_distinct, identical = metrics.collision_rate_distinct(codes, acc.inputs())
    entropy = _entropy_bits(codes.astype(np.int64), k)
    return {
        "utilization_per_level": [float(u) for u in util],
        "utilization_catalog": float(util.mean()),
        "entropy_bits_per_level": entropy,
        "entropy_normalized_per_level": [e / math.log2(k) if k > 1 else 0.0 for e in entropy],
        "distinct_tuples": int(np.unique(codes, axis=0).shape[0]),
        "collision_rate": rate,
        "largest_collision_group": largest,
        "collision_rate_distinct_inputs": rate_distinct,
        "items_identical_inputs": identical,
        "recon_error": acc.sq_err_sum / codes.shape[0],
        "recon_error_relative": acc.sq_err_sum / acc.z_sq_sum if acc.z_sq_sum > 0 else 0.0,
    }


def _health_checks(
    report: IdHealth,
    n_unique: int,
    churn: IdChurn | None,
    min_utilization: float | None,
    max_collision_rate: float | None,
    max_churn: float | None,
) -> list[dict[str, Any]]:
    """The pass/fail checks of an assignment (coverage, agreement, and the optional ceilings)."""
    checks: list[dict[str, Any]] = []

    def check(name: str, ok: bool, detail: str) -> None:
        checks.append({"name": name, "ok": bool(ok), "detail": detail})

    n, size, agree = report.items_assigned, report.catalog_size, report.agreement
    check(
        "coverage",
        size > 0 and n == size and n_unique == size,
        f"{n_unique:,} distinct items with codes of {size:,} in the catalog"
        + (f" ({n - n_unique} duplicate rows)" if n != n_unique else ""),
    )
    check(
        "faiss_torch_agreement",
        agree["failures"] == 0,
        f"{agree['disagreements']} disagreements, {agree['ties']} exact-distance ties, "
        f"{agree['failures']} other",
    )
    if min_utilization is not None and report.utilization_per_level is not None:
        worst = min(report.utilization_per_level)
        ok = worst >= min_utilization
        check(
            "min_utilization",
            ok,
            f"lowest level utilization {worst:.3f} (floor {min_utilization})"
            + ("" if ok else f". {collapse_hint(report)}"),
        )
    if max_collision_rate is not None and report.collision_rate_distinct_inputs is not None:
        # Items with equal inputs collide under any model: the ceiling bounds the others. It
        # bounds the model's own (greedy) codes: resolution can hand out free tuples even to a
        # collapsed codebook's items, whose entries then tell them apart by nothing.
        rate = report.collision_rate_distinct_inputs
        res = report.resolution
        greedy = res["greedy_collision_rate_distinct_inputs"] if res else rate
        ok = greedy <= max_collision_rate
        check(
            "max_collision_rate",
            ok,
            f"collision rate {greedy:.4f} among items with distinct inputs"
            + (f" before resolution, {rate:.4f} published" if res else "")
            + f" (ceiling {max_collision_rate}; {report.collision_rate:.4f} with "
            f"the {report.items_identical_inputs:,} items whose inputs equal another's)"
            + ("" if ok else f". {collapse_hint(report)}"),
        )
    if max_churn is not None and churn is not None:
        check(
            "max_churn",
            churn.tuple_churn <= max_churn,
            f"{churn.summary()} (ceiling {max_churn:.2%})",
        )
    return checks


def collapse_hint(report: IdHealth) -> str:
    """What a user can change when too many items share their tuple, from the report's figures:
    collapsed levels (few of the K entries used) or items the model cannot tell apart."""
    hints = []
    util = report.utilization_per_level or []
    low = [j for j, u in enumerate(util) if u < 0.5]
    if low:
        shown = ", ".join(f"{j} ({util[j]:.2f})" for j in low[:4])
        hints.append(
            f"the codebooks collapsed: level(s) {shown} use under half of their K entries. "
            "Retrain cold with dead-entry revival and a sample-wide k-means on (the defaults "
            "codebook_revive 0.1 and kmeans_init_rows 16384; model_overrides that set them to 0 "
            "turn them off) and enough steps for the catalog (a run capped at a few hundred "
            "steps is not)"
        )
    oov = report.items_oov_id / report.catalog_size if report.catalog_size else 0.0
    if oov >= 0.2:
        hints.append(
            f"{report.items_oov_id:,} items ({oov:.0%}) have an id unseen in training (OOV "
            "embedding) and differ only by their other fields: lower min_count, or train "
            "on more days"
        )
    if not hints:
        hints.append(
            "the items' latents are too close for m codebooks of K entries: more codebooks "
            "(n_codebooks) or entries (codebook_size) in a cold run"
        )
    return "Why: " + "; ".join(hints) + " (health.json has the per-level figures)"


def health_text(report: IdHealth) -> str:
    """The health report as a short human-readable table."""
    lines = [
        f"semantic IDs: {'OK' if report.ok else 'FAILED'}   model "
        f"{report.model['model_name']} ({report.model['model_sha256'][:12]}), "
        f"m={report.m} K={report.K}"
    ]
    for c in report.checks:
        lines.append(f"  [{'ok' if c['ok'] else 'FAIL'}] {c['name']}: {c['detail']}")
    lines.append(
        f"  catalog {report.catalog_size:,} items, assigned {report.items_assigned:,}"
        f" (coverage {report.coverage:.4f}); {report.items_oov_id:,} with an id "
        "unseen in training (OOV embedding)"
    )
    if report.items_price_non_finite:
        lines.append(
            f"  warning: {report.items_price_non_finite:,} item(s) with a non-finite "
            "price (inf/NaN, stored before import rejected them) got the unknown bucket"
        )
    if report.utilization_per_level is not None:
        lines.append("  level  utilization  entropy(bits)  entropy/log2K")
        for j, (u, e, en) in enumerate(
            zip(
                report.utilization_per_level,
                report.entropy_bits_per_level or [],
                report.entropy_normalized_per_level or [],
                strict=True,
            )
        ):
            lines.append(f"  {j:>5}  {u:>11.3f}  {e:>13.3f}  {en:>13.3f}")
        lines.append(
            f"  catalog utilization {report.utilization_catalog:.3f}; "
            f"{report.distinct_tuples:,} distinct tuples; collision rate "
            f"{report.collision_rate:.4f}, largest group "
            f"{report.largest_collision_group}"
        )
        if report.collision_rate_distinct_inputs is not None:
            lines.append(
                f"  collision rate among items with distinct inputs "
                f"{report.collision_rate_distinct_inputs:.4f}; "
                f"{report.items_identical_inputs:,} items have the same inputs as another"
            )
        if report.resolution:
            rs = report.resolution
            lines.append(
                f"  collisions resolved: {rs['classes_moved']:,} of {rs['classes_contested']:,} "
                f"contested input classes ({rs['items_moved']:,} items) moved to a free tuple "
                f"(by depth {rs['moved_by_depth']}, {rs['moved_to_served']:,} back to their "
                f"served tuple); {rs['unresolved_classes']:,} left sharing"
            )
        lines.append(
            f"  reconstruction error ‖z−ẑ‖² {report.recon_error:.5f} "
            f"(relative {report.recon_error_relative:.4f})"
        )
    return "\n".join(lines + _health_text_tail(report)) + "\n"


def _health_text_tail(report: IdHealth) -> list[str]:
    """:func:`health_text`'s lines on churn, stickiness, FAISS/torch agreement and timing."""
    lines = []
    if report.churn:
        lines.append(f"  churn: {IdChurn(**report.churn).summary()}")
    if report.sticky:
        st = report.sticky
        lines.append(
            f"  sticky (margin {st['margin']}, against version {st['against_version']}): "
            f"{st['items_held']:,} of {st['items_with_served_code']:,} served items kept a "
            f"served code that is no longer their nearest (per level {st['held_per_level']})"
        )
        for e in st.get("escalated_from") or []:
            lines.append(
                f"    margin {e['margin']} moved {e['tuple_churn']:.2%} of the tuples (above "
                "max_churn): raised"
            )
    a = report.agreement
    lines.append(
        f"  FAISS vs torch: {a['disagreements']} disagreements, {a['ties']} ties, "
        f"{a['failures']} failures"
    )
    for t in a["ties_listed"][:10]:
        lines.append(
            f"    tie: item {t['item_id']} level {t['level']} faiss {t['faiss_code']} "
            f"torch {t['torch_code']} dist {t['faiss_dist']:.6g} vs {t['torch_dist']:.6g}"
        )
    tm = report.timing
    lines.append(
        f"  {tm['seconds']} s, {tm['items_per_s']} items/s (FAISS "
        f"{tm['faiss_items_per_s']} items/s, {tm['faiss_threads']} threads)"
    )
    return lines


def read_ids(path: Path) -> tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray]:
    """Read an ``ids.parquet`` (or a published export).

    Returns:
        (meta, item_ids (N,) int64, codes (N, m) int64, v_item (N, d) float32), rows in
        file order; meta is the ``tarq`` schema metadata ({} for an export).
    """
    table = pq.read_table(path)
    raw = (table.schema.metadata or {}).get(META_KEY)
    meta = json.loads(raw) if raw else {}
    try:
        return (meta, *ids_arrays(table))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def read_item_codes(path: Path) -> tuple[dict[str, Any], ItemCodes]:
    """(meta, the codes by item id) of an ``ids.parquet``, without its item vectors: what
    scoring with published IDs needs (:func:`tarq.training.evaluation.evaluate`'s ``item_codes``)."""
    schema = pq.read_schema(path)
    raw = (schema.metadata or {}).get(META_KEY)
    cols = [c for c in schema.names if c == "item_id" or c.startswith("code_")]
    code_cols = sorted((c for c in cols if c != "item_id"), key=lambda c: int(c.split("_")[1]))
    if "item_id" not in cols or not code_cols:
        raise ValueError(f"{path}: not a semantic-ID table (needs item_id, code_0..)")
    table = pq.read_table(path, columns=["item_id", *code_cols])
    codes = np.stack([table.column(c).to_numpy() for c in code_cols], axis=1)
    return (json.loads(raw) if raw else {}), ItemCodes.of(
        table.column("item_id").to_numpy().astype(np.int64), codes
    )


def ids_arrays(table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(item_ids (N,) int64, codes (N, m) int64, v_item (N, d) float32) of an ID table.

    Works on ``ids.parquet``, a published version read back from DuckDB (v_item FLOAT[d])
    and its Parquet export (v_item as a fixed-size or a plain list).
    """
    code_cols = sorted(
        (c for c in table.column_names if c.startswith("code_")), key=lambda c: int(c.split("_")[1])
    )
    if not code_cols or "item_id" not in table.column_names or "v_item" not in table.column_names:
        raise ValueError("not a semantic-ID table (needs item_id, code_0.., v_item)")
    item_ids = table.column("item_id").to_numpy().astype(np.int64)
    codes = np.stack([table.column(c).to_numpy() for c in code_cols], axis=1).astype(np.int64)
    v = table.column("v_item").combine_chunks()
    n = len(v)
    if v.null_count:
        raise ValueError(f"{v.null_count} rows have no item vector")
    flat = v.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    if n and flat.size % n:
        raise ValueError("item vectors have different widths")
    width = flat.size // n if n else 0
    if pa.types.is_list(v.type) and n and not (np.diff(v.offsets.to_numpy()) == width).all():
        raise ValueError("item vectors have different widths")
    return item_ids, codes, flat.reshape(n, width)
