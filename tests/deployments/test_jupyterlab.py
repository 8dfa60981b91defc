"""JupyterLab on the local backend, used through the access proxy: by its own protocols and in
Debian's Chromium, signed in to Agora only (JupyterLab's own login never shows)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import ADMIN_KEY, ADMIN_PASSWORD, browser_tab
from tests.deployments.conftest import Platform

SCREENSHOT = "/tmp/agora-jupyter.png"
KEY = {"Authorization": f"Bearer {ADMIN_KEY}"}
NOTEBOOK = {
    "cells": [
        {
            "cell_type": "code",
            "execution_count": None,
            "metadata": {},
            "outputs": [],
            "source": "print(6*7)",
        }
    ],
    "metadata": {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    },
    "nbformat": 4,
    "nbformat_minor": 5,
}


@pytest.fixture
def lab(platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A running JupyterLab deployment; yields its id and stops it (kernels included) after."""
    # Its own Jupyter configuration (the local backend passes the environment on): user settings
    # stay out of ~/.jupyter, and it may run where the tests run as root (containers, CI).
    config = tmp_path / "jupyter-config"
    config.mkdir()
    (config / "jupyter_server_config.json").write_text('{"ServerApp": {"allow_root": true}}')
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(config))
    dep = platform.deploy("jupyterlab")
    platform.wait(dep["id"], {"running"}, timeout=120)
    yield dep["id"]
    platform.api("POST", f"/projects/default/deployments/{dep['id']}/stop")
    platform.wait(dep["id"], {"stopped"}, timeout=60)


def upload_notebook(platform: Platform, dep_id: str, name: str) -> None:
    r = platform.http.put(
        f"/d/{dep_id}/api/contents/{name}",
        headers=KEY,
        json={"type": "notebook", "format": "json", "content": NOTEBOOK},
    )
    assert r.status_code in (200, 201), r.text


def ws_url(platform: Platform, path: str) -> str:
    return platform.url.replace("http://", "ws://") + path


async def execute(ws: ClientConnection, code: str) -> str:
    """Run code on a kernel over Jupyter's JSON WebSocket protocol; return its stdout."""
    msg_id = uuid.uuid4().hex
    await ws.send(
        json.dumps(
            {
                "header": {
                    "msg_id": msg_id,
                    "msg_type": "execute_request",
                    "username": "agora-test",
                    "session": uuid.uuid4().hex,
                    "date": "",
                    "version": "5.3",
                },
                "parent_header": {},
                "metadata": {},
                "content": {
                    "code": code,
                    "silent": False,
                    "store_history": False,
                    "user_expressions": {},
                    "allow_stdin": False,
                    "stop_on_error": True,
                },
                "channel": "shell",
                "buffers": [],
            }
        )
    )
    out = ""
    while True:
        msg: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 60))
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            out += msg["content"]["text"]
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return out


async def terminal_says(ws: ClientConnection, command: str, expected: str) -> str:
    await ws.send(json.dumps(["stdin", command + "\r"]))
    seen = ""
    deadline = time.monotonic() + 30
    while expected not in seen.replace(command, ""):
        assert time.monotonic() < deadline, f"no {expected!r} in {seen!r}"
        kind, *data = json.loads(await asyncio.wait_for(ws.recv(), 30))
        if kind == "stdout":
            seen += data[0]
    return seen


def test_kernel_and_terminal_answer_through_the_proxy(platform: Platform, lab: str) -> None:
    """Jupyter's REST and WebSocket protocols, with an Agora API key only."""
    assert platform.http.get(f"/d/{lab}/api/status", headers=KEY).status_code == 200
    r = platform.http.post(f"/d/{lab}/api/kernels", headers=KEY, json={"name": "python3"})
    assert r.status_code == 201, r.text
    kernel = r.json()["id"]
    r = platform.http.post(f"/d/{lab}/api/terminals", headers=KEY)
    assert r.status_code == 200, r.text
    terminal = r.json()["name"]

    async def talk() -> None:
        async with connect(
            ws_url(platform, f"/d/{lab}/api/kernels/{kernel}/channels"),
            additional_headers=KEY,
            max_size=None,
        ) as ws:
            assert await execute(ws, "print(6*7)") == "42\n"
        async with connect(
            ws_url(platform, f"/d/{lab}/terminals/websocket/{terminal}"), additional_headers=KEY
        ) as ws:
            await terminal_says(ws, "echo agora-$((40+2))", "agora-42")

    asyncio.run(talk())
    assert platform.http.delete(f"/d/{lab}/api/kernels/{kernel}", headers=KEY).status_code == 204


@pytest.fixture
def page(browser: Browser, platform: Platform) -> Iterator[Page]:
    with browser_tab(browser, platform.url, 30_000, width=1400) as tab:
        yield tab


def test_notebook_and_terminal_in_the_browser(page: Page, platform: Platform, lab: str) -> None:
    upload_notebook(platform, lab, "test.ipynb")
    # The terminal draws on a canvas; its screen-reader mode also writes the lines as text.
    r = platform.http.put(
        f"/d/{lab}/lab/api/settings/@jupyterlab/terminal-extension:plugin",
        headers=KEY,
        json={"raw": '{"screenReaderMode": true}'},
    )
    assert r.status_code == 204, r.text
    # Signing in to Agora is all it takes; the proxy signs in to JupyterLab.
    page.goto(f"/d/{lab}/lab/tree/test.ipynb")
    page.wait_for_url("**/login?next=*")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"**/d/{lab}/lab/tree/test.ipynb")

    cell = page.locator(".jp-Notebook .jp-Cell").first
    expect(cell.locator(".cm-content")).to_contain_text("print(6*7)", timeout=60_000)
    # The notebook names its kernel: JupyterLab starts one and connects through the proxy.
    kernel_ready = page.get_by_role("button", name="Python 3 (ipykernel) | Idle")
    expect(kernel_ready).to_be_visible(timeout=60_000)
    news = page.get_by_role("button", name="No", exact=True)  # "get Jupyter news?" toast
    if news.is_visible():
        news.click()
    cell.locator(".cm-content").click()
    page.keyboard.press("Shift+Enter")
    expect(cell.locator(".jp-OutputArea-output")).to_have_text("42", timeout=60_000)
    page.screenshot(path=SCREENSHOT)

    page.get_by_role("button", name="New Launcher", exact=True).click()
    page.locator(".jp-LauncherCard", has_text="Terminal").click()
    terminal = page.locator(".jp-Terminal .xterm")
    expect(terminal).to_be_visible()
    terminal.click()
    page.keyboard.type("echo agora-$((40+2))")
    page.keyboard.press("Enter")
    lines = page.locator(".jp-Terminal .xterm-accessibility-tree")
    expect(lines).to_contain_text("agora-42", timeout=30_000)
    page.screenshot(path="/tmp/agora-jupyter-terminal.png")
