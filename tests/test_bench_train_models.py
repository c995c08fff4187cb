"""benchmarks/train_models.py runs end to end on the tiny demo preset (2 steps per model)."""

from __future__ import annotations

import json

import pytest

from tests.scripts import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("benchmarks/train_models.py", "train_models_bench")


def test_tiny_end_to_end(bench, tmp_path, capsys):
    out = tmp_path / "bench"
    rc = bench.main(
        [
            "--dataset",
            "demo-tiny",
            "--models",
            "tt",
            "ta",
            "tarq",
            "tarq_no_align",
            "--variant",
            "tarq_sum=tarq:fusion=sum",
            "--epochs",
            "1",
            "--max-steps",
            "2",
            "--batch-size",
            "64",
            "--valid-split",
            "time",
            "--threads",
            "1",
            "--bootstrap",
            "10",
            "--out",
            str(out),
            "--markdown",
        ]
    )
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["models"] == ["tt", "ta", "tarq", "tarq_no_align", "tarq_sum"]
    assert {r["model"] for r in res["runs"]} == set(res["models"])
    assert all("error" not in r for r in res["runs"])
    tarq = next(r for r in res["runs"] if r["model"] == "tarq")
    assert 0 < tarq["utilization_batch"] <= 1 and 0 <= tarq["collision_rate"] <= 1
    assert next(r for r in res["runs"] if r["model"] == "tarq_sum")["model_overrides"] == {
        "fusion": "sum"
    }
    for key in ("auc_tarq_minus_tt", "gap_recovered", "utilization_batch_tarq_vs_tarq_no_align"):
        assert key in res["derived"]
    ci = res["derived"]["auc_tarq_minus_tt"]["ci95_bootstrap_users_seeds"]
    assert ci["seeds"] == 1 and ci["lo"] <= ci["hi"]
    # The temporal slice selects epochs; the random slice and the sharpness are reported.
    assert 0 <= tarq["valid_random_auc"] <= 1
    assert 0 < tarq["align_max_prob_p"] <= 1 and 0 < tarq["align_max_prob_p_hat"] <= 1
    table = capsys.readouterr().out
    assert "| tarq |" in table and "TARQ − TT AUC" in table and "TA − TT AUC" in table
    gap = res["derived"]["gap_recovered"]
    assert (
        len(gap["per_seed"]) == 1
        and "ci95_bootstrap_users_seeds" in res["derived"]["auc_ta_minus_tt"]
    )
    # --summarise recomputes the figures from the results file alone, identically.
    again = tmp_path / "again.json"
    assert (
        bench.main(
            ["--summarise", str(out / "results.json"), "--json", str(again), "--bootstrap", "10"]
        )
        == 0
    )
    assert json.loads(again.read_text())["derived"] == res["derived"]
    assert capsys.readouterr().out.strip() in table
    # Samples are built once and reused by a second invocation.
    meta = (out / "samples" / "meta.json").stat().st_mtime_ns
    assert (
        bench.main(
            [
                "--dataset",
                "demo-tiny",
                "--models",
                "tt",
                "--epochs",
                "1",
                "--max-steps",
                "1",
                "--batch-size",
                "64",
                "--threads",
                "1",
                "--bootstrap",
                "0",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert (out / "samples" / "meta.json").stat().st_mtime_ns == meta
