"""Re-score a trained model directory on another day's samples (e.g. the champion today).

A model directory (``tarq train`` output) carries its own layout and vocabularies; the sample
folder of another run date carries raw ids. Encoding today's rows with the *model's*
vocabularies lets yesterday's champion be compared with today's challenger on the same test
day, which is what the gate needs (a figure from the champion's own test day is a different
day's traffic).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tarq.data.features import FeatureLayout, Vocab
from tarq.data.loader import BatchStream, SampleSet
from tarq.metrics import PairedInterval, paired_bootstrap
from tarq.train import evaluate, load_trained


def evaluate_model_dir(
    model_dir: str | Path, samples_dir: str | Path, split: str = "test", batch_size: int = 4096,
    predictions_out: str | Path | None = None,
) -> dict[str, Any]:
    """Metrics of the trained model in ``model_dir`` on ``split`` of ``samples_dir``.

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
        set(sample_layout.user_fields) | set(sample_layout.item_fields))
    if missing:
        raise ValueError(f"{sdir} lacks fields {sorted(missing)} that {mdir} was trained with")
    if sample_layout.seq_len < layout.seq_len:
        raise ValueError(
            f"{sdir} keeps {sample_layout.seq_len} behaviours, {mdir} expects {layout.seq_len}")
    names = {*layout.user_fields, *layout.item_fields}
    vocabs = {n: Vocab.load(mdir / "vocab" / f"{n}.parquet") for n in names}
    sset = SampleSet(sdir, layout, vocabs)
    res = evaluate(model, BatchStream(sset, split, batch_size), int(cfg["model"]["codebook_size"]))
    if predictions_out is not None:
        pq.write_table(pa.table(res["_arrays"]), predictions_out)
    return {k: v for k, v in res.items() if not k.startswith("_")}


def paired_interval(predictions_a: str | Path, predictions_b: str | Path, metric: str = "auc",
                    n_boot: int = 1000, seed: int = 0) -> PairedInterval:
    """Paired-bootstrap interval of metric(A) − metric(B) from two predictions files of the
    same test rows (:func:`tarq.metrics.paired_bootstrap`).

    Raises:
        ValueError: the files do not hold the same rows in the same order.
    """
    a = pq.read_table(predictions_a, columns=["label", "score", "user_id", "item_id"])
    b = pq.read_table(predictions_b, columns=["label", "score", "user_id", "item_id"])
    for col in ("label", "user_id", "item_id"):
        if a.num_rows != b.num_rows or not a.column(col).equals(b.column(col)):
            raise ValueError(f"{predictions_a} and {predictions_b} do not score the same rows "
                             f"in the same order ({col} differs)")
    return paired_bootstrap(a.column("label").to_numpy(), a.column("score").to_numpy(),
                            b.column("score").to_numpy(), a.column("user_id").to_numpy(),
                            metric=metric, n_boot=n_boot, seed=seed)
