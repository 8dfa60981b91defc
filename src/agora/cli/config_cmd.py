"""`agora config show`: the client's configuration and the server settings `agora up` would use.

Secrets never leave masked: the CLI token shows its ends only; server secrets show whether they
are set; a password inside the database URL becomes '***'.
"""

from __future__ import annotations

import json
from typing import Any

import typer

from agora.cli import config, console
from agora.cli.console import CliError, JsonFlag
from agora.cli.server import load_settings

config_app = typer.Typer(no_args_is_help=True, help="Show the CLI's and the server's settings.")
_HIDDEN = "******** (set)"


def _mask_database_url(url: str) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparseable; not shown in case it holds a password)"


def _plain(value: Any) -> Any:
    if hasattr(value, "get_secret_value"):  # pydantic's SecretStr
        return _HIDDEN if value.get_secret_value() else "(not set)"
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def server_settings() -> dict[str, Any]:
    """Settings() as this machine's environment gives them, flattened, secrets masked."""
    settings = load_settings()
    shown: dict[str, Any] = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if name == "oidc":
            for sub in type(value).model_fields:
                shown[f"oidc.{sub}"] = _plain(getattr(value, sub))
        elif name == "database_url":
            shown[name] = _mask_database_url(str(value))
        elif name == "secret_key" and value is None:
            shown[name] = f"(not set: generated once into {settings.data_dir / 'secret_key'})"
        else:
            shown[name] = _plain(value)
    return shown


def _client() -> dict[str, Any]:
    cfg = config.load()
    return {
        "config_file": str(cfg.path),
        "config_file_exists": cfg.path.exists(),
        "url": cfg.url,
        "url_from": cfg.url_source,
        "token": console.mask(cfg.token) if cfg.token else None,
        "token_from": cfg.token_source,
        "username": cfg.username,
    }


def _shown(value: Any) -> str:
    if value is None:
        return "(not set)"
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


@config_app.command("show")
def show(as_json: JsonFlag = False) -> None:
    """The CLI's URL and token (masked), and the server settings here, secrets masked."""
    client = _client()
    try:
        server: dict[str, Any] | None = server_settings()
        problem = None
    except CliError as exc:
        server, problem = None, exc.message
    exists = client["config_file_exists"]
    if as_json:
        console.print_json({"client": client, "server": server, "server_error": problem})
    else:
        console.fields(
            "Client (this CLI)",
            [
                ("Config file", client["config_file"] + ("" if exists else " (none yet)")),
                ("URL", f"{client['url']}  (from {client['url_from']})"),
                (
                    "Token",
                    f"{client['token']}  (from {client['token_from']})"
                    if client["token"]
                    else "(none: run `agora login` or set AGORA_TOKEN)",
                ),
            ],
        )
        if server is not None:
            console.info("")
            console.fields(
                "Server settings `agora up` would use here (AGORA_* variables, AGORA_CONFIG_FILE)",
                [(k, _shown(v)) for k, v in server.items()],
            )
    if problem is not None:
        raise CliError(problem)
