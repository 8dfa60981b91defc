"""Running the model server: load the models here (for their metadata and arguments), then
serve; the workers load and warm them again before the server listens."""

from __future__ import annotations

import logging
import os

from agora.modelserver import loader
from agora.modelserver.app import ServerConfig, create_app
from agora.modelserver.model import ServedModel


def default_host() -> str:
    return os.environ.get("AGORA_BIND_HOST") or "127.0.0.1"


def default_port() -> int:
    return int(os.environ.get("PORT") or 5000)


def service_token() -> str | None:
    return os.environ.get("AGORA_SERVICE_TOKEN") or None


def run(
    modules: list[str] | None,
    import_paths: list[str] | None,
    config: ServerConfig,
    host: str,
    port: int,
) -> None:
    """Raises :class:`loader.ModelNotFound` before anything listens when a model is missing."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    models = [ServedModel.load(ref) for ref in loader.refs(modules, import_paths)]
    import uvicorn

    uvicorn.run(
        create_app(models, config),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        proxy_headers=False,  # links use X-Forwarded-Prefix; client addresses are not used
        timeout_graceful_shutdown=5,
    )
