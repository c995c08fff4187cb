"""Serving follows the champion (tarq.serving.follow, tarq.serving.server): versions swapped
whole, a failed load keeps the old version, draining; and ``tarq serve --follow --workers 2``
against a real MLflow registry (SQLite) with promotions, a broken version and SIGTERM."""

from __future__ import annotations

import copy
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tarq.serving import ModelMismatchError, Scorer
from tarq.serving.follow import LOAD_NICENESS, Follower, Live, Loaded
from tarq.serving.server import serve_in_thread
from tests.test_serving import USER, make_served


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny served model as v1 and, as v2, the same files with the head's bias moved:
    other scores for every candidate."""
    served = make_served(tmp_path_factory.mktemp("follow"))
    v1 = Scorer.from_parquet(served["export"], served["model_dir"])
    v2 = copy.copy(v1)
    v2._bias = v1._bias + 0.5  # the head's bias, as the Scorer reads it
    return {**served, "v1": v1, "v2": v2}


def _req(served: dict[str, Any], n: int = 30) -> dict[str, Any]:
    ids = served["items"].column("item_id").to_numpy()[:n]
    return {
        "user_profile": {"user_id": USER},
        "history": [{**h, "ts": h["ts"].isoformat()} for h in served["history"][-10:]],
        "candidate_item_ids": ids.tolist(),
        "request_ts": served["request_ts"].isoformat(),
    }


def _want(scorer: Scorer, req: dict[str, Any]) -> np.ndarray:
    return scorer.score(
        req["user_profile"], req["history"], req["candidate_item_ids"], request_ts=req["request_ts"]
    )


def _post(port: int, req: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
    conn = HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", "/score", body=json.dumps(req))
    res = conn.getresponse()
    out = json.loads(res.read())
    conn.close()
    return res.status, out, dict(res.getheaders())


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=30) as res:
            return res.status, json.loads(res.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


class _Slow:
    """A scorer whose score() waits for ``release`` after saying it started."""

    def __init__(self, scorer: Scorer) -> None:
        self.scorer, self.started, self.release = scorer, threading.Event(), threading.Event()
        self.n_items = scorer.n_items

    def score(self, *args: Any, **kwargs: Any) -> np.ndarray:
        self.started.set()
        assert self.release.wait(30)
        return self.scorer.score(*args, **kwargs)


def test_a_request_in_flight_during_a_swap_is_answered_wholly_by_its_version(two: dict) -> None:
    req = _req(two)
    slow = _Slow(two["v1"])
    live = Live(Loaded(slow, "1"), "test")  # type: ignore[arg-type]
    server = serve_in_thread(live)
    port = server.server_port
    try:
        first: dict[str, Any] = {}
        t = threading.Thread(target=lambda: first.update(zip("sbh", _post(port, req), strict=True)))
        t.start()
        assert slow.started.wait(30)
        live.swap(Loaded(two["v2"], "2"))  # while v1 is scoring the first request
        status, out, headers = _post(port, req)
        assert status == 200 and out["version"] == "2" and headers["X-Tarq-Version"] == "2"
        np.testing.assert_array_equal(np.float32(out["scores"]), _want(two["v2"], req))
        slow.release.set()
        t.join(30)
        assert first["s"] == 200 and first["b"]["version"] == "1"
        assert first["h"]["X-Tarq-Version"] == "1"
        np.testing.assert_array_equal(np.float32(first["b"]["scores"]), _want(two["v1"], req))
        assert not np.allclose(_want(two["v1"], req), _want(two["v2"], req))
    finally:
        slow.release.set()
        server.shutdown()
        server.server_close()


def test_the_follower_swaps_on_a_new_version_and_keeps_serving_when_a_load_fails(
    two: dict,
) -> None:
    alias = {"now": "1"}

    def load(version: str) -> Loaded:
        if version == "3":
            raise ModelMismatchError("ids.parquet was assigned by another model")
        return Loaded(two["v1"] if version == "1" else two["v2"], version, 7)

    live = Live(load("1"), "models:/tarq@champion")
    follower = Follower(live, lambda: alias["now"], load, poll_s=3600, retry_s=3600)
    server = serve_in_thread(live)
    url = f"http://127.0.0.1:{server.server_port}"
    req = _req(two)
    try:
        assert follower.check() is False and live.error is None  # nothing moved
        alias["now"] = "2"
        assert follower.check() is True and live.current.version == "2" and live.swaps == 1
        status, out, _ = _post(server.server_port, req)
        assert out["version"] == "2"
        np.testing.assert_array_equal(np.float32(out["scores"]), _want(two["v2"], req))
        alias["now"] = "3"  # a broken version: v2 keeps serving, /ready says why
        assert follower.check() is False and live.current.version == "2"
        status, ready = _get(url + "/ready")
        assert status == 200 and ready["ready"] and ready["version"] == "2"
        assert "version 3 not loaded, still serving 2" in ready["error"]
        assert "another model" in ready["error"] and ready["ids_version"] == 7
        assert _post(server.server_port, req)[1]["version"] == "2"
        assert follower.check() is False  # not retried before retry_s
        alias["now"] = "1"  # a rollback of the alias is followed the same way
        assert follower.check() is True and live.current.version == "1" and live.error is None

        def down() -> str:
            raise ConnectionError("registry unreachable")

        Follower(live, down, load).check()
        status, ready = _get(url + "/ready")
        assert status == 200 and "registry unreachable" in ready["error"]
        assert _post(server.server_port, req)[1]["version"] == "1"
    finally:
        server.shutdown()
        server.server_close()


def test_nothing_loaded_is_not_ready_and_draining_lets_requests_in_flight_finish(
    two: dict,
) -> None:
    empty = serve_in_thread(Live(None, "x"))
    try:
        assert _get(f"http://127.0.0.1:{empty.server_port}/ready")[0] == 503
        assert _get(f"http://127.0.0.1:{empty.server_port}/ping")[0] == 200
        assert _post(empty.server_port, _req(two))[0] == 503
    finally:
        empty.shutdown()
        empty.server_close()

    slow = _Slow(two["v1"])
    server = serve_in_thread(Live(Loaded(slow, "1"), "test"))  # type: ignore[arg-type]
    port, req = server.server_port, _req(two)
    got: dict[str, Any] = {}
    t = threading.Thread(target=lambda: got.update(zip("sbh", _post(port, req), strict=True)))
    t.start()
    assert slow.started.wait(30)
    drained: dict[str, bool] = {}
    d = threading.Thread(target=lambda: drained.update(ok=server.drain(30)))
    d.start()
    time.sleep(0.3)
    assert d.is_alive()  # waiting for the request in flight
    slow.release.set()
    t.join(30)
    d.join(30)
    assert got["s"] == 200 and got["b"]["version"] == "1" and drained["ok"]
    np.testing.assert_array_equal(np.float32(got["b"]["scores"]), _want(two["v1"], req))
    server.server_close()
    with pytest.raises(OSError):
        _post(port, req)


@pytest.mark.slow
def test_tarq_serve_follows_the_registry_alias_in_every_worker(
    two: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers follow ``models:/tarq@champion`` in a SQLite registry: v1, then a promotion
    of v2 (v2's exact scores), a broken v3 (IDs of other weights) that keeps v2 serving and
    shows on /ready, and SIGTERM that lets the server exit cleanly."""
    import shutil

    import mlflow
    from mlflow import MlflowClient

    from tarq.ids.semantic_ids import assign_ids
    from tarq.serving.processes import LeanServer
    from tarq.serving.pyfunc import save_scorer_model
    from tests.test_faults import _altered_weights

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    client.create_registered_model("tarq")
    v2_dir = _altered_weights(two["model_dir"], tmp_path / "v2_model")
    assign_ids(two["db"], v2_dir, tmp_path / "v2_ids", progress=False, max_collision_rate=None)
    paths = {
        "1": save_scorer_model(tmp_path / "p1", two["model_dir"], two["export"]),
        "2": save_scorer_model(tmp_path / "p2", v2_dir, tmp_path / "v2_ids" / "ids.parquet"),
        "3": save_scorer_model(tmp_path / "p3", two["model_dir"], two["export"]),
    }
    # v3: weights swapped inside the saved model after saving: its load refuses them.
    shutil.copy(v2_dir / "model.pt", paths["3"] / "artifacts" / "model_dir" / "model.pt")
    for v in ("1", "2", "3"):
        assert str(client.create_model_version("tarq", str(paths[v])).version) == v
    client.set_registered_model_alias("tarq", "champion", "1")
    v2 = Scorer.from_parquet(tmp_path / "v2_ids" / "ids.parquet", v2_dir)
    req = _req(two)
    env = {"MLFLOW_TRACKING_URI": uri}

    def answers(port: int, n: int = 16) -> dict[str, set[str]]:
        """version → the worker pids that answered with it, over n requests on 8 concurrent
        fresh connections (so that both workers' accept loops get some)."""
        from concurrent.futures import ThreadPoolExecutor

        seen: dict[str, set[str]] = {}
        with ThreadPoolExecutor(8) as pool:
            for status, out, headers in pool.map(lambda _: _post(port, req), range(n)):
                assert status == 200, out
                seen.setdefault(out["version"], set()).add(headers["X-Tarq-Worker"])
        return seen

    def until(pred: Any, timeout_s: float = 120.0) -> dict[str, set[str]]:
        """answers() until pred holds of them (or the time is up): the last answers."""
        deadline = time.monotonic() + timeout_s
        seen = answers(port)
        while not pred(seen) and time.monotonic() < deadline:
            time.sleep(0.3)
            seen = answers(port)
        return seen

    with LeanServer("models:/tarq@champion", workers=2, env=env, follow=True, poll_s=0.3) as srv:
        port = srv.port
        deadline = time.monotonic() + 120  # /ping answers once the first worker is up
        while srv.log_tail(100_000).count("tarq serve [") < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        pids: set[str] = set()

        def both_v1(seen: dict[str, set[str]]) -> bool:
            pids.update(seen.get("1", set()))
            return set(seen) == {"1"} and len(pids) == 2

        first = until(both_v1)
        assert set(first) == {"1"} and len(pids) == 2, (first, srv.log_tail())  # both answer
        client.set_registered_model_alias("tarq", "champion", "2")
        swapped: set[str] = set()

        def both_v2(seen: dict[str, set[str]]) -> bool:
            swapped.update(seen.get("2", set()))
            return set(seen) == {"2"} and swapped == pids

        seen = until(both_v2)
        assert set(seen) == {"2"} and swapped == pids, (seen, pids)  # both workers swapped
        status, out, _ = _post(port, req)
        np.testing.assert_array_equal(np.float32(out["scores"]), _want(v2, req))

        client.set_registered_model_alias("tarq", "champion", "3")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status, ready = _get(srv.url + "/ready")
            if ready.get("error"):
                break
            time.sleep(0.3)
        assert status == 200 and ready["version"] == "2", ready
        assert "version 3 not loaded, still serving 2" in ready["error"], ready
        assert set(answers(port)) == {"2"}

        os.killpg(srv.proc.pid, signal.SIGTERM)
        assert srv.proc.wait(timeout=60) == 0, srv.log_tail()


