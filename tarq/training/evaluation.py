"""Evaluation: a model on a batch stream (the training loop's validation and test metrics),
and a trained model directory re-scored on another day's samples (e.g. the champion today).

A model directory (``tarq train`` output) carries its own layout and vocabularies; the sample
folder of another run date carries raw ids. Encoding today's rows with the *model's*
vocabularies lets yesterday's champion be compared with today's challenger on the same test
day, which is what the gate needs (a figure from the champion's own test day is a different
day's traffic).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from tarq import metrics
from tarq.data.features import FeatureLayout, Vocab
from tarq.data.loader import Batch, BatchStream, SampleSet, model_inputs
from tarq.ids.churn import ItemCodes
from tarq.metrics import PairedInterval, paired_bootstrap, pooled_paired_bootstrap
from tarq.model.io import load_trained
from tarq.training.batch_scoring import score_batch


def evaluate(
    model: torch.nn.Module,
    stream: BatchStream | Iterable[Batch],
    codebook_size: int,
    diagnostics: bool = True,
    reference: bool = False,
    item_codes: ItemCodes | None = None,
) -> dict[str, Any]:
    """Metrics of ``model`` on a stream: AUC, GAUC, log-loss and codebook figures.

    Rows are scored by :func:`tarq.training.batch_scoring.score_batch` (no autograd, the user side once
    per request); ``reference`` scores them with ``model(batch)`` instead, the training
    forward in eval mode (the path the batch scorer is checked against; slower).

    Args:
        diagnostics: also the TARQ variants' reconstruction error and the alignment's
            sharpness (``recon_error``, ``align_sharpness``; the teacher runs for them);
            without, they are absent (the epoch loop's validation needs only the AUC).
        item_codes: TARQ: score each row's item with its codes in this table (a published
            ``ids.parquet``: what serving uses) instead of its nearest entries; items the
            table lacks get their nearest entries.
    Returns:
        A dict with the metrics and the raw arrays under ``"_arrays"`` (labels,
        probabilities, user and item keys) for predictions files and plots.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            res = _evaluate(model, stream, codebook_size, diagnostics, reference, item_codes)
    finally:
        model.train(was_training)
    return res


def _evaluate(
    model: torch.nn.Module,
    stream: Iterable[Batch],
    codebook_size: int,
    diagnostics: bool,
    reference: bool,
    item_codes: ItemCodes | None = None,
) -> dict[str, Any]:
    if reference and item_codes is not None:
        raise ValueError("the reference forward scores with the nearest entries only")
    ys, ps, users, items, codes, util = [], [], [], [], [], []
    recon = []
    sharp: dict[str, list[tuple[int, np.ndarray]]] = {}
    for batch in stream:
        inputs = model_inputs(batch)
        given = None
        if item_codes is not None:
            given = torch.from_numpy(item_codes.lookup(batch["item_key"].numpy()))
        out = model(inputs) if reference else score_batch(model, inputs, diagnostics, given)
        ys.append(batch["label"].numpy())
        ps.append(torch.sigmoid(out.logit).numpy())
        users.append(batch["user_key"].numpy())
        items.append(batch["item_key"].numpy())
        if "codes" in out.extras:
            c = out.extras["codes"].numpy()
            util.append(metrics.utilization_batch(c, codebook_size))
            codes.append(c)
        if "recon" in out.losses and diagnostics:
            recon.append(float(out.losses["recon"]))
        for side in ("p", "p_hat"):
            if f"align_sharpness_{side}" in out.extras and diagnostics:
                sharp.setdefault(side, []).append(
                    (len(batch["label"]), out.extras[f"align_sharpness_{side}"].numpy())
                )
    if not ys:
        raise ValueError("evaluation stream is empty")
    y, p = np.concatenate(ys), np.concatenate(ps)
    u = np.concatenate(users)
    g, n_users, n_skipped = metrics.gauc(y, p, u)
    res: dict[str, Any] = {
        "rows": int(y.size),
        "positives": int(y.sum()),
        "auc": metrics.auc(y, p),
        "gauc": g,
        "gauc_users": n_users,
        "gauc_skipped_users": n_skipped,
        "logloss": metrics.logloss(y, p),
    }
    if util:
        # One code tuple per distinct item of the evaluated rows.
        _, first = np.unique(np.concatenate(items), return_index=True)
        cat = np.concatenate(codes)[first]
        res["utilization_batch"] = float(np.mean(util))
        res["utilization_catalog"] = metrics.utilization_catalog(cat, codebook_size)
        rate, largest = metrics.collision_rate(cat)
        res["collision_rate"] = rate
        res["largest_collision_group"] = largest
        res["catalog_items_seen"] = int(cat.shape[0])
    if recon:
        res["recon_error"] = float(np.mean(recon))
    if sharp:
        res["align_sharpness"] = _sharpness_summary(sharp)
    res["_arrays"] = {"label": y, "score": p, "user_id": u, "item_id": np.concatenate(items)}
    return res


