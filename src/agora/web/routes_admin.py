"""Administration pages: users, the audit trail, platform settings. Others get a 404."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from starlette.responses import Response

from agora.api import schemas
from agora.errors import AgoraError, InvalidInput
from agora.models import AuditEntry
from agora.services import audit, system, users
from agora.services.context import Ctx
from agora.web.forms import undo, validated
from agora.web.guards import AdminCtx, mark_web, session_csrf
from agora.web.render import redirect, render

router = APIRouter(
    prefix="/admin",
    include_in_schema=False,
    dependencies=[Depends(mark_web), Depends(session_csrf)],
)
Field = Annotated[str, Form(max_length=256)]
Username = Annotated[str, Path(min_length=1, max_length=64)]
Filter = Annotated[str, Query(max_length=64)]
PAGE = 50
UserAction = Literal["disable", "enable", "grant-admin", "revoke-admin", "reset-totp"]
_DONE = {
    "disable": "{} is disabled and signed out.",
    "enable": "{} may sign in again.",
    "grant-admin": "{} is now an administrator.",
    "revoke-admin": "{} is no longer an administrator.",
    "reset-totp": "Two-factor sign-in of {} was reset.",
}


# --- users ------------------------------------------------------------------------------------


@router.get("/users")
def user_list(request: Request, ctx: AdminCtx) -> Response:
    return _users(request, ctx)


@router.post("/users")
def create_user(
    request: Request,
    ctx: AdminCtx,
    username: Field = "",
    email: Field = "",
    display_name: Field = "",
    is_admin: Field = "",
) -> Response:
    form = {"username": username, "email": email, "display_name": display_name}
    try:
        body = validated(
            schemas.UserCreate,
            username=username.strip(),
            email=email.strip() or None,
            display_name=display_name,
            is_admin=bool(is_admin),
        )
        new = users.create_user(
            ctx,
            body.username,
            email=body.email,
            display_name=body.display_name,
            is_admin=body.is_admin,
        )
    except AgoraError as exc:
        undo(ctx, request, exc)
        return _users(request, ctx, exc, form)
    return render(
        request,
        ctx,
        "admin_secret.html",
        heading=f"Account {new.user.username} created",
        username=new.user.username,
        password=new.one_time_password,
    )


@router.post("/users/{username}/reset-password")
def reset_password(request: Request, ctx: AdminCtx, username: Username) -> Response:
    try:
        password = users.reset_password(ctx, username)
    except AgoraError as exc:
        undo(ctx, request, exc)
        return _users(request, ctx, exc)
    return render(
        request,
        ctx,
        "admin_secret.html",
        heading=f"New one-time password for {username}",
        username=username,
        password=password,
    )


@router.post("/users/{username}/{action}")
def change_user(
    request: Request, ctx: AdminCtx, username: Username, action: UserAction
) -> Response:
    try:
        if action == "reset-totp":
            users.reset_totp(ctx, username)
        else:
            users.update_user(
                ctx,
                username,
                disabled={"disable": True, "enable": False}.get(action),
                is_admin={"grant-admin": True, "revoke-admin": False}.get(action),
            )
    except AgoraError as exc:
        undo(ctx, request, exc)
        return _users(request, ctx, exc)
    return redirect(request, "/admin/users", _DONE[action].format(username))


def _users(
    request: Request, ctx: Ctx, error: AgoraError | None = None, form: dict[str, str] | None = None
) -> Response:
    return render(
        request,
        ctx,
        "admin_users.html",
        status=error.status if error else 200,
        users=users.list_users(ctx),
        error=error.detail if error else None,
        form=form or {},
    )


# --- audit ------------------------------------------------------------------------------------


@router.get("/audit")
def audit_page(
    request: Request,
    ctx: AdminCtx,
    actor: Filter = "",
    project: Filter = "",
    action: Filter = "",
    outcome: Filter = "",
    since: Filter = "",
    until: Filter = "",
    before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> Response:
    filters = {
        "actor": actor.strip(),
        "project": project.strip(),
        "action": action.strip(),
        "outcome": outcome.strip(),
        "since": since.strip(),
        "until": until.strip(),
    }
    entries: list[AuditEntry] = []
    error = None
    try:
        flt = audit.AuditFilter(
            actor=filters["actor"] or None,
            project=filters["project"] or None,
            action=filters["action"] or None,
            outcome=filters["outcome"] or None,
            since=_day_start(filters["since"], 0),
            until=_day_start(filters["until"], 1),
            before_seq=before,
            limit=PAGE,
        )
        entries = audit.query(ctx, flt)
    except AgoraError as exc:
        error = exc
    active = {k: v for k, v in filters.items() if v}
    older = None
    if len(entries) == PAGE:
        older = "/admin/audit?" + urlencode({**active, "before": entries[-1].seq})
    verification = audit.verify(ctx) if request.query_params.get("verify") else None
    return render(
        request,
        ctx,
        "admin_audit.html",
        status=error.status if error else 200,
        entries=entries,
        filters=filters,
        paged=before is not None,
        newest="/admin/audit?" + urlencode(active) if active else "/admin/audit",
        older=older,
        verification=verification,
        outcomes=["success", "failure", "denied"],
        error=error.detail if error else None,
    )


def _day_start(value: str, offset_days: int) -> dt.datetime | None:
    """Midnight UTC of a YYYY-MM-DD date (plus an offset: 'until' includes its whole day)."""
    if not value:
        return None
    try:
        day = dt.date.fromisoformat(value)
    except ValueError as exc:
        raise InvalidInput(f"'{value}' is not a date; use YYYY-MM-DD") from exc
    return dt.datetime.combine(day + dt.timedelta(days=offset_days), dt.time.min, tzinfo=dt.UTC)


# --- platform settings ------------------------------------------------------------------------


@router.get("/settings")
def settings_page(request: Request, ctx: AdminCtx) -> Response:
    return render(request, ctx, "admin_settings.html", values=system.get_all(ctx))


@router.post("/settings")
def update_settings(
    request: Request, ctx: AdminCtx, require_totp: Field = "", users_can_create_projects: Field = ""
) -> Response:
    system.update(
        ctx,
        {
            "require_totp": bool(require_totp),
            "users_can_create_projects": bool(users_can_create_projects),
        },
    )
    return redirect(request, "/admin/settings", "Settings saved.")
