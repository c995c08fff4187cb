"""benchmarks/_harness.py: the pieces the benchmark scripts share."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import pytest

from tests.scripts import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "_harness.py"


@pytest.fixture(scope="module")
def harness():
    return load_script("benchmarks/_harness.py", "bench_harness")


def test_percentiles_ms_match_numpy(harness):
    rng = np.random.default_rng(0)
    seconds = list(rng.lognormal(-5, 1, size=1001))
    got = harness.percentiles_ms(seconds)
    assert list(got) == ["p50_ms", "p90_ms", "p99_ms"]
    ms = np.asarray(seconds) * 1e3  # as http_load / serve_follow computed them
    for q in (50, 90, 99):
        assert got[f"p{q}_ms"] == float(np.percentile(ms, q))
    # Linear interpolation between order statistics, not the nearest one.
    assert harness.percentiles_ms([0.001, 0.002], (50,)) == {"p50_ms": 1.5}
    assert harness.percentiles_ms([0.001, 0.002], (50,), method="lower") == {"p50_ms": 1.0}
    # Seconds given as an array (serve_follow): the same figures.
    assert harness.percentiles_ms(np.asarray(seconds), (50, 99)) == {
        k: got[k] for k in ("p50_ms", "p99_ms")
    }


def test_markdown_table_text(harness):
    text = harness.markdown_table(
        ("model", "AUC", "rows"),
        [["tt", "0.7361", f"{12345:,}"], ["tarq", 0.75, 7], "| ta | failed | |"],
        "lrr",
    )
    assert text == (
        "| model | AUC | rows |\n"
        "|---|---:|---:|\n"
        "| tt | 0.7361 | 12,345 |\n"
        "| tarq | 0.75 | 7 |\n"
        "| ta | failed | |"
    )
    assert harness.markdown_table(("a", "b"), []) == "| a | b |\n|---|---|"
    assert harness.markdown_table("a | b c|d", [[1, 2, 3]], "rlr") == (
        "| a | b c | d |\n|---:|---|---:|\n| 1 | 2 | 3 |"
    )
    assert harness.markdown_table(("a",), [], "c").splitlines()[1] == "|:---:|"
    with pytest.raises(ValueError, match="2 columns"):
        harness.markdown_table(("a", "b", "c"), [], "lr")


def test_write_json_round_trip(harness, tmp_path):
    payload = {"rows": [{"auc": 0.75, "p50_ms": 1.5}], "meta": {"argv": ["--x", "1"]}}
    path = harness.write_json(tmp_path / "new" / "dir" / "results.json", payload)
    assert path == tmp_path / "new" / "dir" / "results.json"
    text = path.read_text(encoding="utf-8")
    assert json.loads(text) == payload
    assert text == json.dumps(payload, indent=2) + "\n"
    with pytest.raises(TypeError):
        harness.write_json(tmp_path / "p.json", {"path": tmp_path})
    harness.write_json(tmp_path / "p.json", {"path": tmp_path}, default=str)
    assert json.loads((tmp_path / "p.json").read_text()) == {"path": str(tmp_path)}


def test_quiet_check_warns_on_a_busy_machine(harness, monkeypatch, capsys):
    monkeypatch.setattr(os, "getloadavg", lambda: (3.456, 2.0, 1.0))
    assert harness.quiet_check(max_load=1.0) == [3.46, 2.0, 1.0]
    err = capsys.readouterr().err
    assert "busy machine" in err
    assert "1-minute load average 3.46 > 1.00" in err
    assert "rerun" in err
    # Under the threshold: the reading, no warning; ndigits=None: as the system gives it.
    assert harness.quiet_check(max_load=4.0, ndigits=None) == [3.456, 2.0, 1.0]
    assert capsys.readouterr().err == ""
    # The default threshold is half the cores.
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    harness.quiet_check()
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(os, "getloadavg", lambda: (4.01, 0.0, 0.0))
    harness.quiet_check()
    assert "4.01 > 4.00 (8 cores)" in capsys.readouterr().err


def test_quiet_check_without_load_average(harness, monkeypatch, capsys):
    def unavailable() -> tuple[float, float, float]:
        raise OSError("no load average here")

    monkeypatch.setattr(os, "getloadavg", unavailable)
    assert harness.load_average() is None
    assert harness.quiet_check(max_load=0.0) is None
    assert capsys.readouterr().err == ""


def test_stopwatch(harness):
    clock = harness.Stopwatch()
    time.sleep(0.01)
    first = clock.seconds
    assert first >= 0.01
    assert clock.seconds >= first  # still running
    stopped = clock.stop()
    assert stopped >= first
    time.sleep(0.01)
    assert clock.seconds == stopped  # frozen once stopped
    with harness.timed() as t:
        time.sleep(0.01)
    frozen = t.seconds
    assert frozen >= 0.01
    time.sleep(0.01)
    assert t.seconds == frozen


def test_machine_git_and_environment(harness):
    m = harness.machine(threads=2, load_avg_before=None)
    assert list(m) == ["platform", "cpus", "python", "torch", "threads", "load_avg_before"]
    assert m["cpus"] == os.cpu_count() and m["threads"] == 2
    assert harness.machine_line() == f"{platform.machine()}, {os.cpu_count()} cores"
    meta = harness.run_meta()
    assert list(meta) == ["machine", "cpus", "argv"]
    env = harness.environment("x.py", ["--a", "1"], time.perf_counter() - 2.0)
    assert env["command"] == "python benchmarks/x.py --a 1"
    assert env["seconds"] >= 2.0
    assert "git" not in env
    if (SCRIPT.parents[1] / ".git").exists():
        git = harness.environment("x.py", [], time.perf_counter(), git=True)["git"]
        assert len(git["commit"]) == 40 and isinstance(git["dirty"], bool)
        assert len(harness.git_state(SCRIPT.parents[1])["commit"]) == 40


def test_assignment_reads_json_values_or_keeps_text(harness) -> None:
    assert harness.assignment("rq_history=user") == ("rq_history", "user")
    assert harness.assignment("lambda_align=0.2") == ("lambda_align", 0.2)
    assert harness.assignment("shared_history=true") == ("shared_history", True)
    assert harness.assignment("tower_hidden=[64,32]") == ("tower_hidden", [64, 32])
    assert harness.assignment("note=a=b") == ("note", "a=b")
    with pytest.raises(ValueError):
        harness.assignment("rq_history")
