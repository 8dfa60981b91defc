"""The gateway's pages: the chat streaming a Markdown answer in Chromium, through a running Agora
to an OpenAI-compatible upstream; the model pages and the API page."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, ConsoleMessage, Page, expect
from sqlalchemy import select

from agora.models import Deployment, GatewayModel
from agora.runtime import Runtime
from agora.web.render import STATIC_DIR
from tests.conftest import ADMIN_KEY, ADMIN_PASSWORD, browser_tab
from tests.deployments.conftest import Platform
from tests.helpers import PASSWORD, Api
from tests.servers import free_port, wait_for_port
from tests.web.helpers import HTML, sign_in, submit, text_of

SHOTS = "/tmp"
UPSTREAM_KEY = "upstream-secret-key"
FIRST = "Here is some code:\n\n"
REST = ["```python\n", "print(1)\n", "```\n", "\nAll done."]
USAGE = {"prompt_tokens": 7, "completion_tokens": 12, "total_tokens": 19}
#: What the pages load from static/vendor/ (copied there by scripts/web-assets.sh).
VENDOR = (
    "marked.umd.js",
    "purify.min.js",
    "highlight.min.js",
    "highlight-github-dark.min.css",
    "uPlot.iife.min.js",
    "uPlot.min.css",
)


@pytest.fixture(scope="module", autouse=True)
def vendor_assets() -> None:
    missing = [name for name in VENDOR if not (STATIC_DIR / "vendor" / name).is_file()]
    if missing:
        pytest.fail(
            f"static/vendor/ lacks {', '.join(missing)}: run scripts/web-assets.sh (make install)"
        )


class ChatUpstream:
    """An OpenAI-compatible upstream in a thread: streams a Markdown answer with a code block.

    An answer to a message containing HOLD stops after its first chunk until ``release`` is
    set, so a test can look at the page while the answer is half written.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[dict[str, Any]] = []
        self.release = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="chat-upstream", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> ChatUpstream:
        self._thread.start()
        assert self._ready.wait(10)
        wait_for_port("127.0.0.1", self.port)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)
        self._loop.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._complete)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    async def _complete(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {UPSTREAM_KEY}":
            error = {"error": {"message": "wrong upstream key", "type": "auth", "code": None}}
            return web.json_response(error, status=401)
        body = await request.json()
        self.requests.append(body)
        held = "HOLD" in body["messages"][-1]["content"]
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            await response.write(_chunk({"content": FIRST}))
            deadline = time.monotonic() + 30
            while held and not self.release.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            for piece in REST:
                await asyncio.sleep(0.05)
                await response.write(_chunk({"content": piece}))
            await response.write(_chunk({}, "stop"))
            if (body.get("stream_options") or {}).get("include_usage"):
                await response.write(_chunk(None, usage=USAGE))
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            pass  # the caller went away (the Stop button)
        return response


def _chunk(
    delta: dict[str, str] | None, finish: str | None = None, usage: dict[str, int] | None = None
) -> bytes:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    obj: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": "chat-test",
        "choices": choices,
    }
    if usage:
        obj["usage"] = usage
    return b"data: " + orjson.dumps(obj) + b"\n\n"


@pytest.fixture
def upstream() -> Iterator[ChatUpstream]:
    with ChatUpstream() as server:
        yield server


