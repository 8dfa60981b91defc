"""Served modules (``/m/{model}/…``) through the lean HTTP front, with an external DEEPaaS.

The platform runs as ``agora up`` runs it (uvicorn with ``http=GatewayProtocol``), so ``/m/``
requests are answered by a ``LeanCycle``; the module is of kind ``deepaas`` with source
``external``, pointed at a fake DEEPaaS endpoint (Starlette under plain uvicorn/h11 in a thread),
which the proxy reaches over aiohttp.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

# Captured at import, before any test monkeypatches ``uvicorn.Config``: the fake stays on h11.
from uvicorn import Config as PlainConfig

from agora.gateway import modules
from agora.gateway.front import GatewayProtocol
from tests.gateway.conftest import Gateway
from tests.gateway.rawhttp import Conn
from tests.servers import free_port, wait_for_port

BIG = bytes(i % 251 for i in range(300_000))
CHUNKS = [b"first chunk\n", b"second chunk\n", b"third and last chunk\n"]
EXTERNAL_KEY = "sk-external-deepaas"
MAX_UPLOAD = 4096
PREDICT = "/m/echo/v2/models/echo/predict/"


# --- the fake external DEEPaaS ---------------------------------------------------------------


async def _predict(request: Request) -> Response:
    body = await request.body()
    return JSONResponse(
        {
            "query": request.url.query,
            "prefix": request.headers.get("x-forwarded-prefix"),
            "content_type": request.headers.get("content-type"),
            "length": len(body),
            "authorization": request.headers.get("authorization"),
            "headers": sorted(request.headers.keys()),
        }
    )


async def _big(request: Request) -> Response:
    return Response(
        BIG,
        media_type="application/octet-stream",
        headers={"content-disposition": 'attachment; filename="big.bin"'},
    )


async def _stream(request: Request) -> Response:
    async def pieces() -> Any:
        for piece in CHUNKS:
            await asyncio.sleep(0.05)
            yield piece

    return StreamingResponse(pieces(), media_type="text/plain")


async def _empty(request: Request) -> Response:
    return Response(status_code=204)


async def _slow(request: Request) -> Response:
    await asyncio.sleep(3)
    return Response(b"late")


FAKE_APP = Starlette(
    routes=[
        Route("/v2/models/echo/empty", _empty, methods=["DELETE"]),
        Route("/v2/models/echo/slow", _slow, methods=["GET"]),
        Route("/v2/models/echo/predict/", _predict, methods=["POST"]),
        Route("/v2/models/echo/big", _big, methods=["GET"]),
        Route("/v2/models/echo/stream", _stream, methods=["GET"]),
    ]
)


@pytest.fixture(scope="module")
def deepaas() -> Iterator[str]:
    """The fake DEEPaaS endpoint's base URL (no ``/v1``: module paths are appended as they are)."""
    port = free_port()
    config = PlainConfig(
        FAKE_APP, host="127.0.0.1", port=port, http="h11", lifespan="off", log_level="warning"
    )
    assert config.http == "h11"
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="fake-deepaas", daemon=True)
    thread.start()
    wait_for_port("127.0.0.1", port)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


# --- the platform -----------------------------------------------------------------------------


@pytest.fixture
def front(
    deepaas: str, gateway_factory: Callable[..., Gateway], monkeypatch: pytest.MonkeyPatch
) -> Gateway:
    monkeypatch.setattr(uvicorn, "Config", functools.partial(uvicorn.Config, http=GatewayProtocol))
    gw = gateway_factory(gateway_max_upload_bytes=MAX_UPLOAD)
    gw.add_model(
        name="echo",
        kind="deepaas",
        source="external",
        external_url=deepaas,
        external_key=EXTERNAL_KEY,
    )
    return gw


