"""The model server's transport wrapper: an answer's header and body writes leave together."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from agora.modelserver.front import PredictProtocol
from agora.modelserver.server import GatheredWrites


class Recording(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[bytes] = []
        self.closed = False
        self.eof = False

    def write(self, data: Any) -> None:
        assert not self.closed, "written after close"
        self.sent.append(bytes(data))

    def write_eof(self) -> None:
        self.eof = True

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1)}.get(name, default)


def test_writes_in_one_turn_leave_in_one_call() -> None:
    async def scenario() -> Recording:
        raw = Recording()
        gathered = GatheredWrites(raw, asyncio.get_running_loop())
        gathered.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        gathered.write(memoryview(b"{}"))
        assert raw.sent == []  # not yet: the turn has not ended
        await asyncio.sleep(0)
        assert raw.sent == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
        gathered.writelines([b"a", b"b"])
        await asyncio.sleep(0)
        gathered.write(b"c")
        await asyncio.sleep(0)
        assert raw.sent[1:] == [b"ab", b"c"]
        # Everything else is the real transport's.
        assert gathered.get_extra_info("peername") == ("127.0.0.1", 1)
        return raw

    asyncio.run(scenario())


def test_close_and_eof_send_what_is_pending_first() -> None:
    async def scenario() -> None:
        raw = Recording()
        gathered = GatheredWrites(raw, asyncio.get_running_loop())
        gathered.write(b"last words")
        gathered.close()
        assert raw.sent == [b"last words"] and raw.closed
        await asyncio.sleep(0)  # the scheduled flush finds nothing and writes nothing
        assert raw.sent == [b"last words"]

        raw2 = Recording()
        gathered2 = GatheredWrites(raw2, asyncio.get_running_loop())
        gathered2.write(b"x")
        gathered2.write_eof()
        assert raw2.sent == [b"x"] and raw2.eof

        raw3 = Recording()
        gathered3 = GatheredWrites(raw3, asyncio.get_running_loop())
        gathered3.write(b"lost")
        raw3.close()  # the peer went away before the turn ended
        await asyncio.sleep(0)
        assert raw3.sent == []

    asyncio.run(scenario())


def test_pipelined_requests_get_whole_answers_in_order() -> None:
    """The model server's protocol over the wrapper, on a real socket: keep-alive and
    pipelining (an app with no model API: every request goes through ASGI)."""
    import uvicorn

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = scope["path"].encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def scenario() -> bytes:
        config = uvicorn.Config(app, http=PredictProtocol, log_level="warning", lifespan="off")
        server = uvicorn.Server(config)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.01)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        while got.count(b"HTTP/1.1 200") < 2 or not got.endswith(b"/two"):
            got += await asyncio.wait_for(reader.read(65536), 5)
        writer.close()
        server.should_exit = True
        await task
        return got

    answer = asyncio.run(scenario())
    first, second = answer.split(b"HTTP/1.1 200 OK")[1:]
    assert first.endswith(b"\r\n\r\n/one") and second.endswith(b"\r\n\r\n/two")
