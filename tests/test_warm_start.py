"""Continuous training: vocabulary extension, warm start, minimum counts, crash resume."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from tarq.data.features import OOV, Vocab
from tarq.data.loader import BatchStream, SampleSet
from tarq.model import ModelConfig
from tarq.model.io import load_trained, load_weights
from tarq.training.train import CHECKPOINT, TrainConfig, train
from tarq.training.warm_start import (
    OPTIMIZER_FILE,
    IncompatibleParentError,
    WarmStart,
    extend_sample_set,
    incompatibility,
    load_parent,
    load_state,
)
from tests.procs import crash_and_resume
from tests.test_samples import DAY0, N_DAYS, _make_warehouse

TINY_MODEL = {"emb_dim": 8, "d_model": 16, "n_heads": 2, "codebook_size": 4, "n_codebooks": 2}
D_PARENT = DAY0 + dt.timedelta(days=N_DAYS - 1)  # run date: tests on day 3, trains on day 2
D_CHILD = DAY0 + dt.timedelta(days=N_DAYS)  # one day later: trains on 0..3


def test_vocab_extension_keeps_every_known_index() -> None:
    old = Vocab(np.array([40, 10, 30]))  # index order as given (an extended vocabulary)
    assert old.lookup(np.array([40, 10, 30, 20])).tolist() == [2, 3, 4, OOV]
    ext = old.extend(np.array([25, 10, 5, 25]))
    assert ext.values.tolist() == [40, 10, 30, 5, 25]
    assert ext.lookup(old.values).tolist() == old.lookup(old.values).tolist()
    assert ext.lookup(np.array([5, 25, 99])).tolist() == [5, 6, OOV]
    assert len(ext) == len(old) + 2
    assert old.extend(np.array([], dtype=np.int64)).values.tolist() == old.values.tolist()


def test_vocab_order_survives_save_and_load(tmp_path: Path) -> None:
    v = Vocab(np.array([7, 3, 9])).extend(np.array([1]))
    v.save(tmp_path / "v.parquet")
    back = Vocab.load(tmp_path / "v.parquet")
    assert back.values.tolist() == [7, 3, 9, 1]
    raw = np.array([[1, 9], [3, 8]])
    assert back.lookup(raw).tolist() == v.lookup(raw).tolist() == [[5, 4], [3, OOV]]


def test_sorted_vocab_files_of_older_models_read_as_before(tmp_path: Path) -> None:
    Vocab(np.array([3, 1, 2])).save(tmp_path / "v.parquet")  # from-scratch: any order given
    v = Vocab.load(tmp_path / "v.parquet")
    assert v.lookup(np.array([3, 1, 2])).tolist() == [2, 3, 4]


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tarq.data.samples import build_samples

    root = tmp_path_factory.mktemp("warm")
    db = root / "w.duckdb"
    _make_warehouse(db)
    out = {"root": root, "db": db}
    # The parent saw one day only, so the child's window brings ids it never saw.
    for name, day, days in (("s_parent", D_PARENT, 1), ("s_child", D_CHILD, 19)):
        build_samples(db, day, root / name, train_days=days, seq_len=6, min_count=1)
        out[name] = root / name
    mcfg, tcfg = _cfg()
    train(out["s_parent"], "tarq", root / "parent", mcfg, tcfg, progress=False)
    out["parent"] = root / "parent"
    return out


def _cfg(**train_kw: object) -> tuple[ModelConfig, TrainConfig]:
    tcfg = TrainConfig(
        epochs=1, batch_size=64, eval_batch_size=256, patience=0, threads=1, max_steps_per_epoch=15
    )
    for k, v in train_kw.items():
        setattr(tcfg, k, v)
    return ModelConfig.from_dict(TINY_MODEL), tcfg


def _item_sightings(samples: Path) -> dict[int, int]:
    """Per item: impressions it is the target of + users whose histories hold it."""
    import duckdb

    files = [str(f) for f in sorted((samples / "train").glob("*.parquet"))]
    with duckdb.connect() as con:
        targets = con.execute(
            "SELECT item_id, count(*) FROM read_parquet($f) GROUP BY 1", {"f": files}
        ).fetchall()
        hist = con.execute(
            "SELECT user_id, hist_item_id FROM read_parquet($f)", {"f": files}
        ).fetchall()
    counts = dict(targets)
    seen: dict[int, set[int]] = {}
    for user, items in hist:
        for item in items or []:
            if item is not None:
                seen.setdefault(item, set()).add(user)
    for item, users in seen.items():
        counts[item] = counts.get(item, 0) + len(users)
    return counts


def test_min_count_sends_rare_ids_to_oov(warehouse: dict[str, Path], tmp_path: Path) -> None:
    from tarq.data.samples import build_samples

    counts = _item_sightings(warehouse["s_child"])
    full = Vocab.load(warehouse["s_child"] / "vocab" / "item_id.parquet")
    assert set(full.values.tolist()) == set(counts)  # min_count=1 keeps every item seen
    threshold = int(np.percentile(list(counts.values()), 30)) + 1
    assert any(n < threshold for n in counts.values()), "the fixture has no rare item"
    build_samples(warehouse["db"], D_CHILD, tmp_path / "s3", seq_len=6, min_count=threshold)
    kept = set(Vocab.load(tmp_path / "s3" / "vocab" / "item_id.parquet").values.tolist())
    assert kept == {v for v, n in counts.items() if n >= threshold}
    meta = json.loads((tmp_path / "s3" / "meta.json").read_text())
    assert meta["min_count"] == threshold and meta["vocab_sizes"]["item_id"] == len(kept) + 2
    # Only the id fields are thresholded: category/brand keep every value seen.
    assert (
        Vocab.load(tmp_path / "s3" / "vocab" / "category_id.parquet").values.tolist()
        == Vocab.load(warehouse["s_child"] / "vocab" / "category_id.parquet").values.tolist()
    )
    # A dropped id is OOV in the training batches.
    sset = SampleSet.open(tmp_path / "s3")
    batch = next(iter(BatchStream(sset, "train", 4096)))
    raw, idx = batch["item_key"].numpy(), batch["item"][:, 0].numpy()
    rare = np.isin(raw, [v for v, n in counts.items() if n < threshold])
    assert rare.any() and (idx[rare] == OOV).all() and (idx[~rare] != OOV).all()


def test_extension_keeps_known_rows_bit_for_bit(warehouse: dict[str, Path]) -> None:
    from tarq.model import build_model

    mcfg, _ = _cfg()
    sset = SampleSet.open(warehouse["s_child"])
    parent = load_parent(warehouse["parent"], "tarq", mcfg, sset.layout)
    ext, added = extend_sample_set(sset, parent)
    assert added["item_id"] > 0, "the child's window must bring new item ids"
    child = build_model("tarq", ext.layout, mcfg)
    grown = load_state(child, parent.state)
    assert any(k.endswith("tables.item_id.weight") for k in grown)
    pmodel, _ = load_trained(warehouse["parent"])
    for field in ("item_id", "user_id", "category_id", "brand_id"):
        old_vocab, new_vocab = parent.vocabs[field], ext.vocabs[field]
        idx_old = old_vocab.lookup(old_vocab.values)
        idx_new = new_vocab.lookup(old_vocab.values)
        assert np.array_equal(idx_old, idx_new)  # the parent's ids keep their index
        w_old = pmodel.emb.tables[field].weight.detach()
        w_new = child.emb.tables[field].weight.detach()
        assert torch.equal(w_new[: w_old.shape[0]], w_old)  # ... and their row, bit for bit
        fresh = w_new[w_old.shape[0] :]
        assert fresh.shape[0] == len(new_vocab) - len(old_vocab)
    assert torch.equal(child.codebooks, pmodel.codebooks)
    assert bool(child.quantizer.initialized)


def test_warm_run_with_zero_learning_rate_changes_nothing_it_inherited(
    warehouse: dict[str, Path], tmp_path: Path
) -> None:
    """No k-means re-init, no rebuilt vocabularies: with lr = 0 the warm child's inherited
    weights are the parent's exactly; only the appended rows are new."""
    mcfg, tcfg = _cfg(lr=0.0)
    warm = WarmStart(warehouse["parent"], since_day=D_PARENT - dt.timedelta(days=2))
    res = train(
        warehouse["s_child"], "tarq", tmp_path / "child", mcfg, tcfg, progress=False, warm=warm
    )
    assert res.warm_start["mode"] == "warm" and res.warm_start["optimizer_carried"]
    parent = load_weights(warehouse["parent"] / "model.pt")
    child = load_weights(tmp_path / "child" / "model.pt")
    for key, p in parent.items():
        c = child[key]
        assert torch.equal(c[: p.shape[0]] if c.shape != p.shape else c, p), key
    assert (tmp_path / "child" / OPTIMIZER_FILE).is_file()


