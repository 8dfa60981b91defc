"""Agora's model server under bad input and misbehaving models: each failure is a problem+json
answer a person can act on, and the next good request still succeeds."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.modelserver.servers import Server, agora_server

TOKEN = "service-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LIMIT = 100_000


@pytest.fixture(scope="module")
def tmpdir_(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("uploads")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tmpdir_: Path) -> Iterator[Server]:
    state = tmp_path_factory.mktemp("errors") / "state"
    args = ["--model", "faulty=acme_faulty", "--workers", "1", "--queue", "1"]
    args += ["--timeout", "2", "--max-upload-bytes", str(LIMIT)]
    env = {"AGORA_SERVICE_TOKEN": TOKEN, "TMPDIR": str(tmpdir_)}
    with agora_server(*args, state_dir=state, env=env) as s:
        yield s


def predict(
    server: Server, timeout: float = 30, headers: dict[str, str] | None = None, **kwargs: Any
) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v2/models/faulty/predict/",
        headers={**AUTH, **(headers or {})},
        timeout=timeout,
        **kwargs,
    )


def assert_still_serving(server: Server, tmpdir_: Path) -> None:
    deadline = time.monotonic() + 30  # a replaced worker is warm again once /health says so
    while httpx.get(f"{server.url}/health").status_code != 200:
        assert time.monotonic() < deadline, "the worker was not replaced"
        time.sleep(0.05)
    r = predict(server, data={"n": "4"}, files={"upload": ("a.bin", b"x" * 10)})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"]["n"] == 4 and r.json()["predictions"]["size"] == 10
    assert not os.path.exists(r.json()["predictions"]["path"])
    assert not [p for p in os.listdir(tmpdir_) if p.startswith("agora-upload-")]


def assert_problem(r: httpx.Response, status: int, *words: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert body["status"] == status
    for word in words:
        assert word in body["detail"], body
    assert "Traceback" not in r.text
    return body


def test_health_is_open_and_the_rest_needs_the_token(server: Server) -> None:
    assert httpx.get(f"{server.url}/health").status_code == 200
    assert_problem(httpx.get(f"{server.url}/v2/models/"), 401, "token")
    wrong = {"Authorization": "Bearer nope"}
    assert httpx.get(f"{server.url}/v2/models/", headers=wrong).status_code == 401


def test_predict_needs_the_token_too(server: Server) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}):
        r = httpx.post(f"{server.url}/v2/models/faulty/predict/", data={"n": "2"}, headers=headers)
        assert_problem(r, 401, "service token")
        assert r.headers["www-authenticate"] == "Bearer"


def _raw(server: Server) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _form(n: int, mode: str = "ok") -> bytes:
    body = f"n={n}&mode={mode}".encode()
    return (
        b"POST /v2/models/faulty/predict/ HTTP/1.1\r\nHost: t\r\n"
        b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: %d\r\n\r\n%b" % (len(body), body)
    )


def test_pipelined_predictions_are_answered_in_order(server: Server) -> None:
    with _raw(server) as sock:
        sock.sendall(_form(2) + _form(4) + _form(6))
        got = b""
        while got.count(b'"n":') < 3:
            data = sock.recv(65536)
            assert data, got
            got += data
    answers = got.split(b"HTTP/1.1 200 OK")[1:]
    assert [a[a.index(b'"n":') + 4 : a.index(b",", a.index(b'"n":'))] for a in answers] == [
        b"2",
        b"4",
        b"6",
    ]


def test_a_client_that_leaves_does_not_cost_the_worker(server: Server, tmpdir_: Path) -> None:
    """The prediction runs to its end and its answer is dropped; the worker is not restarted."""
    pid = predict(server, data={"n": "2"}).json()["predictions"]["pid"]
    with _raw(server) as sock:
        sock.sendall(_form(1, "sleep"))
        time.sleep(0.3)  # the worker is sleeping on it
    r = predict(server, data={"n": "2"})  # waits for the sleeping prediction to end
    assert r.status_code == 200, r.text
    assert r.json()["predictions"]["pid"] == pid
    assert httpx.get(f"{server.url}/health").status_code == 200
    assert_still_serving(server, tmpdir_)


def test_missing_and_wrong_arguments_name_the_field(server: Server, tmpdir_: Path) -> None:
    body = assert_problem(predict(server, data={}), 422, "n", "Missing data")
    assert "n" in body["errors"]
    assert_problem(predict(server, data={"n": "four"}), 422, "n: Not a valid integer")
    assert_problem(predict(server, data={"n": "1", "mode": "dance"}), 422, "mode")
    assert_problem(predict(server, json={"n": "x"}), 422, "n")
    assert_problem(predict(server, data={"n": "1", "upload": "x"}), 422, "upload", "file")
    assert_still_serving(server, tmpdir_)


def test_unknown_model_is_404(server: Server) -> None:
    r = httpx.post(f"{server.url}/v2/models/nope/predict/", headers=AUTH)
    assert_problem(r, 404, "nope", "faulty")


def test_oversized_upload_is_413_also_when_streamed(server: Server, tmpdir_: Path) -> None:
    big = b"x" * (LIMIT + 1)
    assert_problem(
        predict(server, data={"n": "1"}, files={"upload": ("b", big)}), 413, "--max-upload-bytes"
    )

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold while streaming
        yield b'--B\r\nContent-Disposition: form-data; name="upload"; filename="b"\r\n\r\n'
        for _ in range(50):
            yield b"x" * 10_000

    r = predict(
        server, content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=B"}
    )
    assert_problem(r, 413)
    assert_still_serving(server, tmpdir_)


def test_streamed_upload_without_length_is_parsed(server: Server, tmpdir_: Path) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: the streaming parser
        yield b'--B\r\nContent-Disposition: form-data; name="n"\r\n\r\n6\r\n'
        yield b'--B\r\nContent-Disposition: form-data; name="upload"; filename="b"\r\n\r\n'
        yield b"y" * 5000
        yield b"\r\n--B--\r\n"

    r = predict(
        server, content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=B"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["predictions"]["n"] == 6 and r.json()["predictions"]["size"] == 5000
    assert_still_serving(server, tmpdir_)


def test_malformed_multipart_is_400(server: Server) -> None:
    r = predict(
        server,
        content=b"--B\r\nnonsense",
        headers={"Content-Type": "multipart/form-data; boundary=B"},
    )
    assert_problem(r, 400, "multipart")


def test_model_exception_is_500_with_its_message(server: Server, tmpdir_: Path) -> None:
    r = predict(server, data={"n": "3", "mode": "raise"}, files={"upload": ("a", b"abc")})
    assert_problem(r, 500, "ValueError: n must be even, got 3")
    assert_still_serving(server, tmpdir_)


def test_timeout_is_504_and_the_worker_is_replaced(server: Server, tmpdir_: Path) -> None:
    r = predict(server, data={"n": "30", "mode": "sleep"}, files={"upload": ("a", b"abc")})
    assert_problem(r, 504, "timeout of 2 s")
    assert_still_serving(server, tmpdir_)


def test_crashed_worker_is_500_and_replaced(server: Server, tmpdir_: Path) -> None:
    assert_problem(predict(server, data={"n": "1", "mode": "crash"}), 500, "died", "restarted")
    assert_still_serving(server, tmpdir_)


def test_full_queue_is_503(server: Server, tmpdir_: Path) -> None:
    answers: dict[str, httpx.Response] = {}

    def send(key: str, data: dict[str, str]) -> None:
        answers[key] = predict(server, data=data)

    busy = threading.Thread(target=send, args=("busy", {"n": "1", "mode": "sleep"}))
    busy.start()
    time.sleep(0.3)
    queued = threading.Thread(target=send, args=("queued", {"n": "2"}))
    queued.start()
    time.sleep(0.3)
    assert_problem(predict(server, data={"n": "2"}), 503, "busy", "--queue")
    busy.join()
    queued.join()
    assert answers["busy"].status_code == answers["queued"].status_code == 200
    assert_still_serving(server, tmpdir_)


def test_links_honour_the_forwarded_prefix(server: Server) -> None:
    headers = {**AUTH, "X-Forwarded-Prefix": "/m/faulty"}
    r = httpx.get(f"{server.url}/v2/models/", headers=headers)
    assert r.json()["models"][0]["links"] == [{"rel": "self", "href": "/m/faulty/v2/models/faulty"}]
    r = httpx.get(f"{server.url}/v2/", headers=headers)
    assert r.json()["links"][0]["href"] == "/m/faulty/v2/"


def test_openapi_lists_the_arguments_and_the_file_as_binary(server: Server) -> None:
    for path in ("/openapi.json", "/swagger.json"):
        doc = httpx.get(f"{server.url}{path}", headers=AUTH).json()
        body = doc["paths"]["/v2/models/faulty/predict/"]["post"]["requestBody"]
        schema = body["content"]["multipart/form-data"]["schema"]
        assert schema["properties"]["n"]["type"] == "integer"
        assert schema["properties"]["n"]["description"] == "A number."
        assert schema["properties"]["mode"]["enum"] == ["ok", "raise", "sleep", "crash"]
        assert schema["properties"]["upload"] == {"type": "string", "format": "binary"}
        assert schema["required"] == ["n"]
        train = doc["paths"]["/v2/models/faulty/train/"]["post"]["requestBody"]
        assert "seconds" in train["content"]["multipart/form-data"]["schema"]["properties"]


def _metrics(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    r = httpx.get(f"{server.url}/metrics", headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def test_metrics_count_predictions_by_status_and_worker_restarts(
    server: Server, tmpdir_: Path
) -> None:
    assert_problem(httpx.get(f"{server.url}/metrics"), 401, "token")
    before = _metrics(server)
    for data in ({"n": "2"}, {"n": "4"}, {}, {"n": "1", "mode": "crash"}):
        predict(server, data=data)
    httpx.post(f"{server.url}/v2/models/nope/predict/", data={"n": "2"}, headers=AUTH)
    assert_still_serving(server, tmpdir_)  # one more 200
    after = _metrics(server)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    total = "agora_modelserver_predictions_total"
    assert delta(total, model="faulty", status="200") == 3
    assert delta(total, model="faulty", status="422") == 1
    assert delta(total, model="faulty", status="500") == 1
    assert delta("agora_modelserver_prediction_seconds_count", model="faulty") == 5
    assert delta("agora_modelserver_worker_restarts_total", model="faulty") == 1
    assert after[("agora_modelserver_workers_warm", (("model", "faulty"),))] == 1
    assert after[("agora_modelserver_queue_waiting", (("model", "faulty"),))] == 0
    assert not [k for k in after if ("model", "nope") in k[1]]  # no label from a path


def _read_all(sock: socket.socket) -> bytes:
    got = b""
    while data := sock.recv(65536):
        got += data
    return got


def test_a_fragment_is_not_part_of_the_query(server: Server) -> None:
    with _raw(server) as sock:
        sock.sendall(
            b"POST /v2/models/faulty/predict/?n=4#frag HTTP/1.1\r\nHost: t\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + b"\r\nContent-Length: 0\r\n"
            b"Connection: close\r\n\r\n"
        )
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert b'"n":4' in answer


def test_an_answer_before_a_held_back_body_ends_the_connection(server: Server) -> None:
    """Expect: 100-continue, refused before the body was asked for: the body never comes, so
    the connection ends rather than read the next request as that body."""
    with _raw(server) as sock:
        sock.sendall(
            b"POST /v2/models/faulty/predict/ HTTP/1.1\r\nHost: t\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Expect: 100-continue\r\nContent-Length: 3\r\n\r\n"
        )
        answer = _read_all(sock)  # ends: the server closed the connection
    assert answer.startswith(b"HTTP/1.1 401"), answer
    assert b"connection: close" in answer.lower()
