"""Gateway models, their grants, rate limits and usage: what operators and projects manage.

Operators (platform admins) register models and decide which projects may use them; project
owners may limit their own keys further. Every change is audited; the gateway picks changes up
from its change hook (agora.gateway.directory), not from these functions.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import func, select

from agora.deployments.templates import validate_inputs
from agora.errors import Conflict, Forbidden, InvalidInput, NotFound
from agora.models import (
    ApiKey,
    Deployment,
    GatewayLoad,
    GatewayModel,
    ModelGrant,
    Project,
    RateLimit,
    Role,
    UsageRecord,
)
from agora.services import access, audit
from agora.services.context import Ctx

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}$")
LIMIT_FIELDS = ("rpm", "tpm", "tokens_per_day", "tokens_per_month")
SETTABLE = {
    "description",
    "public",
    "enabled",
    "upstream_model",
    "external_url",
    "external_key",
    "inputs",
    "backends",
    "min_replicas",
    "max_replicas",
    "target_inflight",
    "idle_seconds",
    "replace_before_seconds",
    "connect_timeout",
    "first_byte_timeout",
    "total_timeout",
    "queue_timeout",
}


_DEFAULTS = [
    c
    for c in GatewayModel.__table__.columns
    if c.default is not None and not callable(c.default.arg) and c.key in SETTABLE | {"inputs"}
]


def _check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput("'external_url' must be an http(s) URL such as https://host/v1")
    return url.rstrip("/")


def _model(ctx: Ctx, name: str) -> GatewayModel:
    model = ctx.db.scalar(select(GatewayModel).where(GatewayModel.name == name))
    if model is None:
        raise NotFound(f"There is no model '{name}'")
    return model


def visible_to(ctx: Ctx, model: GatewayModel) -> bool:
    p = access.principal(ctx)
    if p.is_admin or model.public:
        return True
    projects = _member_projects(ctx)
    granted = set(
        ctx.db.scalars(select(ModelGrant.project_id).where(ModelGrant.model_id == model.id))
    )
    return bool(projects & granted)


def _member_projects(ctx: Ctx) -> set[int]:
    p = access.principal(ctx)
    if p.project_id is not None:
        return {p.project_id}
    from agora.models import Membership

    return set(ctx.db.scalars(select(Membership.project_id).where(Membership.user_id == p.user_id)))


def list_models(ctx: Ctx) -> list[GatewayModel]:
    models = ctx.db.scalars(select(GatewayModel).order_by(GatewayModel.name)).all()
    return [m for m in models if visible_to(ctx, m)]


def get_model(ctx: Ctx, name: str) -> GatewayModel:
    model = _model(ctx, name)
    if not visible_to(ctx, model):
        raise NotFound(f"There is no model '{name}'")
    return model


#: Replica templates by kind, when the spec names none.
DEFAULT_TEMPLATE = {"llm": "openai-cpu", "embedding": "openai-cpu", "deepaas": "deepaas-model"}


def create_model(ctx: Ctx, spec: dict[str, Any]) -> GatewayModel:
    """Register a model. Operators register any; a project member may serve a DEEPaaS module
    in their own project (its replicas count against that project's quota, and only that
    project may call it)."""
    p = access.principal(ctx)
    project: Project | None = None
    if not p.is_admin:
        if spec["kind"] != "deepaas" or spec["source"] != "deployment":
            raise Forbidden(
                "Only platform administrators may register language and embedding models or "
                "external endpoints; project members may serve DEEPaaS modules in their project"
            )
        if spec.get("public"):
            raise Forbidden("Only platform administrators may make a model public")
        if not spec.get("project"):
            raise InvalidInput("Say which of your projects serves the module ('project')")
        project, _ = access.project_access(ctx, spec["project"], Role.member, write=True)
    name = spec["name"]
    if not MODEL_NAME.match(name):
        raise InvalidInput(
            "A model name is 1-128 letters, digits and . _ : @ + -, starting with a letter or digit"
        )
    if ctx.db.scalar(select(GatewayModel.id).where(GatewayModel.name == name)):
        raise Conflict(f"A model named '{name}' exists already")
    model = GatewayModel(
        name=name,
        kind=spec["kind"],
        source=spec["source"],
        owner_id=p.user_id,
        **{c.key: c.default.arg for c in _DEFAULTS},
    )
    if spec["source"] == "external":
        if not spec.get("external_url"):
            raise InvalidInput("An external model needs 'external_url' (its base URL)")
    else:
        template_name = spec.get("template") or DEFAULT_TEMPLATE[model.kind]
        if template_name not in ctx.runtime.templates:
            raise InvalidInput(f"There is no template '{template_name}'")
        model.template = template_name
        if project is None:
            project_name = spec.get("project") or ctx.runtime.settings.bootstrap_project
            project = access.project_by_name(ctx, project_name)
        model.project_id = project.id
    changes = {k: v for k, v in spec.items() if k in SETTABLE and v is not None}
    if model.template is not None:
        inputs = dict(changes.get("inputs") or {})
        if model.template == "deepaas-model":
            # Training records and module data of this model, kept across its replicas.
            inputs.setdefault("state_dir", f".agora/modules/{name}")
        changes["inputs"] = inputs  # checked even when absent: required inputs must be there
    _apply(ctx, model, changes)
    ctx.db.add(model)
    ctx.db.flush()
    if model.kind == "deepaas" and project is not None:
        # A project that serves a module may call it (others only when granted or public).
        ctx.db.add(ModelGrant(model_id=model.id, project_id=project.id))
    audit.record(
        ctx,
        "model.create",
        f"model:{name}",
        project_id=model.project_id,
        project=project.name if project is not None else None,
        details={"source": model.source, "kind": model.kind, "template": model.template},
    )
    return model


def _manageable(ctx: Ctx, name: str) -> GatewayModel:
    """The model, if the caller may change it: operators any, project members the DEEPaaS
    modules their project serves (others answer 404 as if the model did not exist)."""
    p = access.principal(ctx)
    model = _model(ctx, name)
    if p.is_admin:
        return model
    if model.kind == "deepaas" and model.project is not None and visible_to(ctx, model):
        access.project_access(ctx, model.project.name, Role.member, write=True)
        return model
    if visible_to(ctx, model):
        raise Forbidden("Only platform administrators may change this model")
    raise NotFound(f"There is no model '{name}'")


def _apply(ctx: Ctx, model: GatewayModel, changes: dict[str, Any]) -> None:
    for key, value in changes.items():
        if key == "external_url":
            value = _check_url(value) if value else None
        elif key == "external_key":
            value = ctx.runtime.keyring.encrypt(value) if value else None
        elif key == "inputs":
            if model.template is None:
                raise InvalidInput("Only models served by deployments take template inputs")
            template = ctx.runtime.templates[model.template]
            value = validate_inputs(template, value)
        elif key == "backends":
            unknown = [b for b in value if b not in ctx.runtime.backends]
            if unknown:
                raise InvalidInput(f"Unknown backends: {', '.join(unknown)}")
        setattr(model, key, value)
    if model.min_replicas > model.max_replicas:
        raise InvalidInput("'min_replicas' must not exceed 'max_replicas'")
    if model.source == "external" and not model.external_url:
        raise InvalidInput("An external model needs 'external_url'")


def can_manage(ctx: Ctx, model: GatewayModel) -> bool:
    """Whether the caller may change the model's settings (what the web page offers)."""
    try:
        _manageable(ctx, model.name)
    except (Forbidden, NotFound):
        return False
    return True


