"""Tenancy rules, enforced here for every caller (API, web pages, CLI alike)."""

from __future__ import annotations

from sqlalchemy import select

from agora.errors import ActionRequired, Forbidden, NotFound, Unauthenticated
from agora.models import Membership, Project, Role
from agora.services.context import Ctx, Principal


def principal(ctx: Ctx, *, allow_restricted: bool = False) -> Principal:
    p = ctx.principal
    if p is None:
        raise Unauthenticated("Sign in, or send an API key as 'Authorization: Bearer agora_…'")
    if p.restriction and not allow_restricted:
        if p.restriction == "password":
            raise ActionRequired("Change your one-time password first (POST /api/v1/me/password)")
        raise ActionRequired("Enrol a TOTP authenticator first: it is required on this platform")
    return p


def require_scope(p: Principal, scope: str) -> None:
    allowed = p.scopes
    if scope == "read" and ("read" in allowed or "manage" in allowed):
        return
    if scope not in allowed:
        raise Forbidden(f"This API key lacks the '{scope}' scope")


def require_admin(ctx: Ctx) -> Principal:
    p = principal(ctx)
    if not p.is_admin:
        raise Forbidden("Only platform administrators may do this")
    return p


def project_by_name(ctx: Ctx, name: str) -> Project:
    project = ctx.db.scalar(select(Project).where(Project.name == name))
    if project is None:
        raise NotFound(f"Project '{name}' does not exist or you are not a member of it")
    return project


def role_in(ctx: Ctx, project: Project, user_id: int) -> Role | None:
    return ctx.db.scalar(
        select(Membership.role).where(
            Membership.project_id == project.id, Membership.user_id == user_id
        )
    )


def project_access(ctx: Ctx, name: str, need: Role, *, write: bool) -> tuple[Project, Role]:
    """The project, if the caller holds at least role ``need`` in it (admins hold all).

    Projects the caller cannot see answer 404, exactly like projects that do not exist.
    """
    p = principal(ctx)
    project = project_by_name(ctx, name)
    if p.project_id is not None and p.project_id != project.id and not p.is_admin:
        raise NotFound(f"Project '{name}' does not exist or you are not a member of it")
    require_scope(p, "manage" if write else "read")
    if p.is_admin:
        return project, Role.owner
    role = role_in(ctx, project, p.user_id)
    if role is None:
        raise NotFound(f"Project '{name}' does not exist or you are not a member of it")
    if role.rank < need.rank:
        raise Forbidden(
            f"Your role in project '{name}' is {role.value}; this needs {need.value} or higher"
        )
    return project, role
