"""The access proxy (/d/{id}/…) end to end: a real service behind a running control plane."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from agora.deployments import proxy_http
from agora.models import Deployment
from tests.conftest import ADMIN_KEY, ADMIN_PASSWORD
from tests.deployments.conftest import Platform
from tests.servers import free_port

#: The service behind the proxy: a raw ASGI app under uvicorn that shows what it received.
ECHO_SERVICE = r"""
import asyncio, json, sys
import uvicorn


async def app(scope, receive, send):
    headers = {k.decode(): v.decode() for k, v in scope["headers"]}
    seen = {"method": scope.get("method"), "raw_path": scope["raw_path"].decode(),
            "query": scope["query_string"].decode(), "headers": headers,
            "cookies": [v.decode() for k, v in scope["headers"] if k == b"cookie"]}
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept", "subprotocol": (scope["subprotocols"] or [None])[0]})
        while True:
            m = await receive()
            if m["type"] == "websocket.disconnect":
                return
            if m.get("text") == "handshake":
                await send({"type": "websocket.send", "text": json.dumps(seen)})
            elif m.get("text") == "close":
                await send({"type": "websocket.close", "code": 4001, "reason": "asked to"})
                return
            else:
                await send({"type": "websocket.send", **{k: m[k] for k in ("text", "bytes") if m.get(k) is not None}})
    path = scope["path"]

    async def start(status=200, extra=(), kind=b"application/octet-stream"):
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", kind), *extra]})

    if path == "/echo":  # the body comes back as it arrives
        await start()
        while True:
            m = await receive()
            await send({"type": "http.response.body", "body": m.get("body", b""), "more_body": True})
            if not m.get("more_body"):
                break
        await send({"type": "http.response.body", "body": b""})
    elif path == "/stream":
        await start(kind=b"text/event-stream")
        for i in range(4):
            await send({"type": "http.response.body", "body": f"data: {i}\n\n".encode(), "more_body": True})
            await asyncio.sleep(0.5)
        await send({"type": "http.response.body", "body": b""})
    elif path == "/slow":
        await asyncio.sleep(3)
        await start()
        await send({"type": "http.response.body", "body": b"late"})
    elif path == "/moved":
        await start(302, [(b"location", b"/headers?from=moved"),
                          (b"set-cookie", b"agora_session=planted; Path=/"),
                          (b"set-cookie", b"Agora_Csrf=planted; Path=/"),
                          (b"set-cookie", b"theirs=kept; Path=/")])
        await send({"type": "http.response.body", "body": b""})
    else:
        body = json.dumps(seen).encode()
        await start(kind=b"application/json")
        await send({"type": "http.response.body", "body": body})


