"""`agora keys …`: a project's API keys."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any
from urllib.parse import quote

import typer

from agora.cli import console, times
from agora.cli.client import connect
from agora.cli.console import JsonFlag

keys = typer.Typer(no_args_is_help=True, help="API keys of a project: list, create, revoke.")
ProjectArg = Annotated[str, typer.Argument(help="Project name.", show_default=False)]


def _path(project: str) -> str:
    return f"/projects/{quote(project, safe='')}/keys"


def _state(key: dict[str, Any]) -> str:
    if key["revoked_at"]:
        return "revoked"
    expires = key["expires_at"]
    if expires and dt.datetime.fromisoformat(expires) <= dt.datetime.now(dt.UTC):
        return "expired"
    return "active"


@keys.command("list")
def list_keys(project: ProjectArg, as_json: JsonFlag = False) -> None:
    """The project's keys (owners see every key, others their own); never their secrets."""
    with connect() as api:
        rows: list[dict[str, Any]] = api.get(_path(project))
    if as_json:
        console.print_json(rows)
        return
    if not rows:
        console.info(f"No API keys in {project}.")
        return
    console.table(
        f"API keys of {project}",
        ["ID", "Name", "Prefix", "Owner", "Scopes", "Expires", "Last used", "State"],
        [
            (
                str(k["id"]),
                k["name"],
                k["prefix"] + "…",
                k["owner"],
                ", ".join(k["scopes"]),
                console.when(k["expires_at"]),
                console.when(k["last_used_at"]),
                _state(k),
            )
            for k in rows
        ],
        nowrap={"ID"},
    )


@keys.command("create")
def create(
    project: ProjectArg,
    name: Annotated[str, typer.Option(help="What the key is for.", show_default=False)],
    scope: Annotated[
        list[str] | None,
        typer.Option(
            help="Repeat for several: inference, read, manage, admin (default: inference)."
        ),
    ] = None,
    expires: Annotated[
        str | None,
        typer.Option(help="When it stops working: '30d', '12h', '2027-01-31' (UTC) or ISO time."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a key and show its secret, once."""
    body: dict[str, Any] = {"name": name}
    if scope:
        body["scopes"] = scope
    if expires is not None:
        body["expires_at"] = times.iso(times.future(expires))
    with connect() as api:
        key = api.post(_path(project), body)
    if as_json:
        console.print_json(key)
        return
    console.secret_panel(
        f"API key {key['id']} for {project}",
        [
            ("Name", key["name"]),
            ("Scopes", ", ".join(key["scopes"])),
            ("Expires", console.when(key["expires_at"]) + (" UTC" if key["expires_at"] else "")),
            ("Secret", key["secret"]),
        ],
        "Shown once: store it now. Send it as 'Authorization: Bearer <secret>'.",
    )


@keys.command("revoke")
def revoke(
    project: ProjectArg,
    key_id: Annotated[int, typer.Argument(metavar="ID", help="The key's ID (see `keys list`).")],
) -> None:
    """Revoke a key: it stops working at once."""
    with connect() as api:
        api.delete(f"{_path(project)}/{key_id}")
    console.success(f"Revoked API key {key_id} of {project}.")
