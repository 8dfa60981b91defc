"""The authorization code flow end to end: Agora ⇄ a real OpenID provider on loopback."""

from __future__ import annotations

import json
import time

import pytest
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from sqlalchemy import func, select

from agora.models import AuditEntry, AuthSession
from agora.runtime import Runtime
from tests.oidc.conftest import (
    CALLBACK,
    CLIENT_ID,
    PROVIDER_WARNINGS,
    Browser,
    MakeBrowser,
    provider_server,
    query,
)
from tests.servers import free_port

pytestmark = PROVIDER_WARNINGS


def audit_of(runtime: Runtime, action: str) -> list[AuditEntry]:
    with runtime.db.session() as db:
        return list(
            db.scalars(
                select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.seq)
            )
        )


def sessions(runtime: Runtime) -> int:
    with runtime.db.session() as db:
        return int(db.scalar(select(func.count()).select_from(AuthSession)) or 0)


def test_sign_in_creates_account_with_project_roles_from_claims(browser: Browser) -> None:
    browser.set_user(
        "kc-alice",
        {
            "preferred_username": "alice",
            "email": "alice@example.org",
            "name": "Alice Liddell",
            "groups": ["/biomed/owner", "/physics/member", "/unrelated", "/chem/viewer"],
        },
    )
    authorize_url = browser.start()
    params = query(authorize_url)
    assert authorize_url.startswith(f"{browser.provider}/oauth2/authorize?")
    assert params["response_type"] == "code"
    assert params["client_id"] == CLIENT_ID
    assert params["redirect_uri"] == CALLBACK
    assert params["code_challenge_method"] == "S256"
    assert len(params["code_challenge"]) == 43
    assert params["state"] and params["nonce"]
    assert set(params["scope"].split()) == {"openid", "profile", "email"}
    state_cookie = next(c for c in browser.client.cookies.jar if c.name == "agora_oidc")
    assert state_cookie.path == "/auth/oidc"
    assert params["state"] not in state_cookie.value and params["nonce"] not in state_cookie.value
    pending = json.loads(browser.runtime.keyring.decrypt(str(state_cookie.value)))
    assert (pending["state"], pending["nonce"]) == (params["state"], params["nonce"])
    assert create_s256_code_challenge(pending["verifier"]) == params["code_challenge"]

    r = browser.callback(browser.authorize(authorize_url, "kc-alice"))

    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/"
    assert "agora_session" in r.cookies
    me = browser.me()
    assert me["user"]["username"] == "alice"
    assert me["user"]["email"] == "alice@example.org"
    assert me["user"]["display_name"] == "Alice Liddell"
    assert me["user"]["sso"] is True
    assert me["via"] == "session"
    assert browser.roles() == {"biomed": "owner", "physics": "member", "chem": "viewer"}
    created = audit_of(browser.runtime, "user.create")[-1]
    assert created.target == "user:alice" and created.details["source"] == "oidc"
    login = audit_of(browser.runtime, "auth.login")[-1]
    assert login.outcome == "success" and login.details["method"] == "oidc"
    assert {e.project for e in audit_of(browser.runtime, "member.add")} == {
        "biomed",
        "physics",
        "chem",
    }


def test_second_sign_in_finds_the_same_account(browser: Browser) -> None:
    browser.sign_in("kc-bob", {"preferred_username": "bob"})
    browser.sign_out()
    r = browser.sign_in("kc-bob", {"preferred_username": "bob", "name": "Bob B."})
    assert r.status_code == 303
    assert browser.me()["user"]["username"] == "bob"
    assert browser.me()["user"]["display_name"] == "Bob B."
    assert len(audit_of(browser.runtime, "user.create")) == 2  # bootstrap admin and bob


@pytest.mark.parametrize(
    ("next_path", "lands_on"),
    [
        ("/projects/biomed?tab=keys", "/projects/biomed?tab=keys"),
        ("https://evil.example/", "/"),
        ("//evil.example/x", "/"),
        ("/\\evil.example", "/"),
        ("javascript:alert(1)", "/"),
    ],
)
def test_returns_to_local_next_path_only(browser: Browser, next_path: str, lands_on: str) -> None:
    r = browser.sign_in("kc-next", {"preferred_username": "nextuser"}, next_path=next_path)
    assert r.status_code == 303, r.text
    assert r.headers["location"] == lands_on


def test_tampered_state_is_refused_without_session(browser: Browser) -> None:
    browser.set_user("kc-mallory", {"preferred_username": "mallory"})
    url = browser.authorize(browser.start(), "kc-mallory")
    r = browser.callback(url.replace("state=", "state=x"))
    assert r.status_code == 400
    assert "text/html" in r.headers["content-type"]
    assert "start again" in r.text.lower()
    assert "agora_session" not in browser.client.cookies
    assert sessions(browser.runtime) == 0
    failure = audit_of(browser.runtime, "auth.login")[-1]
    assert failure.outcome == "failure"
    assert failure.details == {"method": "oidc", "reason": "state mismatch"}


def test_callback_without_login_cookie_is_refused(browser: Browser) -> None:
    browser.set_user("kc-carol", {"preferred_username": "carol"})
    url = browser.authorize(browser.start(), "kc-carol")
    browser.client.cookies.clear()  # another browser, or cookies blocked
    r = browser.callback(url)
    assert r.status_code == 400
    assert sessions(browser.runtime) == 0
    assert audit_of(browser.runtime, "auth.login")[-1].details["reason"] == "no state cookie"


