"""Form input: validated by the API's own schemas; failed changes undone before re-rendering."""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from agora.errors import AgoraError, Forbidden, InvalidInput
from agora.services import audit
from agora.services.context import Ctx

M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], **fields: Any) -> M:
    """The form's fields through the API's request schema; a readable InvalidInput otherwise."""
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first.get("loc", ())) or "input"
        message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
        raise InvalidInput(f"{name.replace('_', ' ').capitalize()}: {message}") from exc


def undo(ctx: Ctx, request: Request, exc: AgoraError) -> None:
    """Roll back what the failed form did; a refusal is still worth an audit line, as in the API."""
    ctx.db.rollback()
    if isinstance(exc, Forbidden) and ctx.principal is not None:
        audit.record_denied(ctx, request.method, request.url.path, exc.detail)
