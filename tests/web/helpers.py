"""Driving the web pages through a TestClient: CSRF tokens scraped from the forms, cookies kept."""

from __future__ import annotations

import re

import httpx
from fastapi.testclient import TestClient

HTML = {"Accept": "text/html"}
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf(client: TestClient, path: str) -> str:
    """The CSRF token of the first form on a page."""
    r = client.get(path, headers=HTML)
    assert r.status_code == 200, (path, r.status_code, r.text[:500])
    found = _TOKEN.search(r.text)
    assert found, f"no CSRF token on {path}"
    return found.group(1)


def submit(client: TestClient, page: str, action: str, **fields: object) -> httpx.Response:
    """Post a form of ``page`` to ``action`` as a browser would (without following redirects)."""
    data = {"csrf_token": csrf(client, page), **fields}
    return client.post(action, data=data, headers=HTML, follow_redirects=False)


def sign_in(client: TestClient, username: str, password: str, next: str = "/") -> httpx.Response:
    """Sign in from a clean cookie jar; returns the answer to the password form."""
    client.cookies.clear()
    r = submit(client, "/login", "/login", username=username, password=password, next=next)
    assert r.status_code == 303, r.text[:500]
    return r


def text_of(response: httpx.Response) -> str:
    """The page's text with tags removed and whitespace squeezed, for asserting messages."""
    no_tags = re.sub(r"<[^>]+>", " ", response.text)
    return re.sub(r"\s+", " ", no_tags).replace("&#39;", "'").replace("&amp;", "&")
