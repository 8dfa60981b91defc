"""Running the model server: load the models here (for their metadata and arguments), then
serve; the workers load and warm them again before the server listens."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from agora.modelserver import loader
from agora.modelserver.app import ServerConfig, create_app
from agora.modelserver.model import ServedModel


def default_host() -> str:
    return os.environ.get("AGORA_BIND_HOST") or "127.0.0.1"


def default_port() -> int:
    return int(os.environ.get("PORT") or 5000)


def service_token() -> str | None:
    return os.environ.get("AGORA_SERVICE_TOKEN") or None


def run(
    modules: list[str] | None,
    import_paths: list[str] | None,
    config: ServerConfig,
    host: str,
    port: int,
) -> None:
    """Raises :class:`loader.ModelNotFound` before anything listens when a model is missing."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    models = [ServedModel.load(ref) for ref in loader.refs(modules, import_paths)]
    import uvicorn

    from agora.modelserver.front import PredictProtocol

    uvicorn.run(
        create_app(models, config),
        host=host,
        port=port,
        http=PredictProtocol,
        log_level="warning",
        access_log=False,
        proxy_headers=False,  # links use X-Forwarded-Prefix; client addresses are not used
        timeout_graceful_shutdown=5,
    )


class GatheredWrites:
    """A transport whose writes in one event-loop turn leave in one system call.

    uvicorn writes an answer's status line and headers, then its body, as two writes: two
    TCP segments, and a client (or the platform's gateway) that wakes up for the first has to
    read again for the second. Gathered, a prediction goes out as one segment.
    """

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
