"""Signing in: passwords, throttling and lockout, TOTP, one-time passwords, sessions."""

from __future__ import annotations

import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor

import pyotp
import pytest
from sqlalchemy import update

from agora.models import LoginThrottle
from agora.runtime import Runtime
from tests.helpers import PASSWORD, Api, totp_now


def _login(api: Api, username: str, password: str, totp: str | None = None):  # type: ignore[no-untyped-def]
    body = {"username": username, "password": password}
    if totp is not None:
        body["totp_code"] = totp
    return api.client.post("/api/v1/auth/login", json=body)


def _expire_throttle(runtime: Runtime) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    with runtime.db.transaction() as db:
        db.execute(update(LoginThrottle).values(next_attempt_at=past))


def test_password_login_gives_a_working_token(api: Api) -> None:
    token = api.user("alice")
    me = api.as_(token).get("/me").json()
    assert me["user"]["username"] == "alice"
    assert me["via"] == "session"


def test_wrong_password_and_unknown_user_look_the_same(api: Api) -> None:
    api.user("alice")
    wrong = _login(api, "alice", "not-the-password")
    unknown = _login(api, "nobody", "not-the-password")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["detail"] == unknown.json()["detail"]


def test_repeated_failures_grow_a_delay(api: Api, runtime: Runtime) -> None:
    api.user("alice")
    free = runtime.settings.login_free_attempts
    for _ in range(free):
        assert _login(api, "alice", "wrong-password").status_code == 401
    r = _login(api, "alice", PASSWORD)  # even the right password waits
    assert r.status_code == 429
    assert int(r.headers["Retry-After"]) >= 1
    assert "try again in" in r.json()["detail"]
    _expire_throttle(runtime)
    assert _login(api, "alice", "wrong-password").status_code == 401
    r = _login(api, "alice", PASSWORD)
    assert r.status_code == 429
    assert int(r.headers["Retry-After"]) >= 2  # the delay doubled


def test_lockout_after_many_failures_then_success_resets(api: Api, runtime: Runtime) -> None:
    api.user("alice")
    for _ in range(runtime.settings.login_lockout_attempts):
        _expire_throttle(runtime)
        assert _login(api, "alice", "wrong-password").status_code == 401
    r = _login(api, "alice", PASSWORD)
    assert r.status_code == 429
    assert "locked" in r.json()["detail"]
    assert int(r.headers["Retry-After"]) > 60
    with runtime.db.transaction() as db:
        db.execute(update(LoginThrottle).values(locked_until=None))
    assert _login(api, "alice", PASSWORD).status_code == 200
    # A success clears the count: one new failure does not throttle.
    assert _login(api, "alice", "wrong-password").status_code == 401
    assert _login(api, "alice", PASSWORD).status_code == 200


def test_guesses_sent_at_once_get_no_more_tries_than_one_after_another(
    api: Api, runtime: Runtime
) -> None:
    """Twelve wrong passwords at the same moment: as many are checked as when sent one by one
    (the free attempts); the others wait their turn and are throttled."""
    api.user("alice")
    start = threading.Barrier(12)

    def guess(_: int) -> int:
        start.wait()
        return int(_login(api, "alice", "wrong-password").status_code)

    with ThreadPoolExecutor(12) as pool:
        statuses = sorted(pool.map(guess, range(12)))
    free = runtime.settings.login_free_attempts
    assert statuses == [401] * free + [429] * (12 - free)
    with runtime.db.session() as db:
        assert db.get(LoginThrottle, "alice").failures == free  # type: ignore[union-attr]


def test_unknown_users_are_throttled_too(api: Api, runtime: Runtime) -> None:
    for _ in range(runtime.settings.login_free_attempts):
        _login(api, "ghost", "whatever-password")
    assert _login(api, "ghost", "whatever-password").status_code == 429


def test_failed_and_successful_logins_are_audited(api: Api) -> None:
    api.user("alice")
    _login(api, "alice", "wrong-password")
    entries = api.get("/audit", params={"action": "auth.login", "actor": "alice"}).json()["entries"]
    outcomes = [e["outcome"] for e in entries]
    assert outcomes == ["failure", "success"]
    assert entries[0]["details"] == {"reason": "wrong password"}
    assert entries[0]["client_addr"]


