"""Platform-wide switches an administrator changes at run time."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from agora.models import SystemSetting
from agora.services import access, audit
from agora.services.context import Ctx

DEFAULTS: dict[str, Any] = {
    "require_totp": False,
    "users_can_create_projects": False,
}


def get_all(ctx: Ctx) -> dict[str, Any]:
    stored = {s.key: s.value for s in ctx.db.scalars(select(SystemSetting))}
    return {k: stored.get(k, v) for k, v in DEFAULTS.items()}


def get(ctx: Ctx, key: str) -> Any:
    row = ctx.db.get(SystemSetting, key)
    return DEFAULTS[key] if row is None else row.value


def update(ctx: Ctx, changes: dict[str, Any]) -> dict[str, Any]:
    access.require_admin(ctx)
    current = get_all(ctx)
    changed = {k: v for k, v in changes.items() if current.get(k) != v}
    for key, value in changed.items():
        row = ctx.db.get(SystemSetting, key)
        if row is None:
            ctx.db.add(SystemSetting(key=key, value=value))
        else:
            row.value = value
    if changed:
        audit.record(ctx, "system.settings.update", "settings", details={"changes": changed})
    return get_all(ctx)
