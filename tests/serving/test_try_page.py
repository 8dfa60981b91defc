"""The "Try it" page in Chromium: the predict form is built from the module server's argument schema (a
file upload and a choice for the digits module, numbers for iris), the prediction goes through
the platform with the session, and the answer shows as JSON, or as an image with a download."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.conftest import ADMIN_KEY, browser_tab
from tests.deployments.conftest import Platform
from tests.serving.test_served_modules import _digit_png


def serve(platform: Platform, name: str) -> Platform:
    """The example module ``name`` served publicly, once its replica is up and routed."""
    body = {
        "name": name,
        "kind": "deepaas",
        "public": True,
        "min_replicas": 1,
        "inputs": {"module": name},
    }
    r = platform.api("POST", "/models", json=body)
    assert r.status_code == 201, r.text
    deadline = time.monotonic() + 90
    while True:  # the autoscaler keeps the minimum: one replica starts
        r = platform.api("GET", f"/models/{name}")
        if any(d["state"] == "running" for d in r.json()["replicas"]):
            break
        assert time.monotonic() < deadline, r.text
        time.sleep(0.2)
    deadline = time.monotonic() + 15
    while True:  # and the gateway has picked it up
        r = httpx.get(
            platform.url + f"/m/{name}/v2/models/",
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            timeout=30,
        )
        if r.status_code == 200:
            return platform
        assert time.monotonic() < deadline, r.text
        time.sleep(0.2)


@pytest.fixture
def digits(platform: Platform) -> Platform:
    return serve(platform, "digits")


@pytest.fixture
def tab(browser: Browser, digits: Platform) -> Iterator[Page]:
    with browser_tab(browser, digits.url, 30_000, signed_in=True) as page:
        yield page


def test_try_it_uploads_a_png_and_shows_json_then_an_image(tab: Page) -> None:
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.goto("/models/digits")
    tab.get_by_role("link", name="Try it").click()
    expect(tab.get_by_role("heading", name="Try digits")).to_be_visible()
    upload = tab.get_by_label("image *")
    expect(upload).to_be_visible()
    png, label = _digit_png(3)
    upload.set_input_files({"name": "digit.png", "mimeType": "image/png", "buffer": png})
    tab.get_by_label("accept").select_option("application/json")
    tab.get_by_role("button", name="Predict").click()
    result = tab.locator("#try-result pre")
    expect(result).to_contain_text('"digit"')
    assert f'"digit": {label}' in result.inner_text()
    expect(tab.locator("#try-result-meta")).to_contain_text("HTTP 200")

    tab.get_by_label("accept").select_option("image/png")
    tab.get_by_role("button", name="Predict").click()
    image = tab.locator("#try-result img")
    expect(image).to_be_visible()
    # A real PNG, decoded by the browser (blob: images are allowed by the pages' CSP).
    deadline = time.monotonic() + 10
    while tab.evaluate("document.querySelector('#try-result img').naturalWidth") == 0:
        assert time.monotonic() < deadline, "the image result did not load"
        time.sleep(0.1)

    # The result as a file: the download link hands over the very PNG.
    with tab.expect_download() as download:
        tab.locator("#try-result a", has_text="Download the result").click()
    path = download.value.path()
    assert path is not None and Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # A missing file: the browser's own check stops it; a text file: the module's message.
    upload.set_input_files({"name": "notes.txt", "mimeType": "text/plain", "buffer": b"words"})
    tab.get_by_role("button", name="Predict").click()
    expect(tab.locator("#try-result-meta")).to_contain_text("image")
    assert "Traceback" not in tab.locator("#try-result-meta").inner_text()
    assert not errors, errors


def test_try_it_takes_numbers(browser: Browser, platform: Platform) -> None:
    serve(platform, "iris")
    with browser_tab(browser, platform.url, 30_000, signed_in=True) as tab:
        errors: list[str] = []
        tab.on("pageerror", lambda exc: errors.append(str(exc)))
        tab.goto("/models/iris")
        tab.get_by_role("link", name="Try it").click()
        expect(tab.get_by_role("heading", name="Try iris")).to_be_visible()
        fields = {"sepal_length": "6.7", "sepal_width": "3.0", "petal_length": "5.8",
                  "petal_width": "2.2"}  # fmt: skip
        for name, value in fields.items():
            box = tab.get_by_label(f"{name} *")
            assert box.get_attribute("type") == "number"
            box.fill(value)
        tab.get_by_role("button", name="Predict").click()
        result = tab.locator("#try-result pre")
        expect(result).to_contain_text('"species": "virginica"')
        expect(tab.locator("#try-result-meta")).to_contain_text("HTTP 200")
        assert not errors, errors
