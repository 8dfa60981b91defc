"""Requests answered straight from uvicorn's HTTP parser, without the ASGI cycle.

Profiling showed half of a lean handler's CPU time per request in uvicorn's ASGI cycle (the
scope, the ``RequestResponseCycle``, an event and message dicts per ``send`` and ``receive``,
header checks). :class:`LeanProtocol` is uvicorn's ``HttpToolsProtocol`` for everything else:
a request that :meth:`LeanProtocol.lean_route` claims gets a :class:`LeanCycle` instead, which
hands its handler plain values (method, path, the header list, the body) and writes the answer
to the transport in one piece, with precomputed header blocks. Because the cycle looks like
uvicorn's own to the protocol, uvicorn still does keep-alive and its timeout, pipelining
(answers in order; reading pauses while one is pending), flow control, graceful shutdown and
the access log.

What the lean path does itself: ``Expect: 100-continue`` (sent when the handler first wants
the body, as uvicorn does), chunked request bodies, bodies over the route's limit (the
protocol's :meth:`~LeanProtocol.body_too_large` error and the connection closed, at once for a
declared length), and a client that goes away (its request is cancelled).

Never lean: upgrades, percent-encoded (or not ASCII) paths, and a ``root_path`` or
``limit_concurrency`` setting (:attr:`LeanProtocol.lean`). Two users: the gateway's ``/v1``
and ``/m/`` (:mod:`agora.gateway.front`) and the model server's predict
(:mod:`agora.modelserver.front`).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
from typing import Any, Protocol

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

log = logging.getLogger("agora.lean")
_SSE = (
    b"content-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\n"
    b"x-accel-buffering: no\r\n"
    b"transfer-encoding: chunked\r\n"
)
_CLOSE = b"connection: close\r\n"
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Handler(Protocol):
    """What serves a lean request: ``read_body()`` returns the whole body (or raises the
    protocol's errors); the answer goes to ``reply``."""

    async def handle(
        self, reply: Reply, method: str, path: str, headers: Any, read_body: Any
    ) -> None: ...


def behind(app: Any, attribute: str, kind: type) -> Any:
    """``app.<attribute>`` of the kind wanted, looking through the wrappers of the ASGI app
    (uvicorn's proxy headers and message logger, a token guard), or None."""
    for _ in range(8):
        found = getattr(app, attribute, None)
        if isinstance(found, kind):
            return found
        app = getattr(app, "app", None)
        if app is None:
            break
    return None


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


class Reply(abc.ABC):
    """Where one answer goes: the client's connection (:class:`LeanCycle`, no ASGI) or an
    ASGI ``send`` (:class:`agora.gateway.protocol.AsgiReply`). The handlers of lean requests
    (the gateway's, the model server's predict) write only through this."""

    started = False  # the status line went out: no error answer is possible any more
    #: The gateway's streams: (tokens in, tokens out) from the latest usage seen, and whether
    #: ``data: [DONE]`` went out (the answer is whole)
    usage: tuple[int, int] | None = None
    finished = False

    @property
    def gone(self) -> bool:
        """The client went away."""
        return False

    @abc.abstractmethod
    async def whole(
        self,
        status: int,
        body: bytes,
        ctype: bytes = b"application/json",
        retry_after: int | None = None,
    ) -> None:
        """A complete answer with a Content-Length."""

    @abc.abstractmethod
    async def start_stream(self) -> None:
        """200 with the SSE headers; then ``chunk`` … and ``end_stream``."""

    @abc.abstractmethod
    async def chunk(self, data: bytes) -> None:
        """One piece of the stream."""

    @abc.abstractmethod
    async def end_stream(self) -> None:
        """The stream's end (the chunked terminator)."""

    @abc.abstractmethod
    async def answer(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """A complete answer with these headers (lower-case names; Content-Length is set here)."""

    @abc.abstractmethod
    async def start_response(
        self, status: int, headers: list[tuple[bytes, bytes]], length: int | None
    ) -> None:
        """The head of an answer whose body follows in ``chunk`` … ``end_stream``: ``length``
        bytes, or chunked when it is None. ``headers`` carry no Content-Length."""

    def cut(self) -> None:  # noqa: B027 - optional: a reply that can end its connection does
        """The answer broke off after it started: the client must not take it for complete."""

    def unwatch(self) -> None:  # noqa: B027 - optional: only a reply that watches overrides it
        """The stream is over (or failed): stop watching for the client leaving."""

    async def error(self, exc: Any) -> None:
        """An error answer (``exc.status``, ``exc.body()``, ``exc.retry_after``: the gateway's
        :class:`~agora.gateway.protocol.GatewayError`), if nothing was sent yet."""
        if not self.started:
            with contextlib.suppress(OSError, RuntimeError):
                await self.whole(exc.status, exc.body(), retry_after=exc.retry_after)


class LeanProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol; requests that :meth:`lean_route` claims skip ASGI."""

    #: A client that leaves cancels its request's handler (once its body is in; before, the
    #: handler's ``read_body`` raises :meth:`client_gone` either way). False: the handler
    #: runs to its end and its answer is dropped, as uvicorn's ASGI cycle does.
    cancel_on_disconnect = True

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        #: False where lean requests would bypass what the settings ask of ASGI requests
        self.lean = not config.root_path and config.limit_concurrency is None
        self.setup()

    # --- what a subclass decides ------------------------------------------------------------

    def setup(self) -> None:
        """Called at the end of ``__init__`` (``self.app``, ``self.config``, ``self.lean``)."""

    def lean_route(self, path: bytes, query: bytes) -> tuple[Handler, int] | None:
        """The handler of a request to ``path`` (as sent, without ``%``) with ``query`` (after
        the ``?``, raw) and its body limit in bytes, or None for the ASGI app. Called once the
        headers are in (``self.headers``, ``self.parser``)."""
        return None

    def body_too_large(self, limit: int) -> Exception:
        """What ``read_body`` raises for a body over the route's limit."""
        return ValueError(f"the request body is larger than {limit} bytes")

    def client_gone(self) -> Exception:
        """What ``read_body`` raises when the client left before its body was in."""
        return ConnectionResetError("the client went away")

    # --- the parser's callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        # uvicorn's, less the ASGI scope: on_headers_complete makes that for ASGI requests only.
        self.url = b""
        self.expect_100_continue = False
        self.headers = []

    def _make_scope(self) -> None:
        """uvicorn's scope for this request (its on_message_begin, keeping what came since)."""
        url, headers, expect = self.url, self.headers, self.expect_100_continue
        super().on_message_begin()
        self.url, self.headers, self.expect_100_continue = url, headers, expect
        self.scope["headers"] = headers

    def on_headers_complete(self) -> None:
        path, _, query = self.url.partition(b"#")[0].partition(b"?")  # no fragment, as ASGI
        route = None
        if self.lean and b"%" not in path and path.isascii() and not self.parser.should_upgrade():
            route = self.lean_route(path, query)
        if route is None:
            self._make_scope()
            super().on_headers_complete()
            return
        handler, limit = route
        parser = self.parser
        method = parser.get_method().decode("ascii")
        version = parser.get_http_version()
        cycle = LeanCycle(
            self,
            method,
            path.decode("ascii"),
            version,
            version != "1.0" and parser.should_keep_alive(),
            limit,
        )
        existing = self.cycle
        self.cycle = cycle  # type: ignore[assignment]
        if existing is None or existing.response_complete:
            self._start_asgi_task(cycle, handler)  # type: ignore[arg-type]
        else:  # pipelined: after the answers before it
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, handler))  # type: ignore[arg-type]

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
    """One lean request on a :class:`LeanProtocol` connection; duck-types uvicorn's
    ``RequestResponseCycle`` for the protocol and is its handler's :class:`Reply`."""

    def __init__(
        self,
        proto: LeanProtocol,
        method: str,
        path: str,
        version: str,
        keep_alive: bool,
        max_body: int,
    ) -> None:
        self.proto = proto
        self.max_body = max_body
        self.transport = proto.transport
        self.method = method
        self.path = path
        self.version = version
        self.keep_alive = keep_alive
        self.headers = proto.headers
        self.expect_100 = proto.expect_100_continue
        self.on_response = proto.on_response_complete
        self.parts: list[bytes] = []
        self._out: list[bytes] = []

    # What every cycle starts with (class attributes, so that __init__, once per request, sets
    # only what differs).
    chunked = True  # a streamed body's framing (False: a known Content-Length)
    bodiless = False  # an answer that has no body (HEAD, 204, 304)
    size = 0
    more_body = True
    too_big = False
    disconnected = False
    started = False
    response_complete = False
    streaming = False
    _waiter: asyncio.Future[None] | None = None
    _task: asyncio.Task[None] | None = None
    _flusher: asyncio.Handle | None = None

    @property
    def message_event(self) -> LeanCycle:
        """uvicorn calls ``message_event.set()`` when the client leaves."""
        return self

    # --- the protocol's side ----------------------------------------------------------------

    def set(self) -> None:
        """More body, the body's end, or the client went away."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if (
            self.disconnected
            and self._task is not None
            and not self.response_complete
            and self.proto.cancel_on_disconnect
        ):
            self._task.cancel()  # stops the upstream request; the gateway meters a 499
            self._task = None

    async def run_asgi(self, target: Handler) -> None:
        self._task = asyncio.current_task()
        try:
            await target.handle(self, self.method, self.path, self.headers, self.read_body)
        except asyncio.CancelledError:
            if not self.disconnected:
                self.transport.close()
                raise
        except BaseException as exc:
            log.error("Exception in %s", type(target).__name__, exc_info=exc)
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
            raise self.proto.body_too_large(limit)
        if self.disconnected:
            raise self.proto.client_gone()
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
        self._unread_body_ends_connection()
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
        self._unread_body_ends_connection()
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

    async def error(self, exc: Any) -> None:
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

    def _unread_body_ends_connection(self) -> None:
        """Answered before asking for a body the client holds back (``Expect: 100-continue``):
        it will never come, so what follows on the connection could not be read apart from
        it. The connection ends with this answer."""
        if self.expect_100 and self.more_body:
            self.keep_alive = False

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
