"""Signing in: passwords with throttling, TOTP, sessions and API-key authentication."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import pyotp
from sqlalchemy import delete, select, text

from agora.db import utcnow
from agora.errors import InvalidInput, TooManyAttempts, TOTPRequired, Unauthenticated
from agora.models import ApiKey, AuthSession, LoginThrottle, User
from agora.security import (
    API_KEY_PREFIX,
    SESSION_PREFIX,
    hash_password,
    new_session_token,
    new_totp_secret,
    password_needs_rehash,
    token_hash,
    totp_step,
    verify_password,
)
from agora.services import access, audit, system
from agora.services.context import ALL_SCOPES, Ctx, Principal

_BAD_LOGIN = "Wrong username or password"


# --- throttling -------------------------------------------------------------------------------


def _throttle_check(ctx: Ctx, username: str) -> LoginThrottle | None:
    key = username.lower()
    if ctx.db.get_bind().dialect.name == "postgresql":
        # One sign-in at a time per user name, until the attempt's outcome is committed: guesses
        # sent in parallel wait for each other, so none slips past the failure the one before
        # it is recording (SQLite's write transactions are one at a time already).
        ctx.db.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
            {"key": "agora-sign-in:" + key},
        )
    row = ctx.db.get(LoginThrottle, key, populate_existing=True)
    now = utcnow()
    if row is None:
        return None
    for until, why in (
        (row.locked_until, "This account is locked after repeated failed sign-ins"),
        (row.next_attempt_at, "Too many failed sign-ins"),
    ):
        if until is not None and until > now:
            wait = math.ceil((until - now).total_seconds())
            raise TooManyAttempts(f"{why}; try again in {wait} s", retry_after=wait)
    return row


def _throttle_fail(ctx: Ctx, username: str, row: LoginThrottle | None) -> None:
    s = ctx.runtime.settings
    if row is None:
        row = LoginThrottle(username=username.lower(), failures=0)
        ctx.db.add(row)
    row.failures += 1
    now = utcnow()
    if row.failures >= s.login_lockout_attempts:
        row.locked_until = now + dt.timedelta(minutes=s.login_lockout_minutes)
        row.failures = 0
        row.next_attempt_at = None
    elif row.failures >= s.login_free_attempts:
        delay = min(2 ** (row.failures - s.login_free_attempts), s.login_max_delay_seconds)
        row.next_attempt_at = now + dt.timedelta(seconds=delay)


def _throttle_clear(ctx: Ctx, username: str) -> None:
    ctx.db.execute(delete(LoginThrottle).where(LoginThrottle.username == username.lower()))


# --- password (+ TOTP) sign-in ----------------------------------------------------------------


@dataclass
class SignIn:
    user: User
    token: str
    session: AuthSession


def check_credentials(ctx: Ctx, username: str, password: str, totp_code: str | None) -> User:
    """Verify a password (and TOTP when enrolled); audit the outcome; throttle failures.

    Runs in its own committed transaction so failures are recorded even though the caller
    gets an error.
    """
    username = username.strip()
    row = _throttle_check_audited(ctx, username)
    user = ctx.db.scalar(select(User).where(User.username == username))
    ok = verify_password(user.password_hash if user else None, password)
    if not ok or user is None or user.disabled:
        _fail(ctx, username, row, "wrong password" if user else "unknown user", user)
        raise Unauthenticated(_BAD_LOGIN)
    if user.totp_secret is not None:
        if not totp_code:
            raise TOTPRequired("Enter the 6-digit code from your authenticator app")
        _check_totp(ctx, user, totp_code, row)
    if user.password_hash and password_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    _signed_in(ctx, user)
    return user


def complete_totp(ctx: Ctx, username: str, code: str) -> User:
    """Second step of a two-step (web) sign-in: the caller holds proof that the password of
    ``username`` was verified moments ago; check the code with the same throttling and audit."""
    username = username.strip()
    row = _throttle_check_audited(ctx, username)
    user = ctx.db.scalar(select(User).where(User.username == username))
    if user is None or user.disabled or user.totp_secret is None:
        raise Unauthenticated("This sign-in is no longer valid; start again")
    _check_totp(ctx, user, code, row)
    _signed_in(ctx, user)
    return user


def _check_totp(ctx: Ctx, user: User, code: str, row: LoginThrottle | None) -> None:
    assert user.totp_secret is not None
    secret = ctx.runtime.keyring.decrypt(user.totp_secret)
    step = totp_step(secret, code, user.totp_last_step)
    if step is None:
        _fail(ctx, user.username, row, "wrong TOTP code", user)
        raise Unauthenticated("The TOTP code is wrong or was already used")
    user.totp_last_step = step


def _signed_in(ctx: Ctx, user: User) -> None:
    _throttle_clear(ctx, user.username)
    user.last_login_at = utcnow()


def _throttle_check_audited(ctx: Ctx, username: str) -> LoginThrottle | None:
    try:
        return _throttle_check(ctx, username)
    except TooManyAttempts:
        _audit_failure(ctx, username, None, "throttled")
        raise


def _fail(ctx: Ctx, username: str, row: LoginThrottle | None, why: str, user: User | None) -> None:
    _throttle_fail(ctx, username, row)
    _audit_failure(ctx, username, user, why)


def _audit_failure(ctx: Ctx, username: str, user: User | None, why: str) -> None:
    # Keep the throttle state: record_failure starts from a clean transaction.
    ctx.db.commit()
    audit.record_failure(
        ctx,
        "auth.login",
        f"user:{username[:64]}",
        actor=username[:64] or "anonymous",
        actor_id=user.id if user else None,
        details={"reason": why},
    )


def login(ctx: Ctx, username: str, password: str, totp_code: str | None, kind: str) -> SignIn:
    user = check_credentials(ctx, username, password, totp_code)
    return start_session(ctx, user, kind, method="password")


def start_session(ctx: Ctx, user: User, kind: str, *, method: str) -> SignIn:
    s = ctx.runtime.settings
    lifetime = (
        dt.timedelta(hours=s.session_hours)
        if kind == "web"
        else dt.timedelta(days=s.cli_token_days)
    )
    token = new_session_token()
    now = utcnow()
    session = AuthSession(
        token_hash=token_hash(token),
        kind=kind,
        user_id=user.id,
        created_at=now,
        last_seen_at=now,
        expires_at=now + lifetime,
        client_addr=ctx.client_addr,
    )
    ctx.db.add(session)
    ctx.db.flush()
    audit.record(
        ctx,
        "auth.login",
        f"user:{user.username}",
        actor=user.username,
        actor_id=user.id,
        details={"method": method, "kind": kind},
    )
    return SignIn(user, token, session)


def logout(ctx: Ctx) -> None:
    p = access.principal(ctx, allow_restricted=True)
    if p.session_id is None:
        raise InvalidInput("Only sessions can sign out; revoke an API key instead")
    ctx.db.execute(delete(AuthSession).where(AuthSession.id == p.session_id))
    audit.record(ctx, "auth.logout", f"user:{p.username}")


def end_sessions(ctx: Ctx, user_id: int, keep: int | None = None) -> None:
    """Sign the user out everywhere, except in session ``keep`` when given."""
    ended = delete(AuthSession).where(AuthSession.user_id == user_id)
    if keep is not None:
        ended = ended.where(AuthSession.id != keep)
    ctx.db.execute(ended)


# --- authenticating requests ------------------------------------------------------------------


def authenticate(ctx: Ctx, token: str) -> Principal:
    """The principal behind a session token or an API key; raises Unauthenticated otherwise."""
    if token.startswith(SESSION_PREFIX):
        return _from_session(ctx, token)
    if token.startswith(API_KEY_PREFIX):
        return _from_api_key(ctx, token)
    raise Unauthenticated("Unrecognised credentials: expected an Agora API key ('agora_…')")


def _from_session(ctx: Ctx, token: str) -> Principal:
    now = utcnow()
    session = ctx.db.scalar(select(AuthSession).where(AuthSession.token_hash == token_hash(token)))
    if session is None or session.expires_at <= now:
        raise Unauthenticated("Your session has expired; sign in again")
    user = session.user
    if user.disabled:
        raise Unauthenticated("This account is disabled")
    ctx.runtime.session_usage.touch(session.id, now)
    return Principal(
        user_id=user.id,
        username=user.username,
        is_admin=user.is_admin,
        via="session",
        session_id=session.id,
        restriction=restriction_for(ctx, user),
    )


def restriction_for(ctx: Ctx, user: User) -> str | None:
    if user.must_change_password:
        return "password"
    if user.oidc_subject is None and not user.totp_enabled and system.get(ctx, "require_totp"):
        return "totp"
    return None


def _from_api_key(ctx: Ctx, token: str) -> Principal:
    key = ctx.db.scalar(select(ApiKey).where(ApiKey.secret_hash == token_hash(token)))
    now = utcnow()
    if key is None or key.revoked_at is not None:
        raise Unauthenticated("This API key is not valid or was revoked")
    if key.expires_at is not None and key.expires_at <= now:
        raise Unauthenticated("This API key has expired")
    user = key.user
    if user.disabled:
        raise Unauthenticated("The owner of this API key is disabled")
    ctx.runtime.key_usage.touch(key.id, now)
    scopes = frozenset(key.scopes) & ALL_SCOPES
    return Principal(
        user_id=user.id,
        username=user.username,
        is_admin=user.is_admin and "admin" in scopes,
        via="api_key",
        project_id=key.project_id,
        scopes=scopes,
        key_id=key.id,
    )


# --- TOTP enrolment ---------------------------------------------------------------------------


@dataclass
class TOTPEnrolment:
    secret: str
    uri: str


def totp_begin(ctx: Ctx) -> TOTPEnrolment:
    p = access.principal(ctx, allow_restricted=True)
    if p.via != "session":
        raise InvalidInput("Enrol TOTP from a signed-in session, not with an API key")
    user = ctx.db.get(User, p.user_id)
    assert user is not None
    if user.totp_enabled:
        raise InvalidInput("TOTP is already enabled; disable it first to enrol a new device")
    secret = new_totp_secret()
    user.totp_pending = ctx.runtime.keyring.encrypt(secret)
    uri = pyotp.TOTP(secret).provisioning_uri(name=user.username, issuer_name="Agora")
    return TOTPEnrolment(secret, uri)


def totp_confirm(ctx: Ctx, code: str) -> None:
    p = access.principal(ctx, allow_restricted=True)
    user = ctx.db.get(User, p.user_id)
    assert user is not None
    if user.totp_pending is None:
        raise InvalidInput("Start TOTP enrolment first")
    step = totp_step(ctx.runtime.keyring.decrypt(user.totp_pending), code, None)
    if step is None:
        raise InvalidInput("That code does not match; check the time on your device and retry")
    user.totp_secret, user.totp_pending, user.totp_last_step = user.totp_pending, None, step
    audit.record(ctx, "user.totp.enable", f"user:{user.username}")


def totp_disable(ctx: Ctx, password: str, code: str) -> None:
    p = access.principal(ctx)
    user = ctx.db.get(User, p.user_id)
    assert user is not None
    if user.totp_secret is None:
        raise InvalidInput("TOTP is not enabled")
    if system.get(ctx, "require_totp") and user.oidc_subject is None:
        raise InvalidInput("TOTP is required on this platform and cannot be turned off")
    step = totp_step(ctx.runtime.keyring.decrypt(user.totp_secret), code, user.totp_last_step)
    if not verify_password(user.password_hash, password) or step is None:
        audit.record_failure(ctx, "user.totp.disable", f"user:{user.username}")
        raise InvalidInput("The password or the TOTP code is wrong")
    user.totp_secret = None
    user.totp_last_step = None
    audit.record(ctx, "user.totp.disable", f"user:{user.username}")
