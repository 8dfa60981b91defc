"""A controllable OpenAI-compatible upstream for gateway tests (a real HTTP server process).

    python tests/gateway/fake_upstream.py --port P [--host H] [--key K] [--name replica-a]
        [--delay S] [--chunk-delay S] [--words N] [--fail-status 500] [--fail-file PATH]

Answers say which replica served them (``--name``), so tests can see the routing. With
``--fail-file``, a replica whose name is the file's content answers completions with 500, or
with ``<name> break`` cuts a stream in its first event (and appends a line to ``PATH.failed``
each time): one replica of several can be made to fail. The key
defaults to ``$AGORA_SERVICE_TOKEN`` (set when it runs as an Agora deployment), the port to
``$PORT`` and the host to ``$AGORA_BIND_HOST``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import orjson
from aiohttp import web


def build(args: argparse.Namespace) -> web.Application:
    words = [f" w{i}" for i in range(args.words)]

    def error(status: int, message: str) -> web.Response:
        body = {"error": {"message": message, "type": "invalid_request_error", "code": None}}
        return web.json_response(body, status=status)

    @web.middleware
    async def auth(request: web.Request, handler):  # type: ignore[no-untyped-def]
        if request.path == "/health":
            return await handler(request)
        if args.key and request.headers.get("Authorization") != f"Bearer {args.key}":
            return error(401, "fake upstream: wrong key")
        return await handler(request)

    async def health(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def models(_request: web.Request) -> web.Response:
        return web.json_response(
            {"object": "list", "data": [{"id": args.model, "object": "model"}]}
        )

    def told_to_fail() -> str | None:
        """``fail`` (a 500) or ``break`` (a stream's head, then the connection cut)."""
        if not args.fail_file:
            return None
        try:
            with open(args.fail_file) as f:
                name, _, how = f.read().strip().partition(" ")
        except FileNotFoundError:
            return None
        if name != args.name:
            return None
        with open(args.fail_file + ".failed", "a") as f:
            f.write(args.name + "\n")
        return how or "fail"

    async def complete(request: web.Request) -> web.StreamResponse:
        req = await request.json()
        if args.fail_status:
            return error(args.fail_status, f"fake upstream {args.name} fails")
        failure = told_to_fail()
        if failure == "fail" or (failure and not req.get("stream")):
            return error(500, f"fake upstream {args.name} was told to fail")
        if req.get("model") != args.model:
            return error(404, f"fake upstream serves {args.model}, not {req.get('model')}")
        await asyncio.sleep(args.delay)
        chat = request.path.endswith("/chat/completions")
        usage = {
            "prompt_tokens": 7,
            "completion_tokens": len(words),
            "total_tokens": 7 + len(words),
        }
        text = args.name + "".join(words)
        created = int(time.time())
        if not req.get("stream"):
            choice = (
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
                if chat
                else {"index": 0, "text": text, "finish_reason": "stop"}
            )
            return web.json_response(
                {
                    "id": "cmpl-1",
                    "object": "chat.completion" if chat else "text_completion",
                    "created": created,
                    "model": args.model,
                    "choices": [choice],
                    "usage": usage,
                }
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if failure == "break":  # dies in its first event: the head and part of it went out
            await response.write(b'data: {"id"')
            await asyncio.sleep(0.05)
            assert request.transport is not None
            request.transport.abort()
            return response
        kind = "chat.completion.chunk" if chat else "text_completion"

        def chunk(piece: str | None, finish: str | None = None) -> bytes:
            if chat:
                delta = {"content": piece} if piece is not None else {}
                choice = {"index": 0, "delta": delta, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": piece or "", "finish_reason": finish}
            obj = {
                "id": "c1",
                "object": kind,
                "created": created,
                "model": args.model,
                "choices": [choice],
            }
            return b"data: " + orjson.dumps(obj) + b"\n\n"

        for piece in [args.name, *words]:
            await response.write(chunk(piece))
            await asyncio.sleep(args.chunk_delay)
        await response.write(chunk(None, "stop"))
        if (req.get("stream_options") or {}).get("include_usage"):
            obj = {
                "id": "c1",
                "object": kind,
                "created": created,
                "model": args.model,
                "choices": [],
                "usage": usage,
            }
            await response.write(b"data: " + orjson.dumps(obj) + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await asyncio.sleep(args.end_delay)  # the stream's end comes later than [DONE]
        await response.write_eof()
        return response

    async def embeddings(request: web.Request) -> web.Response:
        req = await request.json()
        if args.fail_status:
            return error(args.fail_status, "fake upstream fails")
        inputs = req["input"] if isinstance(req["input"], list) else [req["input"]]
        data = [
            {"object": "embedding", "index": i, "embedding": [float(len(str(x))), 1.0, 0.5]}
            for i, x in enumerate(inputs)
        ]
        usage = {"prompt_tokens": 3 * len(inputs), "total_tokens": 3 * len(inputs)}
        return web.json_response(
            {"object": "list", "data": data, "model": args.model, "usage": usage}
        )

    app = web.Application(middlewares=[auth])
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", complete)
    app.router.add_post("/v1/completions", complete)
    app.router.add_post("/v1/embeddings", embeddings)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default=os.environ.get("AGORA_BIND_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "0") or 0))
    parser.add_argument("--key", default=os.environ.get("AGORA_SERVICE_TOKEN", ""))
    parser.add_argument("--model", default="fake")
    parser.add_argument("--name", default="replica")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--chunk-delay", type=float, default=0.0)
    parser.add_argument("--end-delay", type=float, default=0.0)
    parser.add_argument("--words", type=int, default=5)
    parser.add_argument("--fail-status", type=int, default=0)
    parser.add_argument("--fail-file", default="")
    args = parser.parse_args()
    web.run_app(build(args), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
