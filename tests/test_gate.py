"""The champion gate's pure decision logic (tarq.release.gate)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tarq.metrics import PairedInterval
from tarq.release.gate import GateConfig, decide


def _names(decision) -> dict[str, bool]:
    return {c.name: c.passed for c in decision.checks}


def test_first_promotion_needs_only_tt_and_semantic_ids() -> None:
    d = decide({"auc": 0.71}, {"auc": 0.70}, None, True)
    assert d.promote
    assert _names(d) == {"semantic_ids": True, "beats_tt": True, "vs_champion": True}
    assert d.reason.startswith("promoted:") and "no current champion" in d.reason


def test_not_beating_tt_rejects_with_numbers() -> None:
    d = decide({"auc": 0.70}, {"auc": 0.70}, None, True)
    assert not d.promote
    assert "beats_tt" in d.reason and "0.7000" in d.reason and "gain +0.0000" in d.reason


def test_min_gain_over_tt() -> None:
    cfg = GateConfig(min_gain_over_tt=0.01)
    assert not decide({"auc": 0.705}, {"auc": 0.70}, None, True, config=cfg).promote
    assert decide({"auc": 0.711}, {"auc": 0.70}, None, True, config=cfg).promote


def test_champion_tolerance_boundary() -> None:
    cfg = GateConfig(champion_tolerance=0.01)
    champ = {"auc": 0.75}
    assert decide({"auc": 0.741}, {"auc": 0.70}, champ, True, config=cfg).promote
    d = decide({"auc": 0.739}, {"auc": 0.70}, champ, True, config=cfg)
    assert not d.promote and _names(d)["vs_champion"] is False
    assert "same test day" in d.reason


def test_champion_from_its_own_day_is_named_as_such() -> None:
    d = decide({"auc": 0.70}, {"auc": 0.69}, {"auc": 0.80}, True, champion_same_day=False)
    assert not d.promote and "champion's own test day" in d.reason


def test_failed_semantic_ids_block_promotion_and_are_quoted() -> None:
    d = decide({"auc": 0.9}, {"auc": 0.6}, None, False, "coverage 0.98 < 1")
    assert not d.promote and "semantic_ids" in d.reason and "coverage 0.98 < 1" in d.reason
    # Only when the operator explicitly waives the requirement.
    assert decide(
        {"auc": 0.9}, {"auc": 0.6}, None, False, config=GateConfig(require_semantic_ids=False)
    ).promote


def test_every_failed_check_is_listed() -> None:
    d = decide({"auc": 0.60}, {"auc": 0.65}, {"auc": 0.70}, False)
    assert not d.promote
    assert all(n in d.reason for n in ("semantic_ids", "beats_tt", "vs_champion"))


def test_missing_metrics_fail_clearly() -> None:
    assert "no TT auc" in decide({"auc": 0.7}, None, None, True).reason
    assert (
        "TARQ has no test-day auc" in decide({"auc": float("nan")}, {"auc": 0.6}, None, True).reason
    )


def test_gauc_metric_and_config_validation() -> None:
    d = decide(
        {"auc": 0.6, "gauc": 0.7},
        {"auc": 0.7, "gauc": 0.65},
        None,
        True,
        config=GateConfig(metric="gauc"),
    )
    assert d.promote and "gauc" in d.reason
    with pytest.raises(ValueError, match="gate metric"):
        GateConfig(metric="logloss")
    with pytest.raises(ValueError, match="champion_tolerance"):
        GateConfig(champion_tolerance=-1)


def test_decision_serialises() -> None:
    d = decide({"auc": 0.71}, {"auc": 0.70}, {"auc": 0.71}, True).to_dict()
    assert d["promote"] is True and len(d["checks"]) == 3
    assert set(d["checks"][0]) == {"name", "passed", "detail"}


def test_gate_module_is_pure() -> None:
    src = (Path(__file__).resolve().parents[1] / "tarq" / "release" / "gate.py").read_text()
    imported = {
        a.name.split(".")[0]
        for n in ast.walk(ast.parse(src))
        if isinstance(n, ast.Import)
        for a in n.names
    }
    imported |= {
        n.module.split(".")[0]
        for n in ast.walk(ast.parse(src))
        if isinstance(n, ast.ImportFrom) and n.module
    }
    assert not imported & {"prefect", "mlflow", "torch"}


def _iv(delta: float, low: float, high: float) -> PairedInterval:
    return PairedInterval("auc", delta, low, high, 0.95, 1000, 500)


def test_a_challenger_inside_the_noise_is_promoted_as_the_fresher_model() -> None:
    # 0.012 below the champion, beyond the tolerance, but the interval straddles 0.
    d = decide(
        {"auc": 0.700},
        {"auc": 0.690},
        {"auc": 0.712},
        True,
        vs_tt=_iv(0.01, 0.002, 0.018),
        vs_champion=_iv(-0.012, -0.03, 0.006),
    )
    assert d.promote, d.reason
    assert "inside the noise, so the fresher challenger is promoted" in d.reason
    assert "95% interval [+0.0020, +0.0180]: significant" in d.reason


def test_a_significantly_worse_challenger_is_refused() -> None:
    d = decide(
        {"auc": 0.700}, {"auc": 0.690}, {"auc": 0.712}, True, vs_champion=_iv(-0.012, -0.02, -0.004)
    )
    assert not d.promote and "vs_champion" in d.reason and ": significant" in d.reason
    # Significantly worse but within the tolerance: the fresher model still wins.
    d = decide(
        {"auc": 0.708},
        {"auc": 0.690},
        {"auc": 0.712},
        True,
        vs_champion=_iv(-0.004, -0.006, -0.002),
    )
    assert d.promote, d.reason


def test_an_interval_from_another_day_is_not_used_against_the_champion() -> None:
    d = decide(
        {"auc": 0.700},
        {"auc": 0.690},
        {"auc": 0.712},
        True,
        champion_same_day=False,
        vs_champion=_iv(-0.012, -0.03, 0.006),
    )
    assert not d.promote and "champion's own test day" in d.reason


def test_tt_must_be_significant_when_asked() -> None:
    cfg = GateConfig(tt_must_be_significant=True)
    inside = decide(
        {"auc": 0.70}, {"auc": 0.69}, None, True, config=cfg, vs_tt=_iv(0.01, -0.002, 0.02)
    )
    assert not inside.promote and "inside the noise" in inside.reason
    assert decide(
        {"auc": 0.70}, {"auc": 0.69}, None, True, config=cfg, vs_tt=_iv(0.01, 0.002, 0.02)
    ).promote
    assert not decide({"auc": 0.70}, {"auc": 0.69}, None, True, config=cfg).promote  # no interval
    assert decide(
        {"auc": 0.70}, {"auc": 0.69}, None, True, vs_tt=_iv(0.01, -0.002, 0.02)
    ).promote  # default: the point gain decides
