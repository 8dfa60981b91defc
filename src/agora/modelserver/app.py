"""The Starlette app: DEEPaaS's v2 endpoints over the served models.

Handlers only speak HTTP: they parse the request (:mod:`uploads`, :mod:`arguments`), hand the
work to a model's :class:`~agora.modelserver.pool.Pool` or to :class:`Trainings`, and shape
the answer as DEEPaaS does. Errors of :mod:`agora.modelserver.errors` become
``application/problem+json`` in :func:`_on_error`, the one place that maps them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from agora import __version__
from agora.modelserver import metrics, openapi, uploads
from agora.modelserver.arguments import JSON
from agora.modelserver.errors import ModelServerError, UINotInstalled, UnknownModel
from agora.modelserver.metrics import ServerMetrics
from agora.modelserver.model import ServedModel
from agora.modelserver.pool import Pool, Worker
from agora.modelserver.training import HEARTBEAT, Trainings, TrainingStore
from agora.web import swagger_ui

logger = logging.getLogger("agora.modelserver")

PROBLEM = "application/problem+json"


@dataclass(frozen=True)
class ServerConfig:
    workers: int = 1
    queue: int = 16
    timeout: float = 60.0
    max_upload_bytes: int = 100 * 1024 * 1024
    state_dir: Path = Path(".agora-modelserver")
    token: str | None = None
    #: Seconds between stamps of the running trainings (see :mod:`.training`).
    training_heartbeat: float = HEARTBEAT
    #: swagger-ui-dist's files for ``/ui``, where scripts/web-assets.sh copies them
    swagger_ui_dir: Path = swagger_ui.VENDOR_DIR


def _json(content: Any, status: int = 200, media_type: str = JSON) -> Response:
    return Response(orjson.dumps(content, option=_ORJSON), status, media_type=media_type)


def problem(status: int, detail: str, **extra: Any) -> Response:
    response = Response(problem_body(status, detail, **extra), status, media_type=PROBLEM)
    if status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


def problem_body(status: int, detail: str, **extra: Any) -> bytes:
    """An ``application/problem+json`` body (RFC 9457)."""
    title = {
        400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
        413: "Content Too Large", 422: "Unprocessable Content", 500: "Internal Server Error",
        501: "Not Implemented", 503: "Service Unavailable", 504: "Gateway Timeout",
    }.get(status, "Error")  # fmt: skip
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return orjson.dumps(body, option=_ORJSON)


_ORJSON = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
UNAUTHORISED = "missing or wrong service token (Authorization: Bearer …)"


async def _on_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, ModelServerError):
        return problem(exc.status, exc.detail, **exc.extra)
    if isinstance(exc, HTTPException):
        return problem(exc.status_code, f"{exc.detail} ({request.method} {request.url.path})")
    logger.exception("unexpected error on %s %s", request.method, request.url.path)
    return problem(500, "the model server failed to answer; see its log")


class _TokenGuard:
    """Refuses every request but ``GET /health`` that lacks the service token."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        health = scope.get("path") == "/health" and scope.get("method") in ("GET", "HEAD")
        if scope["type"] == "http" and not health and not self._authorised(scope):
            await problem(401, UNAUTHORISED)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _authorised(self, scope: Scope) -> bool:
        return authorised(scope["headers"], self.token)


