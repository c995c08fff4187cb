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

from tarq.data.features import FeatureLayout, Vocab
from tarq.data.loader import BatchStream, SampleSet
from tarq.train import evaluate, load_trained


def evaluate_model_dir(
    model_dir: str | Path, samples_dir: str | Path, split: str = "test", batch_size: int = 4096
) -> dict[str, Any]:
    """Metrics of the trained model in ``model_dir`` on ``split`` of ``samples_dir``.

    Returns the same keys as the training loop's test metrics (auc, gauc, logloss and, for
    TARQ variants, utilization_batch, utilization_catalog, collision_rate), without arrays.

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
    return {k: v for k, v in res.items() if not k.startswith("_")}
