"""Figures and tables logged to the day's run: the comparison as markdown, ROC curves of
every model, per-level codebook usage."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table of ``rows`` (columns from the first row; floats with 4 decimals)."""
    if not rows:
        return "(no rows)\n"
    cols = list(rows[0].keys())
    for r in rows[1:]:
        cols += [k for k in r if k not in cols]

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4f}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(k)) for k in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def roc_figure(predictions: Mapping[str, Path], out: Path) -> None:
    """ROC curves of every model's test-day predictions on one figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pyarrow.parquet as pq
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = plt.subplots(figsize=(6, 6))
    for name, path in predictions.items():
        t = pq.read_table(path, columns=["label", "score"])
        y, p = t.column("label").to_numpy(), t.column("score").to_numpy()
        if y.min() == y.max():
            continue
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y, p):.4f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="Test-day ROC")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def codebook_figure(ids_path: Path, out: Path) -> None:
    """Per-level code usage over the catalog: a level × entry heat map of item shares."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from tarq.ids.semantic_ids import read_ids

    meta, _, codes, _ = read_ids(ids_path)
    m = codes.shape[1]
    k = int(meta.get("K") or codes.max() + 1)
    counts = np.stack([np.bincount(codes[:, j], minlength=k)[:k] for j in range(m)])
    share = counts / max(codes.shape[0], 1)
    used = (counts > 0).mean(axis=1)
    fig, ax = plt.subplots(figsize=(max(6, k * 0.45), max(3, m * 0.45)))
    im = ax.imshow(share, aspect="auto", cmap="viridis")
    ax.set_yticks(range(m), [f"level {j} ({used[j]:.0%} used)" for j in range(m)])
    ax.set(xlabel="codebook entry", title=f"Catalog code usage ({codes.shape[0]:,} items)")
    fig.colorbar(im, ax=ax, label="share of items")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
