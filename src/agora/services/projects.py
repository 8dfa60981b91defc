"""Projects (tenants) and their members."""

from __future__ import annotations

from sqlalchemy import func, select

from agora.errors import Conflict, Forbidden, InvalidInput, NotFound
from agora.models import (
    AuthSession,
    Deployment,
    DeploymentState,
    Membership,
    Project,
    Role,
    User,
)
from agora.services import access, audit, system, users
from agora.services.context import Ctx


def list_projects(ctx: Ctx) -> list[tuple[Project, Role | None]]:
    """Projects the caller can see, with the caller's role (None where not a member)."""
    p = access.principal(ctx)
    access.require_scope(p, "read")
    roles = dict(
        ctx.db.execute(
            select(Membership.project_id, Membership.role).where(Membership.user_id == p.user_id)
        ).all()
    )
    stmt = select(Project).order_by(Project.name)
    if p.is_admin:  # admins see every project, whatever key or session they use
        return [(proj, roles.get(proj.id)) for proj in ctx.db.scalars(stmt)]
    if p.project_id is not None:
        stmt = stmt.where(Project.id == p.project_id)
    else:
        stmt = stmt.where(Project.id.in_(roles.keys()))
    return [(proj, roles.get(proj.id)) for proj in ctx.db.scalars(stmt)]


def get_project(ctx: Ctx, name: str) -> tuple[Project, Role]:
    return access.project_access(ctx, name, Role.viewer, write=False)


def _creation_refusal(ctx: Ctx) -> str | None:
    p = access.principal(ctx)
    if p.via == "api_key" and not p.is_admin:
        return "API keys are bound to one project and cannot create projects"
    if not p.is_admin and not system.get(ctx, "users_can_create_projects"):
        return "Only platform administrators may create projects here"
    return None


def can_create_projects(ctx: Ctx) -> bool:
    """Whether ``create_project`` would let the caller through (for showing the form)."""
    return _creation_refusal(ctx) is None


def current_project(ctx: Ctx) -> tuple[Project, Role | None] | None:
    """The project the session works in: the one it chose, else its first membership, else the
    first project it can see. None when it sees none."""
    p = access.principal(ctx)
    visible = list_projects(ctx)
    chosen = p.project_id
    if p.session_id is not None:
        session = ctx.db.get(AuthSession, p.session_id)
        chosen = session.current_project_id if session else None
    for project, role in visible:
        if project.id == chosen:
            return project, role
    member_of = [(project, role) for project, role in visible if role is not None]
    return (member_of or visible or [None])[0]


def set_current_project(ctx: Ctx, name: str) -> Project:
    """Remember, for this session, the project it works in."""
    p = access.principal(ctx)
    if p.session_id is None:
        raise InvalidInput("Only signed-in sessions have a current project")
    project, _ = access.project_access(ctx, name, Role.viewer, write=False)
    session = ctx.db.get(AuthSession, p.session_id)
    assert session is not None
    session.current_project_id = project.id
    return project


def create_project(ctx: Ctx, name: str, title: str = "", description: str = "") -> Project:
    p = access.principal(ctx)
    refusal = _creation_refusal(ctx)
    if refusal:
        raise Forbidden(refusal)
    project = _insert(ctx, name, title, description)
    # The creator owns it, unless an admin creates it on someone's behalf (they add owners).
    if not p.is_admin:
        ctx.db.add(Membership(project_id=project.id, user_id=p.user_id, role=Role.owner))
    return project


def _insert(ctx: Ctx, name: str, title: str, description: str) -> Project:
    taken = ctx.db.scalar(select(func.count()).where(func.lower(Project.name) == name.lower()))
    if taken:
        raise Conflict(f"A project named '{name}' already exists")
    project = Project(name=name, title=title or name, description=description)
    ctx.db.add(project)
    ctx.db.flush()
    audit.record(ctx, "project.create", f"project:{name}", project_id=project.id, project=name)
    return project


