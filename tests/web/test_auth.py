"""Signing in and out of the web UI, with and without TOTP, and restricted sessions."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from agora.app import create_app
from tests.conftest import ADMIN_PASSWORD, make_settings
from tests.helpers import PASSWORD, Api, totp_now
from tests.web.helpers import HTML, csrf, sign_in, submit, text_of


def test_password_login_opens_a_session_and_lands_on_the_dashboard(client: TestClient) -> None:
    r = sign_in(client, "admin", ADMIN_PASSWORD)
    assert r.headers["location"] == "/"
    cookie = r.headers["set-cookie"]
    assert "agora_session=" in cookie and "HttpOnly" in cookie and "samesite=lax" in cookie.lower()
    page = client.get("/", headers=HTML)
    assert page.status_code == 200
    assert "Dashboard" in page.text and "admin" in page.text


def test_wrong_password_shows_a_message_and_no_session(client: TestClient) -> None:
    r = submit(client, "/login", "/login", username="admin", password="wrong-password-here")
    assert r.status_code == 401
    assert "Wrong username or password" in text_of(r)
    assert 'value="admin"' in r.text  # the username stays filled in
    assert "agora_session" not in client.cookies


def test_anonymous_page_visit_redirects_to_login_and_back(client: TestClient) -> None:
    r = client.get("/projects/default/keys?x=1", headers=HTML, follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/login?next=%2Fprojects%2Fdefault%2Fkeys%3Fx%3D1"
    r = sign_in(client, "admin", ADMIN_PASSWORD, next="/projects/default/keys?x=1")
    assert r.headers["location"] == "/projects/default/keys?x=1"


def test_login_never_redirects_off_site(client: TestClient) -> None:
    for evil in ("https://evil.example/", "//evil.example", "/\\evil.example", "javascript:x"):
        r = sign_in(client, "admin", ADMIN_PASSWORD, next=evil)
        assert r.headers["location"] == "/", evil


def test_totp_account_signs_in_in_two_steps(api: Api, client: TestClient) -> None:
    token = api.user("carol")
    secret = api.as_(token).post("/me/totp/setup").json()["secret"]
    assert api.as_(token).post("/me/totp/enable", {"code": totp_now(secret)}).status_code == 204

    r = sign_in(client, "carol", PASSWORD)
    assert r.headers["location"].startswith("/login/totp")
    assert "agora_session" not in client.cookies
    assert PASSWORD not in str(client.cookies.values())  # only the username is kept, signed

    wrong = submit(client, "/login/totp", "/login/totp", code="000000")
    assert wrong.status_code == 401
    assert "TOTP code is wrong" in text_of(wrong)

    # The enrolment used this time step; a code of the next one is accepted and not a replay.
    r = submit(client, "/login/totp", "/login/totp", code=totp_now(secret, offset_steps=1))
    assert r.status_code == 303 and r.headers["location"] == "/"
    assert client.get("/account", headers=HTML).status_code == 200


def test_totp_step_without_the_password_step_starts_again(client: TestClient) -> None:
    r = client.get("/login/totp", headers=HTML, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"


def test_logout_ends_the_session(client: TestClient) -> None:
    sign_in(client, "admin", ADMIN_PASSWORD)
    old = client.cookies["agora_session"]
    r = submit(client, "/", "/logout")
    assert r.status_code == 303 and r.headers["location"] == "/login"
    client.cookies.set("agora_session", old)  # the old cookie no longer works
    r = client.get("/account", headers=HTML, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")


def test_one_time_password_session_must_change_it_first(api: Api, client: TestClient) -> None:
    created = api.post("/users", {"username": "dave"}).json()
    sign_in(client, "dave", created["one_time_password"])
    for path in ("/", "/projects", "/account", "/account/totp"):
        r = client.get(path, headers=HTML, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/account/password", path
    page = client.get("/account/password", headers=HTML)
    assert "one-time password" in page.text

    r = submit(
        client,
        "/account/password",
        "/account/password",
        current=created["one_time_password"],
        new="a-brand-new-password",
        confirm="a-brand-new-password",
    )
    assert r.status_code == 303 and r.headers["location"] == "/"
    assert client.get("/", headers=HTML).status_code == 200


def test_password_change_errors_are_shown_on_the_form(api: Api, client: TestClient) -> None:
    api.user("erin")
    sign_in(client, "erin", PASSWORD)
    r = submit(
        client, "/account/password", "/account/password", current=PASSWORD, new="x", confirm="y"
    )
    assert r.status_code == 422 and "differ" in text_of(r)
    r = submit(
        client, "/account/password", "/account/password", current=PASSWORD, new="x", confirm="x"
    )
    assert r.status_code == 422 and "at least 10 characters" in text_of(r)


def test_required_totp_sends_the_session_to_enrolment(api: Api, client: TestClient) -> None:
    api.user("frank")
    assert api.patch("/system/settings", {"require_totp": True}).status_code == 200
    sign_in(client, "frank", PASSWORD)
    r = client.get("/projects", headers=HTML, follow_redirects=False)
    assert r.headers["location"] == "/account/totp"

    page = submit(client, "/account/totp", "/account/totp/setup")
    assert page.status_code == 200
    secret = page.text.split('data-secret="')[1].split('"')[0]
    assert "<svg" in page.text  # the QR code, inline
    wrong = submit(client, "/account/totp", "/account/totp/confirm", code="123456")
    assert wrong.status_code == 422 and "does not match" in text_of(wrong)
    r = submit(client, "/account/totp", "/account/totp/confirm", code=totp_now(secret))
    assert r.status_code == 303
    assert client.get("/projects", headers=HTML).status_code == 200


def test_repeated_failures_are_throttled_with_a_message(client: TestClient) -> None:
    for _ in range(3):  # login_free_attempts
        r = submit(client, "/login", "/login", username="admin", password="wrong-password-x")
        assert r.status_code == 401
    r = submit(client, "/login", "/login", username="admin", password=ADMIN_PASSWORD)
    assert r.status_code == 429
    assert "Too many failed sign-ins; try again in" in text_of(r)


def test_sign_in_page_offers_single_sign_on_only_when_configured(
    client: TestClient, tmp_path: Path, database_url: str
) -> None:
    assert "/auth/oidc/login" not in client.get("/login").text
    settings = make_settings(
        tmp_path / "sso",
        database_url,
        oidc={"issuer": "https://id.example.org/", "client_id": "agora", "display_name": "EGI"},
    )
    with TestClient(create_app(settings)) as sso:
        page = sso.get("/login?next=/projects")
        assert 'href="/auth/oidc/login?next=%2Fprojects"' in page.text
        assert "Sign in with EGI" in text_of(page)


def test_stale_session_cookie_goes_back_to_login(client: TestClient) -> None:
    client.cookies.set("agora_session", "agoras_" + "x" * 43)
    r = client.get("/projects", headers=HTML, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=%2Fprojects"
    assert csrf(client, "/login")  # the login page itself renders
