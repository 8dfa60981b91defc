"""A real smart-HTTP git server for the tests: git's own ``git http-backend`` behind a WSGI
server on loopback, with HTTP basic authentication.

    with git_http_server(root, user="agora", password="pw") as server:
        url = f"http://agora:pw@127.0.0.1:{server.port}/modules.git"

Every request's credentials are recorded (``server.seen``), and while it runs the server looks
through the host's process list for the password (``server.in_process_list``): git is running
then, so a password on its command line would be found.
"""

from __future__ import annotations

import base64
import contextlib
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        """No access log: the tests read what they need from :class:`GitHttpServer`."""


class _Threaded(ThreadingMixIn, WSGIServer):
    daemon_threads = True


@dataclass
class GitHttpServer:
    root: Path
    user: str | None
    password: str | None
    port: int = 0
    #: (user, password) of each request, None for a request without credentials.
    seen: list[tuple[str, str] | None] = field(default_factory=list)
    #: Command lines that held the password while a request was served.
    in_process_list: list[str] = field(default_factory=list)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        given = _basic(environ.get("HTTP_AUTHORIZATION", ""))
        self.seen.append(given)
        if self.password:
            self.in_process_list += _command_lines_with(self.password)
        if self.user is not None and given != (self.user, self.password):
            start_response(
                "401 Unauthorized",
                [("WWW-Authenticate", 'Basic realm="git"'), ("Content-Length", "0")],
            )
            return [b""]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        cgi = {
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH": "/usr/bin:/bin",
            "REQUEST_METHOD": environ["REQUEST_METHOD"],
            "PATH_INFO": environ.get("PATH_INFO", ""),
            "QUERY_STRING": environ.get("QUERY_STRING", ""),
            "CONTENT_TYPE": environ.get("CONTENT_TYPE", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": given[0] if given else "",
            "REMOTE_ADDR": environ.get("REMOTE_ADDR", "127.0.0.1"),
            "GIT_PROTOCOL": environ.get("HTTP_GIT_PROTOCOL", ""),
            "HTTP_CONTENT_ENCODING": environ.get("HTTP_CONTENT_ENCODING", ""),
        }
        out = subprocess.run(
            ["git", "http-backend"], input=body, env=cgi, capture_output=True, timeout=60
        ).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        if not _:
            head, _, payload = out.partition(b"\n\n")
        status = "200 OK"
        headers = []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = value.strip()
            elif name:
                headers.append((name.strip(), value.strip()))
        start_response(status, headers)
        return [payload]


def _basic(header: str) -> tuple[str, str] | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    user, _, password = base64.b64decode(value).decode().partition(":")
    return user, password


def _command_lines_with(secret: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            args = cmdline.read_bytes().split(b"\0")
            if any(secret.encode() in arg for arg in args):
                found.append(b" ".join(args).decode(errors="replace"))
    return found


@contextlib.contextmanager
def git_http_server(
    root: Path, user: str | None = None, password: str | None = None
) -> Iterator[GitHttpServer]:
    """Serve the bare repositories under ``root``; with ``user``, only to that user and
    ``password``."""
    app = GitHttpServer(root, user, password)
    server = make_server("127.0.0.1", 0, app, server_class=_Threaded, handler_class=_Quiet)
    app.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield app
    finally:
        server.shutdown()
        server.server_close()
