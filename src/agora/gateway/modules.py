"""DEEPaaS modules through the platform: ``/m/{model}/…`` passes through to one of its replicas.

A served module is a gateway model of kind ``deepaas``: its replicas are Agora model servers
(``agora serve-model``, the ``deepaas-model`` template) or an external DEEPaaS endpoint. The
DEEPaaS paths stay as they are below the model's prefix, so an existing DEEPaaS client works by
changing only its base URL: ``https://agora.example/m/iris`` + ``/v2/models/iris/predict/``.

* Auth, project grants and request limits as on ``/v1`` (an API key with the ``inference``
  scope, or the web session with its CSRF header); errors are ``application/problem+json``.
* Request bodies (form fields, uploads) are read up to ``gateway_max_upload_bytes`` so that a
  request can be retried on another replica when one cannot be reached or answers 502/503
  before any byte went back. Any other answer, a model's own 500 included, is the answer.
* Answers stream back unbuffered; the replica learns the prefix from ``X-Forwarded-Prefix``
  so the links it returns point through the platform.
* Training (``…/train/…``) always goes to the oldest replica: a training and its record live
  in the server that runs it.
* Usage records carry the endpoint (``predict``, ``train``, ``models``) and no tokens; nothing
  of the request or the answer is stored or logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

import aiohttp
import orjson
from starlette.types import Receive, Scope, Send

from agora.gateway.directory import Caller, ModelEntry
from agora.gateway.limits import LimiterUnavailable
from agora.gateway.protocol import AsgiReply, GatewayError, Reply, refused
from agora.gateway.proxy import expire_task, first_byte_timeout
from agora.gateway.router import ReplicaState
from agora.gateway.upstream import BrokenResponse, UpstreamError
from agora.gateway.usage import Usage

if TYPE_CHECKING:
    from agora.gateway.app import Gateway

log = logging.getLogger("agora.gateway")
PREFIX = "/m/"
_PATH = re.compile(r"^/m/([A-Za-z0-9][A-Za-z0-9._:@+-]{0,127})(/.*)?$")
#: Request headers passed on to the replica (everything else is the platform's business).
_FORWARD = {b"content-type", b"accept", b"accept-language", b"content-length"}
#: Answer headers passed back to the client.
_RETURN = {"content-type", "content-disposition", "content-length", "cache-control", "location"}
_PROBLEM = b"application/problem+json"
_TITLES = {
    400: "Bad request",
    401: "Authentication required",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    413: "Request too large",
    429: "Too many requests",
    502: "Bad gateway",
    503: "Service unavailable",
    504: "Gateway timeout",
}
_RETURN_BYTES = {h.encode() for h in _RETURN}
_RETRYABLE = {502, 503}
#: An answer up to this size (with a Content-Length) is read whole and sent in one write.
_WHOLE = 256 * 1024


#: DEEPaaS v2's training and prediction paths: ``/v2/models/<name>/train/[<uuid>]`` and
#: ``/v2/models/<name>/predict/``.
_ENDPOINT = re.compile(r"/v2/models/[^/]+/(train|predict)(?:/|$)")


def _endpoint(rest: str) -> str:
    """``train``, ``predict`` or ``models`` (the metadata and the rest) for a path."""
    match = _ENDPOINT.match(rest)
    return match.group(1) if match else "models"


@dataclass(frozen=True)
class _Outgoing:
    """The request as it goes to a replica, for either HTTP client."""

    method: str
    rest: str  # the path below the prefix, decoded
    query: bytes
    raw_target: bytes  # path and query as the client sent them, for the lean client
    forwarded: list[tuple[bytes, bytes]]
    header_block: bytes

    @property
    def target(self) -> str:
        """Path and query for aiohttp (which quotes it)."""
        return self.rest + (f"?{self.query.decode('latin-1')}" if self.query else "")

    @property
    def headers(self) -> dict[str, str]:
        """The forwarded headers for aiohttp."""
        return {k.decode("latin-1"): v.decode("latin-1") for k, v in self.forwarded}

    @classmethod
    def of(
        cls,
        method: str,
        headers: list[tuple[bytes, bytes]],
        raw_path: bytes,
        query: bytes,
        name: str,
        rest: str,
    ) -> _Outgoing:
        forwarded = [(k, v) for k, v in headers if k in _FORWARD]
        forwarded += [
            (b"x-forwarded-prefix", f"/m/{name}".encode()),
            (b"accept-encoding", b"identity"),
        ]
        prefix = f"/m/{name}".encode()
        raw_rest = raw_path[len(prefix) :] if raw_path.startswith(prefix) else b""
        if not raw_rest.startswith(b"/"):
            raw_rest = quote(rest).encode()
        return cls(
            method=method,
            rest=rest,
            query=query,
            raw_target=raw_rest + (b"?" + query if query else b""),
            forwarded=forwarded,
            header_block=b"".join(
                k + b": " + v + b"\r\n" for k, v in forwarded if k != b"content-length"
            ),
        )


class ModuleProxy:
    """Serves ``/m/{model}/…`` for one gateway process."""

    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway
        self.max_body = gateway.rt.settings.gateway_max_upload_bytes
        self.retries = gateway.rt.settings.gateway_retries
        self._http: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Content-Type"),
            )
        return self._http

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry (``AgoraApp``); :mod:`agora.gateway.front` calls :meth:`handle` without
        ASGI."""
        headers = scope["headers"]
        await self.handle(
            AsgiReply(send, receive),
            scope["method"],
            scope["path"],
            scope.get("query_string", b""),
            headers,
            lambda: self._body(headers, receive),
            scope.get("raw_path") or b"",
        )

    async def handle(
        self,
        reply: Reply,
        method: str,
        path: str,
        query: bytes,
        headers: list[tuple[bytes, bytes]],
        read_body: Callable[[], Awaitable[bytes]],
        raw_path: bytes | None = None,
    ) -> None:
        """Serve one ``/m/…`` request; ``path`` is decoded, ``raw_path`` as sent (the same
        when omitted: the lean front only takes paths without percent-escapes)."""
        started = time.perf_counter()
        caller: Caller | None = None
        model: ModelEntry | None = None
        rest = "/"
        forwarding = False
        try:
            match = _PATH.match(path)
            if match is None:
                raise GatewayError(
                    404, "Served modules answer at /m/<model name>/v2/…", "unknown_url"
                )
            name, rest = match.group(1), match.group(2) or "/"
            caller = await self.gw._caller_of(method, headers)
            model = self._model(caller, name)
            await self._admit(caller)
            try:
                body = await read_body()
            except GatewayError as exc:
                raise self._too_big() if exc.status == 413 else exc from None
            out = _Outgoing.of(
                method, headers, path.encode() if raw_path is None else raw_path, query,
                model.name, rest,
            )  # fmt: skip
            forwarding = True
            status = await self._forward(reply, model, rest, out, body)
            self._meter(caller, model, rest, started, status)
        except GatewayError as exc:
            if forwarding and caller is not None and model is not None:
                self._meter(caller, model, rest, started, exc.status)  # 502, 503, 504
            if not reply.started:
                await send_problem(reply, exc, path)
        except asyncio.CancelledError:
            if reply.gone and caller is not None and model is not None:
                # the client left (the lean front cancels its request): metered as on /v1
                self._meter(caller, model, rest, started, 499)
            raise

    def _model(self, caller: Caller, name: str) -> ModelEntry:
        model = self.gw.directory.snapshot.models.get(name)
        if model is None or model.kind != "deepaas" or not model.allowed(caller.project_id):
            # Modules belong to projects: one the caller may not use answers like none at all.
            raise GatewayError(
                404,
                f"There is no served module '{name}' in project '{caller.project_name}'; "
                "GET /api/v1/models lists the models and modules you may use",
                "model_not_found",
            )
        return model

    async def _admit(self, caller: Caller) -> None:
        limits = self.gw.directory.snapshot.limits_for(caller)
        if not limits:
            return
        try:
            refusal = await self.gw.limiter.admit(limits)
        except LimiterUnavailable as exc:
            raise GatewayError(503, str(exc), "limiter_unavailable", retry_after=5) from None
        if refusal is not None:
            raise refused(refusal)

    def _too_big(self) -> GatewayError:
        return GatewayError(
            413,
            f"The request is larger than {self.max_body} bytes, the largest upload this "
            "platform accepts",
            "request_too_large",
        )

    async def _body(self, headers: list[tuple[bytes, bytes]], receive: Receive) -> bytes:
        too_big = self._too_big()
        for key, value in headers:
            if key == b"content-length" and (not value.isdigit() or int(value) > self.max_body):
                raise too_big
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise GatewayError(400, "The client went away", "client_disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise too_big
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _pick(self, model: ModelEntry, rest: str, tried: list[str]) -> ReplicaState | None:
        router = self.gw.router
        if _endpoint(rest) == "train":
            # Trainings and their records live in the server that runs them: always the
            # oldest replica (the snapshot lists replicas oldest first).
            for state in router.candidates(model):
                if state.replica.deployment_id not in tried:
                    return state
            return None
        return router.pick(model, tried)

    async def _forward(
        self, reply: Reply, model: ModelEntry, rest: str, out: _Outgoing, body: bytes
    ) -> int:
        tried: list[str] = []
        last_error = "no replica answered"
        # A plain timer rather than asyncio.timeout, as on /v1 (this runs for every request).
        task = asyncio.current_task()
        assert task is not None
        expired: list[bool] = []
        timer = asyncio.get_running_loop().call_later(
            model.total_timeout, expire_task, task, expired
        )
        try:
            while len(tried) <= self.retries:
                state = self._pick(model, rest, tried)
                if state is None:
                    if tried:
                        break
                    assert self.gw.forwarder is not None
                    model = await self.gw.forwarder.wait_for_replica(model)
                    continue
                tried.append(state.replica.deployment_id)
                router = self.gw.router
                router.started(model, state)
                try:
                    outcome = await self._try(reply, model, state, out, body)
                finally:
                    router.finished(model, state)
                if isinstance(outcome, str):
                    last_error = outcome
                    router.failed(state)
                    continue
                router.succeeded(state)
                if outcome in (200, 201) and out.method == "POST" and _endpoint(rest) == "train":
                    router.training_started(state)
                return outcome
        except asyncio.CancelledError:
            if not expired or task.uncancel() > 0:
                raise
            raise GatewayError(
                504,
                f"The module '{model.name}' did not answer within {model.total_timeout:g} s",
                "upstream_timeout",
            ) from None
        finally:
            timer.cancel()
        raise GatewayError(
            503 if model.source == "deployment" else 502,
            f"The module '{model.name}' could not answer: {last_error}",
            "upstream_unavailable",
            retry_after=5,
        )

    async def _try(
        self, reply: Reply, model: ModelEntry, state: ReplicaState, out: _Outgoing, body: bytes
    ) -> int | str:
        """One attempt. A string means it failed before the client saw a byte: retry."""
        replica = state.replica
        lean = out.method != "HEAD"  # the lean client always expects a body after a length
        if lean and model.source == "deployment" and replica.base_url.startswith("http://"):
            return await self._try_lean(reply, model, state, out, body)
        headers = out.headers
        origin = (
            replica.base_url.removesuffix("/v1")
            if model.source == "deployment"
            else replica.base_url
        )
        if replica.auth:
            headers = {**headers, "Authorization": replica.auth}
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=model.connect_timeout,
            sock_connect=model.connect_timeout,
            sock_read=model.first_byte_timeout,
        )
        try:
            response = await self._session().request(
                out.method,
                origin + out.target,
                data=body if body else None,
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
            )
        except (aiohttp.ClientConnectionError, OSError) as exc:
            if isinstance(exc, aiohttp.ServerTimeoutError) and "connect" not in str(exc).lower():
                raise first_byte_timeout(model) from None
            log.warning("module %s, replica %s: %s", model.name, replica.deployment_id, exc)
            return "its server could not be reached"
        except TimeoutError:
            raise first_byte_timeout(model) from None
        try:
            if response.status in _RETRYABLE:
                with contextlib.suppress(Exception):
                    await response.read()
                return f"HTTP {response.status} from a replica"
            head = [
                (k.lower().encode("latin-1"), v.encode("latin-1"))
                for k, v in response.headers.items()
                if k.lower() in _RETURN and k.lower() != "content-length"
            ]
            await reply.start_response(response.status, head, response.content_length)
            try:
                async for chunk in response.content.iter_any():
                    await reply.chunk(chunk)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                # The answer had started: all the client can learn is that it was cut short.
                log.warning("module %s, replica %s: %s", model.name, replica.deployment_id, exc)
                reply.cut()
                return response.status
            await reply.end_stream()
            return response.status
        finally:
            response.release()

    async def _try_lean(
        self, reply: Reply, model: ModelEntry, state: ReplicaState, out: _Outgoing, body: bytes
    ) -> int | str:
        """One attempt over the gateway's lean HTTP/1.1 client (Agora's own model servers)."""
        replica = state.replica
        headers = out.header_block
        if replica.auth:
            headers += b"Authorization: " + replica.auth.encode("latin-1") + b"\r\n"
        try:
            response = await self.gw.upstream.request(
                out.method,
                replica.base_url.removesuffix("/v1"),
                out.raw_target,
                headers,
                body,
                model.connect_timeout,
                model.first_byte_timeout,
            )
        except (UpstreamError, BrokenResponse) as exc:
            log.warning("module %s, replica %s: %s", model.name, replica.deployment_id, exc)
            return "its server could not be reached"
        except TimeoutError:
            raise first_byte_timeout(model) from None
        try:
            if response.status in _RETRYABLE:
                with contextlib.suppress(Exception):
                    await response.read(model.first_byte_timeout)
                return f"HTTP {response.status} from a replica"
            head = [
                (k, v) for k, v in response.headers if k in _RETURN_BYTES and k != b"content-length"
            ]
            given = response.header(b"content-length")
            length = int(given) if given is not None and given.isdigit() else None
            try:
                if length is not None and length <= _WHOLE:  # a prediction: one write
                    data = await response.read(model.first_byte_timeout)
                    await reply.answer(response.status, head, data)
                    return response.status
                await reply.start_response(response.status, head, length)
                async for chunk in response.iter_chunks(model.first_byte_timeout):
                    await reply.chunk(chunk)
            except (UpstreamError, BrokenResponse, TimeoutError, OSError) as exc:
                log.warning("module %s, replica %s: %s", model.name, replica.deployment_id, exc)
                self.gw.router.failed(state)
                if not reply.started:  # not retried: the replica may have acted on it
                    raise GatewayError(
                        502, f"The module '{model.name}' broke off its answer", "upstream_error"
                    ) from None
                reply.cut()
                return response.status
            await reply.end_stream()
            return response.status
        finally:
            response.release()

    def _meter(
        self, caller: Caller, model: ModelEntry, rest: str, started: float, status: int
    ) -> None:
        endpoint = _endpoint(rest)
        self.gw.usage.record(
            Usage(
                time=time.time(),
                user_id=caller.user_id,
                project_id=caller.project_id,
                api_key_id=caller.key_id,
                model=model.name,
                endpoint=endpoint,
                tokens_in=0,
                tokens_out=0,
                latency_ms=(time.perf_counter() - started) * 1000,
                status=status,
                stream=False,
            )
        )


async def send_problem(reply: Reply, exc: GatewayError, instance: str) -> None:
    body = {
        "type": f"https://agora.example/problems/{exc.code or exc.status}",
        "title": _TITLES.get(exc.status, "Error"),
        "status": exc.status,
        "detail": exc.message,
        "instance": instance,
    }
    headers = [(b"content-type", _PROBLEM)]
    if exc.retry_after is not None:
        headers.append((b"retry-after", str(exc.retry_after).encode()))
    with contextlib.suppress(OSError, RuntimeError):
        await reply.answer(exc.status, headers, orjson.dumps(body))
