"""A module written only against the ``deepaas`` package answers the same under the real
``deepaas-run`` and under Agora's model server (run in the DEEPaaS venv, where DEEPaaS's own
old webargs 5 / apispec 3 are installed)."""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.modelserver.servers import deepaas_python, launch_agora, launch_deepaas, running

MODEL = "acme-text"
TEXT = b"hello world\nsecond line here\n"


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    tmp = tmp_path_factory.mktemp("compat")
    python = deepaas_python()
    with running(
        launch_deepaas(MODEL, tmp),
        launch_agora("--module", MODEL, python=python, state_dir=tmp / "state"),
    ) as (deepaas, agora):
        yield {"deepaas": deepaas.url, "agora": agora.url}


def _both(servers: dict[str, str], method: str, path: str, **kwargs: Any) -> list[httpx.Response]:
    return [httpx.request(method, servers[k] + path, timeout=30, **kwargs) for k in servers]


def _predict(servers: dict[str, str], **data: Any) -> list[httpx.Response]:
    files = {"data": ("notes.txt", TEXT, "text/plain")}
    return _both(servers, "POST", f"/v2/models/{MODEL}/predict/", data=data, files=files)


def test_version_and_model_metadata_are_the_same(servers: dict[str, str]) -> None:
    for path in ("/v2/", "/v2/models/", f"/v2/models/{MODEL}/"):
        deepaas, agora = _both(servers, "GET", path)
        assert deepaas.status_code == agora.status_code == 200, path
        assert agora.json() == deepaas.json(), path
    deepaas, agora = _both(servers, "GET", "/")
    assert agora.json() == deepaas.json()  # the links too: Swagger UI at /api, the document


def test_swagger_ui_is_where_deepaas_has_it(servers: dict[str, str]) -> None:
    for path in ("/api", "/ui"):
        deepaas, agora = _both(servers, "GET", path, follow_redirects=True)
        assert deepaas.status_code == agora.status_code == 200, path
        assert agora.headers["content-type"] == "text/html; charset=utf-8"
        assert "swagger-ui-bundle.js" in agora.text and "swagger-ui-bundle.js" in deepaas.text


def test_json_prediction_is_the_same(servers: dict[str, str]) -> None:
    deepaas, agora = _predict(servers, scale="3", tags=["a", "b"])
    assert deepaas.status_code == agora.status_code == 200
    assert agora.json() == deepaas.json()
    assert agora.json()["scaled"] == 15 and agora.json()["tags"] == ["a", "b"]
    assert agora.json()["warm"] and agora.json()["uploaded_file"]


def test_accept_gives_the_same_text_and_zip(servers: dict[str, str]) -> None:
    deepaas, agora = _predict(servers, scale="1", accept="text/plain")
    assert agora.headers["content-type"] == deepaas.headers["content-type"] == "text/plain"
    assert agora.content == deepaas.content == TEXT.upper()
    deepaas, agora = _predict(servers, scale="1", accept="application/zip")
    assert agora.headers["content-type"] == "application/zip"
    assert agora.content == deepaas.content
    assert zipfile.ZipFile(io.BytesIO(agora.content)).read("notes.txt") == TEXT


def test_argument_errors_have_the_same_status_and_field(servers: dict[str, str]) -> None:
    for data, field in (
        ({}, "scale"),
        ({"scale": "x"}, "scale"),
        ({"scale": "1", "accept": "a/b"}, "accept"),
    ):
        deepaas, agora = _predict(servers, **data)
        assert deepaas.status_code == agora.status_code == 422, data
        assert field in deepaas.json() and field in agora.json()["errors"]
        assert agora.headers["content-type"] == "application/problem+json"
    for path in ("/v2/models/nope/", f"/v2/models/{MODEL}/train/nope"):
        deepaas, agora = _both(servers, "GET", path)
        assert deepaas.status_code == agora.status_code == 404


def _until_done(url: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        record: dict[str, Any] = httpx.get(url, timeout=5).json()
        if record["status"] != "running" or time.monotonic() > deadline:
            return record
        time.sleep(0.1)


def test_training_flow_is_compatible(servers: dict[str, str]) -> None:
    path = f"/v2/models/{MODEL}/train/"
    started = _both(servers, "POST", path, data={"epochs": "1"})
    for r in started:
        assert r.status_code == 200
        assert set(r.json()) == {"date", "args", "uuid", "status"}
        assert r.json()["status"] == "running"
        assert r.json()["args"] == {"epochs": 1, "note": "none"}
    done = [
        _until_done(f"{url}{path}{r.json()['uuid']}")
        for url, r in zip(servers.values(), started, strict=True)
    ]
    assert done[0]["status"] == done[1]["status"] == "done"
    assert set(done[1]) == set(done[0]) == {"date", "args", "uuid", "status", "result"}
    assert set(done[1]["result"]) == set(done[0]["result"]) == {"output", "finish_date", "duration"}
    assert (
        done[1]["result"]["output"] == done[0]["result"]["output"] == {"epochs": 1, "note": "none"}
    )
    listed = _both(servers, "GET", path)
    for r, ours in zip(listed, started, strict=True):
        assert ours.json()["uuid"] in [t["uuid"] for t in r.json()]
    # DELETE cancels and forgets (DEEPaaS 2.6 answers it with a 500, Agora with the record).
    running = _both(servers, "POST", path, data={"epochs": "100"})
    for url, r in zip(servers.values(), running, strict=True):
        httpx.delete(f"{url}{path}{r.json()['uuid']}", timeout=10)
        assert httpx.get(f"{url}{path}{r.json()['uuid']}", timeout=5).status_code == 404
    assert httpx.get(f"{servers['agora']}{path}", timeout=5).status_code == 200
