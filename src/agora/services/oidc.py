"""Single sign-on accounts: who an OpenID Connect identity is in Agora and what it may do.

The identity provider is authoritative for memberships whose ``source`` is "oidc": they follow
the claims on every sign-in (added, role changed, removed). Memberships a person set
(``source`` "local") are never touched here, even when the claims disagree.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select

from agora.db import utcnow
from agora.errors import Forbidden, InvalidInput
from agora.models import Membership, Project, Role, User
from agora.services import audit, projects
from agora.services.context import Ctx, Principal
from agora.settings import OIDCSettings

SOURCE = "oidc"
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
NAME_MAX = 63
_SUBJECT_MAX = 255


# --- claims → roles (pure) --------------------------------------------------------------------


def claim_values(claims: Mapping[str, Any], name: str) -> list[str]:
    """A claim as a list of strings: providers send one string or a list of them."""
    value = claims.get(name)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [v for v in value if isinstance(v, str)]
    return []


@functools.lru_cache(maxsize=8)
def _compiled(patterns: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(p) for p in patterns)


def check_role_patterns(oidc: OIDCSettings) -> None:
    """Refuse role patterns that cannot work, at start rather than at someone's first sign-in."""
    for pattern in oidc.role_patterns:
        try:
            groups = re.compile(pattern).groupindex
        except re.error as exc:
            raise ValueError(f"AGORA_OIDC_ROLE_PATTERNS: {pattern!r} is not valid: {exc}") from exc
        if "project" not in groups or "role" not in groups:
            raise ValueError(
                f"AGORA_OIDC_ROLE_PATTERNS: {pattern!r} needs the named groups "
                "(?P<project>…) and (?P<role>…)"
            )


def project_roles(claims: Mapping[str, Any], oidc: OIDCSettings) -> dict[str, Role]:
    """The project roles the claims grant: ``{project name: role}``.

    Each value of ``roles_claim`` is tried against ``role_patterns`` in order (``re.search``) and
    the first pattern that matches decides. Role names go through ``role_aliases``; a ``role``
    group that takes no part in the match means member; roles that do not end as
    owner/member/viewer, and project names Agora cannot use, are ignored. Several values for one
    project give the highest role.
    """
    aliases = {k.lower(): v.lower() for k, v in oidc.role_aliases.items()}
    granted: dict[str, Role] = {}
    for value in claim_values(claims, oidc.roles_claim):
        for pattern in _compiled(tuple(oidc.role_patterns)):
            match = pattern.search(value)
            if match is None:
                continue
            project = (match.group("project") or "").lower()
            role_name = (match.group("role") or Role.member.value).lower()
            role_name = aliases.get(role_name, role_name)
            if role_name in Role.__members__ and is_valid_name(project):
                role = Role(role_name)
                if project not in granted or granted[project].rank < role.rank:
                    granted[project] = role
            break
    return granted


def admin_from_claims(claims: Mapping[str, Any], oidc: OIDCSettings) -> bool | None:
    """Whether the claims make a platform admin; None when ``admin_values`` is not configured."""
    if not oidc.admin_values:
        return None
    return any(v in oidc.admin_values for v in claim_values(claims, oidc.roles_claim))


def is_valid_name(name: str) -> bool:
    return 2 <= len(name) <= NAME_MAX and NAME.match(name) is not None


def sanitise_name(raw: str) -> str:
    """Lower-case ASCII letters, digits, '.', '_' and '-', starting with a letter or digit."""
    ascii_only = unicodedata.normalize("NFKD", raw).encode("ascii", "ignore").decode().lower()
    name = re.sub(r"[^a-z0-9._-]+", "-", ascii_only)
    name = re.sub(r"^[^a-z0-9]+", "", name)[:NAME_MAX]
    return name.rstrip("._-")


def username_from_claims(claims: Mapping[str, Any], oidc: OIDCSettings) -> str:
    """The wished-for username: ``username_claim``, else the local part of ``email``."""
    candidates = claim_values(claims, oidc.username_claim)[:1]
    candidates += [e.partition("@")[0] for e in claim_values(claims, "email")[:1]]
    for candidate in candidates:
        name = sanitise_name(candidate)
        if is_valid_name(name):
            return name
    raise InvalidInput(
        f"Your identity provider did not send a usable '{oidc.username_claim}' or 'email' claim. "
        "Ask its administrator to release one of them to Agora."
    )


def subject_of(oidc: OIDCSettings, sub: str) -> str:
    """The stable key of an identity: issuer and subject (hashed only if too long to store)."""
    issuer = str(oidc.issuer).rstrip("/")
    subject = f"{issuer}|{sub}"
    if len(subject) > _SUBJECT_MAX:
        subject = f"{issuer[:180]}|sha256:{hashlib.sha256(sub.encode()).hexdigest()}"
    return subject


# --- signing in -------------------------------------------------------------------------------


