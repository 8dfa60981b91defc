from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import PlainTextResponse, StreamingResponse

from agora.api import schemas
from agora.api.deps import CtxDep, PlainCtxDep, credentials, request_ctx, runtime_of
from agora.deployments.backends import BackendError
from agora.deployments.templates import Template
from agora.errors import Unauthenticated
from agora.models import Deployment
from agora.services import deployments

router = APIRouter(tags=["deployments"])
ProjectName = Annotated[str, Path(min_length=1, max_length=64)]
DeploymentId = Annotated[str, Path(min_length=1, max_length=16, pattern=r"^[a-z0-9]+$")]
TemplateName = Annotated[str, Path(min_length=1, max_length=64)]


def template_public(t: Template) -> schemas.TemplatePublic:
    return schemas.TemplatePublic(
        name=t.name,
        title=t.title,
        description=t.description,
        kind=t.kind,
        inputs=[
            schemas.TemplateInput(
                name=n,
                type=i.type,
                title=i.title or n.replace("_", " ").capitalize(),
                help=i.help,
                default=i.default,
                required=bool(i.required),
                min=i.min,
                max=i.max,
                pattern=i.pattern,
                choices=i.choices,
            )
            for n, i in t.inputs.items()
        ],
    )


def deployment_public(d: Deployment, detail: bool = False) -> schemas.DeploymentPublic:
    attempt = d.attempts[-1] if d.attempts else None
    fields = dict(
        id=d.id,
        project=d.project.name,
        owner=d.owner.username if d.owner else None,
        name=d.name,
        template=d.template,
        kind=d.kind,
        inputs=d.inputs,
        cpus=d.cpus,
        memory_mb=d.memory_mb,
        gpus=d.gpus,
        gpu_type=d.gpu_type,
        time_limit_minutes=d.time_limit_minutes,
        backends=d.backends,
        backend=attempt.backend if attempt and not attempt.error else None,
        desired=d.desired,
        state=d.state.value,
        reason=d.reason,
        exit_code=d.exit_code,
        url=f"/d/{d.id}/" if d.kind == "service" else None,
        created_at=d.created_at,
        state_since=d.state_since,
        started_at=d.started_at,
        ended_at=d.ended_at,
    )
    if not detail:
        return schemas.DeploymentPublic(**fields)
    return schemas.DeploymentDetail(
        **fields,
        attempts=[schemas.AttemptPublic.model_validate(a) for a in d.attempts],
        events=[schemas.EventPublic.model_validate(e) for e in d.events],
    )


@router.get("/templates", response_model=list[schemas.TemplatePublic])
def list_templates(ctx: CtxDep) -> list[schemas.TemplatePublic]:
    return [template_public(t) for t in deployments.all_templates(ctx)]


@router.get("/templates/{name}", response_model=schemas.TemplatePublic)
def get_template(name: TemplateName, ctx: CtxDep) -> schemas.TemplatePublic:
    return template_public(deployments.get_template(ctx, name))


@router.get("/templates/{name}/projects", response_model=schemas.TemplateGrants)
def get_template_grants(name: TemplateName, ctx: CtxDep) -> schemas.TemplateGrants:
    """Projects the template is limited to (empty: all projects). Administrators."""
    return schemas.TemplateGrants(projects=deployments.template_grants(ctx, name))


@router.put("/templates/{name}/projects", response_model=schemas.TemplateGrants)
def set_template_grants(
    name: TemplateName, body: schemas.TemplateGrants, ctx: CtxDep
) -> schemas.TemplateGrants:
    return schemas.TemplateGrants(projects=deployments.grant_template(ctx, name, body.projects))


@router.get("/projects/{project}/templates", response_model=list[schemas.TemplatePublic])
def project_templates(project: ProjectName, ctx: CtxDep) -> list[schemas.TemplatePublic]:
    return [template_public(t) for t in deployments.templates_for(ctx, project)]


@router.get("/projects/{project}/deployments", response_model=list[schemas.DeploymentPublic])
def list_deployments(project: ProjectName, ctx: CtxDep) -> list[schemas.DeploymentPublic]:
    return [deployment_public(d) for d in deployments.list_deployments(ctx, project)]


@router.post(
    "/projects/{project}/deployments", response_model=schemas.DeploymentDetail, status_code=201
)
def create_deployment(
    project: ProjectName, body: schemas.DeploymentCreate, ctx: CtxDep
) -> schemas.DeploymentPublic:
    dep = deployments.create(ctx, project, body.template, body.inputs, body.name, body.backends)
    return deployment_public(dep, detail=True)


