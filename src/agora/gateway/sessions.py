"""Gateway calls from a signed-in browser (the chat page, "Try it"): the session cookie, with
the CSRF header required on anything but GET.

The first request of a session is checked in the database like every web request; the answer
(who calls, for which project, until when) is then kept in memory, so that the request path
makes no database call, as for API keys. The cache is dropped whenever the gateway's
directory is rebuilt: that happens on every change that could alter an answer (a session
ended or switched project, a user disabled or restricted, a membership or project changed;
see :mod:`agora.gateway.directory`). Settings outside those (an operator turning on
``require_totp``) reach cached sessions within :data:`SessionCallers.ttl` seconds.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from urllib.parse import urlsplit

from agora.api.deps import CSRF_HEADER, SESSION_COOKIE, csrf_ok
from agora.errors import AgoraError
from agora.gateway.directory import Caller, Snapshot
from agora.gateway.protocol import GatewayError
from agora.models import AuthSession, Role
from agora.runtime import Runtime
from agora.services import access, auth, projects
from agora.services.context import Ctx


@dataclass(frozen=True, slots=True)
class Resolved:
    caller: Caller
    session_id: int
    #: Epoch seconds: the session's own expiry.
    expires_at: float


def session_token(
    method: str,
    rt: Runtime,
    cookie: bytes,
    csrf: bytes | None,
    origin: bytes | None = None,
    referer: bytes | None = None,
) -> str:
    """The session token a request's cookie carries, once the request shows it comes from the
    platform's own pages: by its CSRF header (the chat page, "Try it"), or, for the served
    modules' Swagger UI (``/m/<model>/ui``, a script that cannot know that token), by an
    ``Origin`` header equal to the platform's public URL (browsers set it on every POST; a page
    elsewhere cannot) and a ``Referer`` on a ``/m/`` page of it. Deployments' own pages
    (``/d/…``) share the platform's origin but not that path, and a page that hides its address
    (``Referrer-Policy: no-referrer``) does not pass either."""
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(cookie.decode("latin-1"))
    except CookieError:
        jar = SimpleCookie()
    morsel = jar.get(SESSION_COOKIE)
    if morsel is None or not morsel.value:
        raise GatewayError(401, "Sign in, or send an API key as a Bearer token", "invalid_api_key")
    token = morsel.value
    if (
        method != "GET"
        and not csrf_ok(rt, token, csrf.decode("latin-1") if csrf else None)
        and not _from_module_page(rt, origin, referer)
    ):
        raise GatewayError(
            403,
            f"Requests signed in by cookie must send the {CSRF_HEADER} header, or come from "
            "this platform's own pages",
            "csrf",
        )
    return token


def _from_module_page(rt: Runtime, origin: bytes | None, referer: bytes | None) -> bool:
    if not origin or not referer:
        return False
    public = urlsplit(rt.settings.public_url or "")
    if not public.netloc:
        return False
    own = f"{public.scheme}://{public.netloc}"
    pages = own + public.path.rstrip("/") + "/m/"
    page = referer.decode("latin-1")
    return origin.decode("latin-1") == own and page.startswith(pages) and "/../" not in page


def resolve(rt: Runtime, token: str, project: bytes | None) -> Resolved:
    """Who a session token is, and the project it calls for (the ``X-Agora-Project`` header,
    else the session's current project), from the database. Runs in a thread."""
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
            session = db.get(AuthSession, principal.session_id)
            if session is None:  # ended since authenticate() read it
                raise GatewayError(401, "Your session has expired; sign in again", "not_allowed")
        except AgoraError as exc:
            status = exc.status if exc.status in (401, 403, 404) else 403
            raise GatewayError(status, exc.detail, "not_allowed") from None
        caller = Caller(
            user_id=principal.user_id,
            username=principal.username,
            project_id=found.id,
            project_name=found.name,
        )
        return Resolved(caller, session.id, session.expires_at.timestamp())


class SessionCallers:
    """Resolved sessions, by token hash and project header, for one snapshot of the
    directory. Only successes are kept; a refused cookie is checked again every time."""

    ttl = 30.0
    max_entries = 10_000

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._snapshot: Snapshot | None = None
        self._entries: dict[tuple[str, bytes | None], tuple[Resolved, float]] = {}

    def get(self, snapshot: Snapshot, token: str, project: bytes | None) -> Caller | None:
        if snapshot is not self._snapshot:
            self._entries.clear()
            self._snapshot = snapshot
            return None
        key = (hashlib.sha256(token.encode()).hexdigest(), project)
        entry = self._entries.get(key)
        if entry is None:
            return None
        resolved, cached_at = entry
        now = time.time()
        if now >= resolved.expires_at or now - cached_at > self.ttl:
            del self._entries[key]
            return None
        self.rt.session_usage.touch_now(resolved.session_id)
        return resolved.caller

    def put(
        self, snapshot: Snapshot, token: str, project: bytes | None, resolved: Resolved
    ) -> None:
        """Remember an answer resolved while ``snapshot`` was current (one resolved across a
        rebuild is not kept: it may predate the change that caused it)."""
        if snapshot is not self._snapshot:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        key = (hashlib.sha256(token.encode()).hexdigest(), project)
        self._entries[key] = (resolved, time.time())
