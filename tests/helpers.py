"""Small helpers for driving the API in tests."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx
import pyotp
from fastapi.testclient import TestClient

PASSWORD = "correct-horse-battery"


@dataclass
class Api:
    client: TestClient
    token: str | None

    def _h(self, token: str | None = None) -> dict[str, str]:
        t = token or self.token
        return {"Authorization": f"Bearer {t}"} if t else {}

    def as_(self, token: str | None) -> Api:
        return Api(self.client, token)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.get("/api/v1" + path, headers=self._h(), **kw)

    def post(self, path: str, json: Any = None, **kw: Any) -> httpx.Response:
        return self.client.post("/api/v1" + path, headers=self._h(), json=json, **kw)

    def patch(self, path: str, json: Any = None, **kw: Any) -> httpx.Response:
        return self.client.patch("/api/v1" + path, headers=self._h(), json=json, **kw)

    def put(self, path: str, json: Any = None, **kw: Any) -> httpx.Response:
        return self.client.put("/api/v1" + path, headers=self._h(), json=json, **kw)

    def delete(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.delete("/api/v1" + path, headers=self._h(), **kw)

    # --- set-up shortcuts (as admin) ------------------------------------------------------

    def user(self, username: str, password: str = PASSWORD, **kw: Any) -> str:
        """Create a user and return a CLI session token for them."""
        r = self.post("/users", {"username": username, "password": password, **kw})
        assert r.status_code == 201, r.text
        return self.login(username, password)

    def login(self, username: str, password: str = PASSWORD, totp: str | None = None) -> str:
        body = {"username": username, "password": password}
        if totp:
            body["totp_code"] = totp
        r = self.client.post("/api/v1/auth/login", json=body)
        assert r.status_code == 200, r.text
        return str(r.json()["token"])

    def project(self, name: str, **members: str) -> None:
        r = self.post("/projects", {"name": name})
        assert r.status_code == 201, r.text
        for username, role in members.items():
            r = self.post(f"/projects/{name}/members", {"username": username, "role": role})
            assert r.status_code == 201, r.text

    def key(self, project: str, scopes: list[str], token: str | None = None) -> str:
        r = self.as_(token or self.token).post(
            f"/projects/{project}/keys", {"name": "test", "scopes": scopes}
        )
        assert r.status_code == 201, r.text
        return str(r.json()["secret"])


def totp_now(secret: str, offset_steps: int = 0) -> str:
    return pyotp.TOTP(secret).at(time.time() + offset_steps * 30)
