"""Agora's typed interface, served through the same DEEPaaS v2 API and OpenAPI document: a
small typed module and the sentence-embedding example."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.modelserver.servers import Launch, Server, running


@pytest.fixture(scope="module")
def server(typed_launch: Launch | None) -> Iterator[Server]:
    assert typed_launch is not None
    with running(typed_launch) as (s,):
        yield s


def test_typed_predict_with_a_file_and_accept(server: Server) -> None:
    url = f"{server.url}/v2/models/typed/predict/"
    r = httpx.post(url, data={"text": "hi", "times": "2"}, files={"attachment": ("a", b"abcd")})
    assert r.status_code == 200, r.text
    assert r.json() == {
        "status": "OK",
        "predictions": {"echo": "hi hi", "attachment_bytes": 4, "warm": True},
    }
    r = httpx.post(url, data={"text": "hi", "accept": "text/plain"})
    assert r.headers["content-type"] == "text/plain" and r.text == "hi"


def test_typed_arguments_are_checked_by_type_and_by_pydantic(server: Server) -> None:
    url = f"{server.url}/v2/models/typed/predict/"
    r = httpx.post(url, data={"times": "2"})
    assert r.status_code == 422 and "text" in r.json()["errors"]
    r = httpx.post(url, data={"text": "a", "times": "two"})
    assert r.status_code == 422 and "times" in r.json()["errors"]
    r = httpx.post(url, data={"text": "a", "times": "9"})  # le=5: pydantic's own check
    assert r.status_code == 422 and "times" in r.json()["detail"]


def test_typed_training(server: Server) -> None:
    url = f"{server.url}/v2/models/typed/train/"
    uuid = httpx.post(url, json={"rounds": 3}).json()["uuid"]
    deadline = time.monotonic() + 30
    while (record := httpx.get(url + uuid).json())["status"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert record["status"] == "done" and record["result"]["output"] == {"rounds": 3}


def test_typed_openapi(server: Server) -> None:
    doc = httpx.get(f"{server.url}/openapi.json").json()
    post = doc["paths"]["/v2/models/typed/predict/"]["post"]
    props = post["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert props["attachment"]["format"] == "binary"
    assert props["times"] == {"type": "integer", "description": "How many times.", "default": 1}
    assert post["parameters"][0]["schema"]["enum"] == ["application/json", "text/plain", "*/*"]
    props = doc["paths"]["/v2/models/embeddings/predict/"]["post"]["requestBody"]["content"][
        "multipart/form-data"
    ]["schema"]["properties"]
    assert props["sentences"]["type"] == "array" and props["sentences"]["items"]["type"] == "string"


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_embeddings_example(server: Server) -> None:
    url = f"{server.url}/v2/models/embeddings/predict/"
    sentences = ["A cat sits on the mat.", "A kitten rests on a rug.", "Stock markets fell."]
    by_form = httpx.post(url, data={"sentences": sentences}, timeout=60)
    assert by_form.status_code == 200, by_form.text
    out = by_form.json()["predictions"]
    assert out["dimensions"] == 384 and len(out["vectors"]) == 3
    a, b, c = out["vectors"]
    assert math.isclose(_cosine(a, a), 1.0, rel_tol=1e-4)
    assert _cosine(a, b) > _cosine(a, c) + 0.2
    by_json = httpx.post(url, json={"sentences": sentences[:1]}, timeout=60).json()
    assert by_json["predictions"]["vectors"][0] == pytest.approx(a, abs=1e-5)
    r = httpx.post(url, json={"sentences": []})
    assert r.status_code == 422 and "sentences" in r.json()["detail"]
    meta = httpx.get(f"{server.url}/v2/models/embeddings/").json()
    assert "all-MiniLM-L6-v2" in meta["description"]
