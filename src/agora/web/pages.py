"""The server-rendered web UI: pages that call the same services as the REST API."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from agora.web import (
    errors,
    routes_account,
    routes_admin,
    routes_auth,
    routes_catalog,
    routes_deployments,
    routes_docs,
    routes_keys,
    routes_models,
    routes_modules,
    routes_projects,
)
from agora.web.render import STATIC_DIR, make_templates


def install(app: FastAPI) -> None:
    """Mount the pages, their static files and the HTML error pages (after the API's handlers)."""
    app.state.web_templates = make_templates()
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    for module in (
        routes_auth,
        routes_account,
        routes_projects,
        routes_keys,
        routes_deployments,
        routes_modules,
        routes_models,
        routes_catalog,
        routes_admin,
        routes_docs,
    ):
        app.include_router(module.router)
    errors.install(app)
