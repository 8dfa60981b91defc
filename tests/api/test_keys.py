"""API keys: shown once, stored as a hash, scoped, expiring, revocable at once."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import event, select, text

from agora.models import ApiKey
from agora.runtime import Runtime
from tests.helpers import Api


def test_key_is_shown_once_and_stored_as_hash(api: Api, runtime: Runtime) -> None:
    token = api.user("alice")
    api.project("lab", alice="member")
    alice = api.as_(token)
    r = alice.post("/projects/lab/keys", {"name": "notebook", "scopes": ["inference", "read"]})
    assert r.status_code == 201
    secret = r.json()["secret"]
    assert secret.startswith("agora_") and len(secret) >= 6 + 43
    listed = alice.get("/projects/lab/keys").json()
    assert "secret" not in listed[0]
    assert listed[0]["prefix"] == secret[:12]
    with runtime.db.session() as db:
        dumped = " ".join(str(row) for row in db.execute(text("SELECT * FROM api_keys")).all())
    assert secret not in dumped and secret[12:] not in dumped


def test_revoked_key_is_refused_at_once(api: Api) -> None:
    token = api.user("alice")
    api.project("lab", alice="member")
    key = api.key("lab", ["read"], token=token)
    assert api.as_(key).get("/projects/lab").status_code == 200
    key_id = api.as_(token).get("/projects/lab/keys").json()[0]["id"]
    assert api.as_(token).delete(f"/projects/lab/keys/{key_id}").status_code == 204
    r = api.as_(key).get("/projects/lab")
    assert r.status_code == 401
    assert "revoked" in r.json()["detail"]


def test_expired_key_is_refused(api: Api, runtime: Runtime) -> None:
    token = api.user("alice")
    api.project("lab", alice="member")
    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    r = api.as_(token).post(
        "/projects/lab/keys", {"name": "k", "scopes": ["read"], "expires_at": soon}
    )
    assert r.status_code == 201
    secret = r.json()["secret"]
    with runtime.db.transaction() as db:
        key = db.scalar(select(ApiKey).where(ApiKey.name == "k"))
        assert key is not None
        key.expires_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    r = api.as_(secret).get("/projects/lab")
    assert r.status_code == 401
    assert "expired" in r.json()["detail"]


def test_expiry_must_be_future_and_zoned(api: Api) -> None:
    token = api.user("alice")
    api.project("lab", alice="member")
    alice = api.as_(token)
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).isoformat()
    assert (
        alice.post(
            "/projects/lab/keys", {"name": "k", "scopes": ["read"], "expires_at": past}
        ).status_code
        == 422
    )
    naive = alice.post(
        "/projects/lab/keys", {"name": "k", "scopes": ["read"], "expires_at": "2030-01-01T00:00:00"}
    )
    assert naive.status_code == 422
    assert "time zone" in naive.json()["detail"]


def test_unknown_scope_is_422(api: Api) -> None:
    token = api.user("alice")
    api.project("lab", alice="member")
    r = api.as_(token).post("/projects/lab/keys", {"name": "k", "scopes": ["root"]})
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"].startswith("scopes")


def test_last_used_is_recorded_without_a_write_per_request(api: Api, runtime: Runtime) -> None:
    token = api.user("alice")
    api.project("lab", alice="member")
    key = api.key("lab", ["read"], token=token)
    for _ in range(5):
        assert api.as_(key).get("/projects/lab").status_code == 200
    with runtime.db.session() as db:
        assert db.scalar(select(ApiKey.last_used_at).where(ApiKey.name == "test")) is None
    # ...but already visible, and written in one batch.
    assert api.as_(token).get("/projects/lab/keys").json()[0]["last_used_at"] is not None
    assert runtime.key_usage.flush(runtime.db) >= 1
    with runtime.db.session() as db:
        assert db.scalar(select(ApiKey.last_used_at).where(ApiKey.name == "test")) is not None


def test_listing_keys_shows_unflushed_use_without_writing(api: Api, runtime: Runtime) -> None:
    # Showing a use not yet flushed must not change the key in the listing's session: its
    # owner's lazy load would flush that as a write inside a read (on SQLite, "database is
    # locked" at once when another process, a standalone gateway, had just committed).
    alice, bob = api.user("alice"), api.user("bob")
    api.project("lab", alice="owner", bob="member")
    key = api.key("lab", ["read"], token=bob)
    assert api.as_(key).get("/projects/lab").status_code == 200
    writes: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        if not statement.lstrip().upper().startswith(("SELECT", "BEGIN", "PRAGMA")):
            writes.append(statement)

    event.listen(runtime.db.engine, "before_cursor_execute", record)
    try:
        listed = api.as_(alice).get("/projects/lab/keys").json()
    finally:
        event.remove(runtime.db.engine, "before_cursor_execute", record)
    assert [(k["owner"], k["last_used_at"] is not None) for k in listed] == [("bob", True)]
    assert not [w for w in writes if "api_keys" in w], writes


def test_keys_cannot_mint_keys(api: Api) -> None:
    token = api.user("alice")
    api.project("lab", alice="owner")
    key = api.key("lab", ["manage", "read"], token=token)
    r = api.as_(key).post("/projects/lab/keys", {"name": "k2", "scopes": ["read"]})
    assert r.status_code == 403


def test_members_see_only_their_keys_owners_see_all(api: Api) -> None:
    alice, bob = api.user("alice"), api.user("bob")
    api.project("lab", alice="owner", bob="member")
    api.key("lab", ["read"], token=alice)
    api.key("lab", ["read"], token=bob)
    assert len(api.as_(alice).get("/projects/lab/keys").json()) == 2
    assert [k["owner"] for k in api.as_(bob).get("/projects/lab/keys").json()] == ["bob"]


def test_garbage_bearer_is_401(api: Api) -> None:
    for token in ("nonsense", "agora_short", "agoras_forged"):
        r = api.as_(token).get("/me")
        assert r.status_code == 401
        assert r.headers["content-type"].startswith("application/problem+json")
