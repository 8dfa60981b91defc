"""`agora serve-model`: serve DEEPaaS v2 (or typed) model modules with Agora's model server.

Like `agora up`, it runs a server here rather than talking to the API; the server's modules
are imported inside the command so that the other commands start quickly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agora.cli.console import CliError


def serve_model(
    module: Annotated[
        list[str] | None,
        typer.Option(
            help="Entry-point name in group deepaas.v2.model; repeat for several "
            "(default: every installed one, unless --model is given)."
        ),
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(help="A model by import path, pkg.mod:obj or NAME=pkg.mod:obj; repeatable."),
    ] = None,
    host: Annotated[
        str | None,
        typer.Option(help="Address to listen on (default: AGORA_BIND_HOST or 127.0.0.1)."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="Port to listen on (default: PORT or 5000)."),
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="Worker processes per model, each with the model warm.")
    ] = 1,
    queue: Annotated[
        int, typer.Option(min=0, help="Requests that may wait for a worker; more get 503.")
    ] = 16,
    timeout: Annotated[
        float,
        typer.Option(
            min=0.1, help="Seconds a prediction may take; its worker is then restarted (504)."
        ),
    ] = 60.0,
    max_upload_bytes: Annotated[
        int, typer.Option(min=1, help="Largest request body accepted (413 beyond).")
    ] = 100 * 1024 * 1024,
    state_dir: Annotated[
        Path, typer.Option(help="Where the training records are kept (SQLite).")
    ] = Path(".agora-modelserver"),
    training_heartbeat: Annotated[
        float,
        typer.Option(
            min=0.1,
            help="Seconds between stamps of running trainings; one unstamped for three is "
            "reported as cut short.",
        ),
    ] = 10.0,
) -> None:
    """Serve model modules with the DEEPaaS v2 API (faster than deepaas-run)."""
    from agora.modelserver.app import ServerConfig
    from agora.modelserver.loader import ModelNotFound
    from agora.modelserver.server import default_host, default_port, run, service_token

    config = ServerConfig(
        workers=workers,
        queue=queue,
        timeout=timeout,
        max_upload_bytes=max_upload_bytes,
        state_dir=state_dir,
        token=service_token(),
        training_heartbeat=training_heartbeat,
    )
    try:
        run(module, model, config, host or default_host(), port or default_port())
    except ModelNotFound as exc:
        raise CliError(str(exc)) from exc