def test_a_warm_run_never_reseeds_its_parents_codebooks(
    warehouse: dict[str, Path], tmp_path: Path
) -> None:
    """Every entry of the parent marked dead: a cold run would re-seed them all on its first
    step; the warm run holds them (and their usage) as the parent left them."""
    mcfg, tcfg = _cfg(lr=0.0)
    mcfg = ModelConfig.from_dict({**TINY_MODEL, "codebook_revive": 0.1})
    parent = tmp_path / "parent"
    train(warehouse["s_parent"], "tarq", parent, mcfg, _cfg()[1], progress=False)
    state = load_weights(parent / "model.pt")
    state["quantizer.usage"] = torch.zeros_like(state["quantizer.usage"])
    torch.save(state, parent / "model.pt")
    warm = WarmStart(parent, since_day=D_PARENT - dt.timedelta(days=2))
    train(warehouse["s_child"], "tarq", tmp_path / "child", mcfg, tcfg, progress=False, warm=warm)
    child = load_weights(tmp_path / "child" / "model.pt")
    assert torch.equal(child["quantizer.codebooks"], state["quantizer.codebooks"])
    assert torch.equal(child["quantizer.usage"], state["quantizer.usage"])
    # Not held (as in a cold run), the same entries are re-seeded at the first step.
    model, _ = load_trained(parent)
    assert model.quantizer.revive_dead(torch.randn(64, mcfg.dz)) == mcfg.n_codebooks * 4


