"""Single sign-on through OpenID Connect: authorization code flow with PKCE, state and nonce.

``GET /auth/oidc/login`` sends the browser to the provider; state, nonce and PKCE verifier wait
in a short-lived encrypted cookie scoped to ``/auth/oidc``. ``GET /auth/oidc/callback`` checks
the state, exchanges the code, verifies the ID token (signature against the provider's JWKS,
iss, aud, exp, nonce), reads the claims (ID token, then userinfo), signs the person in through
:mod:`agora.services.oidc` and starts a web session. Every refusal is an HTML page a person can
act on, and a failed ``auth.login`` entry in the audit trail.
"""

from __future__ import annotations

import html
import json
import logging
import re
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any, cast
from urllib.parse import quote, urlencode, urlsplit

import httpx
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from authlib.oidc.core import CodeIDToken
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet, KeySetSerialization
from joserfc.jws import JWSRegistry
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from agora.api.deps import client_addr, runtime_of
from agora.errors import AgoraError, Forbidden
from agora.runtime import Runtime
from agora.services import audit, auth
from agora.services import oidc as accounts
from agora.services.context import Ctx
from agora.settings import OIDCSettings
from agora.web.session import set_session_cookie

STATE_COOKIE = "agora_oidc"
_COOKIE_PATH = "/auth/oidc"
_STATE_TTL = 600
_METADATA_TTL = 3600
_LEEWAY = 60
_TIMEOUT = httpx.Timeout(10.0)

log = logging.getLogger("agora.oidc")
router = APIRouter(include_in_schema=False)


def install(app: FastAPI) -> None:
    """Mount the OIDC login routes when an issuer is configured."""
    settings = app.state.runtime.settings
    if not settings.oidc.enabled:
        return
    accounts.check_role_patterns(settings.oidc)
    app.state.oidc_provider = Provider(settings.oidc)
    app.include_router(router)


