"""Swagger UI pages over an OpenAPI document: the platform's ``/api/docs`` and the model
server's ``/ui``.

Swagger UI's files come from the npm package swagger-ui-dist, copied into ``static/vendor/``
by ``scripts/web-assets.sh`` (never committed, never loaded from a CDN). The page carries no
inline script: ``static/swagger-init.js`` starts Swagger UI on the document named by the
page's ``data-spec``, so the page works under a Content-Security-Policy of ``'self'`` only.
Dependency-free: the model server imports it without the web app.
"""

from __future__ import annotations

import html
from pathlib import Path

STATIC_DIR = Path(__file__).parent / "static"
VENDOR_DIR = STATIC_DIR / "vendor"
#: Swagger UI's own files (in ``VENDOR_DIR``) and ours (in ``STATIC_DIR``) that the page loads.
VENDOR_FILES = ("swagger-ui-bundle.js", "swagger-ui.css")
OWN_FILES = ("swagger-init.js", "favicon.svg")
MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
#: The page's own policy: Swagger UI draws its icons as data: URIs and calls only its origin.
CSP = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)


def not_installed(vendor: Path) -> str | None:
    """What to do when swagger-ui-dist's files are missing from ``vendor``; None when present."""
    missing = [name for name in VENDOR_FILES if not (vendor / name).is_file()]
    if not missing:
        return None
    return (
        f"Swagger UI is not installed here ({', '.join(missing)} missing from {vendor}): "
        "run scripts/web-assets.sh in Agora's source tree (or 'make install'), which copies "
        "swagger-ui-dist from the npm registry, then restart the server"
    )


def page(title: str, spec: str, vendor: str, static: str) -> str:
    """The page; ``spec``, ``vendor`` and ``static`` are URLs (ending in ``/`` for the two
    folders), relative ones resolved against the page's own address."""
    t, s, v, o = (html.escape(x, quote=True) for x in (title, spec, vendor, static))
    return f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{t}</title>
  <link rel="icon" href="{o}favicon.svg" type="image/svg+xml">
  <link rel="stylesheet" href="{v}swagger-ui.css">
  <script src="{v}swagger-ui-bundle.js" defer></script>
  <script src="{o}swagger-init.js" defer></script>
</head>
<body>
<div id="swagger-ui" data-spec="{s}"></div>
</body>
</html>
"""
