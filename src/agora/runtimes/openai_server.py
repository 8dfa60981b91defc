"""Agora's CPU model server: an OpenAI-compatible API over one local transformers model.

    python -m agora.runtimes.openai_server --model PATH --kind llm|embedding [--served-name NAME]
        [--host H] [--port P] [--max-concurrency N] [--max-tokens-limit N] [--threads N]

Host and port default to ``$AGORA_BIND_HOST`` and ``$PORT`` (set by Agora's deployment runner).
The model loads before the server listens, so a listening server is a ready one. With
``$AGORA_SERVICE_TOKEN`` set, every request but ``GET /health`` needs
``Authorization: Bearer <token>``. Endpoints: ``/health``, ``/v1/models``, and for ``llm``
``/v1/chat/completions`` and ``/v1/completions`` (streaming as Server-Sent Events), for
``embedding`` ``/v1/embeddings``. Prompts and outputs are never logged.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hmac
import logging
import os
import time
import uuid
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from agora.runtimes.engines import (
    CausalLM,
    Embedder,
    Outcome,
    Sampling,
    chat_prompt,
    use_threads,
)
from agora.runtimes.protocol import (
    APIError,
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    parse,
)

logger = logging.getLogger("agora.runtimes.openai_server")

MAX_BODY = 4 * 1024 * 1024
DEFAULT_MAX_TOKENS = 256


@dataclass(frozen=True)
class ServerConfig:
    served_name: str
    token: str | None = None
    max_tokens_limit: int = 4096
    max_body: int = MAX_BODY


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def _error(exc: APIError) -> Response:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


async def _on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return _error(exc)


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = f"Invalid URL ({request.method} {request.url.path})"
    if exc.status_code == 405:
        message = f"Method not allowed ({request.method} {request.url.path})"
    return _error(APIError(exc.status_code, message))


async def _on_crash(request: Request, exc: Exception) -> Response:
    # Starlette logs the traceback; the client learns nothing of the internals.
    return _error(APIError(500, "the server failed to answer", kind="server_error"))


class _TokenGuard:
    """Refuses every request but ``GET /health`` that lacks the service token."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        health = scope.get("path") == "/health" and scope.get("method") in ("GET", "HEAD")
        if scope["type"] == "http" and not health and not self._authorised(scope):
            response = _error(
                APIError(401, "missing or wrong service token", code="invalid_api_key")
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _authorised(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, given = value.partition(b" ")
                return scheme.lower() in (b"bearer", b"token") and hmac.compare_digest(
                    given.strip(), self.token
                )
        return False


class _EventStream(StreamingResponse):
    """Server-Sent Events that close their source (and so stop the generation) however the
    response ends, a client that went away included."""

    def __init__(self, events: AsyncGenerator[bytes, None]) -> None:
        super().__init__(
            events,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self.events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.events.aclose()


def _event(data: Any) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


async def _sse(chunks: AsyncGenerator[dict[str, Any], None]) -> AsyncGenerator[bytes, None]:
    try:
        async with aclosing(chunks):
            async for chunk in chunks:
                yield _event(chunk)
    except APIError as exc:
        yield _event(exc.body())
    except Exception:
        # The status line is long gone: the error can only travel as an event.
        logger.exception("generation failed")
        yield _event(APIError(500, "the generation failed", kind="server_error").body())
    yield b"data: [DONE]\n\n"


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise APIError(413, f"the request body is larger than {limit} bytes")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise APIError(413, f"the request body is larger than {limit} bytes")
    return bytes(body)


class _API:
    def __init__(self, engine: CausalLM | Embedder, config: ServerConfig) -> None:
        self.engine = engine
        self.config = config
        self.started = int(time.time())

    def routes(self) -> list[Route]:
        routes = [
            Route("/health", self.health, methods=["GET"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/v1/models/{name:path}", self.model, methods=["GET"]),
        ]
        if isinstance(self.engine, CausalLM):
            routes += [
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/v1/completions", self.complete, methods=["POST"]),
            ]
        else:
            routes.append(Route("/v1/embeddings", self.embed, methods=["POST"]))
        return routes

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    def _card(self) -> dict[str, Any]:
        name = self.config.served_name
        return {"id": name, "object": "model", "created": self.started, "owned_by": "agora"}

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [self._card()]})

    async def model(self, request: Request) -> Response:
        self._check_model(request.path_params["name"])
        return JSONResponse(self._card())

    def _check_model(self, name: str) -> None:
        if name != self.config.served_name:
            raise APIError(
                404,
                f"the model '{name}' does not exist; this server serves "
                f"'{self.config.served_name}'",
                param="model",
                code="model_not_found",
            )

    def _sampling(
        self, body: ChatCompletionRequest | CompletionRequest, asked: int | None
    ) -> Sampling:
        return Sampling(
            max_tokens=min(asked or DEFAULT_MAX_TOKENS, self.config.max_tokens_limit),
            temperature=1.0 if body.temperature is None else body.temperature,
            top_p=1.0 if body.top_p is None else body.top_p,
            seed=body.seed,
            stop=body.stops(),
        )

    async def chat(self, request: Request) -> Response:
        llm = self._llm()
        body = parse(ChatCompletionRequest, await _read_body(request, self.config.max_body))
        self._check_model(body.model)
        body.check_supported()
        messages = [(m.role, m.text()) for m in body.messages]

        def prompt_ids() -> list[int]:
            prompt = chat_prompt(llm.tokenizer, messages)
            return llm.encode(prompt, special_tokens=False, param="messages")

        ids = await asyncio.to_thread(prompt_ids)
        return await self._answer(True, ids, body, body.max_completion_tokens or body.max_tokens)

    async def complete(self, request: Request) -> Response:
        llm = self._llm()
        body = parse(CompletionRequest, await _read_body(request, self.config.max_body))
        self._check_model(body.model)
        body.check_supported()
        ids = await asyncio.to_thread(llm.encode, body.text(), special_tokens=True, param="prompt")
        return await self._answer(False, ids, body, body.max_tokens)

    def _llm(self) -> CausalLM:
        assert isinstance(self.engine, CausalLM)  # only routed for language models
        return self.engine

    async def _answer(
        self,
        chat: bool,
        ids: list[int],
        body: ChatCompletionRequest | CompletionRequest,
        max_tokens: int | None,
    ) -> Response:
        sampling = Sampling(
            max_tokens=min(max_tokens or DEFAULT_MAX_TOKENS, self.config.max_tokens_limit),
            temperature=1.0 if body.temperature is None else body.temperature,
            top_p=1.0 if body.top_p is None else body.top_p,
            seed=body.seed,
            stop=body.stops(),
        )
        outcome = Outcome(prompt_tokens=len(ids))
        pieces = self._llm().stream(ids, sampling, outcome)
        kind = "chat.completion" if chat else "text_completion"
        head = {
            "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
            "object": kind + (".chunk" if chat and body.stream else ""),
            "created": int(time.time()),
            "model": self.config.served_name,
        }

        def choice(text: str | None, finish: str | None, first: bool = False) -> dict[str, Any]:
            end = {"logprobs": None, "finish_reason": finish}
            if not chat:
                return {"index": 0, "text": text or "", **end}
            role = {"role": "assistant"} if first or not body.stream else {}
            content = role | ({} if text is None else {"content": text})
            return {"index": 0, ("delta" if body.stream else "message"): content, **end}

        if not body.stream:
            async with aclosing(pieces):
                text = "".join([piece async for piece in pieces])
            return JSONResponse(
                {
                    **head,
                    "choices": [choice(text, outcome.finish_reason)],
                    "usage": outcome.usage(),
                }
            )
        usage = bool(body.stream_options and body.stream_options.include_usage)
        base = head | ({"usage": None} if usage else {})

        async def chunks() -> AsyncGenerator[dict[str, Any], None]:
            if chat:
                yield {**base, "choices": [choice("", None, first=True)]}
            async with aclosing(pieces):
                async for piece in pieces:
                    yield {**base, "choices": [choice(piece, None)]}
            yield {**base, "choices": [choice(None, outcome.finish_reason)]}
            if usage:
                yield {**base, "choices": [], "usage": outcome.usage()}

        return _EventStream(_sse(chunks()))

    async def embed(self, request: Request) -> Response:
        assert isinstance(self.engine, Embedder)
        body = parse(EmbeddingRequest, await _read_body(request, self.config.max_body))
        self._check_model(body.model)
        texts = body.texts()
        if body.dimensions not in (None, self.engine.dimensions):
            raise APIError(
                400,
                f"dimensions: this model's embeddings have {self.engine.dimensions}",
                param="dimensions",
            )
        vectors, tokens = await self.engine.embed(texts)
        as_base64 = body.encoding_format == "base64"
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": (
                    base64.b64encode(v.astype("<f4").tobytes()).decode() if as_base64 else v
                ),
            }
            for i, v in enumerate(vectors)
        ]
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": self.config.served_name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )


