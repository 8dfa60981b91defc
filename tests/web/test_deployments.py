"""Deployment pages: the list, the launch form built from a template's inputs, stop and delete;
and the whole journey in Chromium against a running control plane."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, Page, expect

from agora.settings import Settings
from tests.conftest import ADMIN_PASSWORD, browser_tab, make_settings
from tests.deployments.conftest import Platform
from tests.helpers import PASSWORD, Api
from tests.web.helpers import HTML, csrf, sign_in, submit, text_of

SHOTS = "/tmp"
EVERY_KIND = """
name: every-kind
title: Every kind of input
description: One input of each type, for the form tests.
kind: job
inputs:
  label: {type: string, title: Label, help: "Lower-case letters only", pattern: "^[a-z]+$"}
  steps: {type: integer, default: 3, min: 1, max: 10}
  rate: {type: number, title: Learning rate, default: 0.5, min: 0, max: 1}
  verbose: {type: boolean, title: Verbose output, default: true}
  size: {type: choice, title: Size, choices: [small, large], default: small}
  token: {type: secret, title: Access token, required: false}
command: echo {{ label }} {{ steps }} {{ rate }} {{ verbose }} {{ size }}
"""


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """The usual test settings, plus a template with one input of every type."""
    extra = tmp_path / "templates"
    extra.mkdir()
    (extra / "every-kind.yaml").write_text(EVERY_KIND, encoding="utf-8")
    return make_settings(tmp_path, database_url, template_dirs=[extra])


def _field(html: str, name: str) -> str:
    """The markup of one input's field block on the launch form."""
    found = re.search(
        rf'<div class="field[^"]*">(?:(?!<div class="field).)*name="in_{name}".*?</div>', html, re.S
    )
    assert found, f"no field for {name}"
    return found.group(0)