def update_project(
    ctx: Ctx, name: str, *, title: str | None = None, description: str | None = None
) -> Project:
    project, _ = access.project_access(ctx, name, Role.owner, write=True)
    changes = {}
    if title is not None and title != project.title:
        project.title = changes["title"] = title
    if description is not None and description != project.description:
        project.description = changes["description"] = description
    if changes:
        audit.record(
            ctx,
            "project.update",
            f"project:{name}",
            project_id=project.id,
            project=name,
            details=changes,
        )
    return project


def delete_project(ctx: Ctx, name: str) -> None:
    project, _ = access.project_access(ctx, name, Role.owner, write=True)
    active = ctx.db.scalar(
        select(func.count()).where(
            Deployment.project_id == project.id,
            Deployment.state.notin_([DeploymentState.stopped, DeploymentState.failed]),
        )
    )
    if active:
        raise Conflict(
            f"Project '{name}' has {active} active deployment(s); stop them before deleting it"
        )
    audit.record(ctx, "project.delete", f"project:{name}", project_id=project.id, project=name)
    ctx.db.delete(project)


# --- members ----------------------------------------------------------------------------------


def list_members(ctx: Ctx, name: str) -> list[Membership]:
    project, _ = access.project_access(ctx, name, Role.viewer, write=False)
    return list(
        ctx.db.scalars(
            select(Membership)
            .join(User)
            .where(Membership.project_id == project.id)
            .order_by(User.username)
        )
    )


def _owners(ctx: Ctx, project: Project) -> int:
    return (
        ctx.db.scalar(
            select(func.count()).where(
                Membership.project_id == project.id, Membership.role == Role.owner
            )
        )
        or 0
    )


def _membership(ctx: Ctx, project: Project, username: str) -> Membership:
    m = ctx.db.scalar(
        select(Membership)
        .join(User)
        .where(Membership.project_id == project.id, User.username == username)
    )
    if m is None:
        raise NotFound(f"User '{username}' is not a member of project '{project.name}'")
    return m


def add_member(ctx: Ctx, name: str, username: str, role: Role) -> Membership:
    project, _ = access.project_access(ctx, name, Role.owner, write=True)
    user = users.by_username(ctx, username)
    existing = ctx.db.scalar(
        select(Membership).where(Membership.project_id == project.id, Membership.user_id == user.id)
    )
    if existing is not None:
        raise Conflict(
            f"User '{username}' is already a {existing.role.value} of '{name}'; change the role"
        )
    m = Membership(project_id=project.id, user_id=user.id, role=role)
    ctx.db.add(m)
    ctx.db.flush()
    audit.record(
        ctx,
        "member.add",
        f"user:{username}",
        project_id=project.id,
        project=name,
        details={"role": role.value},
    )
    return m


def change_role(ctx: Ctx, name: str, username: str, role: Role) -> Membership:
    project, _ = access.project_access(ctx, name, Role.owner, write=True)
    m = _membership(ctx, project, username)
    if m.role == role:
        return m
    if m.role == Role.owner and _owners(ctx, project) <= 1:
        raise InvalidInput(f"'{username}' is the last owner of '{name}'; add another owner first")
    old, m.role, m.source = m.role, role, "local"
    audit.record(
        ctx,
        "member.update",
        f"user:{username}",
        project_id=project.id,
        project=name,
        details={"from": old.value, "to": role.value},
    )
    return m


def remove_member(ctx: Ctx, name: str, username: str) -> None:
    p = access.principal(ctx)
    project = access.project_by_name(ctx, name)
    # Anyone may leave a project; removing others needs ownership.
    if not (p.username == username and p.project_id is None):
        project, _ = access.project_access(ctx, name, Role.owner, write=True)
    else:
        access.project_access(ctx, name, Role.viewer, write=False)
    m = _membership(ctx, project, username)
    if m.role == Role.owner and _owners(ctx, project) <= 1:
        raise InvalidInput(f"'{username}' is the last owner of '{name}'; add another owner first")
    ctx.db.delete(m)
    audit.record(ctx, "member.remove", f"user:{username}", project_id=project.id, project=name)


def ensure_project(ctx: Ctx, name: str) -> Project:
    """Used by bootstrap and single sign-on: the project, created if missing (no access check)."""
    project = ctx.db.scalar(select(Project).where(Project.name == name))
    return project if project is not None else _insert(ctx, name, name, "")
