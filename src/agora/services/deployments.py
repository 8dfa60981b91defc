"""Deployments: launch from a template, list, stop, delete; quotas; the runtime's announcement.

The orchestrator (agora.deployments.orchestrator) does the work on the backends; these calls
only record what people want, after checking who they are, what the template allows and what
the project may still use.
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from agora.deployments.backends import SubmitRefused
from agora.deployments.templates import Template, render, validate_inputs
from agora.errors import Conflict, Forbidden, InvalidInput, NotFound, QuotaExceeded, Unauthenticated
from agora.models import (
    Deployment,
    DeploymentEvent,
    DeploymentState,
    Project,
    ProjectQuota,
    Role,
    TemplateGrant,
)
from agora.services import access, audit
from agora.services.context import Ctx

ACTIVE = [s for s in DeploymentState if not s.terminal]


def new_id() -> str:
    return "d" + base64.b32encode(secrets.token_bytes(10)).decode().lower().rstrip("=")[:12]


# --- templates --------------------------------------------------------------------------------


def _granted(ctx: Ctx, name: str) -> set[int] | None:
    ids = set(
        ctx.db.scalars(select(TemplateGrant.project_id).where(TemplateGrant.template == name))
    )
    return ids or None


def templates_for(ctx: Ctx, project_name: str) -> list[Template]:
    project, _ = access.project_access(ctx, project_name, Role.viewer, write=False)
    return [t for t in ctx.runtime.templates.values() if _usable(ctx, t.name, project)]


def _usable(ctx: Ctx, name: str, project: Project) -> bool:
    granted = _granted(ctx, name)
    return granted is None or project.id in granted


def all_templates(ctx: Ctx) -> list[Template]:
    access.principal(ctx)
    return sorted(ctx.runtime.templates.values(), key=lambda t: t.name)


def get_template(ctx: Ctx, name: str) -> Template:
    access.principal(ctx)
    template = ctx.runtime.templates.get(name)
    if template is None:
        raise NotFound(f"There is no template '{name}'")
    return template


def grant_template(ctx: Ctx, name: str, projects: list[str]) -> list[str]:
    """Limit a template to some projects (an empty list makes it available to all again)."""
    access.require_admin(ctx)
    get_template(ctx, name)
    ids = []
    for project_name in projects:
        ids.append(access.project_by_name(ctx, project_name).id)
    for grant in ctx.db.scalars(select(TemplateGrant).where(TemplateGrant.template == name)):
        ctx.db.delete(grant)
    ctx.db.flush()
    for pid in ids:
        ctx.db.add(TemplateGrant(template=name, project_id=pid))
    audit.record(ctx, "template.grant", f"template:{name}", details={"projects": projects})
    return projects


def template_grants(ctx: Ctx, name: str) -> list[str]:
    access.require_admin(ctx)
    get_template(ctx, name)
    return list(
        ctx.db.scalars(
            select(Project.name)
            .join(TemplateGrant, TemplateGrant.project_id == Project.id)
            .where(TemplateGrant.template == name)
            .order_by(Project.name)
        )
    )


# --- quotas -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    deployments: int
    cpus: int
    memory_mb: int
    gpus: int


def quota_of(ctx: Ctx, project: Project) -> Usage:
    s = ctx.runtime.settings
    row = ctx.db.get(ProjectQuota, project.id)

    def pick(value: int | None, default: int) -> int:
        return default if value is None else value

    return Usage(
        deployments=pick(row.deployments if row else None, s.quota_deployments),
        cpus=pick(row.cpus if row else None, s.quota_cpus),
        memory_mb=pick(row.memory_mb if row else None, s.quota_memory_mb),
        gpus=pick(row.gpus if row else None, s.quota_gpus),
    )


def usage_of(ctx: Ctx, project: Project) -> Usage:
    row = ctx.db.execute(
        select(
            func.count(),
            func.coalesce(func.sum(Deployment.cpus), 0),
            func.coalesce(func.sum(Deployment.memory_mb), 0),
            func.coalesce(func.sum(Deployment.gpus), 0),
        ).where(Deployment.project_id == project.id, Deployment.state.in_(ACTIVE))
    ).one()
    return Usage(int(row[0]), int(row[1]), int(row[2]), int(row[3]))


def get_quota(ctx: Ctx, project_name: str) -> tuple[Usage, Usage]:
    project, _ = access.project_access(ctx, project_name, Role.viewer, write=False)
    return quota_of(ctx, project), usage_of(ctx, project)


def set_quota(ctx: Ctx, project_name: str, limits: dict[str, int | None]) -> Usage:
    access.require_admin(ctx)
    project = access.project_by_name(ctx, project_name)
    row = ctx.db.get(ProjectQuota, project.id)
    if row is None:
        row = ProjectQuota(project_id=project.id)
        ctx.db.add(row)
    for key, value in limits.items():
        setattr(row, key, value)
    ctx.db.flush()
    audit.record(
        ctx,
        "quota.update",
        f"project:{project.name}",
        project_id=project.id,
        project=project.name,
        details=limits,
    )
    return quota_of(ctx, project)


def _check_quota(ctx: Ctx, project: Project, cpus: int, memory_mb: int, gpus: int) -> None:
    # Two launches at once must not both fit in the room left for one: on PostgreSQL the
    # project's row is locked until this transaction ends (SQLite's write transactions take the
    # database's lock at BEGIN, one at a time already).
    ctx.db.execute(select(Project.id).where(Project.id == project.id).with_for_update())
    limit, used = quota_of(ctx, project), usage_of(ctx, project)
    checks = [
        ("concurrent deployments", used.deployments + 1, limit.deployments, used.deployments, ""),
        ("CPUs", used.cpus + cpus, limit.cpus, used.cpus, ""),
        ("memory", used.memory_mb + memory_mb, limit.memory_mb, used.memory_mb, " MiB"),
        ("GPUs", used.gpus + gpus, limit.gpus, used.gpus, ""),
    ]
    for what, wanted, cap, current, unit in checks:
        if wanted > cap:
            raise QuotaExceeded(
                f"Project '{project.name}' may use {cap}{unit} {what}; {current}{unit} in use by "
                f"active deployments, and this needs {wanted - current}{unit} more"
            )


# --- deployments ------------------------------------------------------------------------------


def _backends_for(ctx: Ctx, project: Project, requested: list[str] | None) -> list[str]:
    configured = {b.name: b for b in ctx.runtime.settings.backends}
    if requested:
        for name in requested:
            if name not in configured:
                raise InvalidInput(
                    f"backends: there is no backend '{name}' (have: {', '.join(configured)})"
                )
            if not configured[name].allows(project.name):
                raise Forbidden(f"Project '{project.name}' may not use backend '{name}'")
        if len(set(requested)) != len(requested):
            raise InvalidInput("backends: a backend is named twice")
        return requested
    allowed = [b.name for b in ctx.runtime.settings.backends if b.allows(project.name)]
    if not allowed:
        raise Forbidden(f"No backend is open to project '{project.name}'; ask an administrator")
    return allowed


def create(
    ctx: Ctx,
    project_name: str,
    template_name: str,
    inputs: dict[str, Any],
    name: str | None = None,
    backends: list[str] | None = None,
) -> Deployment:
    p = access.principal(ctx)
    project, _ = access.project_access(ctx, project_name, Role.member, write=True)
    template = ctx.runtime.templates.get(template_name)
    if template is None or not _usable(ctx, template_name, project):
        raise NotFound(f"There is no template '{template_name}' for project '{project_name}'")
    values = validate_inputs(template, inputs)
    dep_id = new_id()
    rendered = render(template, values, {"id": dep_id, "project": project.name})
    order = _backends_for(ctx, project, backends)
    reasons = []
    for backend_name in order:
        try:
            ctx.runtime.backends[backend_name].check_resources(rendered.resources)
            break
        except SubmitRefused as exc:
            reasons.append(f"{backend_name}: {exc}")
    else:
        raise InvalidInput("No allowed backend can run this: " + "; ".join(reasons))
    r = rendered.resources
    _check_quota(ctx, project, r.cpus, r.memory_mb, r.gpus)
    secret_names = {k for k, v in template.inputs.items() if v.type == "secret"}
    secret_values = {k: v for k, v in values.items() if k in secret_names and v is not None}
    dep = Deployment(
        id=dep_id,
        project_id=project.id,
        owner_id=p.user_id,
        name=name or template.name,
        template=template.name,
        kind=template.kind,
        inputs={k: v for k, v in values.items() if k not in secret_names},
        secret_inputs=ctx.runtime.keyring.encrypt(json.dumps(secret_values))
        if secret_values
        else None,
        cpus=r.cpus,
        memory_mb=r.memory_mb,
        gpus=r.gpus,
        gpu_type=r.gpu_type,
        time_limit_minutes=r.time_limit_minutes,
        backends=order,
        desired="running",
        state=DeploymentState.pending,
        readiness_path=rendered.readiness_path,
        strip_prefix=bool(template.service and template.service.strip_prefix),
        token=ctx.runtime.keyring.encrypt(secrets.token_urlsafe(32)),
    )
    ctx.db.add(dep)
    ctx.db.add(
        DeploymentEvent(
            deployment_id=dep_id,
            state="pending",
            message=f"requested by {p.username} from template '{template.name}'",
        )
    )
    ctx.db.flush()
    audit.record(
        ctx,
        "deployment.create",
        f"deployment:{dep_id}",
        project_id=project.id,
        project=project.name,
        details={
            "template": template.name,
            "backends": order,
            "cpus": r.cpus,
            "memory_mb": r.memory_mb,
            "gpus": r.gpus,
        },
    )
    ctx.db.info.setdefault("after_commit", []).append(ctx.runtime.wake)
    return dep


def _get(ctx: Ctx, project: Project, dep_id: str) -> Deployment:
    dep = ctx.db.get(Deployment, dep_id)
    if dep is None or dep.project_id != project.id:
        raise NotFound(f"Deployment '{dep_id}' does not exist in project '{project.name}'")
    return dep


def list_deployments(ctx: Ctx, project_name: str) -> list[Deployment]:
    project, _ = access.project_access(ctx, project_name, Role.viewer, write=False)
    return list(
        ctx.db.scalars(
            select(Deployment)
            .where(Deployment.project_id == project.id)
            .order_by(Deployment.created_at.desc())
        )
    )


def get(ctx: Ctx, project_name: str, dep_id: str) -> Deployment:
    project, _ = access.project_access(ctx, project_name, Role.viewer, write=False)
    return _get(ctx, project, dep_id)


def _changeable(ctx: Ctx, project_name: str, dep_id: str) -> tuple[Project, Deployment]:
    """Members change their own deployments; owners and admins change any."""
    p = access.principal(ctx)
    project, role = access.project_access(ctx, project_name, Role.member, write=True)
    dep = _get(ctx, project, dep_id)
    if dep.owner_id != p.user_id and role != Role.owner:
        raise Forbidden(f"Deployment '{dep_id}' belongs to someone else; ask a project owner")
    return project, dep


def stop(ctx: Ctx, project_name: str, dep_id: str) -> Deployment:
    project, dep = _changeable(ctx, project_name, dep_id)
    if dep.desired == "stopped" or dep.state.terminal:
        return dep
    dep.desired = "stopped"
    ctx.db.add(
        DeploymentEvent(
            deployment_id=dep.id,
            state=dep.state.value,
            message=f"stop requested by {ctx.actor_name}",
        )
    )
    audit.record(
        ctx, "deployment.stop", f"deployment:{dep.id}", project_id=project.id, project=project.name
    )
    ctx.db.info.setdefault("after_commit", []).append(ctx.runtime.wake)
    return dep


def delete(ctx: Ctx, project_name: str, dep_id: str) -> None:
    project, dep = _changeable(ctx, project_name, dep_id)
    if not dep.state.terminal:
        raise Conflict(f"Deployment '{dep_id}' is {dep.state.value}; stop it before deleting it")
    ctx.db.delete(dep)
    audit.record(
        ctx,
        "deployment.delete",
        f"deployment:{dep.id}",
        project_id=project.id,
        project=project.name,
    )


def announce(ctx: Ctx, dep_id: str, token: str, host: str, port: int) -> None:
    """A runtime tells where its service listens, proving itself with the deployment token."""
    dep = ctx.db.get(Deployment, dep_id)
    expected = ctx.runtime.keyring.decrypt(dep.token).encode() if dep else b""
    if dep is None or not hmac.compare_digest(expected, token.encode()):
        raise Unauthenticated("Unknown deployment or wrong deployment token")
    if dep.state not in (DeploymentState.submitted, DeploymentState.starting):
        raise Conflict(f"Deployment '{dep_id}' is {dep.state.value}; it takes no announcement now")
    dep.address = f"{host}:{port}"
    ctx.db.add(
        DeploymentEvent(
            deployment_id=dep.id,
            state=dep.state.value,
            message=f"service listens on its node (port {port})",
        )
    )
    ctx.db.info.setdefault("after_commit", []).append(ctx.runtime.wake)


def service_token(ctx: Ctx, dep: Deployment) -> str:
    return ctx.runtime.keyring.decrypt(dep.token)
