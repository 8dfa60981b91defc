"""The OpenAI HTTP protocol at the gateway's edge: error bodies and request checks.

Requests are checked just enough to route, limit and meter them safely; the upstream server
checks the rest and its 4xx answers pass through unchanged.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from starlette.types import Receive, Send

from agora.gateway.limits import Refusal
from agora.leanhttp import Reply

__all__ = ["AsgiReply", "GatewayError", "Reply"]

ENDPOINTS = {
    "/v1/chat/completions": ("chat", "llm"),
    "/v1/completions": ("completions", "llm"),
    "/v1/embeddings": ("embeddings", "embedding"),
}

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    502: "api_error",
    503: "service_unavailable_error",
    504: "timeout_error",
}


class GatewayError(Exception):
    """An answer in OpenAI's error shape: ``{"error": {message, type, param, code}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        param: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.retry_after = retry_after

    def body(self) -> bytes:
        return orjson.dumps(
            {
                "error": {
                    "message": self.message,
                    "type": _TYPES.get(self.status, "api_error"),
                    "param": self.param,
                    "code": self.code,
                }
            }
        )

    def headers(self) -> list[tuple[bytes, bytes]]:
        out = [(b"content-type", b"application/json")]
        if self.retry_after is not None:
            out.append((b"retry-after", str(self.retry_after).encode()))
        return out


_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class AsgiReply(Reply):
    """A reply through ASGI messages (uvicorn's ordinary path, test apps, ``/m/``)."""

    __slots__ = ("send", "receive", "started", "_watcher")

    def __init__(self, send: Send, receive: Receive) -> None:
        self.send = send
        self.receive = receive
        self.started = False
        self._watcher: asyncio.Future[Any] | None = None

    @property
    def gone(self) -> bool:
        return self._watcher is not None and self._watcher.done()

    async def whole(
        self,
        status: int,
        body: bytes,
        ctype: bytes = b"application/json",
        retry_after: int | None = None,
    ) -> None:
        headers = [(b"content-type", ctype), (b"content-length", b"%d" % len(body))]
        if retry_after is not None:
            headers.append((b"retry-after", b"%d" % retry_after))
        self.started = True
        await self.send({"type": "http.response.start", "status": status, "headers": headers})
        await self.send({"type": "http.response.body", "body": body})

    async def answer(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.started = True
        head = [*headers, (b"content-length", b"%d" % len(body))]
        await self.send({"type": "http.response.start", "status": status, "headers": head})
        await self.send({"type": "http.response.body", "body": body})

    async def start_response(
        self, status: int, headers: list[tuple[bytes, bytes]], length: int | None
    ) -> None:
        self.started = True
        if length is not None:
            headers = [*headers, (b"content-length", b"%d" % length)]
        await self.send({"type": "http.response.start", "status": status, "headers": headers})

    async def start_stream(self) -> None:
        self.started = True
        await self.send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        # The request body was read in full, so the next message is the client leaving.
        self._watcher = asyncio.ensure_future(self.receive())

    async def chunk(self, data: bytes) -> None:
        await self.send({"type": "http.response.body", "body": data, "more_body": True})

    async def end_stream(self) -> None:
        self.unwatch()
        await self.send({"type": "http.response.body", "body": b""})

    def unwatch(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()


def refused(refusal: Refusal) -> GatewayError:
    code = "rate_limit_exceeded" if refusal.kind in ("rpm", "tpm") else "insufficient_quota"
    return GatewayError(429, refusal.message, code, retry_after=max(1, refusal.retry_after))


def too_large(limit: int) -> GatewayError:
    return GatewayError(413, f"The request body is larger than {limit} bytes", "request_too_large")


def bad(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(400, message, "invalid_request", param)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_request(body: bytes, endpoint: str) -> dict[str, Any]:
    """The JSON request, checked for what routing and metering rely on."""
    if not body:
        raise bad("The request has no body: send a JSON object")
    try:
        req = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bad(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(req, dict):
        raise bad("The request body must be a JSON object")
    model = req.get("model")
    if not isinstance(model, str) or not model:
        raise bad("'model' is required: the name of a model from GET /v1/models", "model")
    stream = req.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise bad("'stream' must be true or false", "stream")
    options = req.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise bad("'stream_options' must be an object", "stream_options")
    for name in ("max_tokens", "max_completion_tokens", "n"):
        value = req.get(name)
        if value is not None and (not _is_int(value) or value < 1):
            raise bad(f"'{name}' must be a positive integer", name)
    for name in ("temperature", "top_p"):
        value = req.get(name)
        if value is not None and not _is_number(value):
            raise bad(f"'{name}' must be a number", name)
    if endpoint == "chat":
        messages = req.get("messages")
        if not isinstance(messages, list) or not messages:
            raise bad("'messages' must be a non-empty list of {role, content} objects", "messages")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise bad(f"messages[{i}] must be an object with a 'role'", f"messages[{i}]")
    elif endpoint == "completions":
        prompt = req.get("prompt")
        if not isinstance(prompt, str | list) or (isinstance(prompt, list) and not prompt):
            raise bad("'prompt' must be a string or a non-empty list", "prompt")
    else:
        value = req.get("input")
        if not isinstance(value, str | list) or (isinstance(value, list) and not value):
            raise bad("'input' must be a string or a non-empty list", "input")
    return req


def usage_of(obj: Any) -> tuple[int, int]:
    """(tokens in, tokens out) of an OpenAI response object's ``usage``; zeros if absent."""
    usage = obj.get("usage") if isinstance(obj, dict) else None
    if not isinstance(usage, dict):
        return 0, 0
    prompt = usage.get("prompt_tokens") or 0
    completion = usage.get("completion_tokens") or 0
    if not completion and not prompt:
        prompt = usage.get("total_tokens") or 0
    return (prompt if _is_int(prompt) else 0), (completion if _is_int(completion) else 0)
