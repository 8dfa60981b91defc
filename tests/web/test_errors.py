"""Errors reach browsers as pages, and API clients as problem+json, as before."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import ADMIN_PASSWORD
from tests.web.helpers import HTML, sign_in, text_of


def test_unknown_page_is_a_friendly_404(client: TestClient) -> None:
    r = client.get("/no/such/page", headers=HTML)
    assert r.status_code == 404
    assert "text/html" in r.headers["content-type"]
    assert "There is no page at /no/such/page" in text_of(r)


def test_api_errors_stay_problem_json_even_for_browsers(client: TestClient) -> None:
    r = client.get("/api/v1/nope", headers=HTML)
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    r = client.get("/api/v1/me", headers=HTML)
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"


def test_non_browser_clients_get_problem_json_off_the_pages(client: TestClient) -> None:
    r = client.get("/no/such/page", headers={"Accept": "application/json"})
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"


def test_bad_path_parameter_is_a_404_page(client: TestClient) -> None:
    sign_in(client, "admin", ADMIN_PASSWORD)
    r = client.get("/projects/" + "x" * 65, headers=HTML)
    assert r.status_code == 404
    assert "There is no page at" in text_of(r)


def test_pages_carry_security_headers(client: TestClient) -> None:
    r = client.get("/login")
    assert r.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert client.get("/static/agora.css").status_code == 200
