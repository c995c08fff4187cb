"""``build_model(name, layout, config)``: every model of the comparison by name."""

from __future__ import annotations

import dataclasses

from tarq.data.features import FeatureLayout
from tarq.defaults import MODEL_NAMES
from tarq.model.base import TarqModule
from tarq.model.config import ModelConfig
from tarq.model.inttower import IntTower
from tarq.model.mvke import MVKE
from tarq.model.pooled import PooledTwoTower
from tarq.model.ta import TargetAttentionModel
from tarq.model.tarq import TarqModel
from tarq.model.tt import TwoTower

TARQ_VARIANTS = ("tarq", "tarq_no_align", "tarq_no_teacher_align")


def build_model(name: str, layout: FeatureLayout, config: ModelConfig | None = None) -> TarqModule:
    """A fresh model.

    Names: ``tarq`` (full), ``tarq_no_align`` (λ6 = 0, alignment off),
    ``tarq_no_teacher_align`` (no teacher, distillation or alignment: TT + RQ-Attention),
    ``tt``, ``inttower``, ``mvke``, ``ta`` (backbone + full target attention), ``pooled``
    (the sanity two-tower: mean-pooled history, dot product, per-item bias).
    """
    config = config or ModelConfig()
    if name == "tarq":
        return TarqModel(layout, config, teacher=True, align=True, name=name)
    if name == "tarq_no_align":
        cfg = dataclasses.replace(config, lambda_align=0.0)
        return TarqModel(layout, cfg, teacher=True, align=False, name=name)
    if name == "tarq_no_teacher_align":
        cfg = dataclasses.replace(config, lambda_align=0.0, lambda_tar=0.0, lambda_distill=0.0)
        return TarqModel(layout, cfg, teacher=False, align=False, name=name)
    builders = {
        "tt": TwoTower,
        "inttower": IntTower,
        "mvke": MVKE,
        "ta": TargetAttentionModel,
        "pooled": PooledTwoTower,
    }
    if name not in builders:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    return builders[name](layout, config)
