"""The gateway's request path: ``/v1/*`` as a bare ASGI application.

It makes no database call for API-key requests: the caller, the model, its replicas and the
limits come from the in-memory :class:`~agora.gateway.directory.Directory`. Browser sessions
(the chat page) are looked up in the database, once per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
from starlette.types import Receive, Scope, Send

from agora.errors import AgoraError
from agora.gateway.directory import Caller, Directory, ModelEntry
from agora.gateway.limits import Limit, Limiter, LimiterUnavailable, build_limiter
from agora.gateway.metrics import CONTENT_TYPE, GatewayMetrics, check_reader
from agora.gateway.protocol import (
    ENDPOINTS,
    AsgiReply,
    GatewayError,
    Reply,
    parse_request,
    refused,
    too_large,
)
from agora.gateway.proxy import Forwarder
from agora.gateway.router import Router
from agora.gateway.sessions import SessionCallers, resolve, session_token
from agora.gateway.upstream import Client as UpstreamClient
from agora.gateway.usage import Usage, UsageRecorder
from agora.runtime import Runtime

log = logging.getLogger("agora.gateway")
_JSON = [(b"content-type", b"application/json")]


class Gateway:
    """Everything one gateway process holds; ``__call__`` serves ``/v1/*`` requests."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        s = runtime.settings
        self.id = f"{s.host}:{s.port}:{secrets.token_hex(4)}"
        self.directory = Directory(runtime.db, runtime.keyring, s.gateway_refresh_seconds)
        self.sessions = SessionCallers(runtime)
        self.router = Router(s.gateway_eject_seconds, s.gateway_max_queue)
        self.directory.listeners.append(self.router.sync)
        self.limiter: Limiter = build_limiter(None)
        self.metrics = GatewayMetrics()
        self.usage = UsageRecorder(runtime.db, observer=self.metrics.observe)
        self.http: aiohttp.ClientSession | None = None
        self.upstream = UpstreamClient()
        self.forwarder: Forwarder | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._demand = asyncio.Event()

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        from agora.gateway.load import report_load, watch_health

        if self.http is not None:  # started again (a test app's second lifespan)
            await self.stop()
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60, force_close=False),
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
        )
        self.forwarder = Forwarder(self)
        self.upstream = UpstreamClient()
        # Redis clients belong to one event loop: a fresh limiter for each start.
        self.limiter = build_limiter(self.rt.settings.redis_url)
        self._demand = asyncio.Event()
        self.router.on_demand.append(self._demand.set)
        s = self.rt.settings
        try:
            await self.directory.rebuild()
        except Exception:
            log.exception("the gateway starts without keys and models; it retries")
        self._tasks = [
            asyncio.create_task(self.directory.run()),
            asyncio.create_task(self.usage.run(s.gateway_usage_flush_seconds)),
            asyncio.create_task(report_load(self, s.gateway_load_report_seconds, self._demand)),
            asyncio.create_task(watch_health(self, s.gateway_health_interval)),
            asyncio.create_task(self._sample_metrics(s.gateway_usage_flush_seconds)),
        ]

    async def _sample_metrics(self, interval: float) -> None:
        while True:
            try:
                self.metrics.sample(self)
            except Exception:
                log.exception("could not sample the gateway's metrics")
            await asyncio.sleep(interval)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        self.upstream.close()
        if self.http is not None:
            await self.http.close()
            self.http = None
        await self.limiter.close()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.usage.flush)

    # --- requests ----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry (``AgoraApp``, test apps); :mod:`agora.gateway.front` calls ``handle``
        without ASGI."""
        headers = scope["headers"]
        await self.handle(
            AsgiReply(send, receive),
            scope["method"],
            scope["path"],
            headers,
            lambda: self._body(headers, receive),
        )

    async def handle(
        self,
        reply: Reply,
        method: str,
        path: str,
        headers: list[tuple[bytes, bytes]],
        read_body: Callable[[], Awaitable[bytes]],
    ) -> None:
        """Serve one ``/v1/*`` request; ``read_body`` returns the whole request body (or raises
        a 413 :class:`GatewayError`)."""
        started = time.perf_counter()
        caller: Caller | None = None
        model: ModelEntry | None = None
        endpoint = ""
        stream = False
        forwarding = False
        limits: tuple[Limit, ...] = ()
        metered = False
        try:
            if path == "/v1/models" or path == "/v1/models/":
                if method not in ("GET", "HEAD"):
                    raise GatewayError(405, "Use GET /v1/models", "method_not_allowed")
                caller = await self._caller_of(method, headers)
                await self._models(caller, reply)
                return
            target = ENDPOINTS.get(path.rstrip("/"))
            if target is None:
                raise GatewayError(
                    404,
                    f"Unknown endpoint {path}: the gateway serves /v1/models, "
                    "/v1/chat/completions, /v1/completions and /v1/embeddings",
                    "unknown_url",
                )
            if method != "POST":
                raise GatewayError(405, f"Use POST {path}", "method_not_allowed")
            caller = await self._caller_of(method, headers)
            body = await read_body()
            endpoint, kind = target
            req = parse_request(body, endpoint)
            stream = bool(req.get("stream"))
            snapshot = self.directory.snapshot
            model = snapshot.models.get(req["model"])
            if model is None or not (model.public or caller.project_id in model.granted):
                if model is not None and caller.project_id not in model.granted:
                    raise GatewayError(
                        403,
                        f"Project '{caller.project_name}' may not use model '{model.name}'; "
                        "ask an operator to grant it",
                        "model_not_allowed",
                        "model",
                    )
                raise GatewayError(
                    404,
                    f"The model '{req['model']}' does not exist; GET /v1/models lists yours",
                    "model_not_found",
                    "model",
                )
            if model.kind != kind:
                raise GatewayError(
                    400,
                    f"'{model.name}' is an {model.kind} model: "
                    + (
                        "use /v1/embeddings"
                        if model.kind == "embedding"
                        else f"a DEEPaaS module: call it at /m/{model.name}/v2/models/"
                        if model.kind == "deepaas"
                        else "use /v1/chat/completions or /v1/completions"
                    ),
                    "wrong_endpoint",
                    "model",
                )
            limits = snapshot.limits_for(caller)
            if limits:
                try:
                    refusal = await self.limiter.admit(limits)
                except LimiterUnavailable as exc:
                    raise GatewayError(
                        503, str(exc), "limiter_unavailable", retry_after=5
                    ) from None
                if refusal is not None:
                    self._meter(caller, model, endpoint, 0, 0, started, 429, stream)
                    raise refused(refusal)
            assert self.forwarder is not None
            forwarding = True
            status, tokens_in, tokens_out = await self.forwarder.forward_to(
                reply, model, endpoint, req, body
            )
            metered = True  # a cancellation from here on (the tokens' await) meters nothing more
            self._meter(caller, model, endpoint, tokens_in, tokens_out, started, status, stream)
            if limits and (tokens_in or tokens_out):
                # The answer is sent already: metering here delays nobody.
                await self._add_tokens(limits, tokens_in + tokens_out)
        except GatewayError as exc:
            if forwarding and caller is not None and model is not None:
                # No capacity (503), a timeout (504), an upstream that broke off (502): metered,
                # so that usage shows what failed.
                await self._meter_cut(
                    reply, caller, model, endpoint, started, exc.status, stream, limits
                )
            await reply.error(exc)
        except asyncio.CancelledError:
            # The client went away (the lean front cancels its request): meter what it cost.
            if caller is not None and model is not None and reply.gone and not metered:
                await self._meter_cut(reply, caller, model, endpoint, started, 499, stream, limits)
            raise

    async def _meter_cut(
        self,
        reply: Reply,
        caller: Caller,
        model: ModelEntry,
        endpoint: str,
        started: float,
        status: int,
        stream: bool,
        limits: tuple[Limit, ...],
    ) -> None:
        """Meter a forwarded request that ended without its answer's end: a timeout, or the
        client leaving. The tokens a stream's usage showed count (and against the limits); a
        stream whose ``data: [DONE]`` went out was answered in full, so it is a 200 (clients
        may close the connection there, before the stream's end reaches them)."""
        tokens_in, tokens_out = reply.usage or (0, 0)
        if reply.finished:
            status = 200
        self._meter(caller, model, endpoint, tokens_in, tokens_out, started, status, stream)
        if limits and (tokens_in or tokens_out):
            await self._add_tokens(limits, tokens_in + tokens_out)

    async def _add_tokens(self, limits: tuple[Limit, ...], tokens: int) -> None:
        try:
            await self.limiter.add_tokens(limits, tokens)
        except LimiterUnavailable:
            log.warning("could not meter tokens against limits: the limiter is unavailable")

    def _meter(
        self,
        caller: Caller,
        model: ModelEntry,
        endpoint: str,
        tokens_in: int,
        tokens_out: int,
        started: float,
        status: int,
        stream: bool,
    ) -> None:
        now = time.perf_counter()
        self.usage.record(
            Usage(
                time.time(),
                caller.user_id,
                caller.project_id,
                caller.key_id,
                model.name,
                endpoint,
                tokens_in,
                tokens_out,
                (now - started) * 1000,
                status,
                stream,
            )
        )

    async def _models(self, caller: Caller, reply: Reply) -> None:
        snapshot = await self.directory.current()
        data = [
            {
                "id": m.name,
                "object": "model",
                "created": m.created,
                "owned_by": "agora",
                "kind": m.kind,
                "ready_replicas": sum(1 for r in m.replicas if not r.draining),
            }
            for m in sorted(snapshot.models.values(), key=lambda m: m.name)
            if m.kind != "deepaas" and m.allowed(caller.project_id)
        ]
        await reply.whole(200, orjson.dumps({"object": "list", "data": data}))

    async def _body(self, headers: list[tuple[bytes, bytes]], receive: Receive) -> bytes:
        limit = self.rt.settings.gateway_max_body_bytes
        for name, value in headers:
            if name == b"content-length" and (not value.isdigit() or int(value) > limit):
                raise too_large(limit)
        chunks = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise GatewayError(400, "The client went away", "client_disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    # --- who is calling ----------------------------------------------------------------------

    async def _caller(self, scope: Scope) -> Caller:
        """The caller of an ASGI request (``/m/`` uses this too)."""
        return await self._caller_of(scope["method"], scope["headers"])

    async def _caller_of(self, method: str, headers: list[tuple[bytes, bytes]]) -> Caller:
        named = dict(headers)  # the last of a repeated header, as a loop over them would give
        authorization = named.get(b"authorization")
        if authorization is not None:
            scheme, _, token = authorization.partition(b" ")
            token = token.strip()
            if scheme.lower() != b"bearer" or not token:
                raise _unauthenticated("Send your Agora API key as 'Authorization: Bearer agora_…'")
            if self.directory.stale:
                await self.directory.current()
            caller = self.directory.snapshot.keys.get(hashlib.sha256(token).hexdigest())
            if caller is None:
                raise _unauthenticated(
                    "Incorrect API key provided: it is not valid, was revoked or has expired"
                )
            if caller.expires_at is not None and caller.expires_at <= time.time():
                raise _unauthenticated("This API key has expired")
            if not caller.can_infer:
                raise GatewayError(
                    403,
                    "This API key lacks the 'inference' scope; create one with it",
                    "insufficient_scope",
                )
            assert caller.key_id is not None
            self.rt.key_usage.touch_now(caller.key_id)
            return caller
        cookie = named.get(b"cookie")
        if cookie is not None:
            project = named.get(b"x-agora-project")
            signed_in = session_token(
                method,
                self.rt,
                cookie,
                named.get(b"x-csrf-token"),
                named.get(b"origin"),
                named.get(b"referer"),
            )
            snapshot = await self.directory.current()
            caller = self.sessions.get(snapshot, signed_in, project)
            if caller is None:
                resolved = await asyncio.to_thread(resolve, self.rt, signed_in, project)
                self.sessions.put(snapshot, signed_in, project, resolved)
                caller = resolved.caller
            return caller
        raise _unauthenticated(
            "No API key provided: send 'Authorization: Bearer agora_…' (create a key with "
            "the 'inference' scope in your project)"
        )


def _unauthenticated(message: str) -> GatewayError:
    return GatewayError(401, message, "invalid_api_key")


async def _send_error(send: Send, exc: GatewayError) -> None:
    await AsgiReply(send, _no_receive).error(exc)


async def _metrics(gateway: Gateway, scope: Scope, send: Send) -> None:
    """``GET /metrics`` of a standalone gateway (``agora up`` serves it as a FastAPI route)."""
    authorization = next(
        (v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), ""
    )
    try:
        await asyncio.to_thread(check_reader, gateway.rt, authorization)
    except AgoraError as exc:
        status = exc.status
        body = orjson.dumps({"title": "Metrics", "status": status, "detail": str(exc)})
        headers = [(b"content-type", b"application/problem+json")]
        if status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    body = gateway.metrics.render()
    headers = [(b"content-type", CONTENT_TYPE.encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


async def _no_receive() -> Any:
    return {"type": "http.disconnect"}


class Standalone:
    """A gateway-only ASGI app (``agora gateway``): ``/v1/*``, a health check and the metrics.
    Several of these scale out behind a load balancer; they share the control plane's
    database and, for limits, its Redis. ``gateway`` lets :mod:`agora.gateway.front` find it."""

    def __init__(self, runtime: Runtime) -> None:
        self.gateway = Gateway(runtime)
        self._last_used: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gateway = self.gateway
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    try:
                        await gateway.start()
                    except Exception as exc:  # report it: uvicorn exits with the message
                        await send({"type": "lifespan.startup.failed", "message": str(exc)})
                        return
                    self._last_used = asyncio.create_task(gateway.rt.record_last_used())
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await self._shutdown()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if scope["path"].startswith("/v1/"):
            await gateway(scope, receive, send)
            return
        if scope["path"] == "/health":
            body = orjson.dumps({"status": "ok", "gateway": gateway.id})
            await send({"type": "http.response.start", "status": 200, "headers": _JSON})
            await send({"type": "http.response.body", "body": body})
            return
        if scope["path"] == "/metrics" and scope["method"] in ("GET", "HEAD"):
            await _metrics(gateway, scope, send)
            return
        await _send_error(send, GatewayError(404, "This gateway serves /v1/* only", "unknown_url"))

    async def _shutdown(self) -> None:
        if self._last_used is not None:
            self._last_used.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._last_used
        await self.gateway.stop()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.gateway.rt.flush_last_used)


def standalone(runtime: Runtime) -> Standalone:
    return Standalone(runtime)


def standalone_from_env() -> Standalone:
    """A worker of ``agora gateway --workers N``: settings from the environment."""
    from agora.runtime import freeze_heap
    from agora.settings import Settings

    app = Standalone(Runtime.create(Settings()))
    freeze_heap()
    return app