def update_model(ctx: Ctx, name: str, changes: dict[str, Any]) -> GatewayModel:
    model = _manageable(ctx, name)
    if changes.get("public") and not access.principal(ctx).is_admin:
        raise Forbidden("Only platform administrators may make a model public")
    _apply(ctx, model, {k: v for k, v in changes.items() if k in SETTABLE})
    shown = {k: ("***" if k == "external_key" else v) for k, v in changes.items()}
    audit.record(ctx, "model.update", f"model:{name}", details={"changes": shown})
    ctx.db.info.setdefault("after_commit", []).append(ctx.runtime.wake)
    return model


def delete_model(ctx: Ctx, name: str) -> None:
    model = _manageable(ctx, name)
    for dep in ctx.db.scalars(select(Deployment).where(Deployment.model_id == model.id)):
        if not dep.state.terminal:
            dep.desired = "stopped"
    audit.record(ctx, "model.delete", f"model:{name}")
    ctx.db.delete(model)
    ctx.db.info.setdefault("after_commit", []).append(ctx.runtime.wake)


def model_projects(ctx: Ctx, name: str) -> list[str]:
    access.require_admin(ctx)
    model = _model(ctx, name)
    return sorted(
        ctx.db.scalars(
            select(Project.name)
            .join(ModelGrant, ModelGrant.project_id == Project.id)
            .where(ModelGrant.model_id == model.id)
        )
    )


