"""Gateway calls from a signed-in browser (the chat page): the session cookie, checked in the
database like every web request, with the CSRF header required on POST."""

from __future__ import annotations

from http.cookies import CookieError, SimpleCookie

from agora.api.deps import CSRF_HEADER, SESSION_COOKIE, csrf_ok
from agora.errors import AgoraError
from agora.gateway.directory import Caller
from agora.gateway.protocol import GatewayError
from agora.models import Role
from agora.runtime import Runtime
from agora.services import access, auth, projects
from agora.services.context import Ctx


def session_caller(
    rt: Runtime, method: str, cookie: bytes, csrf: bytes | None, project: bytes | None
) -> Caller:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(cookie.decode("latin-1"))
    except CookieError:
        jar = SimpleCookie()
    morsel = jar.get(SESSION_COOKIE)
    if morsel is None or not morsel.value:
        raise GatewayError(401, "Sign in, or send an API key as a Bearer token", "invalid_api_key")
    token = morsel.value
    if method != "GET" and not csrf_ok(rt, token, csrf.decode("latin-1") if csrf else None):
        raise GatewayError(
            403, f"Requests signed in by cookie must send the {CSRF_HEADER} header", "csrf"
        )
    with rt.db.session() as db:
        ctx = Ctx(db=db, runtime=rt)
        try:
            principal = auth.authenticate(ctx, token)
            ctx.principal = principal
            if principal.restriction:
                raise GatewayError(
                    403,
                    "Finish signing in (change your password or enrol TOTP) first",
                    "restricted",
                )
            if project:
                found, _ = access.project_access(
                    ctx, project.decode("utf-8", "replace"), Role.viewer, write=False
                )
            else:
                current = projects.current_project(ctx)
                if current is None:
                    raise GatewayError(403, "You are not a member of any project", "no_project")
                found = current[0]
        except AgoraError as exc:
            status = exc.status if exc.status in (401, 403, 404) else 403
            raise GatewayError(status, exc.detail, "not_allowed") from None
        return Caller(
            user_id=principal.user_id,
            username=principal.username,
            project_id=found.id,
            project_name=found.name,
        )
