"""A real OpenID provider (``oidc-provider-mock``, built on authlib) on loopback, an Agora app
that trusts it, and a browser that walks the authorization code flow through both."""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from agora.app import create_app
from agora.bootstrap import bootstrap
from agora.runtime import Runtime
from agora.settings import OIDCSettings
from tests.conftest import ADMIN_KEY, make_settings
from tests.helpers import Api

with warnings.catch_warnings():
    # The provider imports authlib modules deprecated since authlib 1.7 (authlib.jose, its httpx
    # integration); that is the test provider's business, not Agora's.
    import authlib.deprecate  # noqa: F401 - installs an "always" filter, to be overridden next

    warnings.simplefilter("ignore", DeprecationWarning)
    import oidc_provider_mock

#: The provider calls authlib's deprecated get_jwt_config while it issues ID tokens, in its own
#: thread; apply to every test module here as ``pytestmark = PROVIDER_WARNINGS``.
PROVIDER_WARNINGS = pytest.mark.filterwarnings(
    r"ignore:get_jwt_config\(self, grant\) is deprecated:DeprecationWarning"
)

CLIENT_ID = "agora-test"
CLIENT_SECRET = "agora-test-secret"  # noqa: S105 - the provider accepts any secret
CALLBACK = "http://testserver/auth/oidc/callback"


@contextlib.contextmanager
def provider_server() -> Iterator[str]:
    """A provider on a free loopback port, stopped on exit; yields its issuer URL."""
    with oidc_provider_mock.run_server_in_thread() as server:
        yield f"http://localhost:{server.server_port}"


@pytest.fixture(scope="session")
def provider() -> Iterator[str]:
    """The provider's issuer URL; any client id and secret are accepted."""
    with provider_server() as issuer:
        yield issuer


def oidc_settings(issuer: str, **overrides: Any) -> OIDCSettings:
    values: dict[str, Any] = {
        "issuer": issuer,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "roles_claim": "groups",
    }
    values.update(overrides)
    return OIDCSettings(**values)


@dataclass
class Browser:
    """Agora through Starlette's TestClient, the provider through httpx, cookies kept."""

    client: TestClient
    provider: str
    api: Api
    runtime: Runtime
    http: httpx.Client = dataclasses.field(default_factory=httpx.Client)

    def set_user(self, sub: str, claims: dict[str, Any]) -> None:
        r = self.http.put(f"{self.provider}/users/{sub}", json=claims)
        assert r.status_code == 204, r.text

    def start(self, next_path: str | None = None) -> str:
        """GET /auth/oidc/login; the provider's authorization URL it redirects to."""
        params = {"next": next_path} if next_path is not None else {}
        r = self.client.get("/auth/oidc/login", params=params, follow_redirects=False)
        assert r.status_code == 302, r.text
        return str(r.headers["location"])

    def authorize(self, url: str, sub: str) -> str:
        """Submit the provider's authorization form as ``sub``; the callback URL it returns."""
        form = self.http.get(url)
        assert form.status_code == 200, form.text
        r = self.http.post(url, data={"sub": sub})
        assert r.status_code == 302, r.text
        location = r.headers["location"]
        assert location.startswith(CALLBACK + "?"), location
        return location

    def callback(self, url: str) -> httpx.Response:
        response: httpx.Response = self.client.get(url, follow_redirects=False)
        return response

    def sign_in(
        self, sub: str, claims: dict[str, Any] | None = None, next_path: str | None = None
    ) -> httpx.Response:
        if claims is not None:
            self.set_user(sub, claims)
        return self.callback(self.authorize(self.start(next_path), sub))

    def me(self) -> dict[str, Any]:
        r = self.client.get("/api/v1/me")
        assert r.status_code == 200, r.text
        return dict(r.json())

    def roles(self) -> dict[str, str]:
        return {p["project"]: p["role"] for p in self.me()["projects"]}

    def sign_out(self) -> None:
        self.client.cookies.clear()


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


MakeBrowser = Callable[..., Browser]


@pytest.fixture
def make_browser(provider: str, tmp_path: Path, database_url: str) -> Iterator[MakeBrowser]:
    """Agora apps (SQLite or PostgreSQL) that trust the provider; OIDC settings overridable."""
    opened: list[Browser] = []

    def make(issuer: str | None = None, **oidc: Any) -> Browser:
        settings = make_settings(
            tmp_path / f"agora{len(opened)}",
            database_url,
            oidc=oidc_settings(issuer or provider, **oidc),
        )
        runtime = Runtime.create(settings)
        app = create_app(runtime=runtime)
        bootstrap(runtime)
        client = TestClient(app)
        client.__enter__()
        opened.append(Browser(client, provider, Api(client, ADMIN_KEY), runtime))
        return opened[-1]

    yield make
    for browser in opened:
        browser.client.__exit__(None, None, None)
        browser.http.close()
        browser.runtime.db.dispose()


@pytest.fixture
def browser(make_browser: MakeBrowser) -> Browser:
    return make_browser()
