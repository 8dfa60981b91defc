"""The REST API's Swagger UI at /api/docs: swagger-ui-dist from static/vendor/, no CDN, no inline
script (the page keeps the web pages' Content-Security-Policy)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, Page, expect

from agora.web import swagger_ui
from tests.conftest import browser_tab
from tests.web.conftest import LiveServer

SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture(scope="module", autouse=True)
def vendor_files() -> None:
    problem = swagger_ui.not_installed(swagger_ui.VENDOR_DIR)
    if problem is not None:
        pytest.fail(problem)


@SQLITE
def test_docs_page_loads_only_local_files(client: TestClient) -> None:
    r = client.get("/api/docs")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["content-security-policy"].startswith("default-src 'self';")
    assert "<script>" not in r.text
    urls = re.findall(r'(?:src|href|data-spec)="([^"]*)"', r.text)
    assert sorted(urls) == [
        "/api/v1/openapi.json",
        "/static/favicon.svg",
        "/static/swagger-init.js",
        "/static/vendor/swagger-ui-bundle.js",
        "/static/vendor/swagger-ui.css",
    ]
    for url in urls:
        assert client.get(url).status_code == 200, url


@SQLITE
def test_docs_page_without_the_vendor_files_says_how_to_install_them(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(swagger_ui, "VENDOR_DIR", tmp_path)
    r = client.get("/api/docs", headers={"Accept": "text/html"})
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    assert "scripts/web-assets.sh" in r.json()["detail"]


@pytest.fixture
def page(browser: Browser, live_server: LiveServer) -> Iterator[Page]:
    with browser_tab(browser, live_server.url, 15_000) as tab:
        yield tab


@SQLITE
def test_docs_page_renders_the_operations_from_this_server_only(
    page: Page, live_server: LiveServer
) -> None:
    requests: list[str] = []
    problems: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.goto("/api/docs")
    health = page.locator('.opblock-summary-path[data-path="/api/v1/health"]')
    expect(health).to_be_visible()
    expect(page.locator(".info .title")).to_contain_text("Agora")
    health.click()
    page.get_by_role("button", name="Try it out").click()
    page.get_by_role("button", name="Execute").click()
    answer = page.locator(".live-responses-table tbody .response")
    expect(answer.locator(".response-col_status")).to_have_text("200")
    expect(answer.locator("pre").first).to_contain_text('"status": "ok"')
    assert f"{live_server.url}/api/v1/openapi.json" in requests
    assert f"{live_server.url}/api/v1/health" in requests
    assert not [u for u in requests if not u.startswith(live_server.url + "/")], requests
    assert problems == []  # a Content-Security-Policy refusal is logged as an error
