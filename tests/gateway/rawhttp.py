"""A raw HTTP/1.1 client connection for the front's tests: pipelining, framing, connection ends."""

from __future__ import annotations

import socket

from tests.gateway.conftest import Gateway


class Conn:
    """A raw HTTP/1.1 client connection that reads responses one at a time."""

    def __init__(self, gw: Gateway) -> None:
        self.sock = socket.create_connection(("127.0.0.1", gw.platform.port), timeout=10)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buf += data
        return bool(data)

    def head(self) -> tuple[int, dict[str, str]]:
        while b"\r\n\r\n" not in self.buf:
            assert self._fill(), f"connection closed; got {self.buf!r}"
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers

    def response(self) -> tuple[int, dict[str, str], bytes]:
        status, headers = self.head()
        if "content-length" in headers:
            size = int(headers["content-length"])
            while len(self.buf) < size:
                assert self._fill()
            body, self.buf = self.buf[:size], self.buf[size:]
            return status, headers, body
        assert headers.get("transfer-encoding") == "chunked", headers
        body = b""
        while True:
            while b"\r\n" not in self.buf:
                assert self._fill()
            line, rest = self.buf.split(b"\r\n", 1)
            size = int(line, 16)
            while len(rest) < size + 2:
                assert self._fill()
                line, rest = self.buf.split(b"\r\n", 1)
            body += rest[:size]
            self.buf = rest[size + 2 :]
            if size == 0:
                return status, headers, body

    def closed(self) -> bool:
        try:
            return not self._fill()
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()
