from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy import select

from agora.api import schemas
from agora.api.deps import CtxDep
from agora.api.routes.convert import user_public
from agora.models import Membership, Project, User
from agora.services import access, auth, users

router = APIRouter(tags=["auth"])


@router.post("/auth/login", response_model=schemas.TokenOut)
def login(body: schemas.LoginIn, ctx: CtxDep) -> schemas.TokenOut:
    """Exchange a password (and TOTP code) for a bearer token, as `agora login` does."""
    signed = auth.login(ctx, body.username, body.password, body.totp_code, kind="cli")
    return schemas.TokenOut(
        token=signed.token, expires_at=signed.session.expires_at, username=signed.user.username
    )


@router.post("/auth/logout", status_code=204)
def logout(ctx: CtxDep) -> Response:
    auth.logout(ctx)
    return Response(status_code=204)


@router.get("/me", response_model=schemas.MeOut)
def me(ctx: CtxDep) -> schemas.MeOut:
    p = access.principal(ctx, allow_restricted=True)
    user = ctx.db.get(User, p.user_id)
    assert user is not None
    rows = ctx.db.execute(
        select(Project.name, Membership.role)
        .join(Membership)
        .where(Membership.user_id == user.id)
        .order_by(Project.name)
    )
    key_project = ctx.db.get(Project, p.project_id).name if p.project_id else None  # type: ignore[union-attr]
    return schemas.MeOut(
        user=user_public(user),
        via=p.via,
        scopes=sorted(p.scopes),
        key_project=key_project,
        restriction=p.restriction,
        projects=[
            schemas.MembershipBrief(project=n, role=r)
            for n, r in rows
            if p.project_id is None or n == key_project
        ],
    )


@router.post("/me/password", status_code=204)
def change_password(body: schemas.PasswordChangeIn, ctx: CtxDep) -> Response:
    users.change_own_password(ctx, body.current_password, body.new_password)
    return Response(status_code=204)


@router.post("/me/totp/setup", response_model=schemas.TOTPSetupOut)
def totp_setup(ctx: CtxDep) -> schemas.TOTPSetupOut:
    """Start TOTP enrolment; confirm with a code from the authenticator to turn it on."""
    enrolment = auth.totp_begin(ctx)
    return schemas.TOTPSetupOut(secret=enrolment.secret, otpauth_uri=enrolment.uri)


@router.post("/me/totp/enable", status_code=204)
def totp_enable(body: schemas.TOTPCodeIn, ctx: CtxDep) -> Response:
    auth.totp_confirm(ctx, body.code)
    return Response(status_code=204)


@router.post("/me/totp/disable", status_code=204)
def totp_disable(body: schemas.TOTPDisableIn, ctx: CtxDep) -> Response:
    auth.totp_disable(ctx, body.password, body.code)
    return Response(status_code=204)
