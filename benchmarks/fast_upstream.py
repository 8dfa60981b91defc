"""A fast OpenAI-compatible upstream for the gateway benchmark: fixed answers, no delay.

`POST /v1/chat/completions` answers a small `chat.completion` with usage, or with
`"stream": true` an SSE stream of eight `chat.completion.chunk`s (each its own HTTP chunk and
send), a usage chunk when `stream_options.include_usage` is set, and `data: [DONE]`.
`GET /v1/models` lists the one model. Every request must carry `Authorization: Bearer KEY`
(but `GET /health`).

It is a bare asyncio protocol on uvloop with httptools' parser (HTTP/1.1, keep-alive,
pipelining). Pinned to one core, with wrk on the other, it answered about 30,000 non-streaming
requests/s, against 19,500 for the same answer from a bare ASGI app under uvicorn (uvloop,
httptools) and 12,800 from aiohttp.web: the upstream should never be what limits a gateway.

With ``--framework fastapi`` the same answers come from a FastAPI app under uvicorn (uvloop,
httptools, one process), the request checked by a pydantic model: an upstream written the
usual way (vLLM's OpenAI-compatible server is a FastAPI app too), for the gateway's overhead
against a server that does some work of its own per request. ``--framework starlette`` is the
same without FastAPI's layer and the model checks (a plain Starlette app under uvicorn).

    python benchmarks/fast_upstream.py --port 9000 --key sk-upstream [--host 127.0.0.1]
        [--framework bare|starlette|fastapi]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from typing import Any

import httptools
import orjson
import uvloop
from pydantic import BaseModel

WORDS = ["Hello", "!", " This", " is", " the", " bench", " upstream", "."]
PROMPT_TOKENS, COMPLETION_TOKENS = 12, len(WORDS)
USAGE = {
    "prompt_tokens": PROMPT_TOKENS,
    "completion_tokens": COMPLETION_TOKENS,
    "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
}


def _response(status: bytes, body: bytes, keep_alive: bool) -> bytes:
    return (
        b"HTTP/1.1 "
        + status
        + b"\r\ncontent-type: application/json\r\ncontent-length: "
        + str(len(body)).encode()
        + (b"\r\n\r\n" if keep_alive else b"\r\nconnection: close\r\n\r\n")
        + body
    )


def _error(status: bytes, message: str, keep_alive: bool) -> bytes:
    body = orjson.dumps({"error": {"message": message, "type": "invalid_request_error"}})
    return _response(status, body, keep_alive)


class Answers:
    """Everything precomputed but the model name, the id and the timestamp."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.models = orjson.dumps(
            {
                "object": "list",
                "data": [{"id": model, "object": "model", "created": 0, "owned_by": "bench"}],
            }
        )
        self.counter = 0

    def completion(self, model: str) -> bytes:
        self.counter += 1
        return orjson.dumps(
            {
                "id": f"chatcmpl-{self.counter}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(WORDS)},
                        "finish_reason": "stop",
                    }
                ],
                "usage": USAGE,
            }
        )

    def chunks(self, model: str, include_usage: bool) -> list[bytes]:
        """The SSE events, each framed as one HTTP/1.1 chunk."""
        framed = []
        for data in self.events(model, include_usage):
            framed.append(b"%x\r\n%s\r\n" % (len(data), data))
        framed[-1] += b"0\r\n\r\n"
        return framed

    def events(self, model: str, include_usage: bool) -> list[bytes]:
        """The SSE events (``data: …`` and a blank line each)."""
        self.counter += 1
        head = {
            "id": f"chatcmpl-{self.counter}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }
        events = []
        for i, word in enumerate(WORDS):
            delta = {"role": "assistant", "content": word} if i == 0 else {"content": word}
            last = i == len(WORDS) - 1
            choice = {"index": 0, "delta": delta, "finish_reason": "stop" if last else None}
            event = {**head, "choices": [choice]}
            if include_usage:
                event["usage"] = None
            events.append(orjson.dumps(event))
        if include_usage:
            events.append(orjson.dumps({**head, "choices": [], "usage": USAGE}))
        events.append(b"[DONE]")
        return [b"data: " + e + b"\n\n" for e in events]


class Upstream(asyncio.Protocol):
    __slots__ = ("answers", "auth", "body", "headers_auth", "parser", "transport", "url")

    def __init__(self, answers: Answers, auth: bytes) -> None:
        self.answers = answers
        self.auth = auth
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []
        self.headers_auth = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.write(_error(b"400 Bad Request", "bad request", False))
                self.transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []
        self.headers_auth = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) == 13 and name.lower() == b"authorization":
            self.headers_auth = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        keep = self.parser.should_keep_alive()
        method = self.parser.get_method()
        path = self.url.split(b"?", 1)[0]
        if method == b"GET" and path == b"/health":  # for health probes: no key
            t.write(_response(b"200 OK", b'{"status":"ok"}', keep))
        elif self.headers_auth != self.auth:
            t.write(_error(b"401 Unauthorized", "invalid upstream key", keep))
        elif method == b"POST" and path == b"/v1/chat/completions":
            self._chat(t, keep)
        elif method == b"GET" and path == b"/v1/models":
            t.write(_response(b"200 OK", self.answers.models, keep))
        else:
            t.write(_error(b"404 Not Found", "not found", keep))
        if not keep:
            t.close()

    def _chat(self, t: asyncio.Transport, keep: bool) -> None:
        try:
            req = orjson.loads(b"".join(self.body))
            model = req.get("model") or self.answers.model
            if not isinstance(req.get("messages"), list):
                raise ValueError
        except (orjson.JSONDecodeError, AttributeError, ValueError):
            t.write(_error(b"400 Bad Request", "expected a chat completion request", keep))
            return
        if req.get("stream"):
            opts = req.get("stream_options") or {}
            chunks = self.answers.chunks(model, bool(opts.get("include_usage")))
            t.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n"
                + (b"\r\n" if keep else b"connection: close\r\n\r\n")
                + chunks[0]
            )
            for c in chunks[1:]:
                t.write(c)
        else:
            t.write(_response(b"200 OK", self.answers.completion(model), keep))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(host: str, port: int, key: str, model: str) -> None:
    loop = asyncio.get_running_loop()
    answers = Answers(model)
    auth = b"Bearer " + key.encode()
    server = await loop.create_server(
        lambda: Upstream(answers, auth), host, port, backlog=4096, reuse_address=True
    )
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"fast upstream on http://{host}:{port}/v1", flush=True)
    async with server:
        await stop.wait()


