"""Every error leaves as application/problem+json (RFC 9457), mapped here and nowhere else."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException

from agora.errors import AgoraError, Forbidden

log = logging.getLogger("agora.api")
PROBLEM = "application/problem+json"
_TYPE_BASE = "https://agora.example/problems/"
_TITLES = {
    400: "Bad request",
    401: "Authentication required",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request too large",
    415: "Unsupported media type",
    422: "Invalid input",
    429: "Too many requests",
    500: "Internal server error",
}


def problem(
    status: int,
    detail: str,
    *,
    code: str | None = None,
    title: str | None = None,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": _TYPE_BASE + (code or str(status)),
        "title": title or _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "cookie")]
    return ".".join(parts) or str(loc[0] if loc else "request")


def validation_errors(exc: RequestValidationError) -> list[dict[str, str]]:
    out = []
    for err in exc.errors():
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        out.append({"field": _location(err.get("loc", ())), "message": msg})
    return out


def install(app: FastAPI, on_forbidden: Any = None) -> None:
    @app.exception_handler(AgoraError)
    async def _domain(request: Request, exc: AgoraError) -> JSONResponse:
        if isinstance(exc, Forbidden) and on_forbidden is not None:
            await on_forbidden(request, exc)
        headers = {}
        retry = exc.extra.get("retry_after")
        if retry is not None:
            headers["Retry-After"] = str(retry)
        if exc.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        extra = {k: v for k, v in exc.extra.items() if k != "retry_after"}
        return problem(
            exc.status,
            exc.detail,
            code=exc.code,
            title=exc.title,
            instance=request.url.path,
            headers=headers or None,
            **extra,
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = validation_errors(exc)
        first = errors[0] if errors else {"field": "request", "message": "invalid"}
        detail = f"{first['field']}: {first['message']}"
        if len(errors) > 1:
            detail += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
        return problem(422, detail, code="invalid-input", instance=request.url.path, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else _TITLES.get(exc.status_code, "")
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"There is nothing at {request.url.path}"
        return problem(
            exc.status_code,
            detail,
            instance=request.url.path,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(IntegrityError)
    async def _integrity(request: Request, exc: IntegrityError) -> JSONResponse:
        # Two requests raced to create the same thing; the loser gets a clean conflict.
        log.info("integrity error on %s %s: %s", request.method, request.url.path, exc.orig)
        return problem(
            409,
            "This conflicts with a change made at the same time; reload and retry",
            code="conflict",
            instance=request.url.path,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(
            500,
            "Something went wrong on the server; it has been logged.",
            instance=request.url.path,
        )
