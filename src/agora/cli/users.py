"""`agora users …`: accounts, for administrators."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer

from agora.cli import console
from agora.cli.client import connect
from agora.cli.console import JsonFlag

users = typer.Typer(no_args_is_help=True, help="User accounts (administrators).")
UserArg = Annotated[str, typer.Argument(help="Login name.", show_default=False)]


def _u(username: str) -> str:
    return "/users/" + quote(username, safe="")


def _one_time(username: str, password: str) -> None:
    console.secret_panel(
        f"One-time password for {username}",
        [("Login name", username), ("Password", password)],
        "Shown once: pass it on safely; they choose their own at first sign-in.",
    )


@users.command("list")
def list_users(as_json: JsonFlag = False) -> None:
    """Every account."""
    with connect() as api:
        rows: list[dict[str, Any]] = api.get("/users")
    if as_json:
        console.print_json(rows)
        return
    console.table(
        None,
        ["User", "Name", "Email", "Admin", "Disabled", "TOTP", "Last sign-in"],
        [
            (
                u["username"],
                u["display_name"],
                u["email"] or "-",
                console.yes_no(u["is_admin"]),
                console.yes_no(u["disabled"]),
                console.yes_no(u["totp_enabled"]),
                console.when(u["last_login_at"]),
            )
            for u in rows
        ],
        nowrap={"User", "Admin", "Disabled", "TOTP", "Last sign-in"},
    )


@users.command("create")
def create(
    username: UserArg,
    email: Annotated[str | None, typer.Option(help="Email address.")] = None,
    display_name: Annotated[str, typer.Option(help="Full name.")] = "",
    admin: Annotated[bool, typer.Option("--admin", help="Make a platform administrator.")] = False,
    password_prompt: Annotated[
        bool,
        typer.Option(
            "--password-prompt", help="Type the password instead of generating a one-time one."
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Create an account; without --password-prompt it gets a one-time password, shown once."""
    body: dict[str, Any] = {"username": username, "display_name": display_name, "is_admin": admin}
    if email:
        body["email"] = email
    if password_prompt:
        body["password"] = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    with connect() as api:
        user = api.post("/users", body)
    if as_json:
        console.print_json(user)
        return
    console.success(f"Created user {user['username']}" + (" (administrator)." if admin else "."))
    if user.get("one_time_password"):
        _one_time(user["username"], user["one_time_password"])


def _update(username: str, change: dict[str, Any], done: str) -> None:
    with connect() as api:
        api.patch(_u(username), change)
    console.success(done)


@users.command("disable")
def disable(username: UserArg) -> None:
    """Stop an account from signing in or using its API keys."""
    _update(username, {"disabled": True}, f"Disabled {username}.")


@users.command("enable")
def enable(username: UserArg) -> None:
    """Let a disabled account in again."""
    _update(username, {"disabled": False}, f"Enabled {username}.")


@users.command("make-admin")
def make_admin(
    username: UserArg,
    revoke: Annotated[bool, typer.Option("--revoke", help="Take the rights away instead.")] = False,
) -> None:
    """Make a user a platform administrator (or, with --revoke, no longer one)."""
    done = (
        f"{username} is no longer an administrator."
        if revoke
        else f"{username} is now an administrator."
    )
    _update(username, {"is_admin": not revoke}, done)


@users.command("reset-password")
def reset_password(username: UserArg) -> None:
    """Give a user a new one-time password and end their sessions."""
    with connect() as api:
        answer = api.post(_u(username) + "/password-reset")
    _one_time(answer["username"], answer["one_time_password"])


@users.command("reset-totp")
def reset_totp(username: UserArg) -> None:
    """Remove a user's TOTP authenticator (e.g. a lost phone)."""
    with connect() as api:
        api.delete(_u(username) + "/totp")
    console.success(f"Removed the TOTP authenticator of {username}.")
