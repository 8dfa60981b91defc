from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from agora import __version__
from agora.api import schemas
from agora.api.deps import CtxDep
from agora.services import access, system

router = APIRouter(tags=["system"])


@router.get("/health")
def health(ctx: CtxDep) -> dict[str, Any]:
    from sqlalchemy import text

    ctx.db.execute(text("SELECT 1"))
    return {"status": "ok", "version": __version__}


@router.get("/system/template-problems")
def template_problems(ctx: CtxDep) -> list[dict[str, str]]:
    """Template files that did not load, each with its problem (administrators)."""
    access.require_admin(ctx)
    return [{"source": p.source, "problem": p.message} for p in ctx.runtime.template_problems]


@router.get("/system/settings", response_model=schemas.SystemSettingsOut)
def get_settings(ctx: CtxDep) -> dict[str, Any]:
    access.require_admin(ctx)
    return system.get_all(ctx)


@router.patch("/system/settings", response_model=schemas.SystemSettingsOut)
def update_settings(body: schemas.SystemSettings, ctx: CtxDep) -> dict[str, Any]:
    return system.update(ctx, body.model_dump(exclude_none=True))
