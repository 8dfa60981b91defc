from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from agora.api import schemas
from agora.api.deps import CtxDep
from agora.api.routes.convert import user_public
from agora.services import users

router = APIRouter(prefix="/users", tags=["users (admin)"])
Username = Annotated[str, Path(min_length=1, max_length=64)]


@router.get("", response_model=list[schemas.UserPublic])
def list_users(ctx: CtxDep) -> list[schemas.UserPublic]:
    return [user_public(u) for u in users.list_users(ctx)]


@router.post("", response_model=schemas.UserCreated, status_code=201)
def create_user(body: schemas.UserCreate, ctx: CtxDep) -> schemas.UserCreated:
    new = users.create_user(
        ctx,
        body.username,
        email=body.email,
        display_name=body.display_name,
        password=body.password,
        is_admin=body.is_admin,
    )
    return schemas.UserCreated(
        **user_public(new.user).model_dump(), one_time_password=new.one_time_password
    )


@router.get("/{username}", response_model=schemas.UserPublic)
def get_user(username: Username, ctx: CtxDep) -> schemas.UserPublic:
    return user_public(users.get_user(ctx, username))


@router.patch("/{username}", response_model=schemas.UserPublic)
def update_user(username: Username, body: schemas.UserUpdate, ctx: CtxDep) -> schemas.UserPublic:
    user = users.update_user(
        ctx,
        username,
        email=body.email,
        display_name=body.display_name,
        is_admin=body.is_admin,
        disabled=body.disabled,
    )
    return user_public(user)


@router.post("/{username}/password-reset", response_model=schemas.OneTimePassword)
def reset_password(username: Username, ctx: CtxDep) -> schemas.OneTimePassword:
    return schemas.OneTimePassword(
        username=username, one_time_password=users.reset_password(ctx, username)
    )


@router.delete("/{username}/totp", status_code=204)
def reset_totp(username: Username, ctx: CtxDep) -> Response:
    users.reset_totp(ctx, username)
    return Response(status_code=204)
