"""A project's API keys: list, create (the secret shown once), revoke."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Path, Request
from starlette.responses import Response

from agora.api import schemas
from agora.errors import AgoraError, InvalidInput
from agora.models import ApiKey, Scope
from agora.services import keys, projects
from agora.services.context import Ctx
from agora.web.forms import undo, validated
from agora.web.guards import PageCtx, mark_web, session_csrf
from agora.web.render import redirect, render

router = APIRouter(include_in_schema=False, dependencies=[Depends(mark_web), Depends(session_csrf)])
ProjectName = Annotated[str, Path(min_length=1, max_length=64)]
KeyId = Annotated[int, Path(ge=1, le=2**62)]
SCOPE_HELP = {
    Scope.read: "see the project and its resources",
    Scope.manage: "change the project's resources",
    Scope.inference: "call the models",
    Scope.admin: "platform administration (yours)",
}


@router.get("/projects/{name}/keys")
def key_list(request: Request, ctx: PageCtx, name: ProjectName) -> Response:
    return _keys(request, ctx, name)


@router.post("/projects/{name}/keys")
def create_key(
    request: Request,
    ctx: PageCtx,
    name: ProjectName,
    key_name: Annotated[str, Form(max_length=256)] = "",
    scopes: Annotated[list[str], Form()] = [],  # noqa: B006 - FastAPI copies defaults
    expires: Annotated[str, Form(max_length=32)] = "",
) -> Response:
    form: dict[str, object] = {"key_name": key_name, "scopes": scopes, "expires": expires}
    try:
        if not scopes:
            raise InvalidInput("Choose at least one scope for the key")
        body = validated(
            schemas.KeyCreate, name=key_name, scopes=scopes, expires_at=_end_of_day(expires)
        )
        new = keys.create_key(ctx, name, body.name, body.scopes, body.expires_at)
    except AgoraError as exc:
        undo(ctx, request, exc)
        return _keys(request, ctx, name, exc, form)
    project, _ = projects.get_project(ctx, name)
    return render(request, ctx, "key_created.html", project=project, key=new.key, secret=new.secret)


@router.post("/projects/{name}/keys/{key_id}/revoke")
def revoke_key(request: Request, ctx: PageCtx, name: ProjectName, key_id: KeyId) -> Response:
    try:
        key = keys.revoke_key(ctx, name, key_id)
    except AgoraError as exc:
        undo(ctx, request, exc)
        return _keys(request, ctx, name, exc)
    return redirect(request, f"/projects/{name}/keys", f"The key {key.name} was revoked.")


def _status(key: ApiKey, now: dt.datetime) -> str:
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= now:
        return "expired"
    return "active"


def _end_of_day(value: str) -> dt.datetime | None:
    """A key given a date stays valid through that whole day (UTC)."""
    if not value.strip():
        return None
    try:
        day = dt.date.fromisoformat(value.strip())
    except ValueError as exc:
        raise InvalidInput("Give the expiry date as YYYY-MM-DD") from exc
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time.min, tzinfo=dt.UTC)


def _keys(
    request: Request,
    ctx: Ctx,
    name: str,
    error: AgoraError | None = None,
    form: dict[str, object] | None = None,
) -> Response:
    project, role = projects.get_project(ctx, name)
    now = dt.datetime.now(dt.UTC)
    grantable = keys.grantable_scopes(ctx, name)
    return render(
        request,
        ctx,
        "keys.html",
        status=error.status if error else 200,
        project=project,
        role=role,
        rows=[(key, _status(key, now)) for key in keys.list_keys(ctx, name)],
        scopes=[(s.value, SCOPE_HELP[s]) for s in grantable],
        error=error.detail if error else None,
        form=form or {"scopes": [Scope.inference.value]},
        today=now.date().isoformat(),
    )
