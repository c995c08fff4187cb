"""Real HTTP: ``mlflow models serve`` of the scorer model with its signature, on loopback.

One server for the module (``tarq.serving.processes.ModelServer``: ``--env-manager local``, this
interpreter's ``bin`` first on ``PATH``, pickle deserialization off), serving the model as the
daily job registers it: models from code, :func:`tarq.serving.pyfunc.model_signature`.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from tarq.serving import Scorer
from tarq.serving import pyfunc as serving_pyfunc
from tests.test_serving import USER, make_served

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The tiny served model (tests/test_serving.py) saved with its signature and served;
    yields the base URL, the Scorer on the same files and the fixture's data."""
    from tarq.serving.processes import ModelServer

    root = tmp_path_factory.mktemp("http")
    served = make_served(root)
    path = serving_pyfunc.save_scorer_model(
        root / "pyfunc", served["model_dir"], served["export"], signature=True
    )
    scorer = Scorer.from_parquet(served["export"], served["model_dir"])
    with ModelServer(path) as server:
        yield {**served, "url": server.url, "scorer": scorer, "pyfunc": path}


def _post(url: str, records: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    body = json.dumps({"dataframe_records": records}).encode()
    req = urllib.request.Request(
        url + "/invocations", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as res:
            return res.status, json.loads(res.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _history(http: dict[str, Any], n: int = 5) -> list[dict[str, Any]]:
    return [{**h, "ts": h["ts"].isoformat()} for h in http["history"][-n:]]


def test_the_documented_request_works_as_written(http: dict[str, Any]) -> None:
    doc = serving_pyfunc.__doc__
    text = re.search(r"POST /invocations``::\n\n(.*?)\n\n", doc, re.S).group(1)
    body = json.loads(text)
    (rec,) = body["dataframe_records"]
    assert set(rec["user_profile"]) == {"user_id"}  # only user_id: the rest is optional
    status, out = _post(http["url"], body["dataframe_records"])
    assert status == 200, out
    want = http["scorer"].score(
        rec["user_profile"], rec["history"], rec["candidate_item_ids"], request_ts=rec["request_ts"]
    )
    np.testing.assert_allclose(out["predictions"][0]["scores"], want, rtol=1e-5, atol=1e-5)


def test_scores_over_http_equal_the_scorer(http: dict[str, Any]) -> None:
    ids = http["items"].column("item_id").to_numpy()
    history = _history(http, 50)
    full = {
        "user_profile": {"user_id": USER, "gender": 1},
        "history": history,
        "candidate_item_ids": ids[:200].tolist(),
        "request_ts": http["request_ts"].isoformat(),
    }
    bare = {
        "user_profile": {"user_id": 999},  # only user_id, no history, no request_ts
        "history": [],
        "candidate_item_ids": [int(ids[3]), 424242, int(ids[7])],
        "unknown": "nan",
    }
    status, out = _post(http["url"], [full, bare])
    assert status == 200, out
    got_full, got_bare = (p["scores"] for p in out["predictions"])
    scorer = http["scorer"]
    want = scorer.score(full["user_profile"], history, ids[:200], request_ts=full["request_ts"])
    np.testing.assert_allclose(got_full, want, rtol=1e-5, atol=1e-5)
    assert got_bare[1] is None  # unknown id, unknown="nan": JSON null
    want_bare = scorer.score({"user_id": 999}, [], [ids[3], ids[7]])
    np.testing.assert_allclose([got_bare[0], got_bare[2]], want_bare, rtol=1e-5, atol=1e-5)

    # Only candidate_item_ids and user_profile are required.
    status, out = _post(http["url"], [{"user_profile": {}, "candidate_item_ids": [int(ids[0])]}])
    assert status == 200, out
    want = scorer.score({}, [], [ids[0]])
    np.testing.assert_allclose(out["predictions"][0]["scores"], want, rtol=1e-5, atol=1e-5)


def test_bad_requests_are_a_400_naming_the_field(http: dict[str, Any]) -> None:
    ids = [int(i) for i in http["items"].column("item_id").to_numpy()[:4]]
    history = _history(http)
    ok = {
        "user_profile": {"user_id": USER},
        "history": history,
        "candidate_item_ids": ids,
        "request_ts": http["request_ts"].isoformat(),
    }
    later = [*history[:-1], {**history[-1], "ts": "2030-01-01T00:00:00"}]
    cases = [
        # MLflow's schema (candidate_item_ids: array of long) refuses a float id before the
        # model sees it, naming the column.
        ({"candidate_item_ids": [ids[0], 1.9]}, "Failed to convert column candidate_item_ids"),
        ({"candidate_item_ids": [ids[0], True]}, "Failed to convert column candidate_item_ids"),
        ({"user_profile": {"user_id": 1.5}}, "key `user_id`"),
        ({"user_profile": {"userid": USER}}, "'userid'"),
        # The behaviours' properties are typed by the Scorer.
        ({"history": later}, "history[4]['ts'] = '2030-01-01T00:00:00' is after request_ts"),
        (
            {"history": [{**history[0], "item_id": 2.5}]},
            "history[0]['item_id'] must be an integer id or null, got 2.5",
        ),
        ({"candidate_item_ids": [*ids, 424242]}, "1 of 5 candidate ids are not in the published"),
        ({"user_profile": None}, "user_profile"),
    ]
    for change, message in cases:
        status, out = _post(http["url"], [{**ok, **change}])
        assert status == 400, (change, status, out)
        assert message in out["message"], (change, out["message"][-600:])
    status, out = _post(http["url"], [{"user_profile": {"user_id": USER}}])
    assert status == 400 and "candidate_item_ids" in out["message"], out


# -- the lean endpoint (tarq serve) ------------------------------------------------------------
def _score(url: str, body: bytes | dict[str, Any]) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url + "/score", data=data)
    try:
        with urllib.request.urlopen(req, timeout=60) as res:
            return res.status, json.loads(res.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_the_lean_endpoint_scores_like_the_scorer_and_refuses_alike(http: dict[str, Any]) -> None:
    from http.client import HTTPConnection

    from tarq.serving.server import load_scorer, serve_in_thread

    # The scorer inside the saved pyfunc, loaded with load_scorer_model's checks.
    scorer = load_scorer(str(http["pyfunc"]))
    server = serve_in_thread(scorer)
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        with urllib.request.urlopen(url + "/ping", timeout=30) as res:
            assert res.status == 200
        ids = http["items"].column("item_id").to_numpy()
        req = {
            "user_profile": {"user_id": USER},
            "history": _history(http, 20),
            "candidate_item_ids": [*ids[:100].tolist(), 999_999_999],
            "request_ts": http["request_ts"].isoformat(),
            "unknown": "nan",
        }
        status, out = _score(url, req)
        assert status == 200, out
        want = http["scorer"].score(
            req["user_profile"],
            req["history"],
            req["candidate_item_ids"],
            unknown="nan",
            request_ts=req["request_ts"],
        )
        assert out["scores"][-1] is None and np.isnan(want[-1])
        np.testing.assert_allclose(out["scores"][:-1], want[:-1], rtol=1e-5, atol=1e-5)
        # Keep-alive: several requests on one connection.
        conn = HTTPConnection("127.0.0.1", server.server_port, timeout=30)
        for _ in range(3):
            conn.request("POST", "/score", body=json.dumps({**req, "unknown": "nan"}))
            res = conn.getresponse()
            assert res.status == 200 and len(json.loads(res.read())["scores"]) == 101
        conn.close()
        bad = [
            ({**req, "candidate_item_ids": [int(ids[0]), 1.5]}, r"candidate_item_ids\[1\]"),
            ({**req, "unknown": "raise"}, "999999999"),
            ({**req, "user_profile": None}, "user_profile is null"),
            ({**req, "colour": 1}, r"unknown request fields \['colour'\]"),
            ({"user_profile": {}}, "lacks \\['candidate_item_ids'\\]"),
            (b"{not json", "not JSON"),
            (b"[1, 2]", "one request object"),
        ]
        for body, message in bad:
            status, out = _score(url, body)
            assert status == 400 and re.search(message, out["error"]), (body, out)
    finally:
        server.shutdown()
        server.server_close()
