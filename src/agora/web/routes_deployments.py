"""Deployments in the web UI: the project's list, launching from a template, one deployment.

The pages call the deployment services like the REST API does; live updates come from the
browser (agora.js) re-fetching the page's live section and polling the API's log endpoint.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.datastructures import FormData
from starlette.responses import Response

from agora.api import schemas
from agora.deployments.templates import InputSpec, Template
from agora.errors import AgoraError, InvalidInput, NotFound, QuotaExceeded
from agora.models import Deployment, Role
from agora.services import deployments, projects
from agora.services.context import Ctx
from agora.web.forms import undo, validated
from agora.web.guards import PageCtx, mark_web, session_csrf
from agora.web.render import redirect, render

router = APIRouter(include_in_schema=False, dependencies=[Depends(mark_web), Depends(session_csrf)])
DeploymentId = Annotated[str, Path(min_length=1, max_length=16, pattern=r"^[a-z0-9]+$")]
TemplateName = Annotated[str, Path(min_length=1, max_length=64)]
ProjectQuery = Annotated[str | None, Query(min_length=1, max_length=64)]
#: Strings longer than this (without a pattern) get a multi-line box, e.g. a command.
_TEXTAREA_OVER = 256
_CONTROLS = {"integer": "number", "number": "number", "boolean": "checkbox", "choice": "select"}


async def form_data(request: Request) -> FormData:
    """The posted form (already parsed by the CSRF check), for handlers with dynamic fields."""
    return await request.form()


FormDep = Annotated[FormData, Depends(form_data)]


@dataclass(frozen=True)
class InputField:
    """One template input as a form control."""

    name: str
    control: str  # number, checkbox, select, password, text or textarea
    title: str
    help: str
    required: bool
    value: str = ""
    checked: bool = False
    min: str | None = None
    max: str | None = None
    step: str | None = None
    pattern: str | None = None
    maxlength: int | None = None
    choices: list[str] = field(default_factory=list)
    error: str | None = None


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _input_field(name: str, spec: InputSpec, raw: str | None, error: str | None) -> InputField:
    control = _CONTROLS.get(spec.type, "password" if spec.type == "secret" else "text")
    if control == "text" and spec.pattern is None and spec.max_length > _TEXTAREA_OVER:
        control = "textarea"
    value = _text(spec.default) if raw is None else raw
    return InputField(
        name=name,
        control=control,
        title=spec.title or name.replace("_", " ").capitalize(),
        help=spec.help,
        required=bool(spec.required) and control != "checkbox",
        value="" if control == "password" else value,  # a secret is never sent back
        checked=value.lower() in ("true", "yes", "on", "1"),
        min=_text(spec.min) or None,
        max=_text(spec.max) or None,
        step="1" if spec.type == "integer" else "any" if spec.type == "number" else None,
        pattern=spec.pattern,
        maxlength=spec.max_length if control in ("text", "textarea", "password") else None,
        choices=list(spec.choices or []),
        error=error,
    )


def age(moment: dt.datetime | None, now: dt.datetime | None = None) -> str:
    """'40 s', '5 min', '3 h', '2 d': how long ago, coarse enough not to change every poll."""
    if moment is None:
        return "—"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    seconds = max(0, int(((now or dt.datetime.now(dt.UTC)) - moment).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return "< 1 min"


def clock(moment: dt.datetime) -> str:
    """'14:03:27' (UTC): events of one deployment are usually minutes apart."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).strftime("%H:%M:%S")


def _project_name(ctx: Ctx, requested: str | None) -> str | None:
    if requested:
        return requested
    current = projects.current_project(ctx)
    return current[0].name if current else None


def _working_project(ctx: Ctx, requested: str | None) -> str:
    name = _project_name(ctx, requested)
    if name is None:
        raise NotFound("Choose or join a project before launching deployments")
    return name


def _can_launch(ctx: Ctx, project: str) -> bool:
    assert ctx.principal is not None
    _, role = projects.get_project(ctx, project)
    return ctx.principal.is_admin or (role is not None and role.rank >= Role.member.rank)


def _quota(ctx: Ctx, project: str) -> dict[str, tuple[int, int]]:
    limits, used = deployments.get_quota(ctx, project)
    return {k: (getattr(used, k), v) for k, v in limits.__dict__.items()}


# --- the list ---------------------------------------------------------------------------------


@router.get("/deployments")
def deployment_list(request: Request, ctx: PageCtx, project: ProjectQuery = None) -> Response:
    name = _project_name(ctx, project)
    if name is None:
        return render(request, ctx, "deployments.html", project=None, rows=[])
    return render(
        request,
        ctx,
        "deployments.html",
        project=projects.get_project(ctx, name)[0],
        rows=deployments.list_deployments(ctx, name),
        quota=_quota(ctx, name),
        can_launch=_can_launch(ctx, name),
        age=age,
    )


# --- launching --------------------------------------------------------------------------------


@router.get("/deployments/new")
def choose_template(request: Request, ctx: PageCtx, project: ProjectQuery = None) -> Response:
    name = _working_project(ctx, project)
    return render(
        request,
        ctx,
        "launch.html",
        project=projects.get_project(ctx, name)[0],
        templates=sorted(deployments.templates_for(ctx, name), key=lambda t: t.title.lower()),
    )


@router.get("/deployments/new/{template}")
def launch_form(
    request: Request, ctx: PageCtx, template: TemplateName, project: ProjectQuery = None
) -> Response:
    name = _working_project(ctx, project)
    return _form(request, ctx, name, _template(ctx, name, template))


