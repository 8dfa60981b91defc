"""A throwaway Redis server on loopback for the tests, from Debian's redis-server package."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.servers import free_port, wait_for_port

REDIS_SERVER = "/usr/bin/redis-server"


def _answers_ping(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1) as s:
        s.sendall(b"PING\r\n")
        return s.recv(16).startswith(b"+PONG")
    return False


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """Start redis-server without persistence on a free port; yields its URL."""
    if not Path(REDIS_SERVER).exists():
        raise RuntimeError(
            f"{REDIS_SERVER} is missing: run 'make test-deps' (Debian's redis-server)"
        )
    root = Path(tempfile.mkdtemp(prefix="agora-redis-"))
    port = free_port()
    with (root / "server.log").open("wb") as log:
        proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--dir", str(root)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for_port("127.0.0.1", port)
        deadline = time.monotonic() + 30
        while not _answers_ping(port):  # the port opens before the dataset is loaded
            if proc.poll() is not None or time.monotonic() > deadline:
                log_text = (root / "server.log").read_text(errors="replace")
                raise RuntimeError(f"redis-server did not start:\n{log_text}")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(root, ignore_errors=True)