@pytest.fixture
def models(platform: Platform, upstream: ChatUpstream) -> Platform:
    """chat-test answers through the upstream; unreachable points at a port nobody listens on."""
    for name, url in (
        ("chat-test", upstream.url),
        ("unreachable", f"http://127.0.0.1:{free_port()}/v1"),
    ):
        body = {
            "name": name,
            "kind": "llm",
            "source": "external",
            "external_url": url,
            "external_key": UPSTREAM_KEY,
            "public": True,
        }
        r = platform.api("POST", "/models", json=body)
        assert r.status_code == 201, r.text
    deadline = time.monotonic() + 15
    while True:  # the gateway picks models up within its refresh interval
        r = platform.http.get("/v1/models", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        if r.status_code == 200 and {"chat-test", "unreachable"} <= {
            m["id"] for m in r.json()["data"]
        }:
            return platform
        assert time.monotonic() < deadline, r.text
        time.sleep(0.1)


@pytest.fixture
def tab(browser: Browser, models: Platform) -> Iterator[Page]:
    with browser_tab(browser, models.url, 20_000, signed_in=True, accept_downloads=True) as page:
        yield page


def _console_errors(page: Page) -> list[str]:
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return errors


def test_chat_streams_a_markdown_answer_and_keeps_it_in_the_browser(
    tab: Page, upstream: ChatUpstream
) -> None:
    page = tab
    errors = _console_errors(page)
    page.get_by_role("navigation").get_by_role("link", name="Chat").click()
    page.wait_for_url("**/chat")
    libraries = "[typeof marked.parse, typeof DOMPurify.sanitize, typeof hljs.highlightElement]"
    assert page.evaluate(libraries) == ["function"] * 3
    model = page.locator("#chat-model")
    expect(model.locator("option")).to_have_count(2)  # both LLMs, nothing else
    model.select_option("chat-test")
    page.get_by_label("System prompt").fill("Answer briefly.")
    page.get_by_label("Temperature (number)").fill("0.3")
    page.get_by_label("Max tokens").fill("200")

    # 1. The answer appears while it is written: the upstream holds after its first chunk.
    page.get_by_label("Message", exact=True).fill("Show me some code HOLD")
    page.get_by_label("Message", exact=True).press("Enter")
    answer = page.locator(".msg-assistant").last
    expect(answer.locator(".msg-body")).to_contain_text("Here is some code:")
    expect(page.get_by_role("button", name="Stop")).to_be_visible()
    expect(answer).to_have_attribute("aria-busy", "true")
    assert "All done" not in answer.inner_text()
    expect(page.locator(".msg-user").last).to_have_text(re.compile("Show me some code HOLD"))
    page.screenshot(path=f"{SHOTS}/agora-chat-streaming.png", full_page=True)
    upstream.release.set()

    # 2. The whole answer is rendered Markdown with a highlighted code block, and its usage.
    expect(answer.locator(".msg-body")).to_contain_text("All done.")
    code = answer.locator("pre code.hljs")
    expect(code).to_have_count(1)
    expect(code).to_have_text("print(1)")
    expect(code.locator("span[class^='hljs-']")).not_to_have_count(0)
    expect(answer.locator(".msg-usage")).to_have_text("7 tokens in · 12 out")
    expect(answer).to_have_attribute("aria-busy", "false")
    expect(page.get_by_role("button", name="Stop")).to_be_hidden()
    sent = upstream.requests[-1]
    assert sent["messages"] == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Show me some code HOLD"},
    ]
    assert sent["temperature"] == 0.3 and sent["max_tokens"] == 200 and sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}

    # 3. A follow-up carries the conversation so far.
    page.get_by_label("Message", exact=True).fill("And once more")
    page.get_by_label("Message", exact=True).press("Enter")
    expect(page.locator(".msg-assistant .msg-usage")).to_have_count(2)
    roles = [m["role"] for m in upstream.requests[-1]["messages"]]
    assert roles == ["system", "user", "assistant", "user"]
    assert upstream.requests[-1]["messages"][2]["content"] == FIRST + "".join(REST)
    page.screenshot(path=f"{SHOTS}/agora-chat.png", full_page=True)

    # 4. The conversation survives a reload (localStorage) and nothing else was asked of Agora.
    page.reload()
    expect(page.locator("#chat-list li")).to_have_count(1)
    expect(page.locator("#chat-list")).to_contain_text("Show me some code HOLD")
    expect(page.locator(".msg-assistant pre code.hljs")).to_have_count(2)
    expect(page.locator("#chat-system")).to_have_value("Answer briefly.")
    assert errors == []

    # 5. Export downloads every conversation as JSON.
    with page.expect_download() as info:
        page.get_by_role("button", name="Export").click()
    download = info.value
    assert download.suggested_filename.startswith("agora-chat-")
    exported = json.loads(Path(download.path()).read_text(encoding="utf-8"))
    [conversation] = exported["conversations"]
    assert [m["role"] for m in conversation["messages"]] == ["user", "assistant"] * 2
    assert conversation["messages"][1]["content"].endswith("All done.")
    assert conversation["messages"][1]["usage"]["completion_tokens"] == 12

    # 6. Stop ends an answer half way; the partial text stays.
    upstream.release.clear()
    page.get_by_label("Message", exact=True).fill("Stop me HOLD")
    page.get_by_label("Message", exact=True).press("Enter")
    stopped = page.locator(".msg-assistant").last
    expect(stopped.locator(".msg-body")).to_contain_text("Here is some code:")
    page.get_by_role("button", name="Stop").click()
    expect(stopped.locator(".msg-usage")).to_have_text("stopped")
    expect(page.locator("#chat-status")).to_have_text("Stopped.")
    upstream.release.set()

    # 7. A gateway error shows the OpenAI-shaped message.
    page.get_by_role("button", name="New").click()
    expect(page.locator("#chat-empty")).to_be_visible()
    model.select_option("unreachable")
    page.get_by_label("Message", exact=True).fill("Anyone there?")
    page.get_by_role("button", name="Send").click()
    failure = page.locator(".msg-assistant .msg-error")
    expect(failure).to_be_visible()
    expect(failure).not_to_have_text("")
    assert not failure.inner_text().startswith("The gateway answered HTTP")
    page.screenshot(path=f"{SHOTS}/agora-chat-error.png")
    expect(page.locator("#chat-list li")).to_have_count(2)

    # 8. Clear all (after confirming) removes them from the page and the browser.
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Clear all").click()
    expect(page.locator("#chat-list li")).to_have_count(0)
    expect(page.locator("#chat-empty")).to_be_visible()
    stored = page.evaluate("JSON.parse(localStorage.getItem('agora.chat.admin'))")
    assert stored["conversations"] == []
    page.reload()
    expect(page.locator("#chat-list li")).to_have_count(0)
    expect(page.locator(".msg")).to_have_count(0)