@pytest.mark.parametrize("forge", ["garbage", "expired"])
def test_forged_or_expired_login_cookie_is_refused(browser: Browser, forge: str) -> None:
    browser.set_user("kc-olga", {"preferred_username": "olga"})
    url = browser.authorize(browser.start(), "kc-olga")
    state = query(url)["state"]
    payload = {"state": state, "nonce": "n", "verifier": "v", "next": "/", "exp": time.time() - 1}
    value = (
        "garbage" if forge == "garbage" else browser.runtime.keyring.encrypt(json.dumps(payload))
    )
    browser.client.cookies.clear()
    browser.client.cookies.set("agora_oidc", value, domain="testserver.local", path="/auth/oidc")
    r = browser.callback(url)
    assert r.status_code == 400
    assert "start again" in r.text
    assert sessions(browser.runtime) == 0
    reason = audit_of(browser.runtime, "auth.login")[-1].details["reason"]
    assert (
        reason == {"garbage": "unreadable state cookie", "expired": "expired state cookie"}[forge]
    )


def test_replayed_callback_is_refused(browser: Browser) -> None:
    browser.set_user("kc-dave", {"preferred_username": "dave"})
    url = browser.authorize(browser.start(), "kc-dave")
    state_cookie = browser.client.cookies["agora_oidc"]
    assert browser.callback(url).status_code == 303
    # An attacker who captured both the callback URL and the login cookie tries again.
    attacker = browser.client
    attacker.cookies.clear()
    attacker.cookies.set("agora_oidc", state_cookie, domain="testserver.local", path="/auth/oidc")
    r = browser.callback(url)
    assert r.status_code == 400, r.text
    assert "agora_session" not in r.cookies
    assert sessions(browser.runtime) == 1
    assert (
        audit_of(browser.runtime, "auth.login")[-1]
        .details["reason"]
        .startswith("token exchange refused")
    )


def test_code_of_another_login_fails_the_nonce_check(browser: Browser) -> None:
    """Code injection: a code issued for one login, delivered into another (PKCE aside)."""
    browser.set_user("kc-erin", {"preferred_username": "erin"})
    first = browser.start()
    victim_callback = browser.authorize(first, "kc-erin")
    second = browser.start()  # the browser's login cookie now belongs to this login
    forged = victim_callback.replace(query(first)["state"], query(second)["state"])
    r = browser.callback(forged)
    assert r.status_code == 400
    assert "could not be verified" in r.text
    assert sessions(browser.runtime) == 0
    reason = audit_of(browser.runtime, "auth.login")[-1].details["reason"]
    assert reason.startswith("invalid ID token") and "nonce" in reason


def test_denied_at_the_provider_shows_a_page(browser: Browser) -> None:
    url = browser.start()
    r = browser.http.post(url, data={"action": "deny"})
    assert r.status_code == 302
    page = browser.callback(r.headers["location"])
    assert page.status_code == 403
    assert "did not sign you in" in page.text
    assert audit_of(browser.runtime, "auth.login")[-1].details["reason"] == (
        "provider error: access_denied"
    )


def test_provider_words_are_shown_only_for_this_browsers_login(browser: Browser) -> None:
    state = query(browser.start())["state"]
    said = "Your+account+needs+a+second+factor"
    bound = browser.callback(
        f"{CALLBACK}?error=login_required&error_description={said}&state={state}"
    )
    assert bound.status_code == 400
    assert "Your account needs a second factor" in bound.text
    browser.start()
    crafted = browser.callback(f"{CALLBACK}?error=access_denied&error_description=Call+555-0100")
    assert crafted.status_code == 403
    assert "555" not in crafted.text and "(access_denied)" in crafted.text
    odd = browser.callback(f"{CALLBACK}?error=%3Cscript%3E")
    assert "<script>" not in odd.text and "(unknown_error)" in odd.text


def test_unreachable_provider_answers_503(make_browser: MakeBrowser) -> None:
    browser = make_browser(issuer=f"http://127.0.0.1:{free_port()}")
    r = browser.client.get("/auth/oidc/login", follow_redirects=False)
    assert r.status_code == 503
    assert "cannot be reached" in r.text


def test_provider_gone_before_the_callback_answers_503(make_browser: MakeBrowser) -> None:
    with provider_server() as issuer:
        browser = make_browser(issuer=issuer)
        browser.provider = issuer
        browser.set_user("kc-paul", {"preferred_username": "paul"})
        url = browser.authorize(browser.start(), "kc-paul")
    r = browser.callback(url)
    assert r.status_code == 503
    assert "cannot be reached" in r.text
    assert (
        audit_of(browser.runtime, "auth.login")[-1]
        .details["reason"]
        .startswith("provider unreachable (token endpoint): ConnectError")
    )


def test_provider_without_discovery_answers_502(make_browser: MakeBrowser, provider: str) -> None:
    browser = make_browser(issuer=f"{provider}/realms/missing")
    r = browser.client.get("/auth/oidc/login", follow_redirects=False)
    assert r.status_code == 502
    assert "cannot use" in r.text


def test_routes_are_absent_without_oidc_settings(client) -> None:  # type: ignore[no-untyped-def]
    assert client.get("/auth/oidc/login", follow_redirects=False).status_code == 404
