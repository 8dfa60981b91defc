"""Signing in and out: `agora login`, `logout`, `whoami` and `password`."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from agora.cli import config, console
from agora.cli.client import Api, ApiError, connect
from agora.cli.console import CliError, JsonFlag


def login(
    url: Annotated[
        str | None,
        typer.Option(help="Agora's address (default: AGORA_URL, the stored one, or local)."),
    ] = None,
    username: Annotated[str | None, typer.Option("--username", "-u", help="Login name.")] = None,
) -> None:
    """Sign in with a password (and TOTP code) and store the token for the next commands."""
    cfg = config.load()
    base = config.normalise_url(url) if url else cfg.url
    name = username or typer.prompt("Username", default=cfg.username or None)
    password = typer.prompt("Password", hide_input=True)
    body: dict[str, Any] = {"username": name, "password": password}
    with Api(base, None) as api:
        try:
            with console.err().status(f"Signing in to {base}…"):
                answer = api.post("/auth/login", body)
        except ApiError as exc:
            if not exc.is_a("totp-required"):
                raise
            body["totp_code"] = typer.prompt("TOTP code (from your authenticator app)").strip()
            answer = api.post("/auth/login", body)
    token, who = str(answer["token"]), str(answer["username"])
    path = config.store_login(base, who, token)
    console.success(f"Signed in to {base} as {who}.")
    console.info(f"Token stored in {path} until {console.when(answer.get('expires_at'))} UTC.")
    if cfg.token_source == config.ENV_TOKEN:
        console.warn(f"{config.ENV_TOKEN} is set and is used instead of the stored token")
    with Api(base, token) as api:
        restriction = api.get("/me").get("restriction")
    if restriction == "password":
        console.warn(
            "you signed in with a one-time password: choose your own with `agora password`"
        )
    elif restriction == "totp":
        console.warn(f"this platform requires TOTP: enrol an authenticator at {base}")


def logout() -> None:
    """End the stored session on the server and forget its token."""
    cfg = config.load()
    if not cfg.stored_token or not cfg.stored_url:
        console.info(f"Not signed in (no token in {cfg.path}).")
        return
    try:
        with Api(cfg.stored_url, cfg.stored_token) as api:
            api.post("/auth/logout")
    except ApiError as exc:
        if exc.status != 401:  # 401: the session had already ended
            raise
    except CliError as exc:
        config.forget_token()
        console.warn(f"the token was forgotten here, but the session may still be valid: {exc}")
        return
    config.forget_token()
    console.success(f"Signed out of {cfg.stored_url}.")


def whoami(as_json: JsonFlag = False) -> None:
    """Who the server takes you for: user, how you signed in, scopes, projects and roles."""
    with connect() as api:
        me = api.get("/me")
    if as_json:
        console.print_json(me)
        return
    user = me["user"]
    via = "API key" if me["via"] == "api_key" else str(me["via"])
    if me.get("key_project"):
        via += f" for project {me['key_project']}"
    pairs = [
        ("User", user["username"] + (f" ({user['display_name']})" if user["display_name"] else "")),
        ("Administrator", console.yes_no(user["is_admin"])),
        ("Signed in with", via),
        ("Server", api.url),
    ]
    if me["scopes"]:
        pairs.append(("Scopes", ", ".join(me["scopes"])))
    if me.get("restriction"):
        pairs.append(
            ("Must first", "change password" if me["restriction"] == "password" else "enrol TOTP")
        )
    console.fields(None, pairs)
    if me["projects"]:
        console.table(
            None, ["Project", "Role"], [(p["project"], p["role"]) for p in me["projects"]]
        )
    else:
        console.info("No projects.")


def password() -> None:
    """Change your own password (required after a one-time password)."""
    current = typer.prompt("Current password", hide_input=True)
    new = typer.prompt("New password", hide_input=True, confirmation_prompt=True)
    with connect() as api:
        api.post("/me/password", {"current_password": current, "new_password": new})
    console.success("Password changed.")
