"""Serving: score a request's candidates with TARQ from the published semantic-ID table.

Per request (paper section 2.6)::

    fixed cost, once     user tower → v_user; personalised codebooks Ĉ (m·K queries in one
                         attention over the history) — O(L), independent of N; the fused
                         one-request path of :mod:`tarq.serving.user_kernels` (numba; the
                         torch lean path of :mod:`tarq.serving.user_side` for long histories)
    per candidate        gather the m rows Ĉ[l, c_l] of its codes and sum them, then two dot
                         products with its unit item vector:
                         logit = s · (⟨v̂_user, v̂_item⟩ + ⟨h_rq, v̂_item⟩ / ‖h_rq‖) + b
                         — O(m·d), independent of the history length; one fused numba loop
                         (:mod:`tarq.serving.kernels`), ids → rows by :class:`tarq.serving.item_index.ItemIndex`

This is the same arithmetic as the model's training forward (``cos`` normalises h_rq, so the
mean fusion is a sum here). The item vectors are normalised and the codes narrowed to the
smallest integer type once, at load time. The torch functions below (:func:`tarq_logits`,
:func:`two_tower_logits`, :func:`target_attention_logits`) are the reference paths the
kernels are tested against, and full target attention's serving path.

Unknown candidate ids (not in the published table): ``unknown="raise"`` (default) raises
:class:`UnknownItemError` listing them; ``unknown="nan"`` scores them NaN and the rest as usual.

Requests are checked strictly, each refusal a :class:`ValueError` naming the field and value:
ids are integers (Python or numpy ints; floats, strings and bools are refused, never rounded
or parsed); ``user_profile`` is a dict (``{}`` for a user without known fields, ``None`` is
refused: it usually means a lost join upstream); timestamps are finite (NaN, NaT and null are
refused); a behaviour later than ``request_ts`` is refused (it would leak the future into the
request); at most ``max_candidates`` candidates per request (:data:`MAX_CANDIDATES`).

The ID table must come from the same weights: the sha256 of ``model.pt`` is compared with the
one recorded with the IDs (the warehouse's registry, the ``ids.parquet`` metadata or a
published export's manifest) before the weights are read.

``benchmarks/serving_latency.py`` compares TARQ with the two-tower model (its own fused kernel)
and full target attention (one attention over the history per candidate) on equal terms.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from tarq.data.features import ACTIONS, OOV, PAD, FeatureLayout, Vocab, time_gap_index
from tarq.ids.semantic_ids import META_KEY, file_sha256, ids_arrays
from tarq.serving import kernels
from tarq.serving.item_index import ItemIndex
from tarq.serving.user_kernels import FusedUserSide
from tarq.store import sqlfiles

__all__ = [
    "BLOCK",
    "EPS",
    "MAX_CANDIDATES",
    "UNKNOWN_MODES",
    "ModelMismatchError",
    "RequestState",
    "Scorer",
    "UnknownItemError",
    "candidate_ids",
    "check_model_sha",
    "encode_history",
    "encode_user",
    "epoch_seconds",
    "ids_model_sha256",
    "read_publication",
    "target_attention_keys",
    "target_attention_logits",
    "tarq_logits",
    "two_tower_logits",
    "unit_rows",
    "unit_vector",
]

EPS = 1e-8
BLOCK = 4096
UNKNOWN_MODES = ("raise", "nan")
# Pre-ranking narrows a retrieval set of thousands to hundreds; a request far beyond this is a
# client bug (or a denial of service), not a ranking workload.
MAX_CANDIDATES = 10_000


class ModelMismatchError(ValueError):
    """An ID table and weights that do not belong together (or whose pairing cannot be proved)."""


class UnknownItemError(ValueError):
    """Candidate ids that are not in the published semantic-ID table."""

    def __init__(self, item_ids: Sequence[int], n_candidates: int) -> None:
        self.item_ids = [int(i) for i in item_ids]
        shown = ", ".join(str(i) for i in self.item_ids[:20])
        more = f" and {len(self.item_ids) - 20} more" if len(self.item_ids) > 20 else ""
        super().__init__(
            f"{len(self.item_ids)} of {n_candidates} candidate ids are not in the published "
            f"semantic-ID table: {shown}{more} (publish a new version, or score with "
            "unknown='nan')"
        )


# -- request encoding -----------------------------------------------------------------------
def _ids(value: Any, what: str) -> int | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise ValueError(f"{what} must be an integer id or null, got {value!r}")
    return int(value)


def candidate_ids(values: Any, max_candidates: int | None = MAX_CANDIDATES) -> np.ndarray:
    """Candidate item ids → (N,) int64, refusing anything but integers and more than the cap.

    Integer numpy arrays pass as they are; lists (or object arrays) are checked element by
    element, so ``1.9``, ``"1"`` and ``True`` are refused instead of becoming item 1.
    """
    if isinstance(values, str | bytes | dict) or not isinstance(values, Sequence | np.ndarray):
        raise ValueError(
            f"candidate_item_ids must be a list of integer ids, got {type(values).__name__}"
        )
    n = len(values)
    if max_candidates is not None and n > max_candidates:
        raise ValueError(
            f"candidate_item_ids has {n} ids, more than the cap of {max_candidates} "
            "per request (max_candidates)"
        )
    if isinstance(values, np.ndarray):
        if values.ndim != 1:
            raise ValueError(f"candidate_item_ids must be a flat list, got shape {values.shape}")
        if values.dtype.kind in "iu":
            if values.dtype.kind == "u" and values.size and values.max() > np.iinfo(np.int64).max:
                raise ValueError("candidate_item_ids holds an id beyond int64")
            return values.astype(np.int64, copy=False)
        if values.dtype.kind != "O" and values.size:
            raise ValueError(
                f"candidate_item_ids must be integers, got {values.dtype} "
                f"(first value {values[0]!r})"
            )
    if set(map(type, values)) <= {int}:  # the common case, checked at C speed (bool ≠ int here)
        with contextlib.suppress(OverflowError):  # an id beyond int64: named below
            return np.fromiter(values, np.int64, n)
    out = np.empty(n, dtype=np.int64)
    for i, v in enumerate(values):
        if isinstance(v, bool | np.bool_) or not isinstance(v, int | np.integer):
            raise ValueError(f"candidate_item_ids[{i}] must be an integer id, got {v!r}")
        try:
            out[i] = v
        except OverflowError:
            raise ValueError(f"candidate_item_ids[{i}] = {v} does not fit int64") from None
    return out


def encode_user(
    profile: dict[str, Any], layout: FeatureLayout, vocabs: dict[str, Vocab]
) -> torch.Tensor:
    """User profile {field: raw id} → (1, Fu) int64 indices.

    Fields of ``layout.user_fields`` missing from the profile (or null) map to OOV; other
    keys are ignored (a serving request may carry more than the model uses).
    """
    row = []
    for f in layout.user_fields:
        raw = _ids(profile.get(f), f"user_profile[{f!r}]")
        row.append(OOV if raw is None else int(vocabs[f].lookup(np.array([raw]))[0]))
    return torch.tensor([row], dtype=torch.int64)


def epoch_seconds(value: Any, what: str) -> float:
    """A timestamp → seconds since the epoch.

    Accepts epoch seconds (int/float), ISO-8601 strings, ``datetime`` (pandas ``Timestamp``
    included) and ``numpy.datetime64``. Naive values are read as UTC, like the warehouse's
    ``TIMESTAMP`` columns; only differences of timestamps enter the model. Null, NaN and NaT
    are refused: a missing time is not "now" and not the epoch.
    """
    if isinstance(value, bool | np.bool_) or value is None:
        raise ValueError(f"{what} must be a timestamp, got {value!r}")
    if isinstance(value, int | float | np.integer | np.floating):
        if not np.isfinite(value):
            raise ValueError(f"{what} must be a finite timestamp, got {value!r}")
        return float(value)
    if isinstance(value, np.datetime64):
        if np.isnat(value):
            raise ValueError(f"{what} must be a timestamp, got NaT")
        return float(value.astype("datetime64[us]").astype(np.int64)) / 1e6
    # pandas.NaT is a datetime subclass whose .timestamp() raises a bare ValueError.
    if isinstance(value, dt.datetime) and value != value:
        raise ValueError(f"{what} must be a timestamp, got NaT")
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"{what} is not an ISO-8601 timestamp: {value!r}") from exc
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.timestamp()
    raise ValueError(
        f"{what} must be a timestamp (epoch seconds, ISO string or datetime), "
        f"got {type(value).__name__}"
    )


def _id_column(values: list[Any], field: str, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """One field of the behaviours → (raw ids (n,) int64, nulls (n,) bool), refusing non-ids."""
    if set(map(type, values)) <= {int}:  # the common case, checked at C speed (bool ≠ int here)
        with contextlib.suppress(OverflowError):  # an id beyond int64: named below
            return np.fromiter(values, np.int64, len(values)), np.zeros(len(values), bool)
    raw = [_ids(v, f"history[{b + offset}][{field!r}]") for b, v in enumerate(values)]
    nulls = np.array([r is None for r in raw], dtype=bool)
    try:
        return np.array([0 if r is None else r for r in raw], dtype=np.int64), nulls
    except OverflowError:
        b = next(b for b, r in enumerate(raw) if r is not None and not -(2**63) <= r < 2**63)
        raise ValueError(
            f"history[{b + offset}][{field!r}] = {raw[b]} does not fit int64"
        ) from None


def _ts_column(values: list[Any], offset: int) -> np.ndarray:
    """The behaviours' ``ts`` → (n,) float64 epoch seconds (see :func:`epoch_seconds`)."""
    for b, v in enumerate(values):
        if v is None:
            raise ValueError(
                f"history[{b + offset}] lacks 'ts': this model embeds the time "
                "since each behaviour, so every behaviour needs its timestamp"
            )
    if set(map(type, values)) <= {int, float}:
        ts = np.fromiter(values, np.float64, len(values))
        if np.isfinite(ts).all():
            return ts
    return np.array(
        [epoch_seconds(v, f"history[{b + offset}]['ts']") for b, v in enumerate(values)],
        dtype=np.float64,
    )


