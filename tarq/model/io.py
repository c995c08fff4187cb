"""Saving and loading model weights: the one place the library touches ``torch.load``.

Weights are plain ``state_dict`` files read with weights-only loading, so a tampered or
foreign pickle is refused before anything in it runs; a model directory (``tarq train``
output) is rebuilt from its ``config.json`` and ``layout.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from tarq.data.features import FeatureLayout, Vocab
from tarq.model.config import ModelConfig
from tarq.model.registry import build_model


class UntrustedModelError(ValueError):
    """A weights or checkpoint file that weights-only loading refused (never unpickled)."""


def load_weights(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True)`` with a clear error naming the file.

    Weights-only loading accepts tensors, plain containers and numbers only; a file that
    holds any other Python object (a tampered or foreign pickle) is refused before anything
    in it runs, wherever the file came from.

    Raises:
        UntrustedModelError: the file is not a plain-tensor file (tampered, foreign or
            truncated); the message names the file and says why.
        FileNotFoundError: the file does not exist.
    """
    p = Path(path)
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = next(
            (ln for ln in lines if "global" in ln.lower()),
            lines[0].split(". ")[0] if lines else type(exc).__name__,
        ).rstrip(".")
        kind = (
            "weights only loading refused it"
            if "eights only" in str(exc)
            else "it is not a readable torch weights file"
        )
        raise UntrustedModelError(
            f"{p}: refused to load: {kind} ({detail}). Nothing in it was unpickled; do not "
            "load it with weights_only=False unless you trust where it came from"
        ) from exc


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file renamed over ``path``: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def load_trained(model_dir: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a trained model from ``model_dir`` with weights-only loading (no unpickling).

    Returns:
        (the model in eval mode, the directory's config.json as a dict).
    """
    d = Path(model_dir)
    cfg = json.loads((d / "config.json").read_text(encoding="utf-8"))
    layout = FeatureLayout.load(d / "layout.json")
    model = build_model(cfg["model_name"], layout, ModelConfig.from_saved(cfg["model"]))
    state = load_weights(d / "model.pt")
    model.load_state_dict(state)
    model.eval()
    return model, cfg


def load_for_scoring(
    model_dir: str | Path,
) -> tuple[torch.nn.Module, FeatureLayout, dict[str, Vocab]]:
    """A trained model in eval mode with what encoding a request needs: its layout and the
    vocabularies of its user and item fields (serving, the replay, the A/B rankers)."""
    d = Path(model_dir)
    model, _ = load_trained(d)
    layout = FeatureLayout.load(d / "layout.json")
    fields = dict.fromkeys([*layout.user_fields, *layout.item_fields])
    return model, layout, {f: Vocab.load(d / "vocab" / f"{f}.parquet") for f in fields}
