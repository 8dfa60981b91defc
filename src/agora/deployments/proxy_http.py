"""HTTP through the access proxy: bodies stream both ways, nothing is buffered whole."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
from fastapi import FastAPI
from starlette.requests import ClientDisconnect, Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from agora.deployments.proxy import (
    PREFIX,
    Target,
    resolve,
    response_headers,
    upstream_headers,
)
from agora.errors import BadGateway, GatewayTimeout

log = logging.getLogger("agora.proxy")
CONNECT_TIMEOUT = 10.0
#: How long a service may take to start its answer once it has the whole request. The answer's
#: body then has no time limit (server-sent events, long downloads).
RESPONSE_TIMEOUT = 300.0
_SAFE = {"GET", "HEAD", "OPTIONS"}


def new_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(
        # Services are on internal addresses: never through an HTTP proxy from the environment.
        trust_env=False,
        timeout=httpx.Timeout(connect=CONNECT_TIMEOUT, read=None, write=None, pool=None),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
    )


def client_of(request: Request) -> httpx.AsyncClient:
    client: httpx.AsyncClient | None = getattr(request.app.state, "proxy_client", None)
    if client is None:  # an app run without its lifespan (some tests)
        client = request.app.state.proxy_client = new_client()
    return client


async def forward(request: Request, dep_id: str) -> Response:
    target = await resolve(request, dep_id, state_changing=request.method not in _SAFE)
    raw_path = request.scope.get("raw_path") or request.url.path.encode()
    url = httpx.URL(f"http://{target.address}").copy_with(
        raw_path=target.upstream_path(raw_path)
        + (b"?" + request.scope["query_string"] if request.scope["query_string"] else b"")
    )
    has_body = "transfer-encoding" in request.headers or request.headers.get(
        "content-length", "0"
    ) not in ("", "0")
    try:
        async with asyncio.timeout(None) as deadline:

            def start_clock() -> None:
                deadline.reschedule(asyncio.get_running_loop().time() + RESPONSE_TIMEOUT)

            content = _upload(request, start_clock) if has_body else None
            if content is None:
                start_clock()
            upstream = await client_of(request).send(
                httpx.Request(
                    request.method, url, headers=upstream_headers(request, target), content=content
                ),
                stream=True,
            )
    except ClientDisconnect:
        return Response(status_code=400)  # the caller left mid-upload; nobody reads this
    except (TimeoutError, httpx.TimeoutException) as exc:
        raise GatewayTimeout(
            f"Deployment '{dep_id}' did not answer within {_seconds(exc)}; it may be busy"
        ) from exc
    except httpx.HTTPError as exc:
        log.info("proxy to %s (%s) failed: %r", dep_id, target.address, exc)
        raise BadGateway(
            f"Deployment '{dep_id}' is running but its service could not be reached "
            f"({type(exc).__name__}); it may have just stopped or crashed"
        ) from exc
    return _Relay(upstream, target)


async def _upload(request: Request, done: Callable[[], None]) -> AsyncIterator[bytes]:
    async for chunk in request.stream():
        if chunk:
            yield chunk
    done()


def _seconds(exc: Exception) -> str:
    if isinstance(exc, httpx.ConnectTimeout):
        return f"{CONNECT_TIMEOUT:g} s (connecting)"
    return f"{RESPONSE_TIMEOUT:g} s"


class _Relay(StreamingResponse):
    """The service's answer, passed on as it arrives (still encoded as the service sent it)."""

    def __init__(self, upstream: httpx.Response, target: Target) -> None:
        super().__init__(upstream.aiter_raw(), status_code=upstream.status_code)
        self.raw_headers = response_headers(upstream.headers.raw, target)
        self.upstream = upstream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.upstream.aclose()


class _Forward:
    """All methods on ``/d/{id}/{path}`` (an ASGI app, so that no method list limits it)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        response = await forward(request, request.path_params["dep_id"])
        await response(scope, receive, send)


class _AddSlash:
    """``/d/{id}`` is the service's root too: the services' relative links need the slash."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        query = f"?{request.url.query}" if request.url.query else ""
        location = f"{PREFIX}{request.path_params['dep_id']}/{query}"
        await RedirectResponse(location, status_code=307)(scope, receive, send)


def install(app: FastAPI) -> None:
    app.router.routes += [
        Route(PREFIX + "{dep_id}/{path:path}", _Forward(), include_in_schema=False),
        Route(PREFIX + "{dep_id}", _AddSlash(), include_in_schema=False),
    ]
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(owner: Any) -> AsyncIterator[Any]:
        client = app.state.proxy_client = new_client()
        try:
            async with inner(owner) as state:
                yield state
        finally:
            if getattr(app.state, "proxy_client", None) is client:
                app.state.proxy_client = None
            await client.aclose()

    app.router.lifespan_context = lifespan
