"""The access proxy: ``/d/{id}/…`` on the Agora server reaches the deployment's service.

Every request and WebSocket is checked first: the caller signs in as for the API (session cookie
or ``Authorization: Bearer agora_…``) and must be a member, owner or admin of the deployment's
project (viewers may not: a service like JupyterLab hands out a shell). API keys need the
``manage`` scope for the same reason. Deployments the caller cannot see answer 404, like ones
that do not exist.

What the service sees: the original Host, the caller's headers without hop-by-hop ones and
without Agora's credentials (``agora_*`` cookies, Agora bearer tokens, the CSRF header), plus
``Authorization: token <service token>`` and ``X-Forwarded-*``. HTTP lives in ``proxy_http``,
WebSockets in ``proxy_ws``; this module holds what they share.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import FastAPI
from starlette.requests import HTTPConnection

from agora.api.deps import SESSION_COOKIE
from agora.errors import Forbidden, NotFound, ServiceUnavailable
from agora.models import Deployment, DeploymentState, Role
from agora.runtime import Runtime
from agora.security import API_KEY_PREFIX, SESSION_PREFIX
from agora.services import access, auth, deployments
from agora.services.context import Ctx

PREFIX = "/d/"
_ID = re.compile(r"^[a-z0-9]{1,16}$")
#: Cookies (and their prefix) that belong to Agora: never sent to a service, never set by one.
AGORA_COOKIE_PREFIX = "agora_"
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
#: Request headers the proxy sets itself, that carry Agora's credentials, or that the Agora
#: server has already answered (``Expect: 100-continue``).
_REPLACED = frozenset(
    {
        "authorization",
        "expect",
        "x-csrf-token",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-prefix",
    }
)
#: Response headers the Agora server writes itself (uvicorn would send them twice).
_OURS = frozenset({b"date", b"server"})
_COMING_UP = (DeploymentState.pending, DeploymentState.submitted, DeploymentState.starting)


@dataclass(frozen=True)
class Target:
    """Where one checked request goes."""

    dep_id: str
    address: str
    strip_prefix: bool
    token: str

    @property
    def mount(self) -> str:
        return f"{PREFIX}{self.dep_id}"

    def upstream_path(self, raw_path: bytes) -> bytes:
        """The path to ask the service for, still percent-encoded as the caller sent it."""
        if not self.strip_prefix:
            return raw_path
        return raw_path[len(self.mount) :] or b"/"


def open_service(ctx: Ctx, dep_id: str) -> Target:
    """Check that the caller may use the deployment's service now; say where it listens."""
    access.principal(ctx)
    missing = NotFound(f"Deployment '{dep_id}' does not exist or you cannot open it")
    dep = ctx.db.get(Deployment, dep_id) if _ID.match(dep_id) else None
    if dep is None:
        raise missing
    try:
        access.project_access(ctx, dep.project.name, Role.member, write=True)
    except NotFound:
        raise missing from None
    if dep.kind != "service":
        raise NotFound(f"Deployment '{dep_id}' is a batch job; it serves nothing")
    if dep.state is not DeploymentState.running or not dep.address:
        if dep.state in _COMING_UP:
            raise ServiceUnavailable(
                f"Deployment '{dep_id}' is {dep.state.value}, not running yet; "
                "try again in a few seconds",
                retry_after=5,
            )
        raise ServiceUnavailable(
            f"Deployment '{dep_id}' is {dep.state.value}; it no longer serves anything. "
            "Start a new deployment to use the service again."
        )
    return Target(dep.id, dep.address, dep.strip_prefix, deployments.service_token(ctx, dep))


def agora_token(conn: HTTPConnection) -> tuple[str | None, bool]:
    """The Agora credential a request carries and whether it is the session cookie.

    Only bearer tokens that look like Agora's count: other Authorization headers are the
    service's business (and are replaced by the service token anyway).
    """
    scheme, _, value = conn.headers.get("authorization", "").partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value.startswith((API_KEY_PREFIX, SESSION_PREFIX)):
        return value, False
    cookie = conn.cookies.get(SESSION_COOKIE)
    return (cookie, True) if cookie else (None, False)