def _wait_state(api: Api, dep_id: str, states: set[str], timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        dep = api.get(f"/projects/default/deployments/{dep_id}").json()
        if dep["state"] in states or time.monotonic() > deadline:
            assert dep["state"] in states, dep
            return dict(dep)
        time.sleep(0.1)


def test_templates_are_offered_as_cards(client: TestClient) -> None:
    sign_in(client, "admin", ADMIN_PASSWORD)
    r = client.get("/deployments/new", headers=HTML)
    assert r.status_code == 200
    for title in ("JupyterLab", "Batch command", "HTTP service", "Every kind of input"):
        assert title in r.text
    assert 'href="/deployments/new/batch"' in r.text


def test_launch_form_is_built_from_the_template_inputs(client: TestClient) -> None:
    sign_in(client, "admin", ADMIN_PASSWORD)
    r = client.get("/deployments/new/every-kind", headers=HTML)
    assert r.status_code == 200
    label = _field(r.text, "label")
    assert 'type="text"' in label and 'pattern="^[a-z]+$"' in label and " required" in label
    assert 'class="req"' in label and "Lower-case letters only" in label
    steps = _field(r.text, "steps")
    assert all(
        a in steps for a in ('type="number"', 'min="1"', 'max="10"', 'step="1"', 'value="3"')
    )
    rate = _field(r.text, "rate")
    assert 'step="any"' in rate and 'value="0.5"' in rate and "Learning rate" in rate
    verbose = _field(r.text, "verbose")
    assert 'type="hidden" name="in_verbose" value="false"' in verbose
    assert 'type="checkbox"' in verbose and " checked" in verbose and " required" not in verbose
    size = _field(r.text, "size")
    assert "<select" in size and '<option value="small" selected>' in size
    token = _field(r.text, "token")
    assert 'type="password"' in token and 'autocomplete="new-password"' in token
    assert " required" not in token
    batch = client.get("/deployments/new/batch", headers=HTML).text
    assert "<textarea" in _field(batch, "command") and 'maxlength="8192"' in batch


def test_launching_from_the_form_redirects_to_the_deployment(api: Api, client: TestClient) -> None:
    sign_in(client, "admin", ADMIN_PASSWORD)
    page = "/deployments/new/every-kind"
    r = submit(
        client,
        page,
        page,
        project="default",
        name="my run",
        in_label="abc",
        in_steps="4",
        in_verbose=["false"],
        in_size="large",
        in_token="s3cret",
    )
    assert r.status_code == 303, text_of(r)
    dep_id = r.headers["location"].rsplit("/", 1)[-1]
    dep = api.get(f"/projects/default/deployments/{dep_id}").json()
    assert dep["name"] == "my run"
    assert dep["inputs"] == {
        "label": "abc",
        "steps": 4,
        "rate": 0.5,
        "verbose": False,
        "size": "large",
    }
    detail = client.get(r.headers["location"], headers=HTML)
    assert "Deployment my run requested." in text_of(detail)
    assert "s3cret" not in detail.text
    listing = client.get("/deployments", headers=HTML)
    assert dep_id in listing.text and "my run" in listing.text
    _wait_state(api, dep_id, {"stopped"})


def test_server_side_error_is_shown_next_to_its_field(api: Api, client: TestClient) -> None:
    sign_in(client, "admin", ADMIN_PASSWORD)
    page = "/deployments/new/every-kind"
    r = submit(
        client,
        page,
        page,
        project="default",
        in_label="abc",
        in_steps="11",
        in_size="small",
        in_token="s3cret",
    )
    assert r.status_code == 422
    steps = _field(r.text, "steps")
    assert 'aria-invalid="true"' in steps and "must be at most 10" in text_of_html(steps)
    assert 'value="11"' in steps  # what was typed stays, to be corrected
    assert 'value="abc"' in _field(r.text, "label")
    assert "s3cret" not in r.text  # secrets are never sent back
    assert api.get("/projects/default/deployments").json() == []


def test_quota_refusal_is_explained(api: Api, client: TestClient) -> None:
    assert api.patch("/projects/default/quota", {"cpus": 2}).status_code == 200
    sign_in(client, "admin", ADMIN_PASSWORD)
    page = "/deployments/new/batch"
    r = submit(client, page, page, project="default", in_command="true", in_cpus="3")
    assert r.status_code == 403
    text = text_of(r)
    assert "Quota exceeded." in text and "may use 2 CPUs" in text
    assert "0 of 2" in text  # the quota panel shows what is in use
    assert api.get("/projects/default/deployments").json() == []


def test_stop_and_delete_need_the_csrf_token(api: Api, client: TestClient) -> None:
    sign_in(client, "admin", ADMIN_PASSWORD)
    r = api.post(
        "/projects/default/deployments",
        {"template": "batch", "inputs": {"command": "sleep 60"}, "name": "sleeper"},
    )
    dep_id = r.json()["id"]
    page = f"/deployments/{dep_id}"
    forged = client.post(page + "/stop", data={"project": "default"}, headers=HTML)
    assert forged.status_code == 403 and "CSRF check failed" in text_of(forged)
    assert api.get(f"/projects/default/deployments/{dep_id}").json()["desired"] == "running"

    early = submit(client, page, page + "/delete", project="default")
    assert early.status_code == 409 and "stop it before deleting it" in text_of(early)
    stopped = submit(client, page, page + "/stop", project="default")
    assert stopped.status_code == 303 and stopped.headers["location"] == page
    _wait_state(api, dep_id, {"stopped"})

    forged = client.post(page + "/delete", data={"project": "default"}, headers=HTML)
    assert forged.status_code == 403
    deleted = submit(client, page, page + "/delete", project="default")
    assert deleted.status_code == 303 and deleted.headers["location"] == "/deployments"
    assert "Deployment sleeper was deleted." in text_of(client.get("/deployments", headers=HTML))
    assert api.get(f"/projects/default/deployments/{dep_id}").status_code == 404


def test_viewers_see_deployments_but_cannot_launch_or_stop(api: Api, client: TestClient) -> None:
    api.user("vera")
    api.project("lab", vera="viewer")
    sign_in(client, "vera", PASSWORD)
    r = api.post("/projects/lab/deployments", {"template": "batch", "inputs": {"command": "true"}})
    dep_id = r.json()["id"]
    listing = client.get("/deployments", headers=HTML)
    assert dep_id in listing.text and "New deployment" not in listing.text
    detail = client.get(f"/deployments/{dep_id}", headers=HTML)
    assert detail.status_code == 200 and "/stop" not in detail.text
    token = csrf(client, f"/deployments/{dep_id}")
    r = client.post(
        f"/deployments/{dep_id}/stop", headers=HTML, data={"csrf_token": token, "project": "lab"}
    )
    assert r.status_code == 403 and "this needs member or higher" in text_of(r)
    _wait_state_in(api, "lab", dep_id)


def _wait_state_in(api: Api, project: str, dep_id: str) -> None:
    deadline = time.monotonic() + 30
    while api.get(f"/projects/{project}/deployments/{dep_id}").json()["state"] != "stopped":
        assert time.monotonic() < deadline
        time.sleep(0.1)


def text_of_html(fragment: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", fragment))


def test_deployment_of_another_project_is_found_and_linked(api: Api, client: TestClient) -> None:
    api.project("lab")
    sign_in(client, "admin", ADMIN_PASSWORD)  # works in 'default'
    r = api.post("/projects/lab/deployments", {"template": "batch", "inputs": {"command": "true"}})
    dep_id = r.json()["id"]
    detail = client.get(f"/deployments/{dep_id}", headers=HTML)
    assert detail.status_code == 200 and 'href="/deployments?project=lab"' in detail.text
    listing = client.get("/deployments?project=lab", headers=HTML)
    assert f'href="/deployments/{dep_id}?project=lab"' in listing.text
    assert client.get("/deployments/dnothere", headers=HTML).status_code == 404
    _wait_state_in(api, "lab", dep_id)


# --- in a real browser ------------------------------------------------------------------------


@pytest.fixture
def tab(browser: Browser, platform: Platform) -> Iterator[Page]:
    with browser_tab(browser, platform.url, 20_000) as page:
        yield page


def test_launch_a_batch_job_and_follow_it_live(tab: Page, platform: Platform) -> None:
    page = tab
    page.goto("/login")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(platform.url + "/")

    page.get_by_role("navigation").get_by_role("link", name="Deployments").click()
    expect(page.get_by_text("No deployments yet.")).to_be_visible()
    page.get_by_role("link", name="New deployment").click()
    page.get_by_role("link", name=re.compile("Batch command")).click()
    page.get_by_label("Name").fill("counter")
    command = "for i in 1 2 3 4 5; do echo line-$i; sleep 1; done"
    page.get_by_label("Command").fill(command)
    page.screenshot(path=f"{SHOTS}/agora-launch.png", full_page=True)
    page.get_by_role("button", name="Launch").click()
    page.wait_for_url(re.compile(r"/deployments/d[a-z0-9]+$"))
    page.evaluate("window.agoraNoReload = true")  # gone if the page were reloaded

    expect(page.get_by_text("Deployment counter requested.")).to_be_visible()
    badge = page.locator("#deployment-live h1 .badge")
    log = page.locator("pre#log")
    expect(badge).to_have_text("running", timeout=30_000)
    expect(log).to_contain_text("line-1")
    expect(badge).to_have_text("stopped", timeout=30_000)
    expect(log).to_contain_text("line-5")
    expect(page.locator("#log-status")).to_contain_text("final output")
    expect(page.locator(".alert.reason")).to_contain_text("completed (exit code 0)")
    expect(page.locator(".timeline li")).not_to_have_count(0)
    assert page.evaluate("window.agoraNoReload") is True
    assert log.inner_text().count("line-3") == 1  # appended once, not repeated
    page.screenshot(path=f"{SHOTS}/agora-deployment.png", full_page=True)

    # The list shows it, and follows a job that starts and ends while it is open.
    other = platform.deploy("batch", name="sleeper", inputs={"command": "sleep 8; exit 3"})
    page.get_by_role("link", name="Deployments").first.click()
    row = page.locator(f'tr[data-id="{other["id"]}"]')
    expect(page.get_by_role("link", name="counter")).to_be_visible()
    expect(row.locator(".badge")).to_have_text("running", timeout=30_000)
    page.evaluate("window.agoraNoReload = true")
    expect(row.locator(".badge")).to_have_text("failed", timeout=30_000)
    assert page.evaluate("window.agoraNoReload") is True
    platform.deploy("batch", name="long-training", inputs={"command": "sleep 60", "cpus": 2})
    expect(page.get_by_role("link", name="long-training")).to_be_visible()
    expect(page.locator("tbody .badge.state-running")).to_have_count(1, timeout=30_000)
    page.screenshot(path=f"{SHOTS}/agora-deployments.png", full_page=True)

    # Stopping asks first, then the page follows the deployment to its end.
    page.get_by_role("link", name="long-training").click()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Stop").click()
    expect(page.get_by_text("Stopping long-training.")).to_be_visible()
    expect(page.locator("#deployment-live h1 .badge")).to_have_text("stopped", timeout=30_000)
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete").click()
    expect(page.get_by_text("Deployment long-training was deleted.")).to_be_visible()
