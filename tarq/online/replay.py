"""Open-loop replay: each trained model's pre-ranking of a demo test day judged by the world's
true clicks (``tarq replay``).

:func:`tarq.data.demo_replay.capture_pools` gives every request of the test day a pool of
candidates with their true click probabilities. :func:`score_pools` scores the same pools with a
trained model the way evaluation and serving score a request (:func:`tarq.training.batch_scoring.
score_batch`: the user side once per request, the per-candidate part per candidate; TARQ with
the semantic IDs it was published with), from the request's own point-in-time features: its
user fields and history are those of the test-day sample rows of the same (user, time), encoded
with the model's vocabularies. :func:`replay` puts it together for a run date of the daily job
and reports, per model and k, the expected clicks of its top k relative to the oracle's, the
recall of the oracle's top k and the agreement with TA's top k, each with a bootstrap interval
over users, and each model's difference to TT paired on the same requests.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from tarq.data.demo_replay import RequestPools, capture_pools, summary, topk_report
from tarq.data.loader import SampleSet, encode_fields, epoch_us, to_batch
from tarq.defaults import REPLAY_MAX_REQUESTS
from tarq.ids.semantic_ids import IDS_FILE, ItemCodes, read_item_codes
from tarq.model.io import load_for_scoring
from tarq.model.tarq import TarqModel
from tarq.store import sqlfiles
from tarq.store.warehouse import open_db
from tarq.training.batch_scoring import score_candidates

KS = (10, 50)
REFERENCE, BASELINE = "ta", "tt"


def _request_rows(samples_dir: Path, pools: RequestPools) -> tuple[pa.Table, np.ndarray]:
    """One test-day sample row per pool request (matched on user and time) and (R,) the row of
    each request in it, −1 for a request the samples do not hold (e.g. quarantined rows)."""
    files = sorted((samples_dir / "test").glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"{samples_dir / 'test'} holds no sample files")
    table = pa.concat_tables(pq.read_table(f) for f in files)
    users = table.column("user_id").to_numpy().astype(np.int64)
    ts = epoch_us(table.column("ts")).astype(np.int64)
    first: dict[tuple[int, int], int] = {}
    for i, key in enumerate(zip(users.tolist(), ts.tolist(), strict=True)):
        first.setdefault(key, i)
    rows = np.array(
        [first.get(key, -1) for key in zip(pools.user_id.tolist(), pools.ts.tolist(), strict=True)],
        dtype=np.int64,
    )
    keep = rows[rows >= 0]
    at = np.full(rows.shape, -1, dtype=np.int64)
    at[rows >= 0] = np.arange(keep.size)
    return table.take(pa.array(keep)), at


def catalog(db_path: Path) -> pa.Table:
    """The warehouse's catalog rows with the model's item features (``semantic_ids/catalog``)."""
    with open_db(db_path, read_only=True) as con:
        return con.sql(
            sqlfiles.load_sql("semantic_ids/catalog"), params={"lo": None, "hi": None}
        ).to_arrow_table()


def score_pools(
    pools: RequestPools,
    model_dir: Path,
    samples_dir: Path,
    catalog: pa.Table,
    item_codes: ItemCodes | None = None,
    requests_per_batch: int = 16,
) -> np.ndarray:
    """(R, N) float32 logits of every pool candidate by the model in ``model_dir`` (NaN where
    the pool has no candidate or the samples do not hold the request).

    Args:
        pools: the captured pools of the samples' test day.
        model_dir: a trained model folder.  samples_dir: the run date's samples.
        catalog: the warehouse's catalog rows (``semantic_ids/catalog``).
        item_codes: TARQ: the semantic IDs to score with (a published table); None: nearest.
        requests_per_batch: requests scored together (rows = this × N).
    """
    mdir = Path(model_dir)
    model, layout, vocabs = load_for_scoring(mdir)
    sset = SampleSet(Path(samples_dir), layout, vocabs)
    rows, at = _request_rows(Path(samples_dir), pools)
    req = to_batch(rows, sset)  # user, hist, hist_mask per request (item: a logged one)
    cat_ids = catalog.column("item_id").to_numpy().astype(np.int64)
    order = np.argsort(cat_ids)
    feats = torch.from_numpy(encode_fields(catalog, layout.item_fields, vocabs)[order])
    cat_sorted = cat_ids[order]
    use_codes = item_codes is not None and isinstance(model, TarqModel)
    out = np.full(pools.items.shape, np.nan, dtype=np.float32)
    todo = np.flatnonzero(at >= 0)
    with torch.inference_mode():
        for lo in range(0, todo.size, requests_per_batch):
            r = todo[lo : lo + requests_per_batch]
            rr, cc = np.nonzero(pools.items[r] >= 0)
            raw = pools.items[r][rr, cc]
            pos = np.searchsorted(cat_sorted, raw)
            if (cat_sorted[np.minimum(pos, cat_sorted.size - 1)] != raw).any():
                raise ValueError("a pool holds items the warehouse's catalog does not")
            codes = torch.from_numpy(item_codes.lookup(raw)) if use_codes else None
            logit = score_candidates(model, req, at[r][rr], feats[torch.from_numpy(pos)], codes)
            out[r[rr], cc] = logit.float().numpy()
    return out


def per_request(
    pools: RequestPools, scores: dict[str, np.ndarray], ks: Sequence[int] = KS
) -> tuple[np.ndarray, dict[str, dict[int, dict[str, np.ndarray]]]]:
    """The per-request figures of every model and k on the requests every model scored.

    Returns:
        (scored (R,) bool, {model: {k: {figure: (R_scored,) values}}}): the figures of
        :func:`tarq.data.demo_replay.topk_report` (``agreement`` with TA when TA is among
        ``scores``) and, for every model but TT, ``clicks_ratio_minus_tt`` and
        ``recall_minus_tt`` (paired on the same requests).
    """
    scored = np.ones(len(pools), dtype=bool)
    for s in scores.values():
        scored &= ~np.isnan(s).all(axis=1)
    p = pools.p_true[scored]
    ref = scores.get(REFERENCE)
    out: dict[str, dict[int, dict[str, np.ndarray]]] = {m: {} for m in scores}
    for k in ks:
        figs = {
            m: topk_report(p, s[scored], k, None if ref is None else ref[scored])
            for m, s in scores.items()
        }
        for m in scores:
            f = dict(figs[m])
            if BASELINE in figs and m != BASELINE:
                for name in ("clicks_ratio", "recall"):
                    f[f"{name}_minus_{BASELINE}"] = figs[m][name] - figs[BASELINE][name]
            out[m][k] = f
    return scored, out


def report(
    pools: RequestPools,
    scores: dict[str, np.ndarray],
    ks: Sequence[int] = KS,
    n_boot: int = 1000,
) -> dict[str, Any]:
    """Per model and k: ``clicks_ratio``, ``recall`` and (with TA among ``scores``)
    ``agreement`` with TA's top k, each ``{mean, low, high}`` over the requests every model
    scored; and ``minus_tt``, the paired difference to TT of the first two."""
    scored, per = per_request(pools, scores, ks)
    users = pools.user_id[scored]
    out: dict[str, Any] = {"requests": int(scored.sum()), "requests_total": len(pools)}
    for name in scores:
        out[name] = {f"@{k}": summary(per[name][k], users, n_boot) for k in ks}
    return out


def replay(
    db_path: Path,
    work_dir: Path,
    run_date: dt.date | str,
    models: Sequence[str] | None = None,
    pool_size: int = 1000,
    seed: int = 0,
    ks: Sequence[int] = KS,
    max_requests: int | None = REPLAY_MAX_REQUESTS,
) -> dict[str, Any]:
    """The open-loop replay of run date ``run_date`` of the daily job in ``work_dir``: its
    test day's pools scored by the date's models (TARQ with its published codes when the
    date's ``ids/`` holds them), judged against the truth. A day of more than
    ``max_requests`` requests is judged on a fixed random sample of that many (``seed``;
    ``requests_day`` in the result counts them all); None: every request.

    Raises:
        FileNotFoundError: the date's samples or a model folder is missing.
        ValueError: not demo logs, or the day is not theirs.
    """
    day_dir = Path(work_dir) / str(run_date)
    test_day = dt.date.fromisoformat(str(run_date)) - dt.timedelta(days=1)
    samples = day_dir / "samples"
    found = sorted(p.name for p in (day_dir / "models").iterdir() if (p / "model.pt").exists())
    names = list(models) if models else found
    missing = [m for m in names if m not in found]
    if missing:
        raise FileNotFoundError(f"{day_dir / 'models'} holds no trained {missing} ({found})")
    pools = capture_pools(db_path, test_day, pool_size, seed)
    requests_day = len(pools)
    if max_requests is not None and requests_day > max_requests:
        keep = np.sort(
            np.random.default_rng(seed).choice(requests_day, max_requests, replace=False)
        )
        pools = replace(
            pools,
            request_key=pools.request_key[keep],
            user_id=pools.user_id[keep],
            ts=pools.ts[keep],
            items=pools.items[keep],
            p_true=pools.p_true[keep],
        )
    items = catalog(db_path)
    codes = None
    if (day_dir / "ids" / IDS_FILE).exists():
        _, codes = read_item_codes(day_dir / "ids" / IDS_FILE)
    scores = {
        m: score_pools(
            pools, day_dir / "models" / m, samples, items, codes if m == "tarq" else None
        )
        for m in names
    }
    out = report(pools, scores, ks)
    valid = ~np.isnan(pools.p_true)
    out.update(
        run_date=str(run_date),
        test_day=str(test_day),
        pool_size=pool_size,
        candidates_mean=float(valid.sum(axis=1).mean()),
        mean_p_true=float(np.nanmean(pools.p_true)),
        tarq_codes="published" if codes is not None else "nearest",
        requests_day=requests_day,
    )
    return out


def metrics(result: dict[str, Any], model: str) -> dict[str, float]:
    """One model's figures of a :func:`replay` as flat MLflow metrics: ``replay_clicks_at10``
    (expected clicks of its top 10 / the oracle's), ``replay_recall_at10``,
    ``replay_agreement_ta_at10``, ``replay_clicks_at10_minus_tt`` (with ``_low``/``_high``),
    the same at 50, and ``replay_requests``; {} for a model the replay did not score."""
    fig = result.get(model)
    if not isinstance(fig, dict):
        return {}
    out = {"replay_requests": float(result["requests"])}
    for k, f in fig.items():
        at = k.lstrip("@")
        names = {
            "clicks_ratio": f"replay_clicks_at{at}",
            "recall": f"replay_recall_at{at}",
            "agreement": f"replay_agreement_ta_at{at}",
            "clicks_ratio_minus_tt": f"replay_clicks_at{at}_minus_tt",
        }
        for src, dst in names.items():
            if src in f:
                out[dst] = f[src]["mean"]
                if src == "clicks_ratio_minus_tt":
                    out[f"{dst}_low"], out[f"{dst}_high"] = f[src]["low"], f[src]["high"]
    return out


def text(result: dict[str, Any]) -> str:
    """The replay as a table for a terminal."""
    ks = sorted({k for m in result.values() if isinstance(m, dict) for k in m if k.startswith("@")})
    lines = [
        f"open-loop replay of {result['test_day']} (run date {result['run_date']}): "
        f"{result['requests']:,} requests × {result['candidates_mean']:.0f} candidates, "
        f"TARQ with {result['tarq_codes']} codes",
        f"{'model':<10}"
        + "".join(
            f"{'clicks/oracle ' + k:>22}{'recall ' + k:>16}{'agree TA ' + k:>14}" for k in ks
        ),
    ]
    for name, fig in result.items():
        if not isinstance(fig, dict) or not any(k.startswith("@") for k in fig):
            continue
        cells = []
        for k in ks:
            f = fig[k]
            c = f["clicks_ratio"]
            cells.append(f"{c['mean']:>10.4f} [{c['low']:.3f},{c['high']:.3f}]")
            cells.append(f"{f['recall']['mean']:>16.4f}")
            cells.append(f"{f['agreement']['mean']:>14.4f}" if "agreement" in f else f"{'–':>14}")
        lines.append(f"{name:<10}" + "".join(cells))
    return "\n".join(lines)