def _sharpness_summary(parts: dict[str, list[tuple[int, np.ndarray]]]) -> dict[str, Any]:
    """Row-weighted means of the per-batch (2, m) sharpness arrays of p and p̂.

    Returns ``{"p": {"entropy": [m], "max_prob": [m]}, "p_hat": {...}}`` (p̂ only for models
    with a teacher); uniform over K entries is entropy log K, max-probability 1/K.
    """
    out: dict[str, Any] = {}
    for side, batches in parts.items():
        w = np.array([n for n, _ in batches], dtype=np.float64)
        mean = np.tensordot(w / w.sum(), np.stack([a for _, a in batches]), axes=1)
        out[side] = {
            "entropy": [round(float(v), 5) for v in mean[0]],
            "max_prob": [round(float(v), 5) for v in mean[1]],
        }
    return out


def public_metrics(m: dict[str, Any]) -> dict[str, Any]:
    """The metrics of :func:`evaluate` without its arrays (what JSON files hold)."""
    return {k: v for k, v in m.items() if not k.startswith("_")}


def evaluate_model_dir(
    model_dir: str | Path,
    samples_dir: str | Path,
    split: str = "test",
    batch_size: int = 4096,
    predictions_out: str | Path | None = None,
    item_codes: ItemCodes | None = None,
) -> dict[str, Any]:
    """Metrics of the trained model in ``model_dir`` on ``split`` of ``samples_dir``
    (``item_codes``: TARQ scored with a published table's semantic IDs, see :func:`evaluate`).

    Returns the same keys as the training loop's test metrics (auc, gauc, logloss and, for
    TARQ variants, utilization_batch, utilization_catalog, collision_rate), without arrays.
    ``predictions_out`` also writes (user_id, item_id, label, score) per row in sample order,
    the same order as the training loop's ``predictions.parquet`` (for paired comparisons).

    Raises:
        ValueError: when the samples lack a field the model was trained with.
    """
    mdir, sdir = Path(model_dir), Path(samples_dir)
    model, cfg = load_trained(mdir)
    layout = FeatureLayout.load(mdir / "layout.json")
    sample_layout = FeatureLayout.load(sdir / "layout.json")
    missing = (set(layout.user_fields) | set(layout.item_fields)) - (
        set(sample_layout.user_fields) | set(sample_layout.item_fields)
    )
    if missing:
        raise ValueError(f"{sdir} lacks fields {sorted(missing)} that {mdir} was trained with")
    if sample_layout.seq_len < layout.seq_len:
        raise ValueError(
            f"{sdir} keeps {sample_layout.seq_len} behaviours, {mdir} expects {layout.seq_len}"
        )
    names = {*layout.user_fields, *layout.item_fields}
    vocabs = {n: Vocab.load(mdir / "vocab" / f"{n}.parquet") for n in names}
    sset = SampleSet(sdir, layout, vocabs)
    res = evaluate(
        model,
        BatchStream(sset, split, batch_size),
        int(cfg["model"]["codebook_size"]),
        item_codes=item_codes,
    )
    if predictions_out is not None:
        pq.write_table(pa.table(res["_arrays"]), predictions_out)
    return public_metrics(res)


def _same_rows(paths: list[str | Path]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels (N,), user keys (N,), scores (len(paths), N)) of predictions files that score
    the same test rows in the same order.

    Raises:
        ValueError: a file's rows (label, user_id or item_id) differ from the first file's.
    """
    tables = [pq.read_table(f, columns=["label", "score", "user_id", "item_id"]) for f in paths]
    ref = tables[0]
    for path, t in zip(paths[1:], tables[1:], strict=True):
        for col in ("label", "user_id", "item_id"):
            if t.num_rows != ref.num_rows or not t.column(col).equals(ref.column(col)):
                raise ValueError(
                    f"{paths[0]} and {path} do not score the same rows "
                    f"in the same order ({col} differs)"
                )
    scores = np.stack([t.column("score").to_numpy() for t in tables])
    return ref.column("label").to_numpy(), ref.column("user_id").to_numpy(), scores


def paired_interval(
    predictions_a: str | Path,
    predictions_b: str | Path,
    metric: str = "auc",
    n_boot: int = 1000,
    seed: int = 0,
) -> PairedInterval:
    """Paired-bootstrap interval of metric(A) − metric(B) from two predictions files of the
    same test rows (:func:`tarq.metrics.paired_bootstrap`).

    Raises:
        ValueError: the files do not hold the same rows in the same order.
    """
    y, users, (a, b) = _same_rows([predictions_a, predictions_b])
    return paired_bootstrap(y, a, b, users, metric=metric, n_boot=n_boot, seed=seed)


def pooled_interval(
    predictions_a: list[str | Path],
    predictions_b: list[str | Path],
    n_boot: int = 1000,
    seed: int = 0,
) -> PairedInterval:
    """Interval of the seed-mean AUC(A) − AUC(B) from one predictions file per training seed
    of each model (``predictions_a[s]`` pairs with ``predictions_b[s]``), resampling test
    users and seeds (:func:`tarq.metrics.pooled_paired_bootstrap`).

    Raises:
        ValueError: the files do not all hold the same rows in the same order.
    """
    if len(predictions_a) != len(predictions_b) or not predictions_a:
        raise ValueError("one predictions file per seed for each model, as many for both")
    y, users, scores = _same_rows([*predictions_a, *predictions_b])
    k = len(predictions_a)
    return pooled_paired_bootstrap(y, scores[:k], scores[k:], users, n_boot=n_boot, seed=seed)
