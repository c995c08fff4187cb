"""Serving: the Scorer equals the model's training forward; fast paths; pyfunc wrapper."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tarq.data.features import PAD, FeatureLayout, Vocab
from tarq.data.loader import encode_fields
from tarq.ids.semantic_ids import IDS_FILE, assign_ids, read_ids
from tarq.model import ModelConfig, build_model
from tarq.release.publish import publish
from tarq.serving import (
    Scorer,
    UnknownItemError,
    encode_history,
    encode_user,
    target_attention_keys,
    target_attention_logits,
    tarq_logits,
    two_tower_logits,
    unit_rows,
)
from tarq.store.warehouse import connect
from tests.test_semantic_ids import NEW_ITEMS, TINY_MODEL, make_trained

USER = 3


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return make_served(tmp_path_factory.mktemp("serve"))


def make_served(root: Path) -> dict:
    """A tiny trained TARQ, its IDs assigned and published (export + manifest), a user's
    history and a request time after it."""
    db, model_dir = make_trained(root)
    report = assign_ids(db, model_dir, root / "ids", progress=False, max_collision_rate=None)
    pub = publish(db, root / "ids", run_date="2026-10-06", export_dir=root / "export")
    with connect(db, read_only=True) as con:
        beh = con.execute(
            "SELECT item_id, category_id, brand_id, action, ts FROM behaviors WHERE user_id = $u "
            "ORDER BY ts, row_id",
            {"u": USER},
        ).fetchall()
        items = con.sql(
            "SELECT it.* EXCLUDE (load_id, price), price_bucket(it.price) AS "
            "price_bucket FROM items it ORDER BY item_id"
        ).to_arrow_table()
    history = [
        dict(zip(("item_id", "category_id", "brand_id", "action", "ts"), b, strict=True))
        for b in beh
    ]
    # The training forward scores each item with its nearest entries: items whose published
    # codes differ (FAISS/torch ties, items moved off a shared tuple) are left out of the
    # comparisons with it.
    plain = root / "ids-plain"
    assign_ids(db, model_dir, plain, progress=False, max_collision_rate=None, resolve=False)
    _, ids, codes, _ = read_ids(root / "ids" / IDS_FILE)
    _, _, plain_codes, _ = read_ids(plain / IDS_FILE)
    tied = {t["item_id"] for t in report.agreement["ties_listed"]}
    tied |= set(ids[(codes != plain_codes).any(1)].tolist())
    assert report.resolution["items_moved"] > 0
    return {
        "db": db,
        "model_dir": model_dir,
        "history": history,
        "items": items,
        "request_ts": history[-1]["ts"] + dt.timedelta(minutes=7),
        "tied": tied,
        "export": Path(pub.export_path),
    }


def _forward_logits(
    model_dir: Path,
    profile: dict,
    history: list[dict],
    items_tbl,
    candidates: np.ndarray,
    request_ts: object = None,
) -> np.ndarray:
    """The training forward on the same inputs, padded to seq_len exactly as the loader does."""
    from tarq.model.io import load_trained

    model, _ = load_trained(model_dir)
    layout = FeatureLayout.load(model_dir / "layout.json")
    fields = dict.fromkeys([*layout.user_fields, *layout.item_fields])
    vocabs = {f: Vocab.load(model_dir / "vocab" / f"{f}.parquet") for f in fields}
    n = candidates.size
    all_ids = items_tbl.column("item_id").to_numpy()
    feats = encode_fields(items_tbl, layout.item_fields, vocabs)[
        np.searchsorted(all_ids, candidates)
    ]
    hist, mask = encode_history(history, layout, vocabs, request_ts)
    full = torch.full((1, layout.seq_len, hist.shape[2]), PAD, dtype=torch.int64)
    full_mask = torch.zeros((1, layout.seq_len), dtype=torch.bool)
    full[:, : hist.shape[1]] = hist
    full_mask[:, : mask.shape[1]] = mask
    batch = {
        "user": encode_user(profile, layout, vocabs).expand(n, -1),
        "item": torch.from_numpy(feats),
        "hist": full.expand(n, -1, -1),
        "hist_mask": full_mask.expand(n, -1),
    }
    with torch.no_grad():
        return model(batch).logit.numpy()


def test_scores_equal_training_forward(served: dict) -> None:
    scorer = Scorer.from_paths(served["db"], served["model_dir"])
    assert scorer.version == 1 and scorer.n_items == len(served["items"])
    ids = served["items"].column("item_id").to_numpy()
    rng = np.random.default_rng(0)
    cand = np.concatenate([rng.choice(ids[:-NEW_ITEMS], 60, replace=False), ids[-NEW_ITEMS:]])
    cand = np.array([c for c in cand if int(c) not in served["tied"]])
    profile = {"user_id": USER, "gender": 1}
    got = scorer.score(profile, served["history"], cand, request_ts=served["request_ts"])
    want = _forward_logits(
        served["model_dir"], profile, served["history"], served["items"], cand, served["request_ts"]
    )
    assert got.shape == (cand.size,) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # A user with no behaviour at all, and an unknown user id (OOV).
    for prof, hist in (({"user_id": 999, "gender": 1}, []), ({"user_id": 10**9}, [])):
        np.testing.assert_allclose(
            scorer.score(prof, hist, cand),
            _forward_logits(served["model_dir"], prof, hist, served["items"], cand),
            rtol=1e-5,
            atol=1e-5,
        )


def test_only_the_last_seq_len_behaviours_count(served: dict) -> None:
    scorer = Scorer.from_paths(served["db"], served["model_dir"])
    hist = served["history"]
    seq_len = scorer.layout.seq_len
    assert len(hist) > seq_len
    cand = served["items"].column("item_id").to_numpy()[:50]
    np.testing.assert_array_equal(
        scorer.score({"user_id": USER}, hist, cand),
        scorer.score({"user_id": USER}, hist[-seq_len:], cand),
    )


def test_unknown_candidates(served: dict) -> None:
    scorer = Scorer.from_paths(served["db"], served["model_dir"])
    known = served["items"].column("item_id").to_numpy()[:5]
    cand = np.array([known[0], 777_777, known[1], -3, known[2]])
    with pytest.raises(UnknownItemError, match=r"2 of 5 candidate ids.*777777, -3") as err:
        scorer.score({"user_id": USER}, served["history"], cand)
    assert err.value.item_ids == [777_777, -3]
    out = scorer.score({"user_id": USER}, served["history"], cand, unknown="nan")
    assert np.isnan(out[[1, 3]]).all()
    np.testing.assert_allclose(
        out[[0, 2, 4]], scorer.score({"user_id": USER}, served["history"], known[:3])
    )
    assert scorer.score({"user_id": USER}, [], []).shape == (0,)


def test_bad_requests_get_clear_errors(served: dict) -> None:
    scorer = Scorer.from_paths(served["db"], served["model_dir"])
    with pytest.raises(ValueError, match=r"candidate_item_ids\[0\] must be an integer id, got 'a'"):
        scorer.score({"user_id": USER}, [], ["a", "b"])
    with pytest.raises(ValueError, match="candidate_item_ids must be integers, got float64"):
        scorer.score({"user_id": USER}, [], np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="user_profile must be a dict"):
        scorer.score([USER], [], [1])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"history\[1\]\['item_id'\]"):
        scorer.score({"user_id": USER}, [{"item_id": 1}, {"item_id": "x"}], [1])
    with pytest.raises(ValueError, match="unknown must be one of"):
        scorer.score({"user_id": USER}, [], [1], unknown="zero")
    no_ts = [{k: v for k, v in h.items() if k != "ts"} for h in served["history"][-3:]]
    with pytest.raises(ValueError, match=r"history\[\d+\] lacks 'ts'"):
        scorer.score({"user_id": USER}, no_ts, [1])
    with pytest.raises(ValueError, match="request_ts is not an ISO-8601"):
        scorer.score({"user_id": USER}, served["history"], [1], request_ts="yesterday")
    # The all-int fast paths fall back to the element checks that name the culprit.
    with pytest.raises(ValueError, match=r"candidate_item_ids\[1\] = 36893488147419103232 does"):
        scorer.score({"user_id": USER}, [], [1, 2**65])
    big = [{"item_id": 1, "ts": 1.0}, {"item_id": 2**64, "ts": 2.0}]
    with pytest.raises(ValueError, match=r"history\[1\]\['item_id'\] = 18446744073709551616 does"):
        scorer.score({"user_id": USER}, big, [1], request_ts=3.0)
    nan_ts = [{"item_id": 1, "ts": 1.0}, {"item_id": 2, "ts": float("nan")}]
    with pytest.raises(ValueError, match=r"history\[1\]\['ts'\] must be a finite timestamp"):
        scorer.score({"user_id": USER}, nan_ts, [1], request_ts=3.0)


def test_list_and_array_requests_score_alike(served: dict) -> None:
    scorer = Scorer.from_paths(served["db"], served["model_dir"])
    ids = served["items"].column("item_id").to_numpy()[:40]
    hist = served["history"][-6:]
    epoch = [{**h, "ts": h["ts"].timestamp()} for h in hist]  # epoch seconds, the float path
    want = scorer.score({"user_id": USER}, hist, ids, request_ts=served["request_ts"])
    got = scorer.score(
        {"user_id": USER}, epoch, ids.tolist(), request_ts=served["request_ts"].timestamp()
    )
    np.testing.assert_array_equal(got, want)


def test_time_since_each_behaviour_changes_the_scores(served: dict) -> None:
    scorer = Scorer.from_paths(served["db"], served["model_dir"])
    cand = served["items"].column("item_id").to_numpy()[:30]
    hist, now = served["history"], served["request_ts"]
    a = scorer.score({"user_id": USER}, hist, cand, request_ts=now)
    # Equivalent timestamp forms give identical scores; the same behaviours a month later do not.
    np.testing.assert_array_equal(
        a, scorer.score({"user_id": USER}, hist, cand, request_ts=now.isoformat())
    )
    np.testing.assert_array_equal(
        a,
        scorer.score(
            {"user_id": USER}, hist, cand, request_ts=now.replace(tzinfo=dt.UTC).timestamp()
        ),
    )
    later = scorer.score({"user_id": USER}, hist, cand, request_ts=now + dt.timedelta(days=30))
    assert not np.allclose(a, later)


def test_ids_of_another_model_are_refused(served: dict, tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(served["model_dir"], other)
    state = torch.load(other / "model.pt", weights_only=True)
    state["head.bias"] = state["head.bias"] + 1.0
    torch.save(state, other / "model.pt")
    with pytest.raises(ValueError, match="assigned by another model"):
        Scorer.from_paths(served["db"], other)


def test_scorer_from_export_equals_from_warehouse(served: dict) -> None:
    a = Scorer.from_paths(served["db"], served["model_dir"])
    b = Scorer.from_parquet(served["export"], served["model_dir"])
    cand = served["items"].column("item_id").to_numpy()[::3]
    np.testing.assert_array_equal(
        a.score({"user_id": USER}, served["history"], cand),
        b.score({"user_id": USER}, served["history"], cand),
    )
    assert b.version == 1


def _random_inputs(layout: FeatureLayout, n: int, length: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)

    def idx(field: str, *shape: int) -> torch.Tensor:
        return torch.randint(1, layout.vocab_sizes[field], shape, generator=g)

    item = torch.stack([idx(f, n) for f in layout.item_fields], dim=1)
    user = torch.stack([idx(f, 1) for f in layout.user_fields], dim=1)
    hist = torch.stack([idx(f, 1, length) for f in layout.seq_fields], dim=2)
    mask = torch.ones(1, length, dtype=torch.bool)
    mask[0, length - 2 :] = False
    return {"user": user, "item": item, "hist": hist, "hist_mask": mask}


@pytest.mark.parametrize("fusion", ["mean", "attention"])
def test_fast_paths_equal_model_score(served: dict, fusion: str) -> None:
    layout = FeatureLayout.load(served["model_dir"] / "layout.json")
    cfg = dataclasses.replace(ModelConfig.from_dict(TINY_MODEL), fusion=fusion)
    x = _random_inputs(layout, 300, layout.seq_len)
    rows = torch.randperm(300)[:120]
    torch.manual_seed(0)
    with torch.no_grad():
        tarq = build_model("tarq", layout, cfg).eval()
        tarq.init_codebooks(
            x
            | {
                "user": x["user"].expand(300, -1),
                "hist": x["hist"].expand(300, -1, -1),
                "hist_mask": x["hist_mask"].expand(300, -1),
            }
        )
        state = tarq.user_side(x["user"], x["hist"], x["hist_mask"])
        v_item, codes = tarq.item_side(x["item"])
        want = tarq.score(state, v_item[rows], codes[rows])
        m, k, d = cfg.n_codebooks, cfg.codebook_size, cfg.d_model
        personal = state.extra["personal_codebooks"][0].reshape(m * k, d)
        pool = tarq.rq_attention.pool(personal)[:, 0] if fusion == "attention" else None
        got = tarq_logits(
            unit_rows(state.v_user)[0],
            personal,
            unit_rows(v_item),
            codes + torch.arange(m) * k,
            float(tarq.head.scale),
            float(tarq.head.bias),
            pool,
            rows=rows,
            block=7,
        )
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["tt", "ta"])
def test_baseline_fast_paths_equal_model_score(served: dict, name: str) -> None:
    layout = FeatureLayout.load(served["model_dir"] / "layout.json")
    x = _random_inputs(layout, 200, layout.seq_len, seed=1)
    torch.manual_seed(1)
    with torch.no_grad():
        model = build_model(name, layout, ModelConfig.from_dict(TINY_MODEL)).eval()
        state = model.user_side(x["user"], x["hist"], x["hist_mask"])
        v_item, aux = model.item_side(x["item"])
        want = model.score(state, v_item, aux)
        u_hat = unit_rows(state.v_user)[0]
        scale, bias = float(model.head.scale), float(model.head.bias)
        if name == "tt":
            got = two_tower_logits(u_hat, unit_rows(v_item), scale, bias, block=33)
        else:
            attn = model.target_attention.attn
            keys, values = target_attention_keys(attn, state.extra["h_seq"])
            got = target_attention_logits(
                attn,
                keys,
                values,
                state.extra["mask"][0],
                u_hat,
                aux,
                unit_rows(v_item),
                scale,
                bias,
                block=33,
            )
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_pyfunc_scores_equal_the_scorer(served: dict, tmp_path: Path) -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow
    import pandas as pd

    from tarq.serving.pyfunc import save_scorer_model

    path = save_scorer_model(tmp_path / "pyfunc", served["model_dir"], served["export"])
    loaded = mlflow.pyfunc.load_model(str(path))
    scorer = Scorer.from_paths(served["db"], served["model_dir"])
    ids = served["items"].column("item_id").to_numpy()
    requests = [
        {
            "user_profile": {"user_id": USER, "gender": 1},
            "history": served["history"],
            "candidate_item_ids": ids[:40].tolist(),
            "request_ts": served["request_ts"].isoformat(),
        },
        {
            "user_profile": {"user_id": 999},
            "history": [],
            "candidate_item_ids": [int(ids[3]), 424242],
            "unknown": "nan",
        },
    ]
    out = loaded.predict(pd.DataFrame(requests))
    np.testing.assert_allclose(
        out["scores"][0],
        scorer.score(
            requests[0]["user_profile"],
            requests[0]["history"],
            ids[:40],
            request_ts=served["request_ts"],
        ),
        rtol=1e-6,
        atol=1e-6,
    )
    assert out["scores"][1][1] is None
    assert out["scores"][1][0] == pytest.approx(
        float(scorer.score({"user_id": 999}, [], [ids[3]])[0]), abs=1e-6
    )
    # The model directory is self-contained: no training checkpoints, no warehouse.
    assert not list(Path(path).rglob("last.pt"))