@router.get("/projects/{project}/deployments/{dep_id}", response_model=schemas.DeploymentDetail)
def get_deployment(
    project: ProjectName, dep_id: DeploymentId, ctx: CtxDep
) -> schemas.DeploymentPublic:
    return deployment_public(deployments.get(ctx, project, dep_id), detail=True)


@router.post(
    "/projects/{project}/deployments/{dep_id}/stop", response_model=schemas.DeploymentDetail
)
def stop_deployment(
    project: ProjectName, dep_id: DeploymentId, ctx: CtxDep
) -> schemas.DeploymentPublic:
    return deployment_public(deployments.stop(ctx, project, dep_id), detail=True)


@router.delete("/projects/{project}/deployments/{dep_id}", status_code=204)
def delete_deployment(project: ProjectName, dep_id: DeploymentId, ctx: CtxDep) -> Response:
    deployments.delete(ctx, project, dep_id)
    return Response(status_code=204)


@router.get("/projects/{project}/deployments/{dep_id}/logs", response_class=PlainTextResponse)
async def deployment_logs(
    request: Request,
    project: ProjectName,
    dep_id: DeploymentId,
    tail: Annotated[int, Query(ge=1, le=1_048_576)] = 65536,
    follow: bool = False,
) -> Response:
    """The job's output (the last `tail` bytes); `follow=true` streams new output as it comes."""
    runtime = runtime_of(request)
    backend_name, job_id = await asyncio.to_thread(_job_of, request, project, dep_id)
    backend = runtime.backends.get(backend_name or "")
    if backend is None or job_id is None:
        return PlainTextResponse("")
    try:
        text = await backend.logs(job_id, tail)
    except BackendError as exc:
        return PlainTextResponse(f"(logs unavailable: {exc})\n")
    if not follow:
        return PlainTextResponse(text)

    async def stream() -> AsyncIterator[str]:
        yield text
        anchor = text[-1024:]
        while not await request.is_disconnected():
            await asyncio.sleep(1)
            try:
                current = await backend.logs(job_id, tail)
            except BackendError:
                continue
            at = current.rfind(anchor) if anchor else -1
            new = current[at + len(anchor) :] if at >= 0 else current
            if new:
                anchor = current[-1024:]
                yield new
            elif await asyncio.to_thread(_state_of, request, project, dep_id) in ENDED:
                return

    return StreamingResponse(stream(), media_type="text/plain; charset=utf-8")


ENDED = ("stopped", "failed")


def _job_of(request: Request, project: str, dep_id: str) -> tuple[str | None, str | None]:
    with request_ctx(request) as ctx:
        dep = deployments.get(ctx, project, dep_id)
        attempt = next((a for a in reversed(dep.attempts) if a.job_id), None)
        return (attempt.backend, attempt.job_id) if attempt else (None, None)


def _state_of(request: Request, project: str, dep_id: str) -> str:
    with request_ctx(request) as ctx:
        return deployments.get(ctx, project, dep_id).state.value


@router.post("/deployments/{dep_id}/announce", status_code=204, include_in_schema=False)
def announce(
    dep_id: DeploymentId, body: schemas.Announcement, request: Request, ctx: PlainCtxDep
) -> Response:
    """A deployment's runtime tells where its service listens (deployment token as Bearer)."""
    token, from_cookie = credentials(request)
    if not token or from_cookie:
        raise Unauthenticated("Send the deployment token as 'Authorization: Bearer …'")
    deployments.announce(ctx, dep_id, token, body.host, body.port)
    return Response(status_code=204)


@router.get("/projects/{project}/quota", response_model=schemas.QuotaOut)
def get_quota(project: ProjectName, ctx: CtxDep) -> schemas.QuotaOut:
    limits, used = deployments.get_quota(ctx, project)
    return schemas.QuotaOut(
        limits=schemas.Quota(**limits.__dict__), in_use=schemas.Quota(**used.__dict__)
    )


@router.patch("/projects/{project}/quota", response_model=schemas.QuotaOut)
def set_quota(project: ProjectName, body: schemas.QuotaUpdate, ctx: CtxDep) -> schemas.QuotaOut:
    """Change a project's limits (administrators); fields left out keep their value."""
    deployments.set_quota(ctx, project, body.model_dump(exclude_unset=True))
    limits, used = deployments.get_quota(ctx, project)
    return schemas.QuotaOut(
        limits=schemas.Quota(**limits.__dict__), in_use=schemas.Quota(**used.__dict__)
    )
