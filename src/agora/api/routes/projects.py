from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from agora.api import schemas
from agora.api.deps import CtxDep
from agora.api.routes.convert import key_public, member_public
from agora.services import keys, projects

router = APIRouter(prefix="/projects", tags=["projects"])
ProjectName = Annotated[str, Path(min_length=1, max_length=64)]
Username = Annotated[str, Path(min_length=1, max_length=64)]
KeyId = Annotated[int, Path(ge=1, le=schemas.MAX_ID)]


@router.get("", response_model=list[schemas.ProjectPublic])
def list_projects(ctx: CtxDep) -> list[schemas.ProjectPublic]:
    """Your projects (all of them for administrators)."""
    return [
        schemas.ProjectPublic.model_validate(p).model_copy(update={"role": role})
        for p, role in projects.list_projects(ctx)
    ]


@router.post("", response_model=schemas.ProjectPublic, status_code=201)
def create_project(body: schemas.ProjectCreate, ctx: CtxDep) -> schemas.ProjectPublic:
    project = projects.create_project(ctx, body.name, body.title, body.description)
    return schemas.ProjectPublic.model_validate(project)


@router.get("/{project}", response_model=schemas.ProjectPublic)
def get_project(project: ProjectName, ctx: CtxDep) -> schemas.ProjectPublic:
    p, role = projects.get_project(ctx, project)
    return schemas.ProjectPublic.model_validate(p).model_copy(update={"role": role})


@router.patch("/{project}", response_model=schemas.ProjectPublic)
def update_project(
    project: ProjectName, body: schemas.ProjectUpdate, ctx: CtxDep
) -> schemas.ProjectPublic:
    p = projects.update_project(ctx, project, title=body.title, description=body.description)
    return schemas.ProjectPublic.model_validate(p)


@router.delete("/{project}", status_code=204)
def delete_project(project: ProjectName, ctx: CtxDep) -> Response:
    projects.delete_project(ctx, project)
    return Response(status_code=204)


@router.get("/{project}/members", response_model=list[schemas.MemberPublic])
def list_members(project: ProjectName, ctx: CtxDep) -> list[schemas.MemberPublic]:
    return [member_public(m) for m in projects.list_members(ctx, project)]


@router.post("/{project}/members", response_model=schemas.MemberPublic, status_code=201)
def add_member(project: ProjectName, body: schemas.MemberAdd, ctx: CtxDep) -> schemas.MemberPublic:
    return member_public(projects.add_member(ctx, project, body.username, body.role))


@router.patch("/{project}/members/{username}", response_model=schemas.MemberPublic)
def change_role(
    project: ProjectName, username: Username, body: schemas.MemberUpdate, ctx: CtxDep
) -> schemas.MemberPublic:
    return member_public(projects.change_role(ctx, project, username, body.role))


@router.delete("/{project}/members/{username}", status_code=204)
def remove_member(project: ProjectName, username: Username, ctx: CtxDep) -> Response:
    projects.remove_member(ctx, project, username)
    return Response(status_code=204)


@router.get("/{project}/keys", response_model=list[schemas.KeyPublic])
def list_keys(project: ProjectName, ctx: CtxDep) -> list[schemas.KeyPublic]:
    """Owners see every key of the project; others see their own."""
    return [key_public(k) for k in keys.list_keys(ctx, project)]


@router.post("/{project}/keys", response_model=schemas.KeyCreated, status_code=201)
def create_key(project: ProjectName, body: schemas.KeyCreate, ctx: CtxDep) -> schemas.KeyCreated:
    new = keys.create_key(ctx, project, body.name, body.scopes, body.expires_at)
    return schemas.KeyCreated(**key_public(new.key).model_dump(), secret=new.secret)


@router.delete("/{project}/keys/{key_id}", status_code=204)
def revoke_key(project: ProjectName, key_id: KeyId, ctx: CtxDep) -> Response:
    keys.revoke_key(ctx, project, key_id)
    return Response(status_code=204)
