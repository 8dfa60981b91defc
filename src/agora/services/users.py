"""Accounts: created by admins (or at first OIDC login), changed by themselves or admins."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from agora.errors import Conflict, Forbidden, InvalidInput, NotFound
from agora.models import User
from agora.security import hash_password, one_time_password, verify_password
from agora.services import access, audit
from agora.services.context import Ctx

MIN_PASSWORD = 10


def check_password_rules(password: str, username: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(f"The password must have at least {MIN_PASSWORD} characters")
    if password.lower() == username.lower():
        raise InvalidInput("The password must not be the username")


def by_username(ctx: Ctx, username: str) -> User:
    user = ctx.db.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFound(f"User '{username}' does not exist")
    return user


def me(ctx: Ctx) -> User:
    """The signed-in user's own account (restricted sessions may read it)."""
    p = access.principal(ctx, allow_restricted=True)
    user = ctx.db.get(User, p.user_id)
    assert user is not None
    return user


def list_users(ctx: Ctx) -> list[User]:
    access.require_admin(ctx)
    return list(ctx.db.scalars(select(User).order_by(User.username)))


def get_user(ctx: Ctx, username: str) -> User:
    access.require_admin(ctx)
    return by_username(ctx, username)


@dataclass
class NewUser:
    user: User
    one_time_password: str | None


def create_user(
    ctx: Ctx,
    username: str,
    *,
    email: str | None = None,
    display_name: str = "",
    password: str | None = None,
    is_admin: bool = False,
) -> NewUser:
    """Create a local account. Without a password, a one-time one is generated and returned."""
    access.require_admin(ctx)
    return _create(ctx, username, email, display_name, password, is_admin)


def _create(
    ctx: Ctx,
    username: str,
    email: str | None,
    display_name: str,
    password: str | None,
    is_admin: bool,
    *,
    must_change: bool | None = None,
) -> NewUser:
    exists = ctx.db.scalar(
        select(func.count()).where(func.lower(User.username) == username.lower())
    )
    if exists:
        raise Conflict(f"User '{username}' already exists")
    generated = None
    if password is None:
        password = generated = one_time_password()
    else:
        check_password_rules(password, username)
    user = User(
        username=username,
        email=email,
        display_name=display_name,
        password_hash=hash_password(password),
        must_change_password=generated is not None if must_change is None else must_change,
        is_admin=is_admin,
    )
    ctx.db.add(user)
    ctx.db.flush()
    audit.record(
        ctx, "user.create", f"user:{username}", details={"is_admin": is_admin, "email": email}
    )
    return NewUser(user, generated)


def update_user(
    ctx: Ctx,
    username: str,
    *,
    email: str | None = None,
    display_name: str | None = None,
    is_admin: bool | None = None,
    disabled: bool | None = None,
) -> User:
    p = access.require_admin(ctx)
    user = by_username(ctx, username)
    if user.id == p.user_id and (is_admin is False or disabled is True):
        raise Forbidden("You cannot remove your own admin rights or disable yourself")
    changes: dict[str, object] = {}
    for field, value in (
        ("email", email),
        ("display_name", display_name),
        ("is_admin", is_admin),
        ("disabled", disabled),
    ):
        if value is not None and getattr(user, field) != value:
            setattr(user, field, value)
            changes[field] = value
    if changes:
        audit.record(ctx, "user.update", f"user:{username}", details=changes)
        if disabled:
            from agora.services import auth  # noqa: PLC0415 - avoids an import cycle

            auth.end_sessions(ctx, user.id)
    return user


def reset_password(ctx: Ctx, username: str) -> str:
    """Give the user a new one-time password (returned once) and end their sessions."""
    access.require_admin(ctx)
    user = by_username(ctx, username)
    if user.oidc_subject and user.password_hash is None:
        raise InvalidInput(f"User '{username}' signs in through single sign-on only")
    password = one_time_password()
    user.password_hash = hash_password(password)
    user.must_change_password = True
    from agora.services import auth  # noqa: PLC0415

    auth.end_sessions(ctx, user.id)
    audit.record(ctx, "user.password.reset", f"user:{username}")
    return password


def reset_totp(ctx: Ctx, username: str) -> None:
    access.require_admin(ctx)
    user = by_username(ctx, username)
    user.totp_secret = user.totp_pending = None
    user.totp_last_step = None
    audit.record(ctx, "user.totp.reset", f"user:{username}")


def change_own_password(ctx: Ctx, current: str, new: str) -> None:
    p = access.principal(ctx, allow_restricted=True)
    user = ctx.db.get(User, p.user_id)
    assert user is not None
    if not verify_password(user.password_hash, current):
        audit.record_failure(ctx, "user.password.change", f"user:{user.username}")
        raise InvalidInput("The current password is wrong")
    check_password_rules(new, user.username)
    if verify_password(user.password_hash, new):
        raise InvalidInput("The new password must differ from the current one")
    user.password_hash = hash_password(new)
    user.must_change_password = False
    # Whoever else is signed in with the old password is signed out (this session stays).
    from agora.services import auth  # noqa: PLC0415 - avoids an import cycle

    auth.end_sessions(ctx, user.id, keep=p.session_id)
    audit.record(ctx, "user.password.change", f"user:{user.username}")