def set_model_projects(ctx: Ctx, name: str, projects: list[str]) -> list[str]:
    access.require_admin(ctx)
    model = _model(ctx, name)
    wanted = {access.project_by_name(ctx, n).id: n for n in set(projects)}
    for grant in ctx.db.scalars(select(ModelGrant).where(ModelGrant.model_id == model.id)).all():
        if grant.project_id not in wanted:
            ctx.db.delete(grant)
        else:
            wanted.pop(grant.project_id)
    for project_id in wanted:
        ctx.db.add(ModelGrant(model_id=model.id, project_id=project_id))
    audit.record(ctx, "model.grant", f"model:{name}", details={"projects": sorted(set(projects))})
    ctx.db.flush()
    return model_projects(ctx, name)


# --- limits -----------------------------------------------------------------------------------


def _limit_row(ctx: Ctx, *, project_id: int | None = None, key_id: int | None = None) -> RateLimit:
    column = RateLimit.project_id if project_id is not None else RateLimit.api_key_id
    row = ctx.db.scalar(select(RateLimit).where(column == (project_id or key_id)))
    if row is None:
        row = RateLimit(project_id=project_id, api_key_id=key_id)
    return row


def _limits(row: RateLimit | None) -> dict[str, int | None]:
    return {f: getattr(row, f) if row else None for f in LIMIT_FIELDS}


def get_project_limits(ctx: Ctx, project_name: str) -> dict[str, int | None]:
    project, _ = access.project_access(ctx, project_name, Role.viewer, write=False)
    row = ctx.db.scalar(select(RateLimit).where(RateLimit.project_id == project.id))
    return _limits(row)


def _store_limits(
    ctx: Ctx, row: RateLimit, limits: dict[str, int | None], target: str, project: Project
) -> dict[str, int | None]:
    for field in LIMIT_FIELDS:
        setattr(row, field, limits.get(field))
    ctx.db.add(row)
    audit.record(
        ctx, "limits.set", target, project_id=project.id, project=project.name, details=limits
    )
    ctx.db.flush()
    return _limits(row)


def set_project_limits(
    ctx: Ctx, project_name: str, limits: dict[str, int | None]
) -> dict[str, int | None]:
    access.require_admin(ctx)
    project = access.project_by_name(ctx, project_name)
    row = _limit_row(ctx, project_id=project.id)
    return _store_limits(ctx, row, limits, f"project:{project.name}", project)


def _key(ctx: Ctx, project: Project, key_id: int) -> ApiKey:
    key = ctx.db.get(ApiKey, key_id)
    if key is None or key.project_id != project.id:
        raise NotFound(f"There is no API key {key_id} in project '{project.name}'")
    return key


def get_key_limits(ctx: Ctx, project_name: str, key_id: int) -> dict[str, int | None]:
    project, _ = access.project_access(ctx, project_name, Role.viewer, write=False)
    key = _key(ctx, project, key_id)
    return _limits(ctx.db.scalar(select(RateLimit).where(RateLimit.api_key_id == key.id)))