class LoginFailed(Exception):
    """A sign-in that cannot go on; ``message`` is shown to the person, ``reason`` audited."""

    def __init__(self, status: int, message: str, reason: str, user: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.reason, self.user = status, message, reason, user


@dataclass(frozen=True)
class Pending:
    """What the callback needs from the login that sent the browser away."""

    state: str
    nonce: str
    verifier: str
    next: str


# --- the provider -----------------------------------------------------------------------------


class Provider:
    """The configured OpenID provider: discovery document and keys, fetched lazily and cached."""

    def __init__(self, oidc: OIDCSettings) -> None:
        self.issuer = str(oidc.issuer).rstrip("/")
        self.client_id = oidc.client_id
        self.client_secret = oidc.client_secret.get_secret_value()
        self.scopes = oidc.scopes
        self._metadata: dict[str, Any] | None = None
        self._metadata_at = 0.0
        self._keys: KeySet | None = None
        self._keys_at = 0.0
        # Built once: loading the CA bundle for every request would cost tens of milliseconds.
        self._tls = httpx.create_ssl_context()

    async def _call(self, method: str, url: str, what: str, **kw: Any) -> tuple[int, Any]:
        try:
            async with httpx.AsyncClient(timeout=_TIMEOUT, verify=self._tls) as client:
                response = await client.request(method, url, **kw)
        except httpx.TransportError as exc:
            raise LoginFailed(
                503,
                f"The sign-in service at {self.issuer} cannot be reached. Try again in a few "
                "minutes; if it lasts, tell the platform administrator.",
                f"provider unreachable ({what}): {type(exc).__name__}: {exc}"[:300],
            ) from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 500 or not isinstance(body, dict):
            raise _bad_gateway(f"its {what} answered HTTP {response.status_code}")
        return response.status_code, body

    async def _get(self, url: str, what: str, **kw: Any) -> dict[str, Any]:
        status, body = await self._call("GET", url, what, **kw)
        if status >= 400:
            raise _bad_gateway(f"its {what} answered HTTP {status}")
        return dict(body)

    async def metadata(self) -> dict[str, Any]:
        if self._metadata is None or time.monotonic() - self._metadata_at > _METADATA_TTL:
            meta = await self._get(f"{self.issuer}/.well-known/openid-configuration", "discovery")
            if str(meta.get("issuer", "")).rstrip("/") != self.issuer:
                raise _bad_gateway(
                    f"its discovery document names issuer {meta.get('issuer')!r} "
                    f"(AGORA_OIDC_ISSUER is {self.issuer!r})"
                )
            for field in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                if not isinstance(meta.get(field), str):
                    raise _bad_gateway(f"its discovery document lacks {field}")
            self._metadata, self._metadata_at = meta, time.monotonic()
        return self._metadata

    async def key_set(self, *, refresh: bool = False) -> KeySet:
        # An unknown key id refreshes the set (keys rotate), at most once a minute.
        stale = refresh and time.monotonic() - self._keys_at > 60
        if self._keys is None or stale:
            data = await self._get((await self.metadata())["jwks_uri"], "key set (JWKS)")
            try:
                self._keys, self._keys_at = (
                    KeySet.import_key_set(cast(KeySetSerialization, data)),
                    time.monotonic(),
                )
            except (JoseError, KeyError, TypeError, ValueError) as exc:
                raise _bad_gateway(f"its key set cannot be read: {exc}") from exc
        return self._keys

    async def begin(self, redirect_uri: str, next_path: str) -> tuple[str, Pending]:
        endpoint = (await self.metadata())["authorization_endpoint"]
        pending = Pending(
            state=secrets.token_urlsafe(24),
            nonce=secrets.token_urlsafe(24),
            verifier=secrets.token_urlsafe(48),
            next=next_path,
        )
        params = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": redirect_uri,
            "scope": self.scopes,
            "state": pending.state,
            "nonce": pending.nonce,
            "code_challenge": create_s256_code_challenge(pending.verifier),
            "code_challenge_method": "S256",
        }
        separator = "&" if urlsplit(endpoint).query else "?"
        return f"{endpoint}{separator}{urlencode(params)}", pending

    async def complete(self, code: str, pending: Pending, redirect_uri: str) -> dict[str, Any]:
        """Exchange the code; the verified claims of the ID token, completed by userinfo."""
        meta = await self.metadata()
        tokens = await self._exchange(meta["token_endpoint"], code, pending, redirect_uri)
        id_token, access_token = tokens.get("id_token"), tokens.get("access_token")
        if not isinstance(id_token, str):
            raise _bad_gateway("it returned no ID token (is the 'openid' scope allowed?)")
        claims = await self.verify_id_token(id_token, pending.nonce, access_token)
        endpoint = meta.get("userinfo_endpoint")
        if isinstance(endpoint, str) and isinstance(access_token, str):
            info = await self._get(
                endpoint, "userinfo", headers={"Authorization": f"Bearer {access_token}"}
            )
            if info.get("sub") != claims["sub"]:
                raise _bad_gateway("its userinfo answer is about another subject")
            claims = {**claims, **info}
        return claims

    async def _exchange(
        self, endpoint: str, code: str, pending: Pending, redirect_uri: str
    ) -> dict[str, Any]:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": pending.verifier,
        }
        auth_: httpx.BasicAuth | None = None
        if self.client_secret:  # client_secret_basic, form-encoded as RFC 6749 §2.3.1 says
            auth_ = httpx.BasicAuth(
                quote(self.client_id, safe=""), quote(self.client_secret, safe="")
            )
        else:
            form["client_id"] = self.client_id
        status, body = await self._call("POST", endpoint, "token endpoint", data=form, auth=auth_)
        if status >= 400:
            raise LoginFailed(
                400,
                "The sign-in service did not accept this sign-in (it may have been used already "
                "or taken too long). Please start again.",
                f"token exchange refused: {body.get('error', status)}",
            )
        return dict(body)

    async def verify_id_token(
        self, id_token: str, nonce: str, access_token: str | None = None
    ) -> dict[str, Any]:
        meta = await self.metadata()
        algorithms = [
            a
            for a in meta.get("id_token_signing_alg_values_supported") or ["RS256"]
            if isinstance(a, str) and a != "none" and not a.startswith("HS")
        ]
        registry = JWSRegistry(algorithms=algorithms or ["RS256"], strict_check_header=False)
        try:
            try:
                token = jwt.decode(id_token, await self.key_set(), registry=registry)
            except InvalidKeyIdError:
                token = jwt.decode(id_token, await self.key_set(refresh=True), registry=registry)
            claims = CodeIDToken(
                token.claims,
                token.header,
                {
                    "iss": {"essential": True, "value": meta["issuer"]},
                    "aud": {"essential": True, "value": self.client_id},
                },
                {"nonce": nonce, "client_id": self.client_id, "access_token": access_token},
            )
            claims.validate(leeway=_LEEWAY)
        except (JoseError, ValueError) as exc:
            raise LoginFailed(
                400,
                "The sign-in could not be verified, so it was refused. Please start again; if "
                "it happens again, tell the platform administrator.",
                f"invalid ID token: {exc}",
            ) from exc
        return dict(claims)


def _bad_gateway(what: str) -> LoginFailed:
    return LoginFailed(
        502,
        "The sign-in service gave an answer Agora cannot use. Try again later; if it lasts, "
        "tell the platform administrator.",
        f"provider error: {what}",
    )


# --- routes -----------------------------------------------------------------------------------


def safe_next(value: str | None) -> str:
    """A local path to return to after signing in; anything else (or a sign-in page) is "/"."""
    if not value or not value.startswith("/") or "\\" in value or not value.isprintable():
        return "/"
    parts = urlsplit(value)
    if value.startswith("//") or parts.scheme or parts.netloc:
        return "/"
    return "/" if parts.path.startswith(("/login", "/logout", "/auth/")) else value


@router.get("/auth/oidc/login")
async def login(request: Request, next: str | None = None) -> Response:
    rt = runtime_of(request)
    provider: Provider = request.app.state.oidc_provider
    try:
        url, pending = await provider.begin(_redirect_uri(rt), safe_next(next))
    except LoginFailed as failure:
        log.warning("single sign-on cannot start: %s", failure.reason)
        return _page(failure.status, failure.message)
    response = RedirectResponse(url, status_code=302)
    payload = {**asdict(pending), "exp": time.time() + _STATE_TTL}
    response.set_cookie(
        STATE_COOKIE,
        rt.keyring.encrypt(json.dumps(payload)),
        max_age=_STATE_TTL,
        path=_COOKIE_PATH,
        httponly=True,
        secure=rt.settings.secure_cookies,
        samesite="lax",
    )
    return response


