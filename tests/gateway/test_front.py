"""The lean ``/v1`` front (``agora.gateway.front``): HTTP/1.1 edge cases on raw sockets.

The server runs as ``agora up`` runs it: uvicorn with ``http=GatewayProtocol``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import orjson
import pytest
import uvicorn

from agora.gateway.front import GatewayProtocol
from tests.gateway.conftest import Gateway
from tests.gateway.rawhttp import Conn

MSG = [{"role": "user", "content": "hello"}]


@pytest.fixture
def front(gateway_factory: Callable[..., Gateway], monkeypatch: pytest.MonkeyPatch) -> Gateway:
    monkeypatch.setattr(uvicorn, "Config", functools.partial(uvicorn.Config, http=GatewayProtocol))
    return gateway_factory(gateway_max_body_bytes=4096)


@pytest.fixture
def key(front: Gateway, upstreams: Callable[..., str]) -> str:
    url = upstreams("--name", "up1", "--words", "4", "--chunk-delay", "0.2")
    front.external("chat-model", url)
    return front.key()[1]


def _request(
    key: str,
    body: bytes,
    path: str = "/v1/chat/completions",
    extra: str = "",
    chunked: bool = False,
) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
    head += "Content-Type: application/json\r\n" + extra
    if chunked:
        return (head + "Transfer-Encoding: chunked\r\n\r\n").encode()
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def _chat(stream: bool = False) -> bytes:
    return orjson.dumps({"model": "chat-model", "messages": MSG, "stream": stream})


def test_pipelined_requests_are_answered_in_order(front: Gateway, key: str) -> None:
    c = Conn(front)
    models = f"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n"
    health = "GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n"
    c.send(
        _request(key, _chat())
        + models.encode()
        + health.encode()  # ASGI, between two lean ones
        + _request(key, orjson.dumps({"model": "nope", "messages": MSG}))
        + _request(key, _chat(stream=True))
    )
    status, _, body = c.response()
    assert status == 200 and orjson.loads(body)["model"] == "chat-model"
    status, _, body = c.response()
    assert status == 200 and [m["id"] for m in orjson.loads(body)["data"]] == ["chat-model"]
    status, headers, body = c.response()
    assert status == 200 and "json" in headers["content-type"]
    status, _, body = c.response()
    assert status == 404 and orjson.loads(body)["error"]["code"] == "model_not_found"
    status, headers, body = c.response()
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    assert body.endswith(b"data: [DONE]\n\n")
    c.close()


def test_expect_100_continue_and_chunked_bodies(front: Gateway, key: str) -> None:
    c = Conn(front)
    body = _chat()
    c.send(_request(key, body, extra="Expect: 100-continue\r\n")[: -len(body)])
    status, _ = c.head()
    assert status == 100
    c.send(body)
    status, _, answer = c.response()
    assert status == 200 and orjson.loads(answer)["choices"][0]["message"]["content"]

    # A chunked request body, in pieces, on the same connection.
    c.send(_request(key, b"", chunked=True))
    half = len(body) // 2
    for piece in (body[:half], body[half:]):
        c.send(b"%x\r\n%b\r\n" % (len(piece), piece))
        time.sleep(0.05)
    c.send(b"0\r\n\r\n")
    status, _, answer = c.response()
    assert status == 200, answer
    c.close()


def test_oversized_bodies_get_413_and_the_connection_ends(front: Gateway, key: str) -> None:
    big = orjson.dumps({"model": "chat-model", "messages": MSG, "pad": "x" * 5000})
    c = Conn(front)
    c.send(_request(key, big)[:-4000])  # a declared length over the limit: answered at once
    status, headers, body = c.response()
    assert status == 413 and orjson.loads(body)["error"]["code"] == "request_too_large"
    assert headers.get("connection") == "close"
    assert c.closed()

    c = Conn(front)
    c.send(_request(key, b"", chunked=True))
    for i in range(0, len(big), 1000):
        piece = big[i : i + 1000]
        c.send(b"%x\r\n%b\r\n" % (len(piece), piece))
    status, _, body = c.response()
    assert status == 413 and orjson.loads(body)["error"]["code"] == "request_too_large"
    assert c.closed()

    # Unauthenticated requests are refused before their body matters.
    c = Conn(front)
    c.send(_request("agora_" + "x" * 43, _chat()))
    status, _, body = c.response()
    assert status == 401 and orjson.loads(body)["error"]["code"] == "invalid_api_key"
    c.close()


def test_a_client_leaving_mid_stream_cancels_the_request(front: Gateway, key: str) -> None:
    c = Conn(front)
    c.send(_request(key, _chat(stream=True)))
    status, headers = c.head()
    assert status == 200 and headers["transfer-encoding"] == "chunked"
    while b"data:" not in c.buf:
        assert c._fill()
    c.close()  # 4 words at 0.2 s each: the stream was far from done

    assert front.usage_statuses(until=499) == [499]

    # The gateway serves on; the replica was not left marked busy or failed.
    c = Conn(front)
    c.send(_request(key, _chat()))
    status, _, body = c.response()
    assert status == 200, body
    c.close()


def test_a_client_closing_at_done_is_metered_with_its_tokens(
    front: Gateway, upstreams: Callable[..., str]
) -> None:
    """Clients may close the connection at "data: [DONE]", before the stream's end reached them
    (here the upstream ends its stream 2 s after [DONE]): the answer was whole, so it is
    metered as answered, with its tokens counted against the limits."""
    front.external("late-end", upstreams("--end-delay", "2"))
    key_id, key = front.key()
    # 7 + 5 tokens a request: once they are counted, this key has no room left this minute.
    r = front.api("PUT", f"/projects/default/keys/{key_id}/limits", json={"tpm": 12})
    assert r.status_code == 200, r.text
    c = Conn(front)
    body = orjson.dumps(
        {
            "model": "late-end",
            "messages": MSG,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    )
    c.send(_request(key, body))
    status, _ = c.head()
    assert status == 200
    while b"data: [DONE]" not in c.buf:
        assert c._fill()
    c.close()

    assert front.usage_statuses(until=200) == [200]
    rows = front.wait_usage(1)
    assert [(r["tokens_in"], r["tokens_out"]) for r in rows] == [(7, 5)], rows
    c = Conn(front)
    c.send(_request(key, body))
    status, _, answer = c.response()
    assert status == 429 and b"Token rate limit" in answer, answer
    c.close()


def test_a_timeout_after_done_is_metered_as_answered(
    front: Gateway, upstreams: Callable[..., str]
) -> None:
    """The total timeout (1 s) runs out between [DONE] and the stream's end (2 s later): the
    client has the whole answer, the stream is ended properly, and it is metered as answered
    with its tokens, not as a 504 without them."""
    front.external("late-end", upstreams("--end-delay", "2"), total_timeout=1)
    key = front.key()[1]
    body = {"model": "late-end", "messages": MSG, "stream": True}
    c = Conn(front)
    c.send(_request(key, orjson.dumps(body)))
    status, _, answer = c.response()
    assert status == 200 and answer.endswith(b"data: [DONE]\n\n"), answer
    c.close()
    assert front.usage_statuses(until=200) == [200]
    rows = front.wait_usage(1)
    assert [(r["tokens_in"], r["tokens_out"]) for r in rows] == [(7, 5)], rows


def test_http_1_0_and_head_and_errors(front: Gateway, key: str) -> None:
    c = Conn(front)
    c.send(f"GET /v1/models HTTP/1.0\r\nAuthorization: Bearer {key}\r\n\r\n".encode())
    status, headers, body = c.response()
    assert status == 200 and orjson.loads(body)["data"]
    assert c.closed()

    c = Conn(front)
    c.send(f"HEAD /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n".encode())
    status, headers = c.head()
    assert status == 200 and int(headers["content-length"]) > 0
    c.send(b"GET /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = c.response()
    assert c.buf == b""  # the HEAD answer had no body
    assert status == 405 and orjson.loads(body)["error"]["code"] == "method_not_allowed"
    c.send(b"GET /v1/nothing%2Fhere HTTP/1.1\r\nHost: x\r\n\r\n")  # via ASGI: same answer
    status, headers, body = c.response()
    assert status == 404 and orjson.loads(body)["error"]["code"] == "unknown_url"
    c.close()


def test_total_timeout_is_a_504_before_the_answer_and_ends_a_stream(
    front: Gateway, upstreams: Callable[..., str]
) -> None:
    front.external("slow", upstreams("--delay", "3"), total_timeout=1, first_byte_timeout=10)
    front.external("dribble", upstreams("--words", "20", "--chunk-delay", "0.2"), total_timeout=1)
    key = front.key()[1]
    c = Conn(front)
    started = time.monotonic()
    c.send(_request(key, orjson.dumps({"model": "slow", "messages": MSG})))
    status, _, body = c.response()
    assert status == 504 and orjson.loads(body)["error"]["code"] == "upstream_timeout"
    assert time.monotonic() - started < 2.5
    c.send(_request(key, orjson.dumps({"model": "dribble", "messages": MSG, "stream": True})))
    status, _, body = c.response()  # the chunked stream is ended properly
    assert status == 200 and b"data:" in body and b"[DONE]" not in body
    c.send(_request(key, orjson.dumps({"model": "dribble", "messages": MSG})))
    status, _, body = c.response()  # and the connection serves on
    assert status == 200 and orjson.loads(body)["model"] == "dribble"
    c.close()
    # The timeout is metered too.
    deadline = time.monotonic() + 10
    while len(statuses := front.usage_statuses(until=504)) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert 504 in statuses and len(statuses) == 3, statuses


def test_streams_of_a_model_under_its_own_name_are_metered(
    front: Gateway, upstreams: Callable[..., str]
) -> None:
    # No renaming: the gateway asks for usage by splicing stream_options into the body.
    front.external("same", upstreams("--model", "same", "--words", "3"), upstream_model="same")
    key = front.key()[1]
    c = Conn(front)
    c.send(_request(key, orjson.dumps({"model": "same", "messages": MSG, "stream": True})))
    status, _, body = c.response()
    assert status == 200 and body.endswith(b"data: [DONE]\n\n")
    assert b'"usage":{' not in body and b'"usage": {' not in body  # not asked for: not passed on
    options = {"include_usage": True}
    c.send(
        _request(
            key,
            orjson.dumps(
                {"model": "same", "messages": MSG, "stream": True, "stream_options": options}
            ),
        )
    )
    status, _, body = c.response()
    assert status == 200 and b'"completion_tokens": 3' in body.replace(b'":3', b'": 3')
    c.close()
    rows = front.wait_usage(2, model="same")
    assert sum(r["tokens_out"] for r in rows) == 6