def _resolve(conn: HTTPConnection, dep_id: str, state_changing: bool) -> Target:
    runtime: Runtime = conn.app.state.runtime
    token, from_cookie = agora_token(conn)
    with runtime.db.session() as db:
        client = conn.client.host if conn.client else None
        ctx = Ctx(db=db, runtime=runtime, client_addr=client)
        if token:
            ctx.principal = auth.authenticate(ctx, token)
            conn.state.principal = ctx.principal
        if from_cookie and state_changing and not same_origin(conn, runtime):
            raise Forbidden(
                "Requests to a service signed in by cookie must come from this site's pages "
                "(the Origin header does not match)"
            )
        target = open_service(ctx, dep_id)
        db.commit()
        return target


async def resolve(conn: HTTPConnection, dep_id: str, *, state_changing: bool) -> Target:
    """Authenticate the caller and check access (in a thread: it talks to the database)."""
    return await asyncio.to_thread(_resolve, conn, dep_id, state_changing)


def same_origin(conn: HTTPConnection, runtime: Runtime) -> bool:
    """Whether a cookie-signed request comes from Agora's own pages (CSRF defence).

    Browsers send Origin with every WebSocket and every non-GET request; where it is missing,
    Fetch Metadata (``Sec-Fetch-Site``) decides, and a request with neither is let through.
    """
    origin = conn.headers.get("origin")
    if origin is None:
        return conn.headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")
    ours = {_origin(str(runtime.settings.public_url))}
    host = conn.headers.get("host")
    if host:
        scheme = "https" if conn.url.scheme in ("https", "wss") else "http"
        ours.add(f"{scheme}://{host}".lower())
    return origin.lower() in ours


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def without_agora_cookies(value: str) -> str:
    """A Cookie header without Agora's cookies."""
    kept = [
        part.strip()
        for part in value.split(";")
        if part.strip() and not part.strip().lower().startswith(AGORA_COOKIE_PREFIX)
    ]
    return "; ".join(kept)


def upstream_headers(conn: HTTPConnection, target: Target) -> list[tuple[str, str]]:
    """The caller's headers as the service should see them."""
    connection_named = {
        name.strip().lower() for name in conn.headers.get("connection", "").split(",")
    }
    out: list[tuple[str, str]] = []
    for name, value in conn.headers.items():
        lower = name.lower()
        if lower in HOP_BY_HOP or lower in connection_named or lower in _REPLACED:
            continue
        if lower == "cookie":
            value = without_agora_cookies(value)
            if not value:
                continue
        out.append((lower, value))
    scheme = "https" if conn.url.scheme in ("https", "wss") else "http"
    forwarded_for = conn.headers.get("x-forwarded-for")
    client = conn.client.host if conn.client else "unknown"
    out += [
        ("authorization", f"token {target.token}"),
        ("x-forwarded-for", f"{forwarded_for}, {client}" if forwarded_for else client),
        ("x-forwarded-proto", scheme),
        ("x-forwarded-host", conn.headers.get("host", "")),
    ]
    if target.strip_prefix:
        out.append(("x-forwarded-prefix", target.mount))
    return out


def response_headers(
    raw: Iterable[tuple[bytes, bytes]], target: Target
) -> list[tuple[bytes, bytes]]:
    """The service's response headers as the caller should see them."""
    headers = list(raw)
    connection_named = {
        token.strip().lower()
        for name, value in headers
        if name.lower() == b"connection"
        for token in value.split(b",")
    }
    out = []
    for name, value in headers:
        lower = name.lower()
        if lower in connection_named or lower in _OURS or lower.decode("latin-1") in HOP_BY_HOP:
            continue
        if lower == b"set-cookie" and _is_agora_cookie(value):
            continue
        if lower == b"location":
            value = _relocate(value.decode("latin-1"), target).encode("latin-1")
        out.append((lower, value))
    return out


def _is_agora_cookie(set_cookie: bytes) -> bool:
    name = set_cookie.split(b"=", 1)[0].strip().lower()
    return name.startswith(AGORA_COOKIE_PREFIX.encode())


def _relocate(location: str, target: Target) -> str:
    """Keep redirects inside ``/d/{id}/``: services behind a stripped prefix do not know it."""
    parts = urlsplit(location)
    if parts.netloc and parts.netloc == target.address:
        location = location[len(f"{parts.scheme}://{parts.netloc}") :] or "/"
    elif parts.scheme or parts.netloc:
        return location
    if target.strip_prefix and location.startswith("/") and not location.startswith("//"):
        return target.mount + location
    return location


def install(app: FastAPI) -> None:
    """Serve ``/d/{id}/…`` (HTTP and WebSocket) and close the shared client with the app."""
    from agora.deployments import proxy_http, proxy_ws

    proxy_http.install(app)
    proxy_ws.install(app)