uvicorn.run(app, host=sys.argv[1], port=int(sys.argv[2]), log_level="warning", lifespan="off")
"""


@pytest.fixture
def service(platform: Platform, tmp_path: Path) -> Iterator[dict]:
    script = tmp_path / "echo_service.py"
    script.write_text(ECHO_SERVICE)
    command = f'exec "$AGORA_PYTHON" {script} "$AGORA_BIND_HOST" "$PORT"'
    dep = platform.deploy("http-service", inputs={"command": command, "readiness_path": "/ready"})
    yield platform.wait(dep["id"], {"running"}, timeout=60)


def key(token: str = ADMIN_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def cookie(session: str) -> dict[str, str]:
    return {"Cookie": f"agora_session={session}"}


def service_token(platform: Platform, dep_id: str) -> str:
    with platform.runtime.db.session() as db:
        dep = db.get(Deployment, dep_id)
        assert dep is not None
        return platform.runtime.keyring.decrypt(dep.token)


def user(platform: Platform, name: str, project: str, role: str) -> str:
    """A user with a role in a project (created if new); returns a session token."""
    password = "correct-horse-battery"
    platform.api("POST", "/users", json={"username": name, "password": password})
    platform.api("POST", "/projects", json={"name": project})
    r = platform.api("POST", f"/projects/{project}/members", json={"username": name, "role": role})
    assert r.status_code in (200, 201), r.text
    login = platform.http.post("/api/v1/auth/login", json={"username": name, "password": password})
    return str(login.json()["token"])


def test_service_sees_its_token_but_never_agora_credentials(
    platform: Platform, service: dict
) -> None:
    session = user(platform, "bob", "default", "member")
    r = platform.http.get(
        f"/d/{service['id']}/some%20dir/a%2Fb",
        params={"q": "1 2", "x": "/"},
        headers={
            **key(),
            "Cookie": f"agora_session={session}; theirs=1; agora_csrf=abc",
            "X-CSRF-Token": "secret",
        },
    )
    assert r.status_code == 200, r.text
    seen = r.json()
    headers = seen["headers"]
    assert seen["raw_path"] == "/some%20dir/a%2Fb"  # prefix stripped, encoding untouched
    assert seen["query"] == "q=1+2&x=%2F"
    assert headers["authorization"] == f"token {service_token(platform, service['id'])}"
    assert seen["cookies"] == ["theirs=1"]
    assert ADMIN_KEY not in json.dumps(seen) and session not in json.dumps(seen)
    assert "x-csrf-token" not in headers
    assert headers["host"] == f"127.0.0.1:{platform.port}"
    assert headers["x-forwarded-host"] == f"127.0.0.1:{platform.port}"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-prefix"] == f"/d/{service['id']}"
    # A member signed in by cookie alone gets through too.
    r = platform.http.get(f"/d/{service['id']}/", headers=cookie(session))
    assert r.status_code == 200 and r.json()["cookies"] == []


def test_bodies_stream_both_ways(platform: Platform, service: dict) -> None:
    chunk = os.urandom(1 << 16)
    size = 80 * len(chunk)  # 5 MiB: more than the API's body limit, sent without a length

    def body() -> Iterator[bytes]:
        for _ in range(80):
            yield chunk

    with platform.http.stream(
        "POST", f"/d/{service['id']}/echo", content=body(), headers=key()
    ) as r:
        assert r.status_code == 200
        digest, received = hashlib.sha256(), 0
        for part in r.iter_raw():
            digest.update(part)
            received += len(part)
    assert received == size
    assert digest.hexdigest() == hashlib.sha256(chunk * 80).hexdigest()
    r = platform.http.put(f"/d/{service['id']}/echo", content=chunk * 40, headers=key())
    assert r.status_code == 200 and r.content == chunk * 40

    # An event stream arrives event by event, not once the service is done.
    started = time.monotonic()
    with platform.http.stream("GET", f"/d/{service['id']}/stream", headers=key()) as r:
        assert r.headers["content-type"] == "text/event-stream"
        events = r.iter_text()
        first = next(events)
        first_after = time.monotonic() - started
        rest = "".join(events)
    assert first.startswith("data: 0") and first_after < 1.0
    assert (first + rest).count("data:") == 4


def test_redirects_and_cookies_stay_inside_the_deployment(
    platform: Platform, service: dict
) -> None:
    r = platform.http.get(f"/d/{service['id']}", params={"a": "b"}, headers=key())
    assert r.status_code == 307
    assert r.headers["location"] == f"/d/{service['id']}/?a=b"
    r = platform.http.get(f"/d/{service['id']}/moved", headers=key())
    assert r.status_code == 302
    assert r.headers["location"] == f"/d/{service['id']}/headers?from=moved"
    assert r.headers.get_list("set-cookie") == ["theirs=kept; Path=/"]
    assert len(r.headers.get_list("date")) == len(r.headers.get_list("server")) == 1


def test_member_of_other_project_gets_404(platform: Platform, service: dict) -> None:
    eve = user(platform, "eve", "evil", "owner")
    url = f"/d/{service['id']}/"
    r = platform.http.get(url, headers=key(eve))
    assert r.status_code == 404
    assert (
        r.json()["detail"] == f"Deployment '{service['id']}' does not exist or you cannot open it"
    )
    assert platform.http.get(url, headers=cookie(eve)).status_code == 404
    assert platform.http.get("/d/dnothere/", headers=key()).status_code == 404
    batch = platform.deploy("batch", inputs={"command": "sleep 60"})
    assert platform.http.get(f"/d/{batch['id']}/", headers=key()).status_code == 404


def test_viewers_and_read_only_keys_may_not_open_a_service(
    platform: Platform, service: dict
) -> None:
    """A service like JupyterLab hands out a shell: opening one is acting in the project."""
    viewer = user(platform, "vera", "default", "viewer")
    r = platform.http.get(f"/d/{service['id']}/", headers=key(viewer))
    assert r.status_code == 403
    assert "viewer; this needs member or higher" in r.json()["detail"]
    admin = platform.http.post(
        "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
    ).json()["token"]
    r = platform.api(
        "POST", "/projects/default/keys", admin, json={"name": "ro", "scopes": ["read"]}
    )
    assert r.status_code == 201, r.text
    r = platform.http.get(f"/d/{service['id']}/", headers=key(r.json()["secret"]))
    assert r.status_code == 403
    assert r.json()["detail"] == "This API key lacks the 'manage' scope"


def test_anonymous_caller_must_sign_in(platform: Platform, service: dict) -> None:
    url = f"/d/{service['id']}/lab?x=1"
    r = platform.http.get(url)
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    r = platform.http.get(url, headers={"Accept": "text/html,*/*"})
    assert r.status_code == 303
    assert r.headers["location"] == f"/login?next=%2Fd%2F{service['id']}%2Flab%3Fx%3D1"
    assert platform.http.get(url, headers=key("agora_" + "x" * 43)).status_code == 401


def test_cookie_signed_changes_must_come_from_agora_pages(
    platform: Platform, service: dict
) -> None:
    session = user(platform, "bob", "default", "member")
    url = f"/d/{service['id']}/echo"
    evil = {"Origin": "https://evil.example"}
    r = platform.http.post(url, content=b"x", headers={**cookie(session), **evil})
    assert r.status_code == 403 and "Origin" in r.json()["detail"]
    ours = {"Origin": platform.url}
    assert (
        platform.http.post(url, content=b"x", headers={**cookie(session), **ours}).content == b"x"
    )
    # API keys are not sent by browsers on their own: no Origin check for them.
    assert platform.http.post(url, content=b"y", headers={**key(), **evil}).content == b"y"


def test_stopped_deployment_answers_503(platform: Platform, service: dict) -> None:
    platform.api("POST", f"/projects/default/deployments/{service['id']}/stop")
    platform.wait(service["id"], {"stopped"}, timeout=30)
    r = platform.http.get(f"/d/{service['id']}/", headers=key())
    assert r.status_code == 503
    assert r.json()["detail"].startswith(f"Deployment '{service['id']}' is stopped;")
    session = user(platform, "bob", "default", "member")
    r = platform.http.get(
        f"/d/{service['id']}/", headers={"Accept": "text/html", **cookie(session)}
    )
    assert r.status_code == 503 and "text/html" in r.headers["content-type"]
    assert "it no longer serves anything" in r.text


def test_starting_deployment_answers_503_with_retry_after(platform: Platform) -> None:
    dep = platform.deploy("http-service", inputs={"command": "sleep 60"})
    platform.wait(dep["id"], {"starting", "submitted"})
    r = platform.http.get(f"/d/{dep['id']}/", headers=key())
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    assert "not running yet" in r.json()["detail"]


def test_unreachable_service_is_502_and_slow_one_504(
    platform: Platform, service: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(proxy_http, "RESPONSE_TIMEOUT", 1.0)
    r = platform.http.get(f"/d/{service['id']}/slow", headers=key())
    assert r.status_code == 504
    assert "did not answer within 1 s" in r.json()["detail"]
    with platform.runtime.db.transaction() as db:  # as if the process had just died
        db.execute(
            update(Deployment)
            .where(Deployment.id == service["id"])
            .values(address=f"127.0.0.1:{free_port()}")
        )
    r = platform.http.get(f"/d/{service['id']}/", headers=key())
    assert r.status_code == 502
    assert "could not be reached" in r.json()["detail"]


def ws_url(platform: Platform, dep_id: str, path: str = "ws") -> str:
    return platform.url.replace("http://", "ws://") + f"/d/{dep_id}/{path}"


def test_websocket_echo_through_the_proxy(platform: Platform, service: dict) -> None:
    async def talk() -> None:
        async with connect(
            ws_url(platform, service["id"], "ws?room=1"),
            additional_headers=key(),
            subprotocols=["v1.test"],  # type: ignore[list-item]
        ) as ws:
            assert ws.subprotocol == "v1.test"
            await ws.send("hello")
            assert await ws.recv() == "hello"
            await ws.send(b"\x00\x01binary")
            assert await ws.recv() == b"\x00\x01binary"
            await ws.send("handshake")
            seen = json.loads(await ws.recv())
            assert seen["raw_path"] == "/ws" and seen["query"] == "room=1"
            assert seen["headers"]["authorization"].startswith("token ")
            assert ADMIN_KEY not in json.dumps(seen)
            await ws.send("close")
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 4001 and ws.close_reason == "asked to"

    asyncio.run(talk())


def test_websocket_refused_for_other_project_and_foreign_pages(
    platform: Platform, service: dict
) -> None:
    eve = user(platform, "eve", "evil", "owner")
    bob = user(platform, "bob", "default", "member")
    url = ws_url(platform, service["id"])

    async def status_of(**kw: object) -> int:
        try:
            async with connect(url, **kw) as ws:  # type: ignore[arg-type]
                await ws.send("hello")
                assert await ws.recv() == "hello"
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    assert asyncio.run(status_of(additional_headers=key(eve))) == 404
    assert asyncio.run(status_of()) == 401
    evil = "https://evil.example"
    assert asyncio.run(status_of(additional_headers=cookie(bob), origin=evil)) == 403
    assert asyncio.run(status_of(additional_headers=cookie(bob), origin=platform.url)) == 101
