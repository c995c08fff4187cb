"""Warm start: continue a trained model on new days instead of training from scratch.

The mechanics only (which parent, and whether to warm-start at all, is :mod:`tarq.release.lineage`):

- **Vocabularies are extended, never rebuilt.** Every id the parent knew keeps its index
  (:meth:`tarq.data.features.Vocab.extend`), ids new in today's samples are appended, ids
  absent today keep their rows. The child's embedding tables are the parent's, bit for bit,
  with fresh rows appended for the new ids.
- **Everything else is copied as is**, the quantizer's ``initialized`` flag included, so the
  codebooks continue (no k-means re-initialisation) and the semantic IDs move only as far as
  the new days' gradients move them.
- **The optimizer state is carried** when the parent saved it (``optimizer.pt``): Adam's
  moments of the grown embedding tables are padded with zeros for the new rows. Starting Adam
  afresh on a trained model makes its first steps full-size (the bias correction divides the
  first moments by ~0.1), which is what moved the IDs most in the measurements in
  ``benchmarks/README.md``.

A parent is *compatible* when it is the same model with the same :class:`ModelConfig` and the
same feature layout (fields and sequence length; vocabulary sizes may grow). Anything else
is refused with :class:`IncompatibleParentError`; the daily job then trains cold.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tarq.data.features import FeatureLayout, Vocab
from tarq.data.loader import SampleSet
from tarq.model import ModelConfig

OPTIMIZER_FILE = "optimizer.pt"


class IncompatibleParentError(ValueError):
    """The parent model cannot be continued with these settings (a cold run is needed)."""


@dataclass(frozen=True)
class WarmStart:
    """How to continue a parent model.

    Attributes:
        parent_dir: the parent's model directory (``tarq train`` output).
        since_day: train only on sample days after this one (the parent's last training
            day); None trains on every day of the samples.
        replay_folds: also replay this percentage (0–100) of the older days' rows.
        carry_optimizer: load the parent's optimizer state when it saved one.
    """

    parent_dir: Path
    since_day: dt.date | None = None
    replay_folds: int = 0
    carry_optimizer: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "parent_dir": str(self.parent_dir),
            "since_day": str(self.since_day) if self.since_day else None,
            "replay_folds": self.replay_folds,
            "carry_optimizer": self.carry_optimizer,
        }


@dataclass
class Parent:
    """A loaded parent model directory."""

    root: Path
    model_name: str
    model_config: dict[str, Any]
    layout: FeatureLayout
    vocabs: dict[str, Vocab]
    state: dict[str, torch.Tensor]
    optimizer: dict[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


def layout_signature(layout: FeatureLayout) -> dict[str, Any]:
    """What must not change between parent and child: fields and sequence length."""
    return {
        "user_fields": list(layout.user_fields),
        "item_fields": list(layout.item_fields),
        "seq_fields": list(layout.seq_fields),
        "seq_len": int(layout.seq_len),
    }


def incompatibility(
    parent_dir: Path, model_name: str, model_config: ModelConfig, layout: FeatureLayout
) -> str | None:
    """Why ``parent_dir`` cannot be continued as ``model_name`` with these settings, or None.

    Reads only the parent's ``config.json`` and ``layout.json``.
    """
    root = Path(parent_dir)
    for f in ("config.json", "layout.json", "model.pt"):
        if not (root / f).is_file():
            return f"parent {root} lacks {f}"
    cfg = json.loads((root / "config.json").read_text(encoding="utf-8"))
    if cfg.get("model_name") != model_name:
        return f"parent is a {cfg.get('model_name')!r} model, not {model_name!r}"
    mine = model_config.to_dict()
    theirs = ModelConfig.from_saved(cfg.get("model", {})).to_dict()
    changed = sorted(k for k in mine if mine[k] != theirs.get(k))
    if changed:
        return "model config changed: " + ", ".join(
            f"{k} {theirs.get(k)!r} → {mine[k]!r}" for k in changed
        )
    old = layout_signature(FeatureLayout.load(root / "layout.json"))
    new = layout_signature(layout)
    if old != new:
        diff = sorted(k for k in new if new[k] != old.get(k))
        return "feature layout changed: " + ", ".join(
            f"{k} {old.get(k)!r} → {new[k]!r}" for k in diff
        )
    return None


def load_parent(
    parent_dir: Path,
    model_name: str,
    model_config: ModelConfig,
    layout: FeatureLayout,
    with_optimizer: bool = True,
) -> Parent:
    """Load a compatible parent (weights-only) or raise :class:`IncompatibleParentError`."""
    from tarq.model.io import load_weights

    root = Path(parent_dir)
    why = incompatibility(root, model_name, model_config, layout)
    if why is not None:
        raise IncompatibleParentError(f"cannot warm-start {model_name} from {root}: {why}")
    cfg = json.loads((root / "config.json").read_text(encoding="utf-8"))
    playout = FeatureLayout.load(root / "layout.json")
    names = {*playout.user_fields, *playout.item_fields}
    vocabs = {n: Vocab.load(root / "vocab" / f"{n}.parquet") for n in names}
    optim = None
    if with_optimizer and (root / OPTIMIZER_FILE).is_file():
        optim = load_weights(root / OPTIMIZER_FILE)
    metrics = {}
    if (root / "metrics.json").is_file():
        metrics = json.loads((root / "metrics.json").read_text(encoding="utf-8"))
    return Parent(
        root,
        model_name,
        cfg["model"],
        playout,
        vocabs,
        load_weights(root / "model.pt"),
        optim,
        metrics,
    )


def extend_sample_set(sset: SampleSet, parent: Parent) -> tuple[SampleSet, dict[str, int]]:
    """Today's samples seen through the parent's vocabularies, extended by today's ids.

    Returns:
        The sample set with the extended vocabularies and a layout whose ``vocab_sizes``
        fit them, and per field the number of ids added.
    """
    vocabs: dict[str, Vocab] = {}
    added: dict[str, int] = {}
    sizes = dict(sset.layout.vocab_sizes)
    for name, today in sset.vocabs.items():
        old = parent.vocabs.get(name)
        if old is None:
            raise IncompatibleParentError(f"parent {parent.root} has no vocabulary for {name!r}")
        ext = old.extend(today.values)
        vocabs[name] = ext
        added[name] = len(ext) - len(old)
        sizes[name] = len(ext)
    for name, n in parent.layout.vocab_sizes.items():
        if name not in vocabs:  # fixed-size tables (action, time_gap)
            sizes[name] = max(n, sizes.get(name, 0))
    layout = FeatureLayout(
        user_fields=list(sset.layout.user_fields),
        item_fields=list(sset.layout.item_fields),
        seq_fields=list(sset.layout.seq_fields),
        vocab_sizes=sizes,
        seq_len=sset.layout.seq_len,
    )
    return SampleSet(sset.root, layout, vocabs), added


def _embedding_keys(model: nn.Module) -> set[str]:
    return {
        f"{name}.weight" for name, mod in model.named_modules() if isinstance(mod, nn.Embedding)
    }


def load_state(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, tuple[int, int]]:
    """Copy a parent's ``state`` into ``model`` whose embedding tables may have more rows.

    Rows ``0 … n_parent − 1`` of each embedding table are the parent's, bit for bit; the rows
    after them keep the model's fresh initialisation.

    Returns:
        Per grown table: (parent rows, child rows).

    Raises:
        IncompatibleParentError: a key is missing, extra, or changed shape other than by
            growing an embedding table.
    """
    own = model.state_dict()
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or extra:
        raise IncompatibleParentError(
            f"parent weights do not fit: missing {missing[:5]}, unexpected {extra[:5]}"
        )
    emb = _embedding_keys(model)
    grown: dict[str, tuple[int, int]] = {}
    merged: dict[str, torch.Tensor] = {}
    for key, mine in own.items():
        theirs = state[key]
        if theirs.shape == mine.shape:
            merged[key] = theirs
            continue
        if (
            key in emb
            and theirs.dim() == 2
            and theirs.shape[1] == mine.shape[1]
            and theirs.shape[0] < mine.shape[0]
        ):
            t = mine.clone()
            t[: theirs.shape[0]] = theirs
            merged[key] = t
            grown[key] = (int(theirs.shape[0]), int(mine.shape[0]))
            continue
        raise IncompatibleParentError(
            f"parent weight {key} has shape {tuple(theirs.shape)}, the model {tuple(mine.shape)}"
        )
    model.load_state_dict(merged)
    return grown


def pad_optimizer_state(optim_state: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    """An Adam(W) state dict of the parent made to fit ``model``'s grown embedding tables.

    Per-parameter tensors of a parameter that grew along dim 0 get zero rows appended (a new
    id has no gradient history); everything else is kept.
    """
    params = list(model.parameters())
    state = {}
    for idx, st in optim_state.get("state", {}).items():
        p = params[int(idx)]
        fixed = {}
        for k, v in st.items():
            if isinstance(v, torch.Tensor) and v.dim() >= 1 and v.shape != p.shape:
                if v.dim() != p.dim() or v.shape[1:] != p.shape[1:] or v.shape[0] > p.shape[0]:
                    raise IncompatibleParentError(
                        f"optimizer state {k} of parameter {idx} has shape {tuple(v.shape)}, "
                        f"the parameter {tuple(p.shape)}"
                    )
                pad = v.new_zeros((p.shape[0] - v.shape[0], *v.shape[1:]))
                v = torch.cat([v, pad])
            fixed[k] = v
        state[idx] = fixed
    return {"state": state, "param_groups": optim_state["param_groups"]}
