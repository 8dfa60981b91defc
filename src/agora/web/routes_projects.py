"""The dashboard, the project switcher, projects and their members."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Path, Request
from starlette.responses import Response

from agora.api import schemas
from agora.errors import AgoraError, InvalidInput
from agora.models import Role
from agora.services import keys, projects
from agora.services.context import Ctx
from agora.web.forms import undo, validated
from agora.web.guards import PageCtx, mark_web, session_csrf
from agora.web.render import redirect, render

router = APIRouter(include_in_schema=False, dependencies=[Depends(mark_web), Depends(session_csrf)])
Field = Annotated[str, Form(max_length=4000)]
ProjectName = Annotated[str, Path(min_length=1, max_length=64)]
Username = Annotated[str, Path(min_length=1, max_length=64)]
ROLES = [r.value for r in Role]


@router.get("/")
def dashboard(request: Request, ctx: PageCtx) -> Response:
    current = projects.current_project(ctx)
    summary: dict[str, Any] | None = None
    if current is not None:
        project, role = current
        project_keys = keys.list_keys(ctx, project.name)
        summary = {
            "project": project,
            "role": role,
            "members": len(projects.list_members(ctx, project.name)),
            "active_keys": sum(1 for k in project_keys if k.revoked_at is None),
        }
    return render(
        request,
        ctx,
        "dashboard.html",
        summary=summary,
        public_url=ctx.runtime.settings.public_url,
        can_create=projects.can_create_projects(ctx),
    )


@router.post("/switch-project")
def switch_project(request: Request, ctx: PageCtx, project: Field = "") -> Response:
    chosen = projects.set_current_project(ctx, project)
    return redirect(request, "/", f"You are now working in {chosen.title or chosen.name}.")


@router.get("/projects")
def project_list(request: Request, ctx: PageCtx) -> Response:
    return _list(request, ctx)


@router.post("/projects")
def create_project(
    request: Request, ctx: PageCtx, name: Field = "", title: Field = "", description: Field = ""
) -> Response:
    form = {"name": name.strip(), "title": title.strip(), "description": description.strip()}
    try:
        body = validated(schemas.ProjectCreate, **form)
        project = projects.create_project(ctx, body.name, body.title, body.description)
    except AgoraError as exc:
        undo(ctx, request, exc)
        return _list(request, ctx, exc, form)
    return redirect(request, f"/projects/{project.name}", f"Project {project.name} created.")


def _list(
    request: Request, ctx: Ctx, error: AgoraError | None = None, form: dict[str, str] | None = None
) -> Response:
    return render(
        request,
        ctx,
        "projects.html",
        status=error.status if error else 200,
        rows=projects.list_projects(ctx),
        can_create=projects.can_create_projects(ctx),
        error=error.detail if error else None,
        form=form or {},
    )


@router.get("/projects/{name}")
def project_page(request: Request, ctx: PageCtx, name: ProjectName) -> Response:
    return _project(request, ctx, name)


@router.post("/projects/{name}/settings")
def update_project(
    request: Request, ctx: PageCtx, name: ProjectName, title: Field = "", description: Field = ""
) -> Response:
    try:
        body = validated(schemas.ProjectUpdate, title=title.strip(), description=description)
        projects.update_project(ctx, name, title=body.title, description=body.description)
    except AgoraError as exc:
        undo(ctx, request, exc)
        return _project(request, ctx, name, exc)
    return redirect(request, f"/projects/{name}", "Project details saved.")


@router.post("/projects/{name}/delete")
def delete_project(
    request: Request, ctx: PageCtx, name: ProjectName, confirm: Field = ""
) -> Response:
    try:
        if confirm.strip() != name:
            raise InvalidInput(f"Type the project name ({name}) to confirm the deletion")
        projects.delete_project(ctx, name)
    except AgoraError as exc:
        undo(ctx, request, exc)
        return _project(request, ctx, name, exc)
    return redirect(request, "/projects", f"Project {name} was deleted.")


@router.post("/projects/{name}/members")
def add_member(
    request: Request, ctx: PageCtx, name: ProjectName, username: Field = "", role: Field = ""
) -> Response:
    try:
        body = validated(schemas.MemberAdd, username=username.strip(), role=role or "member")
        projects.add_member(ctx, name, body.username, body.role)
    except AgoraError as exc:
        undo(ctx, request, exc)
        return _project(request, ctx, name, exc, {"username": username, "role": role})
    return redirect(request, f"/projects/{name}", f"{body.username} was added as {body.role}.")


@router.post("/projects/{name}/members/{username}/role")
def change_role(
    request: Request, ctx: PageCtx, name: ProjectName, username: Username, role: Field = ""
) -> Response:
    try:
        body = validated(schemas.MemberUpdate, role=role)
        projects.change_role(ctx, name, username, body.role)
    except AgoraError as exc:
        undo(ctx, request, exc)
        return _project(request, ctx, name, exc)
    return redirect(request, f"/projects/{name}", f"{username} is now {body.role}.")


@router.post("/projects/{name}/members/{username}/remove")
def remove_member(
    request: Request, ctx: PageCtx, name: ProjectName, username: Username
) -> Response:
    assert ctx.principal is not None
    try:
        projects.remove_member(ctx, name, username)
    except AgoraError as exc:
        undo(ctx, request, exc)
        return _project(request, ctx, name, exc)
    if username == ctx.principal.username and not ctx.principal.is_admin:
        return redirect(request, "/projects", f"You left {name}.")
    return redirect(request, f"/projects/{name}", f"{username} was removed from {name}.")


def _project(
    request: Request,
    ctx: Ctx,
    name: str,
    error: AgoraError | None = None,
    form: dict[str, str] | None = None,
) -> Response:
    project, role = projects.get_project(ctx, name)
    return render(
        request,
        ctx,
        "project.html",
        status=error.status if error else 200,
        project=project,
        role=role,
        is_owner=role == Role.owner,
        members=projects.list_members(ctx, name),
        roles=ROLES,
        error=error.detail if error else None,
        form=form or {"role": "member"},
    )