def test_model_pages_show_replicas_settings_and_usage(
    tab: Page, models: Platform, upstream: ChatUpstream
) -> None:
    page = tab
    errors = _console_errors(page)
    answer = httpx.post(
        models.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        json={
            "model": "chat-test",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
        },
        timeout=30,
    )
    assert answer.status_code == 200 and "All done." in answer.text
    deadline = time.monotonic() + 15
    while not models.api("GET", "/usage?model=chat-test").json():  # flushed every second
        assert time.monotonic() < deadline
        time.sleep(0.2)

    page.get_by_role("navigation").get_by_role("link", name="Models").click()
    row = page.locator('tr[data-model="chat-test"]')
    expect(row).to_contain_text("external")
    expect(row).to_contain_text("public")
    row.get_by_role("link", name="chat-test").click()
    page.wait_for_url("**/models/chat-test")
    expect(page.get_by_role("heading", name="chat-test")).to_be_visible()
    expect(page.locator("#usage .uplot")).to_have_count(2)
    expect(page.locator("#usage-totals tbody")).to_contain_text("default")
    expect(page.locator("#usage-status")).to_contain_text("Updated")
    page.screenshot(path=f"{SHOTS}/agora-model.png", full_page=True)

    page.get_by_label("Total timeout (s)").fill("300")
    page.get_by_role("button", name="Save settings").click()
    expect(page.get_by_text("Settings of chat-test saved.")).to_be_visible()
    assert models.api("GET", "/models/chat-test").json()["model"]["total_timeout"] == 300
    expect(page.get_by_label("Total timeout (s)")).to_have_value("300")
    assert errors == []


def test_without_the_vendor_files_answers_are_plain_text(tab: Page) -> None:
    page = tab
    failures: list[str] = []
    page.on("pageerror", lambda exc: failures.append(str(exc)))
    page.route("**/static/vendor/**", lambda route: route.abort())
    page.goto("/chat")
    expect(page.locator("#chat-status")).to_contain_text("plain text")
    page.locator("#chat-model").select_option("chat-test")
    page.get_by_label("Message", exact=True).fill("Plain, please")
    page.get_by_label("Message", exact=True).press("Enter")
    body = page.locator(".msg-assistant .msg-body")
    expect(body).to_contain_text("All done.")
    expect(body).to_have_class(re.compile(r"\bplain\b"))
    expect(body).to_contain_text("```python")  # the Markdown as it came, never as HTML
    expect(body.locator("pre")).to_have_count(0)
    page.goto("/models/chat-test")
    expect(page.locator("#chart-requests")).to_contain_text("Charts are unavailable")
    expect(page.locator("#usage-status")).to_have_text(re.compile("Updated|No requests"))
    assert failures == []


