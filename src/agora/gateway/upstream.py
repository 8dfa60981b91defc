"""A lean HTTP/1.1 client for the gateway's hop to its replicas.

Why not aiohttp's client: profiling the gateway under load showed aiohttp's request machinery
(attrs objects, payload registry, auto headers, timers) spending about 190 µs of CPU per
request, nearly half of the gateway's time; the hop needs none of it. This client does only what
the hop needs, on asyncio protocols with httptools' parser (the one uvicorn uses):

* keep-alive connections, pooled per upstream address; a connection the upstream closed is
  dropped, never reused;
* one request at a time per connection, a JSON body with a Content-Length;
* the response's status and headers, then its body whole or chunk by chunk as it arrives
  (chunked or sized; ``iter_chunks`` never waits for more than what is there);
* connect and read timeouts; errors as :class:`UpstreamError` (nothing was received) or
  :class:`BrokenResponse` (the response broke after it started).

Plain ``http://`` only: replicas are reached inside the centre. External models on ``https``
go through aiohttp (see :mod:`agora.gateway.proxy`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httptools


class UpstreamError(Exception):
    """The request failed before any byte of a response arrived (safe to retry)."""


class BrokenResponse(Exception):
    """The response broke off after it had started."""


class _Conn(asyncio.Protocol):
    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.response: Response | None = None

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(BrokenResponse(f"the upstream sent invalid HTTP: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.response is not None and not self.response.complete:
            self._fail(
                BrokenResponse("the upstream closed the connection mid-response")
                if self.response.started
                else UpstreamError("the upstream closed the connection")
            )

    # --- httptools callbacks ----------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.response is not None
        self.response.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        r = self.response
        assert r is not None
        r.status = self.parser.get_status_code()
        r.started = True
        if not r.head.done():
            r.head.set_result(None)

    def on_body(self, body: bytes) -> None:
        assert self.response is not None
        self.response.feed(body)

    def on_message_complete(self) -> None:
        r = self.response
        assert r is not None
        r.complete = True
        r.feed(None)
        if not self.parser.should_keep_alive():
            self.close()

    # --- use --------------------------------------------------------------------------------

    def _fail(self, exc: Exception) -> None:
        r = self.response
        if r is None:
            return
        if not r.head.done():
            r.head.set_exception(exc)
        r.error = exc
        r.feed(None)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Response:
    def __init__(self, conn: _Conn, loop: asyncio.AbstractEventLoop) -> None:
        self.conn = conn
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head: asyncio.Future[None] = loop.create_future()
        self.started = False
        self.complete = False
        self.error: Exception | None = None
        self._chunks: deque[bytes | None] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._loop = loop

    def feed(self, chunk: bytes | None) -> None:
        self._chunks.append(chunk)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    async def iter_chunks(self, read_timeout: float) -> AsyncIterator[bytes]:
        """Body bytes as they arrive, joined per wake-up."""
        while True:
            if not self._chunks:
                waiter = self._waiter = self._loop.create_future()
                # One timer, not asyncio.timeout's machinery: this runs for every wait.
                timer = self._loop.call_later(read_timeout, _expire, waiter)
                try:
                    await waiter
                except TimeoutError:
                    self.conn.close()
                    raise
                finally:
                    timer.cancel()
                    self._waiter = None
            parts = []
            end = False
            while self._chunks:
                chunk = self._chunks.popleft()
                if chunk is None:
                    end = True
                    break
                parts.append(chunk)
            if parts:
                yield parts[0] if len(parts) == 1 else b"".join(parts)
            if end:
                if self.error is not None:
                    raise self.error
                return

    async def read(self, read_timeout: float) -> bytes:
        chunks = self._chunks
        if self.complete and chunks and chunks[-1] is None:  # all in already: the usual case
            chunks.pop()
            if self.error is not None:
                raise self.error
            data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)  # type: ignore[arg-type]
            chunks.clear()
            return data  # type: ignore[return-value]
        return b"".join([c async for c in self.iter_chunks(read_timeout)])

    def release(self) -> None:
        """Give the connection back for reuse, or close it if the response is unfinished."""
        conn = self.conn
        conn.response = None
        if self.complete and self.error is None and not conn.closed:
            conn.pool.put(conn)
        else:
            conn.close()


class Pool:
    """Idle keep-alive connections to one upstream (host, port)."""

    def __init__(self, host: str, port: int, max_idle: int = 256) -> None:
        self.host = host
        self.port = port
        self.max_idle = max_idle
        self.idle: list[_Conn] = []

    def put(self, conn: _Conn) -> None:
        if len(self.idle) < self.max_idle:
            self.idle.append(conn)
        else:
            conn.close()

    def take(self) -> _Conn | None:
        """An idle connection still open, if any (no coroutine: the usual case)."""
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed:
                return conn
        return None

    async def connect(self, connect_timeout: float) -> _Conn:
        """A new connection."""
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _Conn(self), self.host, self.port),
                connect_timeout,
            )
        except TimeoutError:
            raise UpstreamError(f"no connection within {connect_timeout:g} s") from None
        except OSError as exc:
            raise UpstreamError(f"cannot connect: {exc.strerror or exc}") from None
        return conn

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()


class Client:
    def __init__(self) -> None:
        self.pools: dict[tuple[str, int], Pool] = {}
        self._bases: dict[str, tuple[Pool, bytes, bytes]] = {}
        self._heads: dict[tuple[str, str, str], bytes] = {}

    def pool_for(self, url: str) -> tuple[Pool, bytes, bytes]:
        """The pool, the Host header value and the path prefix of a base URL."""
        found = self._bases.get(url)
        if found is not None:
            return found
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        pool = self.pools.get((host, port))
        if pool is None:
            pool = self.pools[(host, port)] = Pool(host, port)
        if len(self._bases) > 1024:  # replicas come and go
            self._bases.clear()
        found = self._bases[url] = (pool, parts.netloc.encode(), parts.path.rstrip("/").encode())
        return found

    async def post(
        self,
        url: str,
        path: str,
        body: bytes,
        auth: str,
        connect_timeout: float,
        first_byte_timeout: float,
    ) -> Response:
        """Send a JSON POST; returns once the status and headers are in."""
        pool, host, prefix = self.pool_for(url)
        head = self._heads.get((url, path, auth))
        if head is None:
            head = b"".join(
                (
                    b"POST ",
                    prefix,
                    path.encode(),
                    b" HTTP/1.1\r\nHost: ",
                    host,
                    b"\r\nContent-Type: application/json\r\nAccept-Encoding: identity\r\n",
                    b"Authorization: " + auth.encode("latin-1") + b"\r\n" if auth else b"",
                    b"Content-Length: ",
                )
            )
            if len(self._heads) > 1024:
                self._heads.clear()
            self._heads[(url, path, auth)] = head
        request = b"%b%d\r\n\r\n%b" % (head, len(body), body)
        return await self._send(pool, request, connect_timeout, first_byte_timeout)

    async def request(
        self,
        method: str,
        url: str,
        target: bytes,
        headers: bytes,
        body: bytes,
        connect_timeout: float,
        first_byte_timeout: float,
    ) -> Response:
        """Any request (the DEEPaaS passthrough): ``target`` is the raw path and query below the
        base URL, ``headers`` ready-made header lines, each ending in CRLF."""
        pool, host, prefix = self.pool_for(url)
        head = b"%b %b%b HTTP/1.1\r\nHost: %b\r\n%bContent-Length: %d\r\n\r\n" % (
            method.encode("ascii"),
            prefix,
            target,
            host,
            headers,
            len(body),
        )
        return await self._send(pool, head + body, connect_timeout, first_byte_timeout)

    async def _send(
        self, pool: Pool, request: bytes, connect_timeout: float, first_byte_timeout: float
    ) -> Response:
        """Write the request; returns once the status and headers are in.

        A kept-alive connection the upstream closed meanwhile fails before any byte came
        back: that one is retried once on a fresh connection.
        """
        loop = asyncio.get_running_loop()
        fresh = False
        while True:
            conn = None if fresh else pool.take()
            reused = conn is not None
            if conn is None:
                conn = await pool.connect(connect_timeout)
            response = Response(conn, loop)
            conn.response = response
            timer = None
            try:
                if conn.closed or conn.transport is None or conn.transport.is_closing():
                    raise UpstreamError("the upstream closed the connection")
                conn.transport.write(request)
                # One timer, not asyncio.timeout's machinery: this runs for every request.
                timer = loop.call_later(first_byte_timeout, _expire, response.head)
                await response.head
                return response
            except UpstreamError:
                conn.response = None
                conn.close()
                if reused and not fresh:
                    fresh = True
                    continue
                raise
            except BaseException:
                conn.response = None
                conn.close()
                raise
            finally:
                if timer is not None:
                    timer.cancel()

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()
        self.pools.clear()
        self._bases.clear()


def _expire(head: asyncio.Future[None]) -> None:
    if not head.done():
        head.set_exception(TimeoutError())
