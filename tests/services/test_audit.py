"""The audit trail's hash chain: tamper evidence and concurrent appends."""

from __future__ import annotations

import json
import threading

from sqlalchemy import delete, text, update

from agora.models import AuditEntry
from agora.runtime import Runtime
from agora.services import audit
from agora.services.context import Ctx
from tests.conftest import ADMIN_KEY, ADMIN_PASSWORD
from tests.helpers import PASSWORD, Api


def _append(runtime: Runtime, n: int) -> None:
    for i in range(n):
        with runtime.db.transaction() as db:
            audit.record(
                Ctx(db=db, runtime=runtime, client_addr="127.0.0.1"), "test.event", f"t{i}"
            )


def _verify(runtime: Runtime) -> audit.Verification:
    with runtime.db.session() as db:
        return audit.verify(Ctx(db=db, runtime=runtime))


def test_intact_chain_verifies(runtime: Runtime) -> None:
    _append(runtime, 5)
    result = _verify(runtime)
    assert result.ok and result.checked == 5


def test_edited_entry_is_named(runtime: Runtime) -> None:
    _append(runtime, 5)
    with runtime.db.transaction() as db:
        db.execute(update(AuditEntry).where(AuditEntry.seq == 3).values(target="forged"))
    result = _verify(runtime)
    assert not result.ok
    assert result.first_broken_seq == 3
    assert "changed" in (result.reason or "")


def test_rehashed_edit_breaks_the_next_link(runtime: Runtime) -> None:
    """Recomputing the edited entry's own hash does not help: the next entry points elsewhere."""
    _append(runtime, 5)
    with runtime.db.transaction() as db:
        entry = db.query(AuditEntry).filter_by(seq=2).one()
        entry.outcome = "failure"
        entry.hash = audit._hash(entry)
    result = _verify(runtime)
    assert result.first_broken_seq == 3


def test_deleted_entry_is_named(runtime: Runtime) -> None:
    _append(runtime, 5)
    with runtime.db.transaction() as db:
        db.execute(delete(AuditEntry).where(AuditEntry.seq == 4))
    result = _verify(runtime)
    assert result.first_broken_seq == 4
    assert "missing" in (result.reason or "")


def test_truncated_tail_is_detected(runtime: Runtime) -> None:
    _append(runtime, 5)
    with runtime.db.transaction() as db:
        db.execute(delete(AuditEntry).where(AuditEntry.seq >= 4))
    result = _verify(runtime)
    assert not result.ok
    assert result.first_broken_seq == 4


def test_concurrent_appends_keep_one_chain(runtime: Runtime) -> None:
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            _append(runtime, 10)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    result = _verify(runtime)
    assert result.ok and result.checked == 80


def test_api_filters_and_verify(api: Api) -> None:
    api.user("alice")
    api.project("lab", alice="member")
    by_project = api.get("/audit", params={"project": "lab"}).json()["entries"]
    assert {e["action"] for e in by_project} == {"project.create", "member.add"}
    keys_only = api.get("/audit", params={"action": "user."}).json()["entries"]
    assert keys_only and all(e["action"].startswith("user.") for e in keys_only)
    page = api.get("/audit", params={"limit": 2}).json()
    older = api.get("/audit", params={"limit": 2, "before": page["next_before"]}).json()
    assert older["entries"][0]["seq"] < page["entries"][-1]["seq"]
    assert api.get("/audit/verify").json() == {
        "ok": True,
        "checked": api.get("/audit", params={"limit": 1}).json()["entries"][0]["seq"],
        "first_broken_seq": None,
        "reason": None,
    }
    bad = api.get(
        "/audit", params={"since": "2030-01-02T00:00:00Z", "until": "2030-01-01T00:00:00Z"}
    )
    assert bad.status_code == 422


def test_no_secret_ever_reaches_the_audit_trail(api: Api, runtime: Runtime) -> None:
    token = api.user("alice")
    api.project("lab", alice="owner")
    key = api.key("lab", ["read"], token=token)
    otp = api.post("/users", {"username": "bob"}).json()["one_time_password"]
    reset = api.post("/users/alice/password-reset").json()["one_time_password"]
    api.client.post("/api/v1/auth/login", json={"username": "alice", "password": "typo-password"})
    with runtime.db.session() as db:
        rows = db.execute(text("SELECT * FROM audit_entries")).all()
    dump = json.dumps([list(map(str, r)) for r in rows])
    for secret in (PASSWORD, token, key, otp, reset, ADMIN_KEY, ADMIN_PASSWORD, "typo-password"):
        assert secret not in dump
