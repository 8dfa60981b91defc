"""Shared fixtures. Every test that takes ``runtime`` (or anything built on it) runs twice: on
SQLite and on a real PostgreSQL server started for the session."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, Page, sync_playwright
from sqlalchemy import event, text
from sqlalchemy.orm import Session

from agora.app import create_app
from agora.bootstrap import bootstrap
from agora.db import Base
from agora.migrations import upgrade
from agora.runtime import Runtime
from agora.settings import Settings
from tests.helpers import Api
from tests.servers import kill_runs, postgres_server
from tests.slurm_cluster import SlurmCluster, slurm_cluster

ADMIN_PASSWORD = "admin-password-for-tests"
ADMIN_KEY = "agora_" + "T" * 43

os.environ.setdefault("PLAYWRIGHT_BROWSERS_PATH", "0")


@event.listens_for(Session, "before_flush")
def _reads_stay_reads(session: Session, _context: object, _instances: object) -> None:
    """A session opened for reading (``Database.session()`` without ``write=True``) must not
    write: on SQLite its transaction began deferred, and a write after another process's commit
    fails at once with "database is locked" (a 500 seen only under load). Checked in every test."""
    if session.info.get("write") is not False:
        return
    changed = list(session.new) + list(session.deleted)
    changed += [o for o in session.dirty if session.is_modified(o)]
    if changed:
        raise AssertionError(f"a read session was about to write {changed!r}")


@pytest.fixture(scope="session")
def cluster() -> Iterator[SlurmCluster]:
    """The single-node Slurm test cluster, started once for the whole run."""
    with slurm_cluster() as c:
        # A cluster that was already running (kept, or left by a killed run) may still hold an
        # earlier run's jobs: on a node of 2 CPUs they would starve this run's.
        c.cancel_all()
        yield c


@pytest.fixture(autouse=True)
def _no_slurm_jobs_left(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test that used the Slurm cluster, cancel whatever jobs it left (a deployment
    the platform was shut down with keeps its job, on purpose, so a restart can re-adopt it).
    Autouse, so it is torn down after the test's platforms have stopped."""
    yield
    if "cluster" in request.fixturenames:
        request.getfixturevalue("cluster").cancel_all()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'agora.db'}"
        return
    url = request.getfixturevalue("postgres_url")
    yield url
    # Leave an empty schema for the next test (faster than a new database each time).
    from sqlalchemy import create_engine

    engine = create_engine(url)
    with engine.begin() as conn:
        names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()


def make_settings(tmp_path: Path, database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": tmp_path / "data",
        "database_url": database_url,
        "secret_key": "s" * 48,
        "bootstrap_admin_password": ADMIN_PASSWORD,
        "bootstrap_admin_key": ADMIN_KEY,
        "public_url": "http://testserver",
        # Cheap hashes keep the suite fast; test_passwords checks the production cost.
        "password_hash_time_cost": 1,
        "password_hash_memory_kib": 1024,
        "password_hash_parallelism": 1,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path, database_url)


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = Runtime.create(settings)
    upgrade(rt.db)
    yield rt
    rt.db.dispose()
    kill_runs(settings.data_dir)


@pytest.fixture
def app(runtime: Runtime):  # type: ignore[no-untyped-def]
    application = create_app(runtime=runtime)
    bootstrap(runtime)
    return application


@pytest.fixture
def client(app) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    with TestClient(app) as c:
        yield c


@pytest.fixture
def api(client: TestClient) -> Api:
    """An API helper signed in with the bootstrap admin key."""
    return Api(client, ADMIN_KEY)


@pytest.fixture
def api_schema(app, client):  # type: ignore[no-untyped-def]
    import schemathesis

    return schemathesis.openapi.from_asgi("/api/v1/openapi.json", app)


CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, driven by Playwright (no browser download)."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: run 'make test-deps' (Debian's chromium package)")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            # Without the background-networking flags Chromium keeps calling out (no network).
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield chromium
        chromium.close()


@contextlib.contextmanager
def browser_tab(
    browser: Browser,
    base_url: str | None = None,
    timeout_ms: float = 20_000,
    width: int = 1280,
    permissions: list[str] | None = None,
    signed_in: bool = False,
    **options: object,
) -> Iterator[Page]:
    """A tab in a fresh browser context (no cookies; signed in as the bootstrap admin through
    the sign-in form with ``signed_in``), closed afterwards; ``options`` go to
    ``browser.new_context``."""
    context = browser.new_context(
        base_url=base_url,
        viewport={"width": width, "height": 900},
        **options,  # type: ignore[arg-type]
    )
    if permissions and base_url:
        context.grant_permissions(permissions, origin=base_url)
    tab = context.new_page()
    tab.set_default_timeout(timeout_ms)
    try:
        if signed_in:
            tab.goto("/login")
            tab.get_by_label("Username").fill("admin")
            tab.get_by_label("Password").fill(ADMIN_PASSWORD)
            tab.get_by_role("button", name="Sign in").click()
            tab.wait_for_url(f"{base_url}/")
        yield tab
    finally:
        context.close()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A throwaway redis-server for the session; a missing server fails the tests (CI installs it)."""
    from tests.redis_server import REDIS_SERVER, redis_server

    if not os.path.exists(REDIS_SERVER):
        pytest.fail(f"{REDIS_SERVER} is missing: run 'make test-deps' (Debian's redis-server)")
    with redis_server() as url:
        yield url
