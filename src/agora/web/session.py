"""The browser session cookie, shared by password and single sign-on logins."""

from __future__ import annotations

from starlette.responses import Response

from agora.api.deps import SESSION_COOKIE
from agora.runtime import Runtime


def set_session_cookie(response: Response, runtime: Runtime, token: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(runtime.settings.session_hours * 3600),
        httponly=True,
        secure=runtime.settings.secure_cookies,
        samesite="lax",
        path="/",
    )


def clear_session_cookie(response: Response, runtime: Runtime) -> None:
    response.delete_cookie(
        SESSION_COOKIE,
        path="/",
        httponly=True,
        secure=runtime.settings.secure_cookies,
        samesite="lax",
    )