@router.get("/auth/oidc/callback")
async def callback(request: Request) -> Response:
    rt = runtime_of(request)
    provider: Provider = request.app.state.oidc_provider
    addr = client_addr(request)
    try:
        pending = _pending(request, rt)
        code = request.query_params.get("code")
        if not code:
            raise LoginFailed(
                400, "The sign-in service sent no code. Please start again.", "no code"
            )
        claims = await provider.complete(code, pending, _redirect_uri(rt))
        response = await run_in_threadpool(_sign_in, rt, addr, claims, pending.next)
    except LoginFailed as failure:
        response = await run_in_threadpool(_refuse, rt, addr, failure)
    response.delete_cookie(STATE_COOKIE, path=_COOKIE_PATH)
    return response


def _redirect_uri(rt: Runtime) -> str:
    return f"{rt.settings.public_url}/auth/oidc/callback"


def _pending(request: Request, rt: Runtime) -> Pending:
    """The login this answer belongs to; refuses provider errors, lost logins and bad states."""
    pending, lost = _from_cookie(request, rt)
    state_ok = pending is not None and secrets.compare_digest(
        request.query_params.get("state", "").encode(), pending.state.encode()
    )
    error = request.query_params.get("error")
    if error:
        code = error if re.fullmatch(r"[a-z_]{1,64}", error) else "unknown_error"
        # The provider's own words are shown only on an answer bound to this browser's login:
        # otherwise anyone could put text on an Agora page with a crafted link.
        said = request.query_params.get("error_description", "")[:300] if state_ok else ""
        raise LoginFailed(
            403 if code == "access_denied" else 400,
            f"The sign-in service did not sign you in ({said or code}). You can start again.",
            f"provider error: {code}",
        )
    if pending is None:
        raise LoginFailed(
            400,
            "This sign-in was started too long ago, in another browser, or with cookies "
            "blocked. Please start again.",
            lost,
        )
    if not state_ok:
        raise LoginFailed(
            400,
            "This sign-in answer does not belong to the sign-in this browser started, so it "
            "was refused. Please start again.",
            "state mismatch",
        )
    return pending


def _from_cookie(request: Request, rt: Runtime) -> tuple[Pending | None, str]:
    cookie = request.cookies.get(STATE_COOKIE)
    if not cookie:
        return None, "no state cookie"
    try:
        data = json.loads(rt.keyring.decrypt(cookie))
        pending = Pending(data["state"], data["nonce"], data["verifier"], data["next"])
        expired = float(data["exp"]) < time.time()
    except (ValueError, KeyError, TypeError):
        return None, "unreadable state cookie"
    return (None, "expired state cookie") if expired else (pending, "")


def _sign_in(rt: Runtime, addr: str | None, claims: dict[str, Any], next_path: str) -> Response:
    for attempt in (1, 2):
        # A write session: on SQLite it takes the write lock before the first read, so another
        # process committing in between cannot make the sign-in's writes fail at once.
        with rt.db.session(write=True) as db:
            ctx = Ctx(db=db, runtime=rt, client_addr=addr)
            try:
                user = accounts.sign_in(ctx, claims)
                signed = auth.start_session(ctx, user, "web", method="oidc")
                db.commit()
            except IntegrityError:
                # The same person signing in twice at once: the second sees the first's rows.
                db.rollback()
                if attempt == 2:
                    raise
                continue
            except AgoraError as exc:
                db.rollback()
                who = accounts.known_username(ctx, claims)
                status = 403 if isinstance(exc, Forbidden) else 400
                raise LoginFailed(status, exc.detail, exc.detail, who) from exc
        response = RedirectResponse(next_path, status_code=303)
        set_session_cookie(response, rt, signed.token)
        return response
    raise AssertionError("unreachable")


def _refuse(rt: Runtime, addr: str | None, failure: LoginFailed) -> Response:
    if failure.status >= 500:  # the provider's fault, not the person's: worth an operator's look
        log.warning("single sign-on failed: %s", failure.reason)
    with rt.db.session(write=True) as db:
        ctx = Ctx(db=db, runtime=rt, client_addr=addr)
        audit.record_failure(
            ctx,
            "auth.login",
            f"user:{failure.user}" if failure.user else "oidc",
            actor=failure.user or "anonymous",
            details={"method": "oidc", "reason": failure.reason[:500]},
        )
    return _page(failure.status, failure.message)


def _page(status: int, message: str) -> HTMLResponse:
    body = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<title>Sign-in failed · Agora</title></head><body><main>"
        f"<h1>Sign-in failed</h1><p>{html.escape(message)}</p>"
        "<p><a href='/auth/oidc/login'>Start again</a> · <a href='/'>Agora home</a></p>"
        "</main></body></html>"
    )
    return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})