def _enrol(api: Api, token: str) -> str:
    me = api.as_(token)
    setup = me.post("/me/totp/setup")
    assert setup.status_code == 200, setup.text
    secret = setup.json()["secret"]
    assert setup.json()["otpauth_uri"].startswith("otpauth://totp/Agora:")
    assert me.post("/me/totp/enable", {"code": "000000"}).status_code == 422
    assert me.post("/me/totp/enable", {"code": totp_now(secret, -1)}).status_code == 204
    return str(secret)


def test_totp_enrolment_and_login(api: Api) -> None:
    token = api.user("alice")
    secret = _enrol(api, token)
    r = _login(api, "alice", PASSWORD)
    assert r.status_code == 401
    assert r.json()["type"].endswith("/totp-required")
    assert _login(api, "alice", PASSWORD, "123456").status_code in (401,)
    code = totp_now(secret)
    assert _login(api, "alice", PASSWORD, code).status_code == 200
    # The same code cannot be used twice.
    assert _login(api, "alice", PASSWORD, code).status_code == 401


def test_totp_disable_needs_password_and_code(api: Api) -> None:
    token = api.user("alice")
    secret = _enrol(api, token)
    me = api.as_(token)
    assert (
        me.post("/me/totp/disable", {"password": "wrong-one", "code": totp_now(secret)}).status_code
        == 422
    )
    assert (
        me.post("/me/totp/disable", {"password": PASSWORD, "code": totp_now(secret)}).status_code
        == 204
    )
    assert _login(api, "alice", PASSWORD).status_code == 200


def test_totp_secret_is_encrypted_at_rest(api: Api, runtime: Runtime) -> None:
    from agora.models import User

    token = api.user("alice")
    secret = _enrol(api, token)
    with runtime.db.session() as db:
        stored = db.query(User).filter_by(username="alice").one().totp_secret
    assert stored and secret not in stored


def test_one_time_password_must_be_changed_first(api: Api) -> None:
    r = api.post("/users", {"username": "bob"})
    otp = r.json()["one_time_password"]
    assert otp and r.json()["must_change_password"]
    token = api.login("bob", otp)
    bob = api.as_(token)
    blocked = bob.get("/projects")
    assert blocked.status_code == 403
    assert "password" in blocked.json()["detail"]
    assert bob.get("/me").json()["restriction"] == "password"
    assert (
        bob.post("/me/password", {"current_password": otp, "new_password": "short"}).status_code
        == 422
    )
    ok = bob.post("/me/password", {"current_password": otp, "new_password": "a-new-password-1"})
    assert ok.status_code == 204
    assert bob.get("/projects").status_code == 200


def test_admin_can_require_totp_for_everyone(api: Api) -> None:
    token = api.user("alice")
    assert api.patch("/system/settings", {"require_totp": True}).json()["require_totp"] is True
    alice = api.as_(token)
    r = alice.get("/projects")
    assert r.status_code == 403
    assert "TOTP" in r.json()["detail"]
    _enrol(api, token)
    assert alice.get("/projects").status_code == 200
    # The admin's API key is not a login and keeps working.
    assert api.get("/users").status_code == 200


def test_logout_ends_the_session(api: Api) -> None:
    token = api.user("alice")
    alice = api.as_(token)
    assert alice.post("/auth/logout").status_code == 204
    r = alice.get("/me")
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == "Bearer"


def test_disabled_user_loses_sessions_and_keys(api: Api) -> None:
    token = api.user("alice")
    api.project("lab", alice="member")
    key = api.key("lab", ["read"], token=token)
    assert api.patch("/users/alice", {"disabled": True}).status_code == 200
    assert api.as_(token).get("/me").status_code == 401
    assert api.as_(key).get("/me").status_code == 401
    assert _login(api, "alice", PASSWORD).status_code == 401


def test_password_reset_gives_one_time_password(api: Api) -> None:
    token = api.user("alice")
    r = api.post("/users/alice/password-reset")
    assert r.status_code == 200
    assert api.as_(token).get("/me").status_code == 401  # sessions ended
    new = api.login("alice", r.json()["one_time_password"])
    assert api.as_(new).get("/me").json()["restriction"] == "password"


@pytest.mark.parametrize("bad", ["", "abc", "1234567", "12a456"])
def test_malformed_totp_code_is_422(api: Api, bad: str) -> None:
    r = api.client.post(
        "/api/v1/auth/login", json={"username": "x", "password": "y", "totp_code": bad}
    )
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "totp_code"


def test_pyotp_codes_match_ours() -> None:
    from agora.security import totp_step

    secret = pyotp.random_base32()
    assert totp_step(secret, pyotp.TOTP(secret).now(), None) is not None
