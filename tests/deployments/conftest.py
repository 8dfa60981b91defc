"""A running Agora (uvicorn + orchestrator) for deployment tests, with helpers to drive it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from agora.runtime import Runtime
from agora.settings import Settings
from tests.conftest import ADMIN_KEY, make_settings
from tests.servers import agora_server, free_port, kill_runs

TERMINAL = {"stopped", "failed"}


@dataclass
class Platform:
    url: str
    settings: Settings
    runtime: Runtime
    port: int
    http: httpx.Client
    _ctx: Any = None
    running: bool = True

    def shutdown(self) -> None:
        """Stop the control plane like a crash would leave things: deployments keep running."""
        if self.running:
            self.running = False
            self.http.close()
            self._ctx.__exit__(None, None, None)

    def api(self, method: str, path: str, token: str = ADMIN_KEY, **kw: Any) -> httpx.Response:
        return self.http.request(
            method, "/api/v1" + path, headers={"Authorization": f"Bearer {token}"}, **kw
        )

    def deploy(
        self, template: str, project: str = "default", token: str = ADMIN_KEY, **body: Any
    ) -> dict:
        r = self.api(
            "POST", f"/projects/{project}/deployments", token, json={"template": template, **body}
        )
        assert r.status_code == 201, r.text
        return dict(r.json())

    def get(self, dep_id: str, project: str = "default") -> dict:
        r = self.api("GET", f"/projects/{project}/deployments/{dep_id}")
        assert r.status_code == 200, r.text
        return dict(r.json())

    def wait(
        self, dep_id: str, states: set[str], timeout: float = 60, project: str = "default"
    ) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            dep = self.get(dep_id, project)
            if dep["state"] in states:
                return dep
            if dep["state"] in TERMINAL or time.monotonic() > deadline:
                raise AssertionError(f"expected {states}, got {dep['state']}: {dep}")
            time.sleep(0.1)

    def logs(self, dep_id: str, project: str = "default") -> str:
        return self.api("GET", f"/projects/{project}/deployments/{dep_id}/logs").text


def start(tmp_path: Path, database_url: str, port: int, **overrides: Any):  # type: ignore[no-untyped-def]
    settings = make_settings(
        tmp_path,
        database_url,
        public_url=f"http://127.0.0.1:{port}",
        reconcile_interval=0.2,
        **overrides,
    )
    return settings, agora_server(settings, port)


@pytest.fixture
def platform_factory(tmp_path: Path, database_url: str) -> Iterator[Callable[..., Any]]:
    """Start (and restart) Agora on one data directory and database."""
    port = free_port()
    launched: list[Platform] = []

    def launch(**overrides: Any) -> Platform:
        settings, ctx = start(tmp_path, database_url, port, **overrides)
        runtime = ctx.__enter__()
        http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        launched.append(Platform(f"http://127.0.0.1:{port}", settings, runtime, port, http, ctx))
        return launched[-1]

    yield launch
    for p in launched:
        p.shutdown()
    kill_runs(tmp_path)


@pytest.fixture
def platform(platform_factory: Callable[..., Platform]) -> Platform:
    return platform_factory()
