"""Gateway models (operators), their grants, rate limits and usage."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from agora.api.schemas import Plain, Strict
from agora.models import Deployment, GatewayModel
from agora.services import gateway

router = APIRouter(tags=["models"])
ModelName = Annotated[
    str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@+-]*$")
]
ProjectName = Annotated[str, Path(min_length=1, max_length=64)]
Count = Annotated[int, Field(ge=0, le=1000)]
Seconds = Annotated[float, Field(gt=0, le=86400)]
Limit = Annotated[int, Field(ge=0, le=10**15)] | None


class ModelSettings(Strict):
    description: Annotated[str, StringConstraints(max_length=4000), Plain] | None = None
    public: bool | None = None
    enabled: bool | None = None
    upstream_model: (
        Annotated[str, StringConstraints(min_length=1, max_length=255), Plain] | None
    ) = None
    external_url: Annotated[str, StringConstraints(max_length=1024), Plain] | None = None
    external_key: Annotated[str, StringConstraints(max_length=4096), Plain] | None = Field(
        default=None, description="The upstream's API key; stored encrypted, never shown again"
    )
    inputs: dict[str, Any] | None = Field(
        default=None, description="Inputs of the replica template (e.g. model_path, served_name)"
    )
    backends: list[Annotated[str, StringConstraints(max_length=64)]] | None = None
    min_replicas: Count | None = None
    max_replicas: Count | None = None
    target_inflight: Annotated[int, Field(ge=1, le=10000)] | None = None
    idle_seconds: Annotated[int, Field(ge=1, le=7 * 86400)] | None = None
    replace_before_seconds: Annotated[int, Field(ge=0, le=86400)] | None = None
    connect_timeout: Seconds | None = None
    first_byte_timeout: Seconds | None = None
    total_timeout: Seconds | None = None
    queue_timeout: Annotated[float, Field(ge=0, le=86400)] | None = None


class ModelCreate(ModelSettings):
    name: Annotated[str, StringConstraints(min_length=1, max_length=128), Plain]
    kind: Literal["llm", "embedding", "deepaas"] = "llm"
    source: Literal["deployment", "external"] = "deployment"
    template: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        default=None,
        description="Replica template (deployment models); default openai-cpu, or deepaas-model "
        "for DEEPaaS modules",
    )
    project: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        default=None, description="Project whose quota the replicas count against"
    )


class ModelPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    name: str
    kind: str
    source: str
    description: str
    public: bool
    enabled: bool
    upstream_model: str | None
    external_url: str | None
    has_external_key: bool
    project: str | None
    template: str | None
    inputs: dict[str, Any]
    backends: list[str]
    min_replicas: int
    max_replicas: int
    target_inflight: int
    idle_seconds: int
    replace_before_seconds: int
    connect_timeout: float
    first_byte_timeout: float
    total_timeout: float
    queue_timeout: float
    created_at: dt.datetime


class ReplicaPublic(BaseModel):
    id: str
    state: str
    backend: str | None
    draining: bool
    inflight: int
    #: Trainings it runs (served modules); the autoscaler keeps it until they end.
    trainings: int
    started_at: dt.datetime | None
    reason: str | None


class ModelStatusOut(BaseModel):
    model: ModelPublic
    inflight: int
    queued: int
    replicas: list[ReplicaPublic]


class Grants(Strict):
    projects: list[Annotated[str, StringConstraints(max_length=64)]] = Field(max_length=10000)


class Limits(Strict):
    rpm: Limit = None
    tpm: Limit = None
    tokens_per_day: Limit = None
    tokens_per_month: Limit = None


class UsageBucket(BaseModel):
    start: dt.datetime
    project: str
    model: str
    requests: int
    errors: int
    tokens_in: int
    tokens_out: int


def public(m: GatewayModel) -> ModelPublic:
    return ModelPublic(
        name=m.name,
        kind=m.kind,
        source=m.source,
        description=m.description or "",
        public=m.public,
        enabled=m.enabled,
        upstream_model=m.upstream_model,
        external_url=m.external_url,
        has_external_key=bool(m.external_key),
        project=m.project.name if m.project else None,
        template=m.template,
        inputs=m.inputs or {},
        backends=m.backends or [],
        min_replicas=m.min_replicas,
        max_replicas=m.max_replicas,
        target_inflight=m.target_inflight,
        idle_seconds=m.idle_seconds,
        replace_before_seconds=m.replace_before_seconds,
        connect_timeout=m.connect_timeout,
        first_byte_timeout=m.first_byte_timeout,
        total_timeout=m.total_timeout,
        queue_timeout=m.queue_timeout,
        created_at=m.created_at,
    )


def _replica(d: Deployment, per: dict[str, int], trainings: dict[str, int]) -> ReplicaPublic:
    return ReplicaPublic(
        id=d.id,
        state=d.state.value,
        backend=d.attempts[-1].backend if d.attempts else None,
        draining=d.draining_since is not None,
        inflight=per.get(d.id, 0),
        trainings=trainings.get(d.id, 0),
        started_at=d.started_at,
        reason=d.reason,
    )


from agora.api.deps import CtxDep  # noqa: E402 - after the models FastAPI resolves


@router.get("/models", response_model=list[ModelPublic])
def list_models(ctx: CtxDep) -> list[ModelPublic]:
    """Gateway models you may use (administrators: all)."""
    return [public(m) for m in gateway.list_models(ctx)]


@router.post("/models", response_model=ModelPublic, status_code=201)
def create_model(body: ModelCreate, ctx: CtxDep) -> ModelPublic:
    """Register a model (administrators). Deployment models are scaled by the autoscaler."""
    return public(gateway.create_model(ctx, body.model_dump()))


@router.get("/models/{name}", response_model=ModelStatusOut)
def get_model(name: ModelName, ctx: CtxDep) -> ModelStatusOut:
    st = gateway.status(ctx, name)
    return ModelStatusOut(
        model=public(st.model),
        inflight=st.inflight,
        queued=st.queued,
        replicas=[_replica(d, st.per_replica, st.trainings) for d in st.replicas],
    )


@router.patch("/models/{name}", response_model=ModelPublic)
def update_model(name: ModelName, body: ModelSettings, ctx: CtxDep) -> ModelPublic:
    return public(gateway.update_model(ctx, name, body.model_dump(exclude_unset=True)))


@router.delete("/models/{name}", status_code=204)
def delete_model(name: ModelName, ctx: CtxDep) -> None:
    """Remove a model; its replicas are stopped."""
    gateway.delete_model(ctx, name)


@router.get("/models/{name}/projects", response_model=Grants)
def get_grants(name: ModelName, ctx: CtxDep) -> Grants:
    return Grants(projects=gateway.model_projects(ctx, name))


@router.put("/models/{name}/projects", response_model=Grants)
def set_grants(name: ModelName, body: Grants, ctx: CtxDep) -> Grants:
    """Projects that may use a non-public model (administrators)."""
    return Grants(projects=gateway.set_model_projects(ctx, name, body.projects))


@router.get("/projects/{project}/limits", response_model=Limits)
def get_project_limits(project: ProjectName, ctx: CtxDep) -> Limits:
    return Limits(**gateway.get_project_limits(ctx, project))


@router.put("/projects/{project}/limits", response_model=Limits)
def set_project_limits(project: ProjectName, body: Limits, ctx: CtxDep) -> Limits:
    """Gateway limits of a project (administrators); null means no limit."""
    return Limits(**gateway.set_project_limits(ctx, project, body.model_dump()))


@router.get("/projects/{project}/keys/{key_id}/limits", response_model=Limits)
def get_key_limits(
    project: ProjectName, key_id: Annotated[int, Path(ge=1, le=2**31 - 1)], ctx: CtxDep
) -> Limits:
    return Limits(**gateway.get_key_limits(ctx, project, key_id))


@router.put("/projects/{project}/keys/{key_id}/limits", response_model=Limits)
def set_key_limits(
    project: ProjectName,
    key_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    body: Limits,
    ctx: CtxDep,
) -> Limits:
    """Gateway limits of one API key (project owners)."""
    return Limits(**gateway.set_key_limits(ctx, project, key_id, body.model_dump()))


@router.get("/usage", response_model=list[UsageBucket])
def usage(
    ctx: CtxDep,
    project: Annotated[str | None, Query(max_length=64)] = None,
    model: Annotated[str | None, Query(max_length=128)] = None,
    hours: Annotated[int, Query(ge=1, le=24 * 92)] = 24,
    bucket_minutes: Annotated[int, Query(ge=1, le=24 * 60)] = 60,
) -> list[UsageBucket]:
    """Gateway requests and tokens per time bucket, project and model (never content)."""
    rows = gateway.usage_series(
        ctx, project_name=project, model_name=model, hours=hours, bucket_minutes=bucket_minutes
    )
    return [UsageBucket(**r) for r in rows]
