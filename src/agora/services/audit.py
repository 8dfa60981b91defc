"""The hash-chained audit trail: append, query, verify.

Each entry's hash covers its fields and the previous entry's hash, so an edited or deleted entry
breaks the chain from that point; the ``audit_head`` row records the tip, so a truncated tail is
detected too. Appends first update the head row, which takes the write lock (SQLite) or the row
lock (PostgreSQL) before the previous hash is read: concurrent appends cannot fork the chain.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from agora.db import utcnow
from agora.errors import InvalidInput
from agora.models import AuditEntry, AuditHead
from agora.services.context import Ctx

GENESIS = "0" * 64
_SECRET_WORDS = ("password", "secret", "token", "key_value", "totp_code", "code")


def _canonical(entry: AuditEntry) -> bytes:
    body = {
        "seq": entry.seq,
        "time": entry.time.astimezone(dt.UTC).isoformat(timespec="microseconds"),
        "actor_id": entry.actor_id,
        "actor": entry.actor,
        "project_id": entry.project_id,
        "project": entry.project,
        "action": entry.action,
        "target": entry.target,
        "outcome": entry.outcome,
        "client_addr": entry.client_addr,
        "details": entry.details,
        "prev_hash": entry.prev_hash,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _hash(entry: AuditEntry) -> str:
    return hashlib.sha256(_canonical(entry)).hexdigest()


def _scrub(details: dict[str, Any]) -> dict[str, Any]:
    """Defence in depth: drop any detail whose name suggests a secret."""
    return {k: v for k, v in details.items() if not any(w in k.lower() for w in _SECRET_WORDS)}


def _advance_head(db: Session) -> tuple[int, str] | None:
    row = db.execute(
        update(AuditHead)
        .where(AuditHead.id == 1)
        .values(seq=AuditHead.seq + 1)
        .returning(AuditHead.seq, AuditHead.hash)
    ).one_or_none()
    return None if row is None else (int(row[0]), str(row[1]))


def record(
    ctx: Ctx,
    action: str,
    target: str,
    *,
    outcome: str = "success",
    project_id: int | None = None,
    project: str | None = None,
    details: dict[str, Any] | None = None,
    actor: str | None = None,
    actor_id: int | None = None,
) -> AuditEntry:
    """Append an entry in the caller's transaction, so it commits with the change it describes."""
    db = ctx.db
    principal = ctx.principal
    head = _advance_head(db)
    if head is None:  # a new (or emptied) database: plant the head, racing others safely
        try:
            with db.begin_nested():
                db.add(AuditHead(id=1, seq=0, hash=GENESIS))
        except IntegrityError:
            pass  # another transaction planted it first: advance that one
        head = _advance_head(db)
        assert head is not None
    seq, prev = head
    entry = AuditEntry(
        seq=seq,
        time=utcnow(),
        actor_id=actor_id if actor_id is not None else (principal.user_id if principal else None),
        actor=actor or ctx.actor_name,
        project_id=project_id,
        project=project,
        action=action,
        target=target[:255],
        outcome=outcome,
        client_addr=ctx.client_addr,
        details=_scrub(details or {}),
        prev_hash=prev,
    )
    entry.hash = _hash(entry)
    db.add(entry)
    db.execute(update(AuditHead).where(AuditHead.id == 1).values(hash=entry.hash))
    db.flush()
    return entry


@dataclass(frozen=True)
class AuditFilter:
    actor: str | None = None
    project: str | None = None
    action: str | None = None
    outcome: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    before_seq: int | None = None
    limit: int = 100


def query(ctx: Ctx, flt: AuditFilter, *, project_id: int | None = None) -> list[AuditEntry]:
    if flt.since and flt.until and flt.since > flt.until:
        raise InvalidInput("'since' must not be after 'until'")
    stmt = select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(flt.limit)
    if project_id is not None:
        stmt = stmt.where(AuditEntry.project_id == project_id)
    if flt.actor:
        stmt = stmt.where(AuditEntry.actor == flt.actor)
    if flt.project:
        stmt = stmt.where(AuditEntry.project == flt.project)
    if flt.action:
        # "key." matches every key action; an exact name matches one.
        if flt.action.endswith("."):
            stmt = stmt.where(AuditEntry.action.startswith(flt.action, autoescape=True))
        else:
            stmt = stmt.where(AuditEntry.action == flt.action)
    if flt.outcome:
        stmt = stmt.where(AuditEntry.outcome == flt.outcome)
    if flt.since:
        stmt = stmt.where(AuditEntry.time >= flt.since)
    if flt.until:
        stmt = stmt.where(AuditEntry.time <= flt.until)
    if flt.before_seq:
        stmt = stmt.where(AuditEntry.seq < flt.before_seq)
    return list(ctx.db.scalars(stmt))


@dataclass(frozen=True)
class Verification:
    ok: bool
    checked: int
    first_broken_seq: int | None = None
    reason: str | None = None


def verify(ctx: Ctx, batch: int = 1000) -> Verification:
    """Walk the whole chain in order; name the first entry that does not fit."""
    db = ctx.db
    expected_seq, prev, checked = 1, GENESIS, 0
    last_seq = 0
    while True:
        rows = list(
            db.scalars(
                select(AuditEntry)
                .where(AuditEntry.seq > last_seq)
                .order_by(AuditEntry.seq)
                .limit(batch)
            )
        )
        if not rows:
            break
        for entry in rows:
            if entry.seq != expected_seq:
                return Verification(
                    False, checked, expected_seq, f"entry {expected_seq} is missing"
                )
            if entry.prev_hash != prev:
                return Verification(
                    False, checked, entry.seq, "its link to the previous entry does not match"
                )
            if _hash(entry) != entry.hash:
                return Verification(False, checked, entry.seq, "its content was changed")
            prev, expected_seq, last_seq = entry.hash, expected_seq + 1, entry.seq
            checked += 1
    head = db.get(AuditHead, 1)
    if head is not None and (head.seq != last_seq or head.hash != prev):
        return Verification(
            False,
            checked,
            last_seq + 1,
            f"the chain ends at entry {last_seq} but {head.seq} were written: the tail was removed",
        )
    return Verification(True, checked)


def record_denied(ctx: Ctx, method: str, path: str, reason: str) -> AuditEntry:
    """A refused change, in its own committed entry (the request's own work is rolled back)."""
    ctx.db.rollback()
    entry = record(
        ctx, "request.denied", f"{method} {path}", outcome="denied", details={"reason": reason}
    )
    ctx.db.commit()
    return entry


def record_failure(ctx: Ctx, action: str, target: str, **kwargs: Any) -> AuditEntry:
    """Record a failed attempt and commit at once: the request will fail and roll back."""
    ctx.db.rollback()
    entry = record(ctx, action, target, outcome="failure", **kwargs)
    ctx.db.commit()
    return entry