@pytest.fixture
def replies(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The Reply class each ``ModuleProxy.handle`` call got (``LeanCycle`` or ``AsgiReply``)."""
    seen: list[str] = []
    original = modules.ModuleProxy.handle

    async def handle(self: modules.ModuleProxy, reply: Any, *args: Any, **kw: Any) -> None:
        seen.append(type(reply).__name__)
        await original(self, reply, *args, **kw)

    monkeypatch.setattr(modules.ModuleProxy, "handle", handle)
    return seen


@pytest.fixture
def key(front: Gateway) -> str:
    return front.key()[1]


def _client(gw: Gateway, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=gw.platform.url, headers=headers, timeout=10)


def _get(key: str, path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n".encode()


def _post(
    key: str, path: str, body: bytes, ctype: str = "application/x-www-form-urlencoded"
) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
    head += f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def _problem(r: httpx.Response | tuple[int, dict[str, str], bytes], status: int) -> dict:
    if isinstance(r, httpx.Response):
        got, ctype, body = r.status_code, r.headers.get("content-type", ""), r.content
    else:
        got, ctype, body = r[0], r[1].get("content-type", ""), r[2]
    assert got == status, body
    assert ctype == "application/problem+json", ctype
    problem = dict(orjson.loads(body))
    assert problem["status"] == status
    return problem


# --- tests ------------------------------------------------------------------------------------


def test_predict_passes_query_prefix_and_body(front: Gateway, key: str, replies: list[str]) -> None:
    with _client(front, key) as http:
        r = http.post(
            PREDICT + "?a=1&b=two",
            files={"data": ("x.txt", b"y" * 500, "text/plain")},
            data={"field": "value"},
            headers={"X-Secret": "not for the module", "Cookie": "c=1"},
        )
        assert r.status_code == 200, r.text
        sent = int(r.request.headers["content-length"])
        got = r.json()
        assert got["query"] == "a=1&b=two"
        assert got["prefix"] == "/m/echo"
        assert got["content_type"] == r.request.headers["content-type"]
        assert got["content_type"].startswith("multipart/form-data; boundary=")
        assert got["length"] == sent > 500
        # The module sees the operator's key, never the caller's; other headers stay behind.
        assert got["authorization"] == f"Bearer {EXTERNAL_KEY}"
        assert "x-secret" not in got["headers"] and "cookie" not in got["headers"]

        r = http.post(PREDICT, data={"a": "1"})
        assert r.status_code == 200, r.text
        got = r.json()
        assert got["query"] == "" and got["length"] == 3
        assert got["content_type"] == "application/x-www-form-urlencoded"
    assert replies and set(replies) == {"LeanCycle"}


def test_big_answer_has_its_length_and_headers(
    front: Gateway, key: str, replies: list[str]
) -> None:
    with _client(front, key) as http:
        r = http.get("/m/echo/v2/models/echo/big")
    assert r.status_code == 200
    assert r.content == BIG
    assert r.headers["content-length"] == str(len(BIG))
    assert "transfer-encoding" not in r.headers
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-disposition"] == 'attachment; filename="big.bin"'
    assert replies == ["LeanCycle"]


def test_streamed_answer_is_chunked(front: Gateway, key: str, replies: list[str]) -> None:
    with _client(front, key) as http:
        r = http.get("/m/echo/v2/models/echo/stream")
    assert r.status_code == 200
    assert r.content == b"".join(CHUNKS)
    assert r.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in r.headers
    assert r.headers["content-type"].startswith("text/plain")

    c = Conn(front)
    c.send(_get(key, "/m/echo/v2/models/echo/stream"))
    status, headers, body = c.response()
    assert status == 200 and headers["transfer-encoding"] == "chunked"
    assert body == b"".join(CHUNKS)
    c.close()
    assert replies == ["LeanCycle", "LeanCycle"]


def test_keep_alive_and_pipelining(front: Gateway, key: str, replies: list[str]) -> None:
    c = Conn(front)
    c.send(_get(key, "/m/echo/v2/models/echo/big"))
    status, headers, body = c.response()
    assert status == 200 and body == BIG and headers["content-length"] == "300000"
    c.send(_post(key, PREDICT + "?n=2", b"a=1&b=2"))
    status, headers, body = c.response()
    assert status == 200, body
    got = orjson.loads(body)
    assert got["query"] == "n=2" and got["length"] == 7 and got["prefix"] == "/m/echo"

    # Pipelined: stream, big, an error and a prediction, answered in order on one connection.
    c.send(
        _get(key, "/m/echo/v2/models/echo/stream")
        + _get(key, "/m/echo/v2/models/echo/big")
        + _get(key, "/m/nope/v2/models/")
        + _post(key, PREDICT, b"x=y")
    )
    status, _, body = c.response()
    assert status == 200 and body == b"".join(CHUNKS)
    status, _, body = c.response()
    assert status == 200 and body == BIG
    _problem(c.response(), 404)
    status, _, body = c.response()
    assert status == 200 and orjson.loads(body)["length"] == 3
    assert c.buf == b""
    c.close()
    assert replies == ["LeanCycle"] * 6


def test_errors_are_problem_json(front: Gateway, key: str, replies: list[str]) -> None:
    with _client(front, key) as http:
        problem = _problem(http.get("/m/nope/v2/models/"), 404)
        assert problem["instance"] == "/m/nope/v2/models/"
        assert problem["type"].endswith("/model_not_found")
        _problem(http.get("/m/"), 404)
    with _client(front, None) as anonymous:
        _problem(anonymous.post(PREDICT, data={"a": "1"}), 401)
    with _client(front, "agora_" + "x" * 43) as wrong:
        _problem(wrong.get("/m/echo/v2/models/echo/big"), 401)
    assert set(replies) == {"LeanCycle"}

    # A declared length over gateway_max_upload_bytes: answered at once, the connection ends.
    c = Conn(front)
    c.send(_post(key, PREDICT, b"x" * (MAX_UPLOAD * 2))[:-MAX_UPLOAD])
    problem = _problem(c.response(), 413)
    assert problem["type"].endswith("/request_too_large")
    assert c.closed()

    # A chunked body that grows over the limit.
    c = Conn(front)
    head = f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
    c.send((head + "Transfer-Encoding: chunked\r\n\r\n").encode())
    for _ in range(MAX_UPLOAD // 1000 + 1):
        c.send(b"%x\r\n%b\r\n" % (1000, b"z" * 1000))
        time.sleep(0.01)
    _problem(c.response(), 413)
    assert c.closed()

    # Under the limit, a chunked body is read whole and passed on.
    c = Conn(front)
    c.send((head + "Transfer-Encoding: chunked\r\n\r\n").encode())
    for piece in (b"a=1&", b"b=2"):
        c.send(b"%x\r\n%b\r\n" % (len(piece), piece))
    c.send(b"0\r\n\r\n")
    status, _, body = c.response()
    assert status == 200 and orjson.loads(body)["length"] == 7
    c.close()


def test_percent_encoded_paths_fall_back_to_asgi(
    front: Gateway, key: str, replies: list[str]
) -> None:
    with _client(front, key) as http:
        r = http.get("/m/echo/v2/models/ech%6F/big")
    assert r.status_code == 200 and r.content == BIG
    assert r.headers["content-disposition"] == 'attachment; filename="big.bin"'
    assert replies == ["AsgiReply"]


def test_answers_without_a_body_keep_the_connection_clean(
    front: Gateway, key: str, replies: list[str]
) -> None:
    """A 204 and the answer to a HEAD carry no body (no chunked terminator): the next answer on
    the same connection starts where it should."""
    c = Conn(front)
    c.send(
        f"DELETE /m/echo/v2/models/echo/empty HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {key}\r\n\r\n".encode()
    )
    status, headers = c.head()
    assert status == 204 and "transfer-encoding" not in headers
    assert "content-length" not in headers or headers["content-length"] == "0"
    c.send(
        f"HEAD /m/echo/v2/models/echo/stream HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {key}\r\n\r\n".encode()
    )
    status, headers = c.head()
    assert status in (200, 405), headers
    assert "transfer-encoding" not in headers
    c.send(_get(key, "/m/echo/v2/models/echo/big"))
    status, headers, body = c.response()
    assert status == 200 and body == BIG
    assert c.buf == b""
    c.close()
    assert set(replies) == {"LeanCycle"}


def test_a_client_leaving_is_metered_as_499(front: Gateway, key: str, replies: list[str]) -> None:
    c = Conn(front)
    c.send(_get(key, "/m/echo/v2/models/echo/slow"))
    time.sleep(0.5)  # the request reached the module, which answers after 3 s
    c.close()
    assert front.usage_statuses(until=499) == [499]
    assert replies == ["LeanCycle"]


def test_a_module_past_its_total_timeout_is_a_504(
    front: Gateway, key: str, replies: list[str], deepaas: str
) -> None:
    front.add_model(
        name="sluggish",
        kind="deepaas",
        source="external",
        external_url=deepaas,
        total_timeout=1,
        first_byte_timeout=10,
    )
    began = time.monotonic()
    with _client(front, key) as c:
        r = c.get("/m/sluggish/v2/models/echo/slow")
        took = time.monotonic() - began
        problem = _problem(r, 504)
        assert problem["detail"] == "The module 'sluggish' did not answer within 1 s"
        assert took < 2.5, took  # the module answers after 3 s
        # The timer is gone with the request: the next one is not cut short.
        assert c.post("/m/echo/v2/models/echo/predict/", data={"a": "1"}).status_code == 200
    deadline = time.monotonic() + 10
    while sorted(statuses := front.usage_statuses(until=504)) != [200, 504]:
        assert time.monotonic() < deadline, statuses  # both metered, the 504 too
    assert replies == ["LeanCycle", "LeanCycle"]
