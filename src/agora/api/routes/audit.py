from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from agora.api import schemas
from agora.api.deps import CtxDep
from agora.models import AuditEntry, Role
from agora.services import access, audit

router = APIRouter(tags=["audit"])

Limit = Annotated[int, Query(ge=1, le=1000)]
Before = Annotated[int | None, Query(ge=1, le=schemas.MAX_ID)]
Filter = Annotated[str | None, Query(max_length=64)]
When = Annotated[schemas.AwareDatetime | None, Query()]


def _page(entries: list[AuditEntry], limit: int) -> schemas.AuditPage:
    return schemas.AuditPage(
        entries=[schemas.AuditPublic.model_validate(e) for e in entries],
        next_before=entries[-1].seq if len(entries) == limit else None,
    )


@router.get("/audit", response_model=schemas.AuditPage)
def list_audit(
    ctx: CtxDep,
    actor: Filter = None,
    project: Filter = None,
    action: Filter = None,
    outcome: Filter = None,
    since: When = None,
    until: When = None,
    before: Before = None,
    limit: Limit = 100,
) -> schemas.AuditPage:
    """The audit trail, newest first (administrators). `action=key.` matches every key action."""
    access.require_admin(ctx)
    flt = audit.AuditFilter(actor, project, action, outcome, since, until, before, limit)
    return _page(audit.query(ctx, flt), limit)


@router.get("/projects/{project}/audit", response_model=schemas.AuditPage)
def project_audit(
    project: str,
    ctx: CtxDep,
    actor: Filter = None,
    action: Filter = None,
    outcome: Filter = None,
    since: When = None,
    until: When = None,
    before: Before = None,
    limit: Limit = 100,
) -> schemas.AuditPage:
    """One project's audit trail, for its owners."""
    proj, _ = access.project_access(ctx, project, Role.owner, write=False)
    flt = audit.AuditFilter(actor, None, action, outcome, since, until, before, limit)
    return _page(audit.query(ctx, flt, project_id=proj.id), limit)


@router.get("/audit/verify", response_model=schemas.AuditVerification)
def verify_audit(ctx: CtxDep) -> schemas.AuditVerification:
    """Check the whole hash chain; names the first entry that was changed or removed."""
    access.require_admin(ctx)
    v = audit.verify(ctx)
    return schemas.AuditVerification(
        ok=v.ok, checked=v.checked, first_broken_seq=v.first_broken_seq, reason=v.reason
    )