def set_key_limits(
    ctx: Ctx, project_name: str, key_id: int, limits: dict[str, int | None]
) -> dict[str, int | None]:
    project, _ = access.project_access(ctx, project_name, Role.owner, write=True)
    key = _key(ctx, project, key_id)
    return _store_limits(ctx, _limit_row(ctx, key_id=key.id), limits, f"key:{key.id}", project)


# --- replicas, load and usage -----------------------------------------------------------------


@dataclass
class ModelStatus:
    model: GatewayModel
    replicas: list[Deployment]
    inflight: int
    queued: int
    per_replica: dict[str, int]
    #: Trainings running per replica (served modules), as the gateways' health checks saw.
    trainings: dict[str, int]


def status(ctx: Ctx, name: str, fresh_seconds: float = 10.0) -> ModelStatus:
    model = get_model(ctx, name)
    replicas = list(
        ctx.db.scalars(
            select(Deployment)
            .where(Deployment.model_id == model.id)
            .order_by(Deployment.created_at.desc())
            .limit(50)
        )
    )
    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=fresh_seconds)
    inflight = queued = 0
    per: dict[str, int] = {}
    trainings: dict[str, int] = {}
    for row in ctx.db.scalars(
        select(GatewayLoad).where(GatewayLoad.model_id == model.id, GatewayLoad.updated_at >= since)
    ):
        inflight += row.inflight
        queued += row.queued
        for dep_id, n in (row.per_replica or {}).items():
            per[dep_id] = per.get(dep_id, 0) + n
        for dep_id, n in (row.trainings or {}).items():
            trainings[dep_id] = max(trainings.get(dep_id, 0), n)  # each gateway sees them all
    return ModelStatus(model, replicas, inflight, queued, per, trainings)


def usage_series(
    ctx: Ctx,
    *,
    project_name: str | None,
    model_name: str | None,
    hours: int,
    bucket_minutes: int,
) -> list[dict[str, Any]]:
    """Requests and tokens per time bucket, per project and model, for the charts."""
    p = access.principal(ctx)
    query = select(
        UsageRecord.time,
        UsageRecord.project_id,
        UsageRecord.model,
        UsageRecord.tokens_in,
        UsageRecord.tokens_out,
        UsageRecord.status,
    )
    if project_name is not None:
        project, _ = access.project_access(ctx, project_name, Role.viewer, write=False)
        query = query.where(UsageRecord.project_id == project.id)
    elif not p.is_admin:
        query = query.where(UsageRecord.project_id.in_(_member_projects(ctx)))
    if model_name is not None:
        query = query.where(UsageRecord.model == model_name)
    since = dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours)
    query = query.where(UsageRecord.time >= since)
    names: dict[int, str] = {pid: n for pid, n in ctx.db.execute(select(Project.id, Project.name))}
    step = bucket_minutes * 60
    buckets: dict[tuple[int, str, str], dict[str, Any]] = {}
    for time, project_id, model, tokens_in, tokens_out, status_code in ctx.db.execute(query):
        start = int(time.timestamp()) // step * step
        key = (start, names.get(project_id or 0, "?"), model)
        b = buckets.get(key)
        if b is None:
            b = buckets[key] = {
                "start": dt.datetime.fromtimestamp(start, dt.UTC),
                "project": key[1],
                "model": model,
                "requests": 0,
                "errors": 0,
                "tokens_in": 0,
                "tokens_out": 0,
            }
        b["requests"] += 1
        b["errors"] += 1 if status_code >= 400 else 0
        b["tokens_in"] += tokens_in
        b["tokens_out"] += tokens_out
    return [buckets[k] for k in sorted(buckets)]


def usage_totals(ctx: Ctx, project_name: str) -> dict[str, int]:
    project, _ = access.project_access(ctx, project_name, Role.viewer, write=False)
    row = ctx.db.execute(
        select(
            func.count(UsageRecord.id),
            func.coalesce(func.sum(UsageRecord.tokens_in), 0),
            func.coalesce(func.sum(UsageRecord.tokens_out), 0),
        ).where(UsageRecord.project_id == project.id)
    ).one()
    return {"requests": row[0], "tokens_in": row[1], "tokens_out": row[2]}
