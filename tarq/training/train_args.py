"""Flags of ``tarq train`` (kept free of torch so the CLI starts fast)."""

from __future__ import annotations

import argparse
from pathlib import Path

from tarq.defaults import MODEL_NAMES as MODEL_CHOICES


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``tarq train`` flags to ``p``."""
    p.add_argument("--samples", type=Path, required=True, help="folder from build-samples")
    p.add_argument("--model", choices=MODEL_CHOICES, default="tarq")
    p.add_argument("--out", type=Path, required=True, help="where weights and metrics go")
    p.add_argument("--config", type=Path, default=None, help="JSON/TOML with model/train sections")
    p.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    p.add_argument("--max-steps", type=int, default=None, help="cap steps per epoch")
    p.add_argument(
        "--fresh",
        "--no-resume",
        dest="no_resume",
        action="store_true",
        help="start over, ignoring a checkpoint in --out (by default a checkpoint "
        "is resumed only when made from the same samples and settings)",
    )
    p.add_argument(
        "--warm-from",
        type=Path,
        default=None,
        help="continue this trained model directory (vocabularies extended)",
    )
    p.add_argument(
        "--since-day",
        default=None,
        help="with --warm-from: train only on sample days after YYYY-MM-DD",
    )
    p.add_argument(
        "--replay",
        type=int,
        default=0,
        help="with --since-day: also replay this %% of the older days' rows",
    )
    p.add_argument(
        "--fresh-optimizer",
        action="store_true",
        help="with --warm-from: do not carry the parent's optimizer state",
    )
