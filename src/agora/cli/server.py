"""`agora up`: the one command that runs the server instead of talking to it.

Server modules are imported inside the command so that the other commands start quickly.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.text import Text

from agora import __version__
from agora.cli import console
from agora.cli.console import CliError

if TYPE_CHECKING:
    from fastapi import FastAPI

    from agora.bootstrap import BootstrapResult
    from agora.runtime import Runtime
    from agora.settings import Settings


def describe_database(url: str) -> str:
    """Where the data lives, never with the password: 'SQLite /x/agora.db', 'postgresql …'."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return "(unparseable database URL)"
    if parsed.get_backend_name() == "sqlite":
        return f"SQLite {parsed.database or ':memory:'}"
    where = parsed.host or "local socket"
    if parsed.port:
        where += f":{parsed.port}"
    who = f" as {parsed.username}" if parsed.username else ""
    return f"{parsed.get_backend_name()} on {where}, database {parsed.database or '-'}{who}"


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment (and AGORA_CONFIG_FILE); invalid ones become one line."""
    from pydantic import ValidationError

    from agora.settings import Settings

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "settings"
        message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        raise CliError(f"invalid server settings: {where}: {message}") from exc
    except ValueError as exc:
        raise CliError(f"invalid server settings: {exc}") from exc


def _check_port_free(host: str, port: int) -> None:
    """Fail before migrating anything when the address is taken (uvicorn would exit later)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise CliError(f"cannot listen on {host}: {exc.strerror}") from exc
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise CliError(
                f"cannot listen on {host}:{port}: {exc.strerror}; choose another with --port"
            ) from exc


def _print_first_start(result: BootstrapResult, url: str) -> None:
    password = result.password or "(as set in AGORA_BOOTSTRAP_ADMIN_PASSWORD)"
    api_key = result.api_key or "(as set in AGORA_BOOTSTRAP_ADMIN_KEY)"
    pairs = [
        ("Login name", result.username),
        ("Password", password),
        ("API key", api_key),
        ("Project", result.project),
        ("Open", url),
    ]
    notes = []
    if result.password:
        notes.append("one-time password: you will choose your own at first sign-in")
    console.secret_panel(
        "First start: administrator account created",
        pairs,
        "Shown once: store them now." + ("".join(f"\n{n}" for n in notes)),
    )
    console.info(
        f"Sign in from a terminal with: agora login --url {url} --username {result.username}"
    )


def up(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default: AGORA_HOST or 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="Port to listen on (default: AGORA_PORT or 8000)."),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Where Agora keeps its data (default: AGORA_DATA_DIR or ./.agora)."),
    ] = None,
) -> None:
    """Run the Agora server here: migrate the database, create the first admin, serve."""
    settings = load_settings(host=host, port=port, data_dir=data_dir)
    _check_port_free(settings.host, settings.port)
    runtime, app, first = _prepare(settings)
    url = str(settings.public_url)
    console.fields(
        f"Agora {__version__}",
        [
            ("URL", url),
            ("Data directory", str(settings.data_dir)),
            ("Database", describe_database(str(settings.database_url))),
        ],
    )
    if first is not None:
        _print_first_start(first, url)
    console.out().print(Text("Press Ctrl+C to stop.", style="dim"))
    sys.stdout.flush()

    import uvicorn

    from agora.gateway.front import GatewayProtocol
    from agora.runtime import freeze_heap

    try:
        freeze_heap()
        # /v1 is answered by the gateway straight from the HTTP parser, without ASGI.
        uvicorn.run(
            app,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            http=GatewayProtocol,
        )
    finally:
        runtime.db.dispose()


def gateway(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default: AGORA_HOST or 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="Port to listen on (default: AGORA_PORT or 8000)."),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=256,
            help="Gateway processes sharing the port (one per core); more than one needs "
            "AGORA_REDIS_URL so that they share rate limits.",
        ),
    ] = 1,
) -> None:
    """Run an extra gateway process (/v1 only) on the control plane's database.

    For scale-out: run several behind a load balancer, with AGORA_REDIS_URL so that they share
    rate limits. `agora up` serves the gateway too; this process adds capacity.
    """
    settings = load_settings(host=host, port=port)
    if workers > 1 and not settings.redis_url:
        raise CliError(
            "--workers above 1 needs AGORA_REDIS_URL: each process would otherwise keep rate "
            "limits of its own"
        )
    _check_port_free(settings.host, settings.port)
    from agora.gateway.app import standalone
    from agora.migrations import current_revision
    from agora.runtime import Runtime

    runtime = Runtime.create(settings)
    if current_revision(runtime.db) is None:
        raise typer.BadParameter(
            "The database has no Agora schema yet: start the control plane (agora up) first"
        )
    console.fields(
        f"Agora gateway {__version__}",
        [
            ("URL", f"http://{settings.host}:{settings.port}/v1"),
            ("Database", describe_database(str(settings.database_url))),
            ("Limits", "Redis" if settings.redis_url else "in this process"),
            ("Processes", str(workers)),
        ],
    )
    sys.stdout.flush()
    import uvicorn

    from agora.gateway.front import GatewayProtocol
    from agora.runtime import freeze_heap

    try:
        if workers == 1:
            freeze_heap()
            # /v1 is answered by the gateway straight from the HTTP parser, without ASGI.
            uvicorn.run(
                standalone(runtime),
                host=settings.host,
                port=settings.port,
                log_level=settings.log_level,
                lifespan="on",
                http=GatewayProtocol,
            )
            return
        runtime.db.dispose()
        # Each worker builds its gateway from the environment: pass on what came as options.
        os.environ["AGORA_HOST"] = settings.host
        os.environ["AGORA_PORT"] = str(settings.port)
        # The workers add up their metrics in files here (prometheus_client's multiprocess
        # mode): any of them answers GET /metrics for all. Emptied at each start.
        metrics_dir = settings.data_dir / "run" / f"gateway-metrics-{settings.port}"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        uvicorn.run(
            "agora.gateway.app:standalone_from_env",
            factory=True,
            workers=workers,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            lifespan="on",
            http=GatewayProtocol,
        )
    finally:
        runtime.db.dispose()


def _prepare(settings: Settings) -> tuple[Runtime, FastAPI, BootstrapResult | None]:
    from sqlalchemy.exc import SQLAlchemyError

    from agora.app import create_app
    from agora.bootstrap import bootstrap
    from agora.errors import AgoraError
    from agora.runtime import Runtime  # noqa: F811 - the real class, not only its type

    database = describe_database(str(settings.database_url))
    try:
        runtime = Runtime.create(settings)
    except OSError as exc:
        raise CliError(f"cannot use the data directory {settings.data_dir}: {exc}") from exc
    try:
        app = create_app(runtime=runtime)
        first = bootstrap(runtime)
    except SQLAlchemyError as exc:
        runtime.db.dispose()
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise CliError(f"cannot use the database ({database}): {reason}") from exc
    except AgoraError as exc:
        runtime.db.dispose()
        raise CliError(f"cannot create the first administrator: {exc.detail}") from exc
    except (ValueError, OSError) as exc:
        runtime.db.dispose()
        raise CliError(f"cannot start: {exc}") from exc
    return runtime, app, first
