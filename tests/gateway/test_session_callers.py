"""Gateway calls signed in by the browser's session cookie (the chat page, "Try it"): checked
in the database once, then answered from memory, and every change that ends or alters a
session applies on the very next request."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from agora.api.deps import csrf_token
from tests.conftest import ADMIN_PASSWORD
from tests.gateway.conftest import Gateway
from tests.helpers import PASSWORD

MSG = [{"role": "user", "content": "hello"}]


@pytest.fixture
def fake(gw: Gateway, upstreams: Callable[..., str]) -> str:
    url = upstreams("--name", "up1", "--words", "2")
    gw.external("chat-model", url, public=False)
    r = gw.api("POST", "/projects", json={"name": "other"})
    assert r.status_code == 201, r.text
    r = gw.api("PUT", "/models/chat-model/projects", json={"projects": ["default"]})
    assert r.status_code == 200, r.text
    return url


def sign_in(gw: Gateway, username: str = "admin", password: str = ADMIN_PASSWORD) -> str:
    r = gw.platform.http.post(
        "/api/v1/auth/login", json={"username": username, "password": password}
    )
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


def chat(
    gw: Gateway,
    token: str,
    csrf: bool = True,
    project: str | None = None,
    origin: str | None = None,
    referer: str | None = None,
) -> httpx.Response:
    sent = {"Cookie": f"agora_session={token}"}
    if origin is not None:
        sent["Origin"] = origin
    if referer is not None:
        sent["Referer"] = referer
    if project is not None:
        sent["X-Agora-Project"] = project
    if csrf:
        sent["X-CSRF-Token"] = csrf_token(gw.platform.runtime, token)
    return httpx.post(
        gw.url + "/chat/completions",
        json={"model": "chat-model", "messages": MSG},
        headers=sent,
        timeout=10,
    )


@contextmanager
def session_reads(gw: Gateway) -> Iterator[list[str]]:
    """The statements that read sign-in sessions while the block runs."""
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        text = statement.lower()
        if text.lstrip().startswith("select") and "auth_sessions" in text:
            seen.append(statement)

    engine = gw.platform.runtime.db.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


def test_a_session_is_read_from_the_database_once(gw: Gateway, fake: str) -> None:
    token = sign_in(gw)
    with session_reads(gw) as first:
        r = chat(gw, token)
        assert r.status_code == 200, r.text
    assert first, "the first request checks the session in the database"
    with session_reads(gw) as later:
        for _ in range(5):
            r = chat(gw, token)
            assert r.status_code == 200, r.text
            assert r.json()["choices"][0]["message"]["content"] == "up1 w0 w1"
        models = httpx.get(
            gw.url + "/models", headers={"Cookie": f"agora_session={token}"}, timeout=10
        )
    assert models.status_code == 200 and [m["id"] for m in models.json()["data"]] == ["chat-model"]
    assert later == [], "later requests of the same session are answered from memory"
    # The CSRF check still runs on every request, cached or not: the header, or the browser's
    # Origin naming the platform itself with a Referer on a served module's page (a page
    # elsewhere, "null", or a deployment's page on the same origin does not pass).
    r = chat(gw, token, csrf=False)
    assert r.status_code == 403 and r.json()["error"]["code"] == "csrf"
    own = gw.platform.settings.public_url or ""
    module_page = own + "/m/iris/ui"
    assert chat(gw, token, csrf=False, origin=own, referer=module_page).status_code == 200
    for origin in (
        "https://evil.example",
        "null",
        own + ".evil.example",
        own.replace("http", "https"),
    ):
        r = chat(gw, token, csrf=False, origin=origin, referer=module_page)
        assert r.status_code == 403 and r.json()["error"]["code"] == "csrf", origin
    for referer in (
        None,
        own + "/d/abc/tree",
        own + "/chat",
        own + "/m/../d/abc/",
        "https://evil.example/m/x",
    ):
        r = chat(gw, token, csrf=False, origin=own, referer=referer)
        assert r.status_code == 403 and r.json()["error"]["code"] == "csrf", referer
    # A cookie that names no session is refused (and never cached).
    r = chat(gw, "agoras_" + "x" * 43)
    assert r.status_code == 401


def test_signing_out_ends_gateway_access_on_the_next_request(gw: Gateway, fake: str) -> None:
    token = sign_in(gw)
    assert chat(gw, token).status_code == 200
    assert chat(gw, token).status_code == 200  # now cached
    r = gw.platform.http.post("/api/v1/auth/logout", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 204, r.text
    r = chat(gw, token)
    assert r.status_code == 401, r.text


def test_a_password_change_ends_other_sessions_at_once(gw: Gateway, fake: str) -> None:
    browser, other = sign_in(gw), sign_in(gw)
    assert chat(gw, browser).status_code == 200
    assert chat(gw, browser).status_code == 200
    r = gw.platform.http.post(
        "/api/v1/me/password",
        headers={"Authorization": f"Bearer {other}"},
        json={"current_password": ADMIN_PASSWORD, "new_password": ADMIN_PASSWORD + "-new"},
    )
    assert r.status_code == 204, r.text
    assert chat(gw, browser).status_code == 401
    assert chat(gw, other).status_code == 200  # the session that changed it stays signed in


def test_switching_project_applies_on_the_next_request(gw: Gateway, fake: str) -> None:
    token = sign_in(gw)
    assert chat(gw, token).status_code == 200  # "default" is granted the model
    assert chat(gw, token).status_code == 200
    r = gw.platform.http.post(
        "/switch-project",
        data={"project": "other", "csrf_token": csrf_token(gw.platform.runtime, token)},
        headers={"Cookie": f"agora_session={token}", "Accept": "text/html"},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    r = chat(gw, token)
    assert r.status_code == 403 and r.json()["error"]["code"] == "model_not_allowed", r.text
    # The project header still picks a project per request, cached separately.
    assert chat(gw, token, project="default").status_code == 200
    assert chat(gw, token, project="other").status_code == 403


def test_disabling_the_user_applies_on_the_next_request(gw: Gateway, fake: str) -> None:
    r = gw.api("POST", "/users", json={"username": "bob", "password": PASSWORD})
    assert r.status_code == 201, r.text
    r = gw.api("POST", "/projects/default/members", json={"username": "bob", "role": "member"})
    assert r.status_code == 201, r.text
    token = sign_in(gw, "bob", PASSWORD)
    assert chat(gw, token).status_code == 200
    assert chat(gw, token).status_code == 200
    r = gw.api("PATCH", "/users/bob", json={"disabled": True})
    assert r.status_code == 200, r.text
    assert chat(gw, token).status_code == 401


#: What a request would read to check its caller, route and limit it.
REQUEST_TABLES = (
    "api_keys",
    "users",
    "memberships",
    "projects",
    "gateway_models",
    "model_grants",
    "rate_limits",
    "deployments",
    "auth_sessions",
)


def test_keyed_requests_make_no_database_call(
    gateway_factory: Callable[..., Gateway], upstreams: Callable[..., str]
) -> None:
    """Keys, routes and limits come from the gateway's memory; only the background writes
    (usage records, last uses) and the version poll reach the database. (No orchestrator
    here: its autoscaler reads models and deployments on its own schedule.)"""
    gw = gateway_factory(orchestrator=False)
    gw.external("chat-model", upstreams())
    _, key = gw.key()
    headers = {"Authorization": f"Bearer {key}"}
    r = httpx.get(gw.url + "/models", headers=headers)  # the key is known from here on
    assert r.status_code == 200, r.text
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(" ".join(statement.lower().split()))

    engine = gw.platform.runtime.db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        with httpx.Client(base_url=gw.url, headers=headers, timeout=10) as http:
            for i in range(30):
                body = {"model": "chat-model", "messages": MSG, "stream": i % 2 == 1}
                assert http.post("/chat/completions", json=body).status_code == 200
                assert http.get("/models").status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", record)
    reads = [s for s in seen if s.startswith("select") and any(t in s for t in REQUEST_TABLES)]
    assert reads == [], reads
