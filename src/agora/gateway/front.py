"""``/v1`` without ASGI: uvicorn's httptools protocol, with the gateway's requests answered
straight from the parser's callbacks.

Profiling showed half of the gateway's CPU time per request in uvicorn's ASGI cycle (the scope,
the ``RequestResponseCycle``, an event and message dicts per ``send`` and ``receive``, header
checks). :class:`GatewayProtocol` is uvicorn's ``HttpToolsProtocol`` for everything else: a
request whose path starts with ``/v1/`` gets a :class:`LeanCycle` instead, which hands the
gateway plain values (method, path, the header list, the body) and writes the answer to the
transport in one piece, with precomputed header blocks. Because the cycle looks like uvicorn's
own to the protocol, uvicorn still does keep-alive and its timeout, pipelining (answers in
order; reading pauses while one is pending), flow control, graceful shutdown and the access log.

What the lean path does itself: ``Expect: 100-continue`` (sent when the gateway first wants the
body, as uvicorn does), chunked request bodies, bodies over ``gateway_max_body_bytes`` (413 and
the connection closed, at once for a declared length), and a client that goes away (its request
is cancelled, which drops the upstream connection).

Falls back to ASGI for: upgrades, percent-encoded paths, a ``root_path`` or
``limit_concurrency`` setting, and apps without a gateway. Use it with
``uvicorn.Config(app, http=GatewayProtocol)`` (``agora up``, ``agora gateway``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from agora.gateway.app import Gateway
from agora.gateway.modules import ModuleProxy
from agora.gateway.protocol import GatewayError, Reply, too_large

log = logging.getLogger("agora.gateway")
_SSE = (
    b"content-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\n"
    b"x-accel-buffering: no\r\n"
    b"transfer-encoding: chunked\r\n"
)
_CLOSE = b"connection: close\r\n"
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def _behind(app: Any, attribute: str, kind: type) -> Any:
    """``app.<attribute>`` of the kind wanted, looking through uvicorn's wrappers (proxy
    headers, message logger)."""
    for _ in range(8):
        found = getattr(app, attribute, None)
        if isinstance(found, kind):
            return found
        app = getattr(app, "app", None)
        if app is None:
            break
    return None


def gateway_of(app: Any) -> Gateway | None:
    """The gateway behind the app (``AgoraApp.gateway``), if any."""
    gateway: Gateway | None = _behind(app, "gateway", Gateway)
    return gateway


def modules_of(app: Any) -> ModuleProxy | None:
    """The ``/m/`` proxy beside the gateway (``AgoraApp.modules``), if any."""
    modules: ModuleProxy | None = _behind(app, "modules", ModuleProxy)
    return modules


class _Modules:
    """What a ``/m/`` cycle runs: the module proxy, with the query string the path lacks."""

    __slots__ = ("proxy", "query")

    def __init__(self, proxy: ModuleProxy, query: bytes) -> None:
        self.proxy = proxy
        self.query = query

    async def handle(
        self, reply: Reply, method: str, path: str, headers: Any, read_body: Any
    ) -> None:
        await self.proxy.handle(reply, method, path, self.query, headers, read_body)


class _Defaults:
    """uvicorn's default headers (date, server) as one block, rebuilt when uvicorn changes
    them (once a second)."""

    cached: tuple[list[tuple[bytes, bytes]] | None, bytes] = (None, b"")

    @classmethod
    def get(cls, headers: list[tuple[bytes, bytes]]) -> bytes:
        source, block = cls.cached
        if headers is not source:  # one tuple: threads (servers in tests) never mix them up
            block = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
            cls.cached = (headers, block)
        return block


class GatewayProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol; ``/v1/*`` is served by the gateway without ASGI."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        lean = not config.root_path and config.limit_concurrency is None
        self.gateway = gateway_of(self.app) if lean else None
        self.modules = modules_of(self.app) if self.gateway is not None else None
        settings = self.gateway.rt.settings if self.gateway else None
        self.max_body = settings.gateway_max_body_bytes if settings else 0
        self.max_upload = settings.gateway_max_upload_bytes if settings else 0

    def on_headers_complete(self) -> None:
        gateway = self.gateway
        url = self.url
        if gateway is None or url[:3] not in (b"/v1", b"/m/") or self.parser.should_upgrade():
            super().on_headers_complete()
            return
        raw, _, query = url.partition(b"?")
        target: Any
        if raw[:4] == b"/v1/":
            target, limit = gateway, self.max_body
        elif raw[:3] == b"/m/" and self.modules is not None:
            target, limit = _Modules(self.modules, query), self.max_upload
        else:
            super().on_headers_complete()
            return
        if b"%" in raw:
            super().on_headers_complete()
            return
        parser = self.parser
        method = parser.get_method().decode("ascii")
        version = parser.get_http_version()
        cycle = LeanCycle(
            self,
            method,
            raw.decode("ascii"),
            version,
            version != "1.0" and parser.should_keep_alive(),
            limit,
        )
        existing = self.cycle
        self.cycle = cycle  # type: ignore[assignment]
        if existing is None or existing.response_complete:
            self._start_asgi_task(cycle, target)  # type: ignore[arg-type]
        else:  # pipelined: after the answers before it
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, target))  # type: ignore[arg-type]

    def on_body(self, body: bytes) -> None:
        cycle: Any = self.cycle
        if type(cycle) is not LeanCycle:
            super().on_body(body)
            return
        if cycle.response_complete or cycle.too_big:
            return
        cycle.size += len(body)
        if cycle.size > cycle.max_body:
            cycle.too_big = True
            cycle.parts.clear()
            cycle.set()
            return
        cycle.parts.append(body)

    def on_message_complete(self) -> None:
        cycle: Any = self.cycle
        if type(cycle) is not LeanCycle:
            super().on_message_complete()
            return
        cycle.more_body = False
        cycle.set()


class LeanCycle(Reply):
    """One ``/v1`` request on a :class:`GatewayProtocol` connection; duck-types uvicorn's
    ``RequestResponseCycle`` for the protocol and is the gateway's :class:`Reply`."""

    def __init__(
        self,
        proto: GatewayProtocol,
        method: str,
        path: str,
        version: str,
        keep_alive: bool,
        max_body: int,
    ) -> None:
        self.proto = proto
        self.max_body = max_body
        self.chunked = True  # a streamed body's framing (False: a known Content-Length)
        self.bodiless = False  # an answer that has no body (HEAD, 204, 304)
        self.transport = proto.transport
        self.method = method
        self.path = path
        self.version = version
        self.keep_alive = keep_alive
        self.headers = proto.headers
        self.expect_100 = proto.expect_100_continue
        self.on_response = proto.on_response_complete
        self.message_event = self  # uvicorn calls message_event.set() when the client leaves
        self.parts: list[bytes] = []
        self.size = 0
        self.more_body = True
        self.too_big = False
        self.disconnected = False
        self.started = False
        self.response_complete = False
        self.streaming = False
        self._waiter: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._out: list[bytes] = []
        self._flusher: asyncio.Handle | None = None

    # --- the protocol's side ----------------------------------------------------------------

    def set(self) -> None:
        """More body, the body's end, or the client went away."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self.disconnected and self._task is not None and not self.response_complete:
            self._task.cancel()  # stops the upstream request; the gateway meters a 499
            self._task = None

    async def run_asgi(self, target: Gateway | _Modules) -> None:
        self._task = asyncio.current_task()
        try:
            await target.handle(self, self.method, self.path, self.headers, self.read_body)
        except asyncio.CancelledError:
            if not self.disconnected:
                self.transport.close()
                raise
        except BaseException as exc:
            log.error("Exception in the gateway", exc_info=exc)
            if not self.started:
                self.keep_alive = False
                self._write_whole(500, b"text/plain; charset=utf-8", b"Internal Server Error", None)
            else:
                self.transport.close()
        else:
            if not self.response_complete and not self.disconnected:
                self.transport.close()
        finally:
            self._task = None
            self.on_response = _nothing

    async def read_body(self) -> bytes:
        limit = self.max_body
        for name, value in self.headers:
            if name == b"content-length" and (not value.isdigit() or int(value) > limit):
                self.too_big = True
                break
        if self.more_body and not self.too_big and not self.disconnected:
            if self.expect_100 and not self.transport.is_closing():
                self.expect_100 = False
                self.transport.write(_CONTINUE)
            self.proto.flow.resume_reading()
            while self.more_body and not self.too_big and not self.disconnected:
                self._waiter = asyncio.get_running_loop().create_future()
                try:
                    await self._waiter
                finally:
                    self._waiter = None
        if self.too_big:
            self.keep_alive = False  # the rest of the body is not read: the connection ends
            raise too_large(limit)
        if self.disconnected:
            raise GatewayError(400, "The client went away", "client_disconnected")
        parts = self.parts
        return parts[0] if len(parts) == 1 else b"".join(parts)

    # --- Reply ------------------------------------------------------------------------------

    @property
    def gone(self) -> bool:
        return self.disconnected

    async def whole(
        self,
        status: int,
        body: bytes,
        ctype: bytes = b"application/json",
        retry_after: int | None = None,
    ) -> None:
        self._write_whole(status, ctype, body, retry_after)

    def _write_whole(self, status: int, ctype: bytes, body: bytes, retry_after: int | None) -> None:
        if self.disconnected or self.response_complete:
            return
        self.started = True
        head = [
            STATUS_LINE[status],
            _Defaults.get(self.proto.server_state.default_headers),
            b"content-type: ",
            ctype,
            b"\r\ncontent-length: %d\r\n" % len(body),
        ]
        if retry_after is not None:
            head.append(b"retry-after: %d\r\n" % retry_after)
        if not self.keep_alive:
            head.append(_CLOSE)
        head.append(b"\r\n")
        if self.method != "HEAD":
            head.append(body)
        self.transport.write(b"".join(head))
        self._log(status)
        self._complete()

    async def answer(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        if self.disconnected or self.response_complete:
            return
        self.started = True
        head = [_status_line(status), _Defaults.get(self.proto.server_state.default_headers)]
        head += [name + b": " + value + b"\r\n" for name, value in headers]
        bodiless = status in (204, 304) or status < 200
        if not bodiless:
            head.append(b"content-length: %d\r\n" % len(body))
        if not self.keep_alive:
            head.append(_CLOSE)
        head.append(b"\r\n")
        if self.method != "HEAD" and not bodiless:
            head.append(body)
        self.transport.write(b"".join(head))
        self._log(status)
        self._complete()

    async def start_response(
        self, status: int, headers: list[tuple[bytes, bytes]], length: int | None
    ) -> None:
        if self.disconnected:
            return
        self.started = self.streaming = True
        # No body at all: an answer to HEAD, 1xx, 204 and 304 (no framing, no terminator).
        self.bodiless = self.method == "HEAD" or status < 200 or status in (204, 304)
        self.chunked = length is None and not self.bodiless
        head = [_status_line(status), _Defaults.get(self.proto.server_state.default_headers)]
        head += [name + b": " + value + b"\r\n" for name, value in headers]
        if self.chunked:
            head.append(b"transfer-encoding: chunked\r\n")
        elif length is not None and status not in (204, 304):
            head.append(b"content-length: %d\r\n" % length)
        if not self.keep_alive:
            head.append(_CLOSE)
        head.append(b"\r\n")
        self._buffer(b"".join(head))
        self._log(status)

    # A stream's writes are gathered until the task yields (``call_soon``): the headers go
    # out with the first events and the end with the last ones, in one system call each time
    # rather than one per piece, without delaying anything.

    async def start_stream(self) -> None:
        if self.disconnected:
            return
        self.started = self.streaming = True
        head = STATUS_LINE[200] + _Defaults.get(self.proto.server_state.default_headers) + _SSE
        self._buffer(head + (b"\r\n" if self.keep_alive else _CLOSE + b"\r\n"))
        self._log(200)

    async def chunk(self, data: bytes) -> None:
        if self.disconnected or not data or self.bodiless:
            return
        flow = self.proto.flow
        if flow.write_paused:
            self._flush()
            await flow.drain()
        self._buffer(b"%x\r\n%b\r\n" % (len(data), data) if self.chunked else data)

    async def end_stream(self) -> None:
        self._end()

    async def error(self, exc: GatewayError) -> None:
        if not self.started:
            self._write_whole(exc.status, b"application/json", exc.body(), exc.retry_after)
        elif self.streaming:
            self._end()  # too late for an error answer (a timeout mid-stream): end the stream

    def cut(self) -> None:
        """A started answer broke off: what came goes out, then the connection ends (the client
        sees a short body or a missing chunked terminator, never a complete-looking answer)."""
        if self.disconnected or self.response_complete:
            return
        self._flush()
        self.keep_alive = False
        self._complete()

    def _buffer(self, data: bytes) -> None:
        self._out.append(data)
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        out = self._out
        if out and not self.disconnected and not self.transport.is_closing():
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))
        out.clear()

    def _end(self) -> None:
        if self.disconnected or self.response_complete:
            return
        if self.chunked:
            self._out.append(b"0\r\n\r\n")
        self._flush()
        self._complete()

    # --- helpers ----------------------------------------------------------------------------

    def _complete(self) -> None:
        self.response_complete = True
        if not self.keep_alive:
            self.transport.close()
        self.on_response()

    def _log(self, status: int) -> None:
        proto = self.proto
        if proto.access_log:
            client = proto.client
            proto.access_logger.info(
                '%s - "%s %s HTTP/%s" %d',
                f"{client[0]}:{client[1]}" if client else "",
                self.method,
                self.path,
                self.version,
                status,
            )


def _nothing() -> None:
    pass


def _status_line(status: int) -> bytes:
    line: bytes | None = STATUS_LINE.get(status)
    return line if line is not None else b"HTTP/1.1 %d \r\n" % status
