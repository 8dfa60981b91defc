"""Who is calling, from where, and with which database session: passed to every service call."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from agora.runtime import Runtime

ALL_SCOPES = frozenset({"read", "manage", "inference", "admin"})


@dataclass(frozen=True)
class Principal:
    user_id: int
    username: str
    #: Platform admin rights in effect: an admin's session, or an admin's key with scope "admin".
    is_admin: bool
    via: Literal["session", "api_key"]
    #: API keys are bound to one project; sessions see every project of their user.
    project_id: int | None = None
    scopes: frozenset[str] = ALL_SCOPES
    session_id: int | None = None
    key_id: int | None = None
    #: Set while the account must first change its password ("password") or enrol TOTP ("totp").
    restriction: str | None = None


@dataclass
class Ctx:
    db: Session
    runtime: Runtime
    principal: Principal | None = None
    client_addr: str | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def actor_name(self) -> str:
        return self.principal.username if self.principal else "anonymous"
