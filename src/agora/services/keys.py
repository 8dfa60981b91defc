"""API keys: owned by a user within one project, shown once, stored as a hash."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm.attributes import set_committed_value

from agora.db import utcnow
from agora.errors import Forbidden, InvalidInput, NotFound
from agora.models import ApiKey, Role, Scope
from agora.security import new_api_key, token_hash
from agora.services import access, audit
from agora.services.context import Ctx

#: The scopes each role may put on its keys.
_SCOPES_FOR = {
    Role.viewer: {Scope.read, Scope.inference},
    Role.member: {Scope.read, Scope.inference, Scope.manage},
    Role.owner: {Scope.read, Scope.inference, Scope.manage},
}


@dataclass
class NewKey:
    key: ApiKey
    secret: str


def create_key(
    ctx: Ctx,
    project_name: str,
    name: str,
    scopes: list[Scope],
    expires_at: dt.datetime | None = None,
) -> NewKey:
    p = access.principal(ctx)
    if p.via == "api_key":
        raise Forbidden("Create API keys from a signed-in session, not with another API key")
    project, role = access.project_access(ctx, project_name, Role.viewer, write=False)
    if p.is_admin:
        role = access.role_in(ctx, project, p.user_id) or Role.owner
    allowed = _allowed(role, p.is_admin)
    wanted = set(scopes)
    if not wanted:
        raise InvalidInput("Give the key at least one scope")
    if wanted - allowed:
        bad = ", ".join(sorted(s.value for s in wanted - allowed))
        raise Forbidden(f"As {role.value} of '{project_name}' you cannot grant: {bad}")
    if expires_at is not None and expires_at <= utcnow():
        raise InvalidInput("The expiry must be in the future")
    return issue(ctx, project.id, p.user_id, name, sorted(s.value for s in wanted), expires_at)


def _allowed(role: Role, is_admin: bool) -> set[Scope]:
    return set(_SCOPES_FOR[role]) | ({Scope.admin} if is_admin else set())


def grantable_scopes(ctx: Ctx, project_name: str) -> list[Scope]:
    """The scopes the caller may put on a new key in this project (what ``create_key`` allows)."""
    p = access.principal(ctx)
    project, role = access.project_access(ctx, project_name, Role.viewer, write=False)
    if p.is_admin:
        role = access.role_in(ctx, project, p.user_id) or Role.owner
    allowed = _allowed(role, p.is_admin)
    return [s for s in Scope if s in allowed]


def issue(
    ctx: Ctx,
    project_id: int,
    user_id: int,
    name: str,
    scopes: list[str],
    expires_at: dt.datetime | None,
    secret: str | None = None,
) -> NewKey:
    """Store a key (no access check: callers decide). ``secret`` lets bootstrap set a known one."""
    secret = secret or new_api_key()
    key = ApiKey(
        name=name,
        prefix=secret[:12],
        secret_hash=token_hash(secret),
        user_id=user_id,
        project_id=project_id,
        scopes=scopes,
        expires_at=expires_at,
    )
    ctx.db.add(key)
    ctx.db.flush()
    audit.record(
        ctx,
        "key.create",
        f"key:{key.id}:{name}",
        project_id=project_id,
        project=key.project.name,
        details={"scopes": scopes, "owner_id": user_id, "expires_at": _iso(expires_at)},
    )
    return NewKey(key, secret)


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def list_keys(ctx: Ctx, project_name: str) -> list[ApiKey]:
    """Owners and admins see every key of the project; others see their own."""
    p = access.principal(ctx)
    project, role = access.project_access(ctx, project_name, Role.viewer, write=False)
    stmt = select(ApiKey).where(ApiKey.project_id == project.id).order_by(ApiKey.id)
    if role != Role.owner:
        stmt = stmt.where(ApiKey.user_id == p.user_id)
    keys = list(ctx.db.scalars(stmt))
    for key in keys:  # show usage not yet flushed to the database
        pending = ctx.runtime.key_usage.peek(key.id)
        if pending is not None and (key.last_used_at is None or pending > key.last_used_at):
            # Shown, not changed: a plain assignment would make the key dirty, and the next
            # lazy load would flush it as a write inside this read (on SQLite, a write after
            # another process's commit fails at once with "database is locked").
            set_committed_value(key, "last_used_at", pending)
    return keys


def revoke_key(ctx: Ctx, project_name: str, key_id: int) -> ApiKey:
    p = access.principal(ctx)
    # Revoking one's own key needs only membership; others' keys need ownership.
    project, role = access.project_access(ctx, project_name, Role.viewer, write=True)
    key = ctx.db.get(ApiKey, key_id)
    if key is None or key.project_id != project.id:
        raise NotFound(f"API key {key_id} does not exist in project '{project_name}'")
    if key.user_id != p.user_id and role != Role.owner:
        raise NotFound(f"API key {key_id} does not exist in project '{project_name}'")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        audit.record(
            ctx,
            "key.revoke",
            f"key:{key.id}:{key.name}",
            project_id=project.id,
            project=project.name,
        )
    return key