def create_app(engine: CausalLM | Embedder, config: ServerConfig) -> ASGIApp:
    app = Starlette(
        routes=_API(engine, config).routes(),
        exception_handlers={
            APIError: _on_api_error,
            HTTPException: _on_http_error,
            Exception: _on_crash,
        },
    )
    return _TokenGuard(app, config.token) if config.token else app


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m agora.runtimes.openai_server", description=__doc__)
    p.add_argument("--model", required=True, type=Path, help="a local model directory")
    p.add_argument("--kind", required=True, choices=["llm", "embedding"])
    p.add_argument(
        "--served-name", help="the name clients put in 'model' (default: the model directory's)"
    )
    p.add_argument("--host", default=os.environ.get("AGORA_BIND_HOST") or "127.0.0.1")
    p.add_argument("--port", type=int, default=int(os.environ.get("PORT") or 8000))
    p.add_argument("--max-concurrency", type=_positive, default=1)
    p.add_argument("--max-tokens-limit", type=_positive, default=4096)
    p.add_argument(
        "--threads",
        type=_positive,
        help="CPU threads per computation (default: the CPUs this process may use, "
        "divided by --max-concurrency)",
    )
    return p


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    # The model is a local directory: never reach for the Hub (read when transformers loads).
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    use_threads(args.threads or max(1, (cpus or 1) // args.max_concurrency))
    started = time.monotonic()
    engine = (CausalLM if args.kind == "llm" else Embedder)(args.model, args.max_concurrency)
    logger.info(
        "loaded %s model from %s in %.1f s", args.kind, args.model, time.monotonic() - started
    )
    config = ServerConfig(
        served_name=args.served_name or args.model.resolve().name,
        token=os.environ.get("AGORA_SERVICE_TOKEN") or None,
        max_tokens_limit=args.max_tokens_limit,
    )
    import uvicorn

    uvicorn.run(
        create_app(engine, config),
        host=args.host,
        port=args.port,
        log_level="info",
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
