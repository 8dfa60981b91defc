"""The REST API's interactive documentation at ``/api/docs``: Swagger UI from ``static/vendor/``
(FastAPI's own page loads it from a CDN and starts it with an inline script)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import HTMLResponse

from agora import __version__
from agora.errors import NotFound
from agora.web import swagger_ui
from agora.web.render import SECURITY_HEADERS

router = APIRouter(include_in_schema=False)


@router.get("/api/docs")
def api_docs() -> HTMLResponse:
    problem = swagger_ui.not_installed(swagger_ui.VENDOR_DIR)
    if problem is not None:
        raise NotFound(problem)
    body = swagger_ui.page(
        f"Agora {__version__} · REST API", "/api/v1/openapi.json", "/static/vendor/", "/static/"
    )
    return HTMLResponse(body, headers=SECURITY_HEADERS)