def test_api_page_snippet_runs_against_the_gateway(tab: Page, models: Platform) -> None:
    page = tab
    page.get_by_role("navigation").get_by_role("link", name="API", exact=True).click()
    page.wait_for_url("**/api-access")
    expect(page.locator("#base-url")).to_have_value(models.url + "/v1")
    expect(page.get_by_role("link", name="API keys of default")).to_be_visible()
    snippet = page.locator("#snippet-python").inner_text()
    assert 'api_key=os.environ["AGORA_API_KEY"]' in snippet and 'model="chat-test"' in snippet
    assert f"curl {models.url}/v1/chat/completions" in page.locator("#snippet-curl").inner_text()
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    ran = subprocess.run(
        [sys.executable, "-c", snippet],
        env={**env, "AGORA_API_KEY": ADMIN_KEY},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == (FIRST + "".join(REST)).strip()


# --- without a browser ------------------------------------------------------------------------


def test_members_see_model_settings_but_only_admins_change_them(
    api: Api, client: TestClient
) -> None:
    r = api.post("/models", {"name": "m1", "source": "external", "external_url": "http://x/v1"})
    assert r.status_code == 201, r.text
    api.user("bob")
    api.project("lab", bob="member")
    sign_in(client, "bob", PASSWORD)
    assert client.get("/models/m1", headers=HTML).status_code == 404  # neither public nor granted
    assert api.put("/models/m1/projects", {"projects": ["lab"]}).status_code == 200
    page = client.get("/models/m1", headers=HTML)
    assert page.status_code == 200
    assert 'action="/models/m1/settings"' not in page.text and "Operators change" in page.text
    assert "http://x/v1" not in page.text  # the upstream stays the operators' business
    refused = submit(client, "/models/m1", "/models/m1/settings", total_timeout="5")
    assert refused.status_code == 403
    assert api.get("/models/m1").json()["model"]["total_timeout"] == 600

    sign_in(client, "admin", ADMIN_PASSWORD)
    bad = submit(client, "/models/m1", "/models/m1/settings", total_timeout="-1")
    assert bad.status_code == 422 and "Total timeout" in text_of(bad)
    assert 'value="-1"' in bad.text  # what was typed comes back to be corrected
    ok = submit(client, "/models/m1", "/models/m1/settings", total_timeout="42.5", public="true")
    assert ok.status_code == 303
    assert api.get("/models/m1").json()["model"]["total_timeout"] == 42.5
    assert api.get("/models/m1").json()["model"]["public"] is True


def test_pages_need_signing_in(client: TestClient) -> None:
    for path in ("/chat", "/models", "/models/anything", "/api-access"):
        r = client.get(path, headers=HTML, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login"), path


def test_a_deployment_model_lists_its_replicas_and_scaling(
    api: Api, client: TestClient, runtime: Runtime
) -> None:
    r = api.post(
        "/models",
        {
            "name": "served",
            "source": "deployment",
            "max_replicas": 3,
            "inputs": {"model_path": "/models/served"},
        },
    )
    assert r.status_code == 201, r.text
    dep = api.post(
        "/projects/default/deployments", {"template": "batch", "inputs": {"command": "sleep 30"}}
    ).json()
    with runtime.db.transaction() as db:  # as the autoscaler would have started it
        row = db.get(Deployment, dep["id"])
        assert row is not None
        row.model_id = db.scalar(select(GatewayModel.id).where(GatewayModel.name == "served"))
        row.draining_since = dt.datetime.now(dt.UTC)
    sign_in(client, "admin", ADMIN_PASSWORD)
    listing = text_of(client.get("/models", headers=HTML))
    assert "served" in listing and "max 3" in listing
    page = client.get("/models/served", headers=HTML)
    assert page.status_code == 200
    assert f'data-id="{dep["id"]}"' in page.text and "draining" in text_of(page)
    assert 'name="min_replicas"' in page.text and 'name="target_inflight"' in page.text
    assert 'id="chart-requests"' in page.text and 'data-model="served"' in page.text
    ok = submit(
        client, "/models/served", "/models/served/settings", min_replicas="0", max_replicas="2"
    )
    assert ok.status_code == 303
    assert api.get("/models/served").json()["model"]["max_replicas"] == 2
    bad = submit(client, "/models/served", "/models/served/settings", min_replicas="5")
    assert bad.status_code == 422 and "must not exceed" in text_of(bad)
    api.post(f"/projects/default/deployments/{dep['id']}/stop")