@router.post("/deployments/new/{template}")
def launch(request: Request, ctx: PageCtx, template: TemplateName, form: FormDep) -> Response:
    name = _working_project(ctx, _one(form, "project") or None)
    chosen = _template(ctx, name, template)
    raw = {n: _one(form, "in_" + n) for n in chosen.inputs}
    submitted = {n: v for n, v in raw.items() if v.strip() != ""}
    dep_name, backend = _one(form, "name").strip(), _one(form, "backend")
    try:
        body = validated(
            schemas.DeploymentCreate,
            template=chosen.name,
            name=dep_name or None,
            inputs=submitted,
            backends=[backend] if backend else None,
        )
        dep = deployments.create(ctx, name, body.template, body.inputs, body.name, body.backends)
    except AgoraError as exc:
        undo(ctx, request, exc)
        values = {"name": dep_name, "backend": backend}
        return _form(request, ctx, name, chosen, exc, raw, values)
    return redirect(request, _url(ctx, dep), f"Deployment {dep.name} requested.")


def _one(form: FormData, key: str) -> str:
    """The last value sent under ``key`` (a checkbox follows its hidden 'false')."""
    values = [v for v in form.getlist(key) if isinstance(v, str)]
    return values[-1] if values else ""


def _template(ctx: Ctx, project: str, name: str) -> Template:
    for t in deployments.templates_for(ctx, project):
        if t.name == name:
            return t
    raise NotFound(f"There is no template '{name}' for project '{project}'")


def _form(
    request: Request,
    ctx: Ctx,
    project: str,
    template: Template,
    error: AgoraError | None = None,
    raw: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
) -> Response:
    field_name = str(error.extra.get("field", "")) if isinstance(error, InvalidInput) else ""
    message = error.detail if error else None
    inputs = [
        _input_field(
            n,
            spec,
            None if raw is None else raw.get(n, ""),
            message.removeprefix(f"{n}: ") if message and n == field_name else None,
        )
        for n, spec in template.inputs.items()
    ]
    return render(
        request,
        ctx,
        "launch_form.html",
        status=error.status if error else 200,
        project=projects.get_project(ctx, project)[0],
        chosen=template,
        inputs=inputs,
        values=values or {},
        backends=[b.name for b in ctx.runtime.settings.backends if b.allows(project)],
        quota=_quota(ctx, project),
        error=None if field_name in template.inputs else message,
        quota_error=isinstance(error, QuotaExceeded),
        field_error=bool(field_name in template.inputs),
    )


# --- one deployment ---------------------------------------------------------------------------


@router.get("/deployments/{dep_id}")
def deployment_page(
    request: Request, ctx: PageCtx, dep_id: DeploymentId, project: ProjectQuery = None
) -> Response:
    return _detail(request, ctx, _find(ctx, dep_id, project))


@router.post("/deployments/{dep_id}/stop")
def stop(request: Request, ctx: PageCtx, dep_id: DeploymentId, form: FormDep) -> Response:
    dep = _find(ctx, dep_id, _one(form, "project") or None)
    try:
        deployments.stop(ctx, dep.project.name, dep.id)
    except AgoraError as exc:
        undo(ctx, request, exc)
        return _detail(request, ctx, _find(ctx, dep_id, _one(form, "project") or None), exc)
    return redirect(request, _url(ctx, dep), f"Stopping {dep.name}.")


@router.post("/deployments/{dep_id}/delete")
def delete(request: Request, ctx: PageCtx, dep_id: DeploymentId, form: FormDep) -> Response:
    dep = _find(ctx, dep_id, _one(form, "project") or None)
    project, dep_name = dep.project.name, dep.name
    try:
        deployments.delete(ctx, project, dep.id)
    except AgoraError as exc:
        undo(ctx, request, exc)
        return _detail(request, ctx, _find(ctx, dep_id, project), exc)
    suffix = "" if project == _project_name(ctx, None) else f"?project={project}"
    return redirect(request, f"/deployments{suffix}", f"Deployment {dep_name} was deleted.")


def _find(ctx: Ctx, dep_id: str, requested: str | None) -> Deployment:
    """The deployment in the named project, else in the current one, else in any visible one."""
    if requested:
        return deployments.get(ctx, requested, dep_id)
    current = _project_name(ctx, None)
    names = [current] if current else []
    names += [p.name for p, _ in projects.list_projects(ctx) if p.name != current]
    for name in names:
        try:
            return deployments.get(ctx, name, dep_id)
        except NotFound:
            continue
    raise NotFound(f"Deployment '{dep_id}' does not exist in any of your projects")


def _url(ctx: Ctx, dep: Deployment) -> str:
    name = dep.project.name
    suffix = "" if name == _project_name(ctx, None) else f"?project={name}"
    return f"/deployments/{dep.id}{suffix}"


def _detail(
    request: Request, ctx: Ctx, dep: Deployment, error: AgoraError | None = None
) -> Response:
    assert ctx.principal is not None
    _, role = projects.get_project(ctx, dep.project.name)
    member = role is not None and role.rank >= Role.member.rank
    mine = member and dep.owner_id == ctx.principal.user_id
    can_change = ctx.principal.is_admin or role == Role.owner or mine
    return render(
        request,
        ctx,
        "deployment.html",
        status=error.status if error else 200,
        dep=dep,
        project=dep.project,
        can_change=can_change,
        ended=dep.state.terminal,
        stopping=dep.desired == "stopped" and not dep.state.terminal,
        error=error.detail if error else None,
        age=age,
        clock=clock,
    )
