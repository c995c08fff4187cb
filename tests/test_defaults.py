"""One source per constant: the torch-free defaults agree with what they name."""

from __future__ import annotations

import os

import pytest

from tarq import defaults
from tarq.data.demo_world import PRESETS
from tarq.data.features import FeatureLayout
from tarq.model.registry import build_model
from tarq.runtime.telemetry import TELEMETRY_OFF, disable_telemetry


def test_presets_and_models_named_once_are_the_real_ones() -> None:
    assert tuple(PRESETS) == defaults.PRESETS
    # test_model builds and trains every name of MODEL_NAMES; an unknown one is refused.
    assert len(set(defaults.MODEL_NAMES)) == 8
    with pytest.raises(ValueError, match="choose one of tarq, tt, inttower"):
        build_model("dnn", FeatureLayout(user_fields=[], item_fields=[]))
    assert set(defaults.DAILY_MODELS) | set(defaults.ABLATIONS) | set(
        defaults.SANITY_BASELINES
    ) == set(defaults.MODEL_NAMES)
    assert FeatureLayout(user_fields=[], item_fields=[]).seq_len == defaults.SEQ_LEN


def test_telemetry_opt_outs_do_not_override_a_users_choice(monkeypatch) -> None:
    for key in TELEMETRY_OFF:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("DO_NOT_TRACK", "0")
    disable_telemetry()
    assert os.environ["DO_NOT_TRACK"] == "0"
    assert all(os.environ[k] == v for k, v in TELEMETRY_OFF.items() if k != "DO_NOT_TRACK")