def test_tarq_rollback_moves_the_served_table_and_the_champion_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    from flows.cli import main as tarq
    from tarq.ids.semantic_ids import assign_ids
    from tarq.release.publish import publish, served_version
    from tests.test_faults import _altered_weights

    served = make_served(tmp_path / "w")  # publication 1: model version "sha-…" (no registry)
    db = served["db"]
    other = _altered_weights(served["model_dir"], tmp_path / "m2")
    for version, model in (("1", served["model_dir"]), ("2", other)):
        assign_ids(db, model, tmp_path / f"ids{version}", progress=False, max_collision_rate=None)
        publish(
            db,
            tmp_path / f"ids{version}",
            model_version=version,
            run_date=f"2026-10-0{7 + int(version)}",
        )
    assert served_version(db) == 3
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    client.create_registered_model("tarq")
    for _ in range(2):
        client.create_model_version("tarq", str(tmp_path))
    client.set_registered_model_alias("tarq", "champion", "2")

    assert tarq(["rollback", "--db", str(db), "--tracking-uri", uri]) == 0
    assert served_version(db) == 2
    assert str(client.get_model_version_by_alias("tarq", "champion").version) == "1"
    # Publication 1 records no registered version: the table moves, the alias does not.
    assert tarq(["rollback", "--db", str(db), "--tracking-uri", uri]) == 2
    assert served_version(db) == 1
    assert str(client.get_model_version_by_alias("tarq", "champion").version) == "1"
    assert tarq(["rollback", "--db", str(db), "--tracking-uri", uri]) == 2  # nothing older
    assert tarq(["rollback", "--db", str(db), "--to-version", "3", "--tracking-uri", uri]) == 0
    assert served_version(db) == 3
    assert str(client.get_model_version_by_alias("tarq", "champion").version) == "2"


