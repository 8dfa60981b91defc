"""A real HTTP server for the browser tests: uvicorn in a thread, serving a fresh installation."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn

from agora.app import create_app
from agora.bootstrap import bootstrap
from agora.runtime import Runtime
from tests.conftest import make_settings
from tests.servers import free_port, wait_for_port


@dataclass
class LiveServer:
    url: str
    admin: str
    #: The bootstrap admin's one-time password (no AGORA_BOOTSTRAP_ADMIN_PASSWORD given).
    one_time_password: str


@pytest.fixture
def live_server(tmp_path: Path, database_url: str) -> Iterator[LiveServer]:
    port = free_port()
    settings = make_settings(
        tmp_path,
        database_url,
        bootstrap_admin_password=None,
        bootstrap_admin_key=None,
        public_url=f"http://127.0.0.1:{port}",
    )
    runtime = Runtime.create(settings)
    app = create_app(runtime=runtime)
    first = bootstrap(runtime)
    assert first is not None and first.password is not None
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", ws="none")
    )
    thread = threading.Thread(target=server.run, name="agora-live-server", daemon=True)
    thread.start()
    try:
        wait_for_port("127.0.0.1", port)
        yield LiveServer(f"http://127.0.0.1:{port}", first.username, first.password)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        runtime.db.dispose()


# The running platform (uvicorn + orchestrator) of the deployment tests, for the deployment pages.
from tests.deployments.conftest import platform, platform_factory  # noqa: E402, F401
