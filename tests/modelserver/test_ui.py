"""Swagger UI at ``/ui`` (and DEEPaaS's ``/api``): swagger-ui-dist's files from static/vendor/,
only relative URLs, so that the page also works through the platform under ``/m/<model>/``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, Route, expect
from starlette.testclient import TestClient

from agora.modelserver.app import ServerConfig, create_app
from agora.web import swagger_ui
from tests.conftest import browser_tab
from tests.modelserver.servers import Server, launch_agora, running
from tests.modelserver.swagger import PREDICT, try_predict

TOKEN = "service-token-for-tests"
FILES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "swagger-init.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}


@pytest.fixture(scope="module", autouse=True)
def vendor_files() -> None:
    problem = swagger_ui.not_installed(swagger_ui.VENDOR_DIR)
    if problem is not None:
        pytest.fail(problem)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    tmp = tmp_path_factory.mktemp("ui")
    with running(
        launch_agora("--module", "iris", state_dir=tmp / "open"),
        launch_agora(
            "--module", "iris", state_dir=tmp / "guarded", env={"AGORA_SERVICE_TOKEN": TOKEN}
        ),
    ) as (open_, guarded):
        yield {"open": open_, "guarded": guarded}


@pytest.fixture(scope="module")
def server(servers: dict[str, Server]) -> Server:
    return servers["open"]


def assert_problem(r: httpx.Response, status: int, *words: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    for word in words:
        assert word in r.json()["detail"], r.json()


def test_ui_and_api_pages_name_only_relative_urls(server: Server) -> None:
    for path in ("/ui", "/api"):
        r = httpx.get(server.url + path)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "text/html; charset=utf-8"
        assert "script-src" not in r.headers["content-security-policy"]  # 'self' only
        assert 'data-spec="swagger.json"' in r.text
        assert 'src="ui/swagger-ui-bundle.js"' in r.text
        assert 'href="ui/swagger-ui.css"' in r.text
        urls = re.findall(r'(?:src|href|data-spec)="([^"]*)"', r.text)
        assert len(urls) == 5 and not [u for u in urls if u.startswith("/") or ":" in u]


def test_ui_files_are_served_with_their_types(server: Server) -> None:
    for name, media_type in FILES.items():
        r = httpx.get(f"{server.url}/ui/{name}")
        assert r.status_code == 200, name
        assert r.headers["content-type"] == media_type
        assert r.content
    bundle = httpx.get(f"{server.url}/ui/swagger-ui-bundle.js").content
    assert bundle == (swagger_ui.VENDOR_DIR / "swagger-ui-bundle.js").read_bytes()


@pytest.mark.parametrize(
    "path",
    [
        "/ui/index.html",
        "/ui/swagger-ui-bundle.js.map",
        "/ui/..%2Fapp.py",
        "/ui/..%2F..%2F..%2Fpyproject.toml",
        "/ui/%2e%2e",
        "/ui/.stamp",
    ],
)
def test_only_the_listed_files_are_served(server: Server, path: str) -> None:
    assert_problem(httpx.get(server.url + path), 404)


def test_ui_with_a_slash_redirects_relatively(server: Server) -> None:
    r = httpx.get(f"{server.url}/ui/")
    assert r.status_code == 308
    assert r.headers["location"] == "../ui"


def test_versions_link_to_the_ui_as_deepaas_does(server: Server) -> None:
    links = httpx.get(f"{server.url}/", headers={"X-Forwarded-Prefix": "/m/iris"}).json()["links"]
    assert links == [
        {"rel": "help", "type": "text/html", "href": "/m/iris/api"},
        {"rel": "describedby", "type": "application/json", "href": "/m/iris/swagger.json"},
    ]


def test_the_service_token_guards_the_ui_too(servers: dict[str, Server]) -> None:
    url = servers["guarded"].url
    for path in ("/ui", "/api", "/ui/swagger-ui.css"):
        assert_problem(httpx.get(url + path), 401, "service token")
        r = httpx.get(url + path, headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200, r.text


def test_without_the_vendor_files_the_ui_says_how_to_install_them(tmp_path: Path) -> None:
    app = create_app([], ServerConfig(state_dir=tmp_path / "state", swagger_ui_dir=tmp_path))
    client = TestClient(app)  # no lifespan: no workers are needed for these pages
    for path in ("/ui", "/api", "/ui/swagger-ui-bundle.js", "/ui/swagger-ui.css"):
        r = client.get(path)
        assert_problem(r, 404, "scripts/web-assets.sh", "swagger-ui-bundle.js", str(tmp_path))
    assert client.get("/ui/swagger-init.js").status_code == 404


# In Chromium: the page renders the operations and "Try it out" predicts, at the server's root
# and under a proxy's prefix; no request goes anywhere but to the server.


@pytest.fixture
def page(browser: Browser, server: Server) -> Iterator[Page]:
    with browser_tab(browser, None, 15_000) as tab:
        yield tab


def _record(page: Page) -> tuple[list[str], list[str]]:
    requests: list[str] = []
    problems: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    return requests, problems


def test_swagger_ui_renders_and_predicts_at_the_root(page: Page, server: Server) -> None:
    requests, problems = _record(page)
    page.goto(f"{server.url}/ui")
    expect(page.locator(f'.opblock-summary-path[data-path="{PREDICT}"]')).to_be_visible()
    expect(page.locator(".info .title")).to_contain_text("Agora model server")
    assert try_predict(page)["species"] == "setosa"
    assert requests and not [u for u in requests if not u.startswith(server.url + "/")]
    assert f"{server.url}{PREDICT}" in requests
    assert problems == []


def test_swagger_ui_works_under_a_proxy_prefix(page: Page, server: Server) -> None:
    """The platform's gateway, played by the browser: ``/m/iris/…`` goes to the server without
    the prefix, which comes as ``X-Forwarded-Prefix`` (as agora.gateway.modules sends it)."""
    front = "http://127.0.0.1:9/m/iris"  # nothing listens: every request must be routed here

    def proxy(route: Route) -> None:
        rest = route.request.url[len(front) :]
        headers = {**route.request.headers, "x-forwarded-prefix": "/m/iris"}
        route.fulfill(response=route.fetch(url=server.url + rest, headers=headers))

    page.route(f"{front}/**", proxy)
    requests, problems = _record(page)
    page.goto(f"{front}/ui")
    expect(page.locator(f'.opblock-summary-path[data-path="{PREDICT}"]')).to_be_visible()
    assert try_predict(page)["species"] == "setosa"
    assert not [u for u in requests if not u.startswith(front + "/")], requests
    assert f"{front}{PREDICT}" in requests
    assert f"{front}/ui/swagger-ui-bundle.js" in requests
    assert problems == []