def test_the_follower_thread_loads_at_a_lower_cpu_priority() -> None:
    """Loading a new version competes less with the serving threads: the follower lowers its
    own thread's priority, not the process's."""
    if not hasattr(os, "setpriority"):
        pytest.skip("no per-thread priorities here")
    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    follower = Follower(Live(), resolve=lambda: "1", load=lambda v: None, poll_s=3600)
    follower.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            nice = os.getpriority(os.PRIO_PROCESS, follower.native_id)
            if nice != base:
                break
            time.sleep(0.01)
        assert nice == min(base + LOAD_NICENESS, 19)
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base
    finally:
        follower.stop()


def test_a_version_loaded_in_a_child_process_scores_exactly_as_one_loaded_here(
    two: dict, tmp_path: Path
) -> None:
    """``tarq serve --follow`` loads new versions in a child process (tarq.serving.loading):
    the scorer rebuilt from the child's export equals one loaded in this process, score for
    score; the child runs at a lower priority and serves several loads; a version whose load is
    refused raises naming the child's exception; a child that died is started again for the
    next load; a load past its time fails and stops its child; nothing of the child's work is
    left behind."""
    import shutil
    import tempfile

    from tarq.serving.loading import ChildLoader, IsolatedLoadError
    from tarq.serving.pyfunc import load_scorer_model, save_scorer_model
    from tests.test_faults import _altered_weights

    good = save_scorer_model(tmp_path / "good", two["model_dir"], two["export"])
    here = load_scorer_model(str(good)).unwrap_python_model().scorer
    before = set(Path(tempfile.gettempdir()).glob("tarq-load-*"))
    loader = ChildLoader(niceness=3)
    child = loader.load(str(good), max_candidates=77)
    assert child.max_candidates == 77 and child.n_items == here.n_items
    assert child.version == here.version and child.model_dir is None
    np.testing.assert_array_equal(child._v_hat, here._v_hat)
    for n in (5, 30):
        req = _req(two, n)
        np.testing.assert_array_equal(_want(child, req), _want(here, req))

    bad = save_scorer_model(tmp_path / "bad", two["model_dir"], two["export"])
    other = _altered_weights(two["model_dir"], tmp_path / "other")
    shutil.copy(other / "model.pt", bad / "artifacts" / "model_dir" / "model.pt")
    pid = loader._proc.pid
    assert os.getpriority(os.PRIO_PROCESS, pid) == min(os.getpriority(os.PRIO_PROCESS, 0) + 3, 19)
    with pytest.raises(IsolatedLoadError, match=r"ModelMismatchError: .*sha256"):
        loader.load(str(bad))
    assert loader.load(str(good)).n_items == here.n_items and loader._proc.pid == pid  # kept
    os.kill(pid, signal.SIGKILL)  # a child that died is started again for the next load
    loader._proc.wait()
    np.testing.assert_array_equal(_want(loader.load(str(good)), req), _want(here, req))
    assert loader._proc.pid != pid
    loader.close()
    assert loader._proc is None
    hasty = ChildLoader()  # a load past its time fails and its child is stopped
    hasty.start()
    hasty.timeout_s = 0.05
    with pytest.raises(IsolatedLoadError, match=r"loading .*: the loading child took over"):
        hasty.load(str(good))
    assert hasty._proc is None
    assert set(Path(tempfile.gettempdir()).glob("tarq-load-*")) == before
    with pytest.raises(ValueError, match="only a Scorer loaded from a model directory"):
        child.export(tmp_path / "again")


def test_a_follower_that_loads_in_a_child_keeps_its_own_priority() -> None:
    """With ``niceness=0`` (loads in a niced child) the follower thread is not lowered: a
    low-priority thread that holds the GIL would keep the serving threads waiting."""
    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    follower = Follower(Live(), resolve=lambda: "1", load=lambda v: None, poll_s=3600, niceness=0)
    follower.start()
    try:
        time.sleep(0.2)
        assert os.getpriority(os.PRIO_PROCESS, follower.native_id) == base
    finally:
        follower.stop()