def encode_history(
    history: Sequence[dict[str, Any]],
    layout: FeatureLayout,
    vocabs: dict[str, Vocab],
    request_ts: Any = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chronological behaviours (oldest first) → hist (1, n, Fs) int64 and mask (1, n) bool.

    Only the last ``layout.seq_len`` behaviours are kept, as in training; n = their number
    (at least 1, an all-padding slot for an empty history). Training pads to seq_len; padded
    slots are masked out of every attention, so leaving them out changes no result.
    Each behaviour is a dict with ``item_id``, ``category_id``, ``brand_id`` (raw ids, null
    allowed → OOV), ``action`` (one of pv/cart/fav/buy; null or other → OOV) and, when the
    model embeds the time since each behaviour (``time_gap`` in ``layout.seq_fields``), its
    ``ts`` (see :func:`epoch_seconds`); a behaviour without it is an error, since training
    never saw one, and so is one later than ``request_ts`` (training only ever sees behaviours
    before the impression; a later one is leakage or a broken clock, not "under a minute").
    ``request_ts`` is the time of the request (default: now).
    """
    if not isinstance(history, Sequence) or isinstance(history, str | bytes):
        raise ValueError(f"history must be a list of behaviour dicts, got {type(history).__name__}")
    # Checked even when unused (no history, or a model without time gaps): a bad clock is a
    # bad request either way.
    now = time.time() if request_ts is None else epoch_seconds(request_ts, "request_ts")
    recent = list(history)[-layout.seq_len :]
    n = max(len(recent), 1)
    hist = np.full((1, n, len(layout.seq_fields)), PAD, dtype=np.int64)
    mask = np.zeros((1, n), dtype=bool)
    if recent:
        offset = len(history) - len(recent)
        for b, ev in enumerate(recent):
            if not isinstance(ev, dict):
                raise ValueError(f"history[{b + offset}] must be a dict, got {type(ev).__name__}")
        mask[0, : len(recent)] = True
        action_ix = {a: i + 2 for i, a in enumerate(ACTIONS)}
        for j, f in enumerate(layout.seq_fields):
            if f == "action":
                hist[0, : len(recent), j] = [action_ix.get(ev.get("action"), OOV) for ev in recent]
                continue
            if f == "time_gap":
                ts = _ts_column([ev.get("ts") for ev in recent], offset)
                late = np.flatnonzero(ts > now)
                if late.size:
                    b = int(late[0])
                    raise ValueError(
                        f"history[{b + offset}]['ts'] = {recent[b]['ts']!r} is after request_ts "
                        f"({'now' if request_ts is None else repr(request_ts)}): a request "
                        "may only carry behaviours from before it"
                    )
                hist[0, : len(recent), j] = time_gap_index(now - ts)
                continue
            vals, nulls = _id_column([ev.get(f) for ev in recent], f, offset)
            hist[0, : len(recent), j] = vocabs[f].lookup(vals, null_mask=nulls)
    return torch.from_numpy(hist), torch.from_numpy(mask)


# -- pairing of IDs and weights -------------------------------------------------------------
def ids_model_sha256(path: Path, table: pa.Table | None = None) -> list[tuple[str, str]]:
    """The weights' sha256 recorded for an ID-table Parquet file: [(where, sha256)].

    ``ids.parquet`` carries it in its ``tarq`` schema metadata; a published export carries
    none itself, but its manifest beside it does (used only when the manifest's ``sha256`` is
    that of this file's bytes, so a stale or foreign manifest proves nothing).
    """
    path = Path(path)
    schema = table.schema if table is not None else pq.read_schema(path)
    found = []
    raw = (schema.metadata or {}).get(META_KEY)
    if raw:
        sha = json.loads(raw).get("model_sha256")
        if sha:
            found.append(("metadata", str(sha)))
    manifest = path.with_name(f"{path.stem}.manifest.json")
    if manifest.is_file():
        info = json.loads(manifest.read_text(encoding="utf-8"))
        if (
            info.get("file") == path.name
            and info.get("model_sha256")
            and info.get("sha256") == file_sha256(path)
        ):
            found.append(("manifest", str(info["model_sha256"])))
    return found


def read_publication(
    db_path: Path, version: int | None = None
) -> tuple[int, dict[str, Any], pa.Table]:
    """A kept published version of the warehouse (default: the served one), read from one
    snapshot: (version, its registry row by column name, its ID table rows).

    Raises:
        ValueError: nothing is published yet, or ``version`` is not a kept published version.
    """
    from tarq.store.warehouse import open_db

    with open_db(db_path, read_only=True) as con:
        con.begin()  # the rows and the registry row from one snapshot
        if version is None:
            served = con.execute(sqlfiles.load_sql("publish/served")).fetchall()
            if not served:
                raise ValueError(f"{db_path}: no semantic-ID version is published yet")
            version = int(served[0][0])
        cur = con.execute(sqlfiles.load_sql("publish/get_version"), {"version": version})
        rows = cur.fetchall()
        if not rows or rows[0][12] != "published":
            raise ValueError(f"{db_path}: version {version} is not a kept published version")
        reg = dict(zip([c[0] for c in cur.description], rows[0], strict=True))
        table = con.sql(
            sqlfiles.render("publish/read_version", table=reg["table_name"])
        ).to_arrow_table()
        con.commit()
    return version, reg, table


def check_model_sha(recorded: str | None, model_dir: Path, what: str) -> None:
    """Refuse ``model_dir/model.pt`` unless its sha256 equals the one recorded for the IDs.

    Raises:
        ModelMismatchError: a different hash, or none recorded (``recorded`` None).
    """
    weights = Path(model_dir) / "model.pt"
    if not recorded:
        raise ModelMismatchError(
            f"{what} records no model sha256, so nothing proves its IDs were assigned by "
            f"{weights}; use the ids.parquet of `tarq assign-ids` or an export with its manifest "
            "(or pass allow_unverified=True)"
        )
    actual = file_sha256(weights)
    if actual != recorded:
        raise ModelMismatchError(
            f"{what} was assigned by another model (sha256 {recorded[:12]}) than {weights} "
            f"(sha256 {actual[:12]}): semantic IDs and weights must come from the same model"
        )


# -- per-candidate scoring kernels ----------------------------------------------------------
def unit_rows(v: torch.Tensor) -> torch.Tensor:
    """Rows of (N, d) divided by max(‖row‖, eps), as ``F.cosine_similarity`` normalises."""
    return v / torch.linalg.vector_norm(v, dim=-1, keepdim=True).clamp_min(EPS)


def unit_vector(v: np.ndarray) -> np.ndarray:
    """A (d,) float32 vector divided by max(‖v‖, eps): :func:`unit_rows` for one row, in numpy
    (a torch op's dispatch on a request's cold cache cost ~40 µs)."""
    return (v / max(np.float32(np.sqrt(np.dot(v, v))), EPS)).astype(np.float32)


def _block_rows(v_hat: torch.Tensor, rows: torch.Tensor | None, s: int, e: int) -> torch.Tensor:
    return v_hat[s:e] if rows is None else v_hat.index_select(0, rows[s:e])


def two_tower_logits(
    u_hat: torch.Tensor,
    v_hat: torch.Tensor,
    scale: float,
    bias: float,
    rows: torch.Tensor | None = None,
    block: int = BLOCK,
) -> torch.Tensor:
    """TT: s · ⟨v̂_user, v̂_item⟩ + b.

    Args:
        u_hat: (d,) unit user vector.  v_hat: (T, d) unit item vectors of the table.
        rows: (N,) int64 table rows of the candidates; None: every row of v_hat, in order.
    Returns:
        (N,) logits.
    """
    n = v_hat.shape[0] if rows is None else rows.shape[0]
    out = torch.empty(n, dtype=v_hat.dtype)
    for s in range(0, n, block):
        e = min(s + block, n)
        torch.mv(_block_rows(v_hat, rows, s, e), u_hat, out=out[s:e])
    return out.mul_(scale).add_(bias)


def tarq_logits(
    u_hat: torch.Tensor,
    personal: torch.Tensor,
    v_hat: torch.Tensor,
    flat_codes: torch.Tensor,
    scale: float,
    bias: float,
    pool_logits: torch.Tensor | None = None,
    rows: torch.Tensor | None = None,
    block: int = 2048,
) -> torch.Tensor:
    """TARQ candidates: s · (⟨v̂_u, v̂_i⟩ + cos(Σ_l w_il Ĉ[l, c_il], v̂_i)) + b.

    Args:
        u_hat: (d,) unit user vector.  personal: (m·K, d) personalised codebooks, level-major.
        v_hat: (T, d) unit item vectors.  flat_codes: (T, m) int64, code + level·K.
        scale, bias: the score head.  pool_logits: (m·K,) per-entry pooling logits for the
            ``attention`` fusion (weights = softmax over the m picked entries); None for
            mean/sum fusion (cos ignores the 1/m).
        rows: (N,) int64 table rows of the candidates; None: every row, in order.
        block: candidates per block, so the gathered (block, d) intermediates stay in cache
            and each candidate's vector and codes are read from memory once.
    Returns:
        (N,) logits.
    """
    n = v_hat.shape[0] if rows is None else rows.shape[0]
    m = flat_codes.shape[1]
    out = torch.empty(n, dtype=v_hat.dtype)
    offsets = torch.arange(0, min(block, n) * m, m)
    for s in range(0, n, block):
        e = min(s + block, n)
        v = _block_rows(v_hat, rows, s, e)
        codes = _block_rows(flat_codes, rows, s, e)
        weights = None
        if pool_logits is not None:
            weights = torch.softmax(pool_logits[codes], dim=1).reshape(-1)
        # One fused gather-sum of the m rows per candidate; 1-D input + offsets is the
        # embedding_bag layout with the least overhead.
        h = F.embedding_bag(
            codes.reshape(-1), personal, offsets[: e - s], mode="sum", per_sample_weights=weights
        )
        o = out[s:e]
        torch.mv(v, u_hat, out=o)  # ⟨v̂_u, v̂_i⟩
        o += torch.linalg.vecdot(h, v).div_(torch.linalg.vector_norm(h, dim=1).clamp_min_(EPS))
    return out.mul_(scale).add_(bias)


def target_attention_keys(
    ta_attn: torch.nn.Module, h_seq: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-request keys and values of the target attention: (1, H, S, dh) each."""
    h = ta_attn.n_heads
    k = ta_attn.k(h_seq).view(1, -1, h, ta_attn.head_dim).transpose(1, 2)
    v = ta_attn.v(h_seq).view(1, -1, h, ta_attn.head_dim).transpose(1, 2)
    return k, v


def target_attention_logits(
    ta_attn: torch.nn.Module,
    keys: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    u_hat: torch.Tensor,
    x_item: torch.Tensor,
    v_hat: torch.Tensor,
    scale: float,
    bias: float,
    rows: torch.Tensor | None = None,
    block: int = 1024,
) -> torch.Tensor:
    """Full target attention: every candidate attends over the whole history.

    Args:
        ta_attn: the model's candidate→history ``MultiHeadAttention``.
        keys, values: (1, H, S, dh) from :func:`target_attention_keys`.  mask: (S,) bool.
        u_hat: (d,).  x_item: (T, d) attention queries of the table's items.
        v_hat: (T, d) unit item vectors.  rows: (N,) table rows of the candidates; None: all.
    Returns:
        (N,) logits s · (⟨v̂_u, v̂_i⟩ + cos(h_tar,i, v̂_i)) + b; cost O(N · S · d).
    """
    n = v_hat.shape[0] if rows is None else rows.shape[0]
    d = v_hat.shape[1]
    heads, dh = ta_attn.n_heads, ta_attn.head_dim
    out = torch.empty(n, dtype=v_hat.dtype)
    attn_mask = mask.view(1, 1, 1, -1)
    for s in range(0, n, block):
        e = min(s + block, n)
        v = _block_rows(v_hat, rows, s, e)
        x = _block_rows(x_item, rows, s, e)
        q = ta_attn.q(x).view(1, e - s, heads, dh).transpose(1, 2)  # (1, H, nb, dh)
        o = F.scaled_dot_product_attention(q, keys, values, attn_mask=attn_mask)
        h_tar = ta_attn.out(o.transpose(1, 2).reshape(e - s, d))
        torch.mv(v, u_hat, out=out[s:e])
        out[s:e] += torch.einsum("nd,nd->n", unit_rows(h_tar), v)
    return out.mul_(scale).add_(bias)


# -- the scorer -----------------------------------------------------------------------------
@dataclasses.dataclass
class RequestState:
    """What one request computes once: the unit user vector and the flattened Ĉ.

    Attributes:
        u_hat: (d,) float32 unit user vector.
        personal: (m·K + 1, d) float32 personalised codebooks, level-major, and a zero row
            (:func:`tarq.serving.kernels.padded_codebooks`).
        pool_logits: (m·K + 1,) float32 pooling logits for the ``attention`` fusion, else None.
        pairs: (4·K², d) float32 pair sums of Ĉ (:func:`tarq.serving.kernels.pair_sums`) where they
            apply (mean/sum fusion, m ≤ 8, K ≤ 16), else None.
    """

    u_hat: np.ndarray
    personal: np.ndarray
    pool_logits: np.ndarray | None
    pairs: np.ndarray | None = None


class Scorer:
    """Scores requests with a trained TARQ model and a published semantic-ID table.

    Build it with :meth:`from_paths` (the served version in the warehouse) or
    :meth:`from_parquet` (an ``ids.parquet`` or a published export, e.g. the MLflow
    artifact). Thread-safe for concurrent ``score`` calls (inference only, no shared state
    is written after construction).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        layout: FeatureLayout,
        vocabs: dict[str, Vocab],
        item_ids: np.ndarray,
        codes: np.ndarray,
        v_item: np.ndarray,
        version: int | None = None,
        source: str = "",
        max_candidates: int | None = MAX_CANDIDATES,
        unit_vectors: bool = False,
    ) -> None:
        """Args: model (TARQ, eval mode), layout, vocabularies of the user/item fields,
        item_ids (N,), codes (N, m), v_item (N, d) of the ID table; version/source for logs;
        max_candidates: the most candidates one request may score (None: no cap);
        unit_vectors: v_item are already unit rows (an :meth:`export`), used as they are.
        """
        if max_candidates is not None and (
            isinstance(max_candidates, bool)
            or not isinstance(max_candidates, int)
            or max_candidates < 1
        ):
            raise ValueError(
                f"max_candidates must be a positive integer or None, got {max_candidates!r}"
            )
        if not hasattr(model, "rq_attention"):
            raise ValueError(f"the Scorer needs a TARQ model, got {type(model).__name__}")
        m, k = model.config.n_codebooks, model.config.codebook_size
        d = model.config.d_model
        if codes.ndim != 2 or codes.shape[1] != m:
            raise ValueError(f"ID table has {codes.shape[-1]} code columns, the model m = {m}")
        if v_item.shape != (item_ids.shape[0], d):
            raise ValueError(
                f"item vectors have shape {v_item.shape}, expected ({item_ids.shape[0]}, {d})"
            )
        if codes.size and (codes.min() < 0 or codes.max() >= k):
            raise ValueError(f"codes outside [0, {k}) in the ID table")
        self._index = ItemIndex(item_ids)
        self._codes = np.ascontiguousarray(codes, dtype=kernels.code_dtype(k))
        v_item = np.asarray(v_item, dtype=np.float32)
        # Normalising unit rows again would move their last bits: an export is taken as is.
        v_hat = v_item if unit_vectors else unit_rows(torch.from_numpy(v_item)).numpy()
        self._v_hat = np.ascontiguousarray(v_hat)
        self._item_ids = np.ascontiguousarray(item_ids, dtype=np.int64)
        self.model_dir: Path | None = None  # set when loaded from a model directory
        self.model = model.eval()
        self._user_side = FusedUserSide(self.model)
        rq = self.model.rq_attention
        self._pool = rq.pool if rq.fusion == "attention" else None
        self._scale = float(self.model.head.scale.detach())
        self._bias = float(self.model.head.bias.detach())
        self.layout = layout
        self.vocabs = vocabs
        self.version = version
        self.source = source
        self.max_candidates = max_candidates
        self.m, self.k, self.d = m, k, d
        self._warm_up()

    def _warm_up(self) -> None:
        """Compile (or load from numba's disk cache) the kernels this scorer calls, with its
        own array types, so that the first request does not pay for it."""
        personal = kernels.padded_codebooks(np.zeros((self.m * self.k, self.d), np.float32))
        pool = np.zeros(personal.shape[0], np.float32) if self._pool is not None else None
        pairs = kernels.pair_sums(personal, self.m) if pool is None else None
        rows, _ = self._index.rows(np.zeros(1, dtype=np.int64))
        user = torch.zeros(len(self.layout.user_fields), dtype=torch.int64)
        for n in (0, 1):
            self._user_side(user, torch.zeros((n, len(self.layout.seq_fields)), dtype=torch.int64))
        if self.n_items:
            u_hat = np.zeros(self.d, np.float32)
            kernels.tarq_scores(
                u_hat, personal, self._v_hat, self._codes, 1.0, 0.0, pool, rows, pairs
            )

    # -- construction -------------------------------------------------------------------
    @staticmethod
    def _load_model(model_dir: Path) -> tuple[torch.nn.Module, FeatureLayout, dict[str, Vocab]]:
        from tarq.model.io import load_for_scoring

        return load_for_scoring(model_dir)

    @classmethod
    def from_paths(
        cls,
        db_path: Path,
        model_dir: Path,
        version: int | None = None,
        check_model: bool = True,
        max_candidates: int | None = MAX_CANDIDATES,
    ) -> Scorer:
        """The served (or a given kept) published version of the warehouse + the model.

        ``check_model`` refuses a table whose IDs were assigned by other weights than
        ``model_dir/model.pt`` (compared by sha256), or whose registry row records no hash.
        """
        version, reg, table = read_publication(db_path, version)
        if check_model:
            check_model_sha(
                reg["model_sha256"] or None,
                Path(model_dir),
                f"published version {version} of {db_path}",
            )
        return cls._from_table(table, model_dir, version, f"{db_path}#v{version}", max_candidates)

    @classmethod
    def from_parquet(
        cls,
        path: Path,
        model_dir: Path,
        model_sha256: str | None = None,
        allow_unverified: bool = False,
        max_candidates: int | None = MAX_CANDIDATES,
    ) -> Scorer:
        """An ``ids.parquet`` or a published Parquet export + the model.

        The IDs must have been assigned by ``model_dir/model.pt``: its sha256 is compared,
        before the weights are read, with every hash on record for the file — the
        ``ids.parquet`` metadata, the export's manifest (``<name>.manifest.json`` beside it,
        when it describes this file's bytes) and ``model_sha256`` when given.

        Raises:
            ModelMismatchError: a recorded hash differs from the weights', or no hash is
                recorded at all and ``allow_unverified`` is False.
        """
        path = Path(path)
        table = pq.read_table(path)
        recorded = ids_model_sha256(path, table)
        if model_sha256 is not None:
            recorded.append(("expected", model_sha256))
        if not recorded and not allow_unverified:
            check_model_sha(None, Path(model_dir), str(path))
        for where, sha in recorded:
            check_model_sha(sha, Path(model_dir), f"{path} ({where})")
        return cls._from_table(table, model_dir, None, str(path), max_candidates)

    @classmethod
    def _from_table(
        cls,
        table: pa.Table,
        model_dir: Path,
        version: int | None,
        source: str,
        max_candidates: int | None = MAX_CANDIDATES,
    ) -> Scorer:
        item_ids, codes, v_item = ids_arrays(table)
        if version is None and "version" in table.column_names and len(table):
            version = int(table.column("version")[0].as_py())
        model, layout, vocabs = cls._load_model(Path(model_dir))
        scorer = cls(
            model, layout, vocabs, item_ids, codes, v_item, version, source, max_candidates
        )
        scorer.model_dir = Path(model_dir)
        return scorer

    # -- export (a checked load handed to another process) --------------------------------
    EXPORT_ARRAYS = ("item_ids", "codes", "v_hat")

    def export(self, out: Path) -> None:
        """Write what :meth:`from_export` needs to ``out`` (a new folder): a copy of the model
        directory, the item ids, codes and unit item vectors as ``.npy`` and ``meta.json``.
        What the checks of the load that built this scorer accepted is exported as it is.

        Raises:
            ValueError: the scorer was not loaded from a model directory.
        """
        if self.model_dir is None:
            raise ValueError("only a Scorer loaded from a model directory can be exported")
        out = Path(out)
        shutil.copytree(self.model_dir, out / "model")
        arrays = {"item_ids": self._item_ids, "codes": self._codes, "v_hat": self._v_hat}
        for name in self.EXPORT_ARRAYS:
            np.save(out / f"{name}.npy", arrays[name], allow_pickle=False)
        meta = {"version": self.version, "source": self.source}
        meta["max_candidates"] = self.max_candidates
        (out / "meta.json").write_text(json.dumps(meta), encoding="utf-8")

    @classmethod
    def from_export(cls, path: Path) -> Scorer:
        """The scorer :meth:`export` wrote to ``path``: the same weights, unit vectors and codes,
        so the same scores; the load's checks were the exporting process's."""
        path = Path(path)
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        arrays = [np.load(path / f"{n}.npy", allow_pickle=False) for n in cls.EXPORT_ARRAYS]
        model, layout, vocabs = cls._load_model(path / "model")
        return cls(
            model,
            layout,
            vocabs,
            *arrays,
            meta["version"],
            meta["source"],
            meta["max_candidates"],
            unit_vectors=True,
        )

    # -- scoring ------------------------------------------------------------------------
    @property
    def n_items(self) -> int:
        return self._index.size

    def rows(self, candidate_item_ids: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Table rows of the candidates: (rows (N,) int64, known (N,) bool).

        Raises:
            ValueError: a candidate that is not an integer id, or more than ``max_candidates``.
        """
        return self._index.rows(candidate_ids(candidate_item_ids, self.max_candidates))

    @torch.inference_mode()
    def request_state(
        self,
        user_profile: dict[str, Any],
        history: Sequence[dict[str, Any]],
        request_ts: Any = None,
    ) -> RequestState:
        """The fixed per-request cost: user tower and the m·K personalised codebook entries."""
        if user_profile is None:
            raise ValueError(
                "user_profile is null: send {} for a user without profile fields "
                "(each field then scores as an unknown id)"
            )
        if not isinstance(user_profile, dict):
            raise ValueError(f"user_profile must be a dict, got {type(user_profile).__name__}")
        user = encode_user(user_profile, self.layout, self.vocabs)[0]
        hist, mask = encode_history(history, self.layout, self.vocabs, request_ts)
        # Real behaviours fill the first slots; the lean path drops the padding.
        state = self._user_side(user, hist[0, : int(mask.sum())])
        personal = kernels.padded_codebooks(state.personal.numpy())
        pool = pairs = None
        if self._pool is not None:
            pool = np.append(self._pool(state.personal)[:, 0].numpy(), np.float32(-np.inf))
        else:
            pairs = kernels.pair_sums(personal, self.m)
        return RequestState(unit_vector(state.v_user.numpy()), personal, pool, pairs)

    @torch.inference_mode()
    def score_state(
        self,
        state: RequestState,
        candidate_item_ids: Sequence[int] | np.ndarray,
        unknown: str = "raise",
    ) -> np.ndarray:
        """Per-candidate cost: logits (N,) float32 of the candidates for a computed request."""
        if unknown not in UNKNOWN_MODES:
            raise ValueError(f"unknown must be one of {UNKNOWN_MODES}, got {unknown!r}")
        ids = candidate_ids(candidate_item_ids, self.max_candidates)
        rows, known = self._index.rows(ids)
        if not known.all():
            if unknown == "raise":
                raise UnknownItemError(ids[~known], rows.size)
            rows = rows[known]
        logits = kernels.tarq_scores(
            state.u_hat,
            state.personal,
            self._v_hat,
            self._codes,
            self._scale,
            self._bias,
            state.pool_logits,
            rows=rows,
            pairs=state.pairs,
        )
        if known.all():
            return logits
        out = np.full(known.size, np.nan, dtype=np.float32)
        out[known] = logits
        return out

    def score(
        self,
        user_profile: dict[str, Any],
        history: Sequence[dict[str, Any]],
        candidate_item_ids: Sequence[int] | np.ndarray,
        unknown: str = "raise",
        request_ts: Any = None,
    ) -> np.ndarray:
        """Logits (N,) float32 of one request's candidates; σ(logit) = click probability.

        Args:
            user_profile: {user field: raw id}, e.g. ``{"user_id": 7, "gender": 1}``.
            history: behaviours oldest first, each ``{"item_id", "category_id",
                "brand_id", "action", "ts"}``; only the last ``seq_len`` count, as in
                training (see :func:`encode_history`).
            candidate_item_ids: (N,) raw item ids (integers; at most ``max_candidates``).
            unknown: ``"raise"`` (:class:`UnknownItemError`) or ``"nan"`` for ids not in
                the published table.
            request_ts: time of the request (default: now), the reference of the behaviours'
                time gaps.
        """
        return self.score_state(
            self.request_state(user_profile, history, request_ts), candidate_item_ids, unknown
        )