def test_warm_run_trains_only_on_days_after_its_parent(
    warehouse: dict[str, Path], tmp_path: Path
) -> None:
    since = D_CHILD - dt.timedelta(days=3)  # the child's window ends the day before its test day
    mcfg, tcfg = _cfg(max_steps_per_epoch=None)
    res = train(warehouse["s_child"], "tt", tmp_path / "tt", mcfg, tcfg, progress=False, warm=None)
    cold_rows = res.rows_trained
    sset = SampleSet.open(warehouse["s_child"])
    t = pq.read_table(sset.files("train"), columns=["day", "fold"]).to_pandas()
    new = t[(t["day"] > np.datetime64(since)) & (t["fold"] >= 5)]
    assert 0 < len(new) < cold_rows
    stream = BatchStream(sset, "train", 64, folds=(5, 100), since_day=since)
    assert stream.rows() == len(new)
    replay = BatchStream(sset, "train", 64, folds=(5, 100), since_day=since, replay_folds=20)
    old = t[(t["day"] <= np.datetime64(since)) & (t["fold"] >= 5) & (t["fold"] < 25)]
    assert replay.rows() == len(new) + len(old)
    batches = list(BatchStream(sset, "train", 64, folds=(5, 100), since_day=since))
    assert sum(len(b["label"]) for b in batches) == len(new)


def test_incompatible_parents_are_named(warehouse: dict[str, Path]) -> None:
    from tarq.data.features import FeatureLayout

    layout = FeatureLayout.load(warehouse["s_child"] / "layout.json")
    mcfg, _ = _cfg()
    assert incompatibility(warehouse["parent"], "tarq", mcfg, layout) is None
    assert "not 'tt'" in incompatibility(warehouse["parent"], "tt", mcfg, layout)
    other = ModelConfig.from_dict({**TINY_MODEL, "d_model": 32})
    assert "model config changed: d_model 16 → 32" in incompatibility(
        warehouse["parent"], "tarq", other, layout
    )
    # A parent saved before a setting existed was trained as the code then behaved: a
    # config.json without "distill" is the literal L2 term, so today's default is a change.
    import json
    import shutil

    legacy = warehouse["root"] / "legacy-parent"
    shutil.copytree(warehouse["parent"], legacy)
    saved = json.loads((legacy / "config.json").read_text(encoding="utf-8"))
    saved["model"].pop("distill")
    (legacy / "config.json").write_text(json.dumps(saved), encoding="utf-8")
    assert "distill 'l2' → 'score'" in incompatibility(legacy, "tarq", mcfg, layout)
    longer = FeatureLayout(**{**layout.__dict__, "seq_len": 9})
    assert "feature layout changed: seq_len 6 → 9" in incompatibility(
        warehouse["parent"], "tarq", mcfg, longer
    )
    with pytest.raises(IncompatibleParentError, match="d_model"):
        train(
            warehouse["s_child"],
            "tarq",
            warehouse["root"] / "bad",
            other,
            _cfg()[1],
            warm=WarmStart(warehouse["parent"]),
            progress=False,
        )


@pytest.mark.slow
def test_sigkill_during_a_warm_run_resumes_the_warm_run(
    warehouse: dict[str, Path], tmp_path: Path
) -> None:
    cfg = tmp_path / "cfg.json"
    cfg.write_text(
        json.dumps(
            {
                "model": TINY_MODEL,
                "train": {
                    "epochs": 3,
                    "batch_size": 16,
                    "eval_batch_size": 4096,
                    "patience": 0,
                    "threads": 1,
                },
            }
        )
    )
    out = tmp_path / "warm"
    since = str(D_CHILD - dt.timedelta(days=3))
    cmd = [
        sys.executable,
        "-m",
        "tarq.training.train",
        "--samples",
        str(warehouse["s_child"]),
        "--model",
        "tarq",
        "--out",
        str(out),
        "--config",
        str(cfg),
        "--warm-from",
        str(warehouse["parent"]),
        "--since-day",
        since,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done, at_kill, rerun = crash_and_resume(cmd, out / CHECKPOINT, env)
    assert "tarq epoch 1/3" not in rerun.stderr  # resumed, not restarted from the parent
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["history"][: done + 1] == at_kill
    assert metrics["warm_start"]["mode"] == "warm" and metrics["warm_start"]["since_day"] == since
    # The resumed run kept the warm run's extended vocabulary and the parent's known rows'
    # indices: a parent id maps to the same index in the finished child.
    pv = Vocab.load(warehouse["parent"] / "vocab" / "item_id.parquet")
    cv = Vocab.load(out / "vocab" / "item_id.parquet")
    assert np.array_equal(cv.values[: pv.values.size], pv.values)
    assert len(cv) > len(pv)