class Message(BaseModel):
    role: str
    content: str


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatRequest(BaseModel):
    """The fields of a chat completion request the answers depend on, checked."""

    model: str | None = None
    messages: list[Message]
    max_tokens: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None


def sse(events: list[bytes]) -> Any:
    """A Starlette (and FastAPI) streaming answer of these SSE events, one write each."""
    from starlette.responses import StreamingResponse

    async def stream() -> Any:
        for event in events:
            yield event

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"cache-control": "no-cache"}
    )


def fastapi_app(key: str, model: str) -> Any:
    """The same answers from FastAPI: a pydantic request model, JSON and streaming responses."""
    from fastapi import FastAPI, Header, HTTPException
    from fastapi.responses import Response

    answers = Answers(model)
    auth = f"Bearer {key}"
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    def check(authorization: str | None) -> None:
        if authorization != auth:
            raise HTTPException(401, "invalid upstream key")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models(authorization: str | None = Header(None)) -> Response:
        check(authorization)
        return Response(answers.models, media_type="application/json")

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest, authorization: str | None = Header(None)) -> Response:
        check(authorization)
        name = req.model or answers.model
        if req.stream:
            usage = req.stream_options is not None and req.stream_options.include_usage
            return sse(answers.events(name, usage))
        return Response(answers.completion(name), media_type="application/json")

    return app


def starlette_app(key: str, model: str) -> Any:
    """The same answers from a plain Starlette app: routing and responses, no model checks."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    answers = Answers(model)
    auth = f"Bearer {key}"

    def refused(request: Request) -> Response | None:
        if request.headers.get("authorization") != auth:
            return Response(b'{"error":{"message":"invalid upstream key"}}', 401)
        return None

    async def health(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    async def models(request: Request) -> Response:
        return refused(request) or Response(answers.models, media_type="application/json")

    async def chat(request: Request) -> Response:
        if (no := refused(request)) is not None:
            return no
        try:
            req = orjson.loads(await request.body())
            if not isinstance(req.get("messages"), list):
                raise ValueError
        except (orjson.JSONDecodeError, AttributeError, ValueError):
            return Response(b'{"error":{"message":"expected a chat completion"}}', 400)
        name = req.get("model") or answers.model
        if req.get("stream"):
            usage = bool((req.get("stream_options") or {}).get("include_usage"))
            return sse(answers.events(name, usage))
        return Response(answers.completion(name), media_type="application/json")

    return Starlette(
        routes=[
            Route("/health", health),
            Route("/v1/models", models),
            Route("/v1/chat/completions", chat, methods=["POST"]),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key", default="sk-bench-upstream")
    parser.add_argument("--model", default="bench-model", help="the model /v1/models lists")
    parser.add_argument("--framework", choices=("bare", "starlette", "fastapi"), default="bare")
    args = parser.parse_args()
    if args.framework == "bare":
        uvloop.run(serve(args.host, args.port, args.key, args.model))
        return
    import uvicorn

    build = fastapi_app if args.framework == "fastapi" else starlette_app
    print(f"{args.framework} upstream on http://{args.host}:{args.port}/v1", flush=True)
    uvicorn.run(
        build(args.key, args.model),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        backlog=4096,
    )


if __name__ == "__main__":
    main()