def sign_in(ctx: Ctx, claims: Mapping[str, Any]) -> User:
    """The account of a verified identity, created at first sign-in; roles synced to the claims.

    Raises InvalidInput when the claims lack what an account needs, Forbidden for disabled
    accounts. The caller starts the session and commits.
    """
    oidc = ctx.runtime.settings.oidc
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise InvalidInput("The identity provider sent no subject ('sub') claim")
    subject = subject_of(oidc, sub)
    user = ctx.db.scalar(select(User).where(User.oidc_subject == subject))
    if user is not None and user.disabled:
        raise Forbidden(
            f"The Agora account '{user.username}' is disabled; ask a platform administrator"
        )
    if user is None:
        user = _create_user(ctx, claims, subject)
    # Changes are made by the person signing in, so the audit trail names them.
    as_user = dataclasses.replace(
        ctx,
        principal=Principal(
            user_id=user.id, username=user.username, is_admin=user.is_admin, via="session"
        ),
    )
    _sync_profile(as_user, user, claims)
    _sync_admin(as_user, user, admin_from_claims(claims, oidc))
    sync_memberships(as_user, user, project_roles(claims, oidc))
    user.last_login_at = utcnow()
    return user


def known_username(ctx: Ctx, claims: Mapping[str, Any]) -> str | None:
    """The account an identity already has, if any (to name it in a refusal's audit entry)."""
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        return None
    subject = subject_of(ctx.runtime.settings.oidc, sub)
    return ctx.db.scalar(select(User.username).where(User.oidc_subject == subject))


def _profile(claims: Mapping[str, Any]) -> tuple[str | None, str]:
    emails = claim_values(claims, "email")
    email = emails[0][:254] if emails and "@" in emails[0] else None
    names = claim_values(claims, "name")
    given = " ".join(claim_values(claims, "given_name") + claim_values(claims, "family_name"))
    return email, (names[0] if names else given).strip()[:128]


def _create_user(ctx: Ctx, claims: Mapping[str, Any], subject: str) -> User:
    oidc = ctx.runtime.settings.oidc
    base = username_from_claims(claims, oidc)
    username, n = base, 1
    while ctx.db.scalar(select(func.count()).where(func.lower(User.username) == username)):
        n += 1
        suffix = f"-{n}"
        username = base[: NAME_MAX - len(suffix)] + suffix
    email, display_name = _profile(claims)
    user = User(
        username=username,
        email=email,
        display_name=display_name or username,
        password_hash=None,
        oidc_subject=subject,
    )
    ctx.db.add(user)
    ctx.db.flush()
    audit.record(
        ctx,
        "user.create",
        f"user:{username}",
        actor=username,
        actor_id=user.id,
        details={"source": SOURCE, "subject": subject, "email": email},
    )
    return user


def _sync_profile(ctx: Ctx, user: User, claims: Mapping[str, Any]) -> None:
    email, display_name = _profile(claims)
    changes: dict[str, object] = {}
    if email is not None and email != user.email:
        user.email = changes["email"] = email
    if display_name and display_name != user.display_name:
        user.display_name = changes["display_name"] = display_name
    if changes:
        audit.record(
            ctx, "user.update", f"user:{user.username}", details={**changes, "source": SOURCE}
        )


def _sync_admin(ctx: Ctx, user: User, is_admin: bool | None) -> None:
    if is_admin is None or is_admin == user.is_admin:
        return
    user.is_admin = is_admin
    audit.record(
        ctx,
        "user.update",
        f"user:{user.username}",
        details={"is_admin": is_admin, "source": SOURCE},
    )


def sync_memberships(ctx: Ctx, user: User, wanted: Mapping[str, Role]) -> None:
    """Make the user's "oidc" memberships equal ``wanted``; leave "local" ones alone."""
    create = ctx.runtime.settings.oidc.create_projects
    current = {
        m.project.name: m
        for m in ctx.db.scalars(
            select(Membership).join(Project).where(Membership.user_id == user.id)
        )
    }
    target = f"user:{user.username}"
    for name, role in sorted(wanted.items()):
        m = current.get(name)
        if m is None:
            project = (
                projects.ensure_project(ctx, name)
                if create
                else ctx.db.scalar(select(Project).where(Project.name == name))
            )
            if project is None:
                continue
            ctx.db.add(Membership(project_id=project.id, user_id=user.id, role=role, source=SOURCE))
            audit.record(
                ctx,
                "member.add",
                target,
                project_id=project.id,
                project=name,
                details={"role": role.value, "source": SOURCE},
            )
        elif m.source == SOURCE and m.role != role:
            old, m.role = m.role, role
            audit.record(
                ctx,
                "member.update",
                target,
                project_id=m.project_id,
                project=name,
                details={"from": old.value, "to": role.value, "source": SOURCE},
            )
    for name, m in sorted(current.items()):
        if m.source == SOURCE and name not in wanted:
            ctx.db.delete(m)
            audit.record(
                ctx,
                "member.remove",
                target,
                project_id=m.project_id,
                project=name,
                details={"role": m.role.value, "source": SOURCE},
            )
    ctx.db.flush()
