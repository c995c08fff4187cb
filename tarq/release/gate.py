"""The champion gate: may today's TARQ challenger replace the served champion?

Pure decision logic (no Prefect, MLflow or torch) so it can be tested exhaustively and
reused by any orchestrator. The ``champion`` alias moves only when

1. the semantic-ID checks of the challenger passed (FAISS agreement, coverage, health),
2. TARQ beats the two-tower baseline (TT) trained on the same samples, on the same test day,
3. TARQ is not worse than the current champion beyond a tolerance — compared on the *same*
   test day (the flow re-scores the champion on today's test samples), falling back to the
   champion's own recorded figure only when re-scoring was impossible.

The noise of one test day is measured, not guessed: the flow passes paired-bootstrap
intervals (:func:`tarq.metrics.paired_bootstrap`, users resampled) of TARQ − TT and of
challenger − champion. The rule with them:

- **vs TT**: the point gain must exceed ``min_gain_over_tt`` (design contract: TARQ beats the
  model it would replace); with ``tt_must_be_significant`` the interval must also lie above 0.
  The reason says whether the gain is inside the noise.
- **vs champion**: the challenger is refused when it is worse by more than
  ``champion_tolerance`` *and* the interval lies wholly below 0 (significantly worse). A
  difference inside the noise promotes: the challenger has seen every day the champion saw
  plus the newer ones (continuous training), so when the test day cannot tell them apart the
  fresher model is served. Without an interval the tolerance alone decides.

Higher is better for every gated metric (AUC, GAUC); a lower-is-better metric such as
log-loss is not accepted as the gate metric.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from tarq.metrics import PairedInterval

GATE_METRICS = ("auc", "gauc")


@dataclass(frozen=True)
class GateConfig:
    """Thresholds of the gate.

    Attributes:
        metric: the test-day metric compared (``auc`` or ``gauc``; higher is better).
        min_gain_over_tt: TARQ must exceed TT by more than this (0 = strictly better).
        champion_tolerance: TARQ may be at most this much below the champion.
        require_semantic_ids: refuse promotion when the semantic-ID checks did not pass.
        tt_must_be_significant: also require the TARQ − TT interval to lie above 0.
    """

    metric: str = "auc"
    min_gain_over_tt: float = 0.0
    champion_tolerance: float = 0.005
    require_semantic_ids: bool = True
    tt_must_be_significant: bool = False

    def __post_init__(self) -> None:
        if self.metric not in GATE_METRICS:
            raise ValueError(f"gate metric must be one of {GATE_METRICS}, got {self.metric!r}")
        if self.champion_tolerance < 0:
            raise ValueError(f"champion_tolerance must be >= 0, got {self.champion_tolerance}")


@dataclass(frozen=True)
class GateCheck:
    """One condition of the gate with the numbers it looked at."""

    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class GateDecision:
    """The verdict: ``promote`` and a one-line ``reason`` naming every failed check."""

    promote: bool
    reason: str
    checks: tuple[GateCheck, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for tags, artifacts and logs)."""
        return {
            "promote": self.promote,
            "reason": self.reason,
            "checks": [asdict(c) for c in self.checks],
        }


def _value(metrics: Mapping[str, Any] | None, metric: str) -> float | None:
    if metrics is None:
        return None
    v = metrics.get(metric)
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) else v


def _noise(interval: PairedInterval | None) -> str:
    if interval is None:
        return ""
    verdict = "significant" if interval.significant else "inside the noise"
    return f", 95% interval [{interval.low:+.4f}, {interval.high:+.4f}]: {verdict}"


def decide(
    tarq: Mapping[str, Any],
    tt: Mapping[str, Any] | None,
    champion: Mapping[str, Any] | None,
    semantic_ids_ok: bool,
    semantic_ids_detail: str = "",
    config: GateConfig | None = None,
    champion_same_day: bool = True,
    vs_tt: PairedInterval | None = None,
    vs_champion: PairedInterval | None = None,
) -> GateDecision:
    """Decide whether the TARQ challenger becomes the champion.

    Args:
        tarq: the challenger's test-day metrics (``{"auc": ..., "gauc": ...}``).
        tt: the two-tower baseline's metrics on the same test day; ``None`` when TT was not
            trained, which fails the gate (there is nothing to beat).
        champion: the current champion's metrics, ideally re-scored on the same test day;
            ``None`` when there is no champion yet (the first promotion).
        semantic_ids_ok: whether the semantic-ID assignment passed its checks.
        semantic_ids_detail: what the semantic-ID checks said (quoted in the reason).
        config: thresholds (defaults: AUC, strictly better than TT, tolerance 0.005).
        champion_same_day: whether ``champion`` was measured on the same test day.
        vs_tt: paired-bootstrap interval of TARQ − TT on the test day (same metric).
        vs_champion: the same for challenger − champion (re-scored on the same day).

    Returns:
        A :class:`GateDecision`; ``reason`` lists the failed checks, or summarises the pass.
    """
    cfg = config or GateConfig()
    m = cfg.metric
    checks: list[GateCheck] = []

    if cfg.require_semantic_ids:
        checks.append(
            GateCheck(
                "semantic_ids",
                bool(semantic_ids_ok),
                ("semantic-ID checks passed" if semantic_ids_ok else "semantic-ID checks failed")
                + (f" ({semantic_ids_detail})" if semantic_ids_detail else ""),
            )
        )

    ours = _value(tarq, m)
    if ours is None:
        checks.append(GateCheck("tarq_metric", False, f"TARQ has no test-day {m}"))
    else:
        base = _value(tt, m)
        if base is None:
            checks.append(GateCheck("beats_tt", False, f"no TT {m} on the same test day to beat"))
        else:
            gain = ours - base
            ok = gain > cfg.min_gain_over_tt
            if cfg.tt_must_be_significant:
                ok = ok and vs_tt is not None and vs_tt.low > 0
            checks.append(
                GateCheck(
                    "beats_tt",
                    ok,
                    f"TARQ {m} {ours:.4f} vs TT {base:.4f} (gain {gain:+.4f}, "
                    f"needs > {cfg.min_gain_over_tt:+.4f}"
                    + (", interval above 0" if cfg.tt_must_be_significant else "")
                    + ")"
                    + _noise(vs_tt),
                )
            )
        champ = _value(champion, m)
        if champ is None:
            checks.append(GateCheck("vs_champion", True, "no current champion"))
        else:
            delta = ours - champ
            where = "same test day" if champion_same_day else "champion's own test day"
            interval = vs_champion if champion_same_day else None
            beyond = delta < -cfg.champion_tolerance
            worse = beyond and (interval is None or interval.high < 0)
            note = ""
            if beyond and not worse:
                note = "; inside the noise, so the fresher challenger is promoted"
            checks.append(
                GateCheck(
                    "vs_champion",
                    not worse,
                    f"TARQ {m} {ours:.4f} vs champion {champ:.4f} on the {where} "
                    f"(Δ {delta:+.4f}, tolerance {cfg.champion_tolerance:.4f})"
                    + _noise(interval)
                    + note,
                )
            )

    failed = [c for c in checks if not c.passed]
    if failed:
        reason = "rejected: " + "; ".join(f"{c.name}: {c.detail}" for c in failed)
        return GateDecision(False, reason, tuple(checks))
    reason = "promoted: " + "; ".join(c.detail for c in checks)
    return GateDecision(True, reason, tuple(checks))
