"""Predict without ASGI: ``POST /v2/models/{name}/predict/`` answered straight from uvicorn's
HTTP parser (:mod:`agora.leanhttp`); every other request goes to the Starlette app.

Predict is the model server's one hot path. Through ASGI, uvicorn's request cycle, Starlette's
request and response objects and their message dicts cost about as much CPU as parsing the
arguments and relaying the worker's answer; here the body arrives as bytes, is parsed in memory
(:func:`agora.modelserver.uploads.parse`) and the answer leaves in one write.

Only bodies with a ``Content-Length`` of at most :data:`~agora.modelserver.uploads.IN_MEMORY`
take this path; larger or chunked uploads stream through Starlette's form parser as before.
Answers are the same either way (the tests run every case through the server as started by
``python -m agora.modelserver``). A client that leaves does not cancel its prediction: the
worker finishes it and the answer is dropped, as under ASGI (cancelling would cost the worker,
which is restarted when a call is cut short).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from starlette.datastructures import Headers

from agora.leanhttp import Handler, LeanProtocol, Reply, behind
from agora.modelserver import uploads
from agora.modelserver.app import PROBLEM, UNAUTHORISED, ModelAPI, authorised, problem_body
from agora.modelserver.errors import BadRequest, ModelServerError, UploadTooLarge
from agora.modelserver.server import GatheredWrites

logger = logging.getLogger("agora.modelserver")

_PREFIX = b"/v2/models/"
_SUFFIX = b"/predict/"
_PROBLEM = PROBLEM.encode()
_CHALLENGE = (b"www-authenticate", b"Bearer")


class _Predict:
    """One lean predict: the model's name and the query string the path lacks."""

    __slots__ = ("api", "name", "query")

    def __init__(self, api: ModelAPI, name: str, query: bytes) -> None:
        self.api = api
        self.name = name
        self.query = query

    async def handle(
        self, reply: Reply, method: str, path: str, headers: Any, read_body: Any
    ) -> None:
        api = self.api
        token = api.config.token
        if token is not None and not authorised(headers, token.encode()):
            await _problem(reply, 401, UNAUTHORISED)
            return
        started = time.perf_counter()
        try:
            model = api.model_named(self.name)
            body: bytes = await read_body()
            given = Headers(raw=headers)
            upload = uploads.parse(self.query, given.get("content-type", ""), body)
            data, media_type = await api.run_predict(model, upload, given)
        except ModelServerError as exc:
            api.predicted(self.name, exc.status, time.perf_counter() - started)
            await _problem(reply, exc.status, exc.detail, **exc.extra)
            return
        except Exception:
            logger.exception("unexpected error on POST %s", path)
            api.predicted(self.name, 500, time.perf_counter() - started)
            await _problem(reply, 500, "the model server failed to answer; see its log")
            return
        api.predicted(self.name, 200, time.perf_counter() - started)
        # as DEEPaaS sends it: no charset added to text/* types
        await reply.answer(200, [(b"content-type", media_type.encode("latin-1"))], data)


async def _problem(reply: Reply, status: int, detail: str, **extra: Any) -> None:
    head = [(b"content-type", _PROBLEM)]
    if status == 401:
        head.append(_CHALLENGE)
    await reply.answer(status, head, problem_body(status, detail, **extra))


class PredictProtocol(LeanProtocol):
    """uvicorn's httptools protocol; small predicts skip ASGI, everything is written through
    :class:`~agora.modelserver.server.GatheredWrites` (one segment per answer)."""

    cancel_on_disconnect = False

    def setup(self) -> None:
        self.api: ModelAPI | None = behind(self.app, "api", ModelAPI) if self.lean else None
        limit = self.api.config.max_upload_bytes if self.api is not None else 0
        self.limit = min(limit, uploads.IN_MEMORY)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        gathered = GatheredWrites(transport, self.loop)  # type: ignore[arg-type]
        super().connection_made(gathered)  # type: ignore[arg-type]

    def lean_route(self, path: bytes, query: bytes) -> tuple[Handler, int] | None:
        if (
            self.api is None
            or not path.startswith(_PREFIX)
            or not path.endswith(_SUFFIX)
            or self.parser.get_method() != b"POST"
        ):
            return None
        name = path[len(_PREFIX) : -len(_SUFFIX)]
        if not name or b"/" in name:
            return None
        for header, value in self.headers:
            if header == b"content-length":
                if value.isdigit() and int(value) <= uploads.IN_MEMORY:
                    return _Predict(self.api, name.decode("ascii"), query), self.limit
                return None
        return None  # chunked: Starlette's streaming parser

    def body_too_large(self, limit: int) -> Exception:
        return UploadTooLarge(uploads.too_large(limit))

    def client_gone(self) -> Exception:
        return BadRequest("the client went away before its request's body was in")
