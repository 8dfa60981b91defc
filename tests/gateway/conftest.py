"""A live Agora with its gateway, fake OpenAI upstreams, and helpers to drive them."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
from sqlalchemy import select

from agora.models import UsageRecord
from tests.conftest import ADMIN_KEY, ADMIN_PASSWORD
from tests.deployments.conftest import Platform, platform_factory  # noqa: F401 - fixture
from tests.servers import free_port, wait_for_port

HERE = Path(__file__).parent
FAKE = str(HERE / "fake_upstream.py")
UPSTREAM_KEY = "sk-upstream-test-key"


@dataclass
class Gateway:
    platform: Platform
    _session: str | None = None
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.platform.url + "/v1"

    def api(self, method: str, path: str, token: str = ADMIN_KEY, **kw: Any) -> Any:
        return self.platform.api(method, path, token, **kw)

    def session(self) -> str:
        if self._session is None:
            r = self.platform.http.post(
                "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
            )
            assert r.status_code == 200, r.text
            self._session = r.json()["token"]
        return self._session

    def add_model(self, **spec: Any) -> dict:
        spec.setdefault("public", True)
        r = self.api("POST", "/models", json=spec)
        assert r.status_code == 201, r.text
        return dict(r.json())

    def external(self, name: str, upstream_url: str, **spec: Any) -> dict:
        return self.add_model(
            name=name,
            source="external",
            external_url=upstream_url,
            external_key=UPSTREAM_KEY,
            upstream_model=spec.pop("upstream_model", "fake"),
            **spec,
        )

    def key(
        self, project: str = "default", scopes: tuple[str, ...] = ("inference",), name: str = "k"
    ) -> tuple[int, str]:
        r = self.api(
            "POST",
            f"/projects/{project}/keys",
            self.session(),
            json={"name": name, "scopes": list(scopes)},
        )
        assert r.status_code == 201, r.text
        return r.json()["id"], r.json()["secret"]

    def client(self, key: str, **kw: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url, api_key=key, max_retries=0, **kw)

    def usage(self, **params: Any) -> list[dict]:
        r = self.api("GET", "/usage", params={"bucket_minutes": 1, **params})
        assert r.status_code == 200, r.text
        return list(r.json())

    def wait_usage(self, requests: int, timeout: float = 10, **params: Any) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            rows = self.usage(**params)
            if sum(r["requests"] for r in rows) >= requests or time.monotonic() > deadline:
                return rows
            time.sleep(0.1)

    def usage_statuses(self, until: int, timeout: float = 10) -> list[int]:
        """The status of every usage record, once one with ``until`` is written (or time is
        up): usage is written in batches, off the request path."""
        deadline = time.monotonic() + timeout
        statuses: list[int] = []
        while time.monotonic() < deadline and until not in statuses:
            time.sleep(0.2)
            with self.platform.runtime.db.session() as db:
                statuses = list(db.scalars(select(UsageRecord.status)))
        return statuses


@pytest.fixture
def upstreams() -> Iterator[Callable[..., str]]:
    """Start fake upstream processes; each call returns its OpenAI base URL."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str, key: str = UPSTREAM_KEY) -> str:
        port = free_port()
        proc = subprocess.Popen(  # noqa: S603
            [sys.executable, FAKE, "--port", str(port), "--key", key, *args],
        )
        procs.append(proc)
        wait_for_port("127.0.0.1", port)
        return f"http://127.0.0.1:{port}/v1"

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


@pytest.fixture
def gateway_factory(platform_factory: Callable[..., Platform]) -> Callable[..., Gateway]:  # noqa: F811
    def make(**overrides: Any) -> Gateway:
        overrides.setdefault("template_dirs", [HERE / "templates"])
        overrides.setdefault("gateway_load_report_seconds", 0.2)
        overrides.setdefault("gateway_health_interval", 0.5)
        overrides.setdefault("gateway_eject_seconds", 2)
        return Gateway(platform_factory(**overrides))

    return make


@pytest.fixture
def gw(gateway_factory: Callable[..., Gateway]) -> Gateway:
    return gateway_factory()


@contextlib.contextmanager
def standalone_gateway(gw: Gateway, *args: str, **env: str) -> Iterator[str]:
    """``agora gateway`` (with ``args``) in a process of its own on ``gw``'s database, with
    extra ``AGORA_*`` settings (``redis_url="…"`` → ``AGORA_REDIS_URL``); yields its base URL
    once it listens, and ends it afterwards."""
    port = free_port()
    settings = gw.platform.settings
    environment = {
        "AGORA_DATA_DIR": str(settings.data_dir),
        "AGORA_DATABASE_URL": str(settings.database_url),
        "AGORA_SECRET_KEY": settings.secret_key.get_secret_value() if settings.secret_key else "",
        "AGORA_PORT": str(port),
        "AGORA_LOG_LEVEL": "warning",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        **{f"AGORA_{name.upper()}": value for name, value in env.items()},
    }
    command = [sys.executable, "-m", "agora.cli.main", "gateway", *args]
    proc = subprocess.Popen(command, env=environment)  # noqa: S603
    try:
        wait_for_port("127.0.0.1", port, timeout=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