def authorised(headers: list[tuple[bytes, bytes]], token: bytes) -> bool:
    """Whether the (lower-case) header list carries ``Authorization: Bearer <token>``."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, given = value.partition(b" ")
            return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), token)
    return False


def _prefix(request: Request) -> str:
    """The path a proxy strips (``X-Forwarded-Prefix: /m/iris``), for links in responses."""
    given = request.headers.get("x-forwarded-prefix", "").strip()
    if not given.startswith("/") or "//" in given or any(c in given for c in "?#\"'<> "):
        return ""
    return given.rstrip("/")


class ModelAPI:
    """The handlers of DEEPaaS's endpoints over the served models."""

    def __init__(self, models: list[ServedModel], config: ServerConfig) -> None:
        self.config = config
        self.models = {m.name: m for m in models}
        self.pools = {
            m.name: Pool(m.ref, config.workers, config.queue, config.timeout) for m in models
        }
        self.trainings: Trainings | None = None
        self.metrics = ServerMetrics(
            self.pools, lambda: self.trainings.running if self.trainings else 0
        )
        self.spec = openapi.document(models, __version__)
        # the only files /ui/{name} serves
        self.ui_files = {n: config.swagger_ui_dir / n for n in swagger_ui.VENDOR_FILES}
        self.ui_files.update({n: swagger_ui.STATIC_DIR / n for n in swagger_ui.OWN_FILES})

    def routes(self) -> list[Route]:
        return [
            Route("/", self.versions, methods=["GET"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/metrics", self.prometheus, methods=["GET"]),
            Route("/openapi.json", self.openapi, methods=["GET"]),
            Route("/swagger.json", self.openapi, methods=["GET"]),
            Route("/ui", self.ui, methods=["GET"]),
            Route("/api", self.ui, methods=["GET"]),  # DEEPaaS's address of its Swagger UI
            Route("/ui/", self.ui_slash, methods=["GET"]),
            Route("/ui/{name}", self.ui_file, methods=["GET"]),
            Route("/v2/", self.version, methods=["GET"]),
            Route("/v2/models/", self.index, methods=["GET"]),
            Route("/v2/models/{name}/", self.metadata, methods=["GET"]),
            Route("/v2/models/{name}/predict/", self.predict, methods=["POST"]),
            Route("/v2/models/{name}/train/", self.train, methods=["POST"]),
            Route("/v2/models/{name}/train/", self.train_index, methods=["GET"]),
            Route("/v2/models/{name}/train/{uuid}", self.training, methods=["GET"]),
            Route("/v2/models/{name}/train/{uuid}", self.cancel, methods=["DELETE"]),
        ]

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        store = TrainingStore(
            self.config.state_dir / "trainings.sqlite", self.config.training_heartbeat
        )
        if cut := store.interrupted():
            logger.warning("%d training(s) were cut short by a server's end: marked 'error'", cut)
        self.trainings = Trainings(store)
        try:
            await asyncio.gather(*(pool.start() for pool in self.pools.values()))
            logger.info("ready: %s", ", ".join(self.pools))
            yield
        finally:
            for pool in self.pools.values():
                pool.close()
            await self.trainings.close()

    def _model(self, request: Request, name: str | None = None) -> ServedModel:
        return self.model_named(request.path_params["name"] if name is None else name)

    def model_named(self, name: str) -> ServedModel:
        model = self.models.get(name)
        if model is None:
            served = ", ".join(self.models) or "none"
            raise UnknownModel(f"no model '{name}' is served here (served: {served})")
        return model

    async def health(self, request: Request) -> Response:
        # Ready while every model has a warm worker; not while its only one is being replaced.
        waiting = [n for n, p in self.pools.items() if not p.ready or p.warm_workers < 1]
        if waiting:
            return problem(503, f"models loading or restarting a worker: {', '.join(waiting)}")
        # The platform counts running trainings as load, so it never stops a replica under one.
        return _json(
            {
                "status": "ok",
                "models": list(self.models),
                "trainings": self.trainings.running if self.trainings else 0,
            }
        )

    async def prometheus(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type=metrics.CONTENT_TYPE)

    async def openapi(self, request: Request) -> Response:
        prefix = _prefix(request)
        spec = dict(self.spec, servers=[{"url": prefix}]) if prefix else self.spec
        return _json(spec)

    async def ui(self, request: Request) -> Response:
        # Only relative URLs: through the platform this page is /m/<model>/ui.
        self._ui_installed()
        title = f"Agora model server · {', '.join(self.models)}"
        body = swagger_ui.page(title, "swagger.json", "ui/", "ui/")
        headers = {"Content-Security-Policy": swagger_ui.CSP}
        return Response(body, media_type="text/html; charset=utf-8", headers=headers)

    async def ui_slash(self, request: Request) -> Response:
        # Starlette's own redirect names this server's address, unknown to a client of the proxy.
        return RedirectResponse("../ui", status_code=308)

    async def ui_file(self, request: Request) -> Response:
        path = self.ui_files.get(request.path_params["name"])
        if path is None:
            raise HTTPException(404)
        self._ui_installed()
        return FileResponse(path, media_type=swagger_ui.MEDIA_TYPES[path.suffix])

    def _ui_installed(self) -> None:
        problem = swagger_ui.not_installed(self.config.swagger_ui_dir)
        if problem is not None:
            raise UINotInstalled(problem)

    def _version(self, request: Request) -> dict[str, Any]:
        href = f"{_prefix(request)}/v2/"
        return {
            "version": "stable",
            "id": "v2",
            "links": [{"rel": "self", "type": "application/json", "href": href}],
        }

    async def versions(self, request: Request) -> Response:
        prefix = _prefix(request)
        links = [
            {"rel": "help", "type": "text/html", "href": f"{prefix}/api"},
            {"rel": "describedby", "type": "application/json", "href": f"{prefix}/swagger.json"},
        ]
        return _json({"versions": [self._version(request)], "links": links})

    async def version(self, request: Request) -> Response:
        return _json(self._version(request))

    def _described(self, model: ServedModel, href: str) -> dict[str, Any]:
        return {
            "id": model.name,
            "name": model.name,
            "links": [{"rel": "self", "href": href}],
            **model.metadata,
        }

    async def index(self, request: Request) -> Response:
        path = _prefix(request) + request.url.path
        return _json(
            {
                "models": [
                    self._described(m, urllib.parse.urljoin(f"{path}/", m.name))
                    for m in self.models.values()
                ]
            }
        )

    async def metadata(self, request: Request) -> Response:
        model = self._model(request)
        return _json(self._described(model, (_prefix(request) + request.url.path).rstrip("/")))

    async def predict(self, request: Request, name: str | None = None) -> Response:
        model = self._model(request, name)
        upload = await uploads.read(request, self.config.max_upload_bytes)
        body, media_type = await self.run_predict(model, upload, request.headers)
        # as DEEPaaS sends it: no charset added to text/* types
        return Response(body, headers={"content-type": media_type})

    def predicted(self, name: str, status: int, seconds: float) -> None:
        """Counts a prediction's answer (for a model served here: no label from any path)."""
        if name in self.models:
            self.metrics.predicted(name, status, seconds)

    async def run_predict(
        self, model: ServedModel, upload: uploads.Upload, headers: Mapping[str, str]
    ) -> tuple[bytes, str]:
        """The answer's body and media type for these arguments; closes ``upload``."""
        try:
            args = model.predict_args.load(upload.query, upload.form, upload.json, headers)
            result: tuple[bytes, str] = await self.pools[model.name].run("predict", args)
        finally:
            upload.close()
        return result

    async def train(self, request: Request) -> Response:
        model = self._model(request)
        assert self.trainings is not None
        upload = await uploads.read(request, self.config.max_upload_bytes)
        try:
            args = model.train_args.load(upload.query, upload.form, upload.json, request.headers)
            uuid_ = self.trainings.start(Worker(model.ref), model.name, args, upload.keep())
        finally:
            upload.close()
        return _json(self.trainings.store.get(model.name, uuid_))

    async def train_index(self, request: Request) -> Response:
        model = self._model(request)
        assert self.trainings is not None
        return _json(self.trainings.store.all(model.name))

    async def training(self, request: Request) -> Response:
        model = self._model(request)
        assert self.trainings is not None
        return _json(self.trainings.store.get(model.name, request.path_params["uuid"]))

    async def cancel(self, request: Request) -> Response:
        model = self._model(request)
        assert self.trainings is not None
        return _json(await self.trainings.cancel(model.name, request.path_params["uuid"]))


class _PredictFront:
    """``POST /v2/models/{name}/predict/`` straight to its handler; the rest to Starlette.

    Predict is the one hot path: skipping Starlette's middleware, router and
    request/response wrapper halves the server's CPU time per prediction. Its errors are
    mapped by :func:`problem` as everywhere else.
    """

    def __init__(self, app: ASGIApp, api: ModelAPI) -> None:
        self.app = app
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            if path.startswith("/v2/models/") and path.endswith("/predict/"):
                name = path[len("/v2/models/") : -len("/predict/")]
                if name and "/" not in name:
                    await self._predict(scope, receive, send, name)
                    return
        await self.app(scope, receive, send)

    async def _predict(self, scope: Scope, receive: Receive, send: Send, name: str) -> None:
        request = Request(scope, receive)
        started = time.perf_counter()
        try:
            response = await self.api.predict(request, name)
        except ModelServerError as exc:
            response = problem(exc.status, exc.detail, **exc.extra)
        except Exception:
            logger.exception("unexpected error on POST %s", scope["path"])
            response = problem(500, "the model server failed to answer; see its log")
        self.api.predicted(name, response.status_code, time.perf_counter() - started)
        await response(scope, receive, send)


def create_app(models: list[ServedModel], config: ServerConfig) -> ASGIApp:
    api = ModelAPI(models, config)
    starlette = Starlette(
        routes=api.routes(),
        lifespan=api.lifespan,
        exception_handlers={
            ModelServerError: _on_error,
            HTTPException: _on_error,
            Exception: _on_error,
        },
    )
    app: ASGIApp = _PredictFront(starlette, api)
    return _TokenGuard(app, config.token) if config.token else app
