"""The application factory: one FastAPI app serving the API, the web UI and (later) the gateway."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agora import __version__
from agora.api import problems
from agora.api.deps import client_addr
from agora.api.routes import audit as audit_routes
from agora.api.routes import auth as auth_routes
from agora.api.routes import catalog as catalog_routes
from agora.api.routes import deployments as deployment_routes
from agora.api.routes import models as model_routes
from agora.api.routes import projects as project_routes
from agora.api.routes import system as system_routes
from agora.api.routes import users as user_routes
from agora.errors import Forbidden
from agora.migrations import upgrade
from agora.runtime import Runtime
from agora.services import audit, catalog
from agora.services.context import Ctx
from agora.settings import Settings

log = logging.getLogger("agora")
_SAFE = {"GET", "HEAD", "OPTIONS"}


class BodyLimit:
    """Refuse request bodies over the limit with 413, whether or not they declare a length."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = scope.get("raw_path") or scope["path"].encode()
        if b"%00" in raw or b"\x00" in raw or b"%00" in scope.get("query_string", b""):
            detail = "The URL must not contain NUL characters (%00)"
            await problems.problem(400, detail)(scope, receive, send)
            return
        if scope["path"].startswith("/d/"):
            # The access proxy streams bodies on to the service, which sets its own limits.
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        too_big = f"The request body is larger than {self.max_bytes} bytes"
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            response = problems.problem(413, too_big)
            await response(scope, receive, send)
            return
        if declared is not None:
            await self.app(scope, receive, send)
            return
        # No declared length (chunked): read up to the limit before the app sees anything.
        messages: list[Message] = []
        seen = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                await problems.problem(413, too_big)(scope, receive, send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


class AgoraApp(FastAPI):
    """The FastAPI app, with ``/v1/*`` handed to the gateway before any middleware runs: the
    inference hot path pays for none of the web app's layers."""

    gateway: Any = None
    modules: Any = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.gateway is not None and scope["type"] == "http":
            path = scope["path"]
            if path.startswith("/v1/"):
                await self.gateway(scope, receive, send)
                return
            if path.startswith("/m/"):
                await self.modules(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> FastAPI:
    settings = settings or (runtime.settings if runtime else Settings())
    runtime = runtime or Runtime.create(settings)
    upgrade(runtime.db)
    catalog.import_at_startup(runtime)
    for problem in runtime.template_problems:
        log.warning("template not loaded: %s", problem.message)

    gateway = modules = None
    if settings.gateway:
        from agora.gateway.app import Gateway
        from agora.gateway.modules import ModuleProxy

        gateway = Gateway(runtime)
        modules = ModuleProxy(gateway)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(runtime.record_last_used())]
        if gateway is not None:
            await gateway.start()
        if settings.orchestrator:
            from agora.deployments.orchestrator import Orchestrator

            tasks.append(asyncio.create_task(Orchestrator(runtime).run()))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if gateway is not None:
                await gateway.stop()
            if modules is not None:
                await modules.close()
            for backend in runtime.backends.values():
                await backend.close()
            await asyncio.to_thread(runtime.flush_last_used)

    app = AgoraApp(
        title="Agora",
        version=__version__,
        description="AI on demand for research computing centres. Errors are "
        "application/problem+json (RFC 9457).",
        lifespan=lifespan,
        docs_url=None,  # /api/docs is agora.web.routes_docs: Swagger UI without a CDN
        redoc_url=None,
        openapi_url="/api/v1/openapi.json",
    )
    app.state.runtime = runtime
    app.state.gateway = gateway
    app.gateway = gateway
    app.modules = modules
    problems.install(app, on_forbidden=_audit_denied)
    for module in (
        auth_routes,
        user_routes,
        project_routes,
        deployment_routes,
        model_routes,
        catalog_routes,
        audit_routes,
        system_routes,
    ):
        app.include_router(module.router, prefix="/api/v1")

    if gateway is not None:
        from agora.gateway.metrics import CONTENT_TYPE, check_reader

        @app.get("/metrics", include_in_schema=False)
        def metrics(request: Request) -> Response:
            """The gateway's Prometheus metrics (agora.gateway.metrics)."""
            check_reader(runtime, request.headers.get("authorization", ""))
            return Response(gateway.metrics.render(), media_type=CONTENT_TYPE)

    from agora.deployments import proxy
    from agora.web import oidc, pages

    pages.install(app)
    oidc.install(app)
    proxy.install(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    return app


async def _audit_denied(request: Request, exc: Forbidden) -> None:
    """A refused change is worth a line in the audit trail too."""
    if request.method in _SAFE:
        return
    principal = getattr(request.state, "principal", None)
    if principal is None:
        return
    runtime: Runtime = request.app.state.runtime

    def write() -> None:
        with runtime.db.session(write=True) as db:
            ctx = Ctx(db=db, runtime=runtime, principal=principal, client_addr=client_addr(request))
            audit.record_denied(ctx, request.method, request.url.path, exc.detail)

    await asyncio.to_thread(write)
