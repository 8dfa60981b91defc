"""Model → public schema conversions shared by the routers and the web pages."""

from __future__ import annotations

from agora.api import schemas
from agora.models import ApiKey, Membership, User


def user_public(user: User) -> schemas.UserPublic:
    out = schemas.UserPublic.model_validate(user)
    out.sso = user.oidc_subject is not None
    return out


def key_public(key: ApiKey) -> schemas.KeyPublic:
    return schemas.KeyPublic(
        id=key.id,
        name=key.name,
        prefix=key.prefix,
        owner=key.user.username,
        project=key.project.name,
        scopes=list(key.scopes),
        created_at=key.created_at,
        expires_at=key.expires_at,
        revoked_at=key.revoked_at,
        last_used_at=key.last_used_at,
    )


def member_public(m: Membership) -> schemas.MemberPublic:
    return schemas.MemberPublic(
        username=m.user.username,
        display_name=m.user.display_name,
        role=m.role,
        source=m.source,
        since=m.created_at,
    )
