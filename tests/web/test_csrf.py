"""Every state-changing form needs the CSRF token bound to the browser's cookie."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import ADMIN_PASSWORD
from tests.helpers import Api
from tests.web.helpers import HTML, csrf, sign_in, text_of


def test_form_without_csrf_token_is_refused_and_changes_nothing(
    api: Api, client: TestClient
) -> None:
    sign_in(client, "admin", ADMIN_PASSWORD)
    r = client.post("/projects", data={"name": "sneaky"}, headers=HTML, follow_redirects=False)
    assert r.status_code == 403
    assert "CSRF check failed" in text_of(r)
    assert "text/html" in r.headers["content-type"]
    assert api.get("/projects/sneaky").status_code == 404


def test_token_of_another_session_is_refused(api: Api, client: TestClient) -> None:
    sign_in(client, "admin", ADMIN_PASSWORD)
    other = csrf(client, "/projects")
    sign_in(client, "admin", ADMIN_PASSWORD)  # a new session, a new binding
    r = client.post("/projects", data={"name": "sneaky", "csrf_token": other}, headers=HTML)
    assert r.status_code == 403
    assert api.get("/projects/sneaky").status_code == 404


def test_login_form_needs_its_pre_session_token(client: TestClient) -> None:
    r = client.post("/login", data={"username": "admin", "password": ADMIN_PASSWORD}, headers=HTML)
    assert r.status_code == 403
    assert "agora_session" not in client.cookies


def test_logout_without_token_keeps_the_session(client: TestClient) -> None:
    sign_in(client, "admin", ADMIN_PASSWORD)
    r = client.post("/logout", headers=HTML, follow_redirects=False)
    assert r.status_code == 403
    assert client.get("/account", headers=HTML, follow_redirects=False).status_code == 200


def test_pre_session_cookie_is_http_only_and_lax(client: TestClient) -> None:
    client.cookies.clear()
    cookie = client.get("/login").headers["set-cookie"]
    assert cookie.startswith("agora_csrf=")
    assert "HttpOnly" in cookie and "samesite=lax" in cookie.lower()
